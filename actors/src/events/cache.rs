//! The Local Event Cache: durable storage of events not yet transmitted.
//!
//! When an event cannot be handed to the next hop — no route to the recipient, or
//! the protocol stub that would carry it is not live — the dispatcher stores it
//! here with the recipients still to reach. The [`LocalEventCache`] actor owns an
//! embedded [redb](https://docs.rs/redb) database (a file, or memory when no path
//! is configured) through an [`EventStore`], and keeps an in-memory index of it.
//!
//! The dispatcher drives it on every tick with [`TakeDue`]: entries whose event has
//! expired are removed and returned (→ `onError(EXPIRED)`, no more attempts), so
//! are entries out of attempts; due entries are returned for retransmission and
//! leased until the dispatcher answers [`CacheDone`] (transmitted: removed) or
//! [`CacheRetry`] (still no route: retried after an exponential backoff,
//! `retry_base · 2^attempts` capped at `retry_max`; a stub that was only congested
//! is retried after `retry_base`, without counting an attempt).
//!
//! # Until acknowledged
//!
//! An event that wants delivery notifications also waits here after it was handed
//! to a stub, for the primary recipients that have not answered yet
//! ([`CachePut::awaiting_notifications`]): each delivery notification removes its
//! recipient ([`CacheAck`]); recipients still silent after
//! [`CacheConfig::ack_timeout`] (doubling per attempt, capped at `retry_max`) are
//! sent the event again. A transmission lost with a crashed peer or node is thus
//! repeated until the recipient confirms it, and the recipient's duplicate
//! buffer drops the copies it already has.
//!
//! # Durable deliveries
//!
//! The same database holds what the runtime's *durable* entities (see
//! [`EntityOptions::durable`](crate::events::entities::EntityOptions)) received:
//! the ids of delivered events (their duplicate buffer) and the events the
//! application has not acknowledged yet (their inbox). The dispatcher writes them
//! with [`DurableWrite`] and sends the delivery notification only once
//! [`Committed`] says they are on disk, so what a recipient acknowledged is never
//! forgotten by a crash.
//!
//! # Commits
//!
//! Changes are batched: the actor commits everything its handlers changed in one
//! redb transaction after its mailbox is drained (one fsync for a burst), and only
//! then answers [`CachePut`] and reports [`Committed`]. [`EventStore`] used on its
//! own keeps changes in memory until [`EventStore::flush`].
//!
//! Opening an existing database resumes: every stored entry is due at once. An
//! event delivered just before a crash and retransmitted after it is dropped by
//! its recipient's duplicate buffer (same id), so nobody gets it twice.
//!
//! ```
//! use hyperty_actors::events::cache::EventStore;
//! use hyperty_actors::events::model::Event;
//!
//! let a = |s: &str| s.parse::<hyperty_actors::address::Address>().unwrap();
//! let mut store = EventStore::open(None, 10).unwrap();
//! let ev = Event::builder("t", a("hyperty://a.org/s")).to(a("hyperty://b.org/r")).build().unwrap();
//! let key = store.put(&ev, &a("hyperty://a.org/s"), vec![a("hyperty://b.org/r")], 0, 0).unwrap();
//! store.flush().unwrap();
//! assert_eq!(store.len(), 1);
//! assert!(store.remove(key));
//! store.flush().unwrap();
//! assert_eq!(store.len(), 0);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::address::Address;
use crate::events::clock::after;
use crate::events::error::CacheError;
use crate::events::id::EventId;
use crate::events::model::Event;

/// Default bound of cached events.
pub const DEFAULT_MAX_CACHED_EVENTS: usize = 100_000;
/// Default first retransmission delay.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);
/// Default longest retransmission delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// Default number of retransmission attempts before giving up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 1_000;
/// Default time a transmitted event waits for a recipient's delivery
/// notification before it is sent again.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");
/// Durable entities' delivered ids: (entity, id) → (sequence, expiry or `u64::MAX`).
const DELIVERED: TableDefinition<'static, (&str, &[u8]), (u64, u64)> =
    TableDefinition::new("delivered");
/// Durable entities' unacknowledged events: (entity, sequence) → event JSON.
const INBOX: TableDefinition<'static, (&str, u64), &[u8]> = TableDefinition::new("inbox");
const NO_EXPIRY: u64 = u64::MAX;

/// A change to the durable-delivery tables (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurableOp {
    /// `entity` accepted the event `id`; `event` goes to its inbox under `seq`.
    Deliver {
        /// The durable entity.
        entity: Address,
        /// The event's id (duplicate detection).
        id: EventId,
        /// Its place in the entity's inbox.
        seq: u64,
        /// The event's expiry (ms), if any.
        expiry: Option<u64>,
        /// The recipient's copy.
        event: Box<Event>,
    },
    /// `entity`'s duplicate buffer dropped `id` (full, or the event expired).
    Forget {
        /// The durable entity.
        entity: Address,
        /// The id.
        id: EventId,
    },
    /// The application acknowledged the inbox entry `seq` of `entity`.
    Ack {
        /// The durable entity.
        entity: Address,
        /// The inbox entry.
        seq: u64,
    },
}

/// What a durable entity had stored when the database was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoredEntity {
    /// Delivered ids with their expiry, oldest first.
    pub delivered: Vec<(EventId, Option<u64>)>,
    /// Unacknowledged events by sequence.
    pub inbox: Vec<(u64, Event)>,
    /// The next free sequence.
    pub next_seq: u64,
}

/// One cached event and the recipients it still has to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedEvent {
    /// Storage key.
    pub key: u64,
    /// The event.
    pub event: Event,
    /// The local entity that sent it (source or forwarder).
    pub sender: Address,
    /// Recipients not yet reached.
    pub recipients: Vec<Address>,
    /// Retransmission attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (ms).
    pub next_attempt_ms: u64,
    /// When it was cached (ms).
    pub cached_at_ms: u64,
}

impl CachedEvent {
    fn encode(&self) -> Vec<u8> {
        json!({
            "event": self.event.to_value(),
            "sender": self.sender,
            "recipients": self.recipients,
            "attempts": self.attempts,
            "nextAttempt": self.next_attempt_ms,
            "cachedAt": self.cached_at_ms,
        })
        .to_string()
        .into_bytes()
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<CachedEvent, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let event = Event::from_value(v["event"].clone()).map_err(|e| e.to_string())?;
        let sender = v["sender"]
            .as_str()
            .and_then(|s| Address::parse(s).ok())
            .ok_or("bad sender")?;
        let recipients = v["recipients"]
            .as_array()
            .ok_or("bad recipients")?
            .iter()
            .map(|r| r.as_str().and_then(|s| Address::parse(s).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or("bad recipient")?;
        Ok(CachedEvent {
            key,
            event,
            sender,
            recipients,
            attempts: v["attempts"].as_u64().unwrap_or(0) as u32,
            next_attempt_ms: v["nextAttempt"].as_u64().unwrap_or(0),
            cached_at_ms: v["cachedAt"].as_u64().unwrap_or(0),
        })
    }
}

/// The redb-backed store plus its in-memory index. Bounded.
pub struct EventStore {
    db: Database,
    entries: BTreeMap<u64, CachedEvent>,
    /// (event id, sender) → entries, for delivery notifications.
    by_event: HashMap<(EventId, Address), BTreeSet<u64>>,
    next_key: u64,
    max: usize,
    /// Entries changed (or removed) since the last flush.
    dirty: BTreeSet<u64>,
    /// Durable-delivery changes since the last flush, in order.
    durable: Vec<DurableOp>,
    restored: HashMap<Address, RestoredEntity>,
}

impl fmt::Debug for EventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStore")
            .field("entries", &self.entries.len())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl EventStore {
    /// Opens (or creates) the database at `path`, or an in-memory one for `None`,
    /// and loads what it holds. Undecodable entries are dropped and logged.
    pub fn open(path: Option<&Path>, max: usize) -> Result<EventStore, CacheError> {
        let db = match path {
            Some(p) => Database::create(p).map_err(|e| CacheError::Open(e.to_string()))?,
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| CacheError::Open(e.to_string()))?,
        };
        {
            let tx = db.begin_write()?;
            tx.open_table(EVENTS)?;
            tx.open_table(DELIVERED)?;
            tx.open_table(INBOX)?;
            tx.commit()?;
        }
        let mut entries = BTreeMap::new();
        let mut broken = Vec::new();
        let restored = {
            let tx = db.begin_read()?;
            let restored = Self::restore(&tx)?;
            let table = tx.open_table(EVENTS)?;
            for item in table.iter()? {
                let (k, v) = item?;
                let key = k.value();
                match CachedEvent::decode(key, v.value()) {
                    Ok(e) => {
                        entries.insert(key, e);
                    }
                    Err(why) => {
                        warn!(key, reason = %why, "dropping an undecodable cached event");
                        broken.push(key);
                    }
                }
            }
            restored
        };
        let next_key = entries
            .keys()
            .next_back()
            .copied()
            .max(broken.iter().max().copied())
            .map_or(1, |k| k + 1);
        let mut by_event: HashMap<(EventId, Address), BTreeSet<u64>> = HashMap::new();
        for e in entries.values() {
            by_event
                .entry((e.event.id(), e.sender.clone()))
                .or_default()
                .insert(e.key);
        }
        let mut store = EventStore {
            db,
            entries,
            by_event,
            next_key,
            max,
            dirty: broken.into_iter().collect(),
            durable: Vec::new(),
            restored,
        };
        store.flush()?;
        if !store.entries.is_empty() {
            info!(events = store.entries.len(), "event cache resumed");
        }
        Ok(store)
    }

    /// Reads the durable entities' tables.
    fn restore(tx: &redb::ReadTransaction) -> Result<HashMap<Address, RestoredEntity>, CacheError> {
        let mut out: HashMap<Address, RestoredEntity> = HashMap::new();
        let mut delivered: HashMap<Address, Vec<(u64, EventId, Option<u64>)>> = HashMap::new();
        for item in tx.open_table(DELIVERED)?.iter()? {
            let (k, v) = item?;
            let (entity, id) = k.value();
            let (seq, expiry) = v.value();
            let (Ok(entity), Ok(id)) = (Address::parse(entity), <[u8; 32]>::try_from(id)) else {
                warn!("dropping an unreadable delivered id");
                continue;
            };
            let expiry = (expiry != NO_EXPIRY).then_some(expiry);
            delivered
                .entry(entity)
                .or_default()
                .push((seq, EventId::from_bytes(id), expiry));
        }
        for (entity, mut ids) in delivered {
            ids.sort_unstable_by_key(|(seq, _, _)| *seq);
            let r = out.entry(entity).or_default();
            r.next_seq = ids.last().map_or(0, |(seq, _, _)| seq + 1);
            r.delivered = ids.into_iter().map(|(_, id, e)| (id, e)).collect();
        }
        for item in tx.open_table(INBOX)?.iter()? {
            let (k, v) = item?;
            let (entity, seq) = k.value();
            let event = serde_json::from_slice::<Value>(v.value())
                .map_err(|e| e.to_string())
                .and_then(|v| Event::from_value(v).map_err(|e| e.to_string()));
            match (Address::parse(entity), event) {
                (Ok(entity), Ok(event)) => {
                    let r = out.entry(entity).or_default();
                    r.next_seq = r.next_seq.max(seq + 1);
                    r.inbox.push((seq, event));
                }
                _ => warn!(seq, "dropping an unreadable inbox entry"),
            }
        }
        Ok(out)
    }

    /// What durable entities had stored when the database was opened (taken once).
    pub fn take_restored(&mut self) -> HashMap<Address, RestoredEntity> {
        std::mem::take(&mut self.restored)
    }

    /// Queues durable-delivery changes for the next flush.
    pub fn record(&mut self, ops: impl IntoIterator<Item = DurableOp>) {
        self.durable.extend(ops);
    }

    /// True if changes wait for [`flush`](Self::flush).
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.durable.is_empty()
    }

    /// Commits every change since the last flush in one transaction. On error the
    /// changes are dropped (the in-memory index keeps them).
    pub fn flush(&mut self) -> Result<(), CacheError> {
        if !self.has_changes() {
            return Ok(());
        }
        let dirty = std::mem::take(&mut self.dirty);
        let durable = std::mem::take(&mut self.durable);
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(EVENTS)?;
            for key in dirty {
                match self.entries.get(&key) {
                    Some(e) => {
                        t.insert(key, e.encode().as_slice())?;
                    }
                    None => {
                        t.remove(key)?;
                    }
                }
            }
            let mut delivered = tx.open_table(DELIVERED)?;
            let mut inbox = tx.open_table(INBOX)?;
            for op in durable {
                match op {
                    DurableOp::Deliver {
                        entity,
                        id,
                        seq,
                        expiry,
                        event,
                    } => {
                        let key = (entity.as_str(), id.as_bytes().as_slice());
                        delivered.insert(key, (seq, expiry.unwrap_or(NO_EXPIRY)))?;
                        let bytes = event.to_value().to_string().into_bytes();
                        inbox.insert((entity.as_str(), seq), bytes.as_slice())?;
                    }
                    DurableOp::Forget { entity, id } => {
                        delivered.remove((entity.as_str(), id.as_bytes().as_slice()))?;
                    }
                    DurableOp::Ack { entity, seq } => {
                        inbox.remove((entity.as_str(), seq))?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn index(&mut self, e: &CachedEvent) {
        self.by_event
            .entry((e.event.id(), e.sender.clone()))
            .or_default()
            .insert(e.key);
    }

    fn unindex(&mut self, e: &CachedEvent) {
        let k = (e.event.id(), e.sender.clone());
        if let Some(keys) = self.by_event.get_mut(&k) {
            keys.remove(&e.key);
            if keys.is_empty() {
                self.by_event.remove(&k);
            }
        }
    }

    /// Stores an event for `recipients`, first attempt at `first_attempt_ms`.
    pub fn put(
        &mut self,
        event: &Event,
        sender: &Address,
        recipients: Vec<Address>,
        now_ms: u64,
        first_attempt_ms: u64,
    ) -> Result<u64, CacheError> {
        if self.entries.len() >= self.max {
            return Err(CacheError::Full(self.max));
        }
        let key = self.next_key;
        let entry = CachedEvent {
            key,
            event: event.clone(),
            sender: sender.clone(),
            recipients,
            attempts: 0,
            next_attempt_ms: first_attempt_ms,
            cached_at_ms: now_ms,
        };
        self.next_key += 1;
        self.index(&entry);
        self.entries.insert(key, entry);
        self.dirty.insert(key);
        Ok(key)
    }

    /// Removes an entry; true if it existed.
    pub fn remove(&mut self, key: u64) -> bool {
        let Some(e) = self.entries.remove(&key) else {
            return false;
        };
        self.unindex(&e);
        self.dirty.insert(key);
        true
    }

    /// Records a failed attempt: fewer recipients maybe (recipients only ever
    /// leave an entry: one acknowledged meanwhile stays gone), one more attempt,
    /// next attempt at `next_attempt_ms`.
    pub fn reschedule(&mut self, key: u64, recipients: &[Address], next_attempt_ms: u64) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.attempts = e.attempts.saturating_add(1);
        }
        self.postpone(key, recipients, next_attempt_ms);
    }

    /// Moves the next attempt of an entry without counting one (congestion).
    pub fn postpone(&mut self, key: u64, recipients: &[Address], next_attempt_ms: u64) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        e.recipients.retain(|r| recipients.contains(r));
        e.next_attempt_ms = next_attempt_ms;
        if e.recipients.is_empty() {
            self.remove(key);
        } else {
            self.dirty.insert(key);
        }
    }

    /// `recipients` answered the event `id` sent by `sender`: they leave its
    /// entries; an entry left without recipients is removed. Returns the number of
    /// entries removed.
    pub fn acknowledge(&mut self, id: EventId, sender: &Address, recipients: &[Address]) -> usize {
        let Some(keys) = self.by_event.get(&(id, sender.clone())).cloned() else {
            return 0;
        };
        let mut removed = 0;
        for key in keys {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            let before = e.recipients.len();
            e.recipients.retain(|r| !recipients.contains(r));
            if e.recipients.is_empty() {
                self.remove(key);
                removed += 1;
            } else if e.recipients.len() != before {
                self.dirty.insert(key);
            }
        }
        removed
    }

    /// An entry.
    pub fn get(&self, key: u64) -> Option<&CachedEvent> {
        self.entries.get(&key)
    }

    /// All entries, by key.
    pub fn entries(&self) -> impl Iterator<Item = &CachedEvent> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Configuration of the Local Event Cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The database file; `None` keeps it in memory (tests, ephemeral runtimes).
    pub path: Option<PathBuf>,
    /// Most cached events.
    pub max_events: usize,
    /// First retransmission delay.
    pub retry_base: Duration,
    /// Longest retransmission delay.
    pub retry_max: Duration,
    /// Attempts before giving up (reported as `onError(BAD_DESTINATION)`).
    pub max_attempts: u32,
    /// How long a transmitted event waits for a primary recipient's delivery
    /// notification before it is sent again (doubling per attempt up to
    /// `retry_max`).
    pub ack_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            path: None,
            max_events: DEFAULT_MAX_CACHED_EVENTS,
            retry_base: DEFAULT_RETRY_BASE,
            retry_max: DEFAULT_RETRY_MAX,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
        }
    }
}

impl CacheConfig {
    /// The delay before attempt `attempts + 1`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        Self::doubling(self.retry_base, attempts, self.retry_max)
    }

    /// The wait for delivery notifications after attempt `attempts + 1`.
    pub fn ack_backoff(&self, attempts: u32) -> Duration {
        Self::doubling(
            self.ack_timeout,
            attempts,
            self.retry_max.max(self.ack_timeout),
        )
    }

    fn doubling(base: Duration, attempts: u32, cap: Duration) -> Duration {
        let factor = 1u32.checked_shl(attempts.min(30)).unwrap_or(u32::MAX);
        base.checked_mul(factor).unwrap_or(cap).min(cap)
    }
}

/// The cache actor.
pub struct LocalEventCache {
    store: Option<EventStore>,
    config: CacheConfig,
    /// A [`Flush`] is queued.
    flushing: bool,
    /// [`CachePut`]s answered at the next commit.
    waiters: Vec<oneshot::Sender<Result<(), CacheError>>>,
    /// Told about commits of [`DurableWrite`]s.
    watcher: Option<Recipient<Committed>>,
    /// The last [`DurableWrite`] ticket received, and the last reported.
    ticket: u64,
    reported: u64,
}

impl fmt::Debug for LocalEventCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalEventCache")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl LocalEventCache {
    /// Opens the store (see [`EventStore::open`]) and starts the actor; returns it
    /// with what the durable entities had stored.
    pub fn start(
        config: CacheConfig,
    ) -> Result<(Addr<LocalEventCache>, HashMap<Address, RestoredEntity>), CacheError> {
        let mut store = EventStore::open(config.path.as_deref(), config.max_events)?;
        // resume: everything stored is due now
        for e in store.entries.values_mut() {
            e.next_attempt_ms = 0;
        }
        let restored = store.take_restored();
        let addr = Actor::start(LocalEventCache {
            store: Some(store),
            config,
            flushing: false,
            waiters: Vec::new(),
            watcher: None,
            ticket: 0,
            reported: 0,
        });
        Ok((addr, restored))
    }

    fn store(&mut self) -> Result<&mut EventStore, CacheError> {
        self.store.as_mut().ok_or(CacheError::Closed)
    }

    /// Commits after the messages already in the mailbox are handled.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flushing {
            self.flushing = true;
            ctx.notify(Flush);
        }
    }

    fn flush(&mut self) {
        self.flushing = false;
        let result = match self.store.as_mut() {
            Some(s) => s.flush(),
            None => Err(CacheError::Closed),
        };
        if let Err(e) = &result {
            warn!(error = %e, "event cache commit failed");
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        if self.ticket != self.reported {
            self.reported = self.ticket;
            if let Some(w) = &self.watcher {
                w.do_send(Committed {
                    upto: self.ticket,
                    ok: result.is_ok(),
                });
            }
        }
    }
}

impl Actor for LocalEventCache {
    type Context = Context<Self>;
}

/// Stores an event for the recipients it could not reach, or that have to answer.
/// Answered once the entry is on disk.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<u64, CacheError>")]
pub struct CachePut {
    /// The event.
    pub event: Event,
    /// The local sender.
    pub sender: Address,
    /// The recipients to retry.
    pub recipients: Vec<Address>,
    /// Now (ms).
    pub now_ms: u64,
    /// Every recipient was handed the event and owes a delivery notification: the
    /// first retry is after [`CacheConfig::ack_timeout`] instead of `retry_base`.
    pub awaiting_notifications: bool,
}

/// Takes the entries to act on at `now_ms`.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "DueEvents")]
pub struct TakeDue {
    /// Now (ms).
    pub now_ms: u64,
}

/// What [`TakeDue`] returns.
#[derive(Debug, Clone, Default)]
pub struct DueEvents {
    /// Due for a retransmission attempt (leased: answer with [`CacheDone`] or
    /// [`CacheRetry`]).
    pub retry: Vec<CachedEvent>,
    /// Expired: removed.
    pub expired: Vec<CachedEvent>,
    /// Out of attempts: removed.
    pub exhausted: Vec<CachedEvent>,
}

/// An entry was transmitted to every recipient it had left and none owes a
/// delivery notification: remove it.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct CacheDone {
    /// The entry.
    pub key: u64,
}

/// An attempt left `recipients` unreached or unanswered: retry after the backoff.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct CacheRetry {
    /// The entry.
    pub key: u64,
    /// Recipients still unreached or unanswered.
    pub recipients: Vec<Address>,
    /// Now (ms).
    pub now_ms: u64,
    /// A route exists but its stub refused (a full mailbox): retry soon, and do
    /// not count the attempt.
    pub congested: bool,
    /// Every recipient left was handed the event: wait for their notifications
    /// ([`CacheConfig::ack_backoff`]).
    pub awaiting_notifications: bool,
}

/// Delivery notifications from `recipients` about the event `id` sent by the local
/// `sender` arrived: they leave the cache entries of that event.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct CacheAck {
    /// The event.
    pub id: EventId,
    /// Its local sender.
    pub sender: Address,
    /// The recipients that answered.
    pub recipients: Vec<Address>,
}

/// Changes to the durable-delivery tables. `ticket` grows by one per message from
/// the dispatcher; [`Committed`] reports the last ticket on disk.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct DurableWrite {
    /// The dispatcher's sequence number of this write.
    pub ticket: u64,
    /// The changes, committed together.
    pub ops: Vec<DurableOp>,
}

/// Every [`DurableWrite`] up to ticket `upto` was committed (`ok`) or dropped by a
/// failed commit.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Committed {
    /// The last ticket of the commit.
    pub upto: u64,
    /// False if the commit failed.
    pub ok: bool,
}

/// Sends [`Committed`] reports to this recipient (the dispatcher).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct WatchCommits(pub Recipient<Committed>);

/// Number of cached events.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "usize")]
pub struct CacheLen;

/// Closes the database after a last commit (before a restart on the same file).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct CloseCache;

/// Commits what the handlers changed (queued by the actor itself).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<CachePut> for LocalEventCache {
    type Result = ResponseFuture<Result<u64, CacheError>>;
    fn handle(&mut self, m: CachePut, ctx: &mut Context<Self>) -> Self::Result {
        let delay = if m.awaiting_notifications {
            self.config.ack_timeout
        } else {
            self.config.retry_base
        };
        let first = after(m.now_ms, delay);
        let key = match self.store() {
            Ok(store) => store.put(&m.event, &m.sender, m.recipients, m.now_ms, first),
            Err(e) => Err(e),
        };
        let key = match key {
            Ok(k) => k,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        debug!(key, id = %m.event.id(), "event cached");
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.schedule_flush(ctx);
        Box::pin(async move {
            rx.await.map_err(|_| CacheError::Closed)??;
            Ok(key)
        })
    }
}

impl Handler<TakeDue> for LocalEventCache {
    type Result = MessageResult<TakeDue>;
    fn handle(&mut self, m: TakeDue, ctx: &mut Context<Self>) -> Self::Result {
        let lease = after(m.now_ms, self.config.retry_max.max(self.config.ack_timeout));
        let max_attempts = self.config.max_attempts;
        let mut due = DueEvents::default();
        let Some(store) = self.store.as_mut() else {
            return MessageResult(due);
        };
        let mut gone = Vec::new();
        for e in store.entries.values_mut() {
            if e.event.is_expired(m.now_ms) {
                gone.push((e.key, true));
            } else if e.attempts >= max_attempts {
                gone.push((e.key, false));
            } else if e.next_attempt_ms <= m.now_ms {
                e.next_attempt_ms = lease;
                due.retry.push(e.clone());
            }
        }
        for (key, expired) in gone {
            let entry = store.entries.get(&key).cloned();
            store.remove(key);
            if let Some(e) = entry {
                if expired {
                    due.expired.push(e);
                } else {
                    due.exhausted.push(e);
                }
            }
        }
        if store.has_changes() {
            self.schedule_flush(ctx);
        }
        MessageResult(due)
    }
}

impl Handler<CacheDone> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, m: CacheDone, ctx: &mut Context<Self>) {
        if let Ok(store) = self.store() {
            store.remove(m.key);
            self.schedule_flush(ctx);
        }
    }
}

impl Handler<CacheRetry> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, m: CacheRetry, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        if let Ok(store) = self.store() {
            if m.congested {
                store.postpone(m.key, &m.recipients, after(m.now_ms, config.retry_base));
            } else {
                let attempts = store.get(m.key).map_or(0, |e| e.attempts);
                let wait = if m.awaiting_notifications {
                    config.ack_backoff(attempts)
                } else {
                    config.backoff(attempts)
                };
                store.reschedule(m.key, &m.recipients, after(m.now_ms, wait));
            }
            self.schedule_flush(ctx);
        }
    }
}

impl Handler<CacheAck> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, m: CacheAck, ctx: &mut Context<Self>) {
        if let Ok(store) = self.store() {
            if store.acknowledge(m.id, &m.sender, &m.recipients) > 0 {
                debug!(id = %m.id, "acknowledged event left the cache");
            }
            if store.has_changes() {
                self.schedule_flush(ctx);
            }
        }
    }
}

impl Handler<DurableWrite> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, m: DurableWrite, ctx: &mut Context<Self>) {
        self.ticket = self.ticket.max(m.ticket);
        if let Some(store) = self.store.as_mut() {
            store.record(m.ops);
        }
        self.schedule_flush(ctx);
    }
}

impl Handler<WatchCommits> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, m: WatchCommits, _: &mut Context<Self>) {
        self.watcher = Some(m.0);
    }
}

impl Handler<CacheLen> for LocalEventCache {
    type Result = usize;
    fn handle(&mut self, _: CacheLen, _: &mut Context<Self>) -> usize {
        self.store.as_ref().map_or(0, EventStore::len)
    }
}

impl Handler<CloseCache> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, _: CloseCache, ctx: &mut Context<Self>) {
        self.flush();
        self.store = None;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn ev(expiry: Option<u64>) -> Event {
        let mut b = Event::builder("t", a("hyperty://a.org/s")).to(a("hyperty://b.org/r"));
        if let Some(e) = expiry {
            b = b.expires_at(e);
        }
        b.build().unwrap()
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "hyperty-cache-{name}-{}.redb",
            uuid::Uuid::new_v4()
        ))
    }

    #[test]
    fn survives_reopening_and_is_bounded() {
        let path = temp_path("reopen");
        {
            let mut s = EventStore::open(Some(&path), 2).unwrap();
            let k1 = s
                .put(
                    &ev(None),
                    &a("hyperty://a.org/s"),
                    vec![a("hyperty://b.org/r")],
                    1,
                    2,
                )
                .unwrap();
            s.put(
                &ev(Some(9)),
                &a("hyperty://a.org/s"),
                vec![a("hyperty://b.org/r")],
                1,
                2,
            )
            .unwrap();
            assert_eq!(
                s.put(&ev(None), &a("hyperty://a.org/s"), vec![], 1, 2),
                Err(CacheError::Full(2))
            );
            s.reschedule(k1, &[a("hyperty://b.org/r")], 77);
            s.flush().unwrap();
        }
        let s = EventStore::open(Some(&path), 2).unwrap();
        assert_eq!(s.len(), 2);
        let first = s.entries().next().unwrap();
        assert_eq!((first.attempts, first.next_attempt_ms), (1, 77));
        assert_eq!(first.recipients, vec![a("hyperty://b.org/r")]);
        assert_eq!(first.event, ev(None));
        drop(s);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn durable_deliveries_survive_reopening() {
        let path = temp_path("durable");
        let ent = a("hyperty-runtime://b.org/rt/inbox");
        let (e1, e2) = (ev(None), ev(Some(99)));
        {
            let mut s = EventStore::open(Some(&path), 2).unwrap();
            assert!(s.take_restored().is_empty());
            s.record([
                DurableOp::Deliver {
                    entity: ent.clone(),
                    id: e1.id(),
                    seq: 0,
                    expiry: None,
                    event: Box::new(e1.clone()),
                },
                DurableOp::Deliver {
                    entity: ent.clone(),
                    id: e2.id(),
                    seq: 1,
                    expiry: Some(99),
                    event: Box::new(e2.clone()),
                },
                DurableOp::Ack {
                    entity: ent.clone(),
                    seq: 0,
                },
            ]);
            s.flush().unwrap();
        }
        let mut s = EventStore::open(Some(&path), 2).unwrap();
        let r = s.take_restored().remove(&ent).expect("restored");
        assert_eq!(r.delivered, vec![(e1.id(), None), (e2.id(), Some(99))]);
        assert_eq!(
            r.inbox,
            vec![(1, e2.clone())],
            "the acknowledged event is gone"
        );
        assert_eq!(r.next_seq, 2);
        s.record([DurableOp::Forget {
            entity: ent.clone(),
            id: e1.id(),
        }]);
        s.flush().unwrap();
        drop(s);
        let mut s = EventStore::open(Some(&path), 2).unwrap();
        let r = s.take_restored().remove(&ent).unwrap();
        assert_eq!(r.delivered, vec![(e2.id(), Some(99))]);
        drop(s);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = CacheConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..CacheConfig::default()
        };
        let v: Vec<u128> = (0..6).map(|n| c.backoff(n).as_millis()).collect();
        assert_eq!(v, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_millis(1000));
    }

    #[actix::test]
    async fn due_expired_and_exhausted_entries() {
        let cfg = CacheConfig {
            max_attempts: 1,
            retry_base: Duration::from_millis(10),
            ..CacheConfig::default()
        };
        let (cache, _) = LocalEventCache::start(cfg).unwrap();
        let put = |e: Event| CachePut {
            event: e,
            sender: a("hyperty://a.org/s"),
            recipients: vec![a("hyperty://b.org/r")],
            now_ms: 0,
            awaiting_notifications: false,
        };
        let k1 = cache.send(put(ev(None))).await.unwrap().unwrap();
        cache.send(put(ev(Some(5)))).await.unwrap().unwrap();
        let due = cache.send(TakeDue { now_ms: 1 }).await.unwrap();
        assert!(due.retry.is_empty() && due.expired.is_empty());
        let due = cache.send(TakeDue { now_ms: 10 }).await.unwrap();
        assert_eq!(due.expired.len(), 1);
        assert_eq!(due.retry.len(), 1);
        assert_eq!(due.retry[0].key, k1);
        // leased: not due again until answered or the lease ends
        assert!(cache
            .send(TakeDue { now_ms: 11 })
            .await
            .unwrap()
            .retry
            .is_empty());
        cache
            .send(CacheRetry {
                key: k1,
                recipients: vec![a("hyperty://b.org/r")],
                now_ms: 11,
                congested: false,
                awaiting_notifications: false,
            })
            .await
            .unwrap();
        let due = cache.send(TakeDue { now_ms: 100 }).await.unwrap();
        assert_eq!(due.exhausted.len(), 1, "one attempt allowed");
        assert_eq!(cache.send(CacheLen).await.unwrap(), 0);
        cache.send(CloseCache).await.unwrap();
    }
}
