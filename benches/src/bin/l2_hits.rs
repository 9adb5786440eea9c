//! `N` L2 hits through `CacheAsideLayer` over a Redis-only store (as the
//! example app runs with `CACHE_L1=off`), on one thread, for instruction
//! counts and for Redis's own time per hit. Needs `REDIS_URL`.
//!
//! ```sh
//! cargo build --release -p tower-cache-benches --bin l2_hits
//! export REDIS_URL=redis://127.0.0.1:PORT   # a redis-server of one's own
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/l2_hits 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/l2_hits 10000
//! bash benches/load/l2_commandstats.sh 10000   # starts its own redis-server
//! ```
//!
//! The difference of the two instruction totals over 10,000 is the
//! client's cost of one hit (request built, key computed, Redis asked,
//! reply decoded and checked, response built and its body read). After
//! the hits the binary prints Redis's `INFO commandstats`, reset after
//! the warm-up, and the server time per hit.
//!
//! `l2_hits N raw` runs a hand-written redis-rs `GET` of the same body
//! and builds the same response instead, for comparison.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, service_fn};
use tower_cache::store::{RedisConnection, RedisStore, SharedStore};
use tower_cache::{Cache, CacheAsideLayer, Policy};
use tower_layer::Layer;

const BODY: &[u8] = br#"{"id":42,"name":"Product 42","price_cents":4200}"#;

fn request() -> Request<Full<Bytes>> {
    Request::get("http://bench/products/42")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// Prints the command statistics gathered since the last reset, and the
/// server time they add up to per hit.
async fn commandstats(conn: &mut RedisConnection, hits: usize) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    let scripts = info.contains("cmdstat_evalsha") || info.contains("cmdstat_eval:");
    let mut total = 0.0;
    for line in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let Some((name, stats)) = line.split_once(':') else {
            continue;
        };
        if name == "info" || name.starts_with("config") {
            continue;
        }
        let field = |f: &str| -> f64 {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let (calls, usec) = (field("calls"), field("usec"));
        println!(
            "{name}: calls={calls} usec={usec} usec_per_call={:.2}",
            usec / calls.max(1.0)
        );
        // Commands a script runs are counted apart, and inside its time.
        let in_script = matches!(name, "get" | "set" | "del" | "time" | "pttl" | "pexpire");
        if !(scripts && in_script) {
            total += usec;
        }
    }
    if hits > 0 {
        println!(
            "server time per hit: {:.2} usec (top-level commands)",
            total / hits as f64
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let hits: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let raw = args.next().is_some_and(|a| a == "raw");
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let l2 = RedisStore::builder(url)
            .prefix("catalog:")
            // Under valgrind on a busy machine a reply can take long: a
            // timeout would turn a hit into a miss and the count into noise.
            .op_timeout(Duration::from_secs(30))
            .build()
            .expect("valid URL");
        let mut conn = l2.connection();
        let inner = service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .header("cache-tag", "product:42")
                    .body(Full::new(Bytes::from_static(BODY)))
                    .expect("valid response"),
            )
        });
        let cache = Cache::new(SharedStore::new(l2));
        let mut svc = CacheAsideLayer::new(
            cache,
            "/products/{id}",
            Policy::ttl(Duration::from_secs(3600)),
        )
        .layer(inner);
        let warm = svc.call(request()).await.expect("infallible");
        warm.into_body().collect().await.expect("body");
        redis::cmd("SET")
            .arg("raw:products/42")
            .arg(BODY)
            .query_async::<()>(&mut conn)
            .await
            .expect("SET");
        // The warm-up's entry is written to Redis in the background: wait
        // until Redis holds it (a poll costs the same on every run), then
        // the first hit reads what a hit needs to know about the tags.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while redis::cmd("KEYS")
            .arg("catalog:*products*")
            .query_async::<Vec<String>>(&mut conn)
            .await
            .expect("KEYS")
            .is_empty()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no entry in Redis after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The store's tracked connection (on which a hit is one `GET`)
        // is made in the background: wait until Redis tracks for it.
        while !redis::cmd("CLIENT")
            .arg("LIST")
            .query_async::<String>(&mut conn)
            .await
            .expect("CLIENT LIST")
            .lines()
            .any(|client| {
                client
                    .split(' ')
                    .any(|f| f.starts_with("flags=") && f.contains('t'))
            })
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no tracked connection after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The first hits read the versions and the counter.
        for _ in 0..2 {
            let res = svc.call(request()).await.expect("infallible");
            assert_eq!(res.headers()["x-cache"], "HIT");
        }
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut conn)
            .await
            .expect("CONFIG RESETSTAT");
        for _ in 0..hits {
            let body = if raw {
                let mut c = conn.clone();
                let hit: Vec<u8> = redis::cmd("GET")
                    .arg("raw:products/42")
                    .query_async(&mut c)
                    .await
                    .expect("GET");
                let res = Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(hit)))
                    .expect("valid response");
                res.into_body().collect().await.expect("body").to_bytes()
            } else {
                let res = svc.call(request()).await.expect("infallible");
                assert_eq!(res.headers()["x-cache"], "HIT");
                res.into_body().collect().await.expect("body").to_bytes()
            };
            assert_eq!(body.len(), BODY.len());
        }
        commandstats(&mut conn, hits).await;
    });
}
