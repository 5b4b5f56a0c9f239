//! Relay mode: pairs of sessions, one sending to the other with a window.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use super::client::{
    check_loopback, drain, latency_stats, now_ns, open_session, run_tag, runtime_url, ClientSink,
    FrameBuilder, CLOSE_TIMEOUT,
};
use super::flood::{receive, send, Progress, Publisher, Sub};
use super::{LatencyStats, LoadError, Params, Report};

struct SendOutcome {
    sent: u64,
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
        receivers.push(tokio::spawn(receive(
            Sub::Node(b_ws),
            to.as_str().into(),
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
    sink: ClientSink,
    builder: FrameBuilder,
    p: Params,
    progress: Arc<Progress>,
    deadline: Instant,
) -> SendOutcome {
    let mut publisher = Publisher::Node(sink);
    let (sent, stopped) = send(&mut publisher, &builder, &p, 1, &progress, deadline).await;
    publisher.close().await;
    SendOutcome { sent, stopped }
}
