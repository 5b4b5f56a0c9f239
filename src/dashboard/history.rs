//! The dashboard's history: one [`Sample`] per tick, computed from two
//! consecutive [`Reading`]s of the node's counters, kept in a [`History`] ring of
//! fixed capacity. Plain data, no actor, no I/O.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::quantile;

/// The node's running totals and current sizes at one moment (what the sampler
/// reads each tick: relaxed atomic loads and table lengths).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// When (ms since the epoch, on the node's clock).
    pub t_ms: u64,
    /// Frames received (every type, also those that did not parse).
    pub frames_in: u64,
    /// Frames sent (routed copies and the node's own frames).
    pub frames_out: u64,
    /// Frames handed to a live session.
    pub delivered: u64,
    /// Frames lost (no session, grace buffer full).
    pub dropped: u64,
    /// Error responses of the node.
    pub errors: u64,
    /// Frames refused for exceeding a session's rate.
    pub rate_limited: u64,
    /// Sessions evicted for not reading.
    pub slow_consumers: u64,
    /// Times a sender was paused for a congested recipient.
    pub throttled: u64,
    /// Routing latency samples per bucket.
    pub routing: [u64; 17],
    /// Request/response latency samples per bucket.
    pub requests: [u64; 17],
    /// Current sizes.
    pub gauges: Gauges,
}

/// Sizes at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Gauges {
    /// Sessions with a connection.
    pub live: u64,
    /// Sessions in their grace period (no connection, addresses kept).
    pub grace: u64,
    /// Addresses allocated to sessions.
    pub addresses: u64,
    /// Subscriptions (resource, session).
    pub subscriptions: u64,
    /// Hyperty instances in the domain registry.
    pub hyperties: u64,
    /// Data objects in the domain registry.
    pub data_objects: u64,
    /// Bytes queued to live sessions, summed.
    pub queue_bytes: u64,
    /// Bytes queued to the fullest live session.
    pub queue_max_bytes: u64,
    /// Peer links connected and authenticated.
    pub peers_up: u64,
    /// Peer links down or still connecting.
    pub peers_down: u64,
}

/// One tick of the dashboard's history: sizes at its end, rates (per second)
/// and latency percentiles (µs) over the interval since the previous tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// End of the interval (ms since the epoch, on the node's clock).
    pub t: u64,
    /// Sizes at `t`.
    #[serde(flatten)]
    pub gauges: Gauges,
    /// Frames received per second.
    pub in_rate: f64,
    /// Frames sent per second.
    pub out_rate: f64,
    /// Deliveries to live sessions per second.
    pub delivered_rate: f64,
    /// Frames lost per second.
    pub dropped_rate: f64,
    /// Error responses per second.
    pub error_rate: f64,
    /// Frames refused for rate per second.
    pub rate_limited_rate: f64,
    /// Sender pauses for congested recipients per second.
    pub throttled_rate: f64,
    /// Sessions evicted as slow consumers in the interval.
    pub slow_consumers: u64,
    /// Median sampled routing latency in the interval (µs), if any was sampled.
    pub routing_p50_us: Option<f64>,
    /// 99th percentile of the sampled routing latency (µs).
    pub routing_p99_us: Option<f64>,
    /// Median sampled request → response latency in the interval (µs).
    pub request_p50_us: Option<f64>,
    /// 99th percentile of the request → response latency (µs).
    pub request_p99_us: Option<f64>,
}

fn delta(now: &[u64; 17], before: &[u64; 17]) -> [u64; 17] {
    std::array::from_fn(|i| now[i].saturating_sub(before[i]))
}

fn micros(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_nanos() as f64 / 10.0).round() / 100.0)
}

impl Sample {
    /// The interval from `before` to `now`. Rates are per second of the node's
    /// clock; if that clock did not move (a manual clock in tests) or went back,
    /// they are per `nominal` interval instead.
    pub fn between(before: &Reading, now: &Reading, nominal: Duration) -> Sample {
        let elapsed_ms = now.t_ms.saturating_sub(before.t_ms);
        let secs = if elapsed_ms == 0 {
            nominal.as_secs_f64().max(1e-3)
        } else {
            elapsed_ms as f64 / 1000.0
        };
        let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs * 100.0).round() / 100.0;
        let routing = delta(&now.routing, &before.routing);
        let requests = delta(&now.requests, &before.requests);
        Sample {
            t: now.t_ms,
            gauges: now.gauges,
            in_rate: rate(now.frames_in, before.frames_in),
            out_rate: rate(now.frames_out, before.frames_out),
            delivered_rate: rate(now.delivered, before.delivered),
            dropped_rate: rate(now.dropped, before.dropped),
            error_rate: rate(now.errors, before.errors),
            rate_limited_rate: rate(now.rate_limited, before.rate_limited),
            throttled_rate: rate(now.throttled, before.throttled),
            slow_consumers: now.slow_consumers.saturating_sub(before.slow_consumers),
            routing_p50_us: micros(quantile(&routing, 0.5)),
            routing_p99_us: micros(quantile(&routing, 0.99)),
            request_p50_us: micros(quantile(&requests, 0.5)),
            request_p99_us: micros(quantile(&requests, 0.99)),
        }
    }
}

/// The last `capacity` samples, oldest first; pushing past the capacity drops
/// the oldest. Allocated once, at its full size.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
    taken: u64,
}

impl History {
    /// An empty ring of `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> History {
        let capacity = capacity.max(1);
        History {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            taken: 0,
        }
    }

    /// Adds the newest sample.
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        self.taken += 1;
    }

    /// Samples kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True before the first sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Most samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples taken since the start (kept or dropped).
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// The samples later than `since` (ms; `None`: all), oldest first.
    pub fn since(&self, since: Option<u64>) -> Vec<Sample> {
        let from = since.map_or(0, |t| self.samples.partition_point(|s| s.t <= t));
        self.samples.range(from..).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(t_ms: u64, n: u64) -> Reading {
        let mut routing = [0; 17];
        routing[5] = n; // (100 µs, 250 µs]
        Reading {
            t_ms,
            frames_in: n,
            frames_out: 2 * n,
            delivered: n,
            routing,
            gauges: Gauges {
                live: 3,
                ..Gauges::default()
            },
            ..Reading::default()
        }
    }

    #[test]
    fn rates_are_per_second_of_the_clock() {
        let s = Sample::between(
            &reading(1_000, 10),
            &reading(3_000, 110),
            Duration::from_secs(1),
        );
        assert_eq!(s.t, 3_000);
        assert_eq!(s.in_rate, 50.0);
        assert_eq!(s.out_rate, 100.0);
        assert_eq!(s.delivered_rate, 50.0);
        assert_eq!(s.error_rate, 0.0);
        assert_eq!(s.gauges.live, 3);
        let p50 = s.routing_p50_us.unwrap();
        assert!(p50 > 100.0 && p50 <= 250.0, "{p50}");
        assert_eq!(s.request_p50_us, None, "no request was timed");
    }

    #[test]
    fn a_clock_that_stands_still_uses_the_nominal_interval() {
        let s = Sample::between(
            &reading(5_000, 0),
            &reading(5_000, 20),
            Duration::from_millis(500),
        );
        assert_eq!(s.in_rate, 40.0);
        // counters never run backwards into negative rates
        let s = Sample::between(&reading(0, 20), &reading(1_000, 0), Duration::from_secs(1));
        assert_eq!(s.in_rate, 0.0);
    }

    #[test]
    fn the_ring_keeps_the_newest_within_its_capacity() {
        let mut h = History::new(3);
        assert!(h.is_empty());
        for t in 1..=10u64 {
            h.push(Sample {
                t,
                ..Sample::default()
            });
            assert!(h.len() <= 3);
        }
        assert_eq!(h.taken(), 10);
        let ts: Vec<u64> = h.since(None).iter().map(|s| s.t).collect();
        assert_eq!(ts, [8, 9, 10]);
        let ts: Vec<u64> = h.since(Some(8)).iter().map(|s| s.t).collect();
        assert_eq!(ts, [9, 10]);
        assert!(h.since(Some(10)).is_empty());
        assert_eq!(History::new(0).capacity(), 1);
    }
}
