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
//!    handed to the owner's listeners (`ok`); remote recipients: one transmission per
//!    protocol stub with `to` = that stub's recipients and `bcc` narrowed to them;
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
//! configured [`Clock`]; a timer ([`EventsConfig::tick_interval`]) sends [`Tick`],
//! which tests send themselves after advancing a manual clock.

use std::collections::{HashMap, HashSet};
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
    CacheDone, CacheLen, CachePut, CacheRetry, CachedEvent, CloseCache, DueEvents, LocalEventCache,
    TakeDue,
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
use crate::message::{Message, MessageType, To};
use crate::protostub::StubStatus;
use crate::registry::{ListStubs, Resolve, Route};

/// The dispatcher's component name: it listens at `<runtime>/events`.
pub const DISPATCHER_COMPONENT: &str = "events";
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
    clock: Arc<dyn Clock>,
    config: EventsConfig,
    entities: EntityTable,
    listeners: ListenerRegistry,
    references: References,
    policies: Vec<Arc<dyn EventPolicy>>,
    rpc_servers: HashMap<Address, Recipient<RpcCall>>,
    rpc_calls: HashMap<EventId, PendingCall>,
    sent: HashMap<(EventId, Address), SentRecord>,
    stats: EventStats,
    last_purge: u64,
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

/// Rewrites incoming `event` messages to the local dispatcher (see the module docs).
#[derive(Debug, Clone)]
pub struct InboundEvents {
    dispatcher: Address,
}

impl InboundEvents {
    /// An interceptor sending incoming events to `dispatcher`.
    pub fn new(dispatcher: Address) -> InboundEvents {
        InboundEvents { dispatcher }
    }
}

fn looks_like_event(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|o| {
        o.get("type").is_some_and(Value::is_string)
            && o.get("source").is_some_and(Value::is_string)
            && o.contains_key("to")
    })
}

impl Interceptor for InboundEvents {
    fn name(&self) -> &str {
        INBOUND_INTERCEPTOR
    }

    fn intercept(&self, msg: &mut Message, direction: Direction) -> Result<(), Rejection> {
        if direction != Direction::Incoming
            || msg.kind != MessageType::Event
            || !looks_like_event(msg.body.value.as_ref())
        {
            return Ok(());
        }
        let original: Vec<Value> = msg
            .to
            .iter()
            .map(|a| Value::String(a.as_str().to_owned()))
            .collect();
        msg.body
            .extra
            .insert(RECIPIENTS_KEY.to_owned(), Value::Array(original));
        msg.to = To::One(self.dispatcher.clone());
        Ok(())
    }
}

impl EventDispatcher {
    /// Starts the cache and the dispatcher on the current arbiter, listening at
    /// `<runtime>/events`, with the [`InboundEvents`] interceptor installed on `bus`.
    /// `resolver` and `stubs` are normally the runtime registry.
    pub fn start(
        bus: Bus,
        resolver: Recipient<Resolve>,
        stubs: Recipient<ListStubs>,
        config: EventsConfig,
    ) -> Result<EventsHandle, EventError> {
        let address = bus.runtime_url().component(DISPATCHER_COMPONENT);
        let cache = LocalEventCache::start(config.cache.clone())?;
        let clock = config.clock.clone();
        let interceptor: Arc<dyn Interceptor> = Arc::new(InboundEvents::new(address.clone()));
        let dispatcher = EventDispatcher::create({
            let address = address.clone();
            let cache = cache.clone();
            move |ctx| {
                ctx.set_mailbox_capacity(DISPATCHER_MAILBOX_CAPACITY);
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
                    entities: EntityTable::new(config.max_entities, config.id_buffer_capacity),
                    listeners: ListenerRegistry::default(),
                    references: References::new(config.max_references),
                    address,
                    bus,
                    resolver,
                    stubs,
                    cache,
                    clock: config.clock.clone(),
                    config,
                    policies: Vec::new(),
                    rpc_servers: HashMap::new(),
                    rpc_calls: HashMap::new(),
                    sent: HashMap::new(),
                    stats: EventStats::default(),
                    last_purge: 0,
                }
            }
        });
        Ok(EventsHandle::new(dispatcher, cache, address, clock))
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    // ---- reports ------------------------------------------------------------

    fn report(&mut self, key: &(EventId, Address), kind: ReportKind) {
        let Some(rec) = self.sent.get_mut(key) else {
            return;
        };
        match (&rec.reporter, &kind) {
            (Some(Reporter::App(cb)), _) => cb.report(&rec.event, kind),
            (Some(Reporter::Rpc), ReportKind::Error { error, .. }) => {
                if let Some(call) = self.rpc_calls.remove(&key.0) {
                    let _ = call.tx.send(Err(RpcCallError::Delivery(error.clone())));
                }
            }
            _ => {}
        }
    }

    /// A delivery result for `recipients` of the event `id` sent by local `sender`.
    fn on_result(
        &mut self,
        id: EventId,
        sender: &Address,
        recipients: &[Address],
        status: DeliveryStatus,
        detail: &str,
    ) {
        let key = (id, sender.clone());
        for r in recipients {
            let fresh = match self.sent.get_mut(&key) {
                Some(rec) => rec.resolved.insert(r.clone()),
                None => return,
            };
            if !fresh {
                continue; // at most one onDelivery/onError per recipient (decision 17)
            }
            let kind = match status.error_code() {
                None => ReportKind::Delivery {
                    recipient: r.clone(),
                    duplicate: status == DeliveryStatus::Duplicate,
                },
                Some(code) => ReportKind::Error {
                    recipient: r.clone(),
                    error: DeliveryError::new(code, format!("{status}{detail}")),
                },
            };
            self.report(&key, kind);
        }
    }

    fn report_error(
        &mut self,
        ev: &Event,
        recipients: &[Address],
        code: DeliveryErrorCode,
        message: &str,
    ) {
        let key = (ev.id(), ev.sender().clone());
        for r in recipients {
            self.report(
                &key,
                ReportKind::Error {
                    recipient: r.clone(),
                    error: DeliveryError::new(code, message),
                },
            );
        }
    }

    // ---- delivery notifications --------------------------------------------

    /// Applies the delivery-notification rules to one recipient's outcome.
    fn notify(
        &mut self,
        ev: &Arc<Event>,
        recipient: &Address,
        status: DeliveryStatus,
        ctx: &mut Context<Self>,
    ) {
        if !ev.delivery_notification_wanted() || !ev.is_primary(recipient.as_str()) {
            return;
        }
        let sender = ev.sender().clone();
        if self.entities.contains(sender.as_str()) {
            self.on_result(
                ev.id(),
                &sender,
                std::slice::from_ref(recipient),
                status,
                "",
            );
            return;
        }
        match notification(recipient.clone(), ev, status, Vec::new()) {
            Ok(dn) => {
                self.stats.notifications_sent += 1;
                self.originate(dn, ctx);
            }
            Err(e) => warn!(error = %e, "cannot build a delivery notification"),
        }
    }

    /// `badDestination` for the unknown recipients among `unknown` that are primary.
    fn notify_bad(&mut self, ev: &Arc<Event>, unknown: Vec<Address>, ctx: &mut Context<Self>) {
        self.stats.bad_destinations += unknown.len() as u64;
        if !ev.delivery_notification_wanted() {
            return;
        }
        let primaries: Vec<Address> = unknown
            .into_iter()
            .filter(|a| ev.is_primary(a.as_str()))
            .collect();
        if primaries.is_empty() {
            return;
        }
        let sender = ev.sender().clone();
        if self.entities.contains(sender.as_str()) {
            self.on_result(
                ev.id(),
                &sender,
                &primaries,
                DeliveryStatus::BadDestination,
                "",
            );
            return;
        }
        match notification(
            self.address.clone(),
            ev,
            DeliveryStatus::BadDestination,
            primaries,
        ) {
            Ok(dn) => {
                self.stats.notifications_sent += 1;
                self.originate(dn, ctx);
            }
            Err(e) => warn!(error = %e, "cannot build a delivery notification"),
        }
    }

    fn consume_notification(&mut self, dn: &Event, target: &Address) {
        let (Ok(status), Some(about)) = (check_notification(dn), dn.in_response_to()) else {
            return;
        };
        let recipients: Vec<Address> =
            if status == DeliveryStatus::BadDestination && !dn.addressing().cc().is_empty() {
                dn.addressing().cc().to_vec()
            } else {
                vec![dn.source().clone()]
            };
        self.on_result(about, target, &recipients, status, "");
    }

    // ---- outgoing -----------------------------------------------------------

    /// An event the dispatcher itself sends (notifications, RPC responses).
    fn originate(&mut self, ev: Event, ctx: &mut Context<Self>) {
        let fut = self.outgoing(Arc::new(ev), false, None, None, ctx);
        ctx.spawn(fut.map(|r, _, _| {
            if let Err(e) = r {
                debug!(error = %e, "internal event not sent");
            }
        }));
    }

    fn outgoing(
        &mut self,
        ev: Arc<Event>,
        app: bool,
        reporter: Option<Reporter>,
        reference_timeout: Option<Duration>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<(), EventError>> {
        let span = tracing::debug_span!("events.outgoing", id = %ev.id(), kind = %ev.event_type(), sender = %ev.sender());
        let _enter = span.enter();
        let now = self.now();
        let sender = ev.sender().clone();
        let key = (ev.id(), sender.clone());
        if reporter.is_some() || reference_timeout.is_some() {
            if self.sent.len() >= self.config.max_pending_reports && !self.sent.contains_key(&key) {
                self.purge_sent(now);
            }
            if self.sent.len() >= self.config.max_pending_reports && !self.sent.contains_key(&key) {
                return Box::pin(fut::ready(Err(EventError::Full("pending reports"))));
            }
            self.sent.insert(
                key.clone(),
                SentRecord {
                    event: ev.clone(),
                    reporter,
                    primaries: ev.destinations().to().to_vec(),
                    resolved: HashSet::new(),
                    responded: HashSet::new(),
                    timeout_at: reference_timeout.map(|t| after(now, t)),
                    timed_out: false,
                    retain_until: after(now, self.config.report_retention),
                },
            );
        }
        self.references.hold(&ev, &sender);
        let targets: Vec<(Address, Role)> = ev
            .destinations()
            .recipients()
            .map(|(a, r)| (a.clone(), r))
            .collect();
        if ev.is_expired(now) {
            // decision 12: nothing is transmitted; every recipient gets EXPIRED
            self.stats.expired += 1;
            let all: Vec<Address> = targets.into_iter().map(|(a, _)| a).collect();
            self.report_error(
                &ev,
                &all,
                DeliveryErrorCode::Expired,
                "expired before dispatch",
            );
            return Box::pin(fut::ready(Ok(())));
        }
        let mut local = Vec::new();
        let mut need = Vec::new();
        for (a, role) in targets {
            match self.entities.get(a.as_str()) {
                Some(rec) => {
                    if rec.replicated {
                        need.push((a.clone(), role));
                    }
                    local.push((a, role));
                }
                None => need.push((a, role)),
            }
        }
        if need.is_empty() {
            let r = self.route_outgoing(&ev, app, local, Vec::new(), ctx);
            if r.is_err() {
                self.sent.remove(&key);
            }
            return Box::pin(fut::ready(r));
        }
        let lookup = self.lookup(need.iter().map(|(a, _)| a.clone()).collect());
        Box::pin(lookup.into_actor(self).map(move |hops, act, ctx| {
            let remote = need
                .into_iter()
                .zip(hops)
                .map(|((a, role), hop)| {
                    let replicated = act.entities.get(a.as_str()).is_some_and(|r| r.replicated);
                    (a, role, act.classify(&hop, replicated))
                })
                .collect();
            let r = act.route_outgoing(&ev, app, local, remote, ctx);
            if r.is_err() {
                act.sent.remove(&key);
            }
            r
        }))
    }

    /// Resolves addresses to routes, plus the set of live stubs.
    fn lookup(&self, addrs: Vec<Address>) -> BoxFuture<'static, Vec<(Route, bool)>> {
        let routes: Vec<_> = addrs
            .into_iter()
            .map(|a| self.resolver.send(Resolve(a)))
            .collect();
        let stubs = self.stubs.send(ListStubs);
        async move {
            let routes = join_all(routes).await;
            let live: HashSet<Address> = stubs
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.status == StubStatus::Live)
                .map(|s| s.url)
                .collect();
            routes
                .into_iter()
                .map(|r| {
                    let route = r.unwrap_or(Route::Unknown);
                    let is_live = matches!(&route, Route::Stub(u) if live.contains(u));
                    (route, is_live)
                })
                .collect()
        }
        .boxed()
    }

    fn classify(&self, hop: &(Route, bool), replicated: bool) -> (Hop, Option<Address>) {
        match hop {
            (Route::Stub(url), true) => (Hop::Remote(url.clone()), Some(url.clone())),
            (Route::Stub(url), false) => (Hop::Unreachable, Some(url.clone())),
            _ if replicated => (Hop::Skip, None),
            (Route::Local, _) => (Hop::Bad, None),
            (Route::Unknown, _) => (Hop::Unreachable, None),
        }
    }

    /// Phases 3 and 4 for an event from a local sender.
    fn route_outgoing(
        &mut self,
        ev: &Arc<Event>,
        app: bool,
        local: Vec<(Address, Role)>,
        remote: Vec<(Address, Role, (Hop, Option<Address>))>,
        ctx: &mut Context<Self>,
    ) -> Result<(), EventError> {
        let sender = ev.sender().clone();
        let runtime = self.bus.runtime_url().as_str().to_owned();
        // unknown addresses under this runtime or under one of its entities are bad
        // destinations, not cached
        let remote: Vec<_> = remote
            .into_iter()
            .map(|(a, role, (hop, via))| {
                let ours = a.is_under(&runtime) || self.entities.under_local_entity(&a);
                let hop = if hop == Hop::Unreachable && via.is_none() && ours {
                    Hop::Bad
                } else {
                    hop
                };
                (a, role, hop, via)
            })
            .collect();
        // policy enforcement: all first, atomically for applications
        let mut denied: HashSet<Address> = HashSet::new();
        if !self.policies.is_empty() {
            let checks = local
                .iter()
                .map(|(a, _)| (a, EventDirection::Local, None))
                .chain(
                    remote
                        .iter()
                        .filter(|r| matches!(r.2, Hop::Remote(_) | Hop::Unreachable))
                        .map(|(a, _, _, via)| (a, EventDirection::Outgoing, via.as_ref())),
                );
            for (recipient, direction, via) in checks {
                let req = PolicyRequest {
                    event: ev,
                    sender: &sender,
                    recipient,
                    direction,
                    via,
                };
                if let PolicyDecision::Deny(why) = decide(&self.policies, &req) {
                    if app {
                        self.stats.refused += 1;
                        return Err(EventError::PermissionDenied(format!(
                            "event to {recipient} refused by policy: {why}"
                        )));
                    }
                    denied.insert(recipient.clone());
                }
            }
        }
        if app {
            self.stats.dispatched += 1;
        }
        let key = (ev.id(), sender.clone());
        // local recipients
        for (t, role) in local {
            if denied.contains(&t) {
                continue;
            }
            self.report(
                &key,
                ReportKind::Sending {
                    recipient: t.clone(),
                },
            );
            if let Some(status) = self.deliver_local(ev, &t, role, ctx) {
                self.notify(ev, &t, status, ctx);
            }
        }
        // remote recipients
        let mut groups: Vec<(Address, Vec<Address>)> = Vec::new();
        let mut unreachable = Vec::new();
        let mut bad = Vec::new();
        for (a, _, hop, _) in remote {
            if denied.contains(&a) {
                continue;
            }
            match hop {
                Hop::Remote(stub) => match groups.iter_mut().find(|(s, _)| *s == stub) {
                    Some((_, g)) => g.push(a),
                    None => groups.push((stub, vec![a])),
                },
                Hop::Unreachable => unreachable.push(a),
                Hop::Bad => bad.push(a),
                Hop::Skip => {}
            }
        }
        if !bad.is_empty() {
            self.notify_bad(ev, bad, ctx);
        }
        for (stub, group) in groups {
            for r in &group {
                self.report(
                    &key,
                    ReportKind::Sending {
                        recipient: r.clone(),
                    },
                );
            }
            self.transmit(ev, &stub, group);
        }
        if !unreachable.is_empty() {
            self.cache_put(ev, unreachable, ctx);
        }
        Ok(())
    }

    /// One message through the bus to the stub serving `group`, with `bcc` narrowed
    /// to the group.
    fn transmit(&mut self, ev: &Arc<Event>, stub: &Address, group: Vec<Address>) {
        let in_group = |list: &[Address]| -> Vec<Address> {
            list.iter().filter(|a| group.contains(a)).cloned().collect()
        };
        let original = in_group(ev.addressing().bcc());
        let forwarding = ev.forwarding().map(|f| in_group(f.addressing().bcc()));
        let copy = ev.with_bcc(original, forwarding);
        let Some(to) = (match group.len() {
            1 => group.into_iter().next().map(To::One),
            _ => To::many(group),
        }) else {
            return;
        };
        let msg = Message::new(MessageType::Event, self.address.clone(), to)
            .with_id(self.bus.next_id())
            .with_value(copy.to_value());
        trace!(%stub, id = %ev.id(), "event transmitted");
        self.stats.transmissions += 1;
        self.bus.send(msg);
    }

    fn cache_put(&mut self, ev: &Arc<Event>, recipients: Vec<Address>, ctx: &mut Context<Self>) {
        let req = self.cache.send(CachePut {
            event: (**ev).clone(),
            sender: ev.sender().clone(),
            recipients: recipients.clone(),
            now_ms: self.now(),
        });
        let ev = ev.clone();
        ctx.spawn(req.into_actor(self).map(move |r, act, _| {
            let key = (ev.id(), ev.sender().clone());
            match r {
                Ok(Ok(_)) => {
                    act.stats.cached += 1;
                    act.report(&key, ReportKind::Caching);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "event not cached");
                    act.report_error(&ev, &recipients, DeliveryErrorCode::Unknown, &e.to_string());
                }
                Err(_) => {
                    act.report_error(
                        &ev,
                        &recipients,
                        DeliveryErrorCode::Unknown,
                        "event cache unavailable",
                    );
                }
            }
        }));
    }

    // ---- local delivery -------------------------------------------------------

    /// Device-level routing to one local entity. `None`: no delivery notification
    /// applies (the event was consumed by the dispatcher or silently dropped).
    fn deliver_local(
        &mut self,
        ev: &Arc<Event>,
        target: &Address,
        role: Role,
        ctx: &mut Context<Self>,
    ) -> Option<DeliveryStatus> {
        let now = self.now();
        let id = ev.id();
        let rec = match self.entities.get_mut(target.as_str()) {
            Some(r) => r,
            None => {
                self.stats.bad_destinations += 1;
                return Some(DeliveryStatus::BadDestination);
            }
        };
        if rec.buffer.is_duplicate(&id) {
            self.stats.duplicates += 1;
            trace!(%target, %id, "duplicate dropped");
            return Some(DeliveryStatus::Duplicate);
        }
        let kind = ev.event_type().as_str();
        if kind == DELIVERY_NOTIFICATION {
            self.stats.notifications_received += 1;
        }
        if ev.is_expired(now) {
            self.stats.expired += 1;
            return Some(DeliveryStatus::Expired);
        }
        let referenced = match ev.in_response_to() {
            None => None,
            Some(irt) => match self.references.get_for(&irt, target.as_str()) {
                Some(e) => Some(e),
                None => {
                    self.stats.no_reference += 1;
                    if kind == DELIVERY_NOTIFICATION || kind == RPC_RESPONSE {
                        debug!(%target, "response to an unknown event dropped");
                        return None;
                    }
                    return Some(DeliveryStatus::NoReference);
                }
            },
        };
        rec.buffer.insert(id, ev.expiry_timestamp(), now);
        let owner = rec.owner.clone();
        if let Some(irt) = ev.in_response_to() {
            if kind != DELIVERY_NOTIFICATION {
                self.record_response(irt, target, ev.sender());
            }
        }
        match kind {
            DELIVERY_NOTIFICATION => {
                self.consume_notification(ev, target);
                None
            }
            RPC_REQUEST => {
                if role == Role::To {
                    self.serve_rpc(ev.clone(), target.clone(), ctx);
                }
                Some(DeliveryStatus::Ok)
            }
            RPC_RESPONSE => {
                self.complete_rpc(ev, target);
                Some(DeliveryStatus::Ok)
            }
            _ => {
                let copy = self.strip_bcc(ev, &owner);
                self.references.hold(ev, target);
                let fired = self.listeners.fire(&owner, target, &copy, &referenced);
                self.stats.delivered += 1;
                self.stats.listener_overflow += fired.overflowed as u64;
                trace!(%target, %id, listeners = fired.delivered, "event delivered");
                Some(DeliveryStatus::Ok)
            }
        }
    }

    /// A response from `responder` to the event `about` sent by local `sender`:
    /// that primary recipient will not time out.
    fn record_response(&mut self, about: EventId, sender: &Address, responder: &Address) {
        if let Some(rec) = self.sent.get_mut(&(about, sender.clone())) {
            if rec.primaries.contains(responder) {
                rec.responded.insert(responder.clone());
            }
        }
    }

    /// The recipient's copy: `bcc` keeps only entities of the recipient's owner (for
    /// a forwarded event, of the forwarding `bcc` and of the original one).
    fn strip_bcc(&self, ev: &Arc<Event>, owner: &Address) -> Arc<Event> {
        let keep = |list: &[Address]| -> Vec<Address> {
            list.iter()
                .filter(|a| self.entities.owns(owner, a.as_str()))
                .cloned()
                .collect()
        };
        let original = keep(ev.addressing().bcc());
        let forwarding = ev.forwarding().map(|f| keep(f.addressing().bcc()));
        let unchanged = original.len() == ev.addressing().bcc().len()
            && match (&forwarding, ev.forwarding()) {
                (Some(k), Some(f)) => k.len() == f.addressing().bcc().len(),
                _ => true,
            };
        if unchanged {
            ev.clone()
        } else {
            Arc::new(ev.with_bcc(original, forwarding))
        }
    }

    // ---- incoming -------------------------------------------------------------

    fn incoming(&mut self, msg: Message, ctx: &mut Context<Self>) {
        self.stats.received += 1;
        let span = tracing::debug_span!("events.incoming", msg = msg.id, from = %msg.from);
        let _enter = span.enter();
        let stash: Option<HashSet<String>> = msg
            .body
            .extra
            .get(RECIPIENTS_KEY)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            });
        let Some(value) = msg.body.value else {
            self.stats.invalid += 1;
            debug!("event message without a value");
            return;
        };
        let raw = match RawEvent::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                self.stats.invalid += 1;
                debug!(error = %e, "unreadable event dropped");
                return;
            }
        };
        let ev = match Event::from_raw(&raw).and_then(|e| check_protocol(&e).map(|()| e)) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                self.invalid_received(&raw, stash.as_ref(), &e, ctx);
                return;
            }
        };
        if self.entities.is_exclusive(ev.sender().as_str()) {
            self.stats.invalid += 1;
            warn!(sender = %ev.sender(), "event claiming a local sender arrived from elsewhere: dropped");
            return;
        }
        let targets: Vec<(Address, Role)> = ev
            .destinations()
            .recipients()
            .filter(|(a, _)| stash.as_ref().is_none_or(|s| s.contains(a.as_str())))
            .map(|(a, r)| (a.clone(), r))
            .collect();
        let sender = ev.sender().clone();
        let mut unknown = Vec::new();
        for (t, role) in targets {
            if !self.entities.contains(t.as_str()) {
                unknown.push(t);
                continue;
            }
            let req = PolicyRequest {
                event: &ev,
                sender: &sender,
                recipient: &t,
                direction: EventDirection::Incoming,
                via: None,
            };
            if let PolicyDecision::Deny(_) = decide(&self.policies, &req) {
                self.stats.refused += 1;
                self.notify(&ev, &t, DeliveryStatus::Refused, ctx);
                continue;
            }
            if let Some(status) = self.deliver_local(&ev, &t, role, ctx) {
                self.notify(&ev, &t, status, ctx);
            }
        }
        if !unknown.is_empty() {
            self.notify_bad(&ev, unknown, ctx);
        }
    }

    /// An invalid event from elsewhere: `invalid` to the sender for each local
    /// primary recipient, if wanted and the sender can be named.
    fn invalid_received(
        &mut self,
        raw: &RawEvent,
        stash: Option<&HashSet<String>>,
        error: &EventParseError,
        ctx: &mut Context<Self>,
    ) {
        self.stats.invalid += 1;
        debug!(error = %error, "invalid event received");
        if !raw.delivery_notification_wanted || raw.event_type == DELIVERY_NOTIFICATION {
            return;
        }
        let (sender, primaries) = match &raw.forwarding {
            Some(f) => (&f.source, &f.to),
            None => (&raw.source, &raw.to),
        };
        let Ok(sender) = Address::parse(sender) else {
            return;
        };
        let about = raw.reference_id();
        let mut seen = HashSet::new();
        for p in primaries {
            if !seen.insert(p.as_str())
                || !self.entities.contains(p)
                || stash.is_some_and(|s| !s.contains(p))
            {
                continue;
            }
            let Ok(reporter) = Address::parse(p) else {
                continue;
            };
            match notification_about(
                reporter,
                sender.clone(),
                about,
                DeliveryStatus::Invalid,
                Vec::new(),
            ) {
                Ok(dn) => {
                    self.stats.notifications_sent += 1;
                    self.originate(dn, ctx);
                }
                Err(e) => warn!(error = %e, "cannot build a delivery notification"),
            }
        }
    }

    // ---- RPC ------------------------------------------------------------------

    fn serve_rpc(&mut self, ev: Arc<Event>, callee: Address, ctx: &mut Context<Self>) {
        let Ok(batch) = parse_request_payload(ev.payload().unwrap_or_default()) else {
            return;
        };
        self.stats.rpc_served += 1;
        let handler = self.rpc_servers.get(&callee).cloned();
        let caller = ev.source().clone();
        let caller_is_local = self.entities.contains(caller.as_str());
        let calls: Vec<BoxFuture<'static, Option<RpcResponse>>> = batch
            .items
            .into_iter()
            .map(|item| match item {
                Err(invalid) => futures_util::future::ready(Some(invalid)).boxed(),
                Ok(req) => {
                    let notification = req.is_notification();
                    let id = req.id.clone().unwrap_or(RpcId::Null);
                    match &handler {
                        None => {
                            let r = (!notification).then(|| {
                                RpcResponse::error(id, RpcError::method_not_found(&req.method))
                            });
                            futures_util::future::ready(r).boxed()
                        }
                        Some(h) => {
                            let call = h.send(RpcCall {
                                method: req.method,
                                params: req.params,
                                caller: caller.clone(),
                                callee: callee.clone(),
                                caller_is_local,
                                notification,
                            });
                            async move {
                                let outcome = call.await.unwrap_or_else(|_| {
                                    Err(RpcError::internal("the method handler is gone"))
                                });
                                (!notification).then_some(RpcResponse { id, outcome })
                            }
                            .boxed()
                        }
                    }
                }
            })
            .collect();
        let is_batch = batch.is_batch;
        ctx.spawn(
            join_all(calls)
                .into_actor(self)
                .map(move |answers, act, ctx| {
                    let answers: Vec<RpcResponse> = answers.into_iter().flatten().collect();
                    if answers.is_empty() {
                        return; // notifications only: no response
                    }
                    let response = Event::builder(RPC_RESPONSE, callee.clone())
                        .to(caller)
                        .in_response_to_id(ev.id())
                        .payload(response_payload(is_batch, &answers))
                        .generated_at(act.now())
                        .addressing_sensitive(true)
                        .build_any();
                    match response {
                        Ok(r) => act.originate(r, ctx),
                        Err(e) => warn!(error = %e, "cannot build an RPC response"),
                    }
                }),
        );
    }

    fn complete_rpc(&mut self, ev: &Event, target: &Address) {
        let Some(about) = ev.in_response_to() else {
            return;
        };
        let matches = self
            .rpc_calls
            .get(&about)
            .is_some_and(|c| &c.from == target && &c.to == ev.source());
        if !matches {
            debug!(%target, "RPC response to no pending call dropped");
            return;
        }
        if let Some(call) = self.rpc_calls.remove(&about) {
            let answer = parse_response_payload(ev.payload().unwrap_or_default())
                .map_err(|e| RpcCallError::BadAnswer(e.to_string()));
            let _ = call.tx.send(answer);
        }
    }

    // ---- timer -----------------------------------------------------------------

    fn purge_sent(&mut self, now: u64) {
        self.sent.retain(|_, r| {
            let timeout_pending = r.timeout_at.is_some() && !r.timed_out;
            now <= r.retain_until || timeout_pending
        });
    }

    fn tick(&mut self) -> ResponseActFuture<Self, ()> {
        let now = self.now();
        let _span = tracing::trace_span!("events.tick", now).entered();
        // reference timeouts (decision 16: primary recipients only)
        let mut timeouts = Vec::new();
        for (key, rec) in self.sent.iter_mut() {
            if let Some(t) = rec.timeout_at {
                if now >= t && !rec.timed_out {
                    rec.timed_out = true;
                    for p in &rec.primaries {
                        if !rec.responded.contains(p) {
                            timeouts.push((key.clone(), p.clone()));
                        }
                    }
                }
            }
        }
        for (key, recipient) in timeouts {
            self.report(&key, ReportKind::Timeout { recipient });
        }
        self.purge_sent(now);
        // RPC deadlines
        let late: Vec<EventId> = self
            .rpc_calls
            .iter()
            .filter(|(_, c)| now > c.deadline)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(c) = self.rpc_calls.remove(&k) {
                let _ = c.tx.send(Err(RpcCallError::Timeout));
            }
        }
        if now.saturating_sub(self.last_purge) >= PURGE_PERIOD_MS {
            self.last_purge = now;
            self.references.purge_expired(now);
            self.entities.purge_buffers(now);
        }
        let take = self.cache.send(TakeDue { now_ms: now });
        Box::pin(take.into_actor(self).then(move |due, act, ctx| match due {
            Ok(due) => act.handle_due(due, ctx),
            Err(_) => Box::pin(fut::ready(())),
        }))
    }

    fn handle_due(
        &mut self,
        due: DueEvents,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, ()> {
        let _ = ctx;
        for e in &due.expired {
            self.stats.expired += 1;
            self.report_error(
                &e.event,
                &e.recipients,
                DeliveryErrorCode::Expired,
                "expired in the event cache",
            );
        }
        for e in &due.exhausted {
            self.report_error(
                &e.event,
                &e.recipients,
                DeliveryErrorCode::BadDestination,
                "no route after the last retransmission attempt",
            );
        }
        if due.retry.is_empty() {
            return Box::pin(fut::ready(()));
        }
        let all: Vec<Address> = due
            .retry
            .iter()
            .flat_map(|e| e.recipients.iter().cloned())
            .collect();
        let lookup = self.lookup(all);
        let entries = due.retry;
        Box::pin(lookup.into_actor(self).map(move |hops, act, ctx| {
            let mut hops = hops.into_iter();
            for entry in entries {
                let entry_hops: Vec<(Route, bool)> =
                    hops.by_ref().take(entry.recipients.len()).collect();
                act.retransmit(entry, entry_hops, ctx);
            }
        }))
    }

    fn retransmit(
        &mut self,
        entry: CachedEvent,
        hops: Vec<(Route, bool)>,
        ctx: &mut Context<Self>,
    ) {
        let now = self.now();
        let ev = Arc::new(entry.event);
        let key = (ev.id(), ev.sender().clone());
        let runtime = self.bus.runtime_url().as_str().to_owned();
        let mut groups: Vec<(Address, Vec<Address>)> = Vec::new();
        let mut keep = Vec::new();
        let mut bad = Vec::new();
        for (a, hop) in entry.recipients.into_iter().zip(hops) {
            let replicated = self.entities.get(a.as_str()).is_some_and(|r| r.replicated);
            match self.classify(&hop, replicated).0 {
                Hop::Remote(stub) => match groups.iter_mut().find(|(s, _)| *s == stub) {
                    Some((_, g)) => g.push(a),
                    None => groups.push((stub, vec![a])),
                },
                Hop::Unreachable
                    if !replicated
                        && (a.is_under(&runtime) || self.entities.under_local_entity(&a)) =>
                {
                    bad.push(a)
                }
                Hop::Unreachable => keep.push(a),
                Hop::Bad => bad.push(a),
                Hop::Skip => {}
            }
        }
        if let Some(rec) = self.sent.get_mut(&key) {
            rec.retain_until = after(now, self.config.report_retention);
        }
        for (stub, group) in groups {
            for r in &group {
                self.report(
                    &key,
                    ReportKind::Sending {
                        recipient: r.clone(),
                    },
                );
            }
            self.stats.retransmitted += group.len() as u64;
            self.transmit(&ev, &stub, group);
        }
        if !bad.is_empty() {
            self.notify_bad(&ev, bad, ctx);
        }
        if keep.is_empty() {
            self.cache.do_send(CacheDone { key: entry.key });
        } else {
            self.cache.do_send(CacheRetry {
                key: entry.key,
                recipients: keep,
                now_ms: now,
            });
        }
    }
}

/// Rules of the protocols the dispatcher handles itself.
fn check_protocol(ev: &Event) -> Result<(), EventParseError> {
    let rpc = |why: &str| EventParseError::Protocol(format!("invalid RPC event: {why}"));
    match ev.event_type().as_str() {
        DELIVERY_NOTIFICATION => check_notification(ev).map(|_| ()),
        RPC_REQUEST => {
            if ev.in_response_to().is_some() {
                return Err(rpc("a request cannot respond to an event"));
            }
            if !ev.addressing_sensitive() || ev.forwarding().is_some() {
                return Err(rpc("must be addressing sensitive and not forwarded"));
            }
            parse_request_payload(ev.payload().unwrap_or_default()).map(|_| ())
        }
        RPC_RESPONSE => {
            if ev.addressing().to().len() != 1 || ev.in_response_to().is_none() {
                return Err(rpc(
                    "a response goes to the request's source and refers to it",
                ));
            }
            if !ev.addressing_sensitive() || ev.forwarding().is_some() {
                return Err(rpc("must be addressing sensitive and not forwarded"));
            }
            parse_response_payload(ev.payload().unwrap_or_default()).map(|_| ())
        }
        _ => Ok(()),
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

// ---- messages -------------------------------------------------------------------

/// Registers an entity owned by `owner`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct RegisterEntity {
    /// The entity.
    pub entity: Address,
    /// Its owner.
    pub owner: Address,
    /// Options.
    pub options: EntityOptions,
}

/// Unregisters an entity (and its RPC handler).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct UnregisterEntity {
    /// The entity.
    pub entity: Address,
    /// Its owner.
    pub owner: Address,
}

/// Adds a listener for `owner`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<EventListenerId, EventError>")]
pub struct AddEventListener {
    /// The owner.
    pub owner: Address,
    /// The filter.
    pub filter: ListenerFilter,
    /// Where matching events go.
    pub recipient: Recipient<IncomingEvent>,
}

/// Removes a listener.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct RemoveEventListener {
    /// The owner.
    pub owner: Address,
    /// The registration.
    pub id: EventListenerId,
}

/// Dispatches an event from an entity of `owner` (the spec's `dispatchWebinosEvent`).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct DispatchEvent {
    /// The owner of the source.
    pub owner: Address,
    /// The event.
    pub event: Event,
    /// Callbacks (Delivery notification wanted follows from them).
    pub callbacks: Option<EventCallbacks>,
    /// `onTimeout` after this long without a response from a primary recipient.
    pub reference_timeout: Option<Duration>,
}

/// Forwards an event on behalf of an entity of `owner` (`forwardWebinosEvent`).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Event, EventError>")]
pub struct ForwardEvent {
    /// The owner of the forwarder.
    pub owner: Address,
    /// The event.
    pub event: Event,
    /// The forwarder (source) and the new destinations.
    pub forwarding: Addressing,
    /// Stamp the forwarding with the current time.
    pub with_timestamp: bool,
    /// Callbacks.
    pub callbacks: Option<EventCallbacks>,
    /// Reference timeout.
    pub reference_timeout: Option<Duration>,
}

/// Exposes RPC methods on an entity of `owner`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct ServeRpc {
    /// The owner.
    pub owner: Address,
    /// The entity answering requests.
    pub entity: Address,
    /// The handler.
    pub handler: Recipient<RpcCall>,
}

/// Sends RPC requests from an entity of `owner`; resolves to a receiver of the
/// answer, or `None` if every request is a notification.
#[derive(Debug, Clone, actix::Message)]
#[rtype(
    result = "Result<Option<oneshot::Receiver<Result<Vec<RpcResponse>, RpcCallError>>>, EventError>"
)]
pub struct CallRpc {
    /// The owner of `from`.
    pub owner: Address,
    /// The calling entity.
    pub from: Address,
    /// The called entity.
    pub to: Address,
    /// The requests.
    pub requests: Vec<RpcRequest>,
    /// Send as a batch (an array) even for one request.
    pub batch: bool,
}

/// Installs a policy.
#[derive(actix::Message)]
#[rtype(result = "Result<(), EventError>")]
pub struct AddEventPolicy(pub Arc<dyn EventPolicy>);

impl fmt::Debug for AddEventPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddEventPolicy({})", self.0.name())
    }
}

/// Removes a policy by name.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "bool")]
pub struct RemoveEventPolicy(pub String);

/// Runs the timer's work now: reference timeouts, RPC deadlines, cache expiry and
/// retransmission. Resolves once due retransmissions are handed to the bus.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Tick;

/// Reads the counters.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "EventStats")]
pub struct GetEventStats;

/// Number of events in the cache.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "usize")]
pub struct CachedCount;

/// Closes the cache and stops the dispatcher.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct StopEvents;

impl Handler<Deliver> for EventDispatcher {
    type Result = ();
    fn handle(&mut self, Deliver(msg): Deliver, ctx: &mut Context<Self>) {
        if msg.kind == MessageType::Event {
            self.incoming(msg, ctx);
        }
    }
}

impl Handler<RegisterEntity> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: RegisterEntity, _: &mut Context<Self>) -> Self::Result {
        debug!(entity = %m.entity, owner = %m.owner, "entity registered");
        self.entities.register(m.entity, m.owner, m.options)
    }
}

impl Handler<UnregisterEntity> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: UnregisterEntity, _: &mut Context<Self>) -> Self::Result {
        self.entities.unregister(&m.entity, &m.owner)?;
        self.rpc_servers.remove(&m.entity);
        Ok(())
    }
}

impl Handler<AddEventListener> for EventDispatcher {
    type Result = Result<EventListenerId, EventError>;
    fn handle(&mut self, m: AddEventListener, _: &mut Context<Self>) -> Self::Result {
        if let Some(t) = &m.filter.event_type {
            if !crate::events::model::is_valid_type(t) {
                return Err(EventError::InvalidArgument(format!(
                    "{t:?} is not a valid event type"
                )));
            }
        }
        if let Some(d) = &m.filter.destination {
            if !self.entities.owns(&m.owner, d.as_str()) {
                return Err(EventError::PermissionDenied(format!(
                    "{d} is not an entity of {}",
                    m.owner
                )));
            }
        }
        if self.listeners.len() >= self.config.max_listeners {
            return Err(EventError::Full("event listeners"));
        }
        Ok(self.listeners.add(m.owner, m.filter, m.recipient))
    }
}

impl Handler<RemoveEventListener> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: RemoveEventListener, _: &mut Context<Self>) -> Self::Result {
        if self.listeners.remove(&m.owner, m.id) {
            Ok(())
        } else {
            Err(EventError::InvalidArgument(format!("no listener {}", m.id)))
        }
    }
}

impl EventDispatcher {
    fn check_sender(
        &self,
        owner: &Address,
        event: &Event,
        sender: &Address,
    ) -> Result<(), EventError> {
        if event.is_reserved() {
            return Err(EventError::InvalidArgument(format!(
                "type {} is reserved to the event dispatcher",
                event.event_type()
            )));
        }
        if !self.entities.owns(owner, sender.as_str()) {
            return Err(EventError::PermissionDenied(format!(
                "{sender} is not an entity of {owner}"
            )));
        }
        Ok(())
    }
}

impl Handler<DispatchEvent> for EventDispatcher {
    type Result = ResponseActFuture<Self, Result<(), EventError>>;
    fn handle(&mut self, m: DispatchEvent, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_sender(&m.owner, &m.event, m.event.source()) {
            return Box::pin(fut::ready(Err(e)));
        }
        if m.event.forwarding().is_some() {
            return Box::pin(fut::ready(Err(EventError::InvalidArgument(
                "a forwarded event is sent again with forward".into(),
            ))));
        }
        let wanted = m
            .callbacks
            .as_ref()
            .is_some_and(EventCallbacks::wants_notifications);
        let ev = Arc::new(m.event.with_dnw(wanted));
        self.outgoing(
            ev,
            true,
            m.callbacks.map(Reporter::App),
            m.reference_timeout,
            ctx,
        )
    }
}

impl Handler<ForwardEvent> for EventDispatcher {
    type Result = ResponseActFuture<Self, Result<Event, EventError>>;
    fn handle(&mut self, m: ForwardEvent, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_sender(&m.owner, &m.event, m.forwarding.source()) {
            return Box::pin(fut::ready(Err(e)));
        }
        let ts = m.with_timestamp.then(|| self.now());
        let forwarding = match Forwarding::new(m.forwarding, ts) {
            Ok(f) => f,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let wanted = m
            .callbacks
            .as_ref()
            .is_some_and(EventCallbacks::wants_notifications);
        let ev = Arc::new(m.event.forwarded(forwarding).with_dnw(wanted));
        let out = (*ev).clone();
        let fut = self.outgoing(
            ev,
            true,
            m.callbacks.map(Reporter::App),
            m.reference_timeout,
            ctx,
        );
        Box::pin(fut.map(move |r, _, _| r.map(|()| out)))
    }
}

impl Handler<ServeRpc> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: ServeRpc, _: &mut Context<Self>) -> Self::Result {
        if !self.entities.owns(&m.owner, m.entity.as_str()) {
            return Err(EventError::PermissionDenied(format!(
                "{} is not an entity of {}",
                m.entity, m.owner
            )));
        }
        self.rpc_servers.insert(m.entity, m.handler);
        Ok(())
    }
}

impl Handler<CallRpc> for EventDispatcher {
    type Result = ResponseActFuture<
        Self,
        Result<Option<oneshot::Receiver<Result<Vec<RpcResponse>, RpcCallError>>>, EventError>,
    >;
    fn handle(&mut self, m: CallRpc, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        if !self.entities.owns(&m.owner, m.from.as_str()) {
            return Box::pin(fut::ready(Err(EventError::PermissionDenied(format!(
                "{} is not an entity of {}",
                m.from, m.owner
            )))));
        }
        if m.requests.is_empty() {
            return Box::pin(fut::ready(Err(EventError::InvalidArgument(
                "no RPC request".into(),
            ))));
        }
        let answered = m.requests.iter().any(|r| !r.is_notification());
        if answered && self.rpc_calls.len() >= self.config.max_rpc_calls {
            return Box::pin(fut::ready(Err(EventError::Full("RPC calls"))));
        }
        let payload = request_payload(m.batch || m.requests.len() > 1, &m.requests);
        let event = Event::builder(RPC_REQUEST, m.from.clone())
            .to(m.to.clone())
            .payload(payload)
            .generated_at(now)
            .addressing_sensitive(true)
            .delivery_notification_wanted(true)
            .build_any();
        let event = match event {
            Ok(e) => Arc::new(e),
            Err(e) => return Box::pin(fut::ready(Err(e.into()))),
        };
        let rx = answered.then(|| {
            let (tx, rx) = oneshot::channel();
            self.rpc_calls.insert(
                event.id(),
                PendingCall {
                    from: m.from,
                    to: m.to,
                    deadline: after(now, self.config.rpc_timeout),
                    tx,
                },
            );
            rx
        });
        let id = event.id();
        let fut = self.outgoing(event, true, Some(Reporter::Rpc), None, ctx);
        Box::pin(fut.map(move |r, act, _| match r {
            Ok(()) => Ok(rx),
            Err(e) => {
                act.rpc_calls.remove(&id);
                Err(e)
            }
        }))
    }
}

impl Handler<AddEventPolicy> for EventDispatcher {
    type Result = Result<(), EventError>;
    fn handle(&mut self, m: AddEventPolicy, _: &mut Context<Self>) -> Self::Result {
        if self.policies.iter().any(|p| p.name() == m.0.name()) {
            return Err(EventError::InvalidArgument(format!(
                "a policy named {} is installed",
                m.0.name()
            )));
        }
        if self.policies.len() >= MAX_EVENT_POLICIES {
            return Err(EventError::Full("event policies"));
        }
        self.policies.push(m.0);
        Ok(())
    }
}

impl Handler<RemoveEventPolicy> for EventDispatcher {
    type Result = bool;
    fn handle(&mut self, m: RemoveEventPolicy, _: &mut Context<Self>) -> bool {
        let before = self.policies.len();
        self.policies.retain(|p| p.name() != m.0);
        self.policies.len() < before
    }
}

impl Handler<Tick> for EventDispatcher {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Tick, _: &mut Context<Self>) -> Self::Result {
        self.tick()
    }
}

impl Handler<GetEventStats> for EventDispatcher {
    type Result = MessageResult<GetEventStats>;
    fn handle(&mut self, _: GetEventStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats)
    }
}

impl Handler<CachedCount> for EventDispatcher {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, _: CachedCount, _: &mut Context<Self>) -> Self::Result {
        let req = self.cache.send(CacheLen);
        Box::pin(async move { req.await.unwrap_or(0) })
    }
}

impl Handler<StopEvents> for EventDispatcher {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: StopEvents, _: &mut Context<Self>) -> Self::Result {
        let close = self.cache.send(CloseCache);
        for (_, c) in self.rpc_calls.drain() {
            let _ = c.tx.send(Err(RpcCallError::Event(EventError::Unavailable)));
        }
        Box::pin(close.into_actor(self).map(|_, _, ctx| ctx.stop()))
    }
}

#[cfg(test)]
mod tests {
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
