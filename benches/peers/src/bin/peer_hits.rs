//! `N` cache hits of one peer, in process on one thread, for instruction
//! counts that do not depend on the machine's load:
//!
//! ```sh
//! cargo build --release --manifest-path benches/peers/Cargo.toml
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     benches/peers/target/release/peer_hits hitbox 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     benches/peers/target/release/peer_hits hitbox 10000
//! ```
//!
//! Targets: `tower-http-cache`, `hitbox`, `http-cache-tower`. One warming
//! request fills the cache; each of the `N` requests after it goes through
//! the axum `Router` (no TCP) and its body is read whole. The difference
//! of the two totals over 10,000 is the cost of one hit.

use std::process::ExitCode;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_cache_peers::{BODY, Target, origin_calls};

fn request() -> Request<Body> {
    Request::get("http://bench/products/42")
        .body(Body::empty())
        .expect("valid request")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (target, hits) = match args.as_slice() {
        [target, n] => match (Target::parse(target), n.parse::<usize>()) {
            (Some(t), Ok(n)) => (t, n),
            _ => return usage(),
        },
        _ => return usage(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Given its state once, as `axum::serve` does for each connection:
    // the routes are built then, not again for each request.
    let mut app = target.router("/products/{id}").with_state(());
    rt.block_on(async {
        for _ in 0..=hits {
            let svc = ServiceExt::<Request<Body>>::ready(&mut app)
                .await
                .expect("infallible");
            let res = svc.call(request()).await.expect("infallible");
            assert!(res.status().is_success(), "status {}", res.status());
            let body = res.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body.as_ref(), BODY);
        }
    });
    // The warming request runs the handler; every later one must be a hit.
    let calls = origin_calls();
    assert!(
        (1..=2).contains(&calls),
        "{}: the handler ran {calls} times for {} requests",
        target.name(),
        hits + 1
    );
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    eprintln!("usage: peer_hits <{}> <N>", names.join("|"));
    ExitCode::from(2)
}
