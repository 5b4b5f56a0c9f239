//! The Event Dispatcher: one actor per runtime, listening at `<runtime>/events`.
//!
//! Every event goes through four phases (seed 004, "Event routing"):
//!
//! 1. **validation** — the event model (type syntax, non-empty `to`, recomputed
//!    id), address syntax, and the rules of the protocols the dispatcher handles
//!    itself (delivery notifications, RPC). A local sender gets an
//!    [`EventError`]; a remote one an `invalid` delivery notification if wanted.
//! 2. **route determination**, once per recipient: a registered entity is local; any
//!    other address is resolved through the runtime registry ([`Resolve`]) to a
//!    protocol stub, which must be `live` ([`ListStubs`]). Unknown local addresses
//!    are bad destinations; addresses without a usable stub are unreachable.
//! 3. **policy enforcement** — every installed [`EventPolicy`]; atomic for local
//!    sources (one denial refuses the dispatch), per recipient for remote sources
//!    (`refused`).
//! 4. **routing** — local recipients: the incoming-id buffer (`duplicate`), expiry
//!    (`expired`), the "In response to" reference (`noReference`), then one copy per
//!    unique entity with `bcc` stripped to the entities of the recipient's owner,
//!    handed to the owner's listeners (`ok`; for a durable entity only once its id
//!    and copy are on disk); remote recipients: one transmission per protocol stub
//!    with `to` = that stub's recipients and `bcc` narrowed to them (an event that
//!    wants delivery notifications also waits in the Local Event Cache until each
//!    primary recipient answered, and is sent again if one stays silent);
//!    unreachable recipients: the Local Event Cache (`onCaching`), retransmitted with
//!    backoff on later ticks.
//!
//! Delivery notifications, RPC requests and RPC responses are consumed here and never
//! reach application listeners.
//!
//! # Transport between runtimes
//!
//! An event for entities of another runtime travels as one reTHINK message per
//! protocol stub:
//!
//! ```text
//! {id, type:"event", from:"<runtime>/events", to:<entity or [entities]>, body:{value:<event JSON>}}
//! ```
//!
//! The messaging node delivers it once per destination runtime with `to` (and the
//! event's `bcc`) narrowed to that runtime's entities. On the receiving runtime the
//! [`InboundEvents`] interceptor rewrites every incoming message of type `event`
//! whose value is an event to `to = <runtime>/events`, keeping the original `to` in
//! `body.eventRecipients`; the dispatcher then delivers to those of the event's
//! destinations that are listed there and registered locally. Delivery notifications
//! and RPC responses travel back the same way.
//!
//! # Time
//!
//! Expiry, reference timeouts (`onTimeout`), RPC deadlines and cache backoff read the
//! runtime's [`Clock`], handed to [`EventDispatcher::start`]; a timer
//! ([`EventsConfig::tick_interval`]) sends [`Tick`], which tests send themselves
//! after advancing a manual clock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::{join_all, BoxFuture, FutureExt};
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::{debug, trace, warn};

use crate::address::Address;
use crate::bus::{Bus, Deliver, Direction, Interceptor};
use crate::error::Rejection;
use crate::events::cache::{
    CacheAck, CacheDone, CacheLen, CachePut, CacheRetry, CachedEvent, CloseCache, DueEvents,
    DurableOp, LocalEventCache, RestoredEntity, TakeDue, WatchCommits,
};
use crate::events::clock::{after, Clock};
use crate::events::config::EventsConfig;
use crate::events::delivery::{
    check_notification, notification, notification_about, DeliveryError, DeliveryErrorCode,
    DeliveryStatus, EventCallbacks, ReportKind,
};
use crate::events::entities::{EntityOptions, EntityTable};
use crate::events::error::{EventError, EventParseError};
use crate::events::id::EventId;
use crate::events::json::RawEvent;
use crate::events::listeners::{EventListenerId, IncomingEvent, ListenerFilter, ListenerRegistry};
use crate::events::model::{
    Addressing, Event, Forwarding, Role, DELIVERY_NOTIFICATION, RPC_REQUEST, RPC_RESPONSE,
};
use crate::events::policy::{
    decide, EventDirection, EventPolicy, PolicyDecision, PolicyRequest, MAX_EVENT_POLICIES,
};
use crate::events::references::References;
use crate::events::rpc::{
    parse_request_payload, parse_response_payload, request_payload, response_payload, RpcCall,
    RpcCallError, RpcError, RpcId, RpcRequest, RpcResponse,
};
use crate::events::EventsHandle;
use crate::message::{Message, MessageType, ResponseCode, To};
use crate::protostub::StubStatus;
use crate::registry::{ListStubs, Resolve, Route};

/// The dispatcher's component name: it listens at `<runtime>/events`.
pub const DISPATCHER_COMPONENT: &str = "events";

/// How many recent transmissions are remembered for a refusal to be matched.
const TRACKED_TRANSMISSIONS: usize = 4096;

/// Recent transmissions: message id → the event and the recipients it carried.
#[derive(Default)]
struct Transmissions {
    by_id: HashMap<crate::message::MessageId, (Arc<Event>, Vec<Address>)>,
    order: std::collections::VecDeque<crate::message::MessageId>,
}

impl Transmissions {
    fn record(&mut self, id: crate::message::MessageId, ev: Arc<Event>, group: Vec<Address>) {
        while self.order.len() >= TRACKED_TRANSMISSIONS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        self.order.push_back(id);
        self.by_id.insert(id, (ev, group));
    }

    fn take(&mut self, id: crate::message::MessageId) -> Option<(Arc<Event>, Vec<Address>)> {
        self.by_id.remove(&id)
    }
}
/// Body member where [`InboundEvents`] keeps the original `to` of an incoming event.
pub const RECIPIENTS_KEY: &str = "eventRecipients";
/// Mailbox capacity of the dispatcher.
pub const DISPATCHER_MAILBOX_CAPACITY: usize = 16_384;
/// Name of the [`InboundEvents`] interceptor.
pub const INBOUND_INTERCEPTOR: &str = "webinos-events";
/// How often, at most, the reference table and id buffers are purged of expired ids.
const PURGE_PERIOD_MS: u64 = 1_000;

/// Counters of a dispatcher (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events dispatched or forwarded by local applications.
    pub dispatched: u64,
    /// Copies handed to local entities.
    pub delivered: u64,
    /// Copies dropped as duplicates.
    pub duplicates: u64,
    /// Invalid events received.
    pub invalid: u64,
    /// Recipients found unknown.
    pub bad_destinations: u64,
    /// Events found expired at delivery or in the cache.
    pub expired: u64,
    /// Recipient combinations refused by policy.
    pub refused: u64,
    /// Deliveries refused for lack of a reference.
    pub no_reference: u64,
    /// Messages handed to protocol stubs.
    pub transmissions: u64,
    /// Event messages received from the bus.
    pub received: u64,
    /// Events put in the cache.
    pub cached: u64,
    /// Recipients reached by retransmission from the cache.
    pub retransmitted: u64,
    /// Delivery notifications generated.
    pub notifications_sent: u64,
    /// Delivery notifications that reached a local entity.
    pub notifications_received: u64,
    /// Copies lost to full listener mailboxes.
    pub listener_overflow: u64,
    /// RPC request events served.
    pub rpc_served: u64,
}

/// Who hears about a dispatch.
#[derive(Debug, Clone)]
enum Reporter {
    /// The application's callbacks.
    App(EventCallbacks),
    /// An RPC call waiting for its answer (errors fail the call).
    Rpc,
}

#[derive(Debug)]
struct SentRecord {
    event: Arc<Event>,
    reporter: Option<Reporter>,
    primaries: Vec<Address>,
    resolved: HashSet<Address>,
    responded: HashSet<Address>,
    timeout_at: Option<u64>,
    timed_out: bool,
    /// Some recipients wait in the Local Event Cache.
    cached: bool,
    retain_until: u64,
}

type RpcAnswer = Result<Vec<RpcResponse>, RpcCallError>;

#[derive(Debug)]
struct PendingCall {
    from: Address,
    to: Address,
    deadline: u64,
    tx: oneshot::Sender<RpcAnswer>,
}

/// The outcome of routing an outgoing event: known at once (every recipient is
/// local), or after the route lookups. Handlers answer the first directly instead
/// of spawning a future into the actor's context (which would make a burst of
/// queued dispatches quadratic).
enum Routed {
    Now(Result<(), EventError>),
    Later(ResponseActFuture<EventDispatcher, Result<(), EventError>>),
}

type Then<T> =
    Box<dyn FnOnce(Result<(), EventError>, &mut EventDispatcher) -> Result<T, EventError>>;

impl Routed {
    /// The handler's response: `then` maps the routing result.
    fn respond<T: 'static>(
        self,
        act: &mut EventDispatcher,
        then: Then<T>,
    ) -> ActorResponse<EventDispatcher, Result<T, EventError>> {
        match self {
            Routed::Now(r) => ActorResponse::reply(then(r, act)),
            Routed::Later(fut) => ActorResponse::r#async(fut.map(move |r, act, _| then(r, act))),
        }
    }
}

/// Where a recipient is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hop {
    /// Through this live protocol stub.
    Remote(Address),
    /// Not now: the cache.
    Unreachable,
    /// Unknown here.
    Bad,
    /// Nothing to do (a replicated entity with no other runtime in sight).
    Skip,
}

/// The event dispatcher actor. Start it with [`EventDispatcher::start`].
pub struct EventDispatcher {
    address: Address,
    bus: Bus,
    resolver: Recipient<Resolve>,
    stubs: Recipient<ListStubs>,
    cache: Addr<LocalEventCache>,
    config: EventsConfig,
    clock: Arc<dyn Clock>,
    entities: EntityTable,
    listeners: ListenerRegistry,
    references: References,
    policies: Vec<Arc<dyn EventPolicy>>,
    rpc_servers: HashMap<Address, Recipient<RpcCall>>,
    rpc_calls: HashMap<EventId, PendingCall>,
    sent: HashMap<(EventId, Address), SentRecord>,
    /// Recent transmissions by message id, so a node's 404 for one (nobody holds
    /// its recipients) becomes their `badDestination`; bounded, oldest first out.
    transmitted: Transmissions,
    /// Reference timeouts by due time: (due, event, sender).
    timeouts: BTreeSet<(u64, EventId, Address)>,
    stats: EventStats,
    last_purge: u64,
    /// Durable entities found in the database and not registered yet.
    restored: HashMap<Address, RestoredEntity>,
    durable: durable::DurableLog,
}

impl fmt::Debug for EventDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventDispatcher")
            .field("address", &self.address)
            .field("entities", &self.entities.len())
            .field("listeners", &self.listeners.len())
            .field("references", &self.references.len())
            .finish_non_exhaustive()
    }
}

mod durable;
mod inbound;
mod incoming;
mod messages;
mod outgoing;
mod reports;
mod rpc;
mod timer;

use durable::Deferred;
pub use inbound::InboundEvents;
pub use messages::{
    AckEvent, AddEventListener, AddEventPolicy, CachedCount, CallRpc, DispatchEvent, ForwardEvent,
    GetEventStats, RegisterEntity, RemoveEventListener, RemoveEventPolicy, ServeRpc, StopEvents,
    Tick, UnregisterEntity,
};

impl EventDispatcher {
    /// Starts the cache and the dispatcher on the current arbiter, listening at
    /// `<runtime>/events`, with the [`InboundEvents`] interceptor installed on `bus`.
    /// `resolver` and `stubs` are normally the runtime registry; `clock` is the
    /// runtime's one clock, which every time rule of the event system reads.
    pub fn start(
        bus: Bus,
        resolver: Recipient<Resolve>,
        stubs: Recipient<ListStubs>,
        config: EventsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<EventsHandle, EventError> {
        let address = bus.runtime_url().component(DISPATCHER_COMPONENT);
        let (cache, restored) = LocalEventCache::start(config.cache.clone())?;
        let interceptor: Arc<dyn Interceptor> = Arc::new(InboundEvents::new(address.clone()));
        let dispatcher = EventDispatcher::create({
            let address = address.clone();
            let cache = cache.clone();
            let clock = clock.clone();
            move |ctx| {
                ctx.set_mailbox_capacity(DISPATCHER_MAILBOX_CAPACITY);
                cache.do_send(WatchCommits(ctx.address().recipient()));
                // Both requests are queued in the bus mailbox now; the dispatcher
                // handles nothing before they are done.
                let listen = bus.add_listener(address.clone(), ctx.address().recipient(), None);
                let intercept = bus.add_interceptor(interceptor);
                ctx.wait(fut::wrap_future::<_, Self>(async move {
                    if let Err(e) = listen.await {
                        warn!(error = %e, "event dispatcher could not listen on the bus");
                    }
                    if let Err(e) = intercept.await {
                        warn!(error = %e, "event interceptor not installed");
                    }
                }));
                EventDispatcher {
                    entities: EntityTable::new(
                        config.max_entities,
                        config.id_buffer_capacity,
                        config.durable_id_buffer_capacity,
                    ),
                    listeners: ListenerRegistry::default(),
                    references: References::new(config.max_references),
                    address,
                    bus,
                    resolver,
                    stubs,
                    cache,
                    config,
                    clock,
                    policies: Vec::new(),
                    rpc_servers: HashMap::new(),
                    rpc_calls: HashMap::new(),
                    sent: HashMap::new(),
                    transmitted: Transmissions::default(),
                    timeouts: BTreeSet::new(),
                    stats: EventStats::default(),
                    last_purge: 0,
                    restored,
                    durable: durable::DurableLog::default(),
                }
            }
        });
        Ok(EventsHandle::new(dispatcher, cache, address, clock))
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }
}

impl Actor for EventDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(every) = self.config.tick_interval {
            ctx.run_interval(every, |act, ctx| {
                let tick = act.tick();
                ctx.spawn(tick);
            });
        }
        debug!(dispatcher = %self.address, "event dispatcher started");
    }
}

#[cfg(test)]
mod tests {
    use super::incoming::check_protocol;
    use super::*;
    use serde_json::json;

    #[test]
    fn the_interceptor_rewrites_only_incoming_webinos_events() {
        let disp: Address = "hyperty-runtime://b.org/rt/events".parse().unwrap();
        let i = InboundEvents::new(disp.clone());
        let ent: Address = "hyperty://b.org/1".parse().unwrap();
        let ev = json!({"type":"t","source":"hyperty://a.org/1","to":["hyperty://b.org/1"],"addressingSensitive":true});
        let base = Message::new(
            MessageType::Event,
            "hyperty-runtime://a.org/rt/events".parse().unwrap(),
            ent.clone(),
        )
        .with_value(ev);
        let mut m = base.clone();
        i.intercept(&mut m, Direction::Incoming).unwrap();
        assert_eq!(m.to, To::One(disp.clone()));
        assert_eq!(m.body.extra[RECIPIENTS_KEY], json!(["hyperty://b.org/1"]));
        // outgoing and local messages are untouched
        for d in [Direction::Outgoing, Direction::Local] {
            let mut m = base.clone();
            i.intercept(&mut m, d).unwrap();
            assert_eq!(m, base);
        }
        // a data-object `event` (children channel) is not a webinos event
        let mut other = Message::new(MessageType::Event, "comm://b.org/o".parse().unwrap(), ent)
            .with_value(json!({"value": 1}));
        let before = other.clone();
        i.intercept(&mut other, Direction::Incoming).unwrap();
        assert_eq!(other, before);
        // local components cannot talk to the dispatcher over the bus
        let mut forged = base.clone();
        forged.to = To::One(disp.clone());
        let err = i.intercept(&mut forged, Direction::Local).unwrap_err();
        assert_eq!(err.code, ResponseCode::Forbidden);
    }

    #[test]
    fn protocol_rules() {
        let a = |s: &str| -> Address { s.parse().unwrap() };
        let req = |payload: &str| {
            Event::builder(RPC_REQUEST, a("hyperty://a/1"))
                .to(a("hyperty://a/2"))
                .payload(payload)
                .build_any()
                .unwrap()
        };
        assert!(check_protocol(&req(r#"{"jsonrpc":"2.0","method":"m","id":1}"#)).is_ok());
        assert!(check_protocol(&req("not json")).is_err());
        assert!(check_protocol(&req("[]")).is_err());
        let resp = Event::builder(RPC_RESPONSE, a("hyperty://a/2"))
            .to(a("hyperty://a/1"))
            .payload(r#"{"jsonrpc":"2.0","result":1,"id":1}"#)
            .build_any()
            .unwrap();
        assert!(check_protocol(&resp).is_err(), "no inResponseTo");
        let plain = Event::builder("t", a("hyperty://a/1"))
            .to(a("hyperty://a/2"))
            .build()
            .unwrap();
        assert!(check_protocol(&plain).is_ok());
    }
}
