//! Publication/subscription nodes (seed 004, "Ideas for phase 2").
//!
//! A [`PubSubProvider`] is an entity that runs nodes: entities holding a stream of
//! events to which others publish and subscribe. Each node has one owner, any
//! number of publishers and subscribers (optionally interested in some event types
//! only), and a configuration with the six policies of the spec plus `title`,
//! `description` and free keys.
//!
//! The provider serves these RPC methods (named parameters):
//!
//! | method | params | who |
//! |---|---|---|
//! | `discover` | `{title?}` | per `discoveryPolicy` |
//! | `getDefaultConfiguration` | — | anyone |
//! | `createNode` | `{name?, configuration?}` | anyone; the caller becomes owner and publisher |
//! | `destroyNode` | `{node}` | owner |
//! | `getConfiguration` | `{node}` | per `getConfigurationPolicy` |
//! | `setConfiguration` | `{node, configuration}` | owner |
//! | `requestPublish` | `{node}` | per `publicationPolicy` |
//! | `requestSubscribe` | `{node, types?}` | per `subscriptionPolicy` |
//! | `unsubscribe` | `{node}` | a subscriber |
//! | `getPublishers` / `getSubscribers` | `{node}` | per their policies |
//! | `modifyPublishers` / `modifySubscribers` | `{node, add?, remove?}` | owner |
//!
//! Policies ([`AccessPolicy`]): `"public"`, `"owner-only"`, `"device-local"` (entities
//! of the provider's runtime), `"hidden"` (discovery: owner only),
//! `{"whitelist":[…]}`, `{"blacklist":[…]}`. The owner always passes.
//!
//! Publishing = sending an event to the node. The provider installs an
//! [`EventPolicy`] so that only publishers (and the owner) get through the
//! dispatcher's policy phase: a local non-publisher's dispatch fails with
//! `PERMISSION_DENIED_ERROR`, a remote one gets `refused`. An accepted event goes to
//! every subscriber interested in its type, except its sender:
//!
//! * addressing sensitive: forwarded one by one (forwarding `{source: node, to:
//!   [subscriber]}`), so subscribers never see each other;
//! * otherwise: re-sourced, `source = node`, `to = [subscriber]`, empty `cc`/`bcc`.
//!
//! Either way the id is unchanged, so nodes subscribed to each other in a loop stop
//! at the first node that sees the event again (its duplicate buffer).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use crate::address::Address;
use crate::events::entities::EntityOptions;
use crate::events::error::EventError;
use crate::events::handle::{EventEndpoint, EventsHandle};
use crate::events::listeners::{IncomingEvent, ListenerFilter};
use crate::events::model::{Addressing, Event};
use crate::events::policy::{EventDirection, EventPolicy, PolicyDecision, PolicyRequest};
use crate::events::rpc::{named_params, RpcCall, RpcError};

/// Default bound of nodes per provider.
pub const DEFAULT_MAX_NODES: usize = 10_000;
/// Default bound of publishers, and of subscribers, per node.
pub const DEFAULT_MAX_MEMBERS: usize = 10_000;
/// RPC error: no such node.
pub const NODE_NOT_FOUND: i64 = -32001;
/// RPC error: refused by the node's policy or not the owner.
pub const NODE_FORBIDDEN: i64 = -32003;
/// RPC error: a node with that name exists.
pub const NODE_EXISTS: i64 = -32004;
/// RPC error: a bound was reached.
pub const NODE_LIMIT: i64 = -32005;

/// Who may do something with a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPolicy {
    /// Anyone.
    Public,
    /// The owner only.
    OwnerOnly,
    /// Entities of the provider's runtime.
    DeviceLocal,
    /// Nobody but the owner (for discovery: the node is not listed).
    Hidden,
    /// Only these entities.
    Whitelist(BTreeSet<Address>),
    /// Anyone but these entities.
    Blacklist(BTreeSet<Address>),
}

impl AccessPolicy {
    /// True if `entity` passes; the owner always does.
    pub fn allows(&self, entity: &Address, owner: &Address, is_local: bool) -> bool {
        if entity == owner {
            return true;
        }
        match self {
            AccessPolicy::Public => true,
            AccessPolicy::OwnerOnly | AccessPolicy::Hidden => false,
            AccessPolicy::DeviceLocal => is_local,
            AccessPolicy::Whitelist(s) => s.contains(entity),
            AccessPolicy::Blacklist(s) => !s.contains(entity),
        }
    }

    /// The JSON form.
    pub fn to_value(&self) -> Value {
        let list = |s: &BTreeSet<Address>| Value::Array(s.iter().map(|a| json!(a)).collect());
        match self {
            AccessPolicy::Public => json!("public"),
            AccessPolicy::OwnerOnly => json!("owner-only"),
            AccessPolicy::DeviceLocal => json!("device-local"),
            AccessPolicy::Hidden => json!("hidden"),
            AccessPolicy::Whitelist(s) => json!({ "whitelist": list(s) }),
            AccessPolicy::Blacklist(s) => json!({ "blacklist": list(s) }),
        }
    }

    /// Reads the JSON form.
    pub fn from_value(v: &Value) -> Result<AccessPolicy, String> {
        let set = |v: &Value| -> Result<BTreeSet<Address>, String> {
            v.as_array()
                .ok_or("a list of entities expected")?
                .iter()
                .map(|e| {
                    e.as_str()
                        .ok_or_else(|| "an entity must be a string".to_owned())
                        .and_then(|s| Address::parse(s).map_err(|e| e.to_string()))
                })
                .collect()
        };
        match v {
            Value::String(s) => match s.as_str() {
                "public" => Ok(AccessPolicy::Public),
                "owner-only" => Ok(AccessPolicy::OwnerOnly),
                "device-local" => Ok(AccessPolicy::DeviceLocal),
                "hidden" => Ok(AccessPolicy::Hidden),
                other => Err(format!("unknown policy {other:?}")),
            },
            Value::Object(o) => match (o.get("whitelist"), o.get("blacklist")) {
                (Some(w), None) => Ok(AccessPolicy::Whitelist(set(w)?)),
                (None, Some(b)) => Ok(AccessPolicy::Blacklist(set(b)?)),
                _ => Err("a policy object has exactly one of whitelist, blacklist".into()),
            },
            _ => Err("a policy is a string or an object".into()),
        }
    }
}

/// A node's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// `discoveryPolicy`.
    pub discovery: AccessPolicy,
    /// `publicationPolicy`.
    pub publication: AccessPolicy,
    /// `subscriptionPolicy`.
    pub subscription: AccessPolicy,
    /// `getConfigurationPolicy`.
    pub get_configuration: AccessPolicy,
    /// `getPublishersPolicy`.
    pub get_publishers: AccessPolicy,
    /// `getSubscribersPolicy`.
    pub get_subscribers: AccessPolicy,
    /// `title`.
    pub title: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// Any other key.
    pub extra: Map<String, Value>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            discovery: AccessPolicy::Public,
            publication: AccessPolicy::OwnerOnly,
            subscription: AccessPolicy::Public,
            get_configuration: AccessPolicy::Public,
            get_publishers: AccessPolicy::OwnerOnly,
            get_subscribers: AccessPolicy::OwnerOnly,
            title: None,
            description: None,
            extra: Map::new(),
        }
    }
}

const POLICY_KEYS: [&str; 6] = [
    "discoveryPolicy",
    "publicationPolicy",
    "subscriptionPolicy",
    "getConfigurationPolicy",
    "getPublishersPolicy",
    "getSubscribersPolicy",
];

impl NodeConfig {
    fn policy_mut(&mut self, key: &str) -> Option<&mut AccessPolicy> {
        Some(match key {
            "discoveryPolicy" => &mut self.discovery,
            "publicationPolicy" => &mut self.publication,
            "subscriptionPolicy" => &mut self.subscription,
            "getConfigurationPolicy" => &mut self.get_configuration,
            "getPublishersPolicy" => &mut self.get_publishers,
            "getSubscribersPolicy" => &mut self.get_subscribers,
            _ => return None,
        })
    }

    /// The key/value pairs.
    pub fn to_value(&self) -> Value {
        let mut m = self.extra.clone();
        let mut me = self.clone();
        for k in POLICY_KEYS {
            if let Some(p) = me.policy_mut(k) {
                m.insert(k.to_owned(), p.to_value());
            }
        }
        if let Some(t) = &self.title {
            m.insert("title".into(), json!(t));
        }
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        Value::Object(m)
    }

    /// Sets the pairs of `pairs`, all or none.
    pub fn apply(&mut self, pairs: &Map<String, Value>) -> Result<(), String> {
        let mut next = self.clone();
        for (k, v) in pairs {
            if let Some(p) = next.policy_mut(k) {
                *p = AccessPolicy::from_value(v).map_err(|e| format!("{k}: {e}"))?;
                continue;
            }
            match k.as_str() {
                "title" | "description" => {
                    let s = v.as_str().ok_or_else(|| format!("{k} must be a string"))?;
                    if k == "title" {
                        next.title = Some(s.to_owned());
                    } else {
                        next.description = Some(s.to_owned());
                    }
                }
                _ => {
                    next.extra.insert(k.clone(), v.clone());
                }
            }
        }
        *self = next;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Node {
    owner: Address,
    publishers: BTreeSet<Address>,
    subscribers: BTreeMap<Address, Option<BTreeSet<String>>>,
    config: NodeConfig,
}

impl Node {
    fn may_publish(&self, sender: &Address) -> bool {
        sender == &self.owner || self.publishers.contains(sender)
    }
}

type Nodes = Arc<RwLock<BTreeMap<Address, Node>>>;

/// The policy a provider installs: only publishers reach its nodes.
struct PublisherGate {
    name: String,
    nodes: Nodes,
}

impl EventPolicy for PublisherGate {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self, r: &PolicyRequest<'_>) -> PolicyDecision {
        if r.direction == EventDirection::Outgoing || r.event.is_reserved() {
            return PolicyDecision::Allow;
        }
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        match nodes.get(r.recipient) {
            Some(n) if !n.may_publish(r.sender) => PolicyDecision::Deny(format!(
                "{} is not a publisher of {}",
                r.sender, r.recipient
            )),
            _ => PolicyDecision::Allow,
        }
    }
}

/// The pub/sub provider actor. Start it with [`PubSubProvider::start`].
pub struct PubSubProvider {
    address: Address,
    endpoint: EventEndpoint,
    nodes: Nodes,
    max_nodes: usize,
    max_members: usize,
}

impl fmt::Debug for PubSubProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubProvider")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Actor for PubSubProvider {
    type Context = Context<Self>;
}

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError::new(code, message)
}

fn entity_list(v: Option<&Value>, field: &str) -> Result<Vec<Address>, RpcError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .and_then(|s| Address::parse(s).ok())
                    .ok_or_else(|| RpcError::invalid_params(format!("{field}: entities expected")))
            })
            .collect(),
        Some(_) => Err(RpcError::invalid_params(format!("{field} must be a list"))),
    }
}

fn types_of(v: Option<&Value>) -> Result<Option<BTreeSet<String>>, RpcError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .filter(|t| crate::events::model::is_valid_type(t))
                    .map(str::to_owned)
                    .ok_or_else(|| RpcError::invalid_params("types: event types expected"))
            })
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Some),
        Some(_) => Err(RpcError::invalid_params("types must be a list")),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl PubSubProvider {
    /// Starts a provider at `address` (an entity it registers and owns) on the
    /// current arbiter: it answers RPC there and receives its nodes' events.
    pub async fn start(
        events: &EventsHandle,
        address: Address,
    ) -> Result<Addr<PubSubProvider>, EventError> {
        let endpoint = events.endpoint(address.clone());
        endpoint.register_entity(address.clone()).await?;
        let nodes: Nodes = Arc::new(RwLock::new(BTreeMap::new()));
        let addr = PubSubProvider {
            address: address.clone(),
            endpoint: endpoint.clone(),
            nodes: nodes.clone(),
            max_nodes: DEFAULT_MAX_NODES,
            max_members: DEFAULT_MAX_MEMBERS,
        }
        .start();
        endpoint
            .serve_rpc(address.clone(), addr.clone().recipient())
            .await?;
        endpoint
            .add_listener(ListenerFilter::any(), addr.clone().recipient())
            .await?;
        events
            .add_policy(Arc::new(PublisherGate {
                name: format!("pubsub:{address}"),
                nodes,
            }))
            .await?;
        Ok(addr)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Address, Node>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Address, Node>> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn node_param(&self, call: &RpcCall) -> Result<(Address, Node), RpcError> {
        let p = named_params(&call.params)?;
        let node = p
            .get("node")
            .and_then(Value::as_str)
            .and_then(|s| Address::parse(s).ok())
            .ok_or_else(|| RpcError::invalid_params("'node' (an address) is required"))?;
        let n = self
            .read()
            .get(&node)
            .cloned()
            .ok_or_else(|| err(NODE_NOT_FOUND, format!("no node {node}")))?;
        Ok((node, n))
    }

    fn owner_only(call: &RpcCall, n: &Node) -> Result<(), RpcError> {
        if call.caller == n.owner {
            Ok(())
        } else {
            Err(err(NODE_FORBIDDEN, "only the node's owner may do this"))
        }
    }

    fn check(policy: &AccessPolicy, call: &RpcCall, n: &Node, what: &str) -> Result<(), RpcError> {
        if policy.allows(&call.caller, &n.owner, call.caller_is_local) {
            Ok(())
        } else {
            Err(err(
                NODE_FORBIDDEN,
                format!("{what} refused by the node's policy"),
            ))
        }
    }

    /// The synchronous methods; `Ok(None)` means "create or destroy" (async).
    fn call_sync(&mut self, call: &RpcCall) -> Result<Value, RpcError> {
        match call.method.as_str() {
            "getDefaultConfiguration" => Ok(NodeConfig::default().to_value()),
            "discover" => {
                let title = call
                    .params
                    .as_ref()
                    .and_then(|p| p.get("title"))
                    .and_then(Value::as_str);
                let list: Vec<Value> = self
                    .read()
                    .iter()
                    .filter(|(_, n)| n.config.discovery.allows(&call.caller, &n.owner, call.caller_is_local))
                    .filter(|(_, n)| title.is_none_or(|t| n.config.title.as_deref() == Some(t)))
                    .map(|(a, n)| json!({"node": a, "title": n.config.title, "description": n.config.description}))
                    .collect();
                Ok(Value::Array(list))
            }
            "getConfiguration" => {
                let (_, n) = self.node_param(call)?;
                Self::check(&n.config.get_configuration, call, &n, "getConfiguration")?;
                Ok(n.config.to_value())
            }
            "setConfiguration" => {
                let (node, n) = self.node_param(call)?;
                Self::owner_only(call, &n)?;
                let pairs = named_params(&call.params)?
                    .get("configuration")
                    .and_then(Value::as_object)
                    .ok_or_else(|| {
                        RpcError::invalid_params("'configuration' (an object) is required")
                    })?;
                let mut nodes = self.write();
                let n = nodes
                    .get_mut(&node)
                    .ok_or_else(|| err(NODE_NOT_FOUND, "node gone"))?;
                n.config.apply(pairs).map_err(RpcError::invalid_params)?;
                Ok(n.config.to_value())
            }
            "requestPublish" => {
                let (node, n) = self.node_param(call)?;
                Self::check(&n.config.publication, call, &n, "publication")?;
                self.add_publishers(&node, vec![call.caller.clone()])?;
                Ok(json!({"granted": true}))
            }
            "requestSubscribe" => {
                let (node, n) = self.node_param(call)?;
                Self::check(&n.config.subscription, call, &n, "subscription")?;
                let types = types_of(named_params(&call.params)?.get("types"))?;
                self.add_subscribers(&node, vec![(call.caller.clone(), types)])?;
                Ok(json!({"granted": true}))
            }
            "unsubscribe" => {
                let (node, _) = self.node_param(call)?;
                let removed = self
                    .write()
                    .get_mut(&node)
                    .is_some_and(|n| n.subscribers.remove(&call.caller).is_some());
                Ok(json!({"removed": removed}))
            }
            "getPublishers" => {
                let (_, n) = self.node_param(call)?;
                Self::check(&n.config.get_publishers, call, &n, "getPublishers")?;
                Ok(json!(n.publishers))
            }
            "getSubscribers" => {
                let (_, n) = self.node_param(call)?;
                Self::check(&n.config.get_subscribers, call, &n, "getSubscribers")?;
                Ok(Value::Array(
                    n.subscribers
                        .iter()
                        .map(|(s, t)| json!({"entity": s, "types": t}))
                        .collect(),
                ))
            }
            "modifyPublishers" => {
                let (node, n) = self.node_param(call)?;
                Self::owner_only(call, &n)?;
                let p = named_params(&call.params)?;
                let add = entity_list(p.get("add"), "add")?;
                let remove = entity_list(p.get("remove"), "remove")?;
                self.add_publishers(&node, add)?;
                let mut nodes = self.write();
                if let Some(n) = nodes.get_mut(&node) {
                    for r in &remove {
                        n.publishers.remove(r);
                    }
                    return Ok(json!(n.publishers));
                }
                Err(err(NODE_NOT_FOUND, "node gone"))
            }
            "modifySubscribers" => {
                let (node, n) = self.node_param(call)?;
                Self::owner_only(call, &n)?;
                let p = named_params(&call.params)?;
                let add = match p.get("add") {
                    None => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => Address::parse(s)
                                .map(|a| (a, None))
                                .map_err(|e| RpcError::invalid_params(e.to_string())),
                            Value::Object(o) => {
                                let e = o
                                    .get("entity")
                                    .and_then(Value::as_str)
                                    .and_then(|s| Address::parse(s).ok())
                                    .ok_or_else(|| {
                                        RpcError::invalid_params("add: entity expected")
                                    })?;
                                Ok((e, types_of(o.get("types"))?))
                            }
                            _ => Err(RpcError::invalid_params("add: entities expected")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    Some(_) => return Err(RpcError::invalid_params("add must be a list")),
                };
                let remove = entity_list(p.get("remove"), "remove")?;
                self.add_subscribers(&node, add)?;
                let mut nodes = self.write();
                if let Some(n) = nodes.get_mut(&node) {
                    for r in &remove {
                        n.subscribers.remove(r);
                    }
                    return Ok(json!(n.subscribers.keys().collect::<Vec<_>>()));
                }
                Err(err(NODE_NOT_FOUND, "node gone"))
            }
            other => Err(RpcError::method_not_found(other)),
        }
    }

    fn add_publishers(&self, node: &Address, add: Vec<Address>) -> Result<(), RpcError> {
        let max = self.max_members;
        let mut nodes = self.write();
        let n = nodes
            .get_mut(node)
            .ok_or_else(|| err(NODE_NOT_FOUND, "node gone"))?;
        for a in add {
            if n.publishers.len() >= max && !n.publishers.contains(&a) {
                return Err(err(NODE_LIMIT, "too many publishers"));
            }
            n.publishers.insert(a);
        }
        Ok(())
    }

    fn add_subscribers(
        &self,
        node: &Address,
        add: Vec<(Address, Option<BTreeSet<String>>)>,
    ) -> Result<(), RpcError> {
        let max = self.max_members;
        let mut nodes = self.write();
        let n = nodes
            .get_mut(node)
            .ok_or_else(|| err(NODE_NOT_FOUND, "node gone"))?;
        for (a, types) in add {
            if n.subscribers.len() >= max && !n.subscribers.contains_key(&a) {
                return Err(err(NODE_LIMIT, "too many subscribers"));
            }
            n.subscribers.insert(a, types);
        }
        Ok(())
    }

    fn create(&mut self, call: &RpcCall) -> Result<(Address, NodeConfig), RpcError> {
        let p = call.params.as_ref().and_then(Value::as_object);
        let name = match p.and_then(|p| p.get("name")) {
            None | Some(Value::Null) => uuid::Uuid::new_v4().simple().to_string(),
            Some(Value::String(s)) if valid_name(s) => s.clone(),
            Some(_) => return Err(RpcError::invalid_params("name: [A-Za-z0-9_-]{1,128}")),
        };
        let node = self
            .address
            .join(&name)
            .map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let mut config = NodeConfig::default();
        if let Some(pairs) = p.and_then(|p| p.get("configuration")) {
            let pairs = pairs
                .as_object()
                .ok_or_else(|| RpcError::invalid_params("configuration must be an object"))?;
            config.apply(pairs).map_err(RpcError::invalid_params)?;
        }
        let nodes = self.read();
        if nodes.contains_key(&node) {
            return Err(err(NODE_EXISTS, format!("{node} exists")));
        }
        if nodes.len() >= self.max_nodes {
            return Err(err(NODE_LIMIT, "too many nodes"));
        }
        Ok((node, config))
    }

    /// Fans an accepted event out to the node's interested subscribers.
    fn distribute(&mut self, node: &Address, ev: &Arc<Event>, ctx: &mut Context<Self>) {
        let sender = ev.sender().clone();
        let subscribers: Vec<Address> = {
            let nodes = self.read();
            let Some(n) = nodes.get(node) else {
                return;
            };
            if !n.may_publish(&sender) {
                debug!(%node, %sender, "event from a non-publisher ignored");
                return;
            }
            n.subscribers
                .iter()
                .filter(|(s, _)| **s != sender && *s != node)
                .filter(|(_, types)| {
                    types
                        .as_ref()
                        .is_none_or(|t| t.contains(ev.event_type().as_str()))
                })
                .map(|(s, _)| s.clone())
                .collect()
        };
        for sub in subscribers {
            let endpoint = self.endpoint.clone();
            let node = node.clone();
            let ev = ev.clone();
            ctx.spawn(
                async move {
                    let r = if ev.addressing_sensitive() {
                        endpoint
                            .forward(
                                &ev,
                                Addressing::new(node).with_to(sub.clone()),
                                true,
                                None,
                                None,
                            )
                            .await
                            .map(|_| ())
                    } else {
                        endpoint
                            .dispatch(ev.resourced(node, sub.clone()), None, None)
                            .await
                    };
                    if let Err(e) = r {
                        warn!(subscriber = %sub, error = %e, "publication not relayed");
                    }
                }
                .into_actor(self),
            );
        }
    }
}

impl Handler<RpcCall> for PubSubProvider {
    type Result = ResponseActFuture<Self, Result<Value, RpcError>>;

    fn handle(&mut self, call: RpcCall, _: &mut Context<Self>) -> Self::Result {
        let _span =
            tracing::debug_span!("pubsub.rpc", method = %call.method, caller = %call.caller)
                .entered();
        match call.method.as_str() {
            "createNode" => {
                let (node, config) = match self.create(&call) {
                    Ok(x) => x,
                    Err(e) => return Box::pin(fut::ready(Err(e))),
                };
                let endpoint = self.endpoint.clone();
                let entity = node.clone();
                let register = async move {
                    endpoint
                        .register_entity_with(entity, EntityOptions::default())
                        .await
                };
                let owner = call.caller.clone();
                Box::pin(register.into_actor(self).map(move |r, act, _| {
                    r.map_err(|e| err(NODE_LIMIT, e.to_string()))?;
                    let mut publishers = BTreeSet::new();
                    publishers.insert(owner.clone());
                    act.write().insert(
                        node.clone(),
                        Node {
                            owner,
                            publishers,
                            subscribers: BTreeMap::new(),
                            config,
                        },
                    );
                    Ok(json!({"node": node}))
                }))
            }
            "destroyNode" => {
                let (node, n) = match self.node_param(&call) {
                    Ok(x) => x,
                    Err(e) => return Box::pin(fut::ready(Err(e))),
                };
                if let Err(e) = Self::owner_only(&call, &n) {
                    return Box::pin(fut::ready(Err(e)));
                }
                self.write().remove(&node);
                let endpoint = self.endpoint.clone();
                let unregister = async move { endpoint.unregister_entity(node).await };
                Box::pin(unregister.into_actor(self).map(|r, _, _| {
                    r.map(|()| json!({"destroyed": true}))
                        .map_err(|e| RpcError::internal(e.to_string()))
                }))
            }
            _ => Box::pin(fut::ready(self.call_sync(&call))),
        }
    }
}

impl Handler<IncomingEvent> for PubSubProvider {
    type Result = ();
    fn handle(&mut self, m: IncomingEvent, ctx: &mut Context<Self>) {
        if m.recipient != self.address {
            self.distribute(&m.recipient, &m.event, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn policies() {
        let (o, x, y) = (a("hyperty://a/o"), a("hyperty://a/x"), a("hyperty://a/y"));
        assert!(AccessPolicy::Public.allows(&x, &o, false));
        assert!(!AccessPolicy::OwnerOnly.allows(&x, &o, true));
        assert!(AccessPolicy::OwnerOnly.allows(&o, &o, false));
        assert!(AccessPolicy::DeviceLocal.allows(&x, &o, true));
        assert!(!AccessPolicy::DeviceLocal.allows(&x, &o, false));
        let w = AccessPolicy::from_value(&json!({"whitelist": ["hyperty://a/x"]})).unwrap();
        assert!(w.allows(&x, &o, false) && !w.allows(&y, &o, false));
        let b = AccessPolicy::from_value(&json!({"blacklist": ["hyperty://a/x"]})).unwrap();
        assert!(!b.allows(&x, &o, false) && b.allows(&y, &o, false));
        for p in [AccessPolicy::Public, AccessPolicy::Hidden, w, b] {
            assert_eq!(AccessPolicy::from_value(&p.to_value()).unwrap(), p);
        }
        assert!(AccessPolicy::from_value(&json!("everyone")).is_err());
        assert!(AccessPolicy::from_value(&json!({"whitelist": [], "blacklist": []})).is_err());
    }

    #[test]
    fn configuration_is_applied_all_or_nothing() {
        let mut c = NodeConfig::default();
        let ok = json!({"title": "News", "publicationPolicy": "public", "language": "en"});
        c.apply(ok.as_object().unwrap()).unwrap();
        assert_eq!(c.title.as_deref(), Some("News"));
        assert_eq!(c.publication, AccessPolicy::Public);
        assert_eq!(c.to_value()["language"], json!("en"));
        let bad = json!({"title": "Other", "subscriptionPolicy": "nobody"});
        assert!(c.apply(bad.as_object().unwrap()).is_err());
        assert_eq!(c.title.as_deref(), Some("News"));
        for k in POLICY_KEYS {
            assert!(c.to_value().get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn node_names() {
        assert!(valid_name("news-1_a"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(129)));
    }
}
