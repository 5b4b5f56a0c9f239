//! Prometheus text exposition of the node's and the runtime's statistics.
//!
//! Counters and gauges go through the [`metrics`] facade into a
//! [`PrometheusRecorder`](metrics_exporter_prometheus::PrometheusRecorder) built
//! for one scrape: the hot paths keep counting into their relaxed atomics
//! (`NodeStats`, the bus counters) and a scrape copies those values into the
//! recorder (`counter!(…).absolute(v)`, `gauge!(…).set(v)`) and renders it. Nothing
//! is looked up, allocated or locked per frame, and no recorder is installed
//! globally, so two nodes or runtimes in one process keep their own series.
//!
//! Latencies are kept in a [`LatencyHistogram`]: fixed buckets of atomics (the
//! exporter's own histograms buffer every raw sample until a scrape drains them,
//! which is unbounded memory between scrapes), rendered in the same exposition
//! format next to the recorder's output. [`RequestClock`] matches requests to their
//! responses in a fixed table.
//!
//! A runtime renders its bus this way with
//! [`RuntimeHandle::metrics`](crate::runtime::RuntimeHandle::metrics) (or
//! [`render_bus`]), so an application that embeds a runtime can serve it:
//!
//! ```
//! use hyperty::actors::bus::BusStats;
//!
//! let text = hyperty::metrics::render_bus(&BusStats { delivered: 3, ..BusStats::default() });
//! assert!(text.contains("hyperty_bus_delivered_total 3"));
//! ```

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hyperty_actors::bus::BusStats;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Upper bounds (seconds) of the latency buckets; one more bucket, `+Inf`, takes
/// the rest.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The bucket bounds in nanoseconds (what [`LatencyHistogram::record`] compares).
const BUCKET_NS: [u64; 16] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// A latency histogram of fixed buckets ([`LATENCY_BUCKETS`]): a few atomics,
/// however many samples.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 17],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one sample.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKET_NS.iter().position(|b| ns <= *b).unwrap_or(16);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Samples counted so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The count of each bucket (not cumulative; the last is `+Inf`).
    pub fn buckets(&self) -> [u64; 17] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    /// Appends the histogram `name` (cumulative `_bucket`s, `_sum`, `_count`).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}\n");
    }
}

/// The `q` quantile (0 < q ≤ 1) of samples counted per bucket (`counts`, as
/// [`LatencyHistogram::buckets`] gives them, or the difference of two such
/// readings), interpolated linearly inside its bucket; samples above the last
/// bound count as that bound. `None` without samples.
///
/// ```
/// let mut counts = [0u64; 17];
/// counts[7] = 10; // ten samples in (500 µs, 1 ms]
/// let p50 = hyperty::metrics::quantile(&counts, 0.5).unwrap();
/// assert_eq!(p50, std::time::Duration::from_micros(750));
/// ```
pub fn quantile(counts: &[u64; 17], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            let Some(&hi) = BUCKET_NS.get(i) else {
                return Some(Duration::from_nanos(BUCKET_NS[15]));
            };
            let lo = if i == 0 { 0 } else { BUCKET_NS[i - 1] };
            let within = (rank - below as f64) / c as f64;
            return Some(Duration::from_nanos(
                lo + ((hi - lo) as f64 * within).round() as u64,
            ));
        }
        below += c;
    }
    Some(Duration::from_nanos(BUCKET_NS[15]))
}

/// Slots of a [`RequestClock`]: requests waiting for their response at once that
/// can be timed; a newer request takes the slot of an older one.
pub const REQUEST_SLOTS: usize = 1024;

/// A response later than this after its request is not timed (its slot was most
/// likely reused by an unrelated request with the same key).
pub const REQUEST_HORIZON: Duration = Duration::from_secs(60);

/// Times requests to their responses in a fixed table of [`REQUEST_SLOTS`]
/// slots keyed by a hash of (id, requester). Lock-free; a response without a
/// matching slot is not timed.
#[derive(Debug)]
pub struct RequestClock {
    origin: Instant,
    keys: Box<[AtomicU64]>,
    starts: Box<[AtomicU64]>,
}

impl Default for RequestClock {
    fn default() -> Self {
        RequestClock {
            origin: Instant::now(),
            keys: (0..REQUEST_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            starts: (0..REQUEST_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RequestClock {
    /// The key of request `id` from `requester` (and of its response to
    /// `requester`); never 0.
    pub fn key<I: Hash + ?Sized>(id: &I, requester: &str) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        requester.hash(&mut h);
        h.finish() | 1
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A request with `key` is seen now.
    pub fn start(&self, key: u64) {
        let i = (key as usize) % REQUEST_SLOTS;
        self.starts[i].store(self.now_ns(), Relaxed);
        self.keys[i].store(key, Relaxed);
    }

    /// The response with `key` is seen: how long after its request, if that was
    /// timed.
    pub fn finish(&self, key: u64) -> Option<Duration> {
        let i = (key as usize) % REQUEST_SLOTS;
        if self.keys[i].load(Relaxed) != key {
            return None;
        }
        if self.keys[i]
            .compare_exchange(key, 0, Relaxed, Relaxed)
            .is_err()
        {
            return None;
        }
        let elapsed =
            Duration::from_nanos(self.now_ns().saturating_sub(self.starts[i].load(Relaxed)));
        (elapsed <= REQUEST_HORIZON).then_some(elapsed)
    }
}

/// A recorder for one scrape (no HTTP listener, not installed globally).
pub(crate) fn scrape_recorder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

/// Renders a runtime's bus statistics in the text exposition format: counters
/// `hyperty_bus_{delivered,responses,not_found,rejected,busy,unavailable,timeouts,dropped}_total`
/// and gauges `hyperty_bus_pending_requests`, `hyperty_bus_listeners`,
/// `hyperty_bus_stubs`.
pub fn render_bus(s: &BusStats) -> String {
    let recorder = scrape_recorder();
    metrics::with_local_recorder(&recorder, || {
        let counters = [
            (
                "delivered",
                s.delivered,
                "Messages handed to a listener or stub.",
            ),
            (
                "responses",
                s.responses,
                "Responses that completed a local request.",
            ),
            ("not_found", s.not_found, "Messages with no route (404)."),
            (
                "rejected",
                s.rejected,
                "Messages rejected by an interceptor.",
            ),
            (
                "busy",
                s.busy,
                "Messages refused by a full mailbox or table (429).",
            ),
            (
                "unavailable",
                s.unavailable,
                "Messages to a stopped recipient (500).",
            ),
            ("timeouts", s.timeouts, "Requests that timed out (408)."),
            (
                "dropped",
                s.dropped,
                "Notifications and responses dropped for lack of a route.",
            ),
        ];
        for (name, v, help) in counters {
            let name = format!("hyperty_bus_{name}_total");
            describe_counter!(name.clone(), help);
            counter!(name).absolute(v);
        }
        let gauges = [
            (
                "pending_requests",
                s.pending,
                "Requests awaiting their response.",
            ),
            ("listeners", s.listeners, "Listeners registered on the bus."),
            ("stubs", s.stubs, "Protocol stubs registered for a domain."),
        ];
        for (name, v, help) in gauges {
            let name = format!("hyperty_bus_{name}");
            describe_gauge!(name.clone(), help);
            gauge!(name).set(v as f64);
        }
    });
    recorder.handle().render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(30));
        h.record(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "test");
        assert!(out.contains("x_seconds_bucket{le=\"0.000005\"} 1"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.00005\"} 2"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_seconds_count 3"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut counts = [0u64; 17];
        assert_eq!(quantile(&counts, 0.5), None);
        counts[0] = 1; // ≤ 5 µs
        counts[7] = 98; // (500 µs, 1 ms]
        counts[16] = 1; // > 1 s
        assert_eq!(quantile(&counts, 0.001), Some(Duration::from_micros(5)));
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!(p50 > Duration::from_micros(500) && p50 <= Duration::from_millis(1));
        assert_eq!(quantile(&counts, 0.99), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&counts, 1.0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn request_clock_matches_once() {
        let c = RequestClock::default();
        let k = RequestClock::key(&7u64, "hyperty://a/1");
        assert!(c.finish(k).is_none());
        c.start(k);
        assert!(c
            .finish(RequestClock::key(&8u64, "hyperty://a/1"))
            .is_none());
        assert!(c.finish(k).is_some());
        assert!(c.finish(k).is_none(), "a second response is not timed");
    }
}
