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
//! assert_eq!(store.len(), 1);
//! assert!(store.remove(key).unwrap());
//! assert_eq!(store.len(), 0);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::address::Address;
use crate::events::clock::after;
use crate::events::error::CacheError;
use crate::events::model::Event;

/// Default bound of cached events.
pub const DEFAULT_MAX_CACHED_EVENTS: usize = 100_000;
/// Default first retransmission delay.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);
/// Default longest retransmission delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// Default number of retransmission attempts before giving up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 1_000;

const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");

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
    next_key: u64,
    max: usize,
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
            tx.commit()?;
        }
        let mut entries = BTreeMap::new();
        let mut broken = Vec::new();
        {
            let tx = db.begin_read()?;
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
        }
        let next_key = entries
            .keys()
            .next_back()
            .copied()
            .max(broken.iter().max().copied())
            .map_or(1, |k| k + 1);
        let store = EventStore {
            db,
            entries,
            next_key,
            max,
        };
        for k in broken {
            store.write(k, None)?;
        }
        if !store.entries.is_empty() {
            info!(events = store.entries.len(), "event cache resumed");
        }
        Ok(store)
    }

    fn write(&self, key: u64, entry: Option<&CachedEvent>) -> Result<(), CacheError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(EVENTS)?;
            match entry {
                Some(e) => {
                    t.insert(key, e.encode().as_slice())?;
                }
                None => {
                    t.remove(key)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
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
        self.write(key, Some(&entry))?;
        self.next_key += 1;
        self.entries.insert(key, entry);
        Ok(key)
    }

    /// Removes an entry; true if it existed.
    pub fn remove(&mut self, key: u64) -> Result<bool, CacheError> {
        if self.entries.remove(&key).is_none() {
            return Ok(false);
        }
        self.write(key, None)?;
        Ok(true)
    }

    /// Records a failed attempt: fewer recipients maybe, one more attempt, next
    /// attempt at `next_attempt_ms`.
    pub fn reschedule(
        &mut self,
        key: u64,
        recipients: Vec<Address>,
        next_attempt_ms: u64,
    ) -> Result<(), CacheError> {
        let Some(e) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        e.recipients = recipients;
        e.attempts = e.attempts.saturating_add(1);
        e.next_attempt_ms = next_attempt_ms;
        let copy = e.clone();
        self.write(key, Some(&copy))
    }

    /// Moves the next attempt of an entry without counting one (congestion).
    pub fn postpone(
        &mut self,
        key: u64,
        recipients: Vec<Address>,
        next_attempt_ms: u64,
    ) -> Result<(), CacheError> {
        let Some(e) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        e.recipients = recipients;
        e.next_attempt_ms = next_attempt_ms;
        let copy = e.clone();
        self.write(key, Some(&copy))
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            path: None,
            max_events: DEFAULT_MAX_CACHED_EVENTS,
            retry_base: DEFAULT_RETRY_BASE,
            retry_max: DEFAULT_RETRY_MAX,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl CacheConfig {
    /// The delay before attempt `attempts + 1`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32.checked_shl(attempts.min(30)).unwrap_or(u32::MAX);
        self.retry_base
            .checked_mul(factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// The cache actor.
#[derive(Debug)]
pub struct LocalEventCache {
    store: Option<EventStore>,
    config: CacheConfig,
}

impl LocalEventCache {
    /// Opens the store (see [`EventStore::open`]) and starts the actor.
    pub fn start(config: CacheConfig) -> Result<Addr<LocalEventCache>, CacheError> {
        let mut store = EventStore::open(config.path.as_deref(), config.max_events)?;
        // resume: everything stored is due now
        for e in store.entries.values_mut() {
            e.next_attempt_ms = 0;
        }
        Ok(Actor::start(LocalEventCache {
            store: Some(store),
            config,
        }))
    }

    fn store(&mut self) -> Result<&mut EventStore, CacheError> {
        self.store.as_mut().ok_or(CacheError::Closed)
    }
}

impl Actor for LocalEventCache {
    type Context = Context<Self>;
}

/// Stores an event for the recipients it could not reach.
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

/// An entry was transmitted to every recipient it had left: remove it.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct CacheDone {
    /// The entry.
    pub key: u64,
}

/// An attempt left `recipients` unreached: retry after the backoff.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct CacheRetry {
    /// The entry.
    pub key: u64,
    /// Recipients still unreached.
    pub recipients: Vec<Address>,
    /// Now (ms).
    pub now_ms: u64,
    /// A route exists but its stub refused (a full mailbox): retry soon, and do
    /// not count the attempt.
    pub congested: bool,
}

/// Number of cached events.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "usize")]
pub struct CacheLen;

/// Closes the database (before a restart on the same file).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct CloseCache;

impl Handler<CachePut> for LocalEventCache {
    type Result = Result<u64, CacheError>;
    fn handle(&mut self, m: CachePut, _: &mut Context<Self>) -> Self::Result {
        let first = after(m.now_ms, self.config.retry_base);
        let key = self
            .store()?
            .put(&m.event, &m.sender, m.recipients, m.now_ms, first)?;
        debug!(key, id = %m.event.id(), "event cached");
        Ok(key)
    }
}

impl Handler<TakeDue> for LocalEventCache {
    type Result = MessageResult<TakeDue>;
    fn handle(&mut self, m: TakeDue, _: &mut Context<Self>) -> Self::Result {
        let lease = after(m.now_ms, self.config.retry_max);
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
            if let Err(err) = store.remove(key) {
                warn!(key, error = %err, "cannot remove a cached event");
            }
            if let Some(e) = entry {
                if expired {
                    due.expired.push(e);
                } else {
                    due.exhausted.push(e);
                }
            }
        }
        MessageResult(due)
    }
}

impl Handler<CacheDone> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, m: CacheDone, _: &mut Context<Self>) {
        if let Ok(store) = self.store() {
            if let Err(err) = store.remove(m.key) {
                warn!(key = m.key, error = %err, "cannot remove a cached event");
            }
        }
    }
}

impl Handler<CacheRetry> for LocalEventCache {
    type Result = ();
    fn handle(&mut self, m: CacheRetry, _: &mut Context<Self>) {
        let config = self.config.clone();
        if let Ok(store) = self.store() {
            let result = if m.congested {
                store.postpone(m.key, m.recipients, after(m.now_ms, config.retry_base))
            } else {
                let attempts = store.get(m.key).map_or(0, |e| e.attempts);
                let next = after(m.now_ms, config.backoff(attempts));
                store.reschedule(m.key, m.recipients, next)
            };
            if let Err(err) = result {
                warn!(key = m.key, error = %err, "cannot reschedule a cached event");
            }
        }
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
            s.reschedule(k1, vec![], 77).unwrap();
        }
        let s = EventStore::open(Some(&path), 2).unwrap();
        assert_eq!(s.len(), 2);
        let first = s.entries().next().unwrap();
        assert_eq!((first.attempts, first.next_attempt_ms), (1, 77));
        assert!(first.recipients.is_empty());
        assert_eq!(first.event, ev(None));
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
        let cache = LocalEventCache::start(cfg).unwrap();
        let put = |e: Event| CachePut {
            event: e,
            sender: a("hyperty://a.org/s"),
            recipients: vec![a("hyperty://b.org/r")],
            now_ms: 0,
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
            })
            .await
            .unwrap();
        let due = cache.send(TakeDue { now_ms: 100 }).await.unwrap();
        assert_eq!(due.exhausted.len(), 1, "one attempt allowed");
        assert_eq!(cache.send(CacheLen).await.unwrap(), 0);
        cache.send(CloseCache).await.unwrap();
    }
}
