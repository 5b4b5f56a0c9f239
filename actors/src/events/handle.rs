//! The application-level API: [`EventsHandle`] (per runtime) and [`EventEndpoint`]
//! (per application/owner), in the spirit of the spec's WebIDL.
//!
//! | WebIDL | here |
//! |---|---|
//! | `createWebinosEvent(type, addressing, payload, inResponseTo, withTimeStamp, expiryTimeStamp, addressingSensitive)` | [`EventEndpoint::builder`] (stamped with the runtime clock) or [`Event::builder`] |
//! | `event.dispatchWebinosEvent(callbacks, referenceTimeout)` | [`EventEndpoint::dispatch`] |
//! | `event.forwardWebinosEvent(forwarding, withTimeStamp, callbacks, referenceTimeout)` | [`EventEndpoint::forward`] |
//! | `addWebinosEventListener(listener, type, source, destination)` | [`EventEndpoint::add_listener`] with a [`ListenerFilter`] |
//! | `removeWebinosEventListener(id)` | [`EventEndpoint::remove_listener`] |
//! | `WebinosEventCallbacks` | [`EventCallbacks`] → [`EventReport`](crate::events::delivery::EventReport)s |
//! | `WebinosEventException` | [`EventError`] (`code()` 1 or 2) |
//! | RPC services of `config.xml` | [`EventEndpoint::serve_rpc`], [`EventEndpoint::call`], [`EventEndpoint::notify`], [`EventEndpoint::batch`] |
//!
//! ```
//! use std::sync::Arc;
//! use hyperty_actors::prelude::*;
//! use hyperty_actors::registry::RuntimeRegistry;
//! # const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
//!
//! # #[actix::main] async fn main() {
//! let url: RuntimeUrl = "hyperty-runtime://example.com/rt".parse().unwrap();
//! let stubs = Arc::new(hyperty_actors::routes::StubTable::default());
//! let bus = MessageBus::start(url, BusConfig::default(), stubs.clone());
//! let registry = RuntimeRegistry::new(bus.clone(), stubs, Default::default(), Default::default()).start();
//! let events = EventDispatcher::start(bus, registry.clone().recipient(), registry.recipient(), EventsConfig::default(), Arc::new(SystemClock)).unwrap();
//!
//! let (alice, bob): (Address, Address) = ("hyperty://example.com/alice".parse().unwrap(), "hyperty://example.com/bob".parse().unwrap());
//! let a = events.endpoint(alice.clone());
//! let b = events.endpoint(bob.clone());
//! a.register_entity(alice.clone()).await.unwrap();
//! b.register_entity(bob.clone()).await.unwrap();
//! let (inbox, mut rx) = EventInbox::start();
//! b.add_listener(ListenerFilter::any().event_type("chatMessage"), inbox).await.unwrap();
//!
//! let ev = a.builder("chatMessage", alice).to(bob).payload("Hello!").build().unwrap();
//! let (callbacks, mut reports) = EventCallbacks::channel(CallbackSet::delivery());
//! a.dispatch(ev, Some(callbacks), None).await.unwrap();
//! assert_eq!(rx.recv(TIMEOUT).await.unwrap().event.payload(), Some("Hello!"));
//! assert!(matches!(reports.recv(TIMEOUT).await.unwrap().kind, ReportKind::Delivery { duplicate: false, .. }));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;

use crate::address::Address;
use crate::events::cache::LocalEventCache;
use crate::events::clock::Clock;
use crate::events::delivery::EventCallbacks;
use crate::events::dispatcher::{
    AckEvent, AddEventListener, AddEventPolicy, CachedCount, CallRpc, DispatchEvent,
    EventDispatcher, EventStats, ForwardEvent, GetEventStats, RegisterEntity, RemoveEventListener,
    RemoveEventPolicy, ServeRpc, StopEvents, Tick, UnregisterEntity,
};
use crate::events::entities::EntityOptions;
use crate::events::error::EventError;
use crate::events::id::EventId;
use crate::events::listeners::{EventListenerId, IncomingEvent, ListenerFilter};
use crate::events::model::{Addressing, Event, EventBuilder};
use crate::events::policy::EventPolicy;
use crate::events::rpc::{RpcCall, RpcCallError, RpcId, RpcRequest, RpcResponse};

/// Handle to a runtime's event system. Cheap to clone.
#[derive(Clone)]
pub struct EventsHandle {
    dispatcher: Addr<EventDispatcher>,
    cache: Addr<LocalEventCache>,
    address: Address,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for EventsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsHandle")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl EventsHandle {
    pub(crate) fn new(
        dispatcher: Addr<EventDispatcher>,
        cache: Addr<LocalEventCache>,
        address: Address,
        clock: Arc<dyn Clock>,
    ) -> EventsHandle {
        EventsHandle {
            dispatcher,
            cache,
            address,
            clock,
        }
    }

    /// The dispatcher's address (`<runtime>/events`).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The dispatcher actor.
    pub fn dispatcher(&self) -> &Addr<EventDispatcher> {
        &self.dispatcher
    }

    /// The cache actor.
    pub fn cache(&self) -> &Addr<LocalEventCache> {
        &self.cache
    }

    /// The clock the dispatcher reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Now, by that clock (ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The API of one application (owner).
    pub fn endpoint(&self, owner: Address) -> EventEndpoint {
        EventEndpoint {
            handle: self.clone(),
            owner,
        }
    }

    /// Installs a policy consulted before routing.
    pub async fn add_policy(&self, policy: Arc<dyn EventPolicy>) -> Result<(), EventError> {
        self.dispatcher.send(AddEventPolicy(policy)).await?
    }

    /// Removes a policy by name.
    pub async fn remove_policy(&self, name: &str) -> bool {
        self.dispatcher
            .send(RemoveEventPolicy(name.to_owned()))
            .await
            .unwrap_or(false)
    }

    /// Runs the timer's work now (after advancing a manual clock, in tests).
    pub async fn tick(&self) {
        let _ = self.dispatcher.send(Tick).await;
    }

    /// The dispatcher's counters.
    pub async fn stats(&self) -> EventStats {
        self.dispatcher
            .send(GetEventStats)
            .await
            .unwrap_or_default()
    }

    /// Number of entries in the Local Event Cache: events waiting for a route, and
    /// transmitted events waiting for their primary recipients' delivery
    /// notifications.
    pub async fn cached(&self) -> usize {
        self.dispatcher.send(CachedCount).await.unwrap_or(0)
    }

    /// Closes the cache (its database file is released) and stops the dispatcher.
    pub async fn shutdown(&self) {
        let _ = self.dispatcher.send(StopEvents).await;
    }
}

/// The event API of one application: everything it does is on behalf of the
/// entities it owns.
#[derive(Debug, Clone)]
pub struct EventEndpoint {
    handle: EventsHandle,
    owner: Address,
}

impl EventEndpoint {
    /// The owner.
    pub fn owner(&self) -> &Address {
        &self.owner
    }

    /// The runtime's event handle.
    pub fn handle(&self) -> &EventsHandle {
        &self.handle
    }

    /// Registers an entity of this owner.
    pub async fn register_entity(&self, entity: Address) -> Result<(), EventError> {
        self.register_entity_with(entity, EntityOptions::default())
            .await
    }

    /// Registers an entity with options (e.g. replicated, or durable: see
    /// [`EntityOptions`]).
    pub async fn register_entity_with(
        &self,
        entity: Address,
        options: EntityOptions,
    ) -> Result<(), EventError> {
        self.handle
            .dispatcher
            .send(RegisterEntity {
                entity,
                owner: self.owner.clone(),
                options,
            })
            .await?
    }

    /// Unregisters an entity of this owner.
    pub async fn unregister_entity(&self, entity: Address) -> Result<(), EventError> {
        self.handle
            .dispatcher
            .send(UnregisterEntity {
                entity,
                owner: self.owner.clone(),
            })
            .await?
    }

    /// Starts an event stamped with the runtime clock (`withTimeStamp = true`).
    pub fn builder(&self, event_type: impl Into<String>, source: Address) -> EventBuilder {
        Event::builder(event_type, source).generated_at(self.handle.now_ms())
    }

    /// Dispatches an event whose source is an entity of this owner. Resolves when
    /// the event has gone through validation, route determination and policy
    /// enforcement and has been handed on; what happens next arrives as reports.
    pub async fn dispatch(
        &self,
        event: Event,
        callbacks: Option<EventCallbacks>,
        reference_timeout: Option<Duration>,
    ) -> Result<(), EventError> {
        self.handle
            .dispatcher
            .send(DispatchEvent {
                owner: self.owner.clone(),
                event,
                callbacks,
                reference_timeout,
            })
            .await?
    }

    /// Forwards an event on behalf of `forwarding.source` (an entity of this
    /// owner) to new destinations; returns the forwarded event (same id).
    pub async fn forward(
        &self,
        event: &Event,
        forwarding: Addressing,
        with_timestamp: bool,
        callbacks: Option<EventCallbacks>,
        reference_timeout: Option<Duration>,
    ) -> Result<Event, EventError> {
        self.handle
            .dispatcher
            .send(ForwardEvent {
                owner: self.owner.clone(),
                event: event.clone(),
                forwarding,
                with_timestamp,
                callbacks,
                reference_timeout,
            })
            .await?
    }

    /// Adds a listener on this owner's entities.
    pub async fn add_listener(
        &self,
        filter: ListenerFilter,
        recipient: Recipient<IncomingEvent>,
    ) -> Result<EventListenerId, EventError> {
        self.handle
            .dispatcher
            .send(AddEventListener {
                owner: self.owner.clone(),
                filter,
                recipient,
            })
            .await?
    }

    /// Acknowledges the event `id` delivered to the durable `entity` (see
    /// [`EntityOptions::durable`]): it will not be handed to listeners again after
    /// a restart. Resolves to false if it was not waiting (already acknowledged,
    /// or not on disk yet).
    pub async fn ack(&self, entity: Address, id: EventId) -> Result<bool, EventError> {
        self.handle
            .dispatcher
            .send(AckEvent {
                owner: self.owner.clone(),
                entity,
                id,
            })
            .await?
    }

    /// Removes a listener.
    pub async fn remove_listener(&self, id: EventListenerId) -> Result<(), EventError> {
        self.handle
            .dispatcher
            .send(RemoveEventListener {
                owner: self.owner.clone(),
                id,
            })
            .await?
    }

    /// Answers RPC requests to `entity` with `handler` (e.g.
    /// [`RpcMethods`](crate::events::rpc::RpcMethods)).
    pub async fn serve_rpc(
        &self,
        entity: Address,
        handler: Recipient<RpcCall>,
    ) -> Result<(), EventError> {
        self.handle
            .dispatcher
            .send(ServeRpc {
                owner: self.owner.clone(),
                entity,
                handler,
            })
            .await?
    }

    /// Calls `method` on `to` from `from`; resolves to the result.
    pub async fn call(
        &self,
        from: Address,
        to: Address,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, RpcCallError> {
        let id = RpcId::String(uuid::Uuid::new_v4().simple().to_string());
        let request = RpcRequest {
            method: method.to_owned(),
            params,
            id: Some(id.clone()),
        };
        let answers = self.batch_inner(from, to, vec![request], false).await?;
        answers
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| RpcCallError::BadAnswer("no response with the request's id".into()))?
            .outcome
            .map_err(RpcCallError::Rpc)
    }

    /// Sends an RPC notification (no answer).
    pub async fn notify(
        &self,
        from: Address,
        to: Address,
        method: &str,
        params: Option<Value>,
    ) -> Result<(), EventError> {
        let request = RpcRequest::notification(method, params);
        match self.batch_inner(from, to, vec![request], false).await {
            Ok(_) => Ok(()),
            Err(RpcCallError::Event(e)) => Err(e),
            Err(other) => Err(EventError::InvalidArgument(other.to_string())),
        }
    }

    /// Sends a batch; resolves to the responses to its non-notifications (match
    /// them by id), or to nothing if all are notifications.
    pub async fn batch(
        &self,
        from: Address,
        to: Address,
        requests: Vec<RpcRequest>,
    ) -> Result<Vec<RpcResponse>, RpcCallError> {
        self.batch_inner(from, to, requests, true).await
    }

    async fn batch_inner(
        &self,
        from: Address,
        to: Address,
        requests: Vec<RpcRequest>,
        batch: bool,
    ) -> Result<Vec<RpcResponse>, RpcCallError> {
        let rx = self
            .handle
            .dispatcher
            .send(CallRpc {
                owner: self.owner.clone(),
                from,
                to,
                requests,
                batch,
            })
            .await
            .map_err(EventError::from)??;
        match rx {
            None => Ok(Vec::new()),
            Some(rx) => rx
                .await
                .map_err(|_| RpcCallError::Event(EventError::Unavailable))?,
        }
    }
}
