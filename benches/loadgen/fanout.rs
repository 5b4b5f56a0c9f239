//! Fan-out mode: one publisher, many subscribers of one resource.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    check_loopback, drain, latency_stats, now_ns, ns_u32, open_session, run_tag, runtime_url,
    subscribe, ClientWs, FrameBuilder, Probe, CLOSE_TIMEOUT,
};
use super::{FanoutReport, LatencyStats, LoadError, Params};

/// Sessions opened concurrently while setting up a fan-out run.
const OPEN_CONCURRENCY: usize = 32;
/// Read buffer of a fan-out subscriber's connection. tungstenite zero-fills the free part
/// of its read buffer (128 KiB by default) before every read; a subscriber reads one small
/// frame per update, so with the default most of the client's time went into that fill.
const FANOUT_READ_BUFFER: usize = 8 * 1024;

/// State of the update in flight, shared by the publisher and all subscriber tasks.
#[derive(Default)]
struct FanoutProgress {
    /// Id of the update being waited for.
    current: AtomicU64,
    /// Subscribers that have received `current`.
    count: AtomicU64,
    /// Latest receive time of `current`.
    last_ns: AtomicU64,
    /// Woken when `count` reaches the number of subscribers.
    notify: Notify,
}

#[derive(Default)]
struct SubStats {
    delivered: u64,
    duplicates: u64,
    unexpected: u64,
    samples: Vec<u32>,
}

/// Subscribes `p.subscribers` sessions to one resource, publishes `p.updates` updates to it
/// one at a time, and reports the time until every subscriber has each update.
pub async fn run_fanout(url: &str, p: &Params) -> Result<FanoutReport, LoadError> {
    run_fanout_spread(url, &[url], p).await
}

/// Like [`run_fanout`], with the publisher on the node at `url` and subscriber `i` on
/// the node at `subscriber_urls[i % len]` (nodes of one cluster).
pub async fn run_fanout_spread(
    url: &str,
    subscriber_urls: &[&str],
    p: &Params,
) -> Result<FanoutReport, LoadError> {
    p.validate()?;
    check_loopback(url)?;
    for u in subscriber_urls {
        check_loopback(u)?;
    }
    let urls: Vec<&str> = if subscriber_urls.is_empty() {
        vec![url]
    } else {
        subscriber_urls.to_vec()
    };
    let deadline = Instant::now() + p.time_limit;
    let tag = run_tag();
    let resource = format!("comm://{}/{tag}-obj/changes", p.domain);
    let n = p.subscribers as u64;

    let subscribers: Vec<ClientWs> = futures_util::stream::iter(0..p.subscribers)
        .map(|i| {
            let rt = runtime_url(&p.domain, &tag, 's', i);
            let resource = resource.as_str();
            let url = urls[i % urls.len()];
            async move {
                let config = WebSocketConfig::default().read_buffer_size(FANOUT_READ_BUFFER);
                let ws = open_session(url, &rt, p, Some(config), deadline).await?;
                subscribe(ws, url, &rt, resource, p, deadline).await
            }
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await?;
    let publisher_url = runtime_url(&p.domain, &tag, 'p', 0);
    let publisher = open_session(url, &publisher_url, p, None, deadline).await?;
    let builder = FrameBuilder::new(&format!("{publisher_url}/h"), &resource, p.size);
    let frame_bytes = builder.frame(1, now_ns()).len();

    let shared = Arc::new(FanoutProgress::default());
    let resource: Arc<str> = resource.into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for ws in subscribers {
        tasks.spawn(fanout_subscriber(
            ws,
            resource.clone(),
            shared.clone(),
            n,
            p.updates,
            stop_rx.clone(),
        ));
    }
    let (mut sink, stream) = publisher.split();
    let publisher_drain = tokio::spawn(drain(stream, stop_rx.clone()));

    let mut times = Vec::with_capacity(usize::try_from(p.updates).unwrap_or(0));
    let mut updates_sent = 0u64;
    let publish = async {
        for k in 1..=p.updates {
            shared.count.store(0, Ordering::Release);
            shared.last_ns.store(0, Ordering::Release);
            shared.current.store(k, Ordering::Release);
            let t0 = now_ns();
            sink.send(Message::text(builder.frame(k, t0)))
                .await
                .map_err(|e| format!("publish failed: {e}"))?;
            updates_sent = k;
            // Each pass waits (bounded by `stall`) for one notification.
            while shared.count.load(Ordering::Acquire) < n {
                if timeout(p.stall, shared.notify.notified()).await.is_err() {
                    return Err(format!(
                        "update {k}: {} of {n} subscribers had it after {:?}",
                        shared.count.load(Ordering::Acquire),
                        p.stall
                    ));
                }
            }
            times.push(ns_u32(
                shared.last_ns.load(Ordering::Acquire).saturating_sub(t0),
            ));
        }
        Ok(())
    };
    let stopped = match timeout_at(deadline, publish).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some("deadline reached".to_string()),
    };
    let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
    let _ = stop_tx.send(true);

    let mut report = FanoutReport {
        url: url.to_string(),
        subscribers: n,
        updates_sent,
        updates_completed: times.len() as u64,
        deliveries: 0,
        duplicates: 0,
        unexpected: 0,
        frame_bytes,
        all_received: latency_stats(times),
        per_delivery: LatencyStats::default(),
        stopped,
    };
    let mut samples = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(s) => {
                report.deliveries += s.delivered;
                report.duplicates += s.duplicates;
                report.unexpected += s.unexpected;
                samples.extend_from_slice(&s.samples);
            }
            Err(e) => {
                report
                    .stopped
                    .get_or_insert(format!("subscriber task failed: {e}"));
            }
        }
    }
    report.unexpected += publisher_drain.await.unwrap_or(0);
    report.per_delivery = latency_stats(samples);
    Ok(report)
}

/// Reads one subscriber session until it has all updates or `stop` is raised.
async fn fanout_subscriber(
    mut ws: ClientWs,
    resource: Arc<str>,
    shared: Arc<FanoutProgress>,
    n: u64,
    updates: u64,
    mut stop: watch::Receiver<bool>,
) -> SubStats {
    let mut stats = SubStats {
        samples: Vec::with_capacity(usize::try_from(updates).unwrap_or(0)),
        ..SubStats::default()
    };
    let mut last_id = 0u64;
    while last_id < updates {
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
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let now = now_ns();
        let Ok(probe) = serde_json::from_str::<Probe<'_>>(text.as_str()) else {
            stats.unexpected += 1;
            continue;
        };
        if probe.to != *resource {
            stats.unexpected += 1;
        } else if probe.id <= last_id {
            stats.duplicates += 1;
        } else if probe.id != shared.current.load(Ordering::Acquire) {
            stats.unexpected += 1;
        } else {
            last_id = probe.id;
            stats.delivered += 1;
            stats
                .samples
                .push(ns_u32(now.saturating_sub(probe.body.value.ts)));
            shared.last_ns.fetch_max(now, Ordering::AcqRel);
            if shared.count.fetch_add(1, Ordering::AcqRel) + 1 == n {
                shared.notify.notify_one();
            }
        }
    }
    let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    stats
}
