//! Connectivity statistics of protocol stubs.
//!
//! Every stub is given a [`StubStats`] in its
//! [`StubContext`](crate::protostub::StubContext) and records in it what it
//! measures: round trips, frames and bytes each way, reconnections, the start of
//! its current connection, the depth of its outbound queue. Recording is a few
//! relaxed atomic operations — no lock, no allocation, no message — so it can sit
//! on the stub's hot path.
//!
//! Readers never go through the stub's mailbox: the
//! [`RuntimeRegistry`](crate::registry::RuntimeRegistry) holds each stub's handle
//! and answers [`ListStubStatistics`](crate::registry::ListStubStatistics) with a
//! [`StubStatistics`] snapshot per stub, so statistics stay readable while a stub
//! is busy or backlogged. The QoS user agent ([`qos`](crate::qos)) reports them.
//!
//! A stub declares what it measures with [`StubStats::measure`]; what it does not
//! measure is absent from its snapshot (`None`), never a misleading zero. A stub
//! that measures nothing still reports its URL, domain, status and uptime.
//!
//! ```
//! use std::time::Duration;
//! use hyperty_actors::connectivity::{Measures, StubStats};
//! use hyperty_actors::protostub::StubStatus;
//!
//! let stats = StubStats::new();
//! stats.measure(Measures::TRAFFIC | Measures::ROUND_TRIP);
//! stats.sent(120);
//! stats.received(80);
//! stats.round_trip(Duration::from_micros(400));
//!
//! let url = "hyperty-runtime://example.com/rt/protostub/1".parse().unwrap();
//! let s = stats.snapshot(url, None, StubStatus::Live);
//! let traffic = s.traffic.unwrap();
//! assert_eq!((traffic.frames_sent, traffic.bytes_sent), (1, 120));
//! assert_eq!(s.round_trip.unwrap().last_ms, 0.4);
//! assert_eq!(s.queue_depth, None, "not measured by this stub");
//! ```

use std::ops::BitOr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::protostub::StubStatus;

/// What a stub measures (combine with `|`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measures(u8);

impl Measures {
    /// Nothing: the snapshot has only status and uptime.
    pub const NONE: Measures = Measures(0);
    /// Frames and bytes sent and received.
    pub const TRAFFIC: Measures = Measures(1);
    /// Round trips (e.g. WebSocket ping → pong).
    pub const ROUND_TRIP: Measures = Measures(1 << 1);
    /// Connection uptime and reconnections.
    pub const CONNECTION: Measures = Measures(1 << 2);
    /// Outbound messages waiting to be sent.
    pub const QUEUE: Measures = Measures(1 << 3);

    /// True if every measure of `other` is in `self`.
    pub fn contains(self, other: Measures) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Measures {
    type Output = Measures;
    fn bitor(self, rhs: Measures) -> Measures {
        Measures(self.0 | rhs.0)
    }
}

/// Weight of a new round trip in the smoothed value, as `1 / SMOOTHING` (the
/// TCP estimator's α = 1/8, RFC 6298).
const SMOOTHING: u64 = 8;

#[derive(Debug)]
struct Counters {
    created: Instant,
    measures: AtomicU8,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    reconnects: AtomicU64,
    rtt_last_ns: AtomicU64,
    rtt_smoothed_ns: AtomicU64,
    rtt_samples: AtomicU64,
    queue_depth: AtomicU64,
    /// Nanoseconds from `created` to the start of the current connection, plus
    /// one; 0 while not connected.
    connected_at: AtomicU64,
}

/// The statistics handle of one stub: written by the stub, read by anyone.
/// Cheap to clone (clones share the counters).
#[derive(Debug, Clone)]
pub struct StubStats(Arc<Counters>);

impl Default for StubStats {
    fn default() -> Self {
        StubStats::new()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(ns: u64) -> f64 {
    // whole microseconds: steadier to read and to compare
    (ns / 1_000) as f64 / 1_000.0
}

impl StubStats {
    /// Fresh counters; the stub's uptime starts now.
    pub fn new() -> StubStats {
        StubStats(Arc::new(Counters {
            created: Instant::now(),
            measures: AtomicU8::new(0),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            rtt_last_ns: AtomicU64::new(0),
            rtt_smoothed_ns: AtomicU64::new(0),
            rtt_samples: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            connected_at: AtomicU64::new(0),
        }))
    }

    /// Declares measures the stub takes (adds to those declared before).
    pub fn measure(&self, m: Measures) {
        self.0.measures.fetch_or(m.0, Relaxed);
    }

    /// What the stub declared it measures.
    pub fn measures(&self) -> Measures {
        Measures(self.0.measures.load(Relaxed))
    }

    /// One frame of `bytes` went out.
    pub fn sent(&self, bytes: usize) {
        self.0.frames_sent.fetch_add(1, Relaxed);
        self.0.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    /// One frame of `bytes` came in.
    pub fn received(&self, bytes: usize) {
        self.0.frames_received.fetch_add(1, Relaxed);
        self.0.bytes_received.fetch_add(bytes as u64, Relaxed);
    }

    /// A round trip took `rtt`: the last value, and the smoothed one
    /// (`srtt += (rtt - srtt) / 8`; the first sample sets it).
    pub fn round_trip(&self, rtt: Duration) {
        // at least 1 ns, so a measured round trip is never read as "none yet"
        let ns = nanos(rtt).max(1);
        self.0.rtt_last_ns.store(ns, Relaxed);
        let _ = self.0.rtt_smoothed_ns.fetch_update(Relaxed, Relaxed, |s| {
            Some(if s == 0 {
                ns
            } else {
                (s - s / SMOOTHING + ns / SMOOTHING).max(1)
            })
        });
        self.0.rtt_samples.fetch_add(1, Relaxed);
    }

    /// The connection is up (now); `reconnected`: it is up again after a loss.
    pub fn connected(&self, reconnected: bool) {
        let at = nanos(self.0.created.elapsed()).saturating_add(1);
        self.0.connected_at.store(at, Relaxed);
        if reconnected {
            self.0.reconnects.fetch_add(1, Relaxed);
        }
    }

    /// The connection is down.
    pub fn disconnected(&self) {
        self.0.connected_at.store(0, Relaxed);
    }

    /// `depth` outbound messages are waiting.
    pub fn queue_depth(&self, depth: usize) {
        self.0.queue_depth.store(depth as u64, Relaxed);
    }

    /// A snapshot of what the stub measures, for the stub at `url` serving
    /// `domain` (`None`: the default stub) with `status`.
    pub fn snapshot(
        &self,
        url: Address,
        domain: Option<String>,
        status: StubStatus,
    ) -> StubStatistics {
        let c = &*self.0;
        let m = self.measures();
        let uptime = c.created.elapsed();
        let traffic = m.contains(Measures::TRAFFIC).then(|| Traffic {
            frames_sent: c.frames_sent.load(Relaxed),
            frames_received: c.frames_received.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
        });
        let round_trip = match c.rtt_samples.load(Relaxed) {
            0 => None,
            samples => Some(RoundTrip {
                last_ms: millis(c.rtt_last_ns.load(Relaxed)),
                smoothed_ms: millis(c.rtt_smoothed_ns.load(Relaxed)),
                samples,
            }),
        }
        .filter(|_| m.contains(Measures::ROUND_TRIP));
        let connection = m.contains(Measures::CONNECTION).then(|| Connection {
            connected_ms: match c.connected_at.load(Relaxed) {
                0 => None,
                at => Some(
                    u64::try_from(uptime.as_millis())
                        .unwrap_or(u64::MAX)
                        .saturating_sub((at - 1) / 1_000_000),
                ),
            },
            reconnects: c.reconnects.load(Relaxed),
        });
        StubStatistics {
            url,
            domain,
            status,
            uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
            connection,
            round_trip,
            traffic,
            queue_depth: m
                .contains(Measures::QUEUE)
                .then(|| c.queue_depth.load(Relaxed)),
        }
    }
}

/// A snapshot of one stub's connectivity, as reported by the QoS user agent
/// (JSON: camelCase; measures the stub does not take are left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StubStatistics {
    /// The stub's URL.
    pub url: Address,
    /// The domain it serves; `None` for the default stub (the bridge to the
    /// runtime's own messaging node).
    #[serde(default)]
    pub domain: Option<String>,
    /// Its last reported status.
    pub status: StubStatus,
    /// Time since the stub was created (ms).
    pub uptime_ms: u64,
    /// The current connection and reconnections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// Round trips; `None` also before the first one was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip: Option<RoundTrip>,
    /// Frames and bytes each way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// Outbound messages waiting to be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
}

/// The connection part of [`StubStatistics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connection {
    /// How long the current connection has been up (ms); `None` while down.
    pub connected_ms: Option<u64>,
    /// Times the connection came back after a loss.
    pub reconnects: u64,
}

/// The round-trip part of [`StubStatistics`] (ms, microsecond precision).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoundTrip {
    /// The last round trip.
    pub last_ms: f64,
    /// The smoothed round trip (RFC 6298 estimator).
    pub smoothed_ms: f64,
    /// Round trips measured.
    pub samples: u64,
}

/// The traffic part of [`StubStatistics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Traffic {
    /// Message frames written to the far side.
    pub frames_sent: u64,
    /// Message frames read from the far side.
    pub frames_received: u64,
    /// Bytes of the frames written.
    pub bytes_sent: u64,
    /// Bytes of the frames read.
    pub bytes_received: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Address {
        "hyperty-runtime://d.org/rt/protostub/1".parse().unwrap()
    }

    #[test]
    fn what_is_not_measured_is_absent() {
        let s = StubStats::new();
        s.sent(10);
        s.round_trip(Duration::from_millis(3));
        let snap = s.snapshot(url(), Some("d.org".into()), StubStatus::Created);
        assert_eq!(
            (
                snap.traffic,
                snap.round_trip,
                snap.connection,
                snap.queue_depth
            ),
            (None, None, None, None)
        );
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["status"], "created");
        assert_eq!(json["domain"], "d.org");
        assert!(json.get("traffic").is_none(), "{json}");
    }

    #[test]
    fn counters_and_smoothed_round_trip() {
        let s = StubStats::new();
        s.measure(Measures::TRAFFIC | Measures::ROUND_TRIP | Measures::QUEUE);
        s.measure(Measures::CONNECTION);
        assert!(s
            .measures()
            .contains(Measures::QUEUE | Measures::CONNECTION));
        assert_eq!(s.snapshot(url(), None, StubStatus::Live).round_trip, None);
        s.sent(5);
        s.sent(7);
        s.received(3);
        s.queue_depth(4);
        s.round_trip(Duration::from_millis(8));
        s.round_trip(Duration::from_millis(16));
        s.connected(false);
        s.connected(true);
        let snap = s.snapshot(url(), None, StubStatus::Live);
        assert_eq!(
            snap.traffic,
            Some(Traffic {
                frames_sent: 2,
                frames_received: 1,
                bytes_sent: 12,
                bytes_received: 3
            })
        );
        let rtt = snap.round_trip.unwrap();
        assert_eq!((rtt.last_ms, rtt.smoothed_ms, rtt.samples), (16.0, 9.0, 2));
        assert_eq!(snap.queue_depth, Some(4));
        let conn = snap.connection.unwrap();
        assert_eq!(conn.reconnects, 1);
        assert!(conn.connected_ms.is_some());
        s.disconnected();
        let snap = s.snapshot(url(), None, StubStatus::Disconnected);
        assert_eq!(snap.connection.unwrap().connected_ms, None);
        // the JSON form reads back
        let back: StubStatistics =
            serde_json::from_value(serde_json::to_value(&snap).unwrap()).unwrap();
        assert_eq!(back, snap);
    }
}
