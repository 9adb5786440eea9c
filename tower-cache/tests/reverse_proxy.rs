//! The caching reverse proxy of `examples/reverse_proxy.rs` over real TCP:
//! what a shared cache may store (RFC 9111), what it invalidates, and
//! what a proxy forwards (RFC 9110 §7.6).

mod support;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use tokio::net::{TcpListener, TcpSocket};

use support::PATIENCE;
use support::client::{get, open, send};
use support::origin::{Answer, Origin};
use support::proxy::Proxy;

/// An origin answering `path` with `body`, fresh for 60 s, and `POST`s to
/// it with `post`.
fn cached_with_post(origin: &Origin, path: &str, body: &'static str, post: Answer) {
    origin.route(path, move |req| {
        if req.method == Method::POST {
            post.clone()
        } else {
            Answer::ok(body).header("cache-control", "max-age=60")
        }
    });
}

/// Stores `/a` and `/b` through `proxy`, checking both are then hits.
async fn store_a_and_b(origin: &Origin, proxy: &Proxy) {
    for path in ["/a", "/b"] {
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "MISS", "{path}");
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "HIT", "{path}");
        assert_eq!(origin.calls(&Method::GET, path), 1, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_max_age_is_served_from_the_cache() {
    let origin = Origin::start().await;
    origin.answer(
        "/a",
        Answer::ok("hello").header("cache-control", "max-age=60"),
    );
    let proxy = Proxy::start(origin.addr()).await;

    let first = get(&proxy.url("/a")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.text(), "hello");

    let second = get(&proxy.url("/a")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.text(), "hello");
    assert_eq!(second.header("cache-control"), Some("max-age=60"));
    let age: u64 = second
        .header("age")
        .expect("an Age header")
        .parse()
        .expect("Age in seconds");
    assert!(age <= 60, "age {age}");
    assert_eq!(
        origin.calls(&Method::GET, "/a"),
        1,
        "the hit stays in the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_makes_a_response_with_max_age_zero_storable() {
    let origin = Origin::start().await;
    origin.answer(
        "/a",
        Answer::ok("shared").header("cache-control", "max-age=0, s-maxage=60"),
    );
    let proxy = Proxy::start(origin.addr()).await;

    assert_eq!(get(&proxy.url("/a")).await.x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/a")).await.x_cache(), "HIT");
    assert_eq!(origin.calls(&Method::GET, "/a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_without_freshness_is_not_stored() {
    let origin = Origin::start().await;
    // No Cache-Control, Expires or Last-Modified.
    origin.answer("/a", Answer::ok("hello"));
    let proxy = Proxy::start(origin.addr()).await;

    for _ in 0..2 {
        let reply = get(&proxy.url("/a")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello");
        assert_eq!(reply.x_cache(), "MISS");
    }
    assert_eq!(origin.calls(&Method::GET, "/a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_the_clients_host() {
    let origin = Origin::start().await;
    origin.answer("/a", Answer::ok("hello"));
    let proxy = Proxy::start(origin.addr()).await;

    send(Method::GET, &proxy.url("/a"), &[("host", "shop.example")]).await;
    get(&proxy.url("/a")).await;

    let hosts: Vec<_> = origin
        .received()
        .iter()
        .map(|r| r.header("host").unwrap_or("").to_owned())
        .collect();
    assert_eq!(hosts, ["shop.example".to_owned(), proxy.host()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_messages_carry_via() {
    let origin = Origin::start().await;
    origin.answer("/a", Answer::ok("hello").header("via", "1.1 origin"));
    let proxy = Proxy::start(origin.addr()).await;

    let reply = get(&proxy.url("/a")).await;

    let received = origin.received();
    assert_eq!(received[0].header("via"), Some("1.1 tower-cache"));
    let via: Vec<_> = reply.headers.get_all("via").iter().collect();
    assert_eq!(via, ["1.1 origin", "1.1 tower-cache"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let origin = Origin::start().await;
    origin.answer(
        "/h",
        Answer::ok("hello")
            .header("cache-control", "max-age=60")
            .header("connection", "x-bar")
            .header("x-bar", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"origin\"")
            .header("upgrade", "h2c")
            .header("x-end-to-end", "kept"),
    );
    let proxy = Proxy::start(origin.addr()).await;
    let request = [
        ("connection", "x-foo"),
        ("x-foo", "1"),
        ("keep-alive", "300"),
        ("te", "trailers"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("x-end-to-end", "kept"),
    ];
    let request_hop_by_hop = [
        "connection",
        "x-foo",
        "keep-alive",
        "te",
        "proxy-connection",
        "proxy-authorization",
    ];
    let response_hop_by_hop = [
        "connection",
        "x-bar",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
    ];

    // Sent to the origin directly, they arrive: the client sends them.
    send(
        Method::GET,
        &format!("http://{}/h", origin.addr()),
        &request,
    )
    .await;
    let direct = origin.received().remove(0);
    for name in request_hop_by_hop {
        assert!(direct.headers.contains_key(name), "{name} sent");
    }

    let miss = send(Method::GET, &proxy.url("/h"), &request).await;
    let hit = send(Method::GET, &proxy.url("/h"), &request).await;
    assert_eq!((miss.x_cache(), hit.x_cache()), ("MISS", "HIT"));

    let forwarded = origin.received().remove(1);
    for name in request_hop_by_hop {
        assert!(!forwarded.headers.contains_key(name), "{name} forwarded");
    }
    assert_eq!(forwarded.header("x-end-to-end"), Some("kept"));
    for reply in [&miss, &hit] {
        for name in response_hop_by_hop {
            assert!(
                !reply.headers.contains_key(name),
                "{name} in the {} answer",
                reply.x_cache()
            );
        }
        assert_eq!(reply.header("x-end-to-end"), Some("kept"));
        assert_eq!(reply.text(), "hello");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_and_is_not_stored() {
    // A bound socket that does not listen: connecting to it is refused,
    // and no one else can take the port while it is held.
    let closed = TcpSocket::new_v4().expect("a socket");
    closed
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind a loopback port");
    let proxy = Proxy::start(closed.local_addr().expect("local address")).await;

    for _ in 0..2 {
        let reply = get(&proxy.url("/a")).await;
        assert_eq!(reply.status, 502);
        assert_eq!(reply.x_cache(), "MISS");
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_without_answering_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let upstream = listener.local_addr().expect("local address");
    let hang_up = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let proxy = Proxy::start(upstream).await;

    for _ in 0..2 {
        let reply = get(&proxy.url("/a")).await;
        assert_eq!(reply.status, 502);
        assert_eq!(reply.x_cache(), "MISS");
    }
    hang_up.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_from_the_upstream_is_passed_on_and_not_stored() {
    let origin = Origin::start().await;
    origin.answer(
        "/a",
        Answer::status(503).header("cache-control", "max-age=60"),
    );
    let proxy = Proxy::start(origin.addr()).await;

    for _ in 0..2 {
        let reply = get(&proxy.url("/a")).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.x_cache(), "MISS");
    }
    assert_eq!(origin.calls(&Method::GET, "/a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_invalidates_its_target_and_same_origin_location() {
    let origin = Origin::start().await;
    let created = Answer::status(201).header("location", "/b");
    cached_with_post(&origin, "/a", "a", created);
    cached_with_post(&origin, "/b", "b", Answer::status(405));
    let proxy = Proxy::start(origin.addr()).await;
    store_a_and_b(&origin, &proxy).await;

    let post = send(Method::POST, &proxy.url("/a"), &[]).await;
    assert_eq!(post.status, 201);
    assert_eq!(origin.calls(&Method::POST, "/a"), 1);

    for path in ["/a", "/b"] {
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "MISS", "{path}");
        assert_eq!(origin.calls(&Method::GET, path), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_location_on_the_requests_host_invalidates() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(origin.addr()).await;
    let created = Answer::status(201).header("location", &format!("http://{}/b", proxy.host()));
    cached_with_post(&origin, "/a", "a", created);
    cached_with_post(&origin, "/b", "b", Answer::status(405));
    store_a_and_b(&origin, &proxy).await;

    assert_eq!(send(Method::POST, &proxy.url("/a"), &[]).await.status, 201);

    assert_eq!(get(&proxy.url("/b")).await.x_cache(), "MISS");
    assert_eq!(origin.calls(&Method::GET, "/b"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_on_another_host_does_not_invalidate() {
    let origin = Origin::start().await;
    let created = Answer::status(201).header("location", "http://elsewhere.example/b");
    cached_with_post(&origin, "/a", "a", created);
    cached_with_post(&origin, "/b", "b", Answer::status(405));
    let proxy = Proxy::start(origin.addr()).await;
    store_a_and_b(&origin, &proxy).await;

    assert_eq!(send(Method::POST, &proxy.url("/a"), &[]).await.status, 201);

    assert_eq!(get(&proxy.url("/a")).await.x_cache(), "MISS", "the target");
    assert_eq!(get(&proxy.url("/b")).await.x_cache(), "HIT");
    assert_eq!(origin.calls(&Method::GET, "/b"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_post_invalidates_nothing() {
    let origin = Origin::start().await;
    let refused = Answer::status(409).header("location", "/b");
    cached_with_post(&origin, "/a", "a", refused);
    cached_with_post(&origin, "/b", "b", Answer::status(405));
    let proxy = Proxy::start(origin.addr()).await;
    store_a_and_b(&origin, &proxy).await;

    assert_eq!(send(Method::POST, &proxy.url("/a"), &[]).await.status, 409);

    for path in ["/a", "/b"] {
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "HIT", "{path}");
        assert_eq!(origin.calls(&Method::GET, path), 1, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_and_private_responses_are_not_stored() {
    let origin = Origin::start().await;
    origin.answer(
        "/cookie",
        Answer::ok("cookie")
            .header("cache-control", "max-age=60")
            .header("set-cookie", "session=1"),
    );
    origin.answer(
        "/private",
        Answer::ok("private").header("cache-control", "private, max-age=60"),
    );
    let proxy = Proxy::start(origin.addr()).await;

    for path in ["/cookie", "/private"] {
        for _ in 0..2 {
            let reply = get(&proxy.url(path)).await;
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.x_cache(), "MISS", "{path}");
        }
        assert_eq!(origin.calls(&Method::GET, path), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_response_is_not_stored() {
    let origin = Origin::start().await;
    origin.answer(
        "/a",
        Answer::ok("secret").header("cache-control", "no-store, max-age=60"),
    );
    let proxy = Proxy::start(origin.addr()).await;

    for _ in 0..2 {
        let reply = get(&proxy.url("/a")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.x_cache(), "MISS");
        assert_eq!(reply.text(), "secret");
    }
    assert_eq!(origin.calls(&Method::GET, "/a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_streams_to_its_client_as_the_origin_sends_it() {
    let origin = Origin::start().await;
    let (chunks, body) = tokio::sync::mpsc::unbounded_channel();
    origin.answer(
        "/a",
        Answer::streamed(body).header("cache-control", "max-age=60"),
    );
    let proxy = Proxy::start(origin.addr()).await;

    // The head comes while the origin has sent no byte of the body.
    let mut res = open(&proxy.url("/a")).await;
    assert_eq!(res.headers()["x-cache"], "MISS");
    chunks.send(Bytes::from_static(b"first ")).unwrap();
    let first = tokio::time::timeout(PATIENCE, res.body_mut().frame())
        .await
        .expect("the first chunk before the body ends")
        .expect("a frame")
        .expect("data");
    assert_eq!(first.into_data().unwrap(), "first ");
    chunks.send(Bytes::from_static(b"second")).unwrap();
    drop(chunks);
    let rest = tokio::time::timeout(PATIENCE, res.into_body().collect())
        .await
        .expect("the rest of the body")
        .expect("a whole body");
    assert_eq!(rest.to_bytes(), "second");

    let hit = get(&proxy.url("/a")).await;
    assert_eq!(
        (hit.x_cache(), hit.text().as_str()),
        ("HIT", "first second")
    );
    assert_eq!(origin.calls(&Method::GET, "/a"), 1);
}
