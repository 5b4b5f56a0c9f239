//! Flood mode: one publisher floods one subject to N subscribers with a window, on the
//! node (reTHINK over raw WebSocket) or on nats-server (NATS over WebSocket), with the
//! same client work per message, so the two can be compared in one run.
//!
//! On the node, one subscriber is a session whose runtime URL the messages are addressed
//! to (a 1→1 relay); several are sessions subscribed to one resource through `/sm`. On
//! nats-server, every subscriber `SUB`s one subject. The payload on both is the same
//! reTHINK `update` frame ([`FrameBuilder`]), and every receiver parses it as JSON and
//! checks its `to`, id and send stamp the same way. The window bounds the messages in
//! flight per subscriber: a publisher sends while `sent - delivered / N < window`.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    check_loopback, drain, latency_stats, now_ns, ns_u32, open_session, run_tag, runtime_url,
    subscribe, ClientWs, FrameBuilder, Probe, CLOSE_TIMEOUT,
};
use super::nats::{self, Event, MsgReader, NatsAuth};
use super::{LatencyStats, LoadError, Params};

/// Most messages a publisher writes before it flushes.
const MAX_SEND_BATCH: u64 = 256;
/// Connections opened concurrently while setting up.
const OPEN_CONCURRENCY: usize = 32;

/// The server under load and how to speak to it.
#[derive(Debug, Clone)]
pub enum Target {
    /// A hyperty node's raw WebSocket endpoint (`ws://…/ws`).
    Node { url: String },
    /// nats-server's WebSocket listener.
    Nats { url: String, auth: NatsAuth },
}

impl Target {
    fn url(&self) -> &str {
        match self {
            Target::Node { url } | Target::Nats { url, .. } => url,
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
}

/// The publisher's connection.
pub(super) enum Publisher {
    Node(SplitSink<ClientWs, Message>),
    Nats(SplitSink<ClientWs, Message>, String),
}

impl Publisher {
    fn frame(&self, payload: String) -> Message {
        match self {
            Publisher::Node(_) => Message::text(payload),
            Publisher::Nats(_, subject) => nats::publish(subject, &payload),
        }
    }

    pub(super) fn sink(&mut self) -> &mut SplitSink<ClientWs, Message> {
        match self {
            Publisher::Node(s) | Publisher::Nats(s, _) => s,
        }
    }
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
    let config = || Some(WebSocketConfig::default().read_buffer_size(64 * 1024));
    let (subs, publisher, from, to) = match target {
        Target::Node { url } => {
            let to = if n == 1 {
                format!("{}/h", runtime_url(&p.domain, &tag, 's', 0))
            } else {
                format!("comm://{}/{tag}-flood/changes", p.domain)
            };
            let subs: Vec<Sub> = futures_util::stream::iter(0..n)
                .map(|i| {
                    let rt = runtime_url(&p.domain, &tag, 's', i);
                    let to = to.as_str();
                    async move {
                        let ws = open_session(url, &rt, p, config(), deadline).await?;
                        let ws = if n == 1 {
                            ws
                        } else {
                            subscribe(ws, url, &rt, to, p, deadline).await?
                        };
                        Ok::<_, LoadError>(Sub::Node(ws))
                    }
                })
                .buffer_unordered(OPEN_CONCURRENCY)
                .try_collect()
                .await?;
            let from = runtime_url(&p.domain, &tag, 'p', 0);
            let ws = open_session(url, &from, p, None, deadline).await?;
            (subs, ws, format!("{from}/h"), to)
        }
        Target::Nats { url, auth } => {
            let subject = format!("flood.{tag}");
            let subs: Vec<Sub> = futures_util::stream::iter(0..n)
                .map(|_| {
                    let subject = subject.as_str();
                    async move {
                        let (ws, reader) =
                            nats::connect(url, auth, Some(subject), config(), deadline).await?;
                        Ok::<_, LoadError>(Sub::Nats(ws, reader))
                    }
                })
                .buffer_unordered(OPEN_CONCURRENCY)
                .try_collect()
                .await?;
            let (ws, _) = nats::connect(url, auth, None, None, deadline).await?;
            (subs, ws, format!("nats:{subject}/publisher"), subject)
        }
    };

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
    let (sink, stream) = publisher.split();
    let drained = tokio::spawn(drain(stream, stop_rx.clone()));
    let mut publisher = match target {
        Target::Node { .. } => Publisher::Node(sink),
        Target::Nats { .. } => Publisher::Nats(sink, to.to_string()),
    };
    let start = now_ns();
    let (sent, stopped) = send(&mut publisher, &builder, p, n as u64, &progress, deadline).await;
    let _ = timeout(CLOSE_TIMEOUT, publisher.sink().close()).await;
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
    report.unexpected += drained.await.unwrap_or(0);
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
                let frame = publisher.frame(builder.frame(sent, now_ns()));
                publisher
                    .sink()
                    .feed(frame)
                    .await
                    .map_err(|e| format!("send failed: {e}"))?;
            }
            publisher
                .sink()
                .flush()
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
    };
    let stopped = match timeout_at(deadline, work).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some("deadline reached".to_string()),
    };
    (sent, stopped)
}

/// Reads one subscriber until it has all `m` messages or `stop` is raised.
pub(super) async fn receive(
    sub: Sub,
    to: Arc<str>,
    m: u64,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SubStats {
    let (mut ws, mut reader) = match sub {
        Sub::Node(ws) => (ws, None),
        Sub::Nats(ws, reader) => (ws, Some(reader)),
    };
    let mut seen_ids = vec![0u64; usize::try_from(m.div_ceil(64)).unwrap_or(0)];
    let mut stats = SubStats {
        samples: Vec::with_capacity(usize::try_from(m).unwrap_or(0)),
        ..SubStats::default()
    };
    while stats.delivered < m {
        let frame = tokio::select! {
            biased;
            frame = ws.next() => frame,
            _ = stop.changed() => break,
        };
        let frame = match frame {
            Some(Ok(f @ (Message::Text(_) | Message::Binary(_)))) => f,
            Some(Ok(Message::Close(_))) | None => {
                stats.stopped = Some("subscriber connection closed by peer".into());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                stats.stopped = Some(format!("receive failed: {e}"));
                break;
            }
        };
        let now = now_ns();
        let before = stats.delivered;
        match (&mut reader, frame) {
            (None, Message::Text(text)) => {
                count(text.as_bytes(), now, &to, m, &mut seen_ids, &mut stats)
            }
            (Some(r), Message::Binary(bytes)) => {
                r.push(&bytes);
                while let Some(event) = r.next_event() {
                    match event {
                        Event::Msg(payload) => {
                            count(payload, now, &to, m, &mut seen_ids, &mut stats)
                        }
                        Event::Err(e) => {
                            stats.stopped = Some(format!("server error: {e}"));
                        }
                    }
                }
                if r.take_pings() > 0 && ws.send(Message::binary("PONG\r\n")).await.is_err() {
                    stats.stopped = Some("cannot answer PING".into());
                }
                if stats.stopped.is_some() {
                    break;
                }
            }
            _ => stats.unexpected += 1,
        }
        if stats.delivered > before {
            progress
                .delivered
                .fetch_add(stats.delivered - before, Ordering::AcqRel);
            progress.notify.notify_one();
        }
    }
    let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    stats
}

/// Checks one delivered message (this run's, for `to`, id 1..=m, not seen before in
/// `seen_ids`) and counts it.
fn count(payload: &[u8], now: u64, to: &str, m: u64, seen_ids: &mut [u64], stats: &mut SubStats) {
    let probe = match serde_json::from_slice::<Probe<'_>>(payload) {
        Ok(probe) if probe.to == to && (1..=m).contains(&probe.id) => probe,
        _ => {
            stats.unexpected += 1;
            return;
        }
    };
    let idx = (probe.id - 1) as usize;
    let (word, bit) = (idx / 64, 1u64 << (idx % 64));
    if seen_ids[word] & bit != 0 {
        stats.duplicates += 1;
        return;
    }
    seen_ids[word] |= bit;
    stats.delivered += 1;
    stats.last_ns = now;
    stats
        .samples
        .push(ns_u32(now.saturating_sub(probe.body.value.ts)));
}
