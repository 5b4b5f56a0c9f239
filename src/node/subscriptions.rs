//! Subscription Manager (`domain://msg-node.<D>/sm`).
//!
//! `subscribe {resources:[…], source?}` adds the session to the subscriber list of
//! each resource (this actor is the only writer of the router's `subscribers`
//! table): every later message whose `to` is exactly that resource reaches every
//! subscribed session, the sender included. `unsubscribe` removes them. The legacy
//! key spellings `subscribe` / `unsubscribe` are accepted; both keys or neither → 400.
//!
//! Subscribing makes a resource *routable* to the subscriber; it never grants the
//! right to send from it (see [`rights`](super::rights)). One exact form is an
//! allocation request instead, for runtime-core 2019, which makes its locally
//! generated hyperty URLs routable this way (rethink-wire.md §4–§5): `source` =
//! the session's own `<runtime URL>/address-allocation` and bare hyperty URLs of
//! the node's domain among the resources. Those are bound to the session through
//! [`AddressAllocation`](super::allocation::AddressAllocation) ([`Reclaim`]) —
//! 403 if another session holds one or another identity held it.
//!
//! Across domains (federation): a session's `subscribe` to another domain's
//! `domain://msg-node.<B>/sm` travels to B's node, which holds the subscription for
//! the peer link; this node records a [`Mirror`] of it, so the frames B's node
//! sends over the link for those resources reach the session. A peer link may
//! subscribe only to resources of this node's domain (403 otherwise).
//!
//! The session lifecycle events (`domain://msg-node.<D>/session-events`) may be
//! subscribed to only by policy managers (`policy.managers`); anyone else → 403.
//!
//! **Audiences.** The session that holds a data object `<obj>` may name who hears
//! it: `update {resource:<obj>, value:{audience:[<address>…]}}`. From then on the
//! object's `<obj>/changes` and `<obj>/children/` reach only the holder and the
//! sessions whose runtime URL an audience address lies under (a peer link: when an
//! audience address is of the peer's domain). Anyone else may still subscribe — a
//! runtime-core observer subscribes before its reporter accepts it — but its
//! subscription waits, unrouted, until the audience admits it, and is parked again
//! when the audience drops it. An object whose holder never names an audience
//! stays open to every subscriber, as on the reference nodes. The Syncher's
//! reporters name their accepted observers' managers.
//!
//! Across domains the node passes an audience on to each peer domain it admits
//! (and to each it no longer admits): `update` from this node's `/sm` to the
//! peer's, naming the admitted addresses of the peer's domain. The peer's node
//! keeps it for the object (held by the link) and parks its own sessions'
//! subscriptions to the object's channels the same way, so only the admitted
//! runtimes of that domain hear what the link carries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;
use hyperty_actors::address::{Address, AddressKind};
use hyperty_actors::message::{Message, MessageType, OneOrMany, ResponseCode};
use serde_json::Value;
use tracing::debug;

use dashmap::mapref::one::Ref;

use super::allocation::{AddressAllocation, NodeRequest, Reclaim, Release};
use super::rights::is_manager;
use super::router::{domain_of_address, Router, SessionKey, Table, TableVersion, PEER_KEY_PREFIX};
use crate::config::SubscriptionsSection;

/// The router's `subscribers` table: resource → the sessions subscribed to it
/// (each once). Read by anyone in the crate; written only here, by the
/// [`SubscriptionManager`].
#[derive(Debug, Default)]
pub struct Subscribers(Table<Arc<str>, Vec<SessionKey>>, TableVersion);

impl Subscribers {
    /// The sessions subscribed to exactly `resource`.
    pub(crate) fn get(&self, resource: &str) -> Option<Ref<'_, Arc<str>, Vec<SessionKey>>> {
        self.0.get(resource)
    }

    /// Whether anyone subscribed to `resource`.
    pub(crate) fn contains_key(&self, resource: &str) -> bool {
        self.0.contains_key(resource)
    }

    /// Every subscribed resource.
    pub(crate) fn iter(
        &self,
    ) -> dashmap::iter::Iter<'_, Arc<str>, Vec<SessionKey>, super::router::TableHasher> {
        self.0.iter()
    }

    /// Subscribed resources.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `session` to `resource`'s list (once); true if it is the first one.
    fn add(&self, resource: Arc<str>, session: &SessionKey) -> bool {
        let first = {
            let mut subs = self.0.entry(resource).or_default();
            if subs.contains(session) {
                return false;
            }
            subs.push(session.clone());
            subs.len() == 1
        };
        self.1.bump();
        first
    }

    /// See [`TableVersion`].
    pub(crate) fn version(&self) -> u64 {
        self.1.get()
    }

    /// Takes `session` off `resource`'s list; true if the list is now empty.
    fn remove(&self, resource: &str, session: &SessionKey) -> bool {
        let mut emptied = false;
        self.0.remove_if_mut(resource, |_, subs| {
            subs.retain(|k| k != session);
            emptied = subs.is_empty();
            emptied
        });
        self.1.bump();
        emptied
    }

    /// Puts a subscriber list in place for a router unit test.
    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, resource: Arc<str>, keys: Vec<SessionKey>) {
        self.0.insert(resource, keys);
        self.1.bump();
    }
}

/// Removes every subscription of a session.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "usize")]
pub struct DropSubscriptions(pub SessionKey);

/// A session's `/sm` request relayed to `domain`'s node: the same resources of
/// that domain are routed here to the session (or no longer, for `unsubscribe`).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Mirror {
    /// The subscribing session.
    pub session: SessionKey,
    /// Its `subscribe` or `unsubscribe`.
    pub msg: Message,
    /// The domain whose node holds the subscription.
    pub domain: String,
}

/// Who may hear a data object's channels (see the module docs).
#[derive(Debug)]
struct Audience {
    /// The session holding the object.
    holder: SessionKey,
    /// Addresses whose runtimes (or, across a peer link, domains) may hear it.
    admitted: Vec<String>,
    /// Subscriptions to its channels waiting for admission: session → channels.
    waiting: HashMap<SessionKey, HashSet<Arc<str>>>,
}

/// The two channels an audience covers.
const AUDIENCE_CHANNELS: [&str; 2] = ["/changes", "/children/"];

/// The object whose audience-covered channel `resource` is.
fn covered_object(resource: &str) -> Option<&str> {
    AUDIENCE_CHANNELS
        .iter()
        .find_map(|c| resource.strip_suffix(c))
        .filter(|o| !o.is_empty())
}

/// The subscription manager actor.
#[derive(Debug)]
pub struct SubscriptionManager {
    router: Arc<Router>,
    allocation: Addr<AddressAllocation>,
    config: SubscriptionsSection,
    managers: Vec<String>,
    by_session: HashMap<SessionKey, HashSet<Arc<str>>>,
    audiences: HashMap<Arc<str>, Audience>,
    /// Cluster writes not yet sent (see [`flush`](Self::flush)).
    writes: Writes,
}

/// Cluster writes waiting to be sent.
#[derive(Default)]
struct Writes(Vec<futures_util::future::BoxFuture<'static, ()>>);

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Writes({})", self.0.len())
    }
}

/// Session `key` was re-opened on another node: its subscriptions leave this
/// node's tables, and the cluster's record of them stays for the new node.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "usize")]
pub struct HandOverSubscriptions(pub SessionKey);

/// Another node of the cluster named the audience of an object its session holds.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct RemoteAudience {
    /// The node holding the object.
    pub node: String,
    /// The object.
    pub object: String,
    /// The addresses it admits.
    pub admitted: Vec<String>,
}

/// Session `session`, re-opened here, takes over the subscriptions it held on
/// another node.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct AdoptSubscriptions {
    /// The session.
    pub session: SessionKey,
    /// Its resources.
    pub resources: Vec<String>,
}

impl SubscriptionManager {
    /// A manager writing `router`'s subscriber table; `managers` (identities, `"*"`
    /// = any authenticated one) may watch the session lifecycle events.
    pub fn new(
        router: Arc<Router>,
        allocation: Addr<AddressAllocation>,
        config: SubscriptionsSection,
        managers: Vec<String>,
    ) -> Self {
        SubscriptionManager {
            router,
            allocation,
            config,
            managers,
            by_session: HashMap::new(),
            audiences: HashMap::new(),
            writes: Writes::default(),
        }
    }

    /// Whether `session` may hear `audience`'s object.
    fn admits(&self, audience: &Audience, session: &SessionKey) -> bool {
        if *session == audience.holder {
            return true;
        }
        if let Some(domain) = session.strip_prefix(PEER_KEY_PREFIX) {
            return audience
                .admitted
                .iter()
                .any(|a| domain_of_address(a) == Some(domain));
        }
        let Some(runtime) = self.router.runtime_of(session) else {
            return false;
        };
        let runtime = runtime.trim_end_matches('/');
        audience.admitted.iter().any(|a| {
            a.strip_prefix(runtime)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Routes `resource` to `session`, unless an audience keeps it waiting.
    fn route(&mut self, session: &SessionKey, resource: Arc<str>) {
        if let Some(obj) = covered_object(&resource) {
            if let Some(a) = self.audiences.get(obj) {
                if !self.admits(a, session) {
                    if let Some(a) = self.audiences.get_mut(obj) {
                        a.waiting
                            .entry(session.clone())
                            .or_default()
                            .insert(resource);
                    }
                    return;
                }
            }
        }
        let first = self.router.subscribers.add(resource.clone(), session);
        let Some(cluster) = self.router.cluster().cloned() else {
            return;
        };
        let record = cluster.key(&["sess", session, "subs"]);
        let set = cluster.key(&["subs", &resource]);
        self.writes.0.push(Box::pin(async move {
            let mut r = cluster.add_members(&record, &[resource.to_string()]).await;
            if first && r.is_ok() {
                r = cluster.add_members(&set, &[cluster.id().to_owned()]).await;
                if r.is_ok() {
                    r = cluster.invalidate(vec![resource.to_string()]).await;
                }
            }
            if let Err(e) = r {
                tracing::warn!(error = %e, "recording a subscription in the cluster failed (retried at the next heartbeat)");
            }
        }));
    }

    /// The cluster writes queued so far, to await (or spawn).
    fn flush(&mut self) -> impl std::future::Future<Output = ()> + 'static {
        futures_util::future::join_all(std::mem::take(&mut self.writes.0)).map(|_| ())
    }

    fn unroute(&mut self, session: &SessionKey, resource: &str) {
        self.unroute_with(session, resource, true);
    }

    /// Unroutes `resource` from `session`; `record`: also from the cluster's
    /// record of the session's subscriptions.
    fn unroute_with(&mut self, session: &SessionKey, resource: &str, record: bool) {
        if let Some(a) = covered_object(resource).and_then(|o| self.audiences.get_mut(o)) {
            if let Some(w) = a.waiting.get_mut(session) {
                w.remove(resource);
                if w.is_empty() {
                    a.waiting.remove(session);
                }
            }
        }
        let emptied = self.router.subscribers.remove(resource, session);
        let Some(cluster) = self.router.cluster().cloned() else {
            return;
        };
        let record = record.then(|| cluster.key(&["sess", session, "subs"]));
        let set = cluster.key(&["subs", resource]);
        let resource = resource.to_owned();
        self.writes.0.push(Box::pin(async move {
            let mut r = match &record {
                Some(k) => cluster.remove_member(k, &resource).await,
                None => Ok(()),
            };
            if emptied && r.is_ok() {
                r = cluster.remove_member(&set, cluster.id()).await;
                if r.is_ok() {
                    r = cluster.invalidate(vec![resource]).await;
                }
            }
            if let Err(e) = r {
                tracing::debug!(error = %e, "removing a subscription from the cluster failed (it expires)");
            }
        }));
    }

    /// `update {resource:<obj>, value:{audience:[…]}}` from the object's holder.
    fn set_audience(&mut self, r: &NodeRequest) -> Message {
        let obj = match r
            .msg
            .body
            .resource
            .as_ref()
            .map(|x| x.iter().collect::<Vec<_>>())
        {
            Some(o) if o.len() == 1 && Address::check(o[0]).is_ok() => o[0].clone(),
            _ => {
                return r.msg.reply_error(
                    ResponseCode::BadRequest,
                    "an audience needs body.resource: the data object's address",
                )
            }
        };
        let admitted = r
            .msg
            .body
            .value
            .as_ref()
            .and_then(|v| v.get("audience"))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .filter(|a| Address::check(a).is_ok())
                            .map(str::to_owned)
                    })
                    .collect::<Option<Vec<_>>>()
            });
        let Some(Some(admitted)) = admitted else {
            return r.msg.reply_error(
                ResponseCode::BadRequest,
                "body.value.audience must be an array of addresses",
            );
        };
        if admitted.len() > self.config.max_per_session {
            return r.msg.reply_error(
                ResponseCode::BadRequest,
                format!(
                    "an audience names at most {} addresses",
                    self.config.max_per_session
                ),
            );
        }
        let from_peer = r.session.strip_prefix(PEER_KEY_PREFIX);
        let holds = match from_peer {
            // the holder's node speaks for the objects of its domain
            Some(peer) => domain_of_address(&obj) == Some(peer),
            None => self.router.owns(&r.session, &obj),
        };
        if !holds {
            return r.msg.reply_error(
                ResponseCode::Forbidden,
                format!("only the session holding {obj} names its audience"),
            );
        }
        let limit = self.config.max_per_session;
        if !self.audiences.contains_key(obj.as_str()) && self.audiences.len() >= limit {
            // objects whose addresses were freed since take their audiences along
            let router = self.router.clone();
            self.audiences.retain(|o, a| router.owns(&a.holder, o));
        }
        let full = self.audiences.len() >= limit
            && self
                .audiences
                .values()
                .filter(|a| a.holder == r.session)
                .count()
                >= limit;
        if !self.audiences.contains_key(obj.as_str()) && full {
            return r.msg.reply_error(
                ResponseCode::TooManyRequests,
                format!(
                    "a session names the audience of at most {} objects",
                    self.config.max_per_session
                ),
            );
        }
        if from_peer.is_none() {
            let before = self
                .audiences
                .get(obj.as_str())
                .map(|a| a.admitted.clone())
                .unwrap_or_default();
            self.tell_peers(&obj, &before, &admitted);
            if let Some(c) = self.router.cluster() {
                // the other nodes park their own subscribers the audience does not name
                c.broadcast(crate::cluster::Control::Audience {
                    node: c.id().to_owned(),
                    object: obj.clone(),
                    admitted: admitted.clone(),
                });
            }
        }
        self.apply_audience(&obj, r.session.clone(), admitted);
        r.msg.reply(ResponseCode::Ok)
    }

    /// Sets `obj`'s audience (held by `holder`): parks the subscriptions to its
    /// channels it does not admit, routes the waiting ones it now admits.
    fn apply_audience(&mut self, obj: &str, holder: SessionKey, admitted: Vec<String>) {
        let key: Arc<str> = Arc::from(obj);
        let mut audience = self.audiences.remove(&key).unwrap_or(Audience {
            holder,
            admitted: Vec::new(),
            waiting: HashMap::new(),
        });
        audience.admitted = admitted;
        // park who is no longer admitted, route who now is
        for channel in AUDIENCE_CHANNELS.map(|c| format!("{obj}{c}")) {
            let subscribed = self
                .router
                .subscribers
                .get(channel.as_str())
                .map(|s| s.clone())
                .unwrap_or_default();
            let parked: Vec<SessionKey> = subscribed
                .iter()
                .filter(|s| !self.admits(&audience, s))
                .cloned()
                .collect();
            for s in &parked {
                self.router.subscribers.remove(channel.as_str(), s);
                audience
                    .waiting
                    .entry(s.clone())
                    .or_default()
                    .insert(Arc::from(channel.as_str()));
            }
        }
        let now_admitted: Vec<SessionKey> = audience
            .waiting
            .keys()
            .filter(|s| self.admits(&audience, s))
            .cloned()
            .collect();
        let mut released = Vec::new();
        for s in now_admitted {
            if let Some(channels) = audience.waiting.remove(&s) {
                released.extend(channels.into_iter().map(|c| (s.clone(), c)));
            }
        }
        debug!(object = %obj, admitted = audience.admitted.len(), waiting = audience.waiting.len(), "audience named");
        self.audiences.insert(key, audience);
        for (s, c) in released {
            self.route(&s, c);
        }
    }

    /// Passes an audience on to the nodes of the other domains it admits (or
    /// admitted): a peer link admitted here carries the object's frames to every
    /// session of its domain that subscribed, so that node parks those it does
    /// not name. Frames the peer reads after this one come after it, so nobody
    /// there hears the object before its admission is known.
    fn tell_peers(&self, obj: &str, before: &[String], now: &[String]) {
        let own = self.router.domain();
        let mut domains: Vec<&str> = before
            .iter()
            .chain(now)
            .filter_map(|a| domain_of_address(a))
            .filter(|d| *d != own)
            .collect();
        domains.sort_unstable();
        domains.dedup();
        let (Ok(from), Ok(resource)) = (
            Address::parse(&format!("domain://msg-node.{own}/sm")),
            Address::parse(obj),
        ) else {
            return;
        };
        for d in domains {
            let Ok(to) = Address::parse(&format!("domain://msg-node.{d}/sm")) else {
                continue;
            };
            let theirs: Vec<&str> = now
                .iter()
                .filter(|a| domain_of_address(a) == Some(d))
                .map(String::as_str)
                .collect();
            let mut m = Message::new(MessageType::Update, from.clone(), to);
            m.id = self.router.next_id();
            m.body.resource = Some(OneOrMany::One(resource.to_string()));
            m.body.value = Some(serde_json::json!({ "audience": theirs }));
            if !self.router.send_to_owner(&m) {
                debug!(object = %obj, peer = d, "no link to pass the audience on");
            }
        }
    }

    fn resources(req: &Message, legacy: &str) -> Result<Vec<String>, String> {
        let legacy_list = req.body.extra.get(legacy);
        let list = match (&req.body.resources, legacy_list) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "give either body.resources or body.{legacy}, not both"
                ))
            }
            (None, None) => return Err("missing field 'body.resources'".to_owned()),
            (Some(r), None) => r.clone(),
            (None, Some(v)) => match v {
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("body.{legacy} must be an array of strings"))?,
                Value::String(s) => vec![s.clone()],
                _ => return Err(format!("body.{legacy} must be an array of strings")),
            },
        };
        if list.is_empty() {
            return Err("body.resources must not be empty".to_owned());
        }
        for r in &list {
            Address::check(r).map_err(|e| format!("resource {r:?}: {e}"))?;
        }
        Ok(list)
    }

    /// A bare hyperty address of `domain` (not a channel such as `/status`).
    fn is_bare_hyperty(addr: &str, domain: &str) -> bool {
        Address::parse(addr).is_ok_and(|a| {
            a.kind() == AddressKind::Hyperty
                && a.domain() == Some(domain)
                && a.path().matches('/').count() == 1
                && !a.path().ends_with('/')
        })
    }

    /// The addresses a subscribe asks to be allocated (runtime-core's form), if it
    /// has that form.
    fn allocation_form(&self, r: &NodeRequest, list: &[String]) -> Vec<Arc<str>> {
        let Some(runtime) = self.router.runtime_of(&r.session) else {
            return Vec::new();
        };
        let own = format!("{}/address-allocation", runtime.trim_end_matches('/'));
        if r.msg.body.source.as_ref().map(|a| a.as_str()) != Some(own.as_str()) {
            return Vec::new();
        }
        let domain = self.router.domain();
        list.iter()
            .filter(|a| Self::is_bare_hyperty(a, domain))
            .map(|a| Arc::from(a.as_str()))
            .collect()
    }

    fn add(&mut self, session: &SessionKey, list: &[String]) -> Result<(), String> {
        let mine = self.by_session.entry(session.clone()).or_default();
        let new = list.iter().filter(|r| !mine.contains(r.as_str())).count();
        if mine.len() + new > self.config.max_per_session {
            return Err(format!(
                "a session may subscribe to at most {} resources",
                self.config.max_per_session
            ));
        }
        let added: Vec<Arc<str>> = list
            .iter()
            .map(|r| Arc::from(r.as_str()))
            .filter(|r: &Arc<str>| mine.insert(r.clone()))
            .collect();
        for r in added {
            self.route(session, r);
        }
        Ok(())
    }

    fn remove(&mut self, session: &SessionKey, resource: &str) {
        if let Some(mine) = self.by_session.get_mut(session) {
            mine.remove(resource);
        }
        self.unroute(session, resource);
    }

    fn subscribe(&mut self, r: NodeRequest) -> ResponseActFuture<Self, Message> {
        let list = match Self::resources(&r.msg, "subscribe") {
            Ok(l) => l,
            Err(e) => return Box::pin(fut::ready(r.msg.reply_error(ResponseCode::BadRequest, e))),
        };
        if r.session.starts_with(PEER_KEY_PREFIX) {
            let domain = self.router.domain();
            if let Some(foreign) = list.iter().find(|a| domain_of_address(a) != Some(domain)) {
                return Box::pin(fut::ready(r.msg.reply_error(
                    ResponseCode::Forbidden,
                    format!("a peer may subscribe only to resources of {domain}, not {foreign}"),
                )));
            }
        }
        let events = self.router.events_address();
        if list.iter().any(|a| a == events)
            && !is_manager(
                &self.managers,
                self.router.identity_of(&r.session).as_deref(),
            )
        {
            return Box::pin(fut::ready(r.msg.reply_error(
                ResponseCode::Forbidden,
                "only policy managers may watch the session events",
            )));
        }
        let allocate = self.allocation_form(&r, &list);
        let allocation = self.allocation.clone();
        let session = r.session.clone();
        let work = async move {
            if allocate.is_empty() {
                return Ok(());
            }
            allocation
                .send(Reclaim {
                    session,
                    addresses: allocate,
                })
                .await
                .map_err(|_| {
                    (
                        ResponseCode::InternalError,
                        "address allocation unavailable".to_owned(),
                    )
                })?
                .map_err(|e| (e.code, e.description))
        };
        Box::pin(work.into_actor(self).then(move |bound, act, _| {
            let reply = match bound.map(|()| act.add(&r.session, &list)) {
                Err((code, why)) => r.msg.reply_error(code, why),
                Ok(Ok(())) => {
                    debug!(session = %r.session, n = list.len(), "subscribed");
                    r.msg.reply(ResponseCode::Ok)
                }
                Ok(Err(e)) => r.msg.reply_error(ResponseCode::TooManyRequests, e),
            };
            // the other nodes know of the subscription before its 200 goes out
            fut::wrap_future::<_, Self>(act.flush()).map(move |(), _, _| reply)
        }))
    }

    fn unsubscribe(&mut self, r: &NodeRequest) -> Message {
        let list = match Self::resources(&r.msg, "unsubscribe") {
            Ok(l) => l,
            Err(e) => return r.msg.reply_error(ResponseCode::BadRequest, e),
        };
        for res in &list {
            self.remove(&r.session, res);
            if Self::is_bare_hyperty(res, self.router.domain()) {
                self.allocation.do_send(Release {
                    session: r.session.clone(),
                    address: Arc::from(res.as_str()),
                });
            }
        }
        r.msg.reply(ResponseCode::Ok)
    }
}

impl Actor for SubscriptionManager {
    type Context = Context<Self>;
}

impl Handler<NodeRequest> for SubscriptionManager {
    type Result = ResponseActFuture<Self, Message>;
    fn handle(&mut self, r: NodeRequest, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::debug_span!("node.sm", id = r.msg.id, session = %r.session).entered();
        match r.msg.kind {
            MessageType::Subscribe => self.subscribe(r),
            MessageType::Unsubscribe => {
                let reply = self.unsubscribe(&r);
                Box::pin(fut::wrap_future::<_, Self>(self.flush()).map(move |(), _, _| reply))
            }
            MessageType::Update => {
                let reply = self.set_audience(&r);
                actix::spawn(self.flush());
                Box::pin(fut::ready(reply))
            }
            _ => Box::pin(fut::ready(r.msg.reply_error(
                ResponseCode::BadRequest,
                format!(
                    "the subscription manager takes subscribe, unsubscribe and update \
                     (an audience), not {}",
                    r.msg.kind
                ),
            ))),
        }
    }
}

impl Handler<Mirror> for SubscriptionManager {
    type Result = ();
    fn handle(&mut self, m: Mirror, _: &mut Context<Self>) {
        let subscribe = m.msg.kind == MessageType::Subscribe;
        let legacy = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        let Ok(list) = Self::resources(&m.msg, legacy) else {
            return;
        };
        let list: Vec<String> = list
            .into_iter()
            .filter(|r| domain_of_address(r) == Some(m.domain.as_str()))
            .collect();
        if subscribe {
            if let Err(e) = self.add(&m.session, &list) {
                debug!(session = %m.session, error = %e, "mirrored subscription refused");
            }
        } else {
            for r in &list {
                self.remove(&m.session, r);
            }
        }
        actix::spawn(self.flush());
    }
}

impl Handler<DropSubscriptions> for SubscriptionManager {
    type Result = usize;
    fn handle(&mut self, d: DropSubscriptions, _: &mut Context<Self>) -> usize {
        let n = self.drop_session(&d.0, true);
        actix::spawn(self.flush());
        n
    }
}

impl SubscriptionManager {
    /// Drops every subscription of `session`; `record`: from the cluster's record
    /// of the session too (not when the session moved to another node).
    fn drop_session(&mut self, session: &SessionKey, record: bool) -> usize {
        // the audiences it named go with it (its objects' addresses go too)
        self.audiences.retain(|_, a| a.holder != *session);
        let Some(mine) = self.by_session.remove(session) else {
            return 0;
        };
        for r in &mine {
            self.unroute_with(session, r, record);
        }
        if let Some(cluster) = self.router.cluster().cloned() {
            let key = cluster.key(&["sess", session, "subs"]);
            if record {
                self.writes.0.push(Box::pin(async move {
                    let _ = cluster.delete(&key).await;
                }));
            } else {
                cluster.forget(&key);
            }
        }
        mine.len()
    }
}

impl Handler<HandOverSubscriptions> for SubscriptionManager {
    type Result = usize;
    fn handle(&mut self, d: HandOverSubscriptions, _: &mut Context<Self>) -> usize {
        let n = self.drop_session(&d.0, false);
        actix::spawn(self.flush());
        n
    }
}

impl Handler<RemoteAudience> for SubscriptionManager {
    type Result = ();
    fn handle(&mut self, a: RemoteAudience, _: &mut Context<Self>) {
        // a holder key no local session has: only the audience admits here
        let holder: SessionKey = Arc::from(format!("cluster:{}", a.node));
        self.apply_audience(&a.object, holder, a.admitted);
        actix::spawn(self.flush());
    }
}

impl Handler<AdoptSubscriptions> for SubscriptionManager {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, a: AdoptSubscriptions, _: &mut Context<Self>) -> Self::Result {
        let mine = self.by_session.entry(a.session.clone()).or_default();
        let fresh: Vec<Arc<str>> = a
            .resources
            .iter()
            .map(|r| Arc::from(r.as_str()))
            .filter(|r: &Arc<str>| mine.insert(r.clone()))
            .collect();
        for r in fresh {
            self.route(&a.session, r);
        }
        Box::pin(self.flush())
    }
}
