//! Address Allocation (`domain://msg-node.<D>/address-allocation`).
//!
//! Allocates `<scheme>://<D>/<uuid>` addresses to a session and binds them to it in
//! the router's `owners` table (this actor is that table's only writer): messages to
//! an allocated address go to its session, and the session may send from it.
//!
//! * `create {scheme?, value:{number?, allocationKey?}}` → `200 {value:{allocated:[…]}}`;
//!   `number` defaults to `allocation.default_number` (1) and is bounded by
//!   `allocation.max_per_request`; a session holds at most
//!   `allocation.max_per_session` addresses (429 beyond).
//! * `delete` frees by `childrenResources` (flat or nested lists), by `resource` =
//!   an allocation key (string or list) or an address, and by `value.allocationKey`.
//!   Freed addresses stop routing at once. Always 200 (rethink-wire.md §11.6).
//! * Legacy aliases `…/object-address-allocation` (default scheme `resource`) and
//!   `…/hyperty-address-allocation` (scheme `hyperty`) behave the same.
//!
//! * `create {value:{reclaim:[addresses]}}` binds addresses the session names
//!   itself (a bridge after the node restarted, a runtime's locally generated hyperty
//!   URLs): each must be a bare hyperty or object address of the node's domain, held
//!   by no other session, and not remembered as held by another identity
//!   ([`Holders`]); otherwise the whole request is refused with 403. runtime-core's
//!   `/sm` form of the same request arrives as [`Reclaim`].
//! * Object schemes: any well-formed scheme the node does not reserve, or only those
//!   of `allocation.schemes` when it is not empty.
//!
//! Every binding is recorded in [`Holders`] (who held it), refreshed when the
//! session ends, and swept after `allocation.holder_retention_secs`, on the node's
//! clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use hyperty_actors::address::{Address, AddressKind};
use hyperty_actors::clock::Clock;
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use serde_json::{json, Value};
use tracing::{debug, info};

use dashmap::mapref::one::Ref;

use super::holders::{Holders, HoldersError};
use super::router::{Router, SessionKey, Table, TableVersion};
use crate::config::AllocationSection;

/// The router's `owners` table: allocated address → session key. Read by anyone
/// in the crate; written only here, by the [`AddressAllocation`].
#[derive(Debug, Default)]
pub struct Owners(Table<Arc<str>, SessionKey>, TableVersion);

impl Owners {
    /// The session holding exactly `addr`.
    pub(crate) fn get(&self, addr: &str) -> Option<Ref<'_, Arc<str>, SessionKey>> {
        self.0.get(addr)
    }

    /// Allocated addresses.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// See [`TableVersion`].
    pub(crate) fn version(&self) -> u64 {
        self.1.get()
    }

    fn insert(&self, addr: Arc<str>, key: SessionKey) {
        self.0.insert(addr, key);
        self.1.bump();
    }

    fn remove_if(&self, addr: &str, key: &SessionKey) {
        if self.0.remove_if(addr, |_, owner| owner == key).is_some() {
            self.1.bump();
        }
    }

    /// Binds `addr` for a router unit test.
    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, addr: Arc<str>, key: SessionKey) {
        self.insert(addr, key);
    }
}

/// Schemes of the web and of the node itself, never allocated as object schemes.
const RESERVED_SCHEMES: &[&str] = &[
    "http",
    "https",
    "ws",
    "wss",
    "ftp",
    "file",
    "mailto",
    "javascript",
    "about",
    "blob",
];

/// How often expired holder records are swept.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A request from a session to a node service.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Message")]
pub struct NodeRequest {
    /// The requesting session.
    pub session: SessionKey,
    /// The parsed request.
    pub msg: Message,
}

/// Binds addresses a session names itself (runtime-core's `/sm` allocation form).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), Refused>")]
pub struct Reclaim {
    /// The session.
    pub session: SessionKey,
    /// The addresses.
    pub addresses: Vec<Arc<str>>,
}

/// Why addresses were not bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct Refused {
    /// Response code (400, 403, 429, 500, 503).
    pub code: ResponseCode,
    /// Why.
    pub description: String,
}

fn refused(code: ResponseCode, description: impl Into<String>) -> Refused {
    Refused {
        code,
        description: description.into(),
    }
}

/// Closes the durable records (on node shutdown), so another node may open them.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct CloseStore;

/// Releases an address of `session`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The session.
    pub session: SessionKey,
    /// The address.
    pub address: Arc<str>,
}

/// Session `0` was re-opened on another node: its addresses leave this node's
/// table, and the cluster's entries stay for the new node.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "usize")]
pub struct HandOverAddresses(pub SessionKey);

/// Session `session`, re-opened here, takes over the addresses it held on
/// another node.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), Refused>")]
pub struct AdoptAddresses {
    /// The session.
    pub session: SessionKey,
    /// Its addresses.
    pub addresses: Vec<Arc<str>>,
}

/// Frees everything a session holds (close or end of grace period).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "usize")]
pub struct DropSession(pub SessionKey);

#[derive(Debug, Default)]
struct Held {
    addresses: HashSet<Arc<str>>,
    by_key: HashMap<String, Vec<Arc<str>>>,
}

/// The address allocation actor.
#[derive(Debug)]
pub struct AddressAllocation {
    router: Arc<Router>,
    config: AllocationSection,
    held: HashMap<SessionKey, Held>,
    holders: Holders,
    clock: Arc<dyn Clock>,
    /// Addresses bound since the last claim in the cluster.
    unclaimed: Vec<Arc<str>>,
}

impl AddressAllocation {
    /// An allocator writing `router`'s owner table and recording holders in
    /// `holders`, their times read on `clock` (the node's one clock).
    pub fn new(
        router: Arc<Router>,
        config: AllocationSection,
        holders: Holders,
        clock: Arc<dyn Clock>,
    ) -> Self {
        AddressAllocation {
            router,
            config,
            held: HashMap::new(),
            holders,
            clock,
            unclaimed: Vec::new(),
        }
    }

    /// Claims the addresses bound since the last call for `session` in the
    /// cluster (`force`: taking them over from another node); on refusal they are
    /// freed again and the error says why (403 held on another node, 503 Redis away).
    fn claim(
        &mut self,
        session: &SessionKey,
        force: bool,
    ) -> impl ActorFuture<Self, Output = Result<(), Refused>> + 'static {
        let addrs = std::mem::take(&mut self.unclaimed);
        let cluster = self.router.cluster().cloned();
        let session = session.clone();
        let bound = addrs.clone();
        let key = session.clone();
        let work = async move {
            let Some(cluster) = cluster.filter(|_| !addrs.is_empty()) else {
                return Ok(());
            };
            let unavailable = |e: crate::cluster::ClusterError| {
                refused(
                    ResponseCode::ServiceUnavailable,
                    format!("the cluster cannot record the addresses: {e}"),
                )
            };
            let keys: Vec<String> = addrs.iter().map(|a| cluster.key(&["owner", a])).collect();
            let won = cluster
                .claim(&keys, cluster.id(), force)
                .await
                .map_err(unavailable)?;
            if let Some((a, _)) = addrs.iter().zip(&won).find(|(_, w)| !**w) {
                let mine: Vec<String> = keys
                    .iter()
                    .zip(&won)
                    .filter(|(_, w)| **w)
                    .map(|(k, _)| k.clone())
                    .collect();
                let _ = cluster.release(&mine).await;
                return Err(refused(
                    ResponseCode::Forbidden,
                    format!("{a} belongs to a session on another node"),
                ));
            }
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            cluster
                .add_members(&cluster.key(&["sess", &session, "addrs"]), &list)
                .await
                .map_err(unavailable)?;
            // caches elsewhere may say "nobody" (or, taken over, the old node)
            cluster.invalidate(list).await.map_err(unavailable)?;
            Ok(())
        };
        fut::wrap_future::<_, Self>(work).map(move |r, act, _| {
            if r.is_err() {
                for a in &bound {
                    act.unbind(&key, a);
                }
            }
            r
        })
    }

    fn holding(&self, session: &SessionKey) -> usize {
        self.held.get(session).map_or(0, |h| h.addresses.len())
    }

    /// Records the session's holder for `addrs`, then binds them to it.
    fn bind_all(
        &mut self,
        session: &SessionKey,
        addrs: &[Arc<str>],
        key: Option<&str>,
    ) -> Result<(), Refused> {
        let Some(holder) = self.router.holder_of(session) else {
            return Err(refused(
                ResponseCode::Forbidden,
                "open the session first (open to mn:/session)",
            ));
        };
        let fresh = addrs
            .iter()
            .filter(|a| {
                !self
                    .held
                    .get(session)
                    .is_some_and(|h| h.addresses.contains(*a))
            })
            .count();
        if self.holding(session) + fresh > self.config.max_per_session {
            return Err(refused(
                ResponseCode::TooManyRequests,
                format!(
                    "a session may hold at most {} addresses",
                    self.config.max_per_session
                ),
            ));
        }
        self.holders
            .record(&holder, addrs, self.clock.now_secs())
            .map_err(|e| match e {
                HoldersError::Full(_) => refused(ResponseCode::Other(503), e.to_string()),
                e => refused(ResponseCode::InternalError, e.to_string()),
            })?;
        let held = self.held.entry(session.clone()).or_default();
        for addr in addrs {
            self.router.owners.insert(addr.clone(), session.clone());
            self.unclaimed.push(addr.clone());
            if let Some(k) = key {
                held.by_key
                    .entry(k.to_owned())
                    .or_default()
                    .push(addr.clone());
            }
            held.addresses.insert(addr.clone());
        }
        Ok(())
    }

    /// Checks that `scheme` may be allocated and makes it parseable.
    fn check_scheme(&self, scheme: &str) -> Result<(), String> {
        let allowed = if self.config.schemes.is_empty() {
            scheme == "hyperty"
                || (hyperty_actors::address::is_valid_scheme(scheme)
                    && !hyperty_actors::address::is_reserved_scheme(scheme)
                    && !RESERVED_SCHEMES.contains(&scheme))
        } else {
            self.config.schemes.iter().any(|s| s == scheme)
        };
        if !allowed {
            return Err(format!(
                "scheme {scheme:?} cannot be allocated (hyperty, or an object scheme the node does not reserve)"
            ));
        }
        if scheme != "hyperty" {
            hyperty_actors::address::register_data_scheme(scheme)
                .map_err(|e| format!("scheme {scheme:?}: {e}"))?;
        }
        Ok(())
    }

    /// Binds addresses the session names itself; all or none.
    fn reclaim(&mut self, session: &SessionKey, list: &[Arc<str>]) -> Result<(), Refused> {
        let Some(holder) = self.router.holder_of(session) else {
            return Err(refused(
                ResponseCode::Forbidden,
                "open the session first (open to mn:/session)",
            ));
        };
        let domain = self.router.domain().to_owned();
        let now = self.clock.now_secs();
        for a in list {
            let bad = |why: &str| refused(ResponseCode::BadRequest, format!("{a}: {why}"));
            let addr = Address::parse(a).map_err(|e| bad(&e.to_string()))?;
            if !matches!(addr.kind(), AddressKind::Hyperty | AddressKind::DataObject)
                || addr.domain() != Some(domain.as_str())
            {
                return Err(bad(&format!(
                    "only hyperty and object addresses of {domain} can be claimed"
                )));
            }
            let bare = addr.path().matches('/').count() == 1 && !addr.path().ends_with('/');
            if !bare {
                return Err(bad("only a bare address (one path segment) can be claimed"));
            }
            if addr.kind() == AddressKind::DataObject {
                self.check_scheme(addr.scheme()).map_err(|e| bad(&e))?;
            }
            if self.router.owners.get(a).is_some_and(|k| *k != *session) {
                return Err(refused(
                    ResponseCode::Forbidden,
                    format!("{a} belongs to another session"),
                ));
            }
            if !self.holders.may_hold(a, &holder, now) {
                return Err(refused(
                    ResponseCode::Forbidden,
                    format!("{a} was held by another identity"),
                ));
            }
        }
        self.bind_all(session, list, None)
    }

    fn reclaim_request(&mut self, session: &SessionKey, req: &Message, list: &Value) -> Message {
        let Some(items) = list.as_array().filter(|l| !l.is_empty()) else {
            return req.reply_error(
                ResponseCode::BadRequest,
                "body.value.reclaim must be a non-empty array of addresses",
            );
        };
        if items.len() > self.config.max_per_request {
            return req.reply_error(
                ResponseCode::BadRequest,
                format!(
                    "at most {} addresses per request",
                    self.config.max_per_request
                ),
            );
        }
        let Some(addrs) = items
            .iter()
            .map(|v| v.as_str().map(Arc::<str>::from))
            .collect::<Option<Vec<_>>>()
        else {
            return req.reply_error(
                ResponseCode::BadRequest,
                "body.value.reclaim must be a non-empty array of addresses",
            );
        };
        match self.reclaim(session, &addrs) {
            Ok(()) => {
                let list: Vec<&str> = addrs.iter().map(|a| &**a).collect();
                req.reply_value(ResponseCode::Ok, json!({ "allocated": list }))
            }
            Err(e) => req.reply_error(e.code, e.description),
        }
    }

    /// Takes `addr` from `session` in this node's tables only.
    fn unbind(&mut self, session: &SessionKey, addr: &str) -> bool {
        let Some(held) = self.held.get_mut(session) else {
            return false;
        };
        if !held.addresses.remove(addr) {
            return false;
        }
        for list in held.by_key.values_mut() {
            list.retain(|a| &**a != addr);
        }
        self.router.owners.remove_if(addr, session);
        true
    }

    fn free(&mut self, session: &SessionKey, addr: &str) -> bool {
        if !self.unbind(session, addr) {
            return false;
        }
        if let Some(cluster) = self.router.cluster().cloned() {
            let owner = cluster.key(&["owner", addr]);
            let record = cluster.key(&["sess", session, "addrs"]);
            let addr = addr.to_owned();
            actix::spawn(async move {
                let r = async {
                    cluster.release(&[owner]).await?;
                    cluster.remove_member(&record, &addr).await?;
                    cluster.invalidate(vec![addr]).await
                };
                if let Err(e) = r.await {
                    tracing::debug!(error = %e, "freeing an address in the cluster failed (it expires)");
                }
            });
        }
        true
    }

    fn create(&mut self, session: &SessionKey, req: &Message) -> Message {
        let value = req.body.value.as_ref();
        if let Some(list) = value.and_then(|v| v.get("reclaim")) {
            return self.reclaim_request(session, req, list);
        }
        let default_scheme = match req.to.first().path() {
            "/object-address-allocation" => "resource",
            _ => "hyperty",
        };
        let scheme = req
            .body
            .extra
            .get("scheme")
            .or_else(|| value.and_then(|v| v.get("scheme")))
            .map(|s| s.as_str().ok_or("body.scheme must be a string"))
            .transpose();
        let scheme = match scheme {
            Ok(s) => s.unwrap_or(default_scheme),
            Err(e) => return req.reply_error(ResponseCode::BadRequest, e),
        };
        if let Err(e) = self.check_scheme(scheme) {
            return req.reply_error(ResponseCode::BadRequest, e);
        }
        let domain = self.router.domain().to_owned();
        let number = match value.and_then(|v| v.get("number")) {
            None | Some(Value::Null) => self.config.default_number,
            Some(n) => match n.as_u64() {
                Some(n) if n >= 1 && n as usize <= self.config.max_per_request => n as usize,
                _ => {
                    return req.reply_error(
                        ResponseCode::BadRequest,
                        format!(
                            "body.value.number must be an integer from 1 to {}",
                            self.config.max_per_request
                        ),
                    )
                }
            },
        };
        let key = match value.and_then(|v| v.get("allocationKey")) {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => {
                return req.reply_error(
                    ResponseCode::BadRequest,
                    "body.value.allocationKey must be a string",
                )
            }
        };
        let allocated: Vec<Arc<str>> = (0..number)
            .map(|_| Arc::from(format!("{scheme}://{domain}/{}", uuid::Uuid::new_v4())))
            .collect();
        if let Err(e) = self.bind_all(session, &allocated, key.as_deref()) {
            return req.reply_error(e.code, e.description);
        }
        info!(session = %session, number, scheme, "addresses allocated");
        let list: Vec<&str> = allocated.iter().map(|a| &**a).collect();
        req.reply_value(ResponseCode::Ok, json!({ "allocated": list }))
    }

    fn delete(&mut self, session: &SessionKey, req: &Message) -> Message {
        let mut freed = 0;
        if let Some(children) = &req.body.children_resources {
            for a in children.flatten() {
                freed += usize::from(self.free(session, a));
            }
        }
        let mut keys: Vec<String> = req
            .body
            .resource
            .iter()
            .flat_map(|r| r.iter().cloned())
            .collect();
        if let Some(k) = req
            .body
            .value
            .as_ref()
            .and_then(|v| v.get("allocationKey"))
            .and_then(Value::as_str)
        {
            keys.push(k.to_owned());
        }
        for k in keys {
            let by_key = self
                .held
                .get_mut(session)
                .and_then(|h| h.by_key.remove(&k))
                .unwrap_or_default();
            for a in by_key {
                freed += usize::from(self.free(session, &a));
            }
            // a resource may also name an address itself
            freed += usize::from(self.free(session, &k));
        }
        debug!(session = %session, freed, "addresses freed");
        req.reply_value(ResponseCode::Ok, json!({ "freed": freed }))
    }
}

impl Actor for AddressAllocation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_INTERVAL, |act, _| {
            if let Err(e) = act.holders.sweep(act.clock.now_secs()) {
                tracing::warn!(error = %e, "sweeping address holders failed");
            }
        });
    }
}

impl Handler<NodeRequest> for AddressAllocation {
    type Result = ResponseActFuture<Self, Message>;
    fn handle(&mut self, r: NodeRequest, _: &mut Context<Self>) -> Self::Result {
        let _span =
            tracing::debug_span!("node.allocation", id = r.msg.id, session = %r.session).entered();
        let reply = match r.msg.kind {
            MessageType::Create => self.create(&r.session, &r.msg),
            MessageType::Delete => self.delete(&r.session, &r.msg),
            _ => r.msg.reply_error(
                ResponseCode::BadRequest,
                format!(
                    "address allocation takes create and delete, not {}",
                    r.msg.kind
                ),
            ),
        };
        // the cluster holds the new addresses before the 200 goes out
        Box::pin(
            self.claim(&r.session, false)
                .map(move |claimed, _, _| match claimed {
                    Ok(()) => reply,
                    Err(e) => r.msg.reply_error(e.code, e.description),
                }),
        )
    }
}

impl Handler<Reclaim> for AddressAllocation {
    type Result = ResponseActFuture<Self, Result<(), Refused>>;
    fn handle(&mut self, r: Reclaim, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.reclaim(&r.session, &r.addresses) {
            return Box::pin(fut::ready(Err(e)));
        }
        Box::pin(self.claim(&r.session, false))
    }
}

impl Handler<AdoptAddresses> for AddressAllocation {
    type Result = ResponseActFuture<Self, Result<(), Refused>>;
    fn handle(&mut self, a: AdoptAddresses, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.bind_all(&a.session, &a.addresses, None) {
            self.unclaimed.clear();
            return Box::pin(fut::ready(Err(e)));
        }
        Box::pin(self.claim(&a.session, true))
    }
}

impl Handler<HandOverAddresses> for AddressAllocation {
    type Result = usize;
    fn handle(&mut self, h: HandOverAddresses, _: &mut Context<Self>) -> usize {
        let Some(held) = self.held.remove(&h.0) else {
            return 0;
        };
        let cluster = self.router.cluster().cloned();
        for a in &held.addresses {
            self.router.owners.remove_if(a, &h.0);
            if let Some(c) = &cluster {
                c.forget(&c.key(&["owner", a]));
            }
        }
        if let Some(c) = &cluster {
            c.forget(&c.key(&["sess", &h.0, "addrs"]));
        }
        held.addresses.len()
    }
}

impl Handler<CloseStore> for AddressAllocation {
    type Result = ();
    fn handle(&mut self, _: CloseStore, _: &mut Context<Self>) {
        self.holders.close();
    }
}

impl Handler<Release> for AddressAllocation {
    type Result = ();
    fn handle(&mut self, r: Release, _: &mut Context<Self>) {
        self.free(&r.session, &r.address);
    }
}

impl Handler<DropSession> for AddressAllocation {
    type Result = usize;
    fn handle(&mut self, d: DropSession, _: &mut Context<Self>) -> usize {
        let Some(held) = self.held.remove(&d.0) else {
            return 0;
        };
        for a in &held.addresses {
            self.router.owners.remove_if(a, &d.0);
        }
        let addresses: Vec<Arc<str>> = held.addresses.into_iter().collect();
        if let Some(cluster) = self.router.cluster().cloned() {
            let owners: Vec<String> = addresses
                .iter()
                .map(|a| cluster.key(&["owner", a]))
                .collect();
            let record = cluster.key(&["sess", &d.0, "addrs"]);
            let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            actix::spawn(async move {
                let r = async {
                    cluster.release(&owners).await?;
                    cluster.delete(&record).await?;
                    cluster.invalidate(list).await
                };
                if let Err(e) = r.await {
                    tracing::debug!(error = %e, "freeing a session's addresses in the cluster failed (they expire)");
                }
            });
        }
        // the retention of their records counts from now
        if let Err(e) = self.holders.touch(&addresses, self.clock.now_secs()) {
            tracing::warn!(error = %e, "recording the end of a session's addresses failed");
        }
        addresses.len()
    }
}
