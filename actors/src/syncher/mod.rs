//! The Syncher: reporter/observer data synchronisation (rethink-wire.md §9).
//!
//! A hyperty *reports* a data object; other hyperties, in this runtime or in
//! others reached through the messaging node, *observe* it; every change reaches
//! every observer, in order. This is how calls are set up (connection objects
//! carrying offer and answer), how devices publish context and how chat rooms
//! hold their state.
//!
//! | module | component |
//! |---|---|
//! | [`path`] | attribute paths (`"a.b.0"`) and the edits they address |
//! | [`object`] | object state, versioned changes, the bounded history |
//! | [`schema`] | JSON Schema checks of object data |
//! | [`store`] | the durable store of reported and observed objects (redb) |
//! | [`manager`] | the SyncherManager actor at `<runtime>/sm` |
//! | [`handle`] | the typed API a hyperty uses: [`Syncher`], [`Reporter`], [`Observer`] |
//!
//! # Who sends what
//!
//! ```text
//!  hyperty ── Syncher ──(bus, PEP)──▶ <rt>/sm  SyncherManager ──(bus)──▶ protocol stub ─▶ node
//!                                          │   owns: reported objects (+history, observers)
//!                                          │         observed replicas (+reorder buffer)
//!                                          └─▶ Reporter / Observer handles (bounded channels)
//! ```
//!
//! The hyperty's [`Syncher`] speaks §9 requests to `<rt>/sm` through the bus, so
//! they pass the PEP like any other message: `create` (with `authorise` to
//! invite), `subscribe`, `unsubscribe`, `update`, `delete`, `read`, `execute
//! {method:"sync"|"stopSync"}`, and `create`/`subscribe` with `resume:true`. The
//! manager is the reporter's authority: it checks who writes, checks the schema,
//! gives every change the next version, keeps it in a bounded history, stores the
//! object, and publishes `update`/`create`/`delete` from the object to
//! `<obj>/changes` and `<obj>/children/`.
//!
//! # Beyond reTHINK: order and gap recovery
//!
//! An observer never applies a change out of order. Early changes wait in a
//! bounded reorder buffer; on a gap it asks the reporter (`read` to the object
//! with `body.version`) for what it missed — the deltas from the history, or a
//! snapshot when they are gone — and converges. Idle observers re-check their
//! version now and then ([`SyncherConfig::check_interval`]), and every observer
//! re-checks when its protocol stub comes back after a loss.

pub mod handle;
pub mod manager;
pub mod object;
pub mod path;
pub mod schema;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use handle::{
    Invitation, ObjectSpec, Observer, Reporter, SubscriptionDecision, SubscriptionRequest,
    SyncEvent, Syncher,
};
pub use manager::SyncherManager;

use crate::message::ResponseCode;

/// Why a sync request is refused. Each maps to a reTHINK response code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// A bad attribute path (400).
    #[error(transparent)]
    Path(#[from] path::PathError),
    /// The data would not satisfy the object's schema (400).
    #[error("schema violation: {0}")]
    SchemaViolation(String),
    /// A version that is not the next one (400).
    #[error("stale version {got}: the object is at version {at}")]
    StaleVersion {
        /// The version given.
        got: u64,
        /// The object's version.
        at: u64,
    },
    /// Not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such object or child (404).
    #[error("{0} not found")]
    NotFound(String),
    /// A bounded table is full (429).
    #[error("too many {0}")]
    Full(&'static str),
    /// A component did not answer (500).
    #[error("{0} unavailable")]
    Unavailable(String),
    /// The durable store failed (500).
    #[error("sync store: {0}")]
    Store(String),
}

impl SyncError {
    /// The response code.
    pub fn code(&self) -> ResponseCode {
        match self {
            SyncError::BadRequest(_)
            | SyncError::Path(_)
            | SyncError::SchemaViolation(_)
            | SyncError::StaleVersion { .. } => ResponseCode::BadRequest,
            SyncError::Forbidden(_) => ResponseCode::Forbidden,
            SyncError::NotFound(_) => ResponseCode::NotFound,
            SyncError::Full(_) => ResponseCode::TooManyRequests,
            SyncError::Unavailable(_) | SyncError::Store(_) => ResponseCode::InternalError,
        }
    }

    /// The error a refusal response describes.
    pub fn from_response(code: ResponseCode, description: Option<&str>) -> SyncError {
        let d = description.unwrap_or("refused").to_owned();
        match code.as_u16() {
            400 => SyncError::BadRequest(d),
            401 | 403 => SyncError::Forbidden(d),
            404 => SyncError::NotFound(d),
            429 => SyncError::Full("requests"),
            _ => SyncError::Unavailable(d),
        }
    }
}

impl crate::error::ToResponseCode for SyncError {
    fn response_code(&self) -> ResponseCode {
        self.code()
    }
}

/// Default number of changes a reporter keeps per object for observers that
/// missed some.
pub const DEFAULT_HISTORY: usize = 256;
/// Default most objects a runtime reports or observes.
pub const DEFAULT_MAX_OBJECTS: usize = 10_000;
/// Default most observers of one reported object.
pub const DEFAULT_MAX_OBSERVERS: usize = 10_000;
/// Default most early changes an observer holds while it fetches a gap.
pub const DEFAULT_REORDER_BUFFER: usize = 1_024;
/// Default capacity of each handle's change channel.
pub const DEFAULT_CHANNEL: usize = 1_024;
/// Largest serialised object data accepted, in bytes.
pub const DEFAULT_MAX_DATA_BYTES: usize = 1 << 20;

/// Limits and timing of a runtime's Syncher. Every table is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncherConfig {
    /// The store file; `None` keeps objects in memory only.
    pub path: Option<PathBuf>,
    /// Changes kept per reported object.
    pub history: usize,
    /// Most objects reported plus observed.
    pub max_objects: usize,
    /// Most observers per reported object.
    pub max_observers: usize,
    /// Most early changes buffered per observed object.
    pub reorder_buffer: usize,
    /// Capacity of each handle's change channel (a full channel tells its reader
    /// to resynchronise from the snapshot).
    pub channel: usize,
    /// Largest object data, serialised.
    pub max_data_bytes: usize,
    /// How long an observer stays idle before it checks its version with the
    /// reporter (doubling while nothing changes, up to 16 times this).
    pub check_interval: Duration,
    /// How long a gap fetch waits for the reporter before trying again.
    pub fetch_timeout: Duration,
    /// Lifetime of the objects' domain-registry entries (refreshed at half of it).
    pub registry_expires: Duration,
    /// How long changes may wait before they are written to the store.
    pub flush_interval: Duration,
    /// How long an observed object may go unheld — fetches answered 404 because
    /// no session holds it, e.g. while its reporter's runtime restarts — before
    /// the replica is dropped as deleted (a `delete` from the reporter drops it
    /// at once).
    pub gone_after: Duration,
}

impl Default for SyncherConfig {
    fn default() -> Self {
        SyncherConfig {
            path: None,
            history: DEFAULT_HISTORY,
            max_objects: DEFAULT_MAX_OBJECTS,
            max_observers: DEFAULT_MAX_OBSERVERS,
            reorder_buffer: DEFAULT_REORDER_BUFFER,
            channel: DEFAULT_CHANNEL,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            check_interval: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(5),
            registry_expires: Duration::from_secs(3600),
            flush_interval: Duration::from_millis(5),
            gone_after: Duration::from_secs(60),
        }
    }
}
