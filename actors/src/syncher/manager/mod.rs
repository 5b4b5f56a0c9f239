//! The SyncherManager actor at `<runtime>/sm` (rethink-wire.md §9).
//!
//! One per runtime. It listens on
//!
//! * `<rt>/sm`: the §9 requests of the runtime's hyperties (their [`Syncher`](super::Syncher)s);
//! * for each object it **reports**: `<obj>` (reads, gap fetches, child requests
//!   of remote observers), `<obj>/subscription` (subscribe and unsubscribe from
//!   observers' managers) and `<obj>/children/` (children as runtime-core's
//!   observers send them);
//! * for each object it **observes**: `<obj>/changes` and `<obj>/children/`;
//! * `<stubURL>/status` of each protocol stub ([`WatchStub`]): when a stub comes
//!   back, node subscriptions are renewed, reported addresses re-claimed and
//!   every observed object checked against its reporter.
//!
//! As reporter it is the object's authority: only the reporter writes the data
//! (children: their creator or the reporter), every change is checked against the
//! schema before anything is applied, gets the next version, enters the bounded
//! [`History`] and is published from `<obj>` to `<obj>/changes` (`update`) or
//! `<obj>/children/` (`create`/`update` with `resource:<child id>`) when remote
//! observers exist; local handles get it through their channels. Objects are
//! allocated through the registry (by the messaging node when attached),
//! registered in the domain registry, subscribed at the node's `/sm`, and
//! written to the [`SyncStore`].
//!
//! As observer it applies changes strictly in version order: early ones wait in a
//! bounded buffer, a gap is fetched from the reporter (`read {version}` to
//! `<obj>`: the missed deltas, or a snapshot), and idle objects are checked now
//! and then.
//!
//! Invalid requests (unknown object, stale version, malformed path, schema
//! violation, a write by anyone but the reporter) are answered with the code of
//! their [`SyncError`] and a description; nothing changes.
//!
//! Children reach the reporter both ways: our observers' managers send their
//! hyperties' child requests to `<obj>`, runtime-core's observers send theirs
//! straight to `<obj>/children/` (with a child id of their own, kept). Either way
//! the reporter checks the sender (its reporter or an accepted observer, else
//! 403), sequences the change and publishes it on `<obj>/children/` — past its
//! own listener there ([`Bus::send_to_stub`]) — and observers apply only that
//! sequenced publication; one heard straight from its creator is answered 100.
//!
//! Differences from runtime-core, forced by a node that checks who may send as
//! which address: observers' managers answer `delete` and child creates from
//! `<rt>/sm` (only the reporter's runtime speaks from the object's channels); the
//! reporter decides subscriptions itself ([`SetPolicy`]) instead of forwarding
//! them to the hyperty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::handle::{
    success, ObjectView, Sink, SubscriptionDecision, SubscriptionPolicy, SubscriptionRequest,
    SyncEvent,
};
use super::object::{child_data, Change, History, ObjectState, Op};
use super::schema::{Schema, SchemaTable};
use super::store::{SyncStore, Write};
use super::{SyncError, SyncherConfig};
use crate::address::{Address, Channel, DataObjectUrl, HypertyUrl};
use crate::bus::{Bus, Deliver, RemoveAllListeners};
use crate::clock::Clock;
use crate::error::ToResponseCode;
use crate::message::{Body, Message, MessageType, NestedList, OneOrMany, ResponseCode};
use crate::registry::AllocateObjects;

mod local;
mod observer;
mod reporter;

/// Longest child id a sender may name.
const MAX_CHILD_ID: usize = 256;
/// Addresses per re-claim request to the node.
const RECLAIM_BATCH: usize = 100;
/// Longest idle-check backoff, as a power of two of the check interval.
const MAX_IDLE_LEVEL: u32 = 4;

/// A hyperty's handle on one object asks for its view and change stream.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(u64, Arc<ObjectView>, mpsc::Receiver<SyncEvent>), SyncError>")]
pub struct Attach {
    /// The object.
    pub url: Address,
    /// The hyperty (its reporter or an accepted observer).
    pub hyperty: Address,
}

/// A handle was dropped.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Detach {
    /// The object.
    pub url: Address,
    /// The handle's stream id (from [`Attach`]).
    pub id: u64,
}

/// The reporter sets who may observe its object.
#[derive(actix::Message)]
#[rtype(result = "Result<(), SyncError>")]
pub struct SetPolicy {
    /// The object.
    pub url: Address,
    /// Who asks (must be the reporter).
    pub hyperty: Address,
    /// The decision.
    pub policy: SubscriptionPolicy,
}

impl fmt::Debug for SetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPolicy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Watches a protocol stub's `<stubURL>/status` (sent by the runtime for each
/// stub it adds); resolves once the listener is in place.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct WatchStub(pub Address);

/// Registers a named schema (from a hyperty descriptor or the runtime owner).
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), SyncError>")]
pub struct RegisterSchema {
    /// Its name (what `create` names in `body.schema`).
    pub name: String,
    /// The JSON Schema document.
    pub schema: Value,
}

/// Writes every pending change to the store now.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), SyncError>")]
pub struct FlushStore;

/// Writes what is pending, closes the store and stops the manager (runtime
/// shutdown): once answered, the store file may be opened again.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), SyncError>")]
pub struct Shutdown;

/// Reads the counters.
#[derive(Debug, actix::Message)]
#[rtype(result = "SyncStats")]
pub struct GetSyncStats;

/// Counters of a SyncherManager (monotonic except the first two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Objects reported now.
    pub reported: usize,
    /// Objects observed now.
    pub observed: usize,
    /// Changes committed as reporter.
    pub committed: u64,
    /// Changes applied as observer.
    pub applied: u64,
    /// Changes dropped as already applied (duplicates, stale).
    pub stale: u64,
    /// Gap fetches sent.
    pub fetches: u64,
    /// Fetches answered with a snapshot (the deltas were gone).
    pub snapshots: u64,
}

/// An accepted observer: its hyperty and its runtime's manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Link {
    hyperty: Address,
    manager: Address,
}

struct Reported {
    view: Arc<ObjectView>,
    schema: Option<Schema>,
    history: History,
    observers: Vec<Link>,
    authorise: Vec<Address>,
    resources: Vec<String>,
    policy: Option<SubscriptionPolicy>,
    next_child: u64,
}

struct Observed {
    view: Arc<ObjectView>,
    ready: bool,
    observers: Vec<Address>,
    early: BTreeMap<u64, Change>,
    fetching: bool,
    paused: bool,
    heard: bool,
    idle: u32,
    level: u32,
    waiters: Vec<Message>,
    /// Since when (the clock's ms) fetches find nobody holding the object.
    unheld_since: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct ReportedDoc {
    object: ObjectState,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    history: Vec<Value>,
    #[serde(default)]
    observers: Vec<Link>,
    #[serde(default)]
    authorise: Vec<Address>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    next_child: u64,
}

#[derive(Serialize, Deserialize)]
struct ObservedDoc {
    object: ObjectState,
    observers: Vec<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Reported(Address),
    Observed(Address),
}

/// What a successful request is answered with.
#[derive(Debug, Default)]
struct Reply {
    resource: Option<String>,
    value: Option<Value>,
    extra: Vec<(&'static str, Value)>,
}

impl Reply {
    fn value(v: Value) -> Reply {
        Reply {
            value: Some(v),
            ..Reply::default()
        }
    }

    fn version(v: u64) -> Reply {
        Reply::value(json!({ "version": v }))
    }
}

/// The SyncherManager actor (see the module docs).
pub struct SyncherManager {
    bus: Bus,
    me: Address,
    runtime: Address,
    node_sm: Option<Address>,
    node_allocation: Option<Address>,
    registry: Option<Address>,
    config: SyncherConfig,
    /// The runtime's one clock (`created` / `lastModified`).
    clock: Arc<dyn Clock>,
    allocator: Option<Recipient<AllocateObjects>>,
    store: Option<SyncStore>,
    schemas: SchemaTable,
    reported: HashMap<Address, Reported>,
    observed: HashMap<Address, Observed>,
    sinks: HashMap<Address, Vec<(u64, Sink)>>,
    next_sink: u64,
    stubs: HashSet<Address>,
    dirty: HashSet<Key>,
    flush_scheduled: bool,
    stats: SyncStats,
}

impl fmt::Debug for SyncherManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncherManager")
            .field("at", &self.me)
            .field("reported", &self.reported.len())
            .field("observed", &self.observed.len())
            .finish_non_exhaustive()
    }
}

fn body_map(b: &Body) -> Map<String, Value> {
    match serde_json::to_value(b) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn body_of(m: Map<String, Value>) -> Body {
    Body::from_map(m).unwrap_or_default()
}

fn resource(msg: &Message) -> Option<&str> {
    msg.body
        .resource
        .as_ref()
        .and_then(|r| r.iter().next())
        .map(String::as_str)
}

fn parse_address(s: &str, field: &str) -> Result<Address, SyncError> {
    s.parse()
        .map_err(|e| SyncError::BadRequest(format!("{field}: {e}")))
}

fn channel(obj: &Address, c: Channel) -> Address {
    Address::parse(&format!("{}{}", obj.as_str(), c.suffix())).unwrap_or_else(|_| obj.clone())
}

fn data_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// What a request's `resource` names in one object.
enum Target {
    Data,
    NewChild,
    Child(String),
}

fn target(res: &str) -> Result<(Address, Target), SyncError> {
    match res.split_once("/children/") {
        Some((obj, "")) => Ok((parse_address(obj, "body.resource")?, Target::NewChild)),
        Some((obj, id)) => Ok((
            parse_address(obj, "body.resource")?,
            Target::Child(id.to_owned()),
        )),
        None => Ok((parse_address(res, "body.resource")?, Target::Data)),
    }
}

impl SyncherManager {
    /// Opens the store at `config.path` (restoring what it holds) and starts the
    /// manager on the current arbiter, listening at `<runtime>/sm`.
    /// `allocator` allocates object URLs (the runtime registry).
    pub fn start(
        bus: Bus,
        allocator: Option<Recipient<AllocateObjects>>,
        config: SyncherConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Addr<SyncherManager>, SyncError> {
        let store = SyncStore::open(config.path.as_deref())?;
        let runtime = bus.runtime_url().address().clone();
        let me = bus.runtime_url().component("sm");
        let domain = bus.runtime_url().domain().unwrap_or("localhost").to_owned();
        let mut sm = SyncherManager {
            node_sm: Address::parse(&format!("domain://msg-node.{domain}/sm")).ok(),
            node_allocation: Address::parse(&format!(
                "domain://msg-node.{domain}/address-allocation"
            ))
            .ok(),
            registry: Address::parse(&format!("domain://registry.{domain}")).ok(),
            bus,
            me,
            runtime,
            config,
            clock,
            allocator,
            store: Some(store),
            schemas: SchemaTable::default(),
            reported: HashMap::new(),
            observed: HashMap::new(),
            sinks: HashMap::new(),
            next_sink: 0,
            stubs: HashSet::new(),
            dirty: HashSet::new(),
            flush_scheduled: false,
            stats: SyncStats::default(),
        };
        sm.restore()?;
        Ok(sm.start())
    }

    fn restore(&mut self) -> Result<(), SyncError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let (reported, observed) = store.load()?;
        for (url, doc) in reported {
            let d: ReportedDoc = match serde_json::from_str(&doc) {
                Ok(d) => d,
                Err(e) => {
                    warn!(%url, error = %e, "dropping an unreadable reported object");
                    continue;
                }
            };
            let schema = d
                .schema
                .map(|s| Schema::compile(d.object.schema.as_deref(), s))
                .transpose()?;
            let changes = d
                .history
                .iter()
                .filter_map(|c| Change::from_entry(c).ok())
                .collect();
            let url = d.object.url.clone();
            self.reported.insert(
                url,
                Reported {
                    view: ObjectView::new(d.object),
                    schema,
                    history: History::from_changes(self.config.history, changes),
                    observers: d.observers,
                    authorise: d.authorise,
                    resources: d.resources,
                    policy: None,
                    next_child: d.next_child,
                },
            );
        }
        for (url, doc) in observed {
            let d: ObservedDoc = match serde_json::from_str(&doc) {
                Ok(d) => d,
                Err(e) => {
                    warn!(%url, error = %e, "dropping an unreadable observed object");
                    continue;
                }
            };
            let url = d.object.url.clone();
            let mut o = Observed::new(ObjectView::new(d.object));
            o.ready = true;
            o.observers = d.observers;
            self.observed.insert(url, o);
        }
        if !self.reported.is_empty() || !self.observed.is_empty() {
            info!(
                reported = self.reported.len(),
                observed = self.observed.len(),
                "sync objects resumed"
            );
        }
        Ok(())
    }

    fn objects(&self) -> usize {
        self.reported.len() + self.observed.len()
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    // ---- plumbing -------------------------------------------------------------

    fn listen(&self, addrs: Vec<Address>, ctx: &mut Context<Self>) {
        for a in addrs {
            let add = self
                .bus
                .add_listener(a.clone(), ctx.address().recipient(), None);
            ctx.spawn(
                async move {
                    if let Err(e) = add.await {
                        warn!(address = %a, error = %e, "sync listener not added");
                    }
                }
                .into_actor(self),
            );
        }
    }

    fn unlisten(&self, addrs: &[Address]) {
        for a in addrs {
            self.bus.actor().do_send(RemoveAllListeners(a.clone()));
        }
    }

    /// What a reporter listens on and subscribes to at the node (§9 Create step 2):
    /// `<obj>`, `<obj>/subscription` and `<obj>/children/`, where runtime-core
    /// observers send their children. What it publishes on `<obj>/children/`
    /// itself goes past its own listener ([`Bus::send_to_stub`]).
    fn reported_channels(obj: &Address) -> Vec<Address> {
        vec![
            obj.clone(),
            channel(obj, Channel::Subscription),
            channel(obj, Channel::Children),
        ]
    }

    fn observed_channels(obj: &Address) -> Vec<Address> {
        vec![
            channel(obj, Channel::Changes),
            channel(obj, Channel::Children),
        ]
    }

    /// Posts `msg` and logs a failure (what it was for in `what`).
    fn post_logged(&self, msg: Message, what: &'static str, ctx: &mut Context<Self>) {
        let post = self.bus.post(msg);
        ctx.spawn(
            async move {
                match post.await {
                    Ok(r) if r.code().is_some_and(ResponseCode::is_success) => {}
                    Ok(r) => debug!(what, response = %r.to_json(), "sync side request refused"),
                    Err(e) => debug!(what, error = %e, "sync side request failed"),
                }
            }
            .into_actor(self),
        );
    }

    /// The node's `/sm` subscribe or unsubscribe of `resources` for `source`.
    fn node_subscription(
        &self,
        kind: MessageType,
        resources: Vec<Address>,
        source: &Address,
        ctx: &mut Context<Self>,
    ) {
        if let Some(m) = self.node_subscription_request(kind, resources, source) {
            self.post_logged(m, "node subscription", ctx);
        }
    }

    /// The request of [`node_subscription`](Self::node_subscription), if there is a
    /// node to ask.
    fn node_subscription_request(
        &self,
        kind: MessageType,
        resources: Vec<Address>,
        source: &Address,
    ) -> Option<Message> {
        // an object of another domain is subscribed to at its own domain's node
        // (federation carries the subscription there)
        let sm = match resources.first().and_then(Address::domain) {
            Some(d) if Some(d) != self.me.domain() => {
                Address::parse(&format!("domain://msg-node.{d}/sm")).ok()
            }
            _ => self.node_sm.clone(),
        }?;
        let mut m = Message::new(kind, self.me.clone(), sm);
        m.body.resources = Some(resources.iter().map(|a| a.to_string()).collect());
        m.body.source = Some(source.clone());
        Some(m)
    }

    fn subscribe_reported_at_node(
        &self,
        obj: &Address,
        reporter: &Address,
        ctx: &mut Context<Self>,
    ) {
        self.node_subscription(
            MessageType::Subscribe,
            Self::reported_channels(obj),
            reporter,
            ctx,
        );
        self.publish_audience(obj, ctx);
    }

    /// Tells the node who may hear a reported object's changes and children: the
    /// managers of its accepted observers (the node parks every other
    /// subscription to them, see the node's subscription manager).
    pub(super) fn publish_audience(&self, obj: &Address, ctx: &mut Context<Self>) {
        let (Some(r), Some(sm)) = (self.reported.get(obj), self.node_sm.clone()) else {
            return;
        };
        let mut audience: Vec<&str> = r
            .observers
            .iter()
            .filter(|l| l.manager != self.me)
            .map(|l| l.manager.as_str())
            .collect();
        audience.sort_unstable();
        audience.dedup();
        let mut m = Message::new(MessageType::Update, self.me.clone(), sm);
        m.body.resource = Some(OneOrMany::One(obj.to_string()));
        m.body.value = Some(json!({ "audience": audience }));
        self.post_logged(m, "object audience", ctx);
    }

    fn registry_request(&self, kind: MessageType, body: Value, ctx: &mut Context<Self>) {
        let (Some(to), Value::Object(m)) = (self.registry.clone(), body) else {
            return;
        };
        let msg = Message::new(kind, self.me.clone(), to).with_body(body_of(m));
        self.post_logged(msg, "domain registry", ctx);
    }

    fn register_object(&self, obj: &Address, ctx: &mut Context<Self>) {
        let Some(r) = self.reported.get(obj) else {
            return;
        };
        let domain = self.me.domain().unwrap_or("localhost");
        let value = r.view.with(|s| {
            // the registry wants a schema URL and a name: the catalogue's, by default
            let schema = s.schema.clone().unwrap_or_else(|| {
                format!(
                    "hyperty-catalogue://catalogue.{domain}/.well-known/dataschema/{}",
                    s.scheme
                )
            });
            let name = match s.name.is_empty() {
                true => s.scheme.clone(),
                false => s.name.clone(),
            };
            json!({
                "url": s.url.as_str(),
                "name": name,
                "schema": schema,
                "reporter": s.reporter.as_str(),
                "expires": self.config.registry_expires.as_secs(),
                "dataSchemes": [s.scheme],
                "resources": r.resources,
                "status": "live",
                "runtime": self.runtime.as_str(),
            })
        });
        self.registry_request(MessageType::Create, json!({ "value": value }), ctx);
    }

    fn mark(&mut self, key: Key, ctx: &mut Context<Self>) {
        self.dirty.insert(key);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.config.flush_interval, |act, _| {
                if let Err(e) = act.flush() {
                    warn!(error = %e, "sync store write failed");
                }
            });
        }
    }

    fn flush(&mut self) -> Result<(), SyncError> {
        self.flush_scheduled = false;
        let writes: Vec<Write> = self
            .dirty
            .drain()
            .collect::<Vec<_>>()
            .into_iter()
            .map(|k| match k {
                Key::Reported(u) => {
                    let doc = self.reported.get(&u).and_then(|r| {
                        serde_json::to_string(&ReportedDoc {
                            object: r.view.snapshot(),
                            schema: r.schema.as_ref().map(|s| s.raw().clone()),
                            history: r.history.iter().map(|c| c.to_entry(&u)).collect(),
                            observers: r.observers.clone(),
                            authorise: r.authorise.clone(),
                            resources: r.resources.clone(),
                            next_child: r.next_child,
                        })
                        .ok()
                    });
                    Write::Reported(u.to_string(), doc)
                }
                Key::Observed(u) => {
                    let doc = self.observed.get(&u).filter(|o| o.ready).and_then(|o| {
                        serde_json::to_string(&ObservedDoc {
                            object: o.view.snapshot(),
                            observers: o.observers.clone(),
                        })
                        .ok()
                    });
                    Write::Observed(u.to_string(), doc)
                }
            })
            .collect();
        match &self.store {
            Some(store) => store.write(writes),
            None => Ok(()),
        }
    }

    /// Pushes `ev` to every local handle of `obj` (dropping closed ones).
    fn notify(&mut self, obj: &Address, ev: &SyncEvent) {
        if let Some(list) = self.sinks.get_mut(obj) {
            list.retain(|(_, s)| s.push(ev.clone()));
        }
    }

    fn respond(&self, req: &Message, from: Option<&Address>, r: Result<Reply, SyncError>) {
        if req.kind == MessageType::Response {
            return;
        }
        let from = from.cloned().unwrap_or_else(|| req.to.first().clone());
        let resp = match r {
            Ok(reply) => {
                let mut resp = req.reply_from(from, ResponseCode::Ok);
                resp.body.value = reply.value;
                resp.body.resource = reply.resource.map(OneOrMany::One);
                for (k, v) in reply.extra {
                    if k == "childrenResources" {
                        if let Some(items) = v.as_array() {
                            resp.body.children_resources = Some(NestedList::from_items(
                                items.iter().filter_map(Value::as_str),
                            ));
                        }
                    } else {
                        resp.body.extra.insert(k.to_owned(), v);
                    }
                }
                resp
            }
            Err(e) => {
                debug!(id = req.id, from = %req.from, error = %e, "sync request refused");
                let mut resp = req.reply_from(from, e.response_code());
                resp.body.description = Some(e.to_string());
                resp
            }
        };
        self.bus.send(resp);
    }
}

impl Observed {
    fn new(view: Arc<ObjectView>) -> Observed {
        Observed {
            view,
            ready: false,
            observers: Vec::new(),
            early: BTreeMap::new(),
            fetching: false,
            paused: false,
            heard: false,
            idle: 0,
            level: 0,
            waiters: Vec::new(),
            unheld_since: None,
        }
    }
}

impl Actor for SyncherManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::bus::BUS_MAILBOX_CAPACITY);
        let mut addrs = vec![self.me.clone()];
        for obj in self.reported.keys() {
            addrs.extend(Self::reported_channels(obj));
        }
        for obj in self.observed.keys() {
            addrs.extend(Self::observed_channels(obj));
        }
        self.listen(addrs, ctx);
        ctx.run_interval(self.config.check_interval, |act, ctx| act.tick(ctx));
        let refresh = (self.config.registry_expires / 2).max(Duration::from_secs(1));
        ctx.run_interval(refresh, |act, ctx| {
            let urls: Vec<Address> = act.reported.keys().cloned().collect();
            for u in urls {
                act.registry_request(
                    MessageType::Update,
                    json!({"resource": u.as_str(), "method": "refresh"}),
                    ctx,
                );
            }
        });
        debug!(at = %self.me, "SyncherManager started");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Err(e) = self.flush() {
            warn!(error = %e, "sync store write failed at stop");
        }
    }
}

impl Handler<Deliver> for SyncherManager {
    type Result = ();

    fn handle(&mut self, Deliver(msg): Deliver, ctx: &mut Context<Self>) {
        let to = msg.to.first().clone();
        if to == self.me {
            if msg.kind != MessageType::Response {
                self.local(msg, ctx);
            }
            return;
        }
        if self
            .stubs
            .iter()
            .any(|s| to.as_str().strip_prefix(s.as_str()) == Some("/status"))
        {
            if msg.kind == MessageType::Update
                && msg.body.value.as_ref().and_then(Value::as_str) == Some("live")
            {
                debug!(stub = %msg.from, "stub live: renewing sync subscriptions");
                self.resync_all(ctx);
            }
            return;
        }
        if msg.kind == MessageType::Response {
            return;
        }
        let (obj, at) = match to.channel() {
            Some((base, c)) => match base.parse::<Address>() {
                Ok(b) => (b, Some(c)),
                Err(_) => return,
            },
            None => (to.clone(), None),
        };
        if self.reported.contains_key(&obj) {
            return self.on_reported(&obj, at, msg, ctx);
        }
        if self.observed.contains_key(&obj)
            && matches!(at, Some(Channel::Changes | Channel::Children))
        {
            return self.on_published(&obj, msg, ctx);
        }
        if msg.kind.expects_response() {
            self.respond(&msg, None, Err(SyncError::NotFound(obj.to_string())));
        }
    }
}

impl Handler<Attach> for SyncherManager {
    type Result = Result<(u64, Arc<ObjectView>, mpsc::Receiver<SyncEvent>), SyncError>;

    fn handle(&mut self, m: Attach, _: &mut Context<Self>) -> Self::Result {
        let view = if let Some(r) = self.reported.get(&m.url) {
            let ok = r.view.with(|s| s.reporter == m.hyperty)
                || r.observers
                    .iter()
                    .any(|l| l.hyperty == m.hyperty && l.manager == self.me);
            ok.then(|| r.view.clone())
        } else if let Some(o) = self.observed.get(&m.url) {
            o.observers.contains(&m.hyperty).then(|| o.view.clone())
        } else {
            return Err(SyncError::NotFound(m.url.to_string()));
        };
        let view = view.ok_or_else(|| {
            SyncError::Forbidden(format!(
                "{} neither reports nor observes {}",
                m.hyperty, m.url
            ))
        })?;
        let list = self.sinks.entry(m.url).or_default();
        if list.len() >= self.config.max_observers {
            return Err(SyncError::Full("handles of the object"));
        }
        self.next_sink += 1;
        let (sink, rx) = Sink::new(m.hyperty, view.clone(), self.config.channel);
        list.push((self.next_sink, sink));
        Ok((self.next_sink, view, rx))
    }
}

impl Handler<Detach> for SyncherManager {
    type Result = ();
    fn handle(&mut self, m: Detach, _: &mut Context<Self>) {
        if let Some(list) = self.sinks.get_mut(&m.url) {
            list.retain(|(id, _)| *id != m.id);
        }
    }
}

impl Handler<SetPolicy> for SyncherManager {
    type Result = Result<(), SyncError>;
    fn handle(&mut self, m: SetPolicy, _: &mut Context<Self>) -> Self::Result {
        let r = self
            .reported
            .get_mut(&m.url)
            .ok_or_else(|| SyncError::NotFound(m.url.to_string()))?;
        if r.view.with(|s| s.reporter != m.hyperty) {
            return Err(SyncError::Forbidden(format!(
                "only the reporter decides who observes {}",
                m.url
            )));
        }
        r.policy = Some(m.policy);
        Ok(())
    }
}

impl Handler<WatchStub> for SyncherManager {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, m: WatchStub, ctx: &mut Context<Self>) -> Self::Result {
        self.stubs.insert(m.0.clone());
        let status = channel_status(&m.0);
        let add = self
            .bus
            .add_listener(status, ctx.address().recipient(), None);
        Box::pin(async move {
            if let Err(e) = add.await {
                warn!(error = %e, "stub status listener not added");
            }
        })
    }
}

fn channel_status(stub: &Address) -> Address {
    stub.join("status").unwrap_or_else(|_| stub.clone())
}

impl Handler<RegisterSchema> for SyncherManager {
    type Result = Result<(), SyncError>;
    fn handle(&mut self, m: RegisterSchema, _: &mut Context<Self>) -> Self::Result {
        self.schemas.insert(&m.name, m.schema)
    }
}

impl Handler<FlushStore> for SyncherManager {
    type Result = Result<(), SyncError>;
    fn handle(&mut self, _: FlushStore, _: &mut Context<Self>) -> Self::Result {
        self.flush()
    }
}

impl Handler<Shutdown> for SyncherManager {
    type Result = Result<(), SyncError>;
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.flush();
        self.store = None;
        ctx.stop();
        r
    }
}

impl Handler<GetSyncStats> for SyncherManager {
    type Result = MessageResult<GetSyncStats>;
    fn handle(&mut self, _: GetSyncStats, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.stats;
        s.reported = self.reported.len();
        s.observed = self.observed.len();
        MessageResult(s)
    }
}
