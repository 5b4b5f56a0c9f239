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
//! It also records *claims* made through `/sm` (an address a session subscribes to or
//! names as `source`, when nobody holds it: how runtime-core makes locally generated
//! hyperty URLs routable).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use hyperty_actors::address::{Address, AddressKind};
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use serde_json::{json, Value};
use tracing::{debug, info};

use super::router::{Router, SessionKey};
use crate::config::AllocationSection;

/// A request from a session to a node service.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Message")]
pub struct NodeRequest {
    /// The requesting session.
    pub session: SessionKey,
    /// The parsed request.
    pub msg: Message,
}

/// Claims `address` for `session` if nobody holds it.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), ClaimRefused>")]
pub struct Claim {
    /// The claiming session.
    pub session: SessionKey,
    /// The address.
    pub address: Arc<str>,
}

/// The address belongs to another session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} belongs to another session")]
pub struct ClaimRefused(pub String);

/// Releases a claim or allocation of `session`.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The session.
    pub session: SessionKey,
    /// The address.
    pub address: Arc<str>,
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
}

impl AddressAllocation {
    /// An allocator writing `router`'s owner table.
    pub fn new(router: Arc<Router>, config: AllocationSection) -> Self {
        AddressAllocation {
            router,
            config,
            held: HashMap::new(),
        }
    }

    fn bind(&mut self, session: &SessionKey, addr: Arc<str>, key: Option<&str>) {
        self.router.owners.insert(addr.clone(), session.clone());
        let held = self.held.entry(session.clone()).or_default();
        if let Some(k) = key {
            held.by_key
                .entry(k.to_owned())
                .or_default()
                .push(addr.clone());
        }
        held.addresses.insert(addr);
    }

    fn free(&mut self, session: &SessionKey, addr: &str) -> bool {
        let Some(held) = self.held.get_mut(session) else {
            return false;
        };
        if !held.addresses.remove(addr) {
            return false;
        }
        self.router
            .owners
            .remove_if(addr, |_, owner| owner == session);
        true
    }

    fn create(&mut self, session: &SessionKey, req: &Message) -> Message {
        let value = req.body.value.as_ref();
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
        let domain = self.router.domain();
        match Address::check(&format!("{scheme}://{domain}/x")) {
            Ok(AddressKind::Hyperty | AddressKind::DataObject) => {}
            _ => {
                return req.reply_error(
                    ResponseCode::BadRequest,
                    format!("scheme {scheme:?} is neither hyperty nor a data-object scheme"),
                )
            }
        }
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
        let holding = self.held.get(session).map_or(0, |h| h.addresses.len());
        if holding + number > self.config.max_per_session {
            return req.reply_error(
                ResponseCode::TooManyRequests,
                format!(
                    "a session may hold at most {} addresses",
                    self.config.max_per_session
                ),
            );
        }
        let allocated: Vec<Arc<str>> = (0..number)
            .map(|_| Arc::from(format!("{scheme}://{domain}/{}", uuid::Uuid::new_v4())))
            .collect();
        for a in &allocated {
            self.bind(session, a.clone(), key.as_deref());
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
}

impl Handler<NodeRequest> for AddressAllocation {
    type Result = MessageResult<NodeRequest>;
    fn handle(&mut self, r: NodeRequest, _: &mut Context<Self>) -> Self::Result {
        let _span =
            tracing::debug_span!("node.allocation", id = r.msg.id, session = %r.session).entered();
        MessageResult(match r.msg.kind {
            MessageType::Create => self.create(&r.session, &r.msg),
            MessageType::Delete => self.delete(&r.session, &r.msg),
            _ => r.msg.reply_error(
                ResponseCode::BadRequest,
                format!(
                    "address allocation takes create and delete, not {}",
                    r.msg.kind
                ),
            ),
        })
    }
}

impl Handler<Claim> for AddressAllocation {
    type Result = Result<(), ClaimRefused>;
    fn handle(&mut self, c: Claim, _: &mut Context<Self>) -> Self::Result {
        match self.router.owners.get(&c.address).map(|k| k.clone()) {
            Some(owner) if owner == c.session => Ok(()),
            Some(_) => Err(ClaimRefused(c.address.to_string())),
            None => {
                let holding = self.held.get(&c.session).map_or(0, |h| h.addresses.len());
                if holding >= self.config.max_per_session {
                    return Err(ClaimRefused(format!(
                        "{} (session address limit reached)",
                        c.address
                    )));
                }
                self.bind(&c.session, c.address, None);
                Ok(())
            }
        }
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
            self.router.owners.remove_if(a, |_, owner| *owner == d.0);
        }
        held.addresses.len()
    }
}
