//! Misses stream: the client that triggered a load reads the origin's body
//! as it arrives, while a copy of it is collected for the store.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::{mpsc, watch};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use crate::http::CacheBody;
use crate::store::{MemoryStore, Store};
use crate::{Cache, CacheAsideLayer, Entry, Policy, StoreError};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// How long any one awaited event may take, on two busy cores.
const DEADLINE: Duration = Duration::from_secs(20);

/// `fut`, which must finish within [`DEADLINE`].
async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("finished before the deadline")
}

/// Waits until `done` holds, within [`DEADLINE`].
async fn until(mut done: impl FnMut() -> bool) {
    within(async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// The body of one origin answer, written by the test.
struct Feed(mpsc::UnboundedSender<Result<Frame<Bytes>, io::Error>>);

impl Feed {
    fn chunk(&self, data: &'static str) {
        self.0
            .send(Ok(Frame::data(Bytes::from_static(data.as_bytes()))))
            .expect("the origin body is being read");
    }

    fn fail(&self) {
        self.0
            .send(Err(io::Error::other("connection reset")))
            .expect("the origin body is being read");
    }

    /// Ends the body.
    fn end(self) {
        drop(self.0);
    }
}

/// An origin answering every request with a 200 at once, and a body that
/// the test writes through the [`Feed`] each call hands it.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    feeds: mpsc::UnboundedSender<Feed>,
    headers: &'static [(&'static str, &'static str)],
}

impl Origin {
    fn new(
        headers: &'static [(&'static str, &'static str)],
    ) -> (Self, mpsc::UnboundedReceiver<Feed>) {
        let (feeds, rx) = mpsc::unbounded_channel();
        let origin = Origin {
            calls: Arc::new(AtomicUsize::new(0)),
            feeds,
            headers,
        };
        (origin, rx)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        let origin = self.clone();
        service_fn(move |_: Request<Full<Bytes>>| {
            let origin = origin.clone();
            async move {
                origin.calls.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = origin.feeds.send(Feed(tx));
                let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|frame| (frame, rx))
                });
                let mut res = Response::builder();
                for (name, value) in origin.headers {
                    res = res.header(*name, *value);
                }
                let body = StreamBody::new(Box::pin(frames)).boxed_unsync();
                Ok(res.body(body).expect("valid response"))
            }
        })
    }
}

/// A `MemoryStore` that tells how many entries were put in it.
#[derive(Clone)]
struct Watched {
    inner: MemoryStore,
    puts: Arc<watch::Sender<usize>>,
}

impl Watched {
    fn new() -> Self {
        Watched {
            inner: MemoryStore::default(),
            puts: Arc::new(watch::Sender::new(0)),
        }
    }

    fn puts(&self) -> usize {
        *self.puts.borrow()
    }

    /// Waits until `n` entries were put.
    async fn stored(&self, n: usize) {
        let mut rx = self.puts.subscribe();
        within(rx.wait_for(|puts| *puts >= n))
            .await
            .expect("the store is there");
    }
}

impl Store for Watched {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        let put = self.inner.put(key, entry).await;
        self.puts.send_modify(|puts| *puts += 1);
        put
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.remove(key).await
    }
    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        self.inner.remove_tag(tag).await
    }
}

/// A cache-aside layer over a watched store, storing bodies up to `max`
/// bytes.
fn layer(max: usize) -> CacheAsideLayer<Watched> {
    CacheAsideLayer::new(
        Cache::new(Watched::new()),
        "streaming",
        Policy::default().jitter(0.0),
    )
    .max_body_bytes(max)
}

fn request(headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::builder().uri("http://h/stream");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::new())).expect("valid request")
}

fn x_cache<B>(res: &Response<B>) -> &str {
    res.headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The next data frame of `body`.
async fn next_chunk(body: &mut CacheBody<Body>) -> Bytes {
    let frame = within(body.frame()).await.expect("a frame").expect("data");
    frame.into_data().expect("a data frame")
}

/// The rest of `body`.
async fn rest(body: CacheBody<Body>) -> Bytes {
    within(body.collect())
        .await
        .expect("a whole body")
        .to_bytes()
}

#[tokio::test]
async fn a_miss_answers_before_the_origin_body_ends() {
    let (origin, mut feeds) = Origin::new(&[]);
    let l = layer(1024);
    let store = l.cache.store().clone();
    let svc = l.layer(origin.service());
    // The head arrives while the origin has not written a byte.
    let res = within(svc.clone().oneshot(request(&[]))).await.unwrap();
    assert_eq!((res.status(), x_cache(&res)), (StatusCode::OK, "MISS"));
    let feed = within(feeds.recv()).await.expect("the origin was called");
    let mut body = res.into_body();
    feed.chunk("first ");
    assert_eq!(next_chunk(&mut body).await, "first ");
    feed.chunk("second");
    feed.end();
    assert_eq!(rest(body).await, "second");
    // The end of the body came once the response was stored.
    assert_eq!(store.puts(), 1);
    let hit = within(svc.clone().oneshot(request(&[]))).await.unwrap();
    assert_eq!(x_cache(&hit), "HIT");
    assert!(hit.headers().contains_key("etag"), "computed once stored");
    assert_eq!(rest(hit.into_body()).await, "first second");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_streams_through_and_is_not_stored() {
    let (origin, mut feeds) = Origin::new(&[]);
    let l = layer(8);
    let store = l.cache.store().clone();
    let svc = l.layer(origin.service());
    let res = within(svc.clone().oneshot(request(&[]))).await.unwrap();
    let feed = within(feeds.recv()).await.expect("the origin was called");
    let mut body = res.into_body();
    feed.chunk("12345");
    assert_eq!(next_chunk(&mut body).await, "12345");
    feed.chunk("67890");
    assert_eq!(next_chunk(&mut body).await, "67890", "past the limit");
    feed.chunk("abc");
    assert_eq!(next_chunk(&mut body).await, "abc");
    feed.end();
    assert_eq!(rest(body).await, "");
    assert_eq!(store.puts(), 0);
    let next = tokio::spawn(svc.clone().oneshot(request(&[])));
    let feed = within(feeds.recv())
        .await
        .expect("the origin was called again");
    feed.chunk("small");
    feed.end();
    let res = within(next).await.unwrap().unwrap();
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(rest(res.into_body()).await, "small");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_cancel_the_store() {
    let (origin, mut feeds) = Origin::new(&[]);
    let l = layer(1024);
    let store = l.cache.store().clone();
    let svc = l.layer(origin.service());
    let res = within(svc.clone().oneshot(request(&[]))).await.unwrap();
    drop(res);
    let feed = within(feeds.recv()).await.expect("the origin was called");
    feed.chunk("read ");
    feed.chunk("for the others");
    feed.end();
    store.stored(1).await;
    let hit = within(svc.clone().oneshot(request(&[]))).await.unwrap();
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(rest(hit.into_body()).await, "read for the others");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn an_origin_body_that_fails_midway_stores_nothing() {
    let (origin, mut feeds) = Origin::new(&[]);
    let l = layer(1024);
    let store = l.cache.store().clone();
    let svc = l.layer(origin.service());
    let res = within(svc.clone().oneshot(request(&[]))).await.unwrap();
    let feed = within(feeds.recv()).await.expect("the origin was called");
    let mut body = res.into_body();
    feed.chunk("partial");
    assert_eq!(next_chunk(&mut body).await, "partial");
    feed.fail();
    let failed = within(body.frame()).await.expect("a frame");
    assert!(failed.is_err(), "the client sees the origin's error");
    assert_eq!(store.puts(), 0);
    let next = tokio::spawn(svc.clone().oneshot(request(&[])));
    let feed = within(feeds.recv())
        .await
        .expect("the origin was called again");
    feed.chunk("whole");
    feed.end();
    let res = within(next).await.unwrap().unwrap();
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(rest(res.into_body()).await, "whole");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_stored_response() {
    const CALLERS: usize = 200;
    let (origin, mut feeds) = Origin::new(&[]);
    let l = layer(1024);
    let profile = l.profile.clone();
    let svc = l.layer(origin.service());
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(request(&[])).await.unwrap();
                let status = x_cache(&res).to_owned();
                (status, rest(res.into_body()).await)
            })
        })
        .collect();
    let feed = within(feeds.recv()).await.expect("the origin was called");
    feed.chunk("one, ");
    // The body goes on until every other caller waits for the load.
    until(|| profile.stats().joined == CALLERS as u64 - 1).await;
    feed.chunk("two, ");
    feed.chunk("three");
    feed.end();
    for caller in callers {
        let (status, body) = within(caller).await.unwrap();
        assert_eq!(
            (status.as_str(), &body[..]),
            ("MISS", &b"one, two, three"[..])
        );
    }
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn if_none_match_on_a_streamed_miss_is_answered_from_the_origins_etag() {
    let (origin, mut feeds) = Origin::new(&[("etag", "\"v1\"")]);
    let l = layer(1024);
    let store = l.cache.store().clone();
    let svc = l.layer(origin.service());
    let res = within(svc.clone().oneshot(request(&[("if-none-match", "\"v1\"")])))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()["etag"], "\"v1\"");
    let feed = within(feeds.recv()).await.expect("the origin was called");
    feed.chunk("still stored");
    feed.end();
    store.stored(1).await;
    let hit = within(svc.clone().oneshot(request(&[]))).await.unwrap();
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(rest(hit.into_body()).await, "still stored");
    assert_eq!(origin.calls(), 1);
}
