//! The actor components of a hyperty runtime.
//!
//! Every component here speaks only in typed actix messages: no sockets, no HTTP.
//! The `hyperty` crate hosts and connects them (configuration, the messaging node,
//! the WebSocket bridge).
//!
//! | module | component |
//! |---|---|
//! | [`address`] | address newtypes: `hyperty://`, `hyperty-runtime://`, `domain://`, `user://`, data objects… |
//! | [`message`] | the reTHINK message model and its one parser |
//! | [`error`] | typed errors per layer and their mapping to response codes |
//! | [`routes`] | the routing tables the bus reads on every message |
//! | [`catalogue`] | catalogue descriptors (reTHINK form and the factory form), SHA-256 code authenticity (T3), factory table |
//! | [`clock`] | the one injectable clock (system or manual) every time rule of a runtime or node reads |
//! | [`bus`] | the Message Bus actor and its handle: post/send, listeners, interceptors |
//! | [`registry`] | the Runtime Registry actor: hyperties, stubs, PEPs, sandboxes, resolve |
//! | [`sandbox`] | one sandbox (thread) per service provider, crash isolation and restarts |
//! | [`hyperty`] | the hyperty API |
//! | [`protostub`] | the protocol-stub API |
//! | [`connectivity`] | connectivity statistics of protocol stubs (lock-free counters, snapshots) |
//! | [`qos`] | the QoS User Agent at `<runtime>/qos`: statistics on request and to a broker |
//! | [`events`] | webinos events: dispatcher, delivery notifications, RPC, cache, pub/sub |
//! | [`policy`] | the policy language, the PDP actor and the PEP bus interceptor |
//! | [`syncher`] | reporter/observer data synchronisation: the SyncherManager at `<rt>/sm`, the hyperty's Syncher |
//!
//! # Supervision tree
//!
//! ```text
//! RuntimeRegistry (runtime arbiter)
//!  ├── owns StubTable ─────────── read by every Bus handle
//!  ├── holds messages for domains without a stub while its stub loader loads one
//!  └── Sandbox per provider (own arbiter/thread, stopped with the registry)
//!       └── hyperty tasks (catch_unwind; restarted per RestartPolicy)
//! MessageBus (runtime arbiter) ── owns ListenerTable + interceptor chain
//! Pdp (runtime arbiter) ── owns the policy sets; publishes snapshots read by the Pep
//! protocol stubs (runtime arbiter) ── registered in the StubTable, their
//!      StubStats held by the registry
//! QosAgent (runtime arbiter) at <runtime>/qos ── reads the registry's stub statistics
//! SyncherManager (runtime arbiter) ── owns reported/observed objects + their redb store
//! ```
//!
//! A hyperty's crash ends only its own task; its sandbox restarts it. Stopping the
//! registry stops every sandbox thread.

#![deny(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

pub mod address;
pub mod bus;
pub mod catalogue;
pub mod clock;
pub mod connectivity;
pub mod error;
pub mod events;
pub mod hyperty;
pub mod message;
pub mod policy;
pub mod protostub;
pub mod qos;
pub mod registry;
pub mod routes;
pub mod sandbox;
pub mod syncher;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

/// The names most code needs, including the actix names a hyperty or stub uses
/// (import this instead of `actix::prelude::*`, whose `Message` trait would clash
/// with [`message::Message`]).
pub mod prelude {
    pub use crate::address::{
        Address, AddressKind, DataObjectUrl, DomainUrl, HypertyUrl, RuntimeUrl, UserUrl,
    };
    pub use crate::bus::{BoundBus, Bus, BusConfig, Deliver, Direction, Interceptor, MessageBus};
    pub use crate::error::{BusError, Rejection, ToResponseCode};
    pub use crate::events::prelude::*;
    pub use crate::hyperty::{Hyperty, HypertyContext, HypertySpec};
    pub use crate::message::{Body, Message, MessageType, ResponseCode, To};
    pub use crate::policy::{
        AssertionVerifier, Decision, DecisionEffect, Effect, Pdp, PdpHandle, Pep, PolicyConfig,
        PolicyError, PolicyFile, PolicyHandle, PolicyRequest, PolicySet, VerifiedIdentity,
    };
    pub use crate::protostub::{
        Connect, Disconnect, ProtoStub, StubContext, StubError, StubStatus,
    };
    pub use crate::registry::{Route, RuntimeRegistry};
    pub use crate::sandbox::{RestartPolicy, SandboxConfig};
    pub use crate::syncher::{
        Invitation, ObjectSpec, Observer, Reporter, SubscriptionDecision, SubscriptionRequest,
        SyncEvent, Syncher, SyncherConfig,
    };
    pub use actix::{
        fut, Actor, ActorContext, ActorFutureExt, Addr, Arbiter, AsyncContext, Context, Handler,
        Recipient, ResponseActFuture, ResponseFuture, Running, StreamHandler, Supervised, System,
        WrapFuture,
    };
}
