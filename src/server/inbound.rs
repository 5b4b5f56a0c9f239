//! The inbound side of a WebSocket connection, with backpressure.
//!
//! actix-web-actors' own frame reader copies everything the socket delivers into one
//! growing buffer before it decodes a single frame, so a client that writes faster
//! than its session works can make the node hold gigabytes. [`BoundedFrames`]
//! decodes the request payload itself and reads the next chunk only when no whole
//! frame is buffered: at most one frame (`session.max_frame_size`) plus one chunk
//! waits here, and the HTTP layer stops reading the socket when its own small payload
//! buffer is full, so TCP pushes back on the client.
//!
//! A [`Gate`] lets the session stop reading altogether while a recipient it sends to
//! is congested (see [`outbound`](crate::node::outbound)); it is opened again when
//! the recipient has drained.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use futures_util::Stream;

/// Pauses and resumes the reading of one connection.
#[derive(Debug, Default)]
pub struct Gate {
    paused: AtomicBool,
    waker: AtomicWaker,
}

impl Gate {
    /// Stops reading after the frame being handled.
    pub fn pause(&self) {
        self.paused.store(true, Relaxed);
    }

    /// Reads again.
    pub fn resume(&self) {
        self.paused.store(false, Relaxed);
        self.waker.wake();
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }
}

/// WebSocket messages decoded from a request payload, one frame buffered at most.
pub struct BoundedFrames<S> {
    payload: S,
    buf: BytesMut,
    codec: Codec,
    gate: Arc<Gate>,
    ended: bool,
    /// After a protocol error: read and drop everything until the client goes, so
    /// that closing the socket does not reset it under the close frame.
    discarding: bool,
}

impl<S> std::fmt::Debug for BoundedFrames<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedFrames")
            .field("buffered", &self.buf.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<S> BoundedFrames<S> {
    /// Frames of at most `max_frame_size` bytes from `payload`, paused by `gate`.
    pub fn new(payload: S, max_frame_size: usize, gate: Arc<Gate>) -> Self {
        BoundedFrames {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_frame_size),
            gate,
            ended: false,
            discarding: false,
        }
    }
}

fn io_error(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Io(std::io::Error::other(e.to_string()))
}

fn message(frame: Frame) -> Result<Message, ProtocolError> {
    Ok(match frame {
        Frame::Text(data) => Message::Text(ByteString::try_from(data).map_err(io_error)?),
        Frame::Binary(data) => Message::Binary(data),
        Frame::Continuation(item) => Message::Continuation(item),
        Frame::Ping(p) => Message::Ping(p),
        Frame::Pong(p) => Message::Pong(p),
        Frame::Close(reason) => Message::Close(reason),
    })
}

impl<S> Stream for BoundedFrames<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Message, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.gate.is_paused() {
            this.gate.waker.register(cx.waker());
            // re-check: a resume may have raced the registration
            if this.gate.is_paused() {
                return Poll::Pending;
            }
        }
        while this.discarding {
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(message(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.discarding = true;
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(io_error(e))));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Encoder;
    use futures_util::StreamExt;

    fn client_frames(texts: &[&str]) -> Bytes {
        let mut codec = Codec::new().client_mode();
        let mut out = BytesMut::new();
        for t in texts {
            codec
                .encode(Message::Text(ByteString::from(*t)), &mut out)
                .unwrap();
        }
        out.freeze()
    }

    #[actix::test]
    async fn decodes_frames_split_across_chunks() {
        let wire = client_frames(&["one", "two", "three"]);
        let (a, b) = wire.split_at(5);
        let chunks = vec![Ok(Bytes::copy_from_slice(a)), Ok(Bytes::copy_from_slice(b))];
        let mut s = BoundedFrames::new(futures_util::stream::iter(chunks), 1024, Arc::default());
        for want in ["one", "two", "three"] {
            match s.next().await {
                Some(Ok(Message::Text(t))) => assert_eq!(t, want),
                other => panic!("{other:?}"),
            }
        }
        assert!(s.next().await.is_none());
    }

    #[actix::test]
    async fn reads_no_further_than_one_chunk_past_a_frame() {
        // a payload of many chunks: after one frame, only the chunk it came in was read
        let chunks: Vec<_> = (0..100)
            .map(|_| Ok::<_, PayloadError>(client_frames(&["x"])))
            .collect();
        let mut s = BoundedFrames::new(futures_util::stream::iter(chunks), 1024, Arc::default());
        assert!(matches!(s.next().await, Some(Ok(Message::Text(_)))));
        assert!(s.buf.len() < 16, "buffered {}", s.buf.len());
    }

    #[actix::test]
    async fn an_oversized_frame_is_an_error_not_a_buffer() {
        let big = "x".repeat(5000);
        let chunks = vec![Ok(client_frames(&[&big]))];
        let mut s = BoundedFrames::new(futures_util::stream::iter(chunks), 1024, Arc::default());
        assert!(matches!(s.next().await, Some(Err(ProtocolError::Overflow))));
        assert!(s.next().await.is_none(), "the rest is dropped");
    }

    #[actix::test]
    async fn a_paused_gate_holds_frames_until_resumed() {
        let gate = Arc::new(Gate::default());
        let mut s = BoundedFrames::new(
            futures_util::stream::iter(vec![Ok(client_frames(&["a"]))]),
            1024,
            gate.clone(),
        );
        gate.pause();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut s).poll_next(&mut cx).is_pending());
        gate.resume();
        assert!(matches!(s.next().await, Some(Ok(Message::Text(_)))));
    }
}
