//! Routing tables read by the bus on every message.
//!
//! Two plain data structures, each written by exactly one actor and read
//! concurrently by every sender (design.md §6):
//!
//! * [`ListenerTable`]: exact address → local listeners. Written by the
//!   [`MessageBus`](crate::bus::MessageBus) actor.
//! * [`StubTable`]: domain → protocol stub, plus the default stub (the bridge to the
//!   runtime's own messaging node). Written by the
//!   [`RuntimeRegistry`](crate::registry::RuntimeRegistry) actor.
//!
//! Readers never clone a `Recipient` (that allocates); they send while holding the
//! map's read guard, which never blocks because `try_send` does not wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use actix::dev::SendError;
use actix::Recipient;
use dashmap::DashMap;

use crate::address::Address;
use crate::bus::Deliver;

/// Identifies one listener registration, so it can be removed precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u64);

#[derive(Debug)]
struct ListenerEntry {
    id: ListenerId,
    recipient: Recipient<Deliver>,
    owner: Option<Arc<str>>,
}

/// Outcome of delivering to the listeners of one address.
#[derive(Debug)]
pub enum Delivery {
    /// Delivered to `n` listeners.
    Delivered(usize),
    /// No listener on that address; the message is handed back.
    NoListener(Deliver),
    /// Every listener refused: the message is handed back with the reason.
    Refused(Deliver, Refusal),
}

/// Why a listener did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its mailbox is full.
    Full,
    /// Its actor has stopped.
    Closed,
}

impl<M> From<&SendError<M>> for Refusal {
    fn from(e: &SendError<M>) -> Refusal {
        match e {
            SendError::Full(_) => Refusal::Full,
            SendError::Closed(_) => Refusal::Closed,
        }
    }
}

fn into_inner<M>(e: SendError<M>) -> M {
    match e {
        SendError::Full(m) | SendError::Closed(m) => m,
    }
}

/// Exact-address listener table.
#[derive(Debug, Default)]
pub struct ListenerTable {
    map: DashMap<Arc<str>, Vec<ListenerEntry>>,
    next: AtomicU64,
    count: AtomicU64,
}

impl ListenerTable {
    /// Adds a listener; several listeners on one address each get every message.
    pub fn add(
        &self,
        address: &Address,
        recipient: Recipient<Deliver>,
        owner: Option<&Address>,
    ) -> ListenerId {
        let id = ListenerId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.map
            .entry(address.shared().clone())
            .or_default()
            .push(ListenerEntry {
                id,
                recipient,
                owner: owner.map(|o| o.shared().clone()),
            });
        self.count.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Removes one registration; true if it existed.
    pub fn remove(&self, address: &str, id: ListenerId) -> bool {
        let mut removed = false;
        self.map.remove_if_mut(address, |_, entries| {
            let before = entries.len();
            entries.retain(|e| e.id != id);
            removed = entries.len() < before;
            entries.is_empty()
        });
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes every listener on `address`; returns how many.
    pub fn remove_all(&self, address: &str) -> usize {
        let n = self.map.remove(address).map_or(0, |(_, v)| v.len());
        self.count.fetch_sub(n as u64, Ordering::Relaxed);
        n
    }

    /// Removes every listener registered with `owner`; returns how many.
    pub fn remove_owned_by(&self, owner: &str) -> usize {
        let mut n = 0;
        self.map.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|e| e.owner.as_deref() != Some(owner));
            n += before - entries.len();
            !entries.is_empty()
        });
        self.count.fetch_sub(n as u64, Ordering::Relaxed);
        n
    }

    /// True if at least one listener is on `address`.
    pub fn contains(&self, address: &str) -> bool {
        self.map.contains_key(address)
    }

    /// Number of registrations.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }

    /// True if there are no registrations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Delivers to every listener on `address`: a copy to each but the last, the
    /// original to the last. Listeners whose actor stopped are removed.
    pub fn deliver(&self, address: &str, msg: Deliver) -> Delivery {
        let mut dead = Vec::new();
        let outcome = match self.map.get(address) {
            None => return Delivery::NoListener(msg),
            Some(entries) => {
                let mut msg = Some(msg);
                let mut delivered = 0;
                let mut refusal = Refusal::Closed;
                let last = entries.len().saturating_sub(1);
                for (i, e) in entries.iter().enumerate() {
                    let m = match (i == last, msg.take()) {
                        (true, Some(m)) => m,
                        (false, Some(m)) => {
                            let copy = Deliver(m.0.clone());
                            msg = Some(m);
                            copy
                        }
                        (_, None) => break,
                    };
                    match e.recipient.try_send(m) {
                        Ok(()) => delivered += 1,
                        Err(err) => {
                            refusal = Refusal::from(&err);
                            if refusal == Refusal::Closed {
                                dead.push(e.id);
                            }
                            if i == last {
                                msg = Some(into_inner(err));
                            }
                        }
                    }
                }
                match (delivered, msg) {
                    (0, Some(m)) => Delivery::Refused(m, refusal),
                    (n, _) => Delivery::Delivered(n),
                }
            }
        };
        for id in dead {
            self.remove(address, id);
        }
        outcome
    }
}

/// A protocol stub as seen by the router.
#[derive(Debug)]
pub struct StubRoute {
    /// The stub's URL (`hyperty-runtime://<d>/<rt>/protostub/<n>`).
    pub url: Address,
    /// Where outbound messages go.
    pub recipient: Recipient<Deliver>,
}

/// A message for a domain that has no stub yet, handed to whoever loads stubs
/// on demand (the registry, which asks the runtime's user agent).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct AwaitStub {
    /// The domain without a stub.
    pub domain: String,
    /// The recipient the message is for.
    pub target: Address,
    /// The message.
    pub msg: Deliver,
}

/// Where messages for domains without a stub wait (see [`AwaitStub`]).
#[derive(Debug)]
pub struct OnDemand {
    /// The runtime's own domain, never loaded on demand.
    pub own_domain: String,
    /// Who takes the waiting messages.
    pub recipient: Recipient<AwaitStub>,
}

/// Domain → protocol stub, plus a default stub for every other domain, plus
/// (optionally) a loader of stubs on demand, consulted before the default.
#[derive(Debug, Default)]
pub struct StubTable {
    by_domain: DashMap<String, StubRoute>,
    default: RwLock<Option<StubRoute>>,
    on_demand: RwLock<Option<OnDemand>>,
}

/// Outcome of handing a message to a stub.
#[derive(Debug)]
pub enum StubDelivery {
    /// Handed to the stub with that URL.
    Sent(Address),
    /// No stub for the address (or only the one it came from): handed back.
    NoStub(Deliver),
    /// Waiting for the domain's stub to be loaded.
    Waiting(String),
    /// The stub refused: handed back with the reason.
    Refused(Deliver, Refusal),
}

impl StubTable {
    /// Sets the stub for `domain`, returning the one it replaces.
    pub fn insert(&self, domain: &str, route: StubRoute) -> Option<StubRoute> {
        self.by_domain.insert(domain.to_owned(), route)
    }

    /// Removes the stub of `domain`.
    pub fn remove(&self, domain: &str) -> Option<StubRoute> {
        self.by_domain.remove(domain).map(|(_, r)| r)
    }

    /// Sets (or clears) the default stub.
    pub fn set_default(&self, route: Option<StubRoute>) -> Option<StubRoute> {
        std::mem::replace(
            &mut *self.default.write().unwrap_or_else(|e| e.into_inner()),
            route,
        )
    }

    /// Sets (or clears) the on-demand loader.
    pub fn set_on_demand(&self, on_demand: Option<OnDemand>) {
        *self.on_demand.write().unwrap_or_else(|e| e.into_inner()) = on_demand;
    }

    /// The URL of the stub that would carry a message to `target`.
    pub fn resolve_url(&self, target: &Address) -> Option<Address> {
        if let Some(r) = target.routing_domain().and_then(|d| self.by_domain.get(d)) {
            return Some(r.url.clone());
        }
        self.default
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.url.clone())
    }

    /// The URL of the stub registered for `domain` (not the default).
    pub fn stub_for(&self, domain: &str) -> Option<Address> {
        self.by_domain.get(domain).map(|r| r.url.clone())
    }

    /// Number of domain stubs (the default not counted).
    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    /// True if there is no domain stub.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// Sends `msg` to the stub for `target`: the domain's stub, else the default.
    /// A message never goes back to the stub named `came_from`.
    pub fn deliver(&self, target: &Address, msg: Deliver, came_from: Option<&str>) -> StubDelivery {
        let send = |r: &StubRoute, msg: Deliver| -> StubDelivery {
            if came_from == Some(r.url.as_str()) {
                return StubDelivery::NoStub(msg);
            }
            match r.recipient.try_send(msg) {
                Ok(()) => StubDelivery::Sent(r.url.clone()),
                Err(e) => {
                    let why = Refusal::from(&e);
                    StubDelivery::Refused(into_inner(e), why)
                }
            }
        };
        if let Some(r) = target.routing_domain().and_then(|d| self.by_domain.get(d)) {
            return send(&r, msg);
        }
        let msg = match (
            &*self.on_demand.read().unwrap_or_else(|e| e.into_inner()),
            target.routing_domain(),
        ) {
            (Some(od), Some(domain)) if came_from.is_none() && domain != od.own_domain => {
                let wait = AwaitStub {
                    domain: domain.to_owned(),
                    target: target.clone(),
                    msg,
                };
                return match od.recipient.try_send(wait) {
                    Ok(()) => StubDelivery::Waiting(domain.to_owned()),
                    Err(e) => {
                        let why = Refusal::from(&e);
                        StubDelivery::Refused(into_inner(e).msg, why)
                    }
                };
            }
            _ => msg,
        };
        match &*self.default.read().unwrap_or_else(|e| e.into_inner()) {
            Some(r) => send(r, msg),
            None => StubDelivery::NoStub(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, MessageType};
    use actix::prelude::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink(Arc<Mutex<Vec<Message>>>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Sink {
        type Result = ();
        fn handle(&mut self, m: Deliver, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(m.0);
        }
    }

    fn msg(to: &str) -> Deliver {
        Deliver(Message::new(
            MessageType::Update,
            "hyperty://a/1".parse().unwrap(),
            to.parse::<Address>().unwrap(),
        ))
    }

    #[actix::test]
    async fn listeners_add_remove_fan_out() {
        let t = ListenerTable::default();
        let a: Address = "comm://a/o/changes".parse().unwrap();
        let owner: Address = "hyperty://a/2".parse().unwrap();
        let s1 = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::new(Mutex::new(Vec::new()));
        let r1 = Sink(s1.clone()).start().recipient();
        let r2 = Sink(s2.clone()).start().recipient();
        let id1 = t.add(&a, r1, None);
        let _id2 = t.add(&a, r2, Some(&owner));
        assert_eq!(t.len(), 2);
        assert!(matches!(
            t.deliver(a.as_str(), msg(a.as_str())),
            Delivery::Delivered(2)
        ));
        assert!(t.remove(a.as_str(), id1));
        assert!(!t.remove(a.as_str(), id1));
        assert_eq!(t.remove_owned_by(owner.as_str()), 1);
        assert!(t.is_empty());
        assert!(!t.contains(a.as_str()));
        assert!(matches!(
            t.deliver(a.as_str(), msg(a.as_str())),
            Delivery::NoListener(_)
        ));
    }

    #[actix::test]
    async fn dead_listener_is_removed_and_message_returned() {
        let t = ListenerTable::default();
        let a: Address = "hyperty://a/2".parse().unwrap();
        let addr = Sink::default().start();
        t.add(&a, addr.clone().recipient(), None);
        // stop the actor and wait until its mailbox is closed
        let sys_addr = addr.clone();
        drop(addr);
        sys_addr.do_send(StopNow);
        while sys_addr.connected() {
            actix_rt::task::yield_now().await;
        }
        match t.deliver(a.as_str(), msg(a.as_str())) {
            Delivery::Refused(m, Refusal::Closed) => assert_eq!(m.0.to.first(), &a),
            other => panic!("unexpected {other:?}"),
        }
        assert!(t.is_empty());
    }

    #[derive(actix::Message)]
    #[rtype(result = "()")]
    struct StopNow;
    impl Handler<StopNow> for Sink {
        type Result = ();
        fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    #[actix::test]
    async fn stubs_by_domain_then_default_and_no_loop() {
        let t = StubTable::default();
        let s = Arc::new(Mutex::new(Vec::new()));
        let stub_b: Address = "hyperty-runtime://a/rt/protostub/1".parse().unwrap();
        let stub_default: Address = "hyperty-runtime://a/rt/protostub/0".parse().unwrap();
        t.insert(
            "b.org",
            StubRoute {
                url: stub_b.clone(),
                recipient: Sink(s.clone()).start().recipient(),
            },
        );
        let target_b: Address = "hyperty://b.org/1".parse().unwrap();
        let target_c: Address = "hyperty://c.org/1".parse().unwrap();
        let target_reg: Address = "domain://registry.b.org".parse().unwrap();
        assert_eq!(t.resolve_url(&target_b), Some(stub_b.clone()));
        assert_eq!(t.resolve_url(&target_reg), Some(stub_b.clone()));
        assert_eq!(t.resolve_url(&target_c), None);
        assert!(matches!(
            t.deliver(&target_c, msg(target_c.as_str()), None),
            StubDelivery::NoStub(_)
        ));
        t.set_default(Some(StubRoute {
            url: stub_default.clone(),
            recipient: Sink(s.clone()).start().recipient(),
        }));
        assert_eq!(t.resolve_url(&target_c), Some(stub_default.clone()));
        assert!(matches!(
            t.deliver(&target_c, msg(target_c.as_str()), None),
            StubDelivery::Sent(u) if u == stub_default
        ));
        // never back to the stub it came from
        assert!(matches!(
            t.deliver(&target_b, msg(target_b.as_str()), Some(stub_b.as_str())),
            StubDelivery::NoStub(_)
        ));
        assert_eq!(t.stub_for("b.org"), Some(stub_b));
        assert!(t.remove("b.org").is_some());
        assert!(t.is_empty());
    }
}
