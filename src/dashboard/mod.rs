//! The live dashboard: a history of the node's statistics over the last minutes,
//! drawn as charts by a page the node serves at `GET /dashboard`.
//!
//! # Pieces
//!
//! | piece | what it does |
//! |---|---|
//! | [`Sampler`] (actor, one per node, started by [`NodeState`]) | every `[dashboard] interval_ms` reads the node's counters — relaxed atomic loads of [`NodeStats`](crate::node::router::NodeStats) and [`NodeMetrics`](crate::node::metrics::NodeMetrics), table lengths, the peer link table, the registry's sizes — into a [`Reading`], turns two consecutive readings into a [`Sample`] and keeps the last `history_secs` worth in a [`History`] ring |
//! | [`GetHistory`] | HTTP handlers → the sampler: the samples after a time |
//! | [`http`] | `GET /dashboard` (the page), `/dashboard/dashboard.js`, `/dashboard/dashboard.css`, `GET /dashboard/data` (JSON) |
//! | `web/dashboard/` | the page: plain HTML, CSS and JavaScript embedded in the binary; it polls `/dashboard/data` and draws inline SVG charts |
//!
//! The sampler never touches the routing path: it reads counters the path keeps
//! anyway and takes no lock a frame waits for (the session and address tables are
//! dashmaps whose lengths it reads; the registry's sizes come by message, one
//! request at a time). Sample times are read on the node's one clock
//! ([`NodeState::clock`](crate::node::NodeState)); rates are per second of it.
//!
//! # `GET /dashboard/data`
//!
//! ```text
//! { "domain": "example.com", "now": <ms>, "interval_ms": 1000, "capacity": 600,
//!   "taken": <samples taken since start>,
//!   "samples": [ { "t": <ms>, "live", "grace", "addresses", "subscriptions",
//!                  "hyperties", "data_objects", "queue_bytes", "queue_max_bytes",
//!                  "peers_up", "peers_down",
//!                  "in_rate", "out_rate", "delivered_rate", "dropped_rate",
//!                  "error_rate", "rate_limited_rate", "throttled_rate",
//!                  "slow_consumers",
//!                  "routing_p50_us", "routing_p99_us",
//!                  "request_p50_us", "request_p99_us" }, … ],   // oldest first
//!   "totals": { "frames_in", "frames_out", "delivered", "dropped", "errors",
//!               "rate_limited", "slow_consumers", "throttled", "abusive",
//!               "opened", "reopened" },
//!   "backlog": [ { "runtime": <runtime URL or null>, "bytes": <queued> }, … ],
//!   "peers": [ { "domain", "state": "down"|"connecting"|"live", "queued", "opened" } ] }
//! ```
//!
//! `?since=<ms>` returns only the samples after that time (the page asks for
//! what it has not seen). `peers` is present only when federation is on.
//! `backlog` lists the live sessions with the most bytes queued to them (at most
//! [`BACKLOG_ROWS`]): those closest to being evicted as slow consumers.
//!
//! Who may read `/dashboard/data` is decided as for `/metrics`, `/qos` and the
//! registry's reads ([`HttpReads`](crate::domain_registry::HttpReads)) under
//! `[dashboard] public_reads`; the page itself holds no data and is served to
//! anyone (it asks for a token and sends it as `Authorization: Bearer`).

pub mod history;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

pub use self::history::{Gauges, History, Reading, Sample};
use crate::domain_registry::{DomainRegistry, GetStats};
use crate::federation::{LinkState, PeerConnector};
use crate::node::metrics::MetricTotals;
use crate::node::router::{Router, StatsSnapshot};
use crate::node::NodeState;
use hyperty_actors::clock::Clock;

/// Most samples a history may hold, whatever the configuration asks.
pub const MAX_SAMPLES: usize = 100_000;

/// Rows of `backlog` in `/dashboard/data`.
pub const BACKLOG_ROWS: usize = 5;

/// `[dashboard]`: the live dashboard at `GET /dashboard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSection {
    /// Serves the dashboard and runs its sampler; when false neither.
    pub enabled: bool,
    /// Time between two samples (ms).
    pub interval_ms: u64,
    /// How far back the history goes (s): `history_secs * 1000 / interval_ms`
    /// samples are kept (at most [`MAX_SAMPLES`]).
    pub history_secs: u64,
    /// Lets anyone read `/dashboard/data`. When false and sessions must
    /// authenticate, a read needs a valid ID or device token, as for `/metrics`.
    pub public_reads: bool,
}

impl Default for DashboardSection {
    fn default() -> Self {
        DashboardSection {
            enabled: true,
            interval_ms: 1_000,
            history_secs: 600,
            public_reads: false,
        }
    }
}

impl DashboardSection {
    /// The time between two samples.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Samples kept.
    pub fn capacity(&self) -> usize {
        let n = self.history_secs.saturating_mul(1000) / self.interval_ms.max(1);
        usize::try_from(n)
            .unwrap_or(MAX_SAMPLES)
            .clamp(1, MAX_SAMPLES)
    }

    /// Checks the limits (the reason when they are unusable).
    pub fn check(&self) -> Result<(), &'static str> {
        if self.interval_ms == 0 || self.history_secs == 0 {
            return Err("interval_ms and history_secs must be positive");
        }
        if self.history_secs.saturating_mul(1000) < self.interval_ms {
            return Err("history_secs must cover at least one interval_ms");
        }
        Ok(())
    }
}

/// Frames out and error answers: the per-type counts when `[metrics] enabled`
/// keeps them, else what the node's always-on counters give.
fn out_and_errors(s: &StatsSnapshot, m: &MetricTotals, metrics_on: bool) -> (u64, u64) {
    if metrics_on {
        (m.frames_out, m.errors)
    } else {
        (
            s.delivered + s.buffered,
            s.not_found + s.forbidden + s.bad_requests + s.rate_limited + s.unauthorised,
        )
    }
}

/// HTTP handlers → the [`Sampler`]: the samples later than `since` (ms; `None`:
/// all kept).
#[derive(Debug, Message)]
#[rtype(result = "HistoryView")]
pub struct GetHistory {
    /// Only samples after this time.
    pub since: Option<u64>,
}

/// The answer to [`GetHistory`].
#[derive(Debug, Clone, MessageResponse)]
pub struct HistoryView {
    /// Samples, oldest first.
    pub samples: Vec<Sample>,
    /// Most samples kept.
    pub capacity: usize,
    /// Samples taken since the start (kept or dropped).
    pub taken: u64,
    /// Time between two samples (ms).
    pub interval_ms: u64,
}

/// Samples the node's statistics into a [`History`] (see the module docs).
#[derive(Debug)]
pub struct Sampler {
    router: Arc<Router>,
    registry: Addr<DomainRegistry>,
    federation: Option<Arc<PeerConnector>>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    history: History,
    last: Option<Reading>,
    /// The registry's latest sizes (hyperties, data objects).
    registry_sizes: (u64, u64),
    asking_registry: bool,
}

impl Sampler {
    /// A sampler of `node` (its router, registry, peer links and clock) under
    /// `cfg`.
    pub fn new(node: &NodeState, cfg: &DashboardSection) -> Sampler {
        Sampler {
            router: node.router.clone(),
            registry: node.registry.clone(),
            federation: node.federation.clone(),
            clock: node.clock.clone(),
            interval: cfg.interval(),
            history: History::new(cfg.capacity()),
            last: None,
            registry_sizes: (0, 0),
            asking_registry: false,
        }
    }

    /// The node's counters and sizes now.
    fn read(&self) -> Reading {
        let r = &self.router;
        let s = r.snapshot();
        let m = r.metrics.totals();
        let mut g = Gauges {
            addresses: r.owners.len() as u64,
            subscriptions: r.subscribers.iter().map(|e| e.value().len() as u64).sum(),
            hyperties: self.registry_sizes.0,
            data_objects: self.registry_sizes.1,
            ..Gauges::default()
        };
        for slot in r.slots.iter() {
            if slot.conn.is_some() {
                g.live += 1;
            } else {
                g.grace += 1;
            }
            if let Some(q) = &slot.queue {
                let p = q.pending() as u64;
                g.queue_bytes += p;
                g.queue_max_bytes = g.queue_max_bytes.max(p);
            }
        }
        if let Some(f) = &self.federation {
            for (_, info) in f.links() {
                match info.state {
                    LinkState::Live => g.peers_up += 1,
                    LinkState::Down | LinkState::Connecting => g.peers_down += 1,
                }
            }
        }
        let (frames_out, errors) = out_and_errors(&s, &m, r.metrics.enabled());
        Reading {
            t_ms: self.clock.now_ms(),
            frames_in: s.frames_in,
            frames_out,
            delivered: s.delivered,
            dropped: s.dropped,
            errors,
            rate_limited: s.rate_limited,
            slow_consumers: s.slow_consumers,
            throttled: s.throttled,
            routing: m.routing,
            requests: m.requests,
            gauges: g,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let _span = tracing::trace_span!("dashboard.sample").entered();
        let now = self.read();
        if let Some(before) = &self.last {
            self.history
                .push(Sample::between(before, &now, self.interval));
        }
        self.last = Some(now);
        if !self.asking_registry {
            self.asking_registry = true;
            ctx.spawn(
                self.registry
                    .send(GetStats)
                    .into_actor(self)
                    .map(|stats, act, _| {
                        act.asking_registry = false;
                        if let Ok(s) = stats {
                            act.registry_sizes = (s.hyperties as u64, s.data_objects as u64);
                        }
                    }),
            );
        }
    }
}

impl Actor for Sampler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.interval, Sampler::tick);
    }
}

impl Handler<GetHistory> for Sampler {
    type Result = HistoryView;

    fn handle(&mut self, q: GetHistory, _: &mut Context<Self>) -> HistoryView {
        HistoryView {
            samples: self.history.since(q.since),
            capacity: self.history.capacity(),
            taken: self.history.taken(),
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
        }
    }
}
