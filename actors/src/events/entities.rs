//! Addressable entities and their owners.
//!
//! # The owner model
//!
//! The spec lets "each application handle events from/to addressable entities that
//! it owns (e.g. the application itself, the services it exposes)". Here:
//!
//! * an **entity** is any address string registered with the dispatcher, usually a
//!   hyperty URL, or an address under it (a service the hyperty exposes, a pub/sub
//!   node), or a user address;
//! * its **owner** is the application that registered it, identified by an
//!   address too: a hyperty registers its own URL as owner (so a hyperty *is* an
//!   application), a runtime service (pub/sub provider, notification centre)
//!   registers its own address;
//! * one owner may own many entities; an entity has exactly one owner per runtime;
//! * an owner may send and forward only from entities it owns, and listen only on
//!   them (`PERMISSION_DENIED_ERROR` otherwise).
//!
//! Two consequences of the spec follow from it:
//!
//! * **bcc stripping**: a delivered copy keeps in its `bcc` only the entities owned
//!   by the owner of the recipient entity;
//! * **listener fan-out** (decision 15): a listener with no destination filter
//!   receives one copy per unique local recipient entity its owner owns, so a
//!   listener of an owner addressed twice (e.g. its hyperty and its service) fires
//!   twice, each time with a different `recipient`.
//!
//! A **replicated** entity (e.g. a `user://` address registered on every runtime
//! of that user) is local *and* present elsewhere: events to it are delivered here
//! and also transmitted to the other runtimes, and events from it arriving from
//! other runtimes are not treated as spoofed.
//!
//! A **durable** entity keeps what it received across crashes, in the Local Event
//! Cache's database (so the runtime needs a cache path to make it survive):
//!
//! * its duplicate buffer is stored, and an event is only acknowledged (delivery
//!   notification `ok` or `duplicate`) once its id is on disk;
//! * each accepted application event enters the entity's **inbox**, in the same
//!   transaction, and is handed to the owner's listeners from there; it stays
//!   until the application acknowledges it with
//!   [`EventEndpoint::ack`](crate::events::handle::EventEndpoint::ack). Whatever
//!   is still unacknowledged when the runtime restarts is handed again to each
//!   listener the owner adds, before anything new. An application thus gets
//!   every event it was confirmed to have received, from the one store, and never
//!   a second copy of an event it acknowledged;
//! * events arriving for a durable entity known to the database but not
//!   registered yet (the application has not started) get no answer, so their
//!   senders retry instead of giving up.
//!
//! Register durable entities before the runtime attaches to a node. Their
//! duplicate buffers hold [`EventsConfig::durable_id_buffer_capacity`] ids: a
//! sender must not retransmit an event after more than that many newer ones
//! were accepted by the same entity.
//!
//! [`EventsConfig::durable_id_buffer_capacity`]: crate::events::config::EventsConfig::durable_id_buffer_capacity

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::address::Address;
use crate::events::buffer::IdBuffer;
use crate::events::error::EventError;
use crate::events::id::EventId;
use crate::events::model::Event;

/// Default bound of the entity table.
pub const DEFAULT_MAX_ENTITIES: usize = 100_000;

/// How an entity is registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityOptions {
    /// Present on several runtimes (see the module docs).
    pub replicated: bool,
    /// Keeps its duplicate buffer and an inbox of unacknowledged events on disk
    /// (see the module docs).
    pub durable: bool,
}

impl EntityOptions {
    /// A replicated entity.
    pub fn replicated() -> EntityOptions {
        EntityOptions {
            replicated: true,
            durable: false,
        }
    }

    /// A durable entity.
    pub fn durable() -> EntityOptions {
        EntityOptions {
            replicated: false,
            durable: true,
        }
    }
}

/// A durable entity's events not yet acknowledged by its application.
#[derive(Debug, Default)]
pub(crate) struct DurableInbox {
    pub(crate) next_seq: u64,
    /// Accepted events waiting for their commit.
    pub(crate) pending: usize,
    pub(crate) events: BTreeMap<u64, Arc<Event>>,
    by_id: HashMap<EventId, u64>,
}

impl DurableInbox {
    pub(crate) fn insert(&mut self, seq: u64, ev: Arc<Event>) {
        self.by_id.insert(ev.id(), seq);
        self.events.insert(seq, ev);
    }

    pub(crate) fn remove_id(&mut self, id: &EventId) -> Option<u64> {
        let seq = self.by_id.remove(id)?;
        self.events.remove(&seq);
        Some(seq)
    }
}

#[derive(Debug)]
pub(crate) struct EntityRecord {
    pub(crate) owner: Address,
    pub(crate) replicated: bool,
    pub(crate) buffer: IdBuffer,
    pub(crate) durable: Option<DurableInbox>,
}

/// Entity → owner, plus each entity's incoming-id buffer.
#[derive(Debug)]
pub(crate) struct EntityTable {
    map: HashMap<Address, EntityRecord>,
    max: usize,
    buffer_capacity: usize,
    durable_buffer_capacity: usize,
}

impl EntityTable {
    pub(crate) fn new(
        max: usize,
        buffer_capacity: usize,
        durable_buffer_capacity: usize,
    ) -> EntityTable {
        EntityTable {
            map: HashMap::new(),
            max,
            buffer_capacity,
            durable_buffer_capacity,
        }
    }

    /// Entities and records, for the owner's durable inboxes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Address, &EntityRecord)> {
        self.map.iter()
    }

    pub(crate) fn register(
        &mut self,
        entity: Address,
        owner: Address,
        options: EntityOptions,
    ) -> Result<(), EventError> {
        if let Some(r) = self.map.get_mut(&entity) {
            if r.owner != owner {
                return Err(EventError::PermissionDenied(format!(
                    "{entity} is owned by another application"
                )));
            }
            r.replicated = options.replicated;
            if options.durable != r.durable.is_some() {
                return Err(EventError::InvalidArgument(format!(
                    "{entity} is registered {} durable",
                    if r.durable.is_some() { "as" } else { "as not" }
                )));
            }
            return Ok(());
        }
        if self.map.len() >= self.max {
            return Err(EventError::Full("entities"));
        }
        let capacity = if options.durable {
            self.durable_buffer_capacity
        } else {
            self.buffer_capacity
        };
        self.map.insert(
            entity,
            EntityRecord {
                owner,
                replicated: options.replicated,
                buffer: IdBuffer::new(capacity),
                durable: options.durable.then(DurableInbox::default),
            },
        );
        Ok(())
    }

    pub(crate) fn unregister(
        &mut self,
        entity: &Address,
        owner: &Address,
    ) -> Result<(), EventError> {
        match self.map.get(entity) {
            None => {
                return Err(EventError::InvalidArgument(format!(
                    "{entity} is not registered"
                )))
            }
            Some(r) if &r.owner != owner => {
                return Err(EventError::PermissionDenied(format!(
                    "{entity} is owned by another application"
                )))
            }
            Some(_) => {}
        }
        self.map.remove(entity);
        Ok(())
    }

    pub(crate) fn get(&self, entity: &str) -> Option<&EntityRecord> {
        self.map.get(entity)
    }

    pub(crate) fn get_mut(&mut self, entity: &str) -> Option<&mut EntityRecord> {
        self.map.get_mut(entity)
    }

    pub(crate) fn contains(&self, entity: &str) -> bool {
        self.map.contains_key(entity)
    }

    /// Local and not replicated: an event claiming to come from it from another
    /// runtime is spoofed.
    pub(crate) fn is_exclusive(&self, entity: &str) -> bool {
        self.map.get(entity).is_some_and(|r| !r.replicated)
    }

    /// True if `a` lies under a local, non-replicated entity (`<entity>/…`): such
    /// addresses (services of a hyperty, nodes of a provider) belong to this
    /// runtime, so an unknown one is a bad destination rather than unreachable.
    pub(crate) fn under_local_entity(&self, a: &Address) -> bool {
        let text = a.as_str();
        let root = text.find("://").map_or(0, |i| i + 3);
        let mut end = text.len();
        while let Some(i) = text[..end].rfind('/') {
            if i <= root {
                return false;
            }
            if self.is_exclusive(&text[..i]) {
                return true;
            }
            end = i;
        }
        false
    }

    pub(crate) fn owner_of(&self, entity: &str) -> Option<&Address> {
        self.map.get(entity).map(|r| &r.owner)
    }

    pub(crate) fn owns(&self, owner: &Address, entity: &str) -> bool {
        self.owner_of(entity) == Some(owner)
    }

    /// Forgets expired ids; returns those of durable entities.
    pub(crate) fn purge_buffers(&mut self, now_ms: u64) -> Vec<(Address, EventId)> {
        let mut durable = Vec::new();
        for (a, r) in self.map.iter_mut() {
            let gone = r.buffer.purge_expired(now_ms);
            if r.durable.is_some() {
                durable.extend(gone.into_iter().map(|id| (a.clone(), id)));
            }
        }
        durable
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn ownership_is_exclusive_and_bounded() {
        let mut t = EntityTable::new(2, 4, 8);
        let (app1, app2) = (a("hyperty://a/app1"), a("hyperty://a/app2"));
        t.register(
            a("hyperty://a/app1"),
            app1.clone(),
            EntityOptions::default(),
        )
        .unwrap();
        t.register(
            a("hyperty://a/app1/svc"),
            app1.clone(),
            EntityOptions::default(),
        )
        .unwrap();
        assert_eq!(
            t.register(
                a("hyperty://a/app1"),
                app2.clone(),
                EntityOptions::default()
            )
            .unwrap_err()
            .code(),
            2
        );
        assert_eq!(
            t.register(a("hyperty://a/x"), app2.clone(), EntityOptions::default()),
            Err(EventError::Full("entities"))
        );
        assert!(t.owns(&app1, "hyperty://a/app1/svc"));
        assert!(t.is_exclusive("hyperty://a/app1"));
        assert!(t.unregister(&a("hyperty://a/app1/svc"), &app2).is_err());
        t.unregister(&a("hyperty://a/app1/svc"), &app1).unwrap();
        assert!(!t.contains("hyperty://a/app1/svc"));
        assert_eq!(t.len(), 1);
        t.register(a("user://idp/u"), app2.clone(), EntityOptions::replicated())
            .unwrap();
        assert!(!t.is_exclusive("user://idp/u"));
        assert!(t.under_local_entity(&a("hyperty://a/app1/gone/deeper")));
        assert!(!t.under_local_entity(&a("hyperty://a/app2/x")));
        assert!(!t.under_local_entity(&a("hyperty://a/app1")));
        assert!(
            !t.under_local_entity(&a("user://idp/u/x")),
            "replicated entities are not ours alone"
        );
        assert!(t.get("user://idp/u").is_some());
    }
}
