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
//! the recipient has drained. [`Gated`] puts the same gate on a stream that is
//! decoded elsewhere (the frames of a federation link this node dialled).
//!
//! [`read_frames`] hands a connection's frames to its actor as `ctx.add_stream`
//! does, but up to [`FRAMES_PER_POLL`] of them per poll instead of actix's 16: a
//! flooding client's frames are routed in larger runs, so each recipient is woken
//! and writes its socket once per run rather than once per 16 frames.
//! [`read_frames_in_runs`] also tells the actor where each run ends, for an actor
//! that hands frames on to another (a Socket.IO socket to its session).
//!
//! [`Admission`] is the rate and abuse account of one connection: every frame
//! takes a token from its rate limiter, and a connection refused too often within
//! a window is abusive and closed. Runtime sessions and federation links share
//! these pieces, so a peer gets the same treatment as a session.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::LimitsSection;
use crate::node::outbound::OutboundQueue;

/// Frames a connection's actor handles in one poll before it lets its other work
/// (and the other actors of its worker) run.
pub const FRAMES_PER_POLL: usize = 128;

/// Hands the items of `stream` to the actor's [`StreamHandler`], like
/// `ctx.add_stream`, up to [`FRAMES_PER_POLL`] per poll; stops handing them while
/// the actor's context waits on a future (the rest follow once it is done).
///
/// [`StreamHandler`]: actix::StreamHandler
pub fn read_frames<A, S>(stream: S, ctx: &mut A::Context) -> actix::SpawnHandle
where
    S: Stream + Unpin + 'static,
    A: actix::Actor + actix::StreamHandler<S::Item>,
    A::Context: actix::AsyncContext<A>,
{
    read_frames_in_runs::<A, S>(stream, ctx, |_, _| {})
}

/// [`read_frames`], calling `run_end` after each poll's run of frames (when the
/// stream has no more for now, or after [`FRAMES_PER_POLL`]), unless the actor's
/// context is waiting: an actor that collects frames hands each run on at once.
pub fn read_frames_in_runs<A, S>(
    stream: S,
    ctx: &mut A::Context,
    run_end: fn(&mut A, &mut A::Context),
) -> actix::SpawnHandle
where
    S: Stream + Unpin + 'static,
    A: actix::Actor + actix::StreamHandler<S::Item>,
    A::Context: actix::AsyncContext<A>,
{
    use actix::AsyncContext;
    ctx.spawn(ReadFrames {
        stream,
        started: false,
        run_end,
    })
}

struct ReadFrames<A: actix::Actor, S> {
    stream: S,
    started: bool,
    run_end: fn(&mut A, &mut A::Context),
}

impl<A, S> actix::ActorFuture<A> for ReadFrames<A, S>
where
    S: Stream + Unpin,
    A: actix::Actor + actix::StreamHandler<S::Item>,
    A::Context: actix::AsyncContext<A>,
{
    type Output = ();

    fn poll(
        mut self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut A::Context,
        task: &mut Context<'_>,
    ) -> Poll<()> {
        use actix::AsyncContext;
        // what the frames of this poll deliver is handed over when it returns
        let _pass = crate::node::handoff::Pass::open();
        if !self.started {
            self.started = true;
            <A as actix::StreamHandler<S::Item>>::started(act, ctx);
        }
        for _ in 0..FRAMES_PER_POLL {
            match Pin::new(&mut self.stream).poll_next(task) {
                Poll::Ready(Some(item)) => {
                    <A as actix::StreamHandler<S::Item>>::handle(act, item, ctx);
                    if ctx.waiting() {
                        // the context polls this again once its wait is over
                        return Poll::Pending;
                    }
                }
                Poll::Ready(None) => {
                    <A as actix::StreamHandler<S::Item>>::finished(act, ctx);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    (self.run_end)(act, ctx);
                    return Poll::Pending;
                }
            }
        }
        (self.run_end)(act, ctx);
        task.waker().wake_by_ref();
        Poll::Pending
    }
}

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

    /// True if reading may go on; otherwise `cx` is woken at the next resume.
    fn poll_open(&self, cx: &mut Context<'_>) -> bool {
        if !self.is_paused() {
            return true;
        }
        self.waker.register(cx.waker());
        // re-check: a resume may have raced the registration
        !self.is_paused()
    }

    /// Resolves once the gate is open.
    pub async fn opened(&self) {
        futures_util::future::poll_fn(|cx| {
            if self.poll_open(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Pauses reading until `queue` (a congested recipient's) has drained, is
    /// closed, or `deadline` passed: the future to drive resumes the gate. `None` if
    /// the gate is paused already.
    pub fn hold(
        self: &Arc<Self>,
        queue: Arc<OutboundQueue>,
        deadline: Duration,
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        if self.is_paused() {
            return None;
        }
        self.pause();
        let gate = self.clone();
        Some(async move {
            queue.space(deadline).await;
            gate.resume();
        })
    }
}

/// Any stream of frames, read only while its [`Gate`] is open.
#[derive(Debug)]
pub struct Gated<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Gated<S> {
    /// `inner`, paused by `gate`.
    pub fn new(inner: S, gate: Arc<Gate>) -> Self {
        Gated { inner, gate }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if !this.gate.poll_open(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_next(cx)
    }
}

/// What counting one refused frame found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Counted; the connection goes on.
    Counted,
    /// This refusal made the connection abusive: close it now.
    NowAbusive,
    /// The connection is abusive already (it is being closed).
    Abusive,
}

/// The rate limit and abuse account of one connection (`[limits]`).
pub struct Admission {
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    /// Refusals in the current window, and when the window began (cells: refusal
    /// paths borrow their connection immutably).
    refusals: Cell<(u32, Instant)>,
    abusive: Cell<bool>,
    threshold: u32,
    window: Duration,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("refusals", &self.refusals.get().0)
            .field("abusive", &self.abusive.get())
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// `limits.messages_per_second` sustained plus `limits.burst`; abusive after
    /// `limits.abuse_threshold` refusals within `limits.abuse_window_ms`.
    pub fn new(limits: &LimitsSection) -> Admission {
        let quota = Quota::per_second(
            NonZeroU32::new(limits.messages_per_second).unwrap_or(NonZeroU32::MIN),
        )
        .allow_burst(NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN));
        Admission {
            limiter: RateLimiter::direct(quota),
            refusals: Cell::new((0, Instant::now())),
            abusive: Cell::new(false),
            threshold: limits.abuse_threshold,
            window: Duration::from_millis(limits.abuse_window_ms),
        }
    }

    /// Takes one frame's token: false if the connection is over its rate.
    pub fn check(&self) -> bool {
        self.limiter.check().is_ok()
    }

    /// Counts a refused frame.
    pub fn refuse(&self) -> Refusal {
        if self.abusive.get() {
            return Refusal::Abusive;
        }
        let (mut n, mut since) = self.refusals.get();
        let now = Instant::now();
        if now.duration_since(since) > self.window {
            (n, since) = (0, now);
        }
        n += 1;
        self.refusals.set((n, since));
        if n < self.threshold {
            return Refusal::Counted;
        }
        self.abusive.set(true);
        Refusal::NowAbusive
    }

    /// True once the connection was found abusive.
    pub fn is_abusive(&self) -> bool {
        self.abusive.get()
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
        if !this.gate.poll_open(cx) {
            return Poll::Pending;
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

    #[test]
    fn refusals_past_the_threshold_make_a_connection_abusive() {
        let limits = LimitsSection {
            messages_per_second: 1,
            burst: 2,
            abuse_threshold: 3,
            ..LimitsSection::default()
        };
        let a = Admission::new(&limits);
        assert!(a.check() && a.check());
        assert!(!a.check(), "over the burst");
        assert_eq!(a.refuse(), Refusal::Counted);
        assert_eq!(a.refuse(), Refusal::Counted);
        assert_eq!(a.refuse(), Refusal::NowAbusive);
        assert_eq!(a.refuse(), Refusal::Abusive);
        assert!(a.is_abusive());
    }

    #[actix::test]
    async fn a_gated_stream_waits_for_its_gate() {
        let gate = Arc::new(Gate::default());
        let mut s = Gated::new(futures_util::stream::iter(vec![1, 2]), gate.clone());
        gate.pause();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut s).poll_next(&mut cx).is_pending());
        gate.resume();
        assert_eq!(s.next().await, Some(1));
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
