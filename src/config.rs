//! Configuration of the messaging node: one serde tree of per-component sections.
//!
//! The commented defaults live in `src/default.toml` (embedded; `hyperty
//! --print-config` prints them). A file given with `--config` overrides them; flags
//! and environment variables override the file.
//!
//! ```
//! let cfg = hyperty::config::NodeConfig::from_toml("[node]\ndomain = \"example.com\"").unwrap();
//! assert_eq!(cfg.node.domain, "example.com");
//! assert_eq!(cfg.allocation.default_number, 1);
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::dashboard::DashboardSection;
pub use crate::domain_registry::DomainRegistryConfig;
pub use crate::federation::{FederationSection, PeerEntry};
pub use crate::identity::IdpConfig;
pub use crate::qos::QosBrokerConfig;
pub use hyperty_actors::policy::PolicyConfig;

/// Whether `open` must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every session authenticates with an ID or device token (the default).
    #[default]
    Required,
    /// Sessions without a token are anonymous (for clients that cannot carry one,
    /// such as the reTHINK reference protostubs); a bad token is still refused.
    Optional,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<AuthMode, String> {
        match s {
            "required" => Ok(AuthMode::Required),
            "optional" => Ok(AuthMode::Optional),
            other => Err(format!("auth must be required or optional, not {other:?}")),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `required` (default) or `optional`.
    pub mode: AuthMode,
    /// How long a session may go on after its ID (or device) token expired without
    /// renewing it (`update` to `mn:/session` with `body.idToken`) before it is
    /// closed with 401 (ms).
    pub expiry_grace_ms: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: AuthMode::default(),
            expiry_grace_ms: 30_000,
        }
    }
}

/// The embedded, commented default configuration.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for this tree.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("invalid configuration value {field}: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// The domain served.
    pub domain: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
    /// Where the node keeps its durable state (who held which address, so that only
    /// the same identity may re-claim it after a restart); owner-only files. `None`
    /// (only from code) keeps it in memory.
    pub data_dir: Option<std::path::PathBuf>,
}

/// `[session]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSection {
    /// Server ping interval (ms).
    pub heartbeat_interval_ms: u64,
    /// Silence after which a client is dropped (ms).
    pub client_timeout_ms: u64,
    /// Largest message (bytes).
    pub max_frame_size: usize,
    /// Most frames queued for one client (a hard cap: past it the client is evicted).
    pub outbound_queue: usize,
    /// Bytes queued for one client above which its senders are slowed: they stop
    /// reading their own sockets until the queue has drained to half of this.
    pub slow_down_bytes: usize,
    /// Bytes queued for one client past which it is evicted (socket shut, session freed).
    pub max_pending_bytes: usize,
    /// A client with frames pending that takes none for this long is evicted (ms).
    pub write_deadline_ms: u64,
    /// A connection that has not opened a session this long after connecting is
    /// closed (ms).
    pub open_timeout_ms: u64,
    /// How long a dropped session keeps its addresses (ms).
    pub grace_period_ms: u64,
    /// Frames buffered for a dropped session.
    pub grace_buffer: usize,
    /// Most concurrent sessions.
    pub max_sessions: usize,
}

/// `[transports]`: the session transports besides the raw WebSocket (HTTP POST +
/// long-poll at `/http/…`, Socket.IO at `/socket.io/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportsSection {
    /// An HTTP or Socket.IO polling session not heard from for this long ends (ms).
    pub session_expiry_ms: u64,
    /// The longest a long-poll waits for frames (ms); a longer `wait` is cut to this.
    pub poll_max_wait_ms: u64,
    /// Most frames one poll returns.
    pub poll_max_frames: usize,
    /// Most bytes of frames one poll returns (at least one frame is returned).
    pub poll_max_bytes: usize,
    /// Socket.IO: the ping interval announced to clients (ms)...
    pub socketio_ping_interval_ms: u64,
    /// ...and how long after an expected ping a silent client is dropped (ms).
    pub socketio_ping_timeout_ms: u64,
}

impl Default for TransportsSection {
    fn default() -> Self {
        TransportsSection {
            session_expiry_ms: 60_000,
            poll_max_wait_ms: 30_000,
            poll_max_frames: 1000,
            poll_max_bytes: 1 << 20,
            socketio_ping_interval_ms: 25_000,
            socketio_ping_timeout_ms: 60_000,
        }
    }
}

impl TransportsSection {
    /// See [`TransportsSection::session_expiry_ms`].
    pub fn session_expiry(&self) -> Duration {
        Duration::from_millis(self.session_expiry_ms)
    }
    /// See [`TransportsSection::poll_max_wait_ms`].
    pub fn poll_max_wait(&self) -> Duration {
        Duration::from_millis(self.poll_max_wait_ms)
    }
    /// The silence after which a Socket.IO client is dropped.
    pub fn socketio_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio_ping_interval_ms + self.socketio_ping_timeout_ms)
    }
}

/// `[allocation]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationSection {
    /// Addresses per request when unspecified.
    pub default_number: usize,
    /// Most addresses per request.
    pub max_per_request: usize,
    /// Most addresses per session.
    pub max_per_session: usize,
    /// Object-address schemes that may be allocated; empty: any well-formed scheme
    /// the node does not reserve (`hyperty-runtime`, `domain`, `user`, `http`, …).
    pub schemes: Vec<String>,
    /// How long the node remembers who held an address after it was last held
    /// (seconds): within it only that identity may re-claim the address.
    pub holder_retention_secs: u64,
    /// Most addresses whose holder is remembered (allocations beyond answer 503).
    pub max_holder_records: usize,
    /// Most stub URLs (`hyperty-runtime://<D>/…` URLs other than the runtime URL,
    /// announced at `open` or bound at first use) one session may hold.
    pub max_stub_urls: usize,
}

/// `[subscriptions]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsSection {
    /// Most subscribed resources per session.
    pub max_per_session: usize,
}

/// `[limits]`: denial-of-service protection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Frames per second one session may send, sustained.
    pub messages_per_second: u32,
    /// Frames one session may send in a burst above the sustained rate.
    pub burst: u32,
    /// Frames refused (over the rate, malformed, forbidden) within `abuse_window_ms`
    /// after which the connection is closed as abusive.
    pub abuse_threshold: u32,
    /// The window over which refusals are counted (ms).
    pub abuse_window_ms: u64,
    /// Most concurrent connections from one IP address.
    pub max_sessions_per_ip: usize,
    /// Most sessions one authenticated user (or device) may hold.
    pub max_sessions_per_user: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            messages_per_second: 10_000,
            burst: 20_000,
            abuse_threshold: 1_000,
            abuse_window_ms: 10_000,
            max_sessions_per_ip: 1_000,
            max_sessions_per_user: 100,
        }
    }
}

/// `[metrics]`: the node's Prometheus exposition at `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serves `GET /metrics` and keeps the per-type counts and the sampled
    /// latencies on the routing path; when false neither is done (the `/health`
    /// counters stay).
    pub enabled: bool,
    /// Lets anyone read `/metrics`. When false and sessions must authenticate,
    /// a read needs a valid ID or device token (`Authorization: Bearer …`), as
    /// for the registry's HTTP reads.
    pub public_reads: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            public_reads: false,
        }
    }
}

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// `[node]`
    pub node: NodeSection,
    /// `[session]`
    pub session: SessionSection,
    /// `[allocation]`
    pub allocation: AllocationSection,
    /// `[subscriptions]`
    pub subscriptions: SubscriptionsSection,
    /// `[auth]`
    pub auth: AuthSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[identity]`: the embedded identity provider.
    pub identity: IdpConfig,
    /// `[policy]`: the node's policy decision point, consulted on every routed frame.
    pub policy: PolicyConfig,
    /// `[registry]`: the embedded domain registry.
    pub registry: DomainRegistryConfig,
    /// `[qos]`: the QoS broker at `domain://qos.<D>`.
    pub qos: QosBrokerConfig,
    /// `[metrics]`: `GET /metrics` (see [`crate::metrics`]).
    pub metrics: MetricsSection,
    /// `[transports]`: HTTP long-poll and Socket.IO sessions.
    pub transports: TransportsSection,
    /// `[dashboard]`: the live dashboard at `GET /dashboard` (see [`crate::dashboard`]).
    pub dashboard: DashboardSection,
    /// `[federation]`: links to other domains' nodes.
    pub federation: FederationSection,
    /// `[catalogue]`: the descriptors served under `/.well-known/`.
    pub catalogue: crate::catalogue::CatalogueSection,
    /// `[cluster]`: many nodes of this domain sharing state through Redis.
    pub cluster: crate::cluster::ClusterSection,
    /// `[[peers]]`: other domains' nodes known without discovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerEntry>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node: NodeSection::default(),
            session: SessionSection::default(),
            allocation: AllocationSection::default(),
            subscriptions: SubscriptionsSection::default(),
            auth: AuthSection::default(),
            limits: LimitsSection::default(),
            identity: IdpConfig {
                data_dir: Some(std::path::PathBuf::from("data/idp")),
                ..IdpConfig::default()
            },
            registry: DomainRegistryConfig::default(),
            policy: PolicyConfig::default(),
            qos: QosBrokerConfig::default(),
            metrics: MetricsSection::default(),
            transports: TransportsSection::default(),
            dashboard: DashboardSection::default(),
            federation: FederationSection::default(),
            catalogue: crate::catalogue::CatalogueSection::default(),
            cluster: crate::cluster::ClusterSection::default(),
            peers: Vec::new(),
        }
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            domain: "localhost".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            workers: 0,
            data_dir: Some(std::path::PathBuf::from("data/node")),
        }
    }
}

impl Default for SessionSection {
    fn default() -> Self {
        SessionSection {
            heartbeat_interval_ms: 10_000,
            client_timeout_ms: 30_000,
            max_frame_size: 1 << 20,
            outbound_queue: 65_536,
            slow_down_bytes: 1 << 20,
            max_pending_bytes: 64 << 20,
            write_deadline_ms: 2_000,
            open_timeout_ms: 10_000,
            grace_period_ms: 30_000,
            grace_buffer: 1024,
            max_sessions: 100_000,
        }
    }
}

impl Default for AllocationSection {
    fn default() -> Self {
        AllocationSection {
            default_number: 1,
            max_per_request: 100,
            max_per_session: 100_000,
            schemes: Vec::new(),
            holder_retention_secs: 86_400,
            max_holder_records: 1_000_000,
            max_stub_urls: 16,
        }
    }
}

impl Default for SubscriptionsSection {
    fn default() -> Self {
        SubscriptionsSection {
            max_per_session: 100_000,
        }
    }
}

impl SessionSection {
    /// Server ping interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
    /// Client silence limit.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_timeout_ms)
    }
    /// Grace period of dropped sessions.
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_period_ms)
    }
    /// Write-progress deadline of a client with frames pending.
    pub fn write_deadline(&self) -> Duration {
        Duration::from_millis(self.write_deadline_ms)
    }
    /// How long a connection may stay without a session.
    pub fn open_timeout(&self) -> Duration {
        Duration::from_millis(self.open_timeout_ms)
    }
}

impl NodeConfig {
    /// Parses TOML (missing sections and fields take their defaults) and validates.
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        let cfg: NodeConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        NodeConfig::from_toml(&text)
    }

    /// Checks ranges and the domain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        let d = &self.node.domain;
        if d.is_empty()
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return bad(
                "node.domain",
                "must be a host name (letters, digits, '.', '-', ':')",
            );
        }
        if self.cluster.redis.is_some() {
            if let Err(reason) = self.cluster.validate() {
                return Err(ConfigError::Invalid {
                    field: "cluster",
                    reason,
                });
            }
        }
        let t = &self.transports;
        if t.session_expiry_ms == 0
            || t.poll_max_frames == 0
            || t.poll_max_bytes == 0
            || t.socketio_ping_interval_ms == 0
        {
            return bad(
                "transports",
                "session_expiry_ms, poll_max_frames, poll_max_bytes and \
                 socketio_ping_interval_ms must be positive",
            );
        }
        let s = &self.session;
        if s.heartbeat_interval_ms == 0 || s.client_timeout_ms <= s.heartbeat_interval_ms {
            return bad(
                "session.client_timeout_ms",
                "must be greater than heartbeat_interval_ms, which must be positive",
            );
        }
        if s.max_frame_size < 1024 {
            return bad("session.max_frame_size", "must be at least 1024");
        }
        if s.outbound_queue == 0 || s.max_sessions == 0 {
            return bad(
                "session",
                "outbound_queue and max_sessions must be positive",
            );
        }
        if s.max_pending_bytes < s.max_frame_size || s.slow_down_bytes >= s.max_pending_bytes {
            return bad(
                "session.max_pending_bytes",
                "must hold one max_frame_size frame and exceed slow_down_bytes",
            );
        }
        if s.slow_down_bytes == 0 || s.write_deadline_ms == 0 || s.open_timeout_ms == 0 {
            return bad(
                "session",
                "slow_down_bytes, write_deadline_ms and open_timeout_ms must be positive",
            );
        }
        let a = &self.allocation;
        if a.default_number == 0 || a.default_number > a.max_per_request || a.max_per_session == 0 {
            return bad(
                "allocation",
                "need 0 < default_number <= max_per_request and max_per_session > 0",
            );
        }
        let l = &self.limits;
        if l.messages_per_second == 0
            || l.burst == 0
            || l.abuse_threshold == 0
            || l.abuse_window_ms == 0
            || l.max_sessions_per_ip == 0
        {
            return bad("limits", "every limit must be positive");
        }
        if a.max_holder_records == 0 || a.holder_retention_secs == 0 {
            return bad(
                "allocation",
                "max_holder_records and holder_retention_secs must be positive",
            );
        }
        if let Some(bad_scheme) = a.schemes.iter().find(|s| {
            !hyperty_actors::address::is_valid_scheme(s)
                || hyperty_actors::address::is_reserved_scheme(s) && s.as_str() != "hyperty"
        }) {
            return Err(ConfigError::Invalid {
                field: "allocation.schemes",
                reason: format!("{bad_scheme:?} is not an allocatable scheme"),
            });
        }
        if self.subscriptions.max_per_session == 0 {
            return bad("subscriptions.max_per_session", "must be positive");
        }
        if self.qos.max_reports == 0 || self.qos.max_stubs_per_report == 0 {
            return bad(
                "qos",
                "max_reports and max_stubs_per_report must be positive",
            );
        }
        if let Err(reason) = self.dashboard.check() {
            return bad("dashboard", reason);
        }
        self.federation.validate(&self.peers, &self.node.domain)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_equal_the_code_defaults() {
        assert_eq!(
            NodeConfig::from_toml(DEFAULT_TOML).unwrap(),
            NodeConfig::default()
        );
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert!(matches!(
            NodeConfig::from_toml("[node]\ndomain = \"a b\""),
            Err(ConfigError::Invalid {
                field: "node.domain",
                ..
            })
        ));
        assert!(matches!(
            NodeConfig::from_toml("[session]\nclient_timeout_ms = 1"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            NodeConfig::from_toml("[nodes]"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            NodeConfig::from_toml("[node]\nlisten = \"x\""),
            Err(ConfigError::Parse(_))
        ));
        assert!(NodeConfig::from_file(Path::new("/nonexistent/x.toml")).is_err());
    }

    #[test]
    fn round_trips_through_toml() {
        let mut c = NodeConfig::default();
        c.node.domain = "example.com".into();
        assert_eq!(NodeConfig::from_toml(&c.to_toml()).unwrap(), c);
    }
}
