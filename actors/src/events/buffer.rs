//! The incoming-event-id buffer every local entity has (seed 004, "Device-level
//! event routing").
//!
//! For each incoming event the dispatcher asks [`IdBuffer::is_duplicate`]; a hit
//! counts the id as "received more than once". A new id is [`IdBuffer::insert`]ed
//! once the event is accepted. When the buffer is full it first drops ids of
//! expired events (an expired event is never delivered again anyway, so forgetting
//! its id is safe), then evicts the entry seen the fewest times, oldest first, so
//! ids that arrived repeatedly stay — the replacement criterion the spec recommends.
//!
//! ```
//! use hyperty_actors::events::buffer::IdBuffer;
//! use hyperty_actors::events::id::EventId;
//!
//! let mut b = IdBuffer::new(2);
//! let (x, y, z) = (EventId::from_bytes([1; 32]), EventId::from_bytes([2; 32]), EventId::from_bytes([3; 32]));
//! b.insert(x, None, 0);
//! b.insert(y, None, 0);
//! assert!(b.is_duplicate(&x)); // x seen twice now
//! assert_eq!(b.insert(z, None, 0), Some(y)); // full: y (seen once, oldest) goes
//! assert!(b.contains(&x) && b.contains(&z) && !b.contains(&y));
//! ```

use std::collections::{BTreeSet, HashMap};

use crate::events::id::EventId;

/// Default capacity of one entity's buffer.
pub const DEFAULT_ID_BUFFER_CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Slot {
    expiry: Option<u64>,
    hits: u32,
    seq: u64,
}

/// A bounded set of received event ids. Every operation is `O(log n)`: besides the
/// ids, it keeps them ordered by (hits, arrival) and by expiry.
#[derive(Debug, Clone)]
pub struct IdBuffer {
    capacity: usize,
    entries: HashMap<EventId, Slot>,
    by_rank: BTreeSet<(u32, u64, EventId)>,
    by_expiry: BTreeSet<(u64, EventId)>,
    next_seq: u64,
}

impl IdBuffer {
    /// A buffer holding at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> IdBuffer {
        IdBuffer {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_rank: BTreeSet::new(),
            by_expiry: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// True if `id` is held; counts the hit.
    pub fn is_duplicate(&mut self, id: &EventId) -> bool {
        match self.entries.get_mut(id) {
            Some(s) => {
                self.by_rank.remove(&(s.hits, s.seq, *id));
                s.hits = s.hits.saturating_add(1);
                self.by_rank.insert((s.hits, s.seq, *id));
                true
            }
            None => false,
        }
    }

    /// True if `id` is held (no hit counted).
    pub fn contains(&self, id: &EventId) -> bool {
        self.entries.contains_key(id)
    }

    /// Forgets `id` (a durable entity whose store could not record it).
    pub fn forget(&mut self, id: &EventId) {
        if let Some(s) = self.entries.remove(id) {
            self.by_rank.remove(&(s.hits, s.seq, *id));
            if let Some(e) = s.expiry {
                self.by_expiry.remove(&(e, *id));
            }
        }
    }

    /// Records a newly accepted id, making room if needed: an expired id goes
    /// first, else the one seen the fewest times, oldest first. Returns the id
    /// that made room.
    pub fn insert(&mut self, id: EventId, expiry: Option<u64>, now_ms: u64) -> Option<EventId> {
        if self.entries.contains_key(&id) {
            return None;
        }
        let mut evicted = None;
        if self.entries.len() >= self.capacity {
            let victim = match self.by_expiry.first() {
                Some(&(e, old)) if now_ms > e => Some(old),
                _ => self.by_rank.first().map(|&(_, _, old)| old),
            };
            if let Some(old) = victim {
                self.forget(&old);
                evicted = Some(old);
            }
        }
        self.next_seq += 1;
        let slot = Slot {
            expiry,
            hits: 1,
            seq: self.next_seq,
        };
        self.by_rank.insert((slot.hits, slot.seq, id));
        if let Some(e) = expiry {
            self.by_expiry.insert((e, id));
        }
        self.entries.insert(id, slot);
        evicted
    }

    /// Forgets ids of events expired at `now_ms`; returns them.
    pub fn purge_expired(&mut self, now_ms: u64) -> Vec<EventId> {
        let mut gone = Vec::new();
        while let Some(&(e, id)) = self.by_expiry.first() {
            if now_ms <= e {
                break;
            }
            self.forget(&id);
            gone.push(id);
        }
        gone
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EventId {
        EventId::from_bytes([n; 32])
    }

    #[test]
    fn bounded_and_keeps_repeated_ids() {
        let mut b = IdBuffer::new(3);
        for n in 0..3 {
            b.insert(id(n), None, 0);
        }
        assert!(b.is_duplicate(&id(0)));
        assert!(b.is_duplicate(&id(0)));
        assert!(b.is_duplicate(&id(2)));
        for n in 10..20 {
            b.insert(id(n), None, 0);
            assert!(b.len() <= 3);
        }
        assert!(b.contains(&id(0)), "seen three times: kept");
        assert!(b.contains(&id(2)), "seen twice: kept");
        assert!(!b.contains(&id(1)));
    }

    #[test]
    fn expired_ids_go_first() {
        let mut b = IdBuffer::new(2);
        b.insert(id(1), None, 0);
        b.is_duplicate(&id(1));
        b.insert(id(2), Some(10), 0);
        b.is_duplicate(&id(2));
        b.is_duplicate(&id(2));
        // at t=11 id 2 is expired: it goes even though it was seen more often
        b.insert(id(3), None, 11);
        assert!(b.contains(&id(1)) && b.contains(&id(3)) && !b.contains(&id(2)));
        assert!(!b.is_empty());
        b.insert(id(3), None, 11);
        assert_eq!(b.len(), 2);
        b.purge_expired(u64::MAX);
        assert_eq!(b.len(), 2, "ids without expiry stay");
        b.insert(id(4), Some(20), 11);
        b.purge_expired(21);
        assert!(!b.contains(&id(4)));
    }

    #[test]
    fn capacity_zero_means_one() {
        let mut b = IdBuffer::new(0);
        b.insert(id(1), None, 0);
        b.insert(id(2), None, 0);
        assert_eq!(b.len(), 1);
        assert!(b.contains(&id(2)));
    }
}
