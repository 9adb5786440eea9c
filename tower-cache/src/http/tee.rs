//! A body read once for two readers: the client, as it arrives, and the
//! cache, whole, up to a limit.
//!
//! [`tee`] splits an origin body into the client's [`TeeBody`] and the
//! [`Collect`] future that drives the origin: it reads every frame, sends
//! it to the client and keeps a copy, and at the end makes what is to be
//! stored of the whole body and its trailers. The client's pace never
//! holds the origin back: the frames waiting for the client are the
//! copy's own buffers, so what the channel holds stays within the limit.
//! Past the limit the copy is dropped and the rest of the origin body is
//! handed to the client, which then reads it directly, at its own pace. A
//! client that goes away stops nothing: the origin is read on to its end
//! for the copy.
//!
//! The end of the client's body (its last frame when the origin tells it
//! is the last, else the end of the stream) is held back until the
//! collector is dropped, which its owner does once the copy is stored: a
//! client that read the whole body and asks again finds it in the cache.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{mpsc, oneshot};

/// A frame for the client.
type Sent<B> = Result<Frame<Bytes>, <B as Body>::Error>;

/// Splits `body` into the client's body and the future that reads it,
/// keeping a copy of at most `max` bytes, of which `finish` makes what the
/// future yields.
pub(crate) fn tee<B, F, T>(body: B, max: usize, finish: F) -> (TeeBody<B>, Collect<B, F>)
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce(Bytes, Option<HeaderMap>) -> Option<T>,
{
    let (frames, rx) = mpsc::unbounded_channel();
    let (rest, rest_rx) = oneshot::channel();
    let client = TeeBody {
        state: State::Channel { rx, rest: rest_rx },
        remaining: body.size_hint(),
    };
    let collect = Collect {
        body: Some(body),
        frames: Some(frames),
        rest: Some(rest),
        held: None,
        chunks: Vec::new(),
        total: 0,
        trailers: None,
        max,
        finish: Some(finish),
    };
    (client, collect)
}

/// Reads the origin body for both readers; yields what `finish` makes of
/// the whole body and its trailers, or `None` when the body was larger
/// than the limit or failed (the client then got the rest, or the
/// error). Dropped, it releases the end of the client's body; dropped
/// unfinished, it hands the rest of the origin body to the client.
pub(crate) struct Collect<B: Body, F> {
    /// The origin body, until it ends, fails or is handed over.
    body: Option<B>,
    frames: Option<mpsc::UnboundedSender<Sent<B>>>,
    /// Where the rest of the origin body goes once the copy stops.
    rest: Option<oneshot::Sender<B>>,
    /// The client's last frame, sent once the copy is stored.
    held: Option<Sent<B>>,
    chunks: Vec<Bytes>,
    total: usize,
    trailers: Option<HeaderMap>,
    max: usize,
    finish: Option<F>,
}

impl<B: Body, F> Collect<B, F> {
    /// Sends the frame held back, if any.
    fn flush(&mut self) {
        if let (Some(frames), Some(held)) = (&self.frames, self.held.take()) {
            // A client that went away is no reason to stop reading.
            let _ = frames.send(held);
        }
    }

    /// Sends `frame` to the client, if it is still there.
    fn send(&mut self, frame: Sent<B>) {
        self.flush();
        if let Some(frames) = &self.frames {
            let _ = frames.send(frame);
        }
    }

    /// Holds `frame`, the origin's last, back until the copy is stored.
    fn hold(&mut self, frame: Sent<B>) {
        self.flush();
        self.held = Some(frame);
    }

    /// Ends the channel, handing `body` (what is left of the origin body)
    /// to the client, which reads it after the frames already sent.
    fn close(&mut self, body: Option<B>) {
        self.flush();
        let rest = self.rest.take();
        if let (Some(body), Some(rest)) = (body, rest) {
            let _ = rest.send(body);
        }
        self.frames = None;
    }

    /// The copy, as one buffer.
    fn whole(&mut self) -> Bytes {
        let mut chunks = std::mem::take(&mut self.chunks);
        if chunks.len() <= 1 {
            return chunks.pop().unwrap_or_default();
        }
        let mut buf = BytesMut::with_capacity(self.total);
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
        }
        buf.freeze()
    }
}

// Nothing in it is pinned: the body is polled through `Pin::new` (it is
// `Unpin`), and the frame held back is only moved.
impl<B: Body, F> Unpin for Collect<B, F> {}

impl<B, F, T> Future for Collect<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce(Bytes, Option<HeaderMap>) -> Option<T>,
{
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        loop {
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => {
                    this.body = None;
                    let whole = this.whole();
                    let made = this
                        .finish
                        .take()
                        .and_then(|finish| finish(whole, this.trailers.take()));
                    if made.is_none() {
                        // Nothing to store: nothing to wait for.
                        this.close(None);
                    }
                    return Poll::Ready(made);
                }
                Some(Err(error)) => {
                    this.body = None;
                    this.send(Err(error));
                    this.close(None);
                    return Poll::Ready(None);
                }
                Some(Ok(frame)) => frame,
            };
            let last = body.is_end_stream();
            let frame = match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => {
                    this.total = this.total.saturating_add(data.len());
                    if this.total > this.max {
                        // Too large to store: the client reads the rest
                        // from the origin.
                        this.chunks = Vec::new();
                        this.send(Ok(Frame::data(data)));
                        let body = this.body.take();
                        this.close(body);
                        return Poll::Ready(None);
                    }
                    this.chunks.push(data.clone());
                    Frame::data(data)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        match &mut this.trailers {
                            None => this.trailers = Some(trailers.clone()),
                            Some(kept) => kept.extend(trailers.clone()),
                        }
                        Frame::trailers(trailers)
                    }
                    Err(_) => continue,
                },
            };
            if last {
                this.hold(Ok(frame));
            } else {
                this.send(Ok(frame));
            }
        }
    }
}

impl<B: Body, F> Drop for Collect<B, F> {
    fn drop(&mut self) {
        // The copy is stored, or it never will be (the load timed out,
        // the cache shut down): the client gets the rest of its body.
        let body = self.body.take();
        self.close(body);
    }
}

pin_project! {
    /// The client's side of a [`tee`]: the frames the collector sent, then
    /// the rest of the origin body if the collector handed it over.
    /// `remaining` is what is left to come, by the origin's size hint.
    pub(crate) struct TeeBody<B: Body> {
        #[pin]
        state: State<B>,
        remaining: SizeHint,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B: Body> {
        Channel {
            rx: mpsc::UnboundedReceiver<Result<Frame<Bytes>, B::Error>>,
            rest: oneshot::Receiver<B>,
        },
        Direct {
            #[pin]
            body: B,
        },
        Done,
    }
}

impl<B: Body<Data = Bytes>> Body for TeeBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Channel { rx, rest } => {
                    if let Some(frame) = ready!(rx.poll_recv(cx)) {
                        if let Some(data) = frame.as_ref().ok().and_then(Frame::data_ref) {
                            *this.remaining = less(*this.remaining, data.len() as u64);
                        }
                        return Poll::Ready(Some(frame));
                    }
                    let Ok(body) = ready!(Pin::new(rest).poll(cx)) else {
                        // The collector read the origin to its end.
                        this.state.set(State::Done);
                        return Poll::Ready(None);
                    };
                    this.state.set(State::Direct { body });
                }
                StateProj::Direct { body } => return body.poll_frame(cx),
                StateProj::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Channel { .. } => false,
            State::Direct { body } => body.is_end_stream(),
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Channel { .. } => self.remaining,
            State::Direct { body } => body.size_hint(),
            State::Done => SizeHint::with_exact(0),
        }
    }
}

/// `hint` less `n` bytes received.
fn less(hint: SizeHint, n: u64) -> SizeHint {
    let mut less = SizeHint::new();
    less.set_lower(hint.lower().saturating_sub(n));
    if let Some(upper) = hint.upper() {
        // Never below the lower bound: both shrink by the same amount.
        less.set_upper(upper.saturating_sub(n));
    }
    less
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    type Chunk = Result<Frame<Bytes>, &'static str>;

    /// The copy as it is.
    #[expect(
        clippy::unnecessary_wraps,
        reason = "a finishing function, which may store nothing"
    )]
    fn whole(data: Bytes, trailers: Option<HeaderMap>) -> Option<(Bytes, Option<HeaderMap>)> {
        Some((data, trailers))
    }

    /// A body whose frames the test sends.
    fn piped() -> (
        mpsc::UnboundedSender<Chunk>,
        impl Body<Data = Bytes, Error = &'static str> + Unpin,
    ) {
        let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        (tx, StreamBody::new(Box::pin(stream)))
    }

    #[tokio::test]
    async fn the_client_and_the_copy_get_every_frame_and_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let origin =
            Full::new(Bytes::from_static(b"hello")).with_trailers(std::future::ready(Some(Ok::<
                _,
                Infallible,
            >(
                trailers.clone(),
            ))));
        let (client, collect) = tee(origin, 64, whole);
        assert_eq!(client.size_hint().exact(), Some(5));
        let (data, kept) = collect.await.expect("whole");
        assert_eq!((&data[..], kept.as_ref()), (&b"hello"[..], Some(&trailers)));
        let got = client.collect().await.expect("body");
        assert_eq!(got.trailers(), Some(&trailers));
        assert_eq!(&got.to_bytes()[..], b"hello");
    }

    #[tokio::test]
    async fn past_the_limit_the_copy_stops_and_the_client_reads_on() {
        let (tx, origin) = piped();
        let (client, collect) = tee(origin, 4, whole);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"def"))))
            .unwrap();
        assert!(collect.await.is_none(), "over the limit: no copy");
        tx.send(Ok(Frame::data(Bytes::from_static(b"ghi"))))
            .unwrap();
        drop(tx);
        let got = client.collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"abcdefghi");
    }

    #[tokio::test]
    async fn the_copy_is_made_without_the_client() {
        let (tx, origin) = piped();
        let (client, collect) = tee(origin, 64, whole);
        let collect = tokio::spawn(collect);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        drop(client);
        tx.send(Ok(Frame::data(Bytes::from_static(b"def"))))
            .unwrap();
        drop(tx);
        let (data, _) = collect.await.unwrap().expect("whole");
        assert_eq!(&data[..], b"abcdef");
    }

    #[tokio::test]
    async fn a_failed_origin_fails_the_client_and_leaves_no_copy() {
        let (tx, origin) = piped();
        let (mut client, collect) = tee(origin, 64, whole);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        tx.send(Err("reset")).unwrap();
        assert!(collect.await.is_none());
        let first = client.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().unwrap(), "abc");
        assert_eq!(client.frame().await.expect("a frame").unwrap_err(), "reset");
        assert!(client.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_collector_dropped_midway_hands_the_rest_to_the_client() {
        let (tx, origin) = piped();
        let (client, mut collect) = tee(origin, 64, whole);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        // One poll reads what is there, then waits for more.
        assert!(futures_util::poll!(&mut collect).is_pending());
        drop(collect);
        tx.send(Ok(Frame::data(Bytes::from_static(b"def"))))
            .unwrap();
        drop(tx);
        let got = client.collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"abcdef");
    }

    #[tokio::test]
    async fn the_end_of_the_clients_body_waits_for_the_collector_to_go() {
        let (tx, origin) = piped();
        let (mut client, mut collect) = tee(origin, 64, whole);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        drop(tx);
        let (data, _) = (&mut collect).await.expect("whole");
        assert_eq!(&data[..], b"abc");
        let first = client.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().unwrap(), "abc");
        let mut end = std::pin::pin!(client.frame());
        assert!(futures_util::poll!(&mut end).is_pending(), "held back");
        drop(collect);
        assert!(end.await.is_none());
    }

    #[tokio::test]
    async fn the_origins_last_frame_waits_for_the_collector_to_go() {
        let (mut client, mut collect) = tee(Full::new(Bytes::from_static(b"abc")), 64, whole);
        assert!((&mut collect).await.is_some());
        let mut last = std::pin::pin!(client.frame());
        assert!(futures_util::poll!(&mut last).is_pending(), "held back");
        drop(collect);
        let frame = last.await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(client.frame().await.is_none());
    }

    #[test]
    fn the_size_hint_shrinks_as_data_arrives() {
        let mut hint = SizeHint::new();
        hint.set_lower(3);
        hint.set_upper(10);
        let left = less(hint, 4);
        assert_eq!((left.lower(), left.upper()), (0, Some(6)));
        assert_eq!(less(SizeHint::with_exact(5), 5).exact(), Some(0));
    }
}
