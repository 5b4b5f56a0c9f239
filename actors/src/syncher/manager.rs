//! The SyncherManager actor at `<runtime>/sm` (rethink-wire.md §9).
//!
//! One per runtime. It listens on
//!
//! * `<rt>/sm`: the §9 requests of the runtime's hyperties (their [`Syncher`](super::Syncher)s);
//! * for each object it **reports**: `<obj>` (reads, gap fetches, child requests
//!   of remote observers) and `<obj>/subscription` (subscribe and unsubscribe from
//!   observers' managers);
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
//! Differences from runtime-core, forced by a node that checks who may send as
//! which address and by a bus that prefers local listeners: observers' managers
//! answer `delete` from `<rt>/sm`; child requests of remote observers go to
//! `<obj>` (the reporter sequences them and publishes them on
//! `<obj>/children/`, where it does not listen itself); the reporter decides
//! subscriptions itself ([`SetPolicy`]) instead of forwarding them to the
//! hyperty.

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
use super::object::{Change, History, ObjectState, Op};
use super::schema::{Schema, SchemaTable};
use super::store::{SyncStore, Write};
use super::{SyncError, SyncherConfig};
use crate::address::{Address, Channel, DataObjectUrl, HypertyUrl};
use crate::bus::{Bus, Deliver, RemoveAllListeners};
use crate::error::ToResponseCode;
use crate::message::{Body, Message, MessageType, NestedList, OneOrMany, ResponseCode};
use crate::registry::AllocateObjects;

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
        self.config.clock.now_ms()
    }

    // ---- plumbing -------------------------------------------------------------

    fn listen(&self, addrs: Vec<Address>, ctx: &mut Context<Self>) {
        for a in addrs {
            let add = self.bus.add_listener(a.clone(), ctx.address().recipient(), None);
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

    /// What a reporter listens on. Not `<obj>/children/`: a local listener there
    /// would keep the children it publishes from leaving the runtime.
    fn reported_channels(obj: &Address) -> Vec<Address> {
        vec![obj.clone(), channel(obj, Channel::Subscription)]
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
        let Some(sm) = self.node_sm.clone() else {
            return;
        };
        let mut m = Message::new(kind, self.me.clone(), sm);
        m.body.resources = Some(resources.iter().map(|a| a.to_string()).collect());
        m.body.source = Some(source.clone());
        self.post_logged(m, "node subscription", ctx);
    }

    fn subscribe_reported_at_node(&self, obj: &Address, reporter: &Address, ctx: &mut Context<Self>) {
        self.node_subscription(MessageType::Subscribe, Self::reported_channels(obj), reporter, ctx);
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
                format!("hyperty-catalogue://catalogue.{domain}/.well-known/dataschema/{}", s.scheme)
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
                            history: r
                                .history
                                .iter()
                                .map(|c| c.to_entry(&u))
                                .collect(),
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

    // ---- the reporter side --------------------------------------------------

    /// Commits a change of a reported object: schema check, next version, history,
    /// store, local handles, remote observers.
    fn commit(
        &mut self,
        obj: &Address,
        source: Address,
        child: Option<String>,
        op: Op,
        ctx: &mut Context<Self>,
    ) -> Result<Change, SyncError> {
        let now = self.now();
        let max = self.config.max_data_bytes;
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let version = r.view.with(|s| s.version) + 1;
        let change = Change {
            version,
            source,
            last_modified: now,
            child,
            op,
        };
        let next = r.view.with(|s| s.preview(&change))?;
        if let Some(schema) = &r.schema {
            schema.check(&next.data)?;
        }
        if data_len(&next.data) > max {
            return Err(SyncError::BadRequest(format!(
                "object data larger than {max} bytes"
            )));
        }
        r.view.write(|s| {
            *s = next;
            s.last_modified = now;
        });
        r.history.push(change.clone());
        let remote = r.observers.iter().any(|l| l.manager != self.me);
        self.stats.committed += 1;
        self.mark(Key::Reported(obj.clone()), ctx);
        self.notify(obj, &SyncEvent::Changed(change.clone()));
        if remote {
            self.publish(obj, &change);
        }
        Ok(change)
    }

    fn publish(&self, obj: &Address, change: &Change) {
        let (kind, to) = match (&change.child, &change.op) {
            (Some(_), Op::CreateChild { .. }) => {
                (MessageType::Create, channel(obj, Channel::Children))
            }
            (Some(_), _) => (MessageType::Update, channel(obj, Channel::Children)),
            (None, _) => (MessageType::Update, channel(obj, Channel::Changes)),
        };
        let mut m = Message::new(kind, obj.clone(), to).with_body(body_of(change.to_body(obj)));
        m.id = self.bus.next_id();
        self.bus.send(m);
    }

    /// May `source` (via the manager `via`) write children of `r`?
    fn participant(r: &Reported, source: &Address, via: &Address) -> bool {
        r.view.with(|s| &s.reporter == source)
            || r
                .observers
                .iter()
                .any(|l| &l.hyperty == source && &l.manager == via)
    }

    /// A write to a reported object by `source` through the manager `via`.
    fn write(
        &mut self,
        req: &Message,
        source: Address,
        via: &Address,
        ctx: &mut Context<Self>,
    ) -> Result<Reply, SyncError> {
        let res = resource(req)
            .ok_or_else(|| SyncError::BadRequest("missing field 'body.resource'".into()))?;
        let (obj, target) = target(res)?;
        let r = self
            .reported
            .get(&obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let reporter = r.view.with(|s| s.reporter.clone());
        if let Some(v) = req.body.extra.get("version").filter(|v| !v.is_null()) {
            let at = r.view.with(|s| s.version);
            let got = v
                .as_u64()
                .ok_or_else(|| SyncError::BadRequest("body.version must be a number".into()))?;
            if got != at {
                return Err(SyncError::StaleVersion { got, at });
            }
        }
        let map = body_map(&req.body);
        match (req.kind.clone(), target) {
            (MessageType::Update, Target::Data) => {
                if source != reporter {
                    return Err(SyncError::Forbidden(format!(
                        "only the reporter {reporter} updates {obj}"
                    )));
                }
                let op = Op::parse(&MessageType::Update, &map)?;
                let c = self.commit(&obj, source, None, op, ctx)?;
                Ok(Reply::version(c.version))
            }
            (MessageType::Create, Target::NewChild) => {
                if !Self::participant(r, &source, via) {
                    return Err(SyncError::Forbidden(format!(
                        "{source} neither reports nor observes {obj}"
                    )));
                }
                let value = req.body.value.clone().unwrap_or(Value::Null);
                let id = {
                    let r = self
                        .reported
                        .get_mut(&obj)
                        .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
                    r.next_child += 1;
                    let tag: String = source
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(8)
                        .collect();
                    format!("{tag}#{}", r.next_child)
                };
                let c = self.commit(&obj, source, Some(id.clone()), Op::CreateChild { value }, ctx)?;
                Ok(Reply {
                    resource: Some(id),
                    value: Some(json!({ "version": c.version })),
                    extra: Vec::new(),
                })
            }
            (MessageType::Update, Target::Child(id)) => {
                let creator = r
                    .view
                    .with(|s| s.children.get(&id).map(|c| c.reporter.clone()))
                    .ok_or_else(|| SyncError::NotFound(format!("child {id} of {obj}")))?;
                if source != creator && source != reporter {
                    return Err(SyncError::Forbidden(format!(
                        "only {creator} or the reporter updates child {id}"
                    )));
                }
                if !Self::participant(r, &source, via) {
                    return Err(SyncError::Forbidden(format!(
                        "{source} no longer observes {obj}"
                    )));
                }
                let op = Op::parse(&MessageType::Update, &map)?;
                if matches!(op, Op::CreateChild { .. }) {
                    return Err(SyncError::BadRequest("not a child update".into()));
                }
                let c = self.commit(&obj, source, Some(id), op, ctx)?;
                Ok(Reply::version(c.version))
            }
            (MessageType::Event, Target::NewChild) => {
                if !Self::participant(r, &source, via) {
                    return Err(SyncError::Forbidden(format!(
                        "{source} neither reports nor observes {obj}"
                    )));
                }
                let value = req.body.value.clone().unwrap_or(Value::Null);
                let remote = r.observers.iter().any(|l| l.manager != self.me);
                self.notify(
                    &obj,
                    &SyncEvent::Event {
                        source: source.clone(),
                        value: value.clone(),
                    },
                );
                if remote {
                    let mut m = Message::new(
                        MessageType::Event,
                        obj.clone(),
                        channel(&obj, Channel::Children),
                    )
                    .with_value(value);
                    m.body.source = Some(source);
                    m.id = self.bus.next_id();
                    self.bus.send(m);
                }
                Ok(Reply::default())
            }
            (kind, _) => Err(SyncError::BadRequest(format!(
                "{kind} of {res} is not a sync write"
            ))),
        }
    }

    fn decide(&self, r: &Reported, req: &SubscriptionRequest) -> SubscriptionDecision {
        match &r.policy {
            Some(p) => p(req),
            None => SubscriptionDecision::Accept,
        }
    }

    /// An observer asks to subscribe to a reported object (locally, or from a
    /// remote manager on `<obj>/subscription`): the reporter's decision, then
    /// the snapshot.
    fn accept(
        &mut self,
        obj: &Address,
        observer: Address,
        manager: Address,
        identity: Option<Value>,
    ) -> Result<Reply, SyncError> {
        let max = self.config.max_observers;
        let r = self
            .reported
            .get(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let req = SubscriptionRequest {
            object: obj.clone(),
            observer: observer.clone(),
            manager: manager.clone(),
            identity,
            invited: r.authorise.contains(&observer),
        };
        if let SubscriptionDecision::Reject(why) = self.decide(r, &req) {
            info!(object = %obj, %observer, reason = %why, "subscription rejected");
            return Err(SyncError::Forbidden(why));
        }
        let link = Link {
            hyperty: observer.clone(),
            manager,
        };
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if !r.observers.contains(&link) {
            if r.observers.len() >= max {
                return Err(SyncError::Full("observers of the object"));
            }
            r.observers.push(link);
        }
        let snapshot = r.view.snapshot();
        let schema = snapshot.schema.clone();
        self.dirty.insert(Key::Reported(obj.clone()));
        self.notify(obj, &SyncEvent::Subscribed { observer });
        Ok(Reply {
            resource: Some(obj.to_string()),
            value: Some(snapshot.to_value()),
            extra: schema.map(|s| vec![("schema", json!(s))]).unwrap_or_default(),
        })
    }

    fn leave(&mut self, obj: &Address, observer: &Address, manager: &Address) -> Result<Reply, SyncError> {
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let before = r.observers.len();
        r.observers
            .retain(|l| !(&l.hyperty == observer && &l.manager == manager));
        if r.observers.len() == before {
            return Err(SyncError::NotFound(format!("{observer} as observer of {obj}")));
        }
        self.dirty.insert(Key::Reported(obj.clone()));
        self.notify(
            obj,
            &SyncEvent::Unsubscribed {
                observer: observer.clone(),
            },
        );
        Ok(Reply::default())
    }

    /// `read` of a reported object by the manager `via`: the deltas after
    /// `body.version` if the history still has them, else the snapshot.
    fn read_reported(&self, req: &Message, obj: &Address, via: &Address) -> Result<Reply, SyncError> {
        let r = self
            .reported
            .get(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if via != &self.me && !r.observers.iter().any(|l| &l.manager == via) {
            return Err(SyncError::Forbidden(format!(
                "{via} has no accepted observer of {obj}"
            )));
        }
        let current = r.view.with(|s| s.version);
        if let Some(v) = req.body.extra.get("version").and_then(Value::as_u64) {
            if let Some(changes) = r.history.since(v, current) {
                return Ok(Reply::value(json!({
                    "version": current,
                    "changes": changes.iter().map(|c| c.to_entry(obj)).collect::<Vec<_>>(),
                })));
            }
        }
        Ok(Reply::value(r.view.snapshot().to_value()))
    }

    fn invite(&mut self, obj: &Address, invitees: Vec<Address>, ctx: &mut Context<Self>) -> Result<(), SyncError> {
        let max = self.config.max_observers;
        let r = self
            .reported
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if r.authorise.len() + invitees.len() > max {
            return Err(SyncError::Full("invitees of the object"));
        }
        let (meta, reporter) = r.view.with(|s| {
            (
                json!({"url": s.url, "name": s.name, "scheme": s.scheme, "reporter": s.reporter, "schema": s.schema}),
                s.reporter.clone(),
            )
        });
        for i in &invitees {
            if !r.authorise.contains(i) {
                r.authorise.push(i.clone());
            }
        }
        self.dirty.insert(Key::Reported(obj.clone()));
        let from = channel(obj, Channel::Subscription);
        for invitee in invitees {
            let mut m = Message::new(MessageType::Create, from.clone(), invitee.clone())
                .with_value(meta.clone());
            m.body.source = Some(reporter.clone());
            if let Some(s) = meta.get("schema").filter(|s| !s.is_null()) {
                m.body.extra.insert("schema".into(), s.clone());
            }
            let post = self.bus.post(m);
            let obj = obj.clone();
            ctx.spawn(post.into_actor(self).map(move |r, act, _| {
                let code = match r {
                    Ok(resp) => resp.code().map_or(500, ResponseCode::as_u16),
                    Err(e) => e.response_code().as_u16(),
                };
                debug!(object = %obj, %invitee, code, "invitation answered");
                act.notify(&obj, &SyncEvent::InvitationAnswered { invitee, code });
            }));
        }
        Ok(())
    }

    fn create(&mut self, req: Message, ctx: &mut Context<Self>) {
        let prepared = self.prepare_create(&req);
        let (reporter, scheme, state, schema, resources, authorise) = match prepared {
            Ok(p) => p,
            Err(e) => return self.respond(&req, None, Err(e)),
        };
        let Some(alloc) = self.allocator.as_ref().map(|a| {
            a.send(AllocateObjects {
                hyperty: reporter.clone(),
                scheme: scheme.clone(),
                number: 1,
            })
        }) else {
            return self.respond(&req, None, Err(SyncError::Unavailable("object allocation".into())));
        };
        let _span = tracing::debug_span!("sm.create", reporter = %reporter, %scheme).entered();
        ctx.spawn(alloc.into_actor(self).map(move |r, act, ctx| {
            let url = match r {
                Ok(Ok(list)) => list.into_iter().next(),
                Ok(Err(e)) => {
                    return act.respond(&req, None, Err(SyncError::Unavailable(format!("object allocation: {e}"))))
                }
                Err(_) => None,
            };
            let Some(url) = url else {
                return act.respond(&req, None, Err(SyncError::Unavailable("object allocation".into())));
            };
            if act.objects() >= act.config.max_objects {
                return act.respond(&req, None, Err(SyncError::Full("sync objects")));
            }
            let mut state = state;
            state.url = url.clone();
            info!(object = %url, reporter = %reporter, "data object created");
            act.reported.insert(
                url.clone(),
                Reported {
                    view: ObjectView::new(state),
                    schema,
                    history: History::new(act.config.history),
                    observers: Vec::new(),
                    authorise: Vec::new(),
                    resources,
                    policy: None,
                    next_child: 0,
                },
            );
            act.listen(Self::reported_channels(&url), ctx);
            act.subscribe_reported_at_node(&url, reporter.address(), ctx);
            act.register_object(&url, ctx);
            act.mark(Key::Reported(url.clone()), ctx);
            let invited = match authorise.is_empty() {
                true => Ok(()),
                false => act.invite(&url, authorise, ctx),
            };
            act.respond(
                &req,
                None,
                invited.map(|()| Reply {
                    resource: Some(url.to_string()),
                    value: Some(json!({"version": 0})),
                    extra: vec![("childrenResources", json!([channel(&url, Channel::Children)]))],
                }),
            );
        }));
    }

    #[allow(clippy::type_complexity)]
    fn prepare_create(
        &self,
        req: &Message,
    ) -> Result<(HypertyUrl, String, ObjectState, Option<Schema>, Vec<String>, Vec<Address>), SyncError> {
        let reporter = HypertyUrl::from_address(req.from.clone())
            .map_err(|_| SyncError::Forbidden("only a hyperty reports data objects".into()))?;
        let value = req.body.value.clone().unwrap_or_else(|| json!({}));
        if !value.is_object() {
            return Err(SyncError::BadRequest("body.value must be an object".into()));
        }
        if let Some(r) = value.get("reporter").and_then(Value::as_str) {
            if r != reporter.as_str() {
                return Err(SyncError::Forbidden(format!(
                    "{} cannot create objects reported by {r}",
                    reporter
                )));
            }
        }
        let name = value.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
        let data = value.get("data").cloned().unwrap_or_else(|| json!({}));
        let resources = match value.get("resources") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => Vec::<String>::deserialize(v).map_err(|_| {
                SyncError::BadRequest("value.resources must be a list of strings".into())
            })?,
        };
        let (schema_name, schema) = self.schemas.resolve(req.body.extra.get("schema"))?;
        let scheme = schema
            .as_ref()
            .and_then(|s| s.scheme().map(str::to_owned))
            .or_else(|| {
                req.body
                    .extra
                    .get("scheme")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "resource".to_owned());
        let domain = self.me.domain().unwrap_or("localhost");
        DataObjectUrl::generate(&scheme, domain)
            .map_err(|e| SyncError::BadRequest(format!("scheme {scheme:?}: {e}")))?;
        if let Some(s) = &schema {
            s.check(&data)?;
        }
        if data_len(&data) > self.config.max_data_bytes {
            return Err(SyncError::BadRequest(format!(
                "object data larger than {} bytes",
                self.config.max_data_bytes
            )));
        }
        if self.objects() >= self.config.max_objects {
            return Err(SyncError::Full("sync objects"));
        }
        let authorise = match req.body.extra.get("authorise") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => Vec::<Address>::deserialize(v).map_err(|_| {
                SyncError::BadRequest("body.authorise must be a list of hyperty URLs".into())
            })?,
        };
        let mut state = ObjectState::new(
            self.me.clone(),
            &scheme,
            &name,
            reporter.address().clone(),
            data,
            self.now(),
        );
        state.schema = schema_name;
        Ok((reporter, scheme, state, schema, resources, authorise))
    }

    fn delete_reported(&mut self, obj: &Address, by: &Address, ctx: &mut Context<Self>) -> Result<Reply, SyncError> {
        let r = self
            .reported
            .get(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        let reporter = r.view.with(|s| s.reporter.clone());
        if &reporter != by {
            return Err(SyncError::Forbidden(format!(
                "only the reporter {reporter} deletes {obj}"
            )));
        }
        let Some(r) = self.reported.remove(obj) else {
            return Err(SyncError::NotFound(obj.to_string()));
        };
        info!(object = %obj, "data object deleted");
        self.notify(obj, &SyncEvent::Deleted);
        self.sinks.remove(obj);
        if r.observers.iter().any(|l| l.manager != self.me) {
            let mut m = Message::new(
                MessageType::Delete,
                channel(obj, Channel::Subscription),
                channel(obj, Channel::Changes),
            );
            m.body.resource = Some(OneOrMany::One(obj.to_string()));
            m.id = self.bus.next_id();
            self.bus.send(m);
        }
        self.unlisten(&Self::reported_channels(obj));
        self.node_subscription(
            MessageType::Unsubscribe,
            Self::reported_channels(obj),
            &reporter,
            ctx,
        );
        self.registry_request(MessageType::Delete, json!({"resource": obj.as_str()}), ctx);
        if let Some(to) = self.node_allocation.clone() {
            let mut m = Message::new(MessageType::Delete, self.me.clone(), to);
            m.body.children_resources = Some(NestedList::from_items([obj.as_str()]));
            self.post_logged(m, "address release", ctx);
        }
        self.mark(Key::Reported(obj.clone()), ctx);
        Ok(Reply::default())
    }

    // ---- the observer side --------------------------------------------------

    fn subscribe(&mut self, req: Message, obj: Address, ctx: &mut Context<Self>) {
        let observer = req.from.clone();
        if self.reported.contains_key(&obj) {
            let me = self.me.clone();
            let r = self.accept(&obj, observer, me, req.body.identity.clone());
            if r.is_ok() {
                self.mark(Key::Reported(obj.clone()), ctx);
            }
            return self.respond(&req, None, r);
        }
        if let Some(o) = self.observed.get(&obj) {
            if o.ready && o.observers.contains(&observer) {
                let snap = o.view.snapshot().to_value();
                return self.respond(&req, None, Ok(Reply::value(snap)));
            }
        }
        let first = !self.observed.contains_key(&obj);
        if first {
            if self.objects() >= self.config.max_objects {
                return self.respond(&req, None, Err(SyncError::Full("sync objects")));
            }
            let placeholder = ObjectState::new(obj.clone(), obj.scheme(), "", obj.clone(), Value::Null, 0);
            self.observed
                .insert(obj.clone(), Observed::new(ObjectView::new(placeholder)));
            self.listen(Self::observed_channels(&obj), ctx);
            self.node_subscription(MessageType::Subscribe, Self::observed_channels(&obj), &observer, ctx);
        }
        // §9 Subscribe step 3: the observer hears 100 while the reporter decides
        let mut progress = req.reply_from(self.me.clone(), ResponseCode::Provisional);
        progress.body.resource = Some(OneOrMany::One(obj.to_string()));
        progress.body.children_resources =
            Some(NestedList::from_items([channel(&obj, Channel::Children).as_str()]));
        self.bus.send(progress);
        let mut ask = Message::new(
            MessageType::Subscribe,
            self.me.clone(),
            channel(&obj, Channel::Subscription),
        );
        ask.body
            .extra
            .insert("subscriber".into(), json!(observer.as_str()));
        ask.body.identity = req.body.identity.clone();
        let post = self.bus.post(ask);
        let _span = tracing::debug_span!("sm.subscribe", object = %obj, %observer).entered();
        ctx.spawn(post.into_actor(self).map(move |r, act, ctx| {
            let r = r
                .map_err(|e| SyncError::from_response(e.response_code(), Some(&e.to_string())))
                .and_then(success)
                .and_then(|resp| ObjectState::from_value(resp.body.value.as_ref().unwrap_or(&Value::Null)));
            act.subscribed(req, obj, r, ctx);
        }));
    }

    fn subscribed(
        &mut self,
        req: Message,
        obj: Address,
        r: Result<ObjectState, SyncError>,
        ctx: &mut Context<Self>,
    ) {
        let observer = req.from.clone();
        let Some(o) = self.observed.get_mut(&obj) else {
            return self.respond(&req, None, Err(SyncError::NotFound(obj.to_string())));
        };
        match r {
            Ok(snap) if snap.url == obj => {
                let current = o.view.with(|s| s.version);
                let replaced = !o.ready || snap.version > current;
                if replaced {
                    let was_ready = o.ready;
                    o.view.write(|s| *s = snap);
                    o.ready = true;
                    if was_ready {
                        let v = o.view.with(|s| s.version);
                        self.notify(&obj, &SyncEvent::Resync { version: v });
                    }
                }
                if let Some(o) = self.observed.get_mut(&obj) {
                    if !o.observers.contains(&observer) {
                        o.observers.push(observer.clone());
                    }
                }
                info!(object = %obj, %observer, "subscribed");
                self.drain(&obj, ctx);
                self.mark(Key::Observed(obj.clone()), ctx);
                let snap = self
                    .observed
                    .get(&obj)
                    .map(|o| o.view.snapshot().to_value())
                    .unwrap_or(Value::Null);
                self.respond(
                    &req,
                    None,
                    Ok(Reply {
                        resource: Some(obj.to_string()),
                        value: Some(snap),
                        extra: Vec::new(),
                    }),
                );
            }
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(_) => SyncError::BadRequest("the reporter answered another object".into()),
                };
                if o.observers.is_empty() {
                    self.forget_observed(&obj, &observer, ctx);
                }
                self.respond(&req, None, Err(e));
            }
        }
    }

    /// Drops the replica of `obj`: listeners, node subscription, store.
    fn forget_observed(&mut self, obj: &Address, source: &Address, ctx: &mut Context<Self>) {
        if self.observed.remove(obj).is_none() {
            return;
        }
        self.sinks.remove(obj);
        self.unlisten(&Self::observed_channels(obj));
        self.node_subscription(MessageType::Unsubscribe, Self::observed_channels(obj), source, ctx);
        self.mark(Key::Observed(obj.clone()), ctx);
    }

    fn unsubscribe(&mut self, req: &Message, obj: &Address, ctx: &mut Context<Self>) -> Result<Reply, SyncError> {
        let observer = req.from.clone();
        if self.reported.contains_key(obj) {
            let me = self.me.clone();
            let r = self.leave(obj, &observer, &me)?;
            self.drop_sinks_of(obj, &observer);
            self.mark(Key::Reported(obj.clone()), ctx);
            return Ok(r);
        }
        let o = self
            .observed
            .get_mut(obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if !o.observers.contains(&observer) {
            return Err(SyncError::NotFound(format!("{observer} as observer of {obj}")));
        }
        o.observers.retain(|a| a != &observer);
        let last = o.observers.is_empty();
        self.drop_sinks_of(obj, &observer);
        let mut m = Message::new(
            MessageType::Unsubscribe,
            self.me.clone(),
            channel(obj, Channel::Subscription),
        );
        m.body.source = Some(observer.clone());
        self.post_logged(m, "unsubscribe", ctx);
        if last {
            self.forget_observed(obj, &observer, ctx);
        } else {
            self.mark(Key::Observed(obj.clone()), ctx);
        }
        info!(object = %obj, %observer, "unsubscribed");
        Ok(Reply::default())
    }

    fn drop_sinks_of(&mut self, obj: &Address, hyperty: &Address) {
        if let Some(list) = self.sinks.get_mut(obj) {
            list.retain(|(_, s)| &s.hyperty != hyperty);
        }
    }

    /// A change published by the reporter of an observed object.
    fn receive(&mut self, obj: &Address, change: Change, ctx: &mut Context<Self>) {
        let limit = self.config.reorder_buffer;
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        o.heard = true;
        let current = o.view.with(|s| s.version);
        if !o.ready {
            if o.early.len() < limit {
                o.early.insert(change.version, change);
            }
            return;
        }
        if change.version <= current {
            self.stats.stale += 1;
            return;
        }
        if change.version > current + 1 {
            if o.early.len() < limit {
                o.early.insert(change.version, change);
            }
            debug!(object = %obj, at = current, "gap in the changes, fetching what was missed");
            return self.fetch(obj, ctx);
        }
        self.apply_observed(obj, change, ctx);
        self.drain(obj, ctx);
    }

    fn apply_observed(&mut self, obj: &Address, change: Change, ctx: &mut Context<Self>) -> bool {
        let Some(o) = self.observed.get_mut(obj) else {
            return false;
        };
        match o.view.write(|s| s.apply(&change)) {
            Ok(()) => {
                self.stats.applied += 1;
                self.notify(obj, &SyncEvent::Changed(change));
                self.mark(Key::Observed(obj.clone()), ctx);
                true
            }
            Err(e) => {
                warn!(object = %obj, version = change.version, error = %e, "change does not apply, fetching a snapshot");
                o.early.clear();
                let v = o.view.with(|s| s.version);
                // ask for everything: the reporter answers with its snapshot
                o.view.write(|s| s.version = v);
                self.fetch_from(obj, None, ctx);
                false
            }
        }
    }

    /// Applies buffered changes that are next in line; fetches if a gap remains.
    fn drain(&mut self, obj: &Address, ctx: &mut Context<Self>) {
        loop {
            let Some(o) = self.observed.get_mut(obj) else {
                return;
            };
            let current = o.view.with(|s| s.version);
            let Some((&v, _)) = o.early.first_key_value() else {
                return;
            };
            if v <= current {
                o.early.remove(&v);
                continue;
            }
            if v > current + 1 {
                return self.fetch(obj, ctx);
            }
            let Some(c) = o.early.remove(&v) else { return };
            if !self.apply_observed(obj, c, ctx) {
                return;
            }
        }
    }

    fn fetch(&mut self, obj: &Address, ctx: &mut Context<Self>) {
        let v = self.observed.get(obj).map(|o| o.view.with(|s| s.version));
        self.fetch_from(obj, v, ctx);
    }

    /// Asks the reporter for what came after `version` (`None`: a snapshot).
    fn fetch_from(&mut self, obj: &Address, version: Option<u64>, ctx: &mut Context<Self>) {
        let timeout = self.config.fetch_timeout;
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        if o.fetching || !o.ready {
            return;
        }
        o.fetching = true;
        self.stats.fetches += 1;
        let mut m = Message::new(MessageType::Read, self.me.clone(), obj.clone());
        if let Some(v) = version {
            m.body.extra.insert("version".into(), json!(v));
        }
        let post = self.bus.post(m);
        let obj = obj.clone();
        ctx.spawn(
            async move { tokio::time::timeout(timeout, post).await }
                .into_actor(self)
                .map(move |r, act, ctx| {
                    let r = match r {
                        Ok(Ok(resp)) => Ok(resp),
                        Ok(Err(e)) => Err(SyncError::from_response(e.response_code(), Some(&e.to_string()))),
                        Err(_) => Err(SyncError::Unavailable("the reporter (fetch timed out)".into())),
                    };
                    act.fetched(&obj, r, ctx);
                }),
        );
    }

    fn fetched(&mut self, obj: &Address, r: Result<Message, SyncError>, ctx: &mut Context<Self>) {
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        o.fetching = false;
        let resp = match r {
            Ok(resp) => resp,
            Err(e) => {
                debug!(object = %obj, error = %e, "fetch failed, trying again");
                let retry = self.config.fetch_timeout.min(self.config.check_interval);
                let obj = obj.clone();
                ctx.run_later(retry, move |act, ctx| {
                    let pending = act
                        .observed
                        .get(&obj)
                        .is_some_and(|o| !o.early.is_empty() || !o.waiters.is_empty());
                    if pending {
                        act.fetch(&obj, ctx);
                    }
                });
                return;
            }
        };
        match resp.code().map(ResponseCode::as_u16) {
            Some(200) => {}
            Some(404) => {
                info!(object = %obj, "observed object is gone");
                return self.observed_deleted(obj, ctx);
            }
            _ => {
                warn!(object = %obj, response = %resp.to_json(), "the reporter refused a fetch");
                let waiters = std::mem::take(&mut o.waiters);
                let e = SyncError::from_response(
                    resp.code().unwrap_or(ResponseCode::InternalError),
                    resp.body.description_text(),
                );
                for w in waiters {
                    self.respond(&w, None, Err(e.clone()));
                }
                return;
            }
        }
        let value = resp.body.value.unwrap_or(Value::Null);
        let before = o.view.with(|s| s.version);
        if let Some(changes) = value.get("changes").and_then(Value::as_array) {
            for c in changes {
                match Change::from_entry(c) {
                    Ok(c) => self.receive_fetched(obj, c, ctx),
                    Err(e) => warn!(object = %obj, error = %e, "unreadable change in a fetch"),
                }
            }
        } else {
            match ObjectState::from_value(&value) {
                Ok(snap) if snap.url == *obj && snap.version >= before => {
                    self.stats.snapshots += 1;
                    let version = snap.version;
                    o.view.write(|s| *s = snap);
                    o.early.retain(|v, _| *v > version);
                    self.notify(obj, &SyncEvent::Resync { version });
                    self.mark(Key::Observed(obj.clone()), ctx);
                }
                Ok(_) => warn!(object = %obj, "the reporter answered an older snapshot"),
                Err(e) => warn!(object = %obj, error = %e, "unreadable snapshot"),
            }
        }
        let Some(o) = self.observed.get_mut(obj) else {
            return;
        };
        let after = o.view.with(|s| s.version);
        if after == before && !o.early.is_empty() {
            // the reporter has nothing between: what waits is newer than it knows
            warn!(object = %obj, at = after, "dropping changes the reporter does not know");
            o.early.clear();
        }
        let waiters = std::mem::take(&mut o.waiters);
        self.drain(obj, ctx);
        let v = self.observed.get(obj).map_or(after, |o| o.view.with(|s| s.version));
        for w in waiters {
            self.respond(&w, None, Ok(Reply::version(v)));
        }
    }

    fn receive_fetched(&mut self, obj: &Address, c: Change, ctx: &mut Context<Self>) {
        let Some(o) = self.observed.get(obj) else {
            return;
        };
        let current = o.view.with(|s| s.version);
        if c.version == current + 1 {
            self.apply_observed(obj, c, ctx);
        }
    }

    fn observed_deleted(&mut self, obj: &Address, ctx: &mut Context<Self>) {
        let Some(o) = self.observed.get(obj) else {
            return;
        };
        let source = o.observers.first().cloned().unwrap_or_else(|| self.me.clone());
        let waiters: Vec<Message> = o.waiters.clone();
        self.notify(obj, &SyncEvent::Deleted);
        for w in waiters {
            self.respond(&w, None, Err(SyncError::NotFound(obj.to_string())));
        }
        self.forget_observed(obj, &source, ctx);
    }

    /// A message on `<obj>/changes` or `<obj>/children/` of an observed object.
    fn on_published(&mut self, obj: &Address, msg: Message, ctx: &mut Context<Self>) {
        let subscription = channel(obj, Channel::Subscription);
        match msg.kind {
            MessageType::Delete if msg.from == subscription => {
                self.observed_deleted(obj, ctx);
                let mut reply = Reply::default();
                reply.extra.push(("source", json!(self.runtime.as_str())));
                let me = self.me.clone();
                self.respond(&msg, Some(&me), Ok(reply));
            }
            MessageType::Event if msg.from == *obj => {
                let source = msg.body.source.clone().unwrap_or_else(|| obj.clone());
                let value = msg.body.value.clone().unwrap_or(Value::Null);
                if self.observed.get(obj).is_some_and(|o| !o.observers.is_empty()) {
                    self.notify(obj, &SyncEvent::Event { source, value });
                }
            }
            MessageType::Update | MessageType::Create if msg.from == *obj => {
                let mut map = body_map(&msg.body);
                map.insert("type".into(), json!(msg.kind.as_str()));
                match Change::from_entry(&Value::Object(map)) {
                    Ok(c) => self.receive(obj, c, ctx),
                    Err(e) => warn!(object = %obj, error = %e, "unreadable change dropped"),
                }
            }
            _ => debug!(object = %obj, from = %msg.from, kind = %msg.kind, "not from the reporter: dropped"),
        }
    }

    /// Renews node subscriptions and address claims, and checks every observed
    /// object (after a protocol stub came back).
    fn resync_all(&mut self, ctx: &mut Context<Self>) {
        let reported: Vec<(Address, Address)> = self
            .reported
            .iter()
            .map(|(u, r)| (u.clone(), r.view.with(|s| s.reporter.clone())))
            .collect();
        for (obj, reporter) in &reported {
            self.subscribe_reported_at_node(obj, reporter, ctx);
        }
        if let Some(to) = self.node_allocation.clone() {
            for batch in reported.chunks(RECLAIM_BATCH) {
                let list: Vec<&str> = batch.iter().map(|(u, _)| u.as_str()).collect();
                let m = Message::new(MessageType::Create, self.me.clone(), to.clone())
                    .with_value(json!({ "reclaim": list }));
                self.post_logged(m, "re-claiming object addresses", ctx);
            }
        }
        let observed: Vec<(Address, Address)> = self
            .observed
            .iter()
            .filter_map(|(u, o)| o.observers.first().map(|h| (u.clone(), h.clone())))
            .collect();
        for (obj, observer) in observed {
            self.node_subscription(MessageType::Subscribe, Self::observed_channels(&obj), &observer, ctx);
            self.fetch(&obj, ctx);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let mut due = Vec::new();
        for (url, o) in self.observed.iter_mut() {
            if !o.ready || o.paused || o.fetching {
                continue;
            }
            if std::mem::take(&mut o.heard) {
                o.idle = 0;
                o.level = 0;
                continue;
            }
            o.idle += 1;
            if o.idle >= 1 << o.level {
                o.idle = 0;
                o.level = (o.level + 1).min(MAX_IDLE_LEVEL);
                due.push(url.clone());
            }
        }
        for url in due {
            self.fetch(&url, ctx);
        }
    }

    // ---- requests from local hyperties (<rt>/sm) ---------------------------

    fn local(&mut self, req: Message, ctx: &mut Context<Self>) {
        let _span = tracing::debug_span!("sm.request", id = req.id, kind = %req.kind, from = %req.from).entered();
        let resume = req.body.extra.get("resume").and_then(Value::as_bool) == Some(true);
        let res = resource(&req).map(str::to_owned);
        let r = match (&req.kind, res) {
            (MessageType::Create, _) if resume => self.resume_reporters(&req, ctx),
            (MessageType::Subscribe, _) if resume => self.resume_observers(&req, ctx),
            (MessageType::Create, None) => return self.create(req, ctx),
            (MessageType::Create, Some(r)) if req.body.extra.contains_key("authorise") => {
                self.invite_request(&req, &r, ctx)
            }
            (MessageType::Subscribe, Some(r)) => match parse_address(&r, "body.resource") {
                Ok(obj) => return self.subscribe(req, obj, ctx),
                Err(e) => Err(e),
            },
            (MessageType::Unsubscribe, Some(r)) => {
                parse_address(&r, "body.resource").and_then(|obj| self.unsubscribe(&req, &obj, ctx))
            }
            (MessageType::Delete, Some(r)) => parse_address(&r, "body.resource")
                .and_then(|obj| self.delete_reported(&obj, &req.from, ctx)),
            (MessageType::Read, Some(r)) => return self.read_local(req, &r, ctx),
            (MessageType::Execute, _) => return self.execute(req, ctx),
            (MessageType::Create | MessageType::Update | MessageType::Event, Some(r)) => {
                return self.write_local(req, &r, ctx)
            }
            (kind, None) => Err(SyncError::BadRequest(format!(
                "{kind} to the SyncherManager needs body.resource"
            ))),
            (kind, Some(_)) => Err(SyncError::BadRequest(format!(
                "the SyncherManager does not take {kind}"
            ))),
        };
        self.respond(&req, None, r);
    }

    fn invite_request(&mut self, req: &Message, res: &str, ctx: &mut Context<Self>) -> Result<Reply, SyncError> {
        let obj = parse_address(res, "body.resource")?;
        let r = self
            .reported
            .get(&obj)
            .ok_or_else(|| SyncError::NotFound(obj.to_string()))?;
        if r.view.with(|s| s.reporter != req.from) {
            return Err(SyncError::Forbidden(format!("only the reporter invites to {obj}")));
        }
        let invitees = req
            .body
            .extra
            .get("authorise")
            .map(|v| Vec::<Address>::deserialize(v))
            .transpose()
            .map_err(|_| SyncError::BadRequest("body.authorise must be a list of hyperty URLs".into()))?
            .unwrap_or_default();
        self.invite(&obj, invitees, ctx)?;
        self.mark(Key::Reported(obj), ctx);
        Ok(Reply::default())
    }

    fn write_local(&mut self, req: Message, res: &str, ctx: &mut Context<Self>) {
        let (obj, _) = match target(res) {
            Ok(t) => t,
            Err(e) => return self.respond(&req, None, Err(e)),
        };
        if self.reported.contains_key(&obj) {
            let me = self.me.clone();
            let r = self.write(&req, req.from.clone(), &me, ctx);
            return self.respond(&req, None, r);
        }
        let Some(o) = self.observed.get(&obj) else {
            return self.respond(&req, None, Err(SyncError::NotFound(obj.to_string())));
        };
        if !o.observers.contains(&req.from) {
            return self.respond(
                &req,
                None,
                Err(SyncError::Forbidden(format!("{} does not observe {obj}", req.from))),
            );
        }
        if req.kind == MessageType::Update && !res.contains("/children/") {
            return self.respond(
                &req,
                None,
                Err(SyncError::Forbidden(format!(
                    "only the reporter updates {obj}; observers write children"
                ))),
            );
        }
        // a child request of an observer goes to the reporter, which sequences it
        let mut fwd = Message::new(req.kind.clone(), self.me.clone(), obj.clone());
        fwd.body = req.body.clone();
        fwd.body.source = Some(req.from.clone());
        let post = self.bus.post(fwd);
        ctx.spawn(post.into_actor(self).map(move |r, act, _| {
            let r = r
                .map_err(|e| SyncError::from_response(e.response_code(), Some(&e.to_string())))
                .and_then(success)
                .map(|resp| Reply {
                    resource: resource(&resp).map(str::to_owned),
                    value: resp.body.value,
                    extra: Vec::new(),
                });
            act.respond(&req, None, r);
        }));
    }

    fn read_local(&mut self, req: Message, res: &str, ctx: &mut Context<Self>) {
        let obj = match parse_address(res, "body.resource") {
            Ok(o) => o,
            Err(e) => return self.respond(&req, None, Err(e)),
        };
        if let Some(r) = self.reported.get(&obj) {
            let reporter = r.view.with(|s| s.reporter.clone());
            let allowed = reporter == req.from
                || r
                    .observers
                    .iter()
                    .any(|l| l.hyperty == req.from && l.manager == self.me);
            let reply = match (allowed, req.body.extra.get("attribute").and_then(Value::as_str)) {
                (false, _) => Err(SyncError::Forbidden(format!(
                    "{} neither reports nor observes {obj}",
                    req.from
                ))),
                (true, Some("observers")) => Ok(Reply::value(json!({
                    "observers": r.observers.iter().map(|l| &l.hyperty).collect::<Vec<_>>(),
                }))),
                (true, _) => Ok(Reply::value(r.view.snapshot().to_value())),
            };
            return self.respond(&req, None, reply);
        }
        if let Some(o) = self.observed.get(&obj).filter(|o| o.ready) {
            let reply = match o.observers.contains(&req.from) {
                true => Ok(Reply::value(o.view.snapshot().to_value())),
                false => Err(SyncError::Forbidden(format!("{} does not observe {obj}", req.from))),
            };
            return self.respond(&req, None, reply);
        }
        let post = self.bus.post(Message::new(MessageType::Read, self.me.clone(), obj));
        ctx.spawn(post.into_actor(self).map(move |r, act, _| {
            let r = r
                .map_err(|e| SyncError::from_response(e.response_code(), Some(&e.to_string())))
                .and_then(success)
                .map(|resp| Reply::value(resp.body.value.unwrap_or(Value::Null)));
            act.respond(&req, None, r);
        }));
    }

    fn execute(&mut self, req: Message, ctx: &mut Context<Self>) {
        let method = req.body.extra.get("method").and_then(Value::as_str).map(str::to_owned);
        let obj = req
            .body
            .extra
            .get("params")
            .and_then(|p| p.get("resource"))
            .and_then(Value::as_str)
            .map(|r| parse_address(r, "body.params.resource"));
        let (method, obj) = match (method, obj) {
            (Some(m), Some(Ok(o))) => (m, o),
            (_, Some(Err(e))) => return self.respond(&req, None, Err(e)),
            _ => {
                return self.respond(
                    &req,
                    None,
                    Err(SyncError::BadRequest(
                        "execute needs body.method and body.params.resource".into(),
                    )),
                )
            }
        };
        let Some(o) = self.observed.get_mut(&obj).filter(|o| o.observers.contains(&req.from)) else {
            return self.respond(&req, None, Err(SyncError::NotFound(format!("{obj} observed by {}", req.from))));
        };
        match method.as_str() {
            "sync" => {
                o.paused = false;
                o.waiters.push(req);
                let fetching = o.fetching;
                if !fetching {
                    self.fetch(&obj, ctx);
                }
            }
            "stopSync" => {
                o.paused = true;
                self.respond(&req, None, Ok(Reply::default()));
            }
            other => {
                let e = SyncError::BadRequest(format!("unknown method {other:?} (sync, stopSync)"));
                self.respond(&req, None, Err(e));
            }
        }
    }

    fn resume_reporters(&mut self, req: &Message, ctx: &mut Context<Self>) -> Result<Reply, SyncError> {
        let mine: Vec<Address> = self
            .reported
            .iter()
            .filter(|(_, r)| r.view.with(|s| s.reporter == req.from))
            .map(|(u, _)| u.clone())
            .collect();
        if mine.is_empty() {
            return Err(SyncError::NotFound(format!("objects reported by {}", req.from)));
        }
        let mut snaps = Vec::new();
        for obj in &mine {
            self.subscribe_reported_at_node(obj, &req.from, ctx);
            self.register_object(obj, ctx);
            if let Some(r) = self.reported.get(obj) {
                snaps.push(r.view.snapshot().to_value());
            }
        }
        info!(reporter = %req.from, objects = mine.len(), "reporters resumed");
        Ok(Reply::value(Value::Array(snaps)))
    }

    fn resume_observers(&mut self, req: &Message, ctx: &mut Context<Self>) -> Result<Reply, SyncError> {
        let mine: Vec<Address> = self
            .observed
            .iter()
            .filter(|(_, o)| o.observers.contains(&req.from))
            .map(|(u, _)| u.clone())
            .collect();
        if mine.is_empty() {
            return Err(SyncError::NotFound(format!("objects observed by {}", req.from)));
        }
        let mut snaps = Vec::new();
        for obj in &mine {
            self.node_subscription(MessageType::Subscribe, Self::observed_channels(obj), &req.from, ctx);
            self.fetch(obj, ctx);
            if let Some(o) = self.observed.get(obj) {
                snaps.push(o.view.snapshot().to_value());
            }
        }
        info!(observer = %req.from, objects = mine.len(), "observers resumed");
        Ok(Reply::value(Value::Array(snaps)))
    }

    // ---- messages on a reported object's addresses ---------------------------

    fn on_reported(&mut self, obj: &Address, at: Option<Channel>, msg: Message, ctx: &mut Context<Self>) {
        let via = msg.from.clone();
        let r = match (at, &msg.kind) {
            (Some(Channel::Subscription), MessageType::Subscribe) => {
                let observer = msg
                    .body
                    .extra
                    .get("subscriber")
                    .and_then(Value::as_str)
                    .map(|s| parse_address(s, "body.subscriber"))
                    .or_else(|| msg.body.source.clone().map(Ok));
                match observer {
                    Some(Ok(o)) => {
                        let r = self.accept(obj, o, via, msg.body.identity.clone());
                        if r.is_ok() {
                            self.mark(Key::Reported(obj.clone()), ctx);
                        }
                        r
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(SyncError::BadRequest("missing field 'body.subscriber'".into())),
                }
            }
            (Some(Channel::Subscription), MessageType::Unsubscribe) => match msg.body.source.clone() {
                Some(o) => {
                    let r = self.leave(obj, &o, &via);
                    if r.is_ok() {
                        self.mark(Key::Reported(obj.clone()), ctx);
                    }
                    r
                }
                None => Err(SyncError::BadRequest("missing field 'body.source'".into())),
            },
            (None, MessageType::Read) => self.read_reported(&msg, obj, &via),
            (None, MessageType::Create | MessageType::Update | MessageType::Event) => {
                match msg.body.source.clone() {
                    Some(source) => self.write(&msg, source, &via, ctx),
                    None => Err(SyncError::BadRequest("missing field 'body.source'".into())),
                }
            }
            (Some(_), _) => return, // echoes of our own publications, stray answers
            (None, kind) => Err(SyncError::BadRequest(format!("{kind} is not a request on {obj}"))),
        };
        self.respond(&msg, None, r);
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
        if self.stubs.iter().any(|s| to.as_str().strip_prefix(s.as_str()) == Some("/status")) {
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
        if self.observed.contains_key(&obj) && matches!(at, Some(Channel::Changes | Channel::Children)) {
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
                || r
                    .observers
                    .iter()
                    .any(|l| l.hyperty == m.hyperty && l.manager == self.me);
            ok.then(|| r.view.clone())
        } else if let Some(o) = self.observed.get(&m.url) {
            o.observers.contains(&m.hyperty).then(|| o.view.clone())
        } else {
            return Err(SyncError::NotFound(m.url.to_string()));
        };
        let view = view.ok_or_else(|| {
            SyncError::Forbidden(format!("{} neither reports nor observes {}", m.hyperty, m.url))
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
        let add = self.bus.add_listener(status, ctx.address().recipient(), None);
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
