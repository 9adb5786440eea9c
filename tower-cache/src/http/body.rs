//! The response body of the HTTP layers, and bounded collection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use super::tee::TeeBody;

pin_project! {
    /// A response body from the cache (bytes and trailers in memory) or
    /// from the inner service: streamed through, possibly after chunks the
    /// layer already read while deciding whether to store it, or, on a
    /// miss, streamed to the client as it arrives while a copy of it is
    /// collected for the cache.
    ///
    /// Its size hint is the inner body's, less what was already sent;
    /// trailers are forwarded.
    pub struct CacheBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Cached {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
        Stream {
            prefix: VecDeque<Bytes>,
            #[pin]
            rest: B,
        },
        Failed {
            error: Option<B::Error>,
        },
        Tee {
            #[pin]
            tee: TeeBody<B>,
        },
    }
}

impl<B: Body> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Cached { data, .. } => f
                .debug_struct("Cached")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Stream { prefix, .. } => f
                .debug_struct("Stream")
                .field("prefix_chunks", &prefix.len())
                .finish(),
            Kind::Failed { .. } => f.write_str("Failed"),
            Kind::Tee { .. } => f.write_str("Tee"),
        }
    }
}

impl<B: Body> CacheBody<B> {
    /// A body held in memory.
    pub fn cached(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        CacheBody {
            kind: Kind::Cached {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        CacheBody::cached(Bytes::new(), None)
    }

    /// The inner service's body, streamed through untouched.
    pub fn stream(body: B) -> Self {
        Self::replay(VecDeque::new(), body)
    }

    fn replay(prefix: VecDeque<Bytes>, rest: B) -> Self {
        CacheBody {
            kind: Kind::Stream { prefix, rest },
        }
    }

    fn failed(error: B::Error) -> Self {
        CacheBody {
            kind: Kind::Failed { error: Some(error) },
        }
    }

    /// The client's side of a body being collected for the cache as it
    /// streams ([`tee`](super::tee::tee)).
    pub(crate) fn tee(tee: TeeBody<B>) -> Self {
        CacheBody {
            kind: Kind::Tee { tee },
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Cached { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            KindProj::Stream { prefix, rest } => {
                if let Some(chunk) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                rest.poll_frame(cx)
            }
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
            KindProj::Tee { tee } => tee.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Cached { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Stream { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
            Kind::Tee { tee } => tee.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Cached { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { prefix, rest } => {
                let buffered: u64 = prefix.iter().map(|b| b.len() as u64).sum();
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + buffered);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
            Kind::Failed { .. } => SizeHint::with_exact(0),
            Kind::Tee { tee } => tee.size_hint(),
        }
    }
}

/// The result of reading a body up to a limit.
pub(crate) enum Collected<B: Body> {
    /// The whole body fit.
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Over the limit: what was read, and the rest of the body.
    TooLarge(CacheBody<B>),
    /// The body failed while being read.
    Failed(CacheBody<B>),
}

/// Reads `body` while it stays within `max` bytes.
pub(crate) async fn collect_limited<B>(mut body: B, max: usize) -> Collected<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    if body.size_hint().lower() > max as u64 {
        return Collected::TooLarge(CacheBody::stream(body));
    }
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return Collected::Failed(CacheBody::failed(error)),
        };
        match frame.into_data() {
            Ok(data) => {
                total += data.len();
                chunks.push_back(data);
                if total > max {
                    return Collected::TooLarge(CacheBody::replay(chunks, body));
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match &mut trailers {
                        None => trailers = Some(t),
                        Some(existing) => existing.extend(t),
                    }
                }
            }
        }
    }
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop_front().unwrap_or_default(),
        _ => {
            let mut buf = BytesMut::with_capacity(total);
            for c in chunks {
                buf.extend_from_slice(&c);
            }
            buf.freeze()
        }
    };
    Collected::Complete { data, trailers }
}
