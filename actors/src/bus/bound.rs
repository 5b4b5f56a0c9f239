//! [`BoundBus`]: the bus handle a hyperty holds, bound to the addresses its
//! runtime gave it.
//!
//! A hyperty's [`HypertyContext`](crate::hyperty::HypertyContext) carries a
//! `BoundBus`, never the full [`Bus`]. Every message it sends must come `from` an
//! address it [holds](Holdings) — its hyperty URL, anything under it, and the
//! addresses allocated for it ([`HypertyContext::allocate`](crate::hyperty::HypertyContext::allocate)) —
//! and so must `body.source`; a response may complete only a request that was
//! addressed to it; a listener may be added or removed only on an address it
//! holds. Anything else is refused with [`BusError::NotHeld`] (403) and nothing is
//! delivered: a `post` fails, a `send` of a request is answered 403 at the
//! hyperty's own URL. The handle cannot inject messages as a protocol stub, reach
//! the bus actor, or change the interceptor chain; interceptors are told which
//! hyperty sent each message ([`Interceptor::intercept_sent`](crate::bus::Interceptor::intercept_sent)),
//! so the identity interceptor attaches the sender's own assertion only.
//!
//! The full-power [`Bus`] stays with the runtime owner (the application that
//! started the runtime) and with protocol stubs.
//!
//! ```
//! # use hyperty_actors::prelude::*;
//! # use hyperty_actors::bus::{BoundBus, Holdings};
//! # #[actix::main] async fn main() {
//! let rt: RuntimeUrl = "hyperty-runtime://a.example/rt".parse().unwrap();
//! let bus = MessageBus::start(rt, BusConfig::default(), Default::default());
//! let me: HypertyUrl = "hyperty://evil.example/e".parse().unwrap();
//! let bound = BoundBus::new(bus, Holdings::new(me));
//! let victim: Address = "hyperty://a.example/v".parse().unwrap();
//! let forged = Message::new(MessageType::Read, victim.clone(), victim);
//! let err = bound.post(forged).await.unwrap_err();
//! assert_eq!(err.response_code(), ResponseCode::Forbidden);
//! # }
//! ```
//!
//! A bound handle cannot inject as a stub, reach the bus actor or the interceptor
//! chain:
//!
//! ```compile_fail,E0599
//! use hyperty_actors::bus::BoundBus;
//! use hyperty_actors::prelude::*;
//! fn inject(bus: &BoundBus, m: Message, stub: &Address) {
//!     bus.inject(m, stub);
//! }
//! ```
//!
//! ```compile_fail,E0599
//! use hyperty_actors::bus::BoundBus;
//! fn actor(bus: &BoundBus) {
//!     let _ = bus.actor();
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use actix::Recipient;

use super::{Bus, BusConfig, BusStats, Deliver, Origin};
use crate::address::{Address, HypertyUrl, RuntimeUrl};
use crate::error::BusError;
use crate::message::{Message, MessageId};
use crate::routes::ListenerId;

/// Most addresses allocated to one hyperty besides its own URL.
pub const MAX_HELD: usize = 10_000;

/// The addresses one hyperty holds: its URL (and everything under it) and the
/// addresses its runtime allocated for it. Shared by every instance of the
/// hyperty across sandbox restarts; only the runtime grants addresses.
pub struct Holdings {
    hyperty: HypertyUrl,
    granted: RwLock<Vec<Address>>,
}

impl fmt::Debug for Holdings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Holdings")
            .field("hyperty", &self.hyperty)
            .finish_non_exhaustive()
    }
}

/// True if `addr` is `base` or under it without `.`/`..` segments below `base`.
fn held_under(addr: &str, base: &str) -> bool {
    if !crate::address::is_under(addr, base) {
        return false;
    }
    let rest = &addr[base.trim_end_matches('/').len()..];
    !rest.split('/').any(|s| s == "." || s == "..")
}

impl Holdings {
    /// The holdings of a freshly registered hyperty: its URL only.
    pub fn new(hyperty: HypertyUrl) -> Arc<Holdings> {
        Arc::new(Holdings {
            hyperty,
            granted: RwLock::new(Vec::new()),
        })
    }

    /// The hyperty.
    pub fn hyperty(&self) -> &HypertyUrl {
        &self.hyperty
    }

    /// True if the hyperty may send from, or listen on, `addr`.
    pub fn holds(&self, addr: &str) -> bool {
        held_under(addr, self.hyperty.as_str())
            || self
                .granted
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|g| held_under(addr, g.as_str()))
    }

    /// The addresses granted besides the hyperty's URL.
    pub fn granted(&self) -> Vec<Address> {
        self.granted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks the sender fields of a message the hyperty sends (`from`,
    /// `body.source`).
    pub(crate) fn check_sender(&self, msg: &Message) -> Result<(), BusError> {
        self.require(&msg.from)?;
        if let Some(source) = &msg.body.source {
            self.require(source)?;
        }
        Ok(())
    }

    /// `Ok` if the hyperty holds `address`, else [`BusError::NotHeld`].
    pub fn require(&self, address: &Address) -> Result<(), BusError> {
        match self.holds(address.as_str()) {
            true => Ok(()),
            false => Err(BusError::NotHeld {
                hyperty: self.hyperty.to_string(),
                address: address.to_string(),
            }),
        }
    }

    /// Grants `addresses` (the runtime only, after allocating them).
    pub(crate) fn grant(&self, addresses: &[Address]) -> Result<(), BusError> {
        let mut g = self.granted.write().unwrap_or_else(|e| e.into_inner());
        if g.len() + addresses.len() > MAX_HELD {
            return Err(BusError::Busy(format!(
                "{} (more than {MAX_HELD} addresses)",
                self.hyperty
            )));
        }
        g.extend(addresses.iter().cloned());
        Ok(())
    }
}

/// The bus handle of one hyperty (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct BoundBus {
    bus: Bus,
    holdings: Arc<Holdings>,
}

impl fmt::Debug for BoundBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundBus")
            .field("runtime", self.bus.runtime_url())
            .field("hyperty", &self.holdings.hyperty)
            .finish()
    }
}

impl BoundBus {
    /// A handle on `bus` bound to `holdings`. The runtime builds one per hyperty;
    /// whoever calls this holds the full bus anyway.
    pub fn new(bus: Bus, holdings: Arc<Holdings>) -> BoundBus {
        BoundBus { bus, holdings }
    }

    /// The runtime this bus belongs to.
    pub fn runtime_url(&self) -> &RuntimeUrl {
        self.bus.runtime_url()
    }

    /// The bus configuration.
    pub fn config(&self) -> &BusConfig {
        self.bus.config()
    }

    /// A fresh message id, unique on this bus.
    pub fn next_id(&self) -> MessageId {
        self.bus.next_id()
    }

    /// What this handle is bound to.
    pub fn holdings(&self) -> &Arc<Holdings> {
        &self.holdings
    }

    /// Like [`Bus::post`], from an address this hyperty holds.
    pub fn post(&self, msg: Message) -> impl Future<Output = Result<Message, BusError>> + 'static {
        self.bus.post_from(msg, Origin::Bound(&self.holdings))
    }

    /// Like [`Bus::post_with_progress`], from an address this hyperty holds.
    pub fn post_with_progress<F>(
        &self,
        msg: Message,
        on_progress: F,
    ) -> impl Future<Output = Result<Message, BusError>> + 'static
    where
        F: FnMut(Message) + 'static,
    {
        self.bus
            .post_with_progress_from(msg, on_progress, Origin::Bound(&self.holdings))
    }

    /// Like [`Bus::send`], from an address this hyperty holds. A message it does
    /// not hold the sender of is not delivered; if it is a request, the hyperty's
    /// own URL gets a 403 response.
    pub fn send(&self, msg: Message) -> MessageId {
        self.bus.shared.send(msg, Origin::Bound(&self.holdings))
    }

    /// Listens on `address`, which this hyperty must hold; the listener is
    /// removed when the hyperty stops or crashes.
    pub fn add_listener(
        &self,
        address: Address,
        recipient: Recipient<Deliver>,
    ) -> impl Future<Output = Result<ListenerId, BusError>> + 'static {
        let held = self.require(&address);
        let add = held.is_ok().then(|| {
            self.bus.add_listener(
                address,
                recipient,
                Some(self.holdings.hyperty.address().clone()),
            )
        });
        async move {
            held?;
            match add {
                Some(add) => add.await,
                None => Err(BusError::Shutdown),
            }
        }
    }

    /// Removes one of this hyperty's listener registrations on an address it
    /// holds; false otherwise.
    pub fn remove_listener(
        &self,
        address: Address,
        id: ListenerId,
    ) -> impl Future<Output = bool> + 'static {
        let remove = self
            .require(&address)
            .is_ok()
            .then(|| self.bus.remove_listener(address, id));
        async move {
            match remove {
                Some(r) => r.await,
                None => false,
            }
        }
    }

    /// True if a listener is registered on exactly `address`.
    pub fn has_listener(&self, address: &str) -> bool {
        self.bus.has_listener(address)
    }

    /// The bus counters.
    pub fn stats(&self) -> BusStats {
        self.bus.stats()
    }

    fn require(&self, address: &Address) -> Result<(), BusError> {
        self.holdings.require(address)
    }
}
