//! The node's `GET /metrics`: its statistics in the Prometheus text exposition
//! format (see [`crate::metrics`] for how they are recorded and rendered).
//!
//! The routing path counts into [`NodeMetrics`] (fixed arrays of relaxed atomics,
//! indexed by message type and response code) next to [`NodeStats`] (the totals
//! `/health` shows); both live here and nowhere else. Table sizes (sessions, subscriptions,
//! addresses, queue depths, peer links, registry entries) are read at scrape time.
//!
//! | series | kind | labels |
//! |---|---|---|
//! | `hyperty_frames_in_total` | counter | `type` (the 16 reTHINK types, `other`, `invalid`) |
//! | `hyperty_frames_out_total` | counter | `type`: copies routed to sessions and peer links (also those arriving over a peer link) by the routed frame's type, the node's own notifications by theirs, the node's answers (to sessions and to peers) as `response` |
//! | `hyperty_deliveries_total` | counter | `outcome` = `delivered`, `buffered`, `dropped` |
//! | `hyperty_errors_total` | counter | `code`: error responses the node sent (400 … 504, `other`) |
//! | `hyperty_rate_limited_total`, `hyperty_slow_consumers_total`, `hyperty_throttled_total`, `hyperty_abusive_sessions_total`, `hyperty_sessions_opened_total`, `hyperty_sessions_reopened_total` | counter | — |
//! | `hyperty_sessions` | gauge | `state` = `live`, `grace` |
//! | `hyperty_outbound_queue_bytes`, `hyperty_outbound_queue_max_bytes` | gauge | — (sum and largest over live sessions) |
//! | `hyperty_grace_buffered_frames`, `hyperty_peer_link_queued_frames` | gauge | — (frames held for sessions in their grace period; frames waiting for a peer link) |
//! | `hyperty_subscriptions`, `hyperty_subscribed_resources`, `hyperty_allocated_addresses` | gauge | — |
//! | `hyperty_peer_links` | gauge | `state` = `down`, `connecting`, `live` |
//! | `hyperty_registry_entries` | gauge | `kind` = `hyperty`, `data_object` |
//! | `hyperty_routing_latency_seconds` | histogram | — |
//! | `hyperty_request_latency_seconds` | histogram | — |
//!
//! Latencies are sampled: one frame in [`SAMPLE_EVERY`] of each session is timed
//! from its parse to its hand-off in the router, and if it is a request, to its
//! matching response seen at the node (the [`RequestClock`] table of
//! [`REQUEST_SLOTS`](crate::metrics::REQUEST_SLOTS) slots). With
//! `[metrics] enabled = false` none of this is counted or sampled and the route is
//! not mounted. Who may read is decided as for the registry's HTTP reads
//! ([`HttpReads`](crate::domain_registry::HttpReads), under `[metrics] public_reads`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use hyperty_actors::message::{MessageType, ResponseCode};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use serde::Serialize;

use super::frame::{FrameId, Header};
use super::NodeState;
use crate::domain_registry::HttpReads;
use crate::metrics::{LatencyHistogram, RequestClock, CONTENT_TYPE};

/// Node counters (monotonic except `sessions`).
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Frames received from clients.
    pub frames_in: AtomicU64,
    /// Frames handed to a session (each fan-out copy counts).
    pub delivered: AtomicU64,
    /// Frames kept for a dropped session.
    pub buffered: AtomicU64,
    /// Frames dropped (grace buffer full, no route for a notification).
    pub dropped: AtomicU64,
    /// Requests answered 404.
    pub not_found: AtomicU64,
    /// Frames refused with 403.
    pub forbidden: AtomicU64,
    /// Frames refused with 400.
    pub bad_requests: AtomicU64,
    /// Sessions evicted for not reading (budget or write deadline exceeded).
    pub slow_consumers: AtomicU64,
    /// Times a sender was paused because a recipient's queue was congested.
    pub throttled: AtomicU64,
    /// Sessions opened.
    pub opened: AtomicU64,
    /// Sessions resumed with re-open.
    pub reopened: AtomicU64,
    /// Frames refused for exceeding a session's rate (429).
    pub rate_limited: AtomicU64,
    /// Sessions closed for sustained abuse.
    pub abusive: AtomicU64,
    /// `open`s refused with 401.
    pub unauthorised: AtomicU64,
    /// Frames published to other nodes of the cluster (one per node).
    pub forwarded: AtomicU64,
    /// Frames received from other nodes of the cluster.
    pub from_cluster: AtomicU64,
}

/// A snapshot of [`NodeStats`], as served on `/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Frames received from clients.
    pub frames_in: u64,
    /// Frames handed to a session.
    pub delivered: u64,
    /// Frames kept for a dropped session.
    pub buffered: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Requests answered 404.
    pub not_found: u64,
    /// Frames refused with 403.
    pub forbidden: u64,
    /// Frames refused with 400.
    pub bad_requests: u64,
    /// Sessions evicted as slow consumers.
    pub slow_consumers: u64,
    /// Times a sender was paused for a congested recipient.
    pub throttled: u64,
    /// Sessions opened.
    pub opened: u64,
    /// Sessions resumed with re-open.
    pub reopened: u64,
    /// Frames refused for exceeding a session's rate (429).
    pub rate_limited: u64,
    /// Sessions closed for sustained abuse.
    pub abusive: u64,
    /// `open`s refused with 401.
    pub unauthorised: u64,
    /// Frames published to other nodes of the cluster.
    pub forwarded: u64,
    /// Frames received from other nodes of the cluster.
    pub from_cluster: u64,
}

impl NodeStats {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self;
        StatsSnapshot {
            frames_in: s.frames_in.load(Relaxed),
            delivered: s.delivered.load(Relaxed),
            buffered: s.buffered.load(Relaxed),
            dropped: s.dropped.load(Relaxed),
            not_found: s.not_found.load(Relaxed),
            forbidden: s.forbidden.load(Relaxed),
            bad_requests: s.bad_requests.load(Relaxed),
            slow_consumers: s.slow_consumers.load(Relaxed),
            throttled: s.throttled.load(Relaxed),
            opened: s.opened.load(Relaxed),
            reopened: s.reopened.load(Relaxed),
            rate_limited: s.rate_limited.load(Relaxed),
            abusive: s.abusive.load(Relaxed),
            unauthorised: s.unauthorised.load(Relaxed),
            forwarded: s.forwarded.load(Relaxed),
            from_cluster: s.from_cluster.load(Relaxed),
        }
    }
}

/// One frame in this many of each session is timed.
pub const SAMPLE_EVERY: u32 = 16;

/// Label slots by [`type_index`]: [`MessageType::KNOWN`], then these two.
const TYPE_SLOTS: usize = MessageType::KNOWN.len() + 2;

/// The index of frames of a type the node does not name.
const OTHER: usize = MessageType::KNOWN.len();

/// The `type` label of slot `i`.
fn type_label(i: usize) -> &'static str {
    match MessageType::KNOWN.get(i) {
        Some(t) => t.as_str(),
        None if i == OTHER => "other",
        None => "invalid",
    }
}

/// The index of frames that did not parse.
const INVALID: usize = OTHER + 1;

/// `code` label values, by [`code_index`].
const CODES: [&str; 10] = [
    "400", "401", "403", "404", "408", "429", "500", "503", "504", "other",
];

fn type_index(t: &MessageType) -> usize {
    match t {
        MessageType::Create => 0,
        MessageType::Read => 1,
        MessageType::Update => 2,
        MessageType::Delete => 3,
        MessageType::Subscribe => 4,
        MessageType::Unsubscribe => 5,
        MessageType::Response => 6,
        MessageType::Forward => 7,
        MessageType::Execute => 8,
        MessageType::Open => 9,
        MessageType::ReOpen => 10,
        MessageType::Close => 11,
        MessageType::Ping => 12,
        MessageType::Pong => 13,
        MessageType::Event => 14,
        MessageType::Handshake => 15,
        MessageType::Other(_) => OTHER,
    }
}

fn code_index(c: ResponseCode) -> Option<usize> {
    Some(match c {
        ResponseCode::Provisional | ResponseCode::Ok => return None,
        ResponseCode::BadRequest => 0,
        ResponseCode::Unauthorized => 1,
        ResponseCode::Forbidden => 2,
        ResponseCode::NotFound => 3,
        ResponseCode::RequestTimeout => 4,
        ResponseCode::TooManyRequests => 5,
        ResponseCode::InternalError => 6,
        ResponseCode::ServiceUnavailable => 7,
        ResponseCode::GatewayTimeout => 8,
        ResponseCode::Other(n) if n < 400 => return None,
        ResponseCode::Other(_) | ResponseCode::LegacyError => 9,
    })
}

/// The node's metric counters and latency histograms (bounded: fixed arrays).
#[derive(Debug)]
pub struct NodeMetrics {
    enabled: bool,
    frames_in: [AtomicU64; TYPE_SLOTS],
    frames_out: [AtomicU64; TYPE_SLOTS],
    errors: [AtomicU64; 10],
    routing: LatencyHistogram,
    requests: LatencyHistogram,
    pending: RequestClock,
}

impl NodeMetrics {
    /// Counters that count (`enabled`) or stay at zero.
    pub fn new(enabled: bool) -> NodeMetrics {
        NodeMetrics {
            enabled,
            frames_in: Default::default(),
            frames_out: Default::default(),
            errors: Default::default(),
            routing: LatencyHistogram::default(),
            requests: LatencyHistogram::default(),
            pending: RequestClock::default(),
        }
    }

    /// True if the routing path counts and samples.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A frame of `kind` came in (`None`: it did not parse).
    pub fn frame_in(&self, kind: Option<&MessageType>) {
        if self.enabled {
            let i = kind.map_or(INVALID, type_index);
            self.frames_in[i].fetch_add(1, Relaxed);
        }
    }

    /// `n` frames of `kind` went out.
    pub fn frames_out(&self, kind: &MessageType, n: usize) {
        if self.enabled && n > 0 {
            self.frames_out[type_index(kind)].fetch_add(n as u64, Relaxed);
        }
    }

    /// The node answered with `code` (an error code is counted; the answer itself
    /// counts as a frame out).
    pub fn answered(&self, code: Option<ResponseCode>) {
        if !self.enabled {
            return;
        }
        self.frames_out[type_index(&MessageType::Response)].fetch_add(1, Relaxed);
        if let Some(i) = code.and_then(code_index) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// The node refused a frame with `code` (counted whether or not it answered).
    pub fn refused(&self, code: ResponseCode, answered: bool) {
        if !self.enabled {
            return;
        }
        if answered {
            self.frames_out[type_index(&MessageType::Response)].fetch_add(1, Relaxed);
        }
        if let Some(i) = code_index(code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// A sampled request `h` is about to be handed off: its request clock starts
    /// (before the hand-off, so that a quick answer is not missed).
    pub fn routing(&self, h: &Header<'_>) {
        if h.kind.expects_response() {
            self.pending.start(request_key(&h.id, &h.from));
        }
    }

    /// A sampled frame `h`, parsed at `parsed`, was handed off now: its routing
    /// latency is counted; a response stops its request's clock.
    pub fn routed(&self, h: &Header<'_>, parsed: Instant) {
        self.routing.record(parsed.elapsed());
        if h.kind == MessageType::Response {
            self.response(h);
        }
    }

    /// A response `h` (not sampled itself) is routed: it stops its request's clock.
    pub fn response(&self, h: &Header<'_>) {
        if let Some(d) = self.pending.finish(request_key(&h.id, h.to.first())) {
            self.requests.record(d);
        }
    }

    /// Sampled routing latencies so far.
    pub fn routing_samples(&self) -> u64 {
        self.routing.count()
    }

    /// The running totals (a few relaxed loads; what the dashboard samples).
    pub fn totals(&self) -> MetricTotals {
        let sum = |a: &[AtomicU64]| a.iter().map(|c| c.load(Relaxed)).sum();
        MetricTotals {
            frames_in: sum(&self.frames_in),
            frames_out: sum(&self.frames_out),
            errors: sum(&self.errors),
            routing: self.routing.buckets(),
            requests: self.requests.buckets(),
        }
    }
}

/// Totals of [`NodeMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricTotals {
    /// Frames received, every type.
    pub frames_in: u64,
    /// Frames sent, every type (routed copies and the node's own frames).
    pub frames_out: u64,
    /// Error responses of the node, every code.
    pub errors: u64,
    /// Routing latency samples per bucket ([`crate::metrics::LATENCY_BUCKETS`]).
    pub routing: [u64; 17],
    /// Request/response latency samples per bucket.
    pub requests: [u64; 17],
}

fn request_key(id: &FrameId<'_>, requester: &str) -> u64 {
    match id {
        FrameId::Num(n) => RequestClock::key(n, requester),
        FrameId::Text(t) => RequestClock::key(&**t, requester),
    }
}

/// The node's statistics in the text exposition format.
pub async fn render(node: &NodeState) -> String {
    let registry = node
        .registry
        .send(crate::domain_registry::GetStats)
        .await
        .ok();
    let r = &node.router;
    let s = r.snapshot();
    let m = &r.metrics;
    let (mut live, mut grace, mut queued, mut max_queue) = (0u64, 0u64, 0u64, 0u64);
    let mut held = 0u64;
    for slot in r.slots.iter() {
        if slot.conn.is_some() {
            live += 1;
        } else {
            grace += 1;
            held += slot.buffer.lock().map_or(0, |b| b.len()) as u64;
        }
        if let Some(q) = &slot.queue {
            let p = q.pending() as u64;
            queued += p;
            max_queue = max_queue.max(p);
        }
    }
    let subscriptions: usize = r.subscribers.iter().map(|e| e.value().len()).sum();
    let (mut links, mut link_queued) = ([0u64; 3], 0u64);
    if let Some(f) = &node.federation {
        for (_, info) in f.links() {
            links[info.state as usize] += 1;
            link_queued += info.queued as u64;
        }
    }
    let recorder = crate::metrics::scrape_recorder();
    metrics::with_local_recorder(&recorder, || {
        describe_counter!(
            "hyperty_frames_in_total",
            "Frames received from clients, by type."
        );
        describe_counter!(
            "hyperty_frames_out_total",
            "Frames sent to clients: routed copies by type, the node's answers as response."
        );
        for i in 0..TYPE_SLOTS {
            let t = type_label(i);
            counter!("hyperty_frames_in_total", "type" => t).absolute(m.frames_in[i].load(Relaxed));
            if i != INVALID {
                counter!("hyperty_frames_out_total", "type" => t)
                    .absolute(m.frames_out[i].load(Relaxed));
            }
        }
        describe_counter!(
            "hyperty_deliveries_total",
            "Frames handed to a session (delivered), kept for a lost session (buffered) or lost (dropped)."
        );
        for (outcome, v) in [
            ("delivered", s.delivered),
            ("buffered", s.buffered),
            ("dropped", s.dropped),
        ] {
            counter!("hyperty_deliveries_total", "outcome" => outcome).absolute(v);
        }
        describe_counter!(
            "hyperty_errors_total",
            "Error responses of the node, by code."
        );
        for (i, c) in CODES.iter().enumerate() {
            counter!("hyperty_errors_total", "code" => *c).absolute(m.errors[i].load(Relaxed));
        }
        for (name, v, help) in [
            (
                "rate_limited",
                s.rate_limited,
                "Frames refused for exceeding a session's rate (429).",
            ),
            (
                "slow_consumers",
                s.slow_consumers,
                "Sessions evicted for not reading.",
            ),
            (
                "throttled",
                s.throttled,
                "Times a sender was paused for a congested recipient.",
            ),
            (
                "abusive_sessions",
                s.abusive,
                "Connections closed for sustained abuse.",
            ),
            ("sessions_opened", s.opened, "Sessions opened."),
            (
                "sessions_reopened",
                s.reopened,
                "Sessions resumed with re-open.",
            ),
        ] {
            let name = format!("hyperty_{name}_total");
            describe_counter!(name.clone(), help);
            counter!(name).absolute(v);
        }
        describe_gauge!(
            "hyperty_sessions",
            "Sessions, live or in their grace period."
        );
        gauge!("hyperty_sessions", "state" => "live").set(live as f64);
        gauge!("hyperty_sessions", "state" => "grace").set(grace as f64);
        for (name, v, help) in [
            (
                "outbound_queue_bytes",
                queued,
                "Bytes queued to live sessions, summed.",
            ),
            (
                "outbound_queue_max_bytes",
                max_queue,
                "Bytes queued to the fullest live session.",
            ),
            (
                "grace_buffered_frames",
                held,
                "Frames kept for sessions in their grace period.",
            ),
            (
                "peer_link_queued_frames",
                link_queued,
                "Frames waiting for a peer link to come up.",
            ),
            (
                "subscriptions",
                subscriptions as u64,
                "Subscriptions (resource, session).",
            ),
            (
                "subscribed_resources",
                r.subscribers.len() as u64,
                "Resources with subscribers.",
            ),
            (
                "allocated_addresses",
                r.owners.len() as u64,
                "Addresses allocated to sessions.",
            ),
        ] {
            let name = format!("hyperty_{name}");
            describe_gauge!(name.clone(), help);
            gauge!(name).set(v as f64);
        }
        describe_gauge!(
            "hyperty_peer_links",
            "Links to other domains' nodes, by state."
        );
        for (i, state) in ["down", "connecting", "live"].iter().enumerate() {
            gauge!("hyperty_peer_links", "state" => *state).set(links[i] as f64);
        }
        if let Some(reg) = registry {
            describe_gauge!(
                "hyperty_registry_entries",
                "Domain registry entries, by kind."
            );
            gauge!("hyperty_registry_entries", "kind" => "hyperty").set(reg.hyperties as f64);
            gauge!("hyperty_registry_entries", "kind" => "data_object")
                .set(reg.data_objects as f64);
        }
    });
    let mut out = recorder.handle().render();
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
    m.routing.render(
        &mut out,
        "hyperty_routing_latency_seconds",
        "Sampled time from a frame's parse to its hand-off in the router.",
    );
    m.requests.render(
        &mut out,
        "hyperty_request_latency_seconds",
        "Sampled time from a request seen at the node to its response seen at the node.",
    );
    out
}

/// Who may scrape: `web::Data<MetricsReads>` next to the route.
#[derive(Debug, Clone)]
pub(crate) struct MetricsReads(pub(crate) HttpReads);

/// `GET /metrics`.
pub(crate) async fn serve(
    req: HttpRequest,
    node: web::Data<NodeState>,
    reads: Option<web::Data<MetricsReads>>,
) -> actix_web::Result<HttpResponse> {
    HttpReads::admit(reads.as_deref().map(|r| &r.0), &req)?;
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(render(&node).await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_type_has_its_own_slot_and_label() {
        for (i, t) in MessageType::KNOWN.iter().enumerate() {
            assert_eq!(type_index(t), i);
            assert_eq!(type_label(i), t.as_str());
        }
        assert_eq!(type_index(&MessageType::from_wire("custom")), OTHER);
        assert_eq!(
            (type_label(OTHER), type_label(INVALID)),
            ("other", "invalid")
        );
    }
}
