//! Many nodes of one domain sharing their state through Redis (`[cluster]`).
//!
//! A domain served by N node processes behind any TCP load balancer keeps its
//! shared state — who owns which address, which node holds which session, `/sm`
//! subscriptions, the domain registry, the identity provider's users, devices and
//! keys — in one Redis, every key under the configured `prefix`. Entries a node
//! owns carry a TTL it refreshes; a dead node's entries expire. Frames for a
//! session on another node travel over Redis pub/sub, one channel per node.
//!
//! Components: [`ClusterNode`] (this node's handle: entries with TTLs, asserted
//! by the node's single writers — allocation, sessions, subscriptions),
//! [`ClusterDirectory`] (membership, heartbeat, refresh) and
//! [`forward`] (cross-node routing over one channel per node).
//!
//! This module holds the configuration and [`ClusterStore`], the one handle every
//! cluster-aware component talks to Redis through: it names keys under the prefix,
//! bounds every command by `command_timeout_ms`, and turns every Redis failure into
//! [`ClusterError::Unavailable`], which the node answers as 503. The connection is
//! made lazily and remade by itself once Redis is back, so a node starts, and keeps
//! routing locally, while Redis is down.
//!
//! ```
//! let cfg = hyperty::config::NodeConfig::from_toml(
//!     "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nprefix = \"acme\"",
//! )
//! .unwrap();
//! assert_eq!(cfg.cluster.prefix, "acme");
//! actix_rt::System::new().block_on(async {
//!     let store = hyperty::cluster::ClusterStore::open(&cfg.cluster).unwrap().unwrap();
//!     assert_eq!(store.key(&["owner", "hyperty://acme/1"]), "acme:owner:hyperty://acme/1");
//! });
//! ```

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The Redis the nodes of this domain share (`redis://host:port[/db]`); unset:
    /// this node is the whole domain.
    pub redis: Option<String>,
    /// Every key and channel this domain's nodes use starts with `<prefix>:`.
    pub prefix: String,
    /// This node's name in the cluster; unset: a fresh UUID at every start.
    pub node_id: Option<String>,
    /// Lifetime of the entries a node owns (ms); refreshed every `heartbeat_ms`.
    pub entry_ttl_ms: u64,
    /// How often a node refreshes its entries and its membership record (ms).
    pub heartbeat_ms: u64,
    /// Longest wait for one Redis command or connection attempt (ms); past it the
    /// operation fails as unavailable.
    pub command_timeout_ms: u64,
    /// Longest wait for the response to a request forwarded to another node (ms);
    /// past it (or when that node stops heartbeating) the sender gets a 504.
    pub request_timeout_ms: u64,
    /// How long a node trusts what it looked up about where an address lives (ms);
    /// changes announced on the control channel end it earlier.
    pub cache_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis: None,
            prefix: "hyperty".into(),
            node_id: None,
            entry_ttl_ms: 15_000,
            heartbeat_ms: 5_000,
            command_timeout_ms: 1_000,
            request_timeout_ms: 30_000,
            cache_ms: 2_000,
        }
    }
}

impl ClusterSection {
    /// Refuses settings under which entries would expire between two refreshes.
    pub fn validate(&self) -> Result<(), String> {
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err(format!(
                "cluster.prefix must be non-empty without spaces, not {:?}",
                self.prefix
            ));
        }
        if self.heartbeat_ms == 0 || self.entry_ttl_ms < 2 * self.heartbeat_ms {
            return Err(format!(
                "cluster.entry_ttl_ms ({}) must be at least twice cluster.heartbeat_ms ({}), which must be > 0",
                self.entry_ttl_ms, self.heartbeat_ms
            ));
        }
        if self.command_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err("cluster.command_timeout_ms and request_timeout_ms must be > 0".into());
        }
        if let Some(id) = &self.node_id {
            if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == ':') {
                return Err(format!(
                    "cluster.node_id must be non-empty without spaces or ':', not {id:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// The `[cluster]` settings or its `redis` URL were refused.
    #[error("bad cluster settings: {0}")]
    Url(String),
    /// The store was opened outside a Tokio runtime (an actix arbiter).
    #[error("the cluster store must be opened inside a Tokio runtime")]
    NoRuntime,
    /// Redis could not be reached or did not answer in time (answered as 503).
    #[error("cluster store unavailable: {0}")]
    Unavailable(String),
    /// Redis answered something this node did not expect (answered as 500).
    #[error("cluster store answered unexpectedly: {0}")]
    Protocol(String),
}

impl ClusterError {
    /// The reTHINK response code this error is answered with.
    pub fn code(&self) -> u16 {
        match self {
            ClusterError::Unavailable(_) => 503,
            ClusterError::Url(_) | ClusterError::NoRuntime | ClusterError::Protocol(_) => 500,
        }
    }
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> ClusterError {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            ClusterError::Unavailable(e.to_string())
        } else {
            ClusterError::Protocol(e.to_string())
        }
    }
}

/// The shared handle to the cluster's Redis: key names and bounded commands.
/// Cheap to clone; every clone shares one multiplexed connection.
#[derive(Clone)]
pub struct ClusterStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: ConnectionManager,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl ClusterStore {
    /// The store of `cfg`, or `None` when no `redis` is configured. Connects lazily
    /// (on the first command), so this succeeds while Redis is down; must be called
    /// inside a Tokio runtime (any actix arbiter).
    pub fn open(cfg: &ClusterSection) -> Result<Option<ClusterStore>, ClusterError> {
        let Some(url) = &cfg.redis else {
            return Ok(None);
        };
        cfg.validate().map_err(ClusterError::Url)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClusterError::NoRuntime);
        }
        let client =
            redis::Client::open(url.as_str()).map_err(|e| ClusterError::Url(e.to_string()))?;
        let timeout = Duration::from_millis(cfg.command_timeout_ms);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config(timeout))
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        Ok(Some(ClusterStore {
            inner: Arc::new(Inner {
                client,
                prefix: cfg.prefix.clone(),
                timeout,
                conn,
            }),
        }))
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `<prefix>:<part>:<part>…`
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = String::with_capacity(
            self.inner.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>(),
        );
        k.push_str(&self.inner.prefix);
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Runs one command, bounded by the command timeout.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        let mut conn = self.inner.conn.clone();
        bounded(self.inner.timeout, cmd.query_async(&mut conn)).await
    }

    /// Runs a pipeline (atomic if built with `.atomic()`), bounded by the command
    /// timeout.
    pub async fn pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ClusterError> {
        let mut conn = self.inner.conn.clone();
        bounded(self.inner.timeout, pipe.query_async(&mut conn)).await
    }

    /// A dedicated pub/sub connection (for a node's inbound channel), bounded by the
    /// command timeout; the caller re-subscribes after it drops.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, ClusterError> {
        bounded(self.inner.timeout, self.inner.client.get_async_pubsub()).await
    }

    /// Whether Redis answers `PING` now.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        let pong: String = self.run(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(ClusterError::Protocol(format!("PING answered {pong:?}")))
        }
    }
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(timeout)
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(ClusterError::from),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

pub mod directory;
pub mod forward;
pub mod node;

pub use directory::ClusterDirectory;
pub use node::{ClusterNode, Control, Member};

/// Nodes of the domain stopped heartbeating (killed, or their membership
/// record lapsed): told by the [`ClusterDirectory`] to the domain registry,
/// which marks `disconnected` the entries of the runtimes no live node holds.
/// Answers how many entries changed.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "usize")]
pub struct NodesLeft {
    /// The nodes that left.
    pub nodes: Vec<String>,
    /// The nodes alive now (this one included).
    pub alive: std::collections::HashSet<String>,
}
