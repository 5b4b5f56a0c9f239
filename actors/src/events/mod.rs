//! webinos events: addressed, reliable events between entities, in one runtime and
//! across runtimes (seed 004, decisions in webinos-decisions.md).
//!
//! | module | what |
//! |---|---|
//! | [`model`] | the event object, addressing, forwarding, normalisation, reserved types |
//! | [`id`] | event ids: the canonical string, escaping, SHA-256 |
//! | [`json`] | the JSON form; [`event_id_lines`] for the `hyperty event-id` tool |
//! | [`dispatcher`] | the Event Dispatcher actor: validation, routes, policy, routing; the transport between runtimes |
//! | [`delivery`] | delivery notifications and dispatch callbacks |
//! | [`buffer`] | per-entity incoming-id buffers (duplicates) |
//! | [`entities`] | entities and owners (bcc stripping, listener fan-out) |
//! | [`listeners`] | event listeners and their filters |
//! | [`references`] | "In response to" references |
//! | [`policy`] | the policy hook (PDP) |
//! | [`cache`] | the Local Event Cache (redb) and retransmission |
//! | [`rpc`] | JSON-RPC 2.0 over events |
//! | [`pubsub`] | publication/subscription nodes |
//! | [`notifications`] | user-visible notifications |
//! | [`handle`] | the application API |
//! | [`clock`] | the runtime's one clock, re-exported |
//!
//! # Supervision
//!
//! ```text
//! EventDispatcher (runtime arbiter; listens at <runtime>/events; InboundEvents interceptor on the bus)
//!  └── LocalEventCache (runtime arbiter; owns the redb database; closed by StopEvents)
//! PubSubProvider, NotificationCenter: started by applications, talk to the dispatcher by handle
//! ```
//!
//! The dispatcher never blocks on anything but its cache: route lookups ask the
//! registry asynchronously, listeners get `try_send`, RPC handlers are awaited in
//! spawned futures.

pub mod buffer;
pub mod cache;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod dispatcher;
pub mod entities;
pub mod error;
pub mod handle;
pub mod id;
pub mod json;
pub mod listeners;
pub mod model;
pub mod notifications;
pub mod policy;
pub mod pubsub;
pub mod references;
pub mod rpc;

pub use config::EventsConfig;
pub use dispatcher::{EventDispatcher, EventStats, InboundEvents};
pub use error::{CacheError, EventError, EventParseError};
pub use handle::{EventEndpoint, EventsHandle};
pub use id::{event_id, EventId, IdFields};
pub use json::{event_id_lines, RawEvent};
pub use model::{Addressing, Event, EventBuilder, Forwarding, Role};

/// The event names applications need (re-exported by the crate prelude).
pub mod prelude {
    pub use super::clock::{Clock, ManualClock, SystemClock};
    pub use super::config::EventsConfig;
    pub use super::delivery::{
        CallbackSet, DeliveryError, DeliveryErrorCode, DeliveryStatus, EventCallbacks, EventReport,
        ReportKind, ReportReceiver,
    };
    pub use super::dispatcher::{EventDispatcher, EventStats};
    pub use super::entities::EntityOptions;
    pub use super::error::{CacheError, EventError, EventParseError};
    pub use super::handle::{EventEndpoint, EventsHandle};
    pub use super::id::{event_id, EventId, IdFields};
    pub use super::json::{event_id_lines, RawEvent};
    pub use super::listeners::{
        EventInbox, EventListenerId, InboxReceiver, IncomingEvent, ListenerFilter,
    };
    pub use super::model::{Addressing, Event, EventBuilder, EventType, Forwarding, Role};
    pub use super::notifications::{
        Notification, NotificationCenter, NotificationState, ShownNotification, Urgency,
    };
    pub use super::policy::{
        EventDirection, EventPolicy, PolicyDecision as EventPolicyDecision,
        PolicyRequest as EventPolicyRequest,
    };
    pub use super::pubsub::{AccessPolicy, NodeConfig as PubSubNodeConfig, PubSubProvider};
    pub use super::rpc::{
        RpcCall, RpcCallError, RpcError, RpcId, RpcMethods, RpcRequest, RpcResponse,
    };
}
