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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use hyperty_actors::address::{Address, AddressKind};
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use serde_json::Value;
use tracing::debug;

use super::allocation::{AddressAllocation, NodeRequest, Reclaim, Release};
use super::rights::is_manager;
use super::router::{domain_of_address, Router, SessionKey, PEER_KEY_PREFIX};
use crate::config::SubscriptionsSection;

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

/// The subscription manager actor.
#[derive(Debug)]
pub struct SubscriptionManager {
    router: Arc<Router>,
    allocation: Addr<AddressAllocation>,
    config: SubscriptionsSection,
    managers: Vec<String>,
    by_session: HashMap<SessionKey, HashSet<Arc<str>>>,
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
        for r in list {
            let r: Arc<str> = Arc::from(r.as_str());
            if mine.insert(r.clone()) {
                let mut subs = self.router.subscribers.entry(r).or_default();
                if !subs.contains(session) {
                    subs.push(session.clone());
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, session: &SessionKey, resource: &str) {
        if let Some(mine) = self.by_session.get_mut(session) {
            mine.remove(resource);
        }
        self.router.subscribers.remove_if_mut(resource, |_, subs| {
            subs.retain(|k| k != session);
            subs.is_empty()
        });
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
        Box::pin(work.into_actor(self).map(move |bound, act, _| {
            if let Err((code, why)) = bound {
                return r.msg.reply_error(code, why);
            }
            match act.add(&r.session, &list) {
                Ok(()) => {
                    debug!(session = %r.session, n = list.len(), "subscribed");
                    r.msg.reply(ResponseCode::Ok)
                }
                Err(e) => r.msg.reply_error(ResponseCode::TooManyRequests, e),
            }
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
            MessageType::Unsubscribe => Box::pin(fut::ready(self.unsubscribe(&r))),
            _ => Box::pin(fut::ready(r.msg.reply_error(
                ResponseCode::BadRequest,
                format!(
                    "the subscription manager takes subscribe and unsubscribe, not {}",
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
    }
}

impl Handler<DropSubscriptions> for SubscriptionManager {
    type Result = usize;
    fn handle(&mut self, d: DropSubscriptions, _: &mut Context<Self>) -> usize {
        let Some(mine) = self.by_session.remove(&d.0) else {
            return 0;
        };
        for r in &mine {
            self.router.subscribers.remove_if_mut(r, |_, subs| {
                subs.retain(|k| *k != d.0);
                subs.is_empty()
            });
        }
        mine.len()
    }
}
