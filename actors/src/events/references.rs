//! Local references to events, for "In response to".
//!
//! The API's `inResponseTo` is an object reference, so an event answering an event
//! its recipient does not hold cannot be presented to it (decision 13). The
//! dispatcher records which local entities hold which event — the ones they sent
//! and the ones delivered to them — in this bounded table: oldest references go
//! first, and references to expired events are purged on every tick.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::address::Address;
use crate::events::id::EventId;
use crate::events::model::Event;

/// Default bound of the reference table (events).
pub const DEFAULT_MAX_REFERENCES: usize = 100_000;
/// Most holders recorded per event.
pub const MAX_HOLDERS_PER_REFERENCE: usize = 4096;

#[derive(Debug)]
struct Reference {
    event: Arc<Event>,
    holders: HashSet<Address>,
}

/// Event id → the event and the local entities holding it.
#[derive(Debug)]
pub(crate) struct References {
    map: HashMap<EventId, Reference>,
    order: VecDeque<EventId>,
    max: usize,
}

impl References {
    pub(crate) fn new(max: usize) -> References {
        References {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Records that `holder` holds `event`.
    pub(crate) fn hold(&mut self, event: &Arc<Event>, holder: &Address) {
        let id = event.id();
        if let Some(r) = self.map.get_mut(&id) {
            if r.holders.len() < MAX_HOLDERS_PER_REFERENCE {
                r.holders.insert(holder.clone());
            }
            return;
        }
        while self.map.len() >= self.max {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        let mut holders = HashSet::new();
        holders.insert(holder.clone());
        self.map.insert(
            id,
            Reference {
                event: event.clone(),
                holders,
            },
        );
        self.order.push_back(id);
    }

    /// The event `id` if `holder` holds it.
    pub(crate) fn get_for(&self, id: &EventId, holder: &str) -> Option<Arc<Event>> {
        self.map
            .get(id)
            .filter(|r| r.holders.contains(holder))
            .map(|r| r.event.clone())
    }

    /// Drops references to events expired at `now_ms`.
    pub(crate) fn purge_expired(&mut self, now_ms: u64) {
        self.map.retain(|_, r| !r.event.is_expired(now_ms));
        let map = &self.map;
        self.order.retain(|id| map.contains_key(id));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64, expiry: Option<u64>) -> Arc<Event> {
        let mut b = Event::builder("t", "hyperty://a/s".parse().unwrap())
            .to("hyperty://a/r".parse().unwrap())
            .generated_at(n);
        if let Some(e) = expiry {
            b = b.expires_at(e);
        }
        Arc::new(b.build().unwrap())
    }

    #[test]
    fn holders_bounded_table_and_expiry() {
        let mut r = References::new(2);
        let h: Address = "hyperty://a/h".parse().unwrap();
        let (e1, e2, e3) = (ev(1, None), ev(2, Some(10)), ev(3, None));
        r.hold(&e1, &h);
        assert!(r.get_for(&e1.id(), "hyperty://a/h").is_some());
        assert!(r.get_for(&e1.id(), "hyperty://a/other").is_none());
        r.hold(&e2, &h);
        r.hold(&e3, &h);
        assert_eq!(r.len(), 2);
        assert!(
            r.get_for(&e1.id(), "hyperty://a/h").is_none(),
            "oldest evicted"
        );
        r.purge_expired(11);
        assert!(r.get_for(&e2.id(), "hyperty://a/h").is_none());
        assert!(r.get_for(&e3.id(), "hyperty://a/h").is_some());
    }
}
