//! An HTTP origin on a loopback port: a test sets its answer per path
//! (and may change it at any time), and it records every request it
//! receives, so that the test can assert what reached it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// What the origin answers: status, headers and body.
#[derive(Debug, Clone)]
pub struct Answer {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Content,
}

/// The body of an [`Answer`].
#[derive(Debug, Clone)]
enum Content {
    Whole(Bytes),
    /// Chunks as the test sends them, for the first request answered.
    Streamed(Arc<Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>>),
}

impl Answer {
    /// `200 OK` with `body`, and no headers but those hyper adds (`Date`,
    /// `Content-Length`).
    pub fn ok(body: &str) -> Answer {
        Answer {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Content::Whole(Bytes::copy_from_slice(body.as_bytes())),
        }
    }

    /// `200 OK` whose body is the chunks the test sends to `chunks`, each
    /// as it is sent, ending when the sender is dropped (so with no
    /// `Content-Length`). Only the first request answered with it gets
    /// them; later ones get an empty body.
    #[allow(dead_code, reason = "the streaming tests use it, not every test crate")]
    pub fn streamed(chunks: mpsc::UnboundedReceiver<Bytes>) -> Answer {
        Answer {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Content::Streamed(Arc::new(Mutex::new(Some(chunks)))),
        }
    }

    /// `status` with an empty body.
    pub fn status(status: u16) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: Vec::new(),
            body: Content::Whole(Bytes::new()),
        }
    }

    /// The answer with the header `name: value` added.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        ));
        self
    }

    fn into_response(self) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
        let body = match self.body {
            Content::Whole(bytes) => Full::new(bytes).boxed_unsync(),
            Content::Streamed(chunks) => match lock(&chunks).take() {
                Some(chunks) => {
                    let frames = futures_util::stream::unfold(chunks, |mut chunks| async move {
                        let chunk = chunks.recv().await?;
                        Some((Ok(Frame::data(chunk)), chunks))
                    });
                    StreamBody::new(frames).boxed_unsync()
                }
                None => Full::new(Bytes::new()).boxed_unsync(),
            },
        };
        let mut res = Response::new(body);
        *res.status_mut() = self.status;
        for (name, value) in self.headers {
            res.headers_mut().append(name, value);
        }
        res
    }
}

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The headers.
    pub headers: HeaderMap,
}

impl Received {
    /// The value of header `name`, if it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decides the answer to a request.
type Route = Arc<dyn Fn(&Received) -> Answer + Send + Sync>;

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    received: Mutex<Vec<Received>>,
}

/// A running origin; it stops when dropped.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Origin {
    /// Starts an origin on a free loopback port. A path without a route
    /// is answered `404` with `Cache-Control: no-store`.
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State::default());
        let server = tokio::spawn(accept(listener, state.clone()));
        Origin {
            addr,
            state,
            server,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests for `path` (whatever their method and query) with
    /// what `answer` returns for them, from now on.
    pub fn route(&self, path: &str, answer: impl Fn(&Received) -> Answer + Send + Sync + 'static) {
        lock(&self.state.routes).insert(path.to_owned(), Arc::new(answer));
    }

    /// Answers every request for `path` with `answer`, from now on.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.route(path, move |_| answer.clone());
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// How many `method` requests for `path` it received.
    pub fn calls(&self, method: &Method, path: &str) -> usize {
        lock(&self.state.received)
            .iter()
            .filter(|r| r.method == *method && r.path == path)
            .count()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // The accept task owns the connection tasks: they end with it.
        self.server.abort();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let answer = respond(&state, &req);
            async move { Ok::<_, Infallible>(answer.into_response()) }
        });
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Records `req`, then finds its answer.
fn respond(state: &State, req: &Request<Incoming>) -> Answer {
    let received = Received {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        headers: req.headers().clone(),
    };
    lock(&state.received).push(received.clone());
    let route = lock(&state.routes).get(&received.path).cloned();
    match route {
        Some(route) => route(&received),
        None => Answer::status(404).header("cache-control", "no-store"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
