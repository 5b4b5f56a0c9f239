//! The Message Bus: every message inside a runtime goes through it.
//!
//! Two faces:
//!
//! * [`Bus`], a cheap cloneable handle every component holds. [`Bus::post`] sends a
//!   request and returns a future of its final response, [`Bus::send`] sends without
//!   waiting, [`Bus::inject`] is how protocol stubs hand in messages from the wire.
//!   Routing happens on the caller's thread, straight into the recipient's mailbox:
//!   one hop, no central router (design.md §6).
//! * [`MessageBus`], the actor that owns the listener table and the interceptor
//!   chain. It is the only writer of both; it also accepts [`Post`] and [`SendMessage`]
//!   for callers that prefer plain actor messages.
//!
//! Routing order for each recipient (rethink-wire.md §10, issue "Actor core" §4):
//!
//! 1. the interceptor pipeline (PEPs), in order; a rejection answers the sender
//!    (403 "Blocked by policy" for policy denials) and nothing is delivered;
//! 2. a pending request waiting for this response (`(to, id)`); responses with a code
//!    below 200 keep the request open;
//! 3. local listeners on exactly `to`;
//! 4. the protocol stub the [`StubTable`] resolves for `to` (never for addresses
//!    under the runtime's own URL, never back to the stub a message came from);
//! 5. otherwise a 404 response to requests; notifications and responses are dropped
//!    and counted.
//!
//! A `to` list reaches each local recipient; remote recipients are grouped per stub
//! and each stub carries the message once, with `to` narrowed to its recipients. A
//! list that arrived through a stub is delivered to local recipients only (the far
//! side fanned it out).
//!
//! A full mailbox answers 429 to the sender, a stopped recipient 500; a request
//! without a final response within [`BusConfig::request_timeout`] resolves to
//! [`BusError::Timeout`] (408).
//!
//! ```
//! # use hyperty_actors::prelude::*;
//! struct Echo(Bus);
//! impl Actor for Echo { type Context = Context<Self>; }
//! impl Handler<Deliver> for Echo {
//!     type Result = ();
//!     fn handle(&mut self, Deliver(msg): Deliver, _: &mut Context<Self>) {
//!         let reply = msg.reply_value(ResponseCode::Ok, msg.body.value.clone().unwrap_or_default());
//!         self.0.send(reply);
//!     }
//! }
//!
//! # #[actix::main] async fn main() {
//! let rt: RuntimeUrl = "hyperty-runtime://example.com/rt".parse().unwrap();
//! let bus = MessageBus::start(rt, BusConfig::default(), Default::default());
//! let echo: Address = "hyperty://example.com/echo".parse().unwrap();
//! bus.add_listener(echo.clone(), Echo(bus.clone()).start().recipient(), None).await.unwrap();
//!
//! let req = Message::new(MessageType::Execute, "hyperty://example.com/me".parse().unwrap(), echo)
//!     .with_value(serde_json::json!("hi"));
//! let resp = bus.post(req).await.unwrap();
//! assert_eq!(resp.code(), Some(ResponseCode::Ok));
//! assert_eq!(resp.body.value, Some(serde_json::json!("hi")));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace, warn};

use crate::address::{Address, HypertyUrl, RuntimeUrl};
use crate::error::{error_response, BusError, Rejection};
use crate::message::{Message, MessageId, MessageType, ResponseCode, To};
use crate::routes::{Delivery, ListenerId, ListenerTable, Refusal, StubDelivery, StubTable};

pub mod bound;
mod pending;

pub use bound::{BoundBus, Holdings};
use pending::{Answer, Expiry, Key, PendingTable, Remote};

/// Default time a request waits for its final response (runtime-core uses 15 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound of the listener table.
pub const DEFAULT_MAX_LISTENERS: usize = 100_000;
/// Default bound of requests awaiting a response.
pub const DEFAULT_MAX_PENDING: usize = 100_000;
/// Default bound of the interceptor chain.
pub const DEFAULT_MAX_INTERCEPTORS: usize = 64;
/// Mailbox capacity of the bus actor.
pub const BUS_MAILBOX_CAPACITY: usize = 1024;
/// Provisional responses buffered per [`Bus::post_with_progress`] call.
pub const PROGRESS_BUFFER: usize = 16;

/// Limits and timing of a bus. Every table is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// How long a request waits for a final response before a 408.
    pub request_timeout: Duration,
    /// Most listener registrations.
    pub max_listeners: usize,
    /// Most requests awaiting responses (local posts and remote requests in flight).
    pub max_pending: usize,
    /// Most interceptors.
    pub max_interceptors: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_listeners: DEFAULT_MAX_LISTENERS,
            max_pending: DEFAULT_MAX_PENDING,
            max_interceptors: DEFAULT_MAX_INTERCEPTORS,
        }
    }
}

/// A message delivered to a listener (a hyperty, a stub, a runtime component).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Message);

/// Where a message enters the bus from, relative to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A local sender to a local recipient.
    Local,
    /// A local sender to a recipient reached through a protocol stub.
    Outgoing,
    /// A message that arrived through a protocol stub.
    Incoming,
}

/// One step of the bus pipeline, e.g. a policy enforcement point.
///
/// Interceptors run synchronously, in registration order, on the sender's thread,
/// so they keep per-sender message order. They may rewrite the message (add
/// `body.identity`, set `body.auth`) or reject it. State they consult (compiled
/// policies, cached assertions) is owned by an actor and shared with them.
pub trait Interceptor: Send + Sync + 'static {
    /// A unique name, used to remove the interceptor.
    fn name(&self) -> &str;
    /// Inspects (and possibly rewrites) a message, or rejects it.
    fn intercept(&self, msg: &mut Message, direction: Direction) -> Result<(), Rejection>;
    /// Like [`intercept`](Interceptor::intercept), told which hyperty sent the
    /// message when it came through that hyperty's [`BoundBus`] (`None`: the
    /// runtime owner, a runtime component or a protocol stub). The bus calls this
    /// one; the default forwards to `intercept`.
    fn intercept_sent(
        &self,
        msg: &mut Message,
        direction: Direction,
        sender: Option<&HypertyUrl>,
    ) -> Result<(), Rejection> {
        let _ = sender;
        self.intercept(msg, direction)
    }
    /// A sealed interceptor (a policy enforcement point) cannot be removed once
    /// installed and always runs after the unsealed ones, so no component holding a
    /// [`Bus`] handle can switch it off or rewrite a message after it decided.
    fn sealed(&self) -> bool {
        false
    }
}

impl fmt::Debug for dyn Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interceptor({})", self.name())
    }
}

/// Counters of a bus (monotonic), and the sizes of its tables at the time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages handed to a listener or stub.
    pub delivered: u64,
    /// Responses that completed a local request.
    pub responses: u64,
    /// Messages with no route.
    pub not_found: u64,
    /// Messages rejected by an interceptor.
    pub rejected: u64,
    /// Messages refused by a full mailbox or table (429).
    pub busy: u64,
    /// Messages to a stopped recipient (500).
    pub unavailable: u64,
    /// Requests that timed out (408).
    pub timeouts: u64,
    /// Notifications and responses dropped for lack of a route.
    pub dropped: u64,
    /// Requests awaiting their response (local posts and tracked remote requests).
    pub pending: usize,
    /// Listeners registered.
    pub listeners: usize,
    /// Protocol stubs registered for a domain (the default stub not counted).
    pub stubs: usize,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    responses: AtomicU64,
    not_found: AtomicU64,
    rejected: AtomicU64,
    busy: AtomicU64,
    unavailable: AtomicU64,
    timeouts: AtomicU64,
    dropped: AtomicU64,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// The runtime owner or one of its components (the full [`Bus`]).
    Local,
    /// A hyperty, through its [`BoundBus`].
    Bound(&'a Holdings),
    /// The protocol stub at this address.
    Stub(&'a Address),
    /// A runtime component sending past local listeners, to the protocol stub
    /// ([`Bus::send_to_stub`]).
    Outward,
}

impl Origin<'_> {
    fn is_stub(&self) -> bool {
        matches!(self, Origin::Stub(_))
    }

    /// Who may answer, complete or send as: `None` for the owner and stubs.
    fn holdings(&self) -> Option<&Holdings> {
        match self {
            Origin::Bound(h) => Some(h),
            _ => None,
        }
    }
}

struct Shared {
    runtime_url: RuntimeUrl,
    config: BusConfig,
    next_id: AtomicU64,
    listeners: ListenerTable,
    stubs: Arc<StubTable>,
    pending: PendingTable,
    interceptors: RwLock<Arc<[Arc<dyn Interceptor>]>>,
    counters: Counters,
    shut: AtomicBool,
}

/// Handle to a runtime's message bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
    actor: Addr<MessageBus>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("runtime", &self.shared.runtime_url)
            .finish_non_exhaustive()
    }
}

/// Removes a pending entry when the waiting future is dropped or finishes.
struct PendingGuard {
    shared: Arc<Shared>,
    key: Key,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.pending.forget(&self.key);
    }
}

/// Waits for the final response of the request behind `guard`, until the
/// deadline the pending table keeps for it (moved by provisional responses when
/// `progress` shows them).
async fn wait<F: FnMut(Message)>(
    guard: PendingGuard,
    mut rx: oneshot::Receiver<Result<Message, BusError>>,
    mut progress: Option<(mpsc::Receiver<Message>, F)>,
) -> Result<Message, BusError> {
    let shared = &guard.shared;
    // provisional responses sent before the final one are shown first
    let drain = |progress: &mut Option<(mpsc::Receiver<Message>, F)>| {
        if let Some((prx, on_progress)) = progress {
            while let Ok(p) = prx.try_recv() {
                on_progress(p);
            }
        }
    };
    let Some(mut deadline) = shared.pending.deadline(&guard.key) else {
        // answered (or failed) before we looked
        let r = (&mut rx).await.unwrap_or(Err(BusError::Shutdown));
        drain(&mut progress);
        return r;
    };
    loop {
        let next = async {
            match &mut progress {
                Some((prx, _)) => prx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some(p) = next => {
                if let Some((_, on_progress)) = &mut progress {
                    on_progress(p);
                }
            }
            r = &mut rx => {
                drain(&mut progress);
                return r.unwrap_or(Err(BusError::Shutdown));
            }
            _ = tokio::time::sleep_until(deadline) => {
                match shared.pending.expire(&guard.key, tokio::time::Instant::now()) {
                    Expiry::Expired => {
                        shared.counters.timeouts.fetch_add(1, Relaxed);
                        return Err(BusError::Timeout);
                    }
                    Expiry::Later(d) => deadline = d,
                    Expiry::Gone => {
                        let r = (&mut rx).await.unwrap_or(Err(BusError::Shutdown));
                        drain(&mut progress);
                        return r;
                    }
                }
            }
        }
    }
}

impl Bus {
    /// The runtime this bus belongs to.
    pub fn runtime_url(&self) -> &RuntimeUrl {
        &self.shared.runtime_url
    }

    /// The bus configuration.
    pub fn config(&self) -> &BusConfig {
        &self.shared.config
    }

    /// The address of the bus actor.
    pub fn actor(&self) -> &Addr<MessageBus> {
        &self.actor
    }

    /// A fresh message id, unique on this bus.
    pub fn next_id(&self) -> MessageId {
        self.shared.next_id()
    }

    /// Sends a request and waits for its final (≥ 200) response.
    ///
    /// Assigns an id if `msg.id` is 0. Provisional responses keep the request open
    /// but are not shown; see [`Bus::post_with_progress`]. Errors detected by this bus
    /// (no route, rejection, full mailbox, crash, timeout) come back as [`BusError`];
    /// a remote error response is an `Ok` response with its code.
    pub fn post(&self, msg: Message) -> impl Future<Output = Result<Message, BusError>> + 'static {
        self.post_from(msg, Origin::Local)
    }

    /// Like [`Bus::post`], but calls `on_progress` with each provisional (1xx)
    /// response; each one restarts the timeout.
    pub fn post_with_progress<F>(
        &self,
        msg: Message,
        on_progress: F,
    ) -> impl Future<Output = Result<Message, BusError>> + 'static
    where
        F: FnMut(Message) + 'static,
    {
        self.post_with_progress_from(msg, on_progress, Origin::Local)
    }

    fn post_from(
        &self,
        msg: Message,
        origin: Origin<'_>,
    ) -> impl Future<Output = Result<Message, BusError>> + 'static {
        let (tx, rx) = oneshot::channel();
        let guard = self.shared.begin(msg, tx, None, origin);
        async move { wait::<fn(Message)>(guard?, rx, None).await }
    }

    fn post_with_progress_from<F>(
        &self,
        msg: Message,
        on_progress: F,
        origin: Origin<'_>,
    ) -> impl Future<Output = Result<Message, BusError>> + 'static
    where
        F: FnMut(Message) + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let (ptx, prx) = mpsc::channel(PROGRESS_BUFFER);
        let guard = self.shared.begin(msg, tx, Some(ptx), origin);
        async move { wait(guard?, rx, Some((prx, on_progress))).await }
    }

    /// Sends without waiting. Assigns an id if `msg.id` is 0 and returns it. If a
    /// request cannot be delivered, the bus answers the sender's listener with an
    /// error response.
    pub fn send(&self, msg: Message) -> MessageId {
        self.shared.send(msg, Origin::Local)
    }

    /// Sends without waiting to the protocol stub serving `to`, past any local
    /// listener on `to`: a channel a component listens on for what remote senders
    /// publish there, and publishes on itself (a reporter's `<obj>/children/`,
    /// which runtime-core observers write to directly). A request with no stub
    /// for `to` is answered 404 like any other.
    pub fn send_to_stub(&self, msg: Message) -> MessageId {
        self.shared.send(msg, Origin::Outward)
    }

    /// Hands in a message that arrived through the protocol stub `stub`: it goes
    /// through the incoming pipeline and is never routed back to that stub.
    pub fn inject(&self, msg: Message, stub: &Address) {
        self.shared.route(msg, Origin::Stub(stub));
    }

    /// Adds a listener on exactly `address`. `owner` (a hyperty URL) lets all of a
    /// hyperty's listeners be removed at once when it stops.
    pub fn add_listener(
        &self,
        address: Address,
        recipient: Recipient<Deliver>,
        owner: Option<Address>,
    ) -> impl Future<Output = Result<ListenerId, BusError>> + 'static {
        let req = self.actor.send(AddListener {
            address,
            recipient,
            owner,
        });
        async move { req.await.map_err(|_| BusError::Shutdown)? }
    }

    /// Removes one listener registration.
    pub fn remove_listener(
        &self,
        address: Address,
        id: ListenerId,
    ) -> impl Future<Output = bool> + 'static {
        let req = self.actor.send(RemoveListener { address, id });
        async move { req.await.unwrap_or(false) }
    }

    /// Adds an interceptor at the end of the pipeline.
    pub fn add_interceptor(
        &self,
        interceptor: Arc<dyn Interceptor>,
    ) -> impl Future<Output = Result<(), BusError>> + 'static {
        let req = self.actor.send(AddInterceptor(interceptor));
        async move { req.await.map_err(|_| BusError::Shutdown)? }
    }

    /// Removes the interceptor named `name`; false if there is none or it is sealed.
    pub fn remove_interceptor(&self, name: &str) -> impl Future<Output = bool> + 'static {
        let req = self.actor.send(RemoveInterceptor(name.to_owned()));
        async move { req.await.unwrap_or(false) }
    }

    /// True if a listener is registered on exactly `address`.
    pub fn has_listener(&self, address: &str) -> bool {
        self.shared.listeners.contains(address)
    }

    /// Counters.
    pub fn stats(&self) -> BusStats {
        self.shared.stats()
    }

    /// Fails every request awaiting an answer from `recipient` with
    /// [`BusError::Unavailable`] (500): local posts directly, remote requesters with
    /// a 500 response. Used when a hyperty crashes. Returns how many were failed.
    pub fn fail_requests_to(&self, recipient: &Address) -> usize {
        self.shared.fail_requests_to(recipient)
    }

    /// Fails every pending request with [`BusError::Shutdown`] and refuses new ones.
    pub fn shutdown(&self) {
        self.shared.shut.store(true, Relaxed);
        self.shared.pending.shutdown();
    }
}

impl Shared {
    fn next_id(&self) -> MessageId {
        self.next_id.fetch_add(1, Relaxed) + 1
    }

    fn stats(&self) -> BusStats {
        let c = &self.counters;
        BusStats {
            delivered: c.delivered.load(Relaxed),
            responses: c.responses.load(Relaxed),
            not_found: c.not_found.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            busy: c.busy.load(Relaxed),
            unavailable: c.unavailable.load(Relaxed),
            timeouts: c.timeouts.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            pending: self.pending.len(),
            listeners: self.listeners.len(),
            stubs: self.stubs.len(),
        }
    }

    /// Assigns an id if needed and routes a message; a bound sender's message is
    /// checked first.
    fn send(&self, mut msg: Message, origin: Origin<'_>) -> MessageId {
        if msg.id == 0 {
            msg.id = self.next_id();
        }
        let id = msg.id;
        if let Some(h) = origin.holdings() {
            if let Err(e) = h.check_sender(&msg) {
                self.refuse_bound(msg, h, e);
                return id;
            }
        }
        self.route(msg, origin);
        id
    }

    /// A bound sender's message it may not send: nothing is delivered; a request
    /// is answered 403 at the hyperty's own URL.
    fn refuse_bound(&self, msg: Message, h: &Holdings, err: BusError) {
        self.counters.rejected.fetch_add(1, Relaxed);
        warn!(hyperty = %h.hyperty(), id = msg.id, kind = %msg.kind, from = %msg.from, error = %err, "refused");
        if msg.kind.expects_response() {
            let mut resp = error_response(&msg, &err);
            let me = h.hyperty().address().clone();
            resp.to = To::One(me.clone());
            self.route_to(resp, &me, Origin::Local);
        }
    }

    /// Starts a request: assigns an id if needed, records it as pending and routes
    /// it. The guard forgets the pending entry when the waiting future ends.
    fn begin(
        self: &Arc<Self>,
        mut msg: Message,
        tx: oneshot::Sender<Result<Message, BusError>>,
        progress: Option<mpsc::Sender<Message>>,
        origin: Origin<'_>,
    ) -> Result<PendingGuard, BusError> {
        if msg.id == 0 {
            msg.id = self.next_id();
        }
        if let Some(h) = origin.holdings() {
            h.check_sender(&msg).inspect_err(|e| {
                self.counters.rejected.fetch_add(1, Relaxed);
                warn!(hyperty = %h.hyperty(), id = msg.id, from = %msg.from, error = %e, "refused");
            })?;
        }
        if self.shut.load(Relaxed) {
            return Err(BusError::Shutdown);
        }
        if matches!(&msg.to, To::Many(list) if list.is_empty()) {
            return Err(BusError::Invalid("empty recipient list".to_owned()));
        }
        let key = (msg.from.shared().clone(), msg.id);
        let now = tokio::time::Instant::now();
        self.pending
            .insert(key.clone(), msg.to.clone(), tx, progress, now)
            .inspect_err(|_| {
                self.counters.busy.fetch_add(1, Relaxed);
            })?;
        self.route(msg, origin);
        Ok(PendingGuard {
            shared: self.clone(),
            key,
        })
    }

    fn is_local(&self, addr: &Address) -> bool {
        self.listeners.contains(addr.as_str()) || addr.is_under(self.runtime_url.as_str())
    }

    fn direction(&self, msg: &Message, origin: Origin<'_>) -> Direction {
        match origin {
            Origin::Stub(_) => Direction::Incoming,
            Origin::Outward => Direction::Outgoing,
            _ if msg.to.iter().all(|a| self.is_local(a)) => Direction::Local,
            _ => Direction::Outgoing,
        }
    }

    fn route(&self, mut msg: Message, origin: Origin<'_>) {
        if matches!(&msg.to, To::Many(list) if list.is_empty()) {
            // only a hand-built `To::Many(vec![])` gets here; parsed messages never do
            self.counters.dropped.fetch_add(1, Relaxed);
            let key = (msg.from.shared().clone(), msg.id);
            self.pending
                .fail(&key, BusError::Invalid("empty recipient list".to_owned()));
            return;
        }
        let span = tracing::trace_span!(
            "bus.route",
            id = msg.id,
            kind = %msg.kind,
            from = %msg.from,
            to = %msg.to.first()
        );
        let _enter = span.enter();
        let chain = self
            .interceptors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !chain.is_empty() {
            let direction = self.direction(&msg, origin);
            let sender = origin.holdings().map(Holdings::hyperty);
            for i in chain.iter() {
                if let Err(rejection) = i.intercept_sent(&mut msg, direction, sender) {
                    debug!(interceptor = i.name(), reason = %rejection, "message rejected");
                    self.counters.rejected.fetch_add(1, Relaxed);
                    self.fail(msg, BusError::Rejected(rejection));
                    return;
                }
            }
        }
        match &msg.to {
            To::One(target) => {
                let target = target.clone();
                self.route_to(msg, &target, origin);
            }
            To::Many(targets) => {
                let targets = targets.clone();
                self.route_many(msg, &targets, origin);
            }
        }
    }

    /// A recipient list: each local recipient gets the message; remote recipients
    /// are grouped per protocol stub and each stub carries the message once, with
    /// `to` narrowed to the recipients it serves (the far side fans out). A list
    /// that arrived through a stub is delivered to local recipients only.
    fn route_many(&self, msg: Message, targets: &[Address], origin: Origin<'_>) {
        let mut groups: Vec<(Address, Vec<Address>)> = Vec::new();
        let mut local = Vec::new();
        for t in targets {
            if self.is_local(t) || msg.kind == MessageType::Response {
                local.push(t);
            } else if origin.is_stub() {
                trace!(target = %t, "list recipient served elsewhere");
            } else {
                match self.stubs.resolve_url(t) {
                    Some(stub) => match groups.iter_mut().find(|(s, _)| *s == stub) {
                        Some((_, g)) => g.push(t.clone()),
                        None => groups.push((stub, vec![t.clone()])),
                    },
                    None => {
                        // no route yet: a stub may be loaded on demand
                        let mut m = msg.clone();
                        m.to = To::One(t.clone());
                        self.route_to(m, t, origin);
                    }
                }
            }
        }
        for t in local {
            self.route_to(msg.clone(), t, origin);
        }
        for (_, group) in groups {
            let mut m = msg.clone();
            let first = group[0].clone();
            m.to = match group.len() {
                1 => To::One(first.clone()),
                _ => To::Many(group),
            };
            self.route_to(m, &first, origin);
        }
    }

    fn route_to(&self, msg: Message, target: &Address, origin: Origin<'_>) {
        let mut msg = msg;
        if msg.kind == MessageType::Response {
            let bound = origin.holdings();
            let may_answer = bound.map(|h| move |a: &str| h.holds(a));
            let may_answer = may_answer.as_ref().map(|f| f as &dyn Fn(&str) -> bool);
            let answer = match msg.to.first() == target {
                true => self
                    .pending
                    .answer(msg, tokio::time::Instant::now(), may_answer),
                false => {
                    // one recipient of a response sent to a list
                    let mut one = msg;
                    one.to = To::One(target.clone());
                    self.pending
                        .answer(one, tokio::time::Instant::now(), may_answer)
                }
            };
            msg = match answer {
                Answer::Taken => {
                    self.counters.responses.fetch_add(1, Relaxed);
                    return;
                }
                Answer::NotAddressed(m) => return self.not_addressed(m, bound),
                Answer::Route(m) => m,
            };
            if !origin.is_stub() {
                let final_response = !msg.body.code.is_some_and(ResponseCode::is_provisional);
                let key = (target.shared().clone(), msg.id);
                match self.pending.answer_remote(&key, final_response, may_answer) {
                    Remote::Answered => {}
                    Remote::NotAddressed => return self.not_addressed(msg, bound),
                    // a hyperty answers across a stub only what was delivered to it
                    Remote::Untracked if bound.is_some() && !self.is_local(target) => {
                        return self.not_addressed(msg, bound)
                    }
                    Remote::Untracked => {}
                }
            }
        }
        let track = origin.is_stub() && msg.kind.expects_response();
        let requester = track.then(|| (msg.from.shared().clone(), msg.id));
        // Recorded before the hand-off: the listener runs on another thread and may
        // answer, or crash and have its requests failed, before `deliver` returns.
        if let Some(key) = &requester {
            self.pending.track_remote(
                key.clone(),
                target.shared().clone(),
                tokio::time::Instant::now(),
            );
        }
        let delivery = match origin {
            Origin::Outward => Delivery::NoListener(Deliver(msg)),
            _ => self.listeners.deliver(target.as_str(), Deliver(msg)),
        };
        if !matches!(delivery, Delivery::Delivered(_)) {
            if let Some(key) = &requester {
                self.pending.untrack_remote(key);
            }
        }
        match delivery {
            Delivery::Delivered(_) => {
                self.counters.delivered.fetch_add(1, Relaxed);
                trace!(%target, "delivered to local listener");
            }
            Delivery::Refused(Deliver(m), why) => self.refused(m, target, why),
            Delivery::NoListener(d) => {
                if !target.is_under(self.runtime_url.as_str()) {
                    let came_from = match origin {
                        Origin::Stub(s) => Some(s.as_str()),
                        _ => None,
                    };
                    match self.stubs.deliver(target, d, came_from) {
                        StubDelivery::Sent(stub) => {
                            self.counters.delivered.fetch_add(1, Relaxed);
                            trace!(%target, %stub, "handed to protocol stub");
                        }
                        StubDelivery::Waiting(domain) => {
                            self.counters.delivered.fetch_add(1, Relaxed);
                            trace!(%target, %domain, "waiting for the domain's stub");
                        }
                        StubDelivery::Refused(Deliver(m), why) => self.refused(m, target, why),
                        StubDelivery::NoStub(Deliver(m)) => self.no_route(m, target),
                    }
                } else {
                    self.no_route(d.0, target);
                }
            }
        }
    }

    /// A bound sender's response to a request that was not addressed to it:
    /// refused, nothing delivered, the request stays pending.
    fn not_addressed(&self, msg: Message, bound: Option<&Holdings>) {
        self.counters.rejected.fetch_add(1, Relaxed);
        warn!(
            hyperty = ?bound.map(Holdings::hyperty), id = msg.id, to = %msg.to.first(),
            "response to a request not addressed to the sender refused"
        );
    }

    fn refused(&self, msg: Message, target: &Address, why: Refusal) {
        match why {
            Refusal::Full => {
                self.counters.busy.fetch_add(1, Relaxed);
                self.fail(msg, BusError::Busy(target.to_string()));
            }
            Refusal::Closed => {
                self.counters.unavailable.fetch_add(1, Relaxed);
                self.fail(msg, BusError::Unavailable(target.to_string()));
            }
        }
    }

    fn no_route(&self, msg: Message, target: &Address) {
        self.counters.not_found.fetch_add(1, Relaxed);
        self.fail(msg, BusError::NoRoute(target.to_string()));
    }

    /// Reports a failure to the sender: to its waiting `post` if it has one, with an
    /// error response if the message was a request, otherwise a counted drop.
    fn fail(&self, msg: Message, err: BusError) {
        if msg.kind == MessageType::Response {
            self.counters.dropped.fetch_add(1, Relaxed);
            debug!(id = msg.id, to = %msg.to.first(), error = %err, "response dropped");
            return;
        }
        let key = (msg.from.shared().clone(), msg.id);
        if self.pending.fail(&key, err.clone()) {
            return;
        }
        if msg.kind.expects_response() {
            let resp = error_response(&msg, &err);
            let target = msg.from.clone();
            self.route_to(resp, &target, Origin::Local);
        } else {
            self.counters.dropped.fetch_add(1, Relaxed);
            debug!(id = msg.id, kind = %msg.kind, to = %msg.to.first(), error = %err, "notification dropped");
        }
    }

    fn fail_requests_to(&self, recipient: &Address) -> usize {
        let target = recipient.as_str();
        let (mut n, remote) = self.pending.drop_recipient(target);
        for (requester, id) in remote {
            let Ok(requester) = Address::parse(&requester) else {
                continue;
            };
            let mut resp = Message {
                id,
                kind: MessageType::Response,
                from: recipient.clone(),
                to: To::One(requester.clone()),
                body: crate::message::Body::with_code(ResponseCode::InternalError),
            };
            resp.body.description = Some(BusError::Unavailable(target.to_owned()).to_string());
            self.route_to(resp, &requester, Origin::Local);
            n += 1;
        }
        n
    }
}

/// The bus actor: sole writer of the listener table and the interceptor chain.
pub struct MessageBus {
    shared: Arc<Shared>,
}

impl fmt::Debug for MessageBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBus")
            .field("runtime", &self.shared.runtime_url)
            .finish_non_exhaustive()
    }
}

impl MessageBus {
    /// Starts the bus actor on the current arbiter and returns a handle.
    /// `stubs` is the stub table the runtime registry writes.
    pub fn start(runtime_url: RuntimeUrl, config: BusConfig, stubs: Arc<StubTable>) -> Bus {
        let pending = PendingTable::new(config.max_pending, config.request_timeout);
        let shared = Arc::new(Shared {
            runtime_url,
            config,
            next_id: AtomicU64::new(0),
            listeners: ListenerTable::default(),
            stubs,
            pending,
            interceptors: RwLock::new(Arc::from(Vec::new())),
            counters: Counters::default(),
            shut: AtomicBool::new(false),
        });
        let actor = MessageBus::create({
            let shared = shared.clone();
            |ctx| {
                ctx.set_mailbox_capacity(BUS_MAILBOX_CAPACITY);
                MessageBus { shared }
            }
        });
        Bus { shared, actor }
    }
}

impl Actor for MessageBus {
    type Context = Context<Self>;
}

/// Registers a listener on an exact address.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<ListenerId, BusError>")]
pub struct AddListener {
    /// The address listened on.
    pub address: Address,
    /// Who gets the messages.
    pub recipient: Recipient<Deliver>,
    /// The hyperty owning the listener, if any.
    pub owner: Option<Address>,
}

/// Removes one listener registration.
#[derive(Debug, actix::Message)]
#[rtype(result = "bool")]
pub struct RemoveListener {
    /// The address.
    pub address: Address,
    /// The registration.
    pub id: ListenerId,
}

/// Removes every listener owned by a hyperty.
#[derive(Debug, actix::Message)]
#[rtype(result = "usize")]
pub struct RemoveListenersOf(pub Address);

/// Removes every listener on an address.
#[derive(Debug, actix::Message)]
#[rtype(result = "usize")]
pub struct RemoveAllListeners(pub Address);

/// Appends an interceptor to the pipeline.
#[derive(actix::Message)]
#[rtype(result = "Result<(), BusError>")]
pub struct AddInterceptor(pub Arc<dyn Interceptor>);

impl fmt::Debug for AddInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddInterceptor({})", self.0.name())
    }
}

/// Removes an interceptor by name.
#[derive(Debug, actix::Message)]
#[rtype(result = "bool")]
pub struct RemoveInterceptor(pub String);

/// Posts a request through the actor; resolves to the final response.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<Message, BusError>")]
pub struct Post(pub Message);

/// Sends a message through the actor without waiting for a response.
#[derive(Debug, actix::Message)]
#[rtype(result = "MessageId")]
pub struct SendMessage(pub Message);

/// Reads the counters.
#[derive(Debug, actix::Message)]
#[rtype(result = "BusStats")]
pub struct GetStats;

impl Handler<AddListener> for MessageBus {
    type Result = Result<ListenerId, BusError>;
    fn handle(&mut self, m: AddListener, _: &mut Context<Self>) -> Self::Result {
        if self.shared.listeners.len() >= self.shared.config.max_listeners {
            warn!(address = %m.address, "listener table full");
            return Err(BusError::Busy("the bus (listener table)".to_owned()));
        }
        debug!(address = %m.address, owner = ?m.owner, "listener added");
        Ok(self
            .shared
            .listeners
            .add(&m.address, m.recipient, m.owner.as_ref()))
    }
}

impl Handler<RemoveListener> for MessageBus {
    type Result = bool;
    fn handle(&mut self, m: RemoveListener, _: &mut Context<Self>) -> bool {
        self.shared.listeners.remove(m.address.as_str(), m.id)
    }
}

impl Handler<RemoveListenersOf> for MessageBus {
    type Result = usize;
    fn handle(&mut self, m: RemoveListenersOf, _: &mut Context<Self>) -> usize {
        self.shared.listeners.remove_owned_by(m.0.as_str())
    }
}

impl Handler<RemoveAllListeners> for MessageBus {
    type Result = usize;
    fn handle(&mut self, m: RemoveAllListeners, _: &mut Context<Self>) -> usize {
        self.shared.listeners.remove_all(m.0.as_str())
    }
}

impl Handler<AddInterceptor> for MessageBus {
    type Result = Result<(), BusError>;
    fn handle(&mut self, m: AddInterceptor, _: &mut Context<Self>) -> Self::Result {
        let mut chain = self
            .shared
            .interceptors
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if chain.len() >= self.shared.config.max_interceptors {
            return Err(BusError::Busy("the bus (interceptor chain)".to_owned()));
        }
        if chain.iter().any(|i| i.name() == m.0.name()) {
            return Err(BusError::Invalid(format!(
                "an interceptor named {} is already installed",
                m.0.name()
            )));
        }
        let mut v: Vec<_> = chain.iter().cloned().collect();
        // sealed interceptors stay last
        let at = match m.0.sealed() {
            true => v.len(),
            false => v.iter().position(|i| i.sealed()).unwrap_or(v.len()),
        };
        v.insert(at, m.0);
        *chain = Arc::from(v);
        Ok(())
    }
}

impl Handler<RemoveInterceptor> for MessageBus {
    type Result = bool;
    fn handle(&mut self, m: RemoveInterceptor, _: &mut Context<Self>) -> bool {
        let mut chain = self
            .shared
            .interceptors
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let v: Vec<_> = chain
            .iter()
            .filter(|i| i.name() != m.0 || i.sealed())
            .cloned()
            .collect();
        let removed = v.len() < chain.len();
        *chain = Arc::from(v);
        removed
    }
}

impl Handler<Post> for MessageBus {
    type Result = ResponseFuture<Result<Message, BusError>>;
    fn handle(&mut self, m: Post, ctx: &mut Context<Self>) -> Self::Result {
        let bus = Bus {
            shared: self.shared.clone(),
            actor: ctx.address(),
        };
        Box::pin(bus.post(m.0))
    }
}

impl Handler<SendMessage> for MessageBus {
    type Result = MessageId;
    fn handle(&mut self, m: SendMessage, _: &mut Context<Self>) -> MessageId {
        self.shared.send(m.0, Origin::Local)
    }
}

impl Handler<GetStats> for MessageBus {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.shared.stats())
    }
}
