//! Configuration of a runtime's event system: limits, timing, the cache.
//!
//! The clock is not configured here: the dispatcher reads the runtime's one clock,
//! handed to [`EventDispatcher::start`](crate::events::EventDispatcher::start).

use std::path::PathBuf;
use std::time::Duration;

use crate::events::buffer::DEFAULT_ID_BUFFER_CAPACITY;
use crate::events::cache::CacheConfig;
use crate::events::entities::DEFAULT_MAX_ENTITIES;
use crate::events::listeners::DEFAULT_MAX_EVENT_LISTENERS;
use crate::events::references::DEFAULT_MAX_REFERENCES;

/// Default period of the dispatcher's timer (timeouts, cache retransmission).
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Default time an RPC call waits for its answer.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time a dispatch's callbacks stay reachable by delivery notifications.
pub const DEFAULT_REPORT_RETENTION: Duration = Duration::from_secs(600);
/// Default bound of dispatches awaiting delivery notifications or responses.
pub const DEFAULT_MAX_PENDING_REPORTS: usize = 100_000;
/// Default bound of RPC calls awaiting an answer.
pub const DEFAULT_MAX_RPC_CALLS: usize = 10_000;
/// Default duplicate-buffer capacity of a durable entity.
pub const DEFAULT_DURABLE_ID_BUFFER_CAPACITY: usize = 65_536;
/// Default bound of a durable entity's unacknowledged events.
pub const DEFAULT_DURABLE_INBOX_CAPACITY: usize = 10_000;

/// Limits and timing of the event dispatcher and its cache. Every table is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The Local Event Cache (database path, bound, backoff).
    pub cache: CacheConfig,
    /// Most registered entities.
    pub max_entities: usize,
    /// Incoming-id buffer capacity per entity.
    pub id_buffer_capacity: usize,
    /// Incoming-id buffer capacity per durable entity (stored with the cache).
    pub durable_id_buffer_capacity: usize,
    /// Most unacknowledged events per durable entity; past it, new events are not
    /// accepted (nor acknowledged) until the application acknowledges some.
    pub durable_inbox_capacity: usize,
    /// Most listener registrations.
    pub max_listeners: usize,
    /// Most events held for "In response to" references.
    pub max_references: usize,
    /// Most dispatches awaiting delivery notifications or responses.
    pub max_pending_reports: usize,
    /// Most RPC calls awaiting an answer.
    pub max_rpc_calls: usize,
    /// How long an RPC call waits.
    pub rpc_timeout: Duration,
    /// How long a dispatch's callbacks stay reachable.
    pub report_retention: Duration,
    /// The timer period; `None` disables the timer (call `tick` yourself).
    pub tick_interval: Option<Duration>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            cache: CacheConfig::default(),
            max_entities: DEFAULT_MAX_ENTITIES,
            id_buffer_capacity: DEFAULT_ID_BUFFER_CAPACITY,
            durable_id_buffer_capacity: DEFAULT_DURABLE_ID_BUFFER_CAPACITY,
            durable_inbox_capacity: DEFAULT_DURABLE_INBOX_CAPACITY,
            max_listeners: DEFAULT_MAX_EVENT_LISTENERS,
            max_references: DEFAULT_MAX_REFERENCES,
            max_pending_reports: DEFAULT_MAX_PENDING_REPORTS,
            max_rpc_calls: DEFAULT_MAX_RPC_CALLS,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            report_retention: DEFAULT_REPORT_RETENTION,
            tick_interval: Some(DEFAULT_TICK_INTERVAL),
        }
    }
}

impl EventsConfig {
    /// Stores the cache in the database file at `path`.
    pub fn with_cache_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache.path = Some(path.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_path_is_set() {
        let b = EventsConfig::default().with_cache_path("data/events.redb");
        assert_eq!(
            b.cache.path.as_deref(),
            Some(std::path::Path::new("data/events.redb"))
        );
        assert_ne!(b, EventsConfig::default());
        assert_eq!(b, b.clone());
    }
}
