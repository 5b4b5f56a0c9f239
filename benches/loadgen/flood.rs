//! Flood mode: one publisher floods one subject to N subscribers with a window, with the
//! same client work per message on every [`Target`], so they can be compared in one run:
//! the node over its raw WebSocket, its Socket.IO endpoint or its HTTP transport;
//! nats-server (NATS over WebSocket); a plain socket.io 4 relay.
//!
//! On the node, one subscriber is a session whose runtime URL the messages are addressed
//! to (a 1→1 relay); several are sessions subscribed to one resource through `/sm`. On
//! nats-server, every subscriber `SUB`s one subject; on the socket.io 4 relay, every
//! subscriber joins the room of that address. The payload everywhere is the same
//! reTHINK `update` frame ([`FrameBuilder`]), and every receiver parses it as JSON and
//! checks its `to`, id and send stamp the same way. The window bounds the messages in
//! flight per subscriber: a publisher sends while `sent - delivered / N < window`, at
//! most [`MAX_SEND_BATCH`] before it flushes — on HTTP, one `POST /http/send` of a JSON
//! array of up to that many messages.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{interval_at, sleep, timeout, timeout_at, Instant, Interval};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    check_loopback, connect_ws, drain, drain_with, latency_stats, now_ns, ns_u32, open_session_on,
    run_tag, runtime_url, subscribe_on, ClientSink, ClientWs, FrameBuilder, Probe, Wire,
    CLOSE_TIMEOUT, HANDSHAKE_TIMEOUT,
};
use super::http::{self, HttpSession};
use super::nats::{self, Event, MsgReader, NatsAuth};
use super::sio::{self, Delivered, Dialect, Engine, Packet};
use super::{LatencyStats, LoadError, Params};

/// Most messages a publisher writes before it flushes (on HTTP: per request).
pub const MAX_SEND_BATCH: u64 = 256;
/// Connections opened concurrently while setting up.
const OPEN_CONCURRENCY: usize = 32;

/// The server under load and how to speak to it.
#[derive(Debug, Clone)]
pub enum Target {
    /// A hyperty node's raw WebSocket endpoint (`ws://…/ws`).
    Node { url: String },
    /// A hyperty node's Socket.IO endpoint over Engine.IO 3's WebSocket: `url` is the
    /// node's origin, `ws://host:port`.
    SocketIo { url: String },
    /// A hyperty node's HTTP POST + long-poll transport: `base` is `http://host:port`.
    Http { base: String },
    /// A plain socket.io 4 server relaying `message` events to the room of the
    /// message's `to` (`web/bench/relay.mjs`): `url` is its origin, `ws://host:port`.
    SocketIo4 { url: String },
    /// nats-server's WebSocket listener.
    Nats { url: String, auth: NatsAuth },
}

impl Target {
    fn url(&self) -> &str {
        match self {
            Target::Node { url }
            | Target::SocketIo { url }
            | Target::SocketIo4 { url }
            | Target::Nats { url, .. } => url,
            Target::Http { base } => base,
        }
    }
}

/// Result of [`run_flood`].
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    pub url: String,
    pub subscribers: u64,
    /// Messages the publisher wrote.
    pub sent: u64,
    /// Distinct messages received, summed over subscribers (expected: sent × subscribers).
    pub deliveries: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub frame_bytes: usize,
    /// From the first send to the last delivery.
    pub elapsed_s: f64,
    pub deliveries_per_sec: f64,
    /// Per delivery, send stamp → read by the subscriber, under the window's load.
    pub latency: LatencyStats,
    pub stopped: Option<String>,
}

impl FloodReport {
    /// `Err(LoadError::Loss)` unless every subscriber got every message.
    pub fn verify(&self) -> Result<(), LoadError> {
        let expected = self.sent * self.subscribers;
        if self.deliveries == expected && self.stopped.is_none() {
            Ok(())
        } else {
            Err(LoadError::Loss {
                label: self.url.clone(),
                sent: expected,
                delivered: self.deliveries,
                reason: self.stopped.clone(),
            })
        }
    }
}

#[derive(Default)]
pub(super) struct Progress {
    /// Deliveries over all subscribers.
    pub(super) delivered: AtomicU64,
    pub(super) notify: Notify,
}

/// What one receiving connection saw.
#[derive(Default)]
pub(super) struct SubStats {
    pub(super) delivered: u64,
    pub(super) duplicates: u64,
    pub(super) unexpected: u64,
    pub(super) last_ns: u64,
    pub(super) samples: Vec<u32>,
    pub(super) stopped: Option<String>,
}

/// One subscriber's connection, ready to read.
pub(super) enum Sub {
    Node(ClientWs),
    Nats(ClientWs, MsgReader),
    Sio(ClientWs, Engine),
    Http(HttpSession),
}

/// The publisher's connection.
pub(super) enum Publisher {
    Node(ClientSink),
    Nats(ClientSink, String),
    /// With the pings the server sent that are still to be answered (Engine.IO 4) and
    /// when this client last pinged (Engine.IO 3).
    Sio(ClientSink, Engine, Arc<AtomicU64>, Instant),
    /// With the JSON array being batched.
    Http(HttpSession, Vec<u8>, usize),
}

impl Publisher {
    /// Queues one message.
    async fn push(&mut self, payload: String) -> Result<(), String> {
        let frame = match self {
            Publisher::Node(_) => Message::text(payload),
            Publisher::Nats(_, subject) => nats::publish(subject, &payload),
            Publisher::Sio(..) => Wire::SocketIo.wrap(payload),
            Publisher::Http(_, batch, n) => {
                batch.push(if *n == 0 { b'[' } else { b',' });
                batch.extend_from_slice(payload.as_bytes());
                *n += 1;
                return Ok(());
            }
        };
        self.sink_feed(frame).await
    }

    async fn sink_feed(&mut self, frame: Message) -> Result<(), String> {
        if let Publisher::Node(s) | Publisher::Nats(s, _) | Publisher::Sio(s, ..) = self {
            s.feed(frame)
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
        Ok(())
    }

    /// Sends what is queued, with the engine's keep-alive packets that are due.
    async fn flush(&mut self) -> Result<(), String> {
        let failed = |e: tokio_tungstenite::tungstenite::Error| format!("send failed: {e}");
        match self {
            Publisher::Node(s) | Publisher::Nats(s, _) => s.flush().await.map_err(failed),
            Publisher::Sio(s, engine, owed, last_ping) => {
                for _ in 0..owed.swap(0, Ordering::AcqRel) {
                    s.feed(Message::text("3")).await.map_err(failed)?;
                }
                if engine
                    .client_pings()
                    .is_some_and(|every| last_ping.elapsed() >= every)
                {
                    *last_ping = Instant::now();
                    s.feed(Message::text("2")).await.map_err(failed)?;
                }
                s.flush().await.map_err(failed)
            }
            Publisher::Http(session, batch, n) => {
                if *n == 0 {
                    return Ok(());
                }
                batch.push(b']');
                let sent = session.send(batch, *n).await;
                batch.clear();
                *n = 0;
                sent
            }
        }
    }

    /// Closes the connection; answers how many unexpected messages were waiting for
    /// it where no reader counted them (HTTP).
    pub(super) async fn close(&mut self) -> u64 {
        match self {
            Publisher::Node(s) | Publisher::Nats(s, _) | Publisher::Sio(s, ..) => {
                let _ = timeout(CLOSE_TIMEOUT, s.close()).await;
                0
            }
            Publisher::Http(session, ..) => timeout(CLOSE_TIMEOUT, session.leftovers())
                .await
                .unwrap_or(0),
        }
    }
}

/// What a subscriber connects as.
struct Subscriber<'a> {
    target: &'a Target,
    /// Its runtime URL, on the node.
    runtime_url: String,
    /// The address the messages go to.
    to: &'a str,
    /// Whether it subscribes to `to` (on the node: fan-out through `/sm`).
    fan_out: bool,
}

/// Connects one subscriber of `s.target` and makes it ready to read `s.to`.
async fn open_subscriber(
    s: Subscriber<'_>,
    p: &Params,
    deadline: Instant,
) -> Result<Sub, LoadError> {
    let config = Some(WebSocketConfig::default().read_buffer_size(64 * 1024));
    let until = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
    let rt = s.runtime_url.as_str();
    Ok(match s.target {
        Target::Node { url } => {
            let mut ws = connect_ws(url, config, until).await?;
            open_session_on(&mut ws, Wire::Raw, url, rt, p, until).await?;
            if s.fan_out {
                subscribe_on(&mut ws, Wire::Raw, url, rt, s.to, p, deadline).await?;
            }
            Sub::Node(ws)
        }
        Target::SocketIo { url } => {
            let (mut ws, engine) = sio::connect(url, Dialect::Eio3, None, config, until).await?;
            open_session_on(&mut ws, Wire::SocketIo, url, rt, p, until).await?;
            if s.fan_out {
                subscribe_on(&mut ws, Wire::SocketIo, url, rt, s.to, p, deadline).await?;
            }
            Sub::Sio(ws, engine)
        }
        Target::Http { base } => {
            let mut session = HttpSession::open(base, rt, p, deadline).await?;
            if s.fan_out {
                session.subscribe(base, rt, s.to, p, deadline).await?;
            }
            Sub::Http(session)
        }
        Target::SocketIo4 { url } => {
            let (ws, engine) = sio::connect(url, Dialect::Eio4, Some(s.to), config, until).await?;
            Sub::Sio(ws, engine)
        }
        Target::Nats { url, auth } => {
            let (ws, reader) = nats::connect(url, auth, Some(s.to), config, deadline).await?;
            Sub::Nats(ws, reader)
        }
    })
}

/// Connects the publisher of `target` as `from` (a runtime URL; on nats-server only
/// a name); with the task counting what arrives on its connection, if it has one.
async fn open_publisher(
    target: &Target,
    from: &str,
    subject: &str,
    p: &Params,
    stop: watch::Receiver<bool>,
    deadline: Instant,
) -> Result<(Publisher, Option<JoinHandle<u64>>), LoadError> {
    let until = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
    let (publisher, drained) = match target {
        Target::Node { url } => {
            let mut ws = connect_ws(url, None, until).await?;
            open_session_on(&mut ws, Wire::Raw, url, from, p, until).await?;
            let (sink, stream) = ws.split();
            (Publisher::Node(sink), tokio::spawn(drain(stream, stop)))
        }
        Target::Nats { url, auth } => {
            let (ws, _) = nats::connect(url, auth, None, None, deadline).await?;
            let (sink, stream) = ws.split();
            let publisher = Publisher::Nats(sink, subject.to_string());
            (publisher, tokio::spawn(drain(stream, stop)))
        }
        Target::SocketIo { url } | Target::SocketIo4 { url } => {
            let (dialect, addr) = match target {
                Target::SocketIo { .. } => (Dialect::Eio3, None),
                _ => (Dialect::Eio4, Some(from)),
            };
            let (mut ws, engine) = sio::connect(url, dialect, addr, None, until).await?;
            if dialect == Dialect::Eio3 {
                open_session_on(&mut ws, Wire::SocketIo, url, from, p, until).await?;
            }
            let (sink, stream) = ws.split();
            let owed = Arc::new(AtomicU64::new(0));
            let pings = owed.clone();
            let drained = tokio::spawn(drain_with(stream, stop, move |text| {
                let packet = sio::packet(text);
                if packet == Packet::Ping {
                    pings.fetch_add(1, Ordering::AcqRel);
                }
                sio::is_engine_packet(text)
            }));
            (Publisher::Sio(sink, engine, owed, Instant::now()), drained)
        }
        Target::Http { base } => {
            let session = HttpSession::open(base, from, p, deadline).await?;
            let batch = Vec::with_capacity(64 * 1024);
            return Ok((Publisher::Http(session, batch, 0), None));
        }
    };
    Ok((publisher, Some(drained)))
}

/// Floods `p.messages` messages from one publisher to `p.subscribers` subscribers of
/// `target`, at most `p.window` in flight per subscriber, and reports deliveries/s and
/// the per-delivery latency. `p.pairs` is not used.
pub async fn run_flood(target: &Target, p: &Params) -> Result<FloodReport, LoadError> {
    p.validate()?;
    check_loopback(target.url())?;
    let deadline = Instant::now() + p.time_limit;
    let tag = run_tag();
    let n = p.subscribers;
    let (to, from) = match target {
        Target::Nats { .. } => (
            format!("flood.{tag}"),
            format!("nats:flood.{tag}/publisher"),
        ),
        _ if n == 1 => (
            format!("{}/h", runtime_url(&p.domain, &tag, 's', 0)),
            format!("{}/h", runtime_url(&p.domain, &tag, 'p', 0)),
        ),
        _ => (
            format!("comm://{}/{tag}-flood/changes", p.domain),
            format!("{}/h", runtime_url(&p.domain, &tag, 'p', 0)),
        ),
    };
    let subs: Vec<Sub> = futures_util::stream::iter(0..n)
        .map(|i| {
            let s = Subscriber {
                target,
                runtime_url: runtime_url(&p.domain, &tag, 's', i),
                to: &to,
                fan_out: n > 1,
            };
            open_subscriber(s, p, deadline)
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await?;

    let builder = FrameBuilder::new(&from, &to, p.size);
    let frame_bytes = builder.frame(1, now_ns()).len();
    let progress = Arc::new(Progress::default());
    let to: Arc<str> = to.into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for sub in subs {
        tasks.spawn(receive(
            sub,
            to.clone(),
            p.messages,
            progress.clone(),
            stop_rx.clone(),
        ));
    }
    let publisher_url = from.trim_end_matches("/h");
    let (mut publisher, drained) =
        open_publisher(target, publisher_url, &to, p, stop_rx.clone(), deadline).await?;
    let start = now_ns();
    let (sent, stopped) = send(&mut publisher, &builder, p, n as u64, &progress, deadline).await;
    let leftovers = publisher.close().await;
    let _ = stop_tx.send(true);

    let mut report = FloodReport {
        url: target.url().to_string(),
        subscribers: n as u64,
        sent,
        deliveries: 0,
        duplicates: 0,
        unexpected: 0,
        frame_bytes,
        elapsed_s: 0.0,
        deliveries_per_sec: 0.0,
        latency: LatencyStats::default(),
        stopped,
    };
    let mut samples = Vec::new();
    let mut last_ns = start;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(s) => {
                report.deliveries += s.delivered;
                report.duplicates += s.duplicates;
                report.unexpected += s.unexpected;
                last_ns = last_ns.max(s.last_ns);
                samples.extend_from_slice(&s.samples);
                if let Some(r) = s.stopped {
                    report.stopped.get_or_insert(r);
                }
            }
            Err(e) => {
                report
                    .stopped
                    .get_or_insert(format!("subscriber task failed: {e}"));
            }
        }
    }
    report.unexpected += leftovers;
    if let Some(drained) = drained {
        report.unexpected += drained.await.unwrap_or(0);
    }
    report.elapsed_s = Duration::from_nanos(last_ns.saturating_sub(start)).as_secs_f64();
    if report.elapsed_s > 0.0 {
        report.deliveries_per_sec = report.deliveries as f64 / report.elapsed_s;
    }
    report.latency = latency_stats(samples);
    Ok(report)
}

/// Writes `p.messages` messages while fewer than `p.window` per subscriber are in
/// flight; answers how many it wrote and why it stopped early, if it did.
pub(super) async fn send(
    publisher: &mut Publisher,
    builder: &FrameBuilder,
    p: &Params,
    n: u64,
    progress: &Progress,
    deadline: Instant,
) -> (u64, Option<String>) {
    let m = p.messages;
    let mut sent = 0u64;
    let work = async {
        let mut stall_check = pin!(sleep(p.stall));
        let mut seen_at_check = 0;
        // Each pass sends at least one message or waits for a delivery or a stall check.
        loop {
            let seen = progress.delivered.load(Ordering::Acquire);
            if seen >= m * n {
                return Ok(());
            }
            let in_flight = sent.saturating_sub(seen / n);
            let room = p
                .window
                .saturating_sub(in_flight)
                .min(m - sent)
                .min(MAX_SEND_BATCH);
            if room == 0 {
                tokio::select! {
                    biased;
                    _ = progress.notify.notified() => {}
                    _ = &mut stall_check => {
                        if seen == seen_at_check {
                            return Err(format!(
                                "no delivery for {:?} ({seen} of {} delivered)",
                                p.stall,
                                sent * n
                            ));
                        }
                        seen_at_check = seen;
                        stall_check.as_mut().reset(Instant::now() + p.stall);
                    }
                }
                continue;
            }
            for _ in 0..room {
                sent += 1;
                publisher.push(builder.frame(sent, now_ns())).await?;
            }
            publisher.flush().await?;
        }
    };
    let stopped = match timeout_at(deadline, work).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some("deadline reached".to_string()),
    };
    (sent, stopped)
}

/// What one subscriber has counted, and the share of it reported to the publisher.
pub(super) struct Tally {
    to: Arc<str>,
    m: u64,
    seen_ids: Vec<u64>,
    stats: SubStats,
    progress: Arc<Progress>,
    reported: u64,
}

impl Tally {
    fn new(to: Arc<str>, m: u64, progress: Arc<Progress>) -> Tally {
        Tally {
            to,
            m,
            seen_ids: vec![0u64; usize::try_from(m.div_ceil(64)).unwrap_or(0)],
            stats: SubStats {
                samples: Vec::with_capacity(usize::try_from(m).unwrap_or(0)),
                ..SubStats::default()
            },
            progress,
            reported: 0,
        }
    }

    /// True once every message has been counted.
    pub(super) fn done(&self) -> bool {
        self.stats.delivered >= self.m
    }

    /// Records why the subscriber stopped (the first reason is kept).
    pub(super) fn stop(&mut self, reason: String) {
        self.stats.stopped.get_or_insert(reason);
    }

    pub(super) fn unexpected(&mut self) {
        self.stats.unexpected += 1;
    }

    /// Reads one delivered message as JSON and counts it.
    pub(super) fn count(&mut self, payload: &[u8], now: u64) {
        match serde_json::from_slice::<Probe<'_>>(payload) {
            Ok(probe) => self.take(probe, now),
            Err(_) => self.unexpected(),
        }
    }

    /// Counts one delivered message, read at `now`, if it is this run's, for `to`, with
    /// an id in 1..=m not seen before.
    pub(super) fn take(&mut self, probe: Probe<'_>, now: u64) {
        if probe.to != *self.to || !(1..=self.m).contains(&probe.id) {
            self.unexpected();
            return;
        }
        let idx = (probe.id - 1) as usize;
        let (word, bit) = (idx / 64, 1u64 << (idx % 64));
        if self.seen_ids[word] & bit != 0 {
            self.stats.duplicates += 1;
            return;
        }
        self.seen_ids[word] |= bit;
        self.stats.delivered += 1;
        self.stats.last_ns = now;
        self.stats
            .samples
            .push(ns_u32(now.saturating_sub(probe.body.value.ts)));
    }

    /// Tells the publisher about the deliveries counted since the last report.
    pub(super) fn report(&mut self) {
        if self.stats.delivered > self.reported {
            self.progress
                .delivered
                .fetch_add(self.stats.delivered - self.reported, Ordering::AcqRel);
            self.reported = self.stats.delivered;
            self.progress.notify.notify_one();
        }
    }
}

/// Reads one subscriber until it has all `m` messages or `stop` is raised.
pub(super) async fn receive(
    sub: Sub,
    to: Arc<str>,
    m: u64,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) -> SubStats {
    let mut tally = Tally::new(to, m, progress);
    match sub {
        Sub::Http(session) => http::receive(session, &mut tally, stop).await,
        Sub::Node(ws) => receive_ws(ws, Framing::Raw, &mut tally, stop).await,
        Sub::Nats(ws, reader) => receive_ws(ws, Framing::Nats(reader), &mut tally, stop).await,
        Sub::Sio(ws, engine) => receive_ws(ws, Framing::Sio(engine), &mut tally, stop).await,
    }
    tally.stats
}

/// How messages come on a subscriber's WebSocket.
enum Framing {
    /// One reTHINK message per text frame.
    Raw,
    /// NATS `MSG`s in binary frames.
    Nats(MsgReader),
    /// Socket.IO `message` events.
    Sio(Engine),
}

/// Waits for the next tick of `every`, or forever without one.
async fn tick(every: &mut Option<Interval>) {
    match every {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn receive_ws(
    mut ws: ClientWs,
    mut framing: Framing,
    tally: &mut Tally,
    mut stop: watch::Receiver<bool>,
) {
    let mut pings = match &framing {
        Framing::Sio(engine) => engine
            .client_pings()
            .map(|every| interval_at(Instant::now() + every, every)),
        _ => None,
    };
    while !tally.done() {
        let frame = tokio::select! {
            biased;
            _ = tick(&mut pings) => {
                if ws.send(Message::text("2")).await.is_err() {
                    tally.stop("cannot ping".into());
                    break;
                }
                continue;
            }
            frame = ws.next() => frame,
            _ = stop.changed() => break,
        };
        let frame = match frame {
            Some(Ok(f @ (Message::Text(_) | Message::Binary(_)))) => f,
            Some(Ok(Message::Close(_))) | None => {
                tally.stop("subscriber connection closed by peer".into());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tally.stop(format!("receive failed: {e}"));
                break;
            }
        };
        let now = now_ns();
        match (&mut framing, frame) {
            (Framing::Raw, Message::Text(text)) => tally.count(text.as_bytes(), now),
            (Framing::Nats(r), Message::Binary(bytes)) => {
                r.push(&bytes);
                while let Some(event) = r.next_event() {
                    match event {
                        Event::Msg(payload) => tally.count(payload, now),
                        Event::Err(e) => tally.stop(format!("server error: {e}")),
                    }
                }
                if r.take_pings() > 0 && ws.send(Message::binary("PONG\r\n")).await.is_err() {
                    tally.stop("cannot answer PING".into());
                }
            }
            (Framing::Sio(_), Message::Text(text)) => match sio::packet(text.as_str()) {
                Packet::Event(args) => match sio::delivered(args) {
                    Delivered::Probe(probe) => tally.take(probe, now),
                    Delivered::Text(message) => tally.count(message.as_bytes(), now),
                    Delivered::Bad => tally.unexpected(),
                },
                Packet::Ping => {
                    if ws.send(Message::text("3")).await.is_err() {
                        tally.stop("cannot answer ping".into());
                    }
                }
                Packet::Quiet => {}
                Packet::Close => tally.stop("the server closed the Socket.IO session".into()),
                Packet::Other => tally.stop(format!("Socket.IO packet {:?}", text.as_str())),
            },
            _ => tally.unexpected(),
        }
        if tally.stats.stopped.is_some() {
            break;
        }
        tally.report();
    }
    tally.report();
    let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
}
