//! [`ClusterNode`]: this node's face in the cluster, shared by the node's
//! single writers (sessions, allocation, subscriptions), its router and the
//! [`ClusterDirectory`](super::directory::ClusterDirectory).
//!
//! The writers assert their entries through it ([`claim`](ClusterNode::claim),
//! [`add_member`](ClusterNode::add_member), …): each goes to Redis with the
//! entry TTL and into this node's ledger, which the directory's heartbeat
//! refreshes in one pipeline (and writes again after Redis lost it). Releases
//! delete an entry only while it still names this node, so a node that lost a
//! session to another never deletes what the other now holds.
//!
//! Keys (all under `<prefix>:`): `member:<node>`, `owner:<address>` → node,
//! `rt:<runtime or stub URL>` → node, `token:<runtime token>` →
//! `"<node> <session key> <runtime> <identity>"`, `sess:<session key>:addrs` and
//! `sess:<session key>:subs` (sets), `subs:<resource>` (set of nodes with
//! subscribers). Channels: `node:<node>` (frames for that node), `control`
//! (invalidations and session hand-overs, JSON [`Control`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{ClusterError, ClusterSection, ClusterStore};

/// What starts a control message on a node's frame channel (no frame does).
pub(crate) const CONTROL_MARK: char = '\u{0}';

/// Most frames waiting for the forwarder; past it a cross-node frame is refused (503).
pub const FORWARD_QUEUE: usize = 65_536;

/// Sets `KEYS[1]` to `ARGV[1]` unless it names another node; 1 if set.
const CLAIM: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0";

/// Deletes `KEYS[1]` if it names node `ARGV[1]`.
const RELEASE: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == ARGV[1] or (v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ') then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// What this node asserted under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A string value.
    Value(String),
    /// Members of a set.
    Members(HashSet<String>),
}

/// A node of the cluster as the last heartbeat saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id.
    pub node: String,
    /// Its WebSocket URL, once it listens.
    pub url: Option<String>,
    /// When it started (ms since the epoch).
    pub started_at: u64,
    /// Its last heartbeat (ms since the epoch).
    pub heartbeat: u64,
}

/// A message on the shared `control` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Control {
    /// Who owns or subscribes to these addresses changed: forget what is cached.
    Invalidate {
        /// The addresses.
        addresses: Vec<String>,
    },
    /// Session `key` was re-opened on another node: `node` drops it.
    HandOver {
        /// The node that held it.
        node: String,
        /// The session key.
        key: String,
    },
    /// `node`'s session holding `object` named its audience (sent on the node
    /// channels, in order with the object's frames).
    Audience {
        /// The node holding the object.
        node: String,
        /// The object.
        object: String,
        /// The addresses it admits.
        admitted: Vec<String>,
    },
    /// A new `open` of `runtime` on another node replaces its session on `node`,
    /// which closes it.
    Replace {
        /// The node that held it.
        node: String,
        /// The runtime URL.
        runtime: String,
    },
}

/// A frame the local tables could not (fully) route, for the forwarder.
#[derive(Debug)]
pub(crate) struct Forward {
    /// The recipients no local session owns.
    pub(crate) targets: Vec<String>,
    /// The frame, as it will travel.
    pub(crate) frame: ByteString,
    /// The session that sent it (answered 404/503/504 if the frame goes nowhere).
    pub(crate) sender: Option<Arc<str>>,
    /// Nothing local took it: answer the sender if no node does either.
    pub(crate) answer: bool,
    /// A control message (not a frame) for every other node, in order with frames.
    pub(crate) broadcast: bool,
}

/// What the forwarder is told.
#[derive(Debug)]
pub(crate) enum Input {
    Forward(Forward),
    Invalidate(Vec<String>),
}

/// A request sent to another node, waiting for its response.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) sender: Arc<str>,
    pub(crate) node: String,
    pub(crate) deadline: Instant,
    /// The request's `to`, `from` and `id` (for the 504).
    pub(crate) to: String,
    pub(crate) from: String,
    pub(crate) id: serde_json::Value,
}

/// This node's handle on the cluster (see the module docs).
#[derive(Debug)]
pub struct ClusterNode {
    store: ClusterStore,
    id: Arc<str>,
    ttl: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) cache_ttl: Duration,
    started_at: u64,
    url: RwLock<Option<String>>,
    entries: Mutex<HashMap<String, Entry>>,
    tx: mpsc::Sender<Input>,
    rx: Mutex<Option<mpsc::Receiver<Input>>>,
    members: RwLock<Vec<Member>>,
    redis_up: AtomicBool,
    left: AtomicBool,
    /// Requests forwarded to other nodes: (requester address, id) → who asked.
    pub(crate) pending: Mutex<HashMap<(String, String), Pending>>,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ClusterNode {
    /// This node's handle on the cluster of `cfg`, or `None` without `redis`.
    pub fn open(cfg: &ClusterSection) -> Result<Option<Arc<ClusterNode>>, ClusterError> {
        let Some(store) = ClusterStore::open(cfg)? else {
            return Ok(None);
        };
        let id: Arc<str> = match &cfg.node_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(uuid::Uuid::new_v4().to_string()),
        };
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        Ok(Some(Arc::new(ClusterNode {
            store,
            id,
            ttl: Duration::from_millis(cfg.entry_ttl_ms),
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            cache_ttl: Duration::from_millis(cfg.cache_ms),
            started_at: now_ms(),
            url: RwLock::new(None),
            entries: Mutex::new(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
            members: RwLock::new(Vec::new()),
            redis_up: AtomicBool::new(false),
            left: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
        })))
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The store.
    pub fn store(&self) -> &ClusterStore {
        &self.store
    }

    /// The entry TTL.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Records the URL this node serves WebSockets on (shown in its membership).
    pub fn advertise(&self, url: String) {
        *self.url.write().unwrap_or_else(|e| e.into_inner()) = Some(url);
    }

    /// This node's membership record, as of now.
    pub(crate) fn me(&self) -> Member {
        Member {
            node: self.id.to_string(),
            url: self.url.read().unwrap_or_else(|e| e.into_inner()).clone(),
            started_at: self.started_at,
            heartbeat: now_ms(),
        }
    }

    /// The nodes the last heartbeat saw (this one included).
    pub fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_members(&self, m: Vec<Member>) {
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = m;
    }

    /// Whether node `id` heartbeat recently (within three heartbeats).
    pub(crate) fn is_alive(&self, id: &str) -> bool {
        let horizon = now_ms().saturating_sub(3 * self.heartbeat.as_millis() as u64);
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|m| m.node == id && m.heartbeat >= horizon)
    }

    /// A response to `to` with `id` went by: a request forwarded for it is answered.
    pub(crate) fn answered(&self, to: &str, id: &serde_json::Value) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            pending.remove(&(to.to_owned(), id.to_string()));
        }
    }

    /// Leaves the cluster: deletes this node's membership record, so the others
    /// see it gone at once (its entries expire, so its runtimes may re-open elsewhere).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        tracing::info!(node = %self.id, "leaving the cluster");
        self.left.store(true, Relaxed);
        self.store
            .run::<()>(redis::cmd("DEL").arg(self.key(&["member", &self.id])))
            .await
    }

    /// Whether this node left the cluster (it heartbeats no more).
    pub fn has_left(&self) -> bool {
        self.left.load(Relaxed)
    }

    /// Whether Redis answered the last heartbeat.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Relaxed)
    }

    pub(crate) fn set_redis_up(&self, up: bool) -> bool {
        self.redis_up.swap(up, Relaxed)
    }

    /// `<prefix>:<parts>…`
    pub fn key(&self, parts: &[&str]) -> String {
        self.store.key(parts)
    }

    /// This node's channel, or node `id`'s.
    pub fn channel_of(&self, id: &str) -> String {
        self.store.key(&["node", id])
    }

    /// The shared control channel.
    pub fn control_channel(&self) -> String {
        self.store.key(&["control"])
    }

    pub(crate) fn take_forward_queue(&self) -> Option<mpsc::Receiver<Input>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Hands a frame to the forwarder; false if its queue is full or gone.
    pub(crate) fn forward(&self, f: Forward) -> bool {
        self.tx.try_send(Input::Forward(f)).is_ok()
    }

    /// Sends `c` to every other node on its frame channel, after the frames
    /// queued before it; false if it could not be queued.
    pub(crate) fn broadcast(&self, c: Control) -> bool {
        let Ok(text) = serde_json::to_string(&c) else {
            return false;
        };
        self.forward(Forward {
            targets: Vec::new(),
            frame: ByteString::from(format!("{CONTROL_MARK}{text}")),
            sender: None,
            answer: false,
            broadcast: true,
        })
    }

    pub(crate) fn invalidate_local(&self, addresses: Vec<String>) {
        let _ = self.tx.try_send(Input::Invalidate(addresses));
    }

    fn remember(&self, key: String, entry: Entry) {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match (e.get_mut(&key), entry) {
            (Some(Entry::Members(have)), Entry::Members(add)) => have.extend(add),
            (_, entry) => {
                e.insert(key, entry);
            }
        }
    }

    /// Stops refreshing `key` (without touching Redis).
    pub fn forget(&self, key: &str) {
        self.forget_member(key, None);
    }

    fn forget_member(&self, key: &str, member: Option<&str>) {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match (member, e.get_mut(key)) {
            (Some(m), Some(Entry::Members(have))) => {
                have.remove(m);
                if have.is_empty() {
                    e.remove(key);
                }
            }
            _ => {
                e.remove(key);
            }
        }
    }

    /// Every entry this node asserts, for the heartbeat.
    pub(crate) fn entries(&self) -> Vec<(String, Entry)> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Sets each of `keys` to `value` (a node id, or a value starting with
    /// `"<node id> "`) unless it names another node (`force`: even then). Returns,
    /// per key, whether it is now this node's.
    pub async fn claim(
        &self,
        keys: &[String],
        value: &str,
        force: bool,
    ) -> Result<Vec<bool>, ClusterError> {
        let ttl = self.ttl_ms();
        if force {
            // ours whatever Redis says now: a failed write is retried by the heartbeat
            for k in keys {
                self.remember(k.clone(), Entry::Value(value.to_owned()));
            }
        }
        let mut pipe = redis::pipe();
        for k in keys {
            if force {
                pipe.cmd("SET")
                    .arg(k)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl)
                    .ignore();
                pipe.cmd("ECHO").arg(1);
            } else {
                pipe.cmd("EVAL")
                    .arg(CLAIM)
                    .arg(1)
                    .arg(k)
                    .arg(value)
                    .arg(ttl);
            }
        }
        let won: Vec<i64> = self.store.pipe(&pipe).await?;
        let won: Vec<bool> = won.into_iter().map(|n| n == 1).collect();
        for (k, w) in keys.iter().zip(&won) {
            if *w {
                self.remember(k.clone(), Entry::Value(value.to_owned()));
            }
        }
        Ok(won)
    }

    /// Deletes each of `keys` that still names this node, and stops refreshing them.
    pub async fn release(&self, keys: &[String]) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        for k in keys {
            self.forget_member(k, None);
            pipe.cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(k)
                .arg(&*self.id)
                .ignore();
        }
        self.store.pipe::<()>(&pipe).await
    }

    /// Adds `members` to set `key` (with the entry TTL).
    pub async fn add_members(&self, key: &str, members: &[String]) -> Result<(), ClusterError> {
        if members.is_empty() {
            return Ok(());
        }
        self.remember(
            key.to_owned(),
            Entry::Members(members.iter().cloned().collect()),
        );
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(key).arg(members).ignore();
        pipe.cmd("PEXPIRE").arg(key).arg(self.ttl_ms()).ignore();
        self.store.pipe::<()>(&pipe).await
    }

    /// Takes `member` out of set `key`.
    pub async fn remove_member(&self, key: &str, member: &str) -> Result<(), ClusterError> {
        self.forget_member(key, Some(member));
        self.store
            .run::<()>(redis::cmd("SREM").arg(key).arg(member))
            .await
    }

    /// Deletes `key` (a set of this node's) and stops refreshing it.
    pub async fn delete(&self, key: &str) -> Result<(), ClusterError> {
        self.forget_member(key, None);
        self.store.run::<()>(redis::cmd("DEL").arg(key)).await
    }

    /// Tells every node (this one included) to forget what it cached of `addresses`.
    pub async fn invalidate(&self, addresses: Vec<String>) -> Result<(), ClusterError> {
        self.invalidate_local(addresses.clone());
        self.control(&Control::Invalidate { addresses }).await
    }

    /// Publishes `c` on the control channel.
    pub async fn control(&self, c: &Control) -> Result<(), ClusterError> {
        let text = serde_json::to_string(c).map_err(|e| ClusterError::Protocol(e.to_string()))?;
        self.store
            .run::<()>(redis::cmd("PUBLISH").arg(self.control_channel()).arg(text))
            .await
    }

    /// Refreshes every entry in one pipeline and writes again those Redis lost;
    /// returns how many were written again.
    pub(crate) async fn refresh(&self) -> Result<usize, ClusterError> {
        let entries = self.entries();
        if entries.is_empty() {
            return Ok(0);
        }
        let ttl = self.ttl_ms();
        let mut pipe = redis::pipe();
        for (k, _) in &entries {
            pipe.cmd("PEXPIRE").arg(k).arg(ttl);
        }
        let alive: Vec<i64> = self.store.pipe(&pipe).await?;
        let mut again = redis::pipe();
        let mut n = 0;
        for ((k, e), a) in entries.iter().zip(alive) {
            if a == 1 {
                continue;
            }
            n += 1;
            match e {
                Entry::Value(v) => {
                    again.cmd("SET").arg(k).arg(v).arg("PX").arg(ttl).ignore();
                }
                Entry::Members(m) if !m.is_empty() => {
                    again
                        .cmd("SADD")
                        .arg(k)
                        .arg(m.iter().collect::<Vec<_>>())
                        .ignore();
                    again.cmd("PEXPIRE").arg(k).arg(ttl).ignore();
                }
                Entry::Members(_) => {}
            }
        }
        if n > 0 {
            self.store.pipe::<()>(&again).await?;
        }
        Ok(n)
    }
}
