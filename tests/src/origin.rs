//! A small HTTP origin for the layer tests: counts its calls, can be made
//! slow or failing, and answers a few paths.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};
use tower_cache::http::CacheBody;

/// The request and response body of the origin.
pub type Body = Full<Bytes>;

/// A counting HTTP origin.
#[derive(Clone, Default)]
pub struct Origin {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

impl Origin {
    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Makes every response a 503 (or not).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Delays every response.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The origin as a service. Paths: `/missing` is a 404, `/big` is
    /// 2 MiB of `x`, `/me` echoes `Authorization`, anything else answers
    /// `"{path} #{call number}"`; `PUT` answers `"saved"`.
    pub fn service(
        &self,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        let origin = self.clone();
        tower::service_fn(move |req: Request<Body>| {
            let origin = origin.clone();
            async move {
                let n = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let delay = origin.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let path = req.uri().path().to_owned();
                let res = Response::builder();
                let res = if origin.failing.load(Ordering::SeqCst) {
                    res.status(503).body(Body::from("down"))
                } else if req.method() == Method::PUT {
                    res.body(Body::from("saved"))
                } else {
                    match path.as_str() {
                        "/missing" => res.status(404).body(Body::from("not found")),
                        "/big" => res.body(Body::from(vec![b'x'; 2 * 1024 * 1024])),
                        "/me" => {
                            let who = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            res.body(Body::from(format!("me={who}")))
                        }
                        _ => res.body(Body::from(format!("{path} #{n}"))),
                    }
                };
                Ok::<_, Infallible>(res.expect("valid response"))
            }
        })
    }
}

/// A response as a test reads it.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: http::StatusCode,
    /// The `X-Cache` header, or empty.
    pub x_cache: String,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request with `headers` through `svc`.
pub async fn send<S>(svc: &S, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply
where
    S: Service<Request<Body>, Response = Response<CacheBody<Body>>, Error = Infallible> + Clone,
{
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Body::default()).expect("valid request");
    let res = svc.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let x_cache = res
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("infallible body")
        .to_bytes();
    Reply {
        status,
        x_cache,
        body,
    }
}

/// `GET uri` through `svc`.
pub async fn get<S>(svc: &S, uri: &str) -> Reply
where
    S: Service<Request<Body>, Response = Response<CacheBody<Body>>, Error = Infallible> + Clone,
{
    send(svc, Method::GET, uri, &[]).await
}
