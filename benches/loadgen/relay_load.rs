//! Relay mode: pairs of sessions, one sending to the other with a window.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    check_loopback, drain, latency_stats, now_ns, ns_u32, open_session, run_tag, runtime_url,
    ClientSink, ClientWs, FrameBuilder, Probe, CLOSE_TIMEOUT,
};
use super::{LatencyStats, LoadError, Params, Report};

/// Most messages a sender writes before it flushes.
const MAX_SEND_BATCH: u64 = 256;

/// Flow-control state of one pair, shared by its sender and receiver tasks.
#[derive(Default)]
struct Progress {
    /// Distinct messages the receiver has seen.
    seen: AtomicU64,
    /// Woken on every delivery.
    notify: Notify,
}

struct SendOutcome {
    sent: u64,
    stopped: Option<String>,
}

#[derive(Default)]
struct RecvStats {
    delivered: u64,
    duplicates: u64,
    unexpected: u64,
    last_ns: u64,
    samples: Vec<u32>,
    stopped: Option<String>,
}

/// Opens `p.pairs` sender/receiver session pairs on `url`, sends `p.messages` updates per
/// pair with at most `p.window` in flight, and reports throughput and one-way latency.
///
/// Setup failures (refused connection, rejected `open`, handshake timeout) are errors; a
/// run that stops early (deadline, stall, connection lost) is reported with
/// [`Report::stopped`] set; call [`Report::verify`] to turn loss into an error.
pub async fn run_relay_load(url: &str, p: &Params) -> Result<Report, LoadError> {
    run_relay_between((url, &p.domain), (url, &p.domain), p).await
}

/// Like [`run_relay_load`], with the senders on the node at `from.0` (runtime URLs of
/// domain `from.1`) and the receivers on the node at `to.0` (of domain `to.1`): with
/// two federated nodes, every message crosses their link.
pub async fn run_relay_between(
    from: (&str, &str),
    to: (&str, &str),
    p: &Params,
) -> Result<Report, LoadError> {
    p.validate()?;
    check_loopback(from.0)?;
    check_loopback(to.0)?;
    let url = from.0;
    let deadline = Instant::now() + p.time_limit;
    let tag = run_tag();
    let mut sessions = Vec::with_capacity(p.pairs);
    for i in 0..p.pairs {
        let a = runtime_url(from.1, &tag, 'a', i);
        let b = runtime_url(to.1, &tag, 'b', i);
        let a_ws = open_session(from.0, &a, p, None, deadline).await?;
        let b_ws = open_session(to.0, &b, p, None, deadline).await?;
        sessions.push((format!("{a}/h"), format!("{b}/h"), a_ws, b_ws));
    }

    let mut frame_bytes = 0;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut senders = Vec::with_capacity(p.pairs);
    let mut receivers = Vec::with_capacity(p.pairs);
    let mut drains = Vec::with_capacity(p.pairs);
    let start = now_ns();
    for (from, to, a_ws, b_ws) in sessions {
        let progress = Arc::new(Progress::default());
        let (sink, stream) = a_ws.split();
        drains.push(tokio::spawn(drain(stream, stop_rx.clone())));
        receivers.push(tokio::spawn(receive_pair(
            b_ws,
            to.clone(),
            p.messages,
            progress.clone(),
            stop_rx.clone(),
        )));
        let builder = FrameBuilder::new(&from, &to, p.size);
        frame_bytes = frame_bytes.max(builder.frame(1, now_ns()).len());
        senders.push(tokio::spawn(send_pair(
            sink,
            builder,
            p.clone(),
            progress,
            deadline,
        )));
    }

    let mut report = Report {
        url: url.to_string(),
        sent: 0,
        delivered: 0,
        duplicates: 0,
        unexpected: 0,
        frame_bytes,
        elapsed_s: 0.0,
        msgs_per_sec: 0.0,
        latency: LatencyStats::default(),
        stopped: None,
    };
    for (i, sender) in senders.into_iter().enumerate() {
        match sender.await {
            Ok(outcome) => {
                report.sent += outcome.sent;
                if let Some(r) = outcome.stopped {
                    report.stopped.get_or_insert(format!("pair {i}: {r}"));
                }
            }
            Err(e) => {
                report
                    .stopped
                    .get_or_insert(format!("pair {i}: sender task failed: {e}"));
            }
        }
    }
    // Every sender is done (finished, stalled or past the deadline): release the rest.
    let _ = stop_tx.send(true);
    let mut samples = Vec::new();
    let mut last_ns = start;
    for (i, receiver) in receivers.into_iter().enumerate() {
        match receiver.await {
            Ok(stats) => {
                report.delivered += stats.delivered;
                report.duplicates += stats.duplicates;
                report.unexpected += stats.unexpected;
                last_ns = last_ns.max(stats.last_ns);
                samples.extend_from_slice(&stats.samples);
                if let Some(r) = stats.stopped {
                    report.stopped.get_or_insert(format!("pair {i}: {r}"));
                }
            }
            Err(e) => {
                report
                    .stopped
                    .get_or_insert(format!("pair {i}: receiver task failed: {e}"));
            }
        }
    }
    for d in drains {
        report.unexpected += d.await.unwrap_or(0);
    }
    let elapsed = Duration::from_nanos(last_ns.saturating_sub(start));
    report.elapsed_s = elapsed.as_secs_f64();
    if report.elapsed_s > 0.0 {
        report.msgs_per_sec = report.delivered as f64 / report.elapsed_s;
    }
    report.latency = latency_stats(samples);
    Ok(report)
}

/// Writes `p.messages` frames, keeping at most `p.window` undelivered ones in flight.
async fn send_pair(
    mut sink: ClientSink,
    builder: FrameBuilder,
    p: Params,
    progress: Arc<Progress>,
    deadline: Instant,
) -> SendOutcome {
    let m = p.messages;
    let mut sent = 0u64;
    let work = async {
        // The stall check fires every `stall` and fails if nothing was delivered since the
        // previous check; it costs no clock read per wait.
        let mut stall_check = pin!(sleep(p.stall));
        let mut seen_at_check = 0;
        // Each pass either sends at least one message or waits for one delivery or one
        // stall check, so the loop is bounded by the deliveries and the stall checks.
        loop {
            let seen = progress.seen.load(Ordering::Acquire);
            if seen >= m {
                return Ok(());
            }
            let in_flight = sent.saturating_sub(seen);
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
                                "no delivery for {:?} ({seen} of {sent} sent delivered)",
                                p.stall
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
                let frame = builder.frame(sent, now_ns());
                sink.feed(Message::text(frame))
                    .await
                    .map_err(|e| format!("send failed: {e}"))?;
            }
            sink.flush()
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
    };
    let stopped = match timeout_at(deadline, work).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some("deadline reached".to_string()),
    };
    let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
    SendOutcome { sent, stopped }
}

/// Reads the receiving session until all `m` messages arrived or `stop` is raised.
async fn receive_pair(
    mut ws: ClientWs,
    to: String,
    m: u64,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> RecvStats {
    let mut seen_ids = vec![0u64; usize::try_from(m.div_ceil(64)).unwrap_or(0)];
    let mut stats = RecvStats {
        samples: Vec::with_capacity(usize::try_from(m).unwrap_or(0)),
        ..RecvStats::default()
    };
    while stats.delivered < m {
        let frame = tokio::select! {
            biased;
            frame = ws.next() => frame,
            _ = stop.changed() => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                stats.unexpected += 1;
                continue;
            }
            Some(Ok(Message::Close(_))) | None => {
                stats.stopped = Some("receiver connection closed by peer".into());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                stats.stopped = Some(format!("receive failed: {e}"));
                break;
            }
        };
        let now = now_ns();
        let probe = match serde_json::from_str::<Probe<'_>>(text.as_str()) {
            Ok(probe) if probe.to == to && (1..=m).contains(&probe.id) => probe,
            _ => {
                stats.unexpected += 1;
                continue;
            }
        };
        let idx = (probe.id - 1) as usize;
        let (word, bit) = (idx / 64, 1u64 << (idx % 64));
        if seen_ids[word] & bit != 0 {
            stats.duplicates += 1;
            continue;
        }
        seen_ids[word] |= bit;
        stats.delivered += 1;
        stats.last_ns = now;
        stats
            .samples
            .push(ns_u32(now.saturating_sub(probe.body.value.ts)));
        progress.seen.store(stats.delivered, Ordering::Release);
        progress.notify.notify_one();
    }
    let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    stats
}
