//! A small HTTP/1.1 client: one request, its whole answer.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::PATIENCE;

/// An answer as a test reads it.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The value of header `name`, if it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `X-Cache` header, or empty.
    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `method url` with `headers` (sent as given: a `Host` among them
/// replaces the URL's), on a connection of its own; fails the test when
/// no whole answer comes within [`PATIENCE`].
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::default()).expect("a valid request");
    let exchange = async {
        let res = client.request(req).await.expect("an answer");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {PATIENCE:?}"))
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[]).await
}

/// `GET url` on a connection of its own, answered with its head only: the
/// test reads the body as it comes. Fails the test when no head comes
/// within [`PATIENCE`].
#[allow(dead_code, reason = "the streaming tests use it, not every test crate")]
pub async fn open(url: &str) -> Response<Incoming> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(url)
        .body(Full::default())
        .expect("a valid request");
    tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .unwrap_or_else(|_| panic!("no head from {url} within {PATIENCE:?}"))
        .expect("an answer")
}
