//! The load generator's measuring code, independent of its command line: the client
//! runs ([`run_relay_load`], [`run_fanout`]) and the baseline relay
//! ([`start_baseline_relay`]). See `benches/loadgen.rs` for what is measured.
//!
//! Everything here runs on any tokio runtime (tasks are started with `tokio::spawn`), so a
//! test or bench that starts a node in-process can include this directory as a module,
//! e.g. `#[path = "../benches/loadgen/mod.rs"] #[allow(dead_code)] mod loadgen;`, and call
//! the same functions with the node's URL.

mod baseline;
mod client;
mod fanout;
mod flood;
mod http;
mod nats;
mod process;
mod relay_load;
mod sio;

use std::time::Duration;

use serde::Serialize;
use tokio_tungstenite::tungstenite::Error as WsError;

pub use baseline::{start_baseline_relay, RelayHandle};
pub use client::check_loopback;
pub use fanout::run_fanout;
pub use relay_load::run_relay_load;
// for benches/federation.rs and benches/cluster.rs (the loadgen binary does not use them)
#[allow(unused_imports)]
pub use fanout::run_fanout_spread;
#[allow(unused_imports)]
pub use relay_load::run_relay_between;
// for benches/transports.rs
#[allow(unused_imports)]
pub use flood::{run_flood, FloodReport, Target, MAX_SEND_BATCH};
#[allow(unused_imports)]
pub use nats::NatsAuth;
#[allow(unused_imports)]
pub use process::{cpu_time, post_json, NatsProcess, NodeProcess, RelayProcess};

/// Upper bounds on the parameters, so memory and time stay bounded.
const MAX_PAIRS: usize = 1_000;
const MAX_TOTAL_MESSAGES: u64 = 20_000_000;
const MAX_WINDOW: u64 = 1_000_000;
const MAX_SIZE: usize = 1 << 20;
const MAX_SUBSCRIBERS: usize = 10_000;
const MAX_UPDATES: u64 = 100_000;

/// Everything that stops a load run before it can report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL does not parse or is not `ws://` (or `http://`).
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The URL names a host outside the loopback range.
    #[error("refusing to load {host:?}: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed")]
    NotLoopback { host: String },
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    BadParams(String),
    /// TCP connect or WebSocket upgrade failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<WsError>,
    },
    /// A handshake step did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The node answered a handshake step with a code other than 200.
    #[error("{what} rejected with code {code}: {frame}")]
    Rejected {
        what: String,
        code: String,
        frame: String,
    },
    /// The connection closed or failed during a handshake step.
    #[error("{what}: connection lost: {reason}")]
    Lost { what: String, reason: String },
    /// Local I/O failure (bind, runtime start).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A run finished with fewer deliveries than sends.
    #[error("{label}: delivered {delivered} of {sent} sent{}", reason_suffix(.reason))]
    Loss {
        label: String,
        sent: u64,
        delivered: u64,
        reason: Option<String>,
    },
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

/// What one run does. [`Params::default`] matches the CLI defaults.
#[derive(Debug, Clone)]
pub struct Params {
    /// Sender/receiver session pairs (relay mode).
    pub pairs: usize,
    /// Messages each pair sends (relay mode).
    pub messages: u64,
    /// Length in bytes of each message's serialised `body.value`.
    pub size: usize,
    /// Messages in flight per pair.
    pub window: u64,
    /// Domain `D` of the runtime URLs and of `domain://msg-node.D/sm`.
    pub domain: String,
    /// Put into `body.token` of every `open`.
    pub token: Option<String>,
    /// Subscriber sessions (fan-out mode).
    pub subscribers: usize,
    /// Updates the publisher sends (fan-out mode).
    pub updates: u64,
    /// Whole-run limit, handshakes included; the run stops and reports when it passes.
    pub time_limit: Duration,
    /// Stop when no delivery progress is seen for this long.
    pub stall: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            pairs: 4,
            messages: 50_000,
            size: 100,
            window: 64,
            domain: "localhost".into(),
            token: None,
            subscribers: 1_000,
            updates: 200,
            time_limit: Duration::from_secs(120),
            stall: Duration::from_secs(10),
        }
    }
}

impl Params {
    /// Checks every bound; both run functions call it first.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::BadParams(m));
        if !(1..=MAX_PAIRS).contains(&self.pairs) {
            return bad(format!("pairs must be 1..={MAX_PAIRS}"));
        }
        if self.messages == 0
            || (self.pairs as u64).saturating_mul(self.messages) > MAX_TOTAL_MESSAGES
        {
            return bad(format!(
                "messages must be >= 1 and pairs x messages <= {MAX_TOTAL_MESSAGES}"
            ));
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return bad(format!("window must be 1..={MAX_WINDOW}"));
        }
        if self.size > MAX_SIZE {
            return bad(format!("size must be <= {MAX_SIZE}"));
        }
        if !(1..=MAX_SUBSCRIBERS).contains(&self.subscribers) {
            return bad(format!("fanout must be 1..={MAX_SUBSCRIBERS}"));
        }
        if !(1..=MAX_UPDATES).contains(&self.updates) {
            return bad(format!("updates must be 1..={MAX_UPDATES}"));
        }
        let domain_ok = !self.domain.is_empty()
            && self
                .domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !domain_ok {
            return bad(format!(
                "domain {:?} must be letters, digits, '.', '-', '_', ':'",
                self.domain
            ));
        }
        if self.stall.is_zero() {
            return bad("stall timeout must be > 0".into());
        }
        Ok(())
    }
}

/// One-way latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyStats {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Result of [`run_relay_load`].
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    /// Messages written by all senders.
    pub sent: u64,
    /// Distinct messages the right receivers got.
    pub delivered: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Frames that were not one of this run's messages for that session (misrouted,
    /// unparsable, or replies sent to a sender).
    pub unexpected: u64,
    /// Bytes of the first message frame (all are within a few bytes of it).
    pub frame_bytes: usize,
    /// From the first send to the last delivery.
    pub elapsed_s: f64,
    pub msgs_per_sec: f64,
    pub latency: LatencyStats,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
}

impl Report {
    /// `Err(LoadError::Loss)` unless every sent message was delivered and the run was not
    /// stopped early.
    pub fn verify(&self) -> Result<(), LoadError> {
        if self.delivered == self.sent && self.stopped.is_none() {
            Ok(())
        } else {
            Err(LoadError::Loss {
                label: self.url.clone(),
                sent: self.sent,
                delivered: self.delivered,
                reason: self.stopped.clone(),
            })
        }
    }
}

/// Result of [`run_fanout`].
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub url: String,
    pub subscribers: u64,
    /// Updates the publisher wrote.
    pub updates_sent: u64,
    /// Updates every subscriber received.
    pub updates_completed: u64,
    /// Deliveries counted (expected: subscribers x updates_sent).
    pub deliveries: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub frame_bytes: usize,
    /// Per update: from the send until the last subscriber read it.
    pub all_received: LatencyStats,
    /// Per delivery: from the send until one subscriber read it.
    pub per_delivery: LatencyStats,
    pub stopped: Option<String>,
}

impl FanoutReport {
    /// `Err(LoadError::Loss)` unless every update reached every subscriber.
    pub fn verify(&self) -> Result<(), LoadError> {
        let expected = self.subscribers * self.updates_sent;
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
