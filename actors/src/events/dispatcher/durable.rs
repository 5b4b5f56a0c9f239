//! Durable entities (see [`entities`](crate::events::entities)): an accepted event
//! is written to the cache's database, and handed to listeners and acknowledged
//! to its sender only once [`Committed`] reports it on disk; the inbox is handed
//! again to new listeners after a restart; applications acknowledge what they
//! processed.

use std::collections::VecDeque;

use super::*;
use crate::events::cache::{Committed, DurableOp, DurableWrite, RestoredEntity};

/// What waits for a commit.
#[derive(Debug)]
pub(super) enum Deferred {
    /// An accepted event: into the inbox, to the listeners, then `ok`.
    Deliver {
        ev: Arc<Event>,
        copy: Arc<Event>,
        target: Address,
        owner: Address,
        referenced: Option<Arc<Event>>,
        seq: u64,
    },
    /// A notification that must not overtake the write it confirms.
    Notify {
        ev: Arc<Event>,
        target: Address,
        status: DeliveryStatus,
    },
}

/// Writes issued to the cache and the work waiting for them.
#[derive(Debug, Default)]
pub(super) struct DurableLog {
    issued: u64,
    committed: u64,
    deferred: VecDeque<(u64, Deferred)>,
}

impl EventDispatcher {
    /// True if a durable write is not known to be on disk yet.
    pub(super) fn commit_pending(&self) -> bool {
        self.durable.issued != self.durable.committed
    }

    /// Sends `ops` to the cache, to be committed together.
    pub(super) fn write_durable(&mut self, ops: Vec<DurableOp>) {
        self.durable.issued += 1;
        self.cache.do_send(DurableWrite {
            ticket: self.durable.issued,
            ops,
        });
    }

    /// Runs `d` once everything written so far is on disk.
    pub(super) fn defer(&mut self, d: Deferred) {
        self.durable.deferred.push_back((self.durable.issued, d));
    }

    /// Phase 4 for a durable entity: the id and the recipient's copy are written
    /// in one transaction; listeners and the sender hear of it after the commit.
    pub(super) fn accept_durable(
        &mut self,
        ev: &Arc<Event>,
        copy: Arc<Event>,
        target: &Address,
        owner: Address,
        referenced: Option<Arc<Event>>,
        forget: Option<DurableOp>,
    ) {
        let Some(inbox) = self
            .entities
            .get_mut(target.as_str())
            .and_then(|r| r.durable.as_mut())
        else {
            return;
        };
        let seq = inbox.next_seq;
        inbox.next_seq += 1;
        inbox.pending += 1;
        let mut ops: Vec<DurableOp> = forget.into_iter().collect();
        ops.push(DurableOp::Deliver {
            entity: target.clone(),
            id: ev.id(),
            seq,
            expiry: ev.expiry_timestamp(),
            event: Box::new((*copy).clone()),
        });
        self.write_durable(ops);
        self.defer(Deferred::Deliver {
            ev: ev.clone(),
            copy,
            target: target.clone(),
            owner,
            referenced,
            seq,
        });
    }

    /// The cache committed (or failed to commit) every write up to `upto`.
    pub(super) fn committed(&mut self, upto: u64, ok: bool, ctx: &mut Context<Self>) {
        self.durable.committed = self.durable.committed.max(upto);
        while self
            .durable
            .deferred
            .front()
            .is_some_and(|(t, _)| *t <= upto)
        {
            let Some((_, d)) = self.durable.deferred.pop_front() else {
                break;
            };
            match d {
                Deferred::Deliver {
                    ev,
                    copy,
                    target,
                    owner,
                    referenced,
                    seq,
                } => {
                    let Some(rec) = self.entities.get_mut(target.as_str()) else {
                        continue;
                    };
                    let Some(inbox) = rec.durable.as_mut() else {
                        continue;
                    };
                    inbox.pending = inbox.pending.saturating_sub(1);
                    if !ok {
                        // not on disk: not received; the sender's retransmission is
                        // accepted afresh
                        rec.buffer.forget(&ev.id());
                        continue;
                    }
                    inbox.insert(seq, copy.clone());
                    self.hand_to_listeners(&ev, &copy, &target, &owner, &referenced);
                    self.notify(&ev, &target, DeliveryStatus::Ok, ctx);
                }
                Deferred::Notify { ev, target, status } => {
                    if ok {
                        self.notify(&ev, &target, status, ctx);
                    }
                }
            }
        }
    }

    /// A durable entity registered again after a restart gets what it had stored.
    pub(super) fn restore_entity(&mut self, entity: &Address, r: RestoredEntity) {
        let now = self.now();
        let Some(rec) = self.entities.get_mut(entity.as_str()) else {
            return;
        };
        let mut forget = Vec::new();
        for (id, expiry) in r.delivered {
            if let Some(old) = rec.buffer.insert(id, expiry, now) {
                forget.push(DurableOp::Forget {
                    entity: entity.clone(),
                    id: old,
                });
            }
        }
        if let Some(inbox) = rec.durable.as_mut() {
            inbox.next_seq = inbox.next_seq.max(r.next_seq);
            for (seq, ev) in r.inbox {
                inbox.insert(seq, Arc::new(ev));
            }
            debug!(%entity, unacknowledged = inbox.events.len(), "durable entity restored");
        }
        if !forget.is_empty() {
            self.write_durable(forget);
        }
    }

    /// Hands the unacknowledged events of `owner`'s durable entities to its new
    /// listener `id`, oldest first per entity.
    pub(super) fn replay_inbox(&mut self, owner: &Address, id: EventListenerId) {
        let pending: Vec<(Address, Arc<Event>)> = self
            .entities
            .iter()
            .filter(|(_, r)| &r.owner == owner)
            .filter_map(|(a, r)| r.durable.as_ref().map(|d| (a, d)))
            .flat_map(|(a, d)| d.events.values().map(move |e| (a.clone(), e.clone())))
            .collect();
        for (entity, ev) in pending {
            let fired = self.listeners.fire_to(owner, Some(id), &entity, &ev, &None);
            self.stats.listener_overflow += fired.overflowed as u64;
        }
    }

    /// The application processed `id` at `entity`: it leaves the inbox.
    pub(super) fn acknowledge(
        &mut self,
        owner: &Address,
        entity: &Address,
        id: EventId,
    ) -> Result<bool, EventError> {
        let Some(rec) = self.entities.get_mut(entity.as_str()) else {
            return Err(EventError::InvalidArgument(format!(
                "{entity} is not registered"
            )));
        };
        if &rec.owner != owner {
            return Err(EventError::PermissionDenied(format!(
                "{entity} is not an entity of {owner}"
            )));
        }
        let Some(inbox) = rec.durable.as_mut() else {
            return Err(EventError::InvalidArgument(format!(
                "{entity} is not durable"
            )));
        };
        let Some(seq) = inbox.remove_id(&id) else {
            return Ok(false);
        };
        self.write_durable(vec![DurableOp::Ack {
            entity: entity.clone(),
            seq,
        }]);
        Ok(true)
    }
}

impl Handler<Committed> for EventDispatcher {
    type Result = ();
    fn handle(&mut self, m: Committed, ctx: &mut Context<Self>) {
        self.committed(m.upto, m.ok, ctx);
    }
}
