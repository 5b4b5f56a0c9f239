//! The node's routing tables and its hot path.
//!
//! A frame from session A for an address owned by session B goes from A's actor
//! straight into B's mailbox: the [`Router`] is shared data, not an actor, so every
//! session routes on its own worker thread (design.md §6). Each of its tables is a
//! small type defined in the module of the one actor that writes it; the write
//! methods are private to that module, the read methods `pub(crate)`, so the
//! router (and everyone else) only reads:
//!
//! | table | type | written by |
//! |---|---|---|
//! | `slots` (session key → connection) | [`Slots`] | [`SessionManager`](super::sessions::SessionManager) |
//! | `runtimes` (runtime and stub URLs → key) | [`Runtimes`] | [`SessionManager`](super::sessions::SessionManager) |
//! | `owners` (address → key) | [`Owners`] | [`AddressAllocation`](super::allocation::AddressAllocation) |
//! | `subscribers` (resource → keys) | [`Subscribers`] | [`SubscriptionManager`](super::subscriptions::SubscriptionManager) |
//!
//! Every write bumps its table's version, so a session may keep the
//! answers of its last lookups ([`RouteMemo`]) until a table changes. Frames a
//! connection's read pass routes to sessions on other threads are handed over at
//! the end of the pass (see [`handoff`](super::handoff)).
//!
//! The counters ([`NodeStats`] for `/health`, [`NodeMetrics`](super::metrics::NodeMetrics)
//! for `/metrics`) are defined together in [`metrics`](super::metrics); the router
//! holds them so the hot path counts without a hop.
//!
//! Delivery order for each `to` (rethink-wire.md §3b, issue §5): node service →
//! the session that owns the address (its allocations, or its runtime or stub URLs
//! and everything under them) → every session subscribed to exactly that address
//! (including the sender) → the holder of the nearest allocated `hyperty://` URL
//! above it (a hyperty's sub-addresses, such as a pub/sub provider's nodes at
//! `<provider>/<name>`) → nothing (404 for requests, counted drop otherwise).
//!
//! An address of another domain (when federation is on) is owned by that domain's
//! peer link, whose key is [`peer_key`]`(domain)`: the frame goes to the link's
//! mailbox through [`PeerRoutes`] (the federation's peer connector, which owns the
//! peer table) with the same byte account as a session's. A foreign address that
//! local sessions subscribed to at its domain's node (`/sm` relayed there) goes to
//! those subscribers instead.
//!
//! A frame is forwarded as the very text that arrived (a shared `ByteString`, one
//! allocation for any fan-out). Each live recipient's queue has a byte budget (see
//! [`outbound`](super::outbound)): above its slow-down mark the *sender* is told to
//! wait ([`Routed::Delivered::congested`]); a recipient past its budget, or whose
//! frame cap is reached, is evicted (socket shut, session freed).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use actix::dev::SendError;
use actix::Recipient;
use bytestring::ByteString;
use dashmap::DashMap;
use hyperty_actors::message::Message;

use super::allocation::Owners;
use super::frame::ToRef;
pub use super::metrics::{NodeStats, StatsSnapshot};
use super::outbound::{Charge, OutboundQueue};
use super::sessions::{Runtimes, Slots};
use super::subscriptions::Subscribers;

/// A session's stable key: its runtime token (it survives reconnection).
pub type SessionKey = Arc<str>;

/// The prefix of a peer link's session key (`peer:<domain>`); runtime session keys
/// are UUIDs.
pub const PEER_KEY_PREFIX: &str = "peer:";

/// The session key of the link to `domain`'s node.
pub fn peer_key(domain: &str) -> SessionKey {
    Arc::from(format!("{PEER_KEY_PREFIX}{domain}"))
}

/// The domain an address belongs to: its authority, with the node-service prefixes
/// of `domain://msg-node.<D>/…` and `domain://registry.<D>` taken off. `None` for
/// `mn:/…` and malformed text.
pub fn domain_of_address(addr: &str) -> Option<&str> {
    let (scheme, rest) = addr.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    if authority.is_empty() {
        return None;
    }
    if scheme == "domain" {
        for prefix in ["msg-node.", "registry."] {
            if let Some(d) = authority.strip_prefix(prefix) {
                return Some(d);
            }
        }
    }
    Some(authority)
}

/// Where frames for another domain's node go: the link's mailbox and its byte account.
#[derive(Debug, Clone)]
pub struct PeerRoute {
    /// The link actor.
    pub conn: Recipient<Outbound>,
    /// Its outbound byte account.
    pub queue: Arc<OutboundQueue>,
    /// How to close its current connection (a peer past its budget).
    pub kicker: Recipient<Kick>,
}

/// The federation's peer connector as the router sees it.
pub trait PeerRoutes: Send + Sync + std::fmt::Debug {
    /// The route to `domain`'s node, set up at first use; `None` if no link to it
    /// may be made (too many peers).
    fn route_to(&self, domain: &str) -> Option<PeerRoute>;
}

/// A frame for a session's client.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Outbound(pub ByteString);

/// Frames for a session's client, in order: what one read pass on another thread
/// routed to it (see [`handoff`](super::handoff)).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct OutboundBurst(pub Vec<ByteString>);

/// Tells a session to close its socket.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Kick {
    /// Sent to the client in the close frame.
    pub reason: String,
}

/// The connection state of a session key.
#[derive(Debug)]
pub struct Slot {
    /// Which connection currently serves the session.
    pub(crate) conn_id: u64,
    pub(crate) conn: Option<Recipient<Outbound>>,
    /// The same connection, for frames handed over in bursts.
    pub(crate) bursts: Option<Recipient<OutboundBurst>>,
    /// The byte account of `conn`'s queue.
    pub(crate) queue: Option<Arc<OutboundQueue>>,
    pub(crate) kicker: Option<Recipient<Kick>>,
    pub(crate) runtime: Option<Arc<str>>,
    /// The authenticated identity (user or device URL) of the session.
    pub(crate) identity: Option<Arc<str>>,
    pub(crate) lost_since: Option<Instant>,
    pub(crate) buffer: Mutex<GraceBuffer>,
}

/// Frames kept for a session while it has no connection, bounded in frames and bytes.
#[derive(Debug, Default)]
pub struct GraceBuffer {
    frames: VecDeque<ByteString>,
    bytes: usize,
}

impl GraceBuffer {
    /// Everything kept, oldest first; the buffer is empty afterwards.
    pub(crate) fn take(&mut self) -> VecDeque<ByteString> {
        self.bytes = 0;
        std::mem::take(&mut self.frames)
    }

    /// Frames kept.
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }
}

impl Slot {
    pub(crate) fn live(
        conn_id: u64,
        conn: Recipient<Outbound>,
        bursts: Recipient<OutboundBurst>,
        queue: Arc<OutboundQueue>,
        kicker: Recipient<Kick>,
    ) -> Slot {
        Slot {
            conn_id,
            conn: Some(conn),
            bursts: Some(bursts),
            queue: Some(queue),
            kicker: Some(kicker),
            runtime: None,
            identity: None,
            lost_since: None,
            buffer: Mutex::new(GraceBuffer::default()),
        }
    }
}

/// Which node component an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `mn:/session`
    Session,
    /// `domain://msg-node.D/address-allocation` and its legacy aliases.
    Allocation,
    /// `domain://msg-node.D/sm`
    Subscriptions,
    /// `domain://registry.D`
    Registry,
    /// `domain://qos.D`: the QoS broker.
    Qos,
    /// `domain-idp://D`
    Idp,
    /// `domain://msg-node.D/pep`: policy management.
    Policy,
}

/// Outcome of delivering one frame to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// In the session's queue.
    Queued,
    /// In the session's queue, which is above its slow-down mark.
    Congested,
    /// In a dropped session's grace buffer.
    Buffered,
    /// Lost: the grace buffer is full.
    Dropped,
}

/// Where a frame may go: anywhere, or (it came over a peer link) to local sessions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Any,
    Local,
}

impl Hop {
    fn may(self, key: &str) -> bool {
        self == Hop::Any || !key.starts_with(PEER_KEY_PREFIX)
    }
}

/// Counts one more holder of `key`, unless it already has `limit`.
fn acquire<K: std::hash::Hash + Eq>(map: &DashMap<K, usize>, key: K, limit: usize) -> bool {
    let mut n = map.entry(key).or_insert(0);
    if *n >= limit {
        return false;
    }
    *n += 1;
    true
}

/// Counts one holder of `key` less, forgetting the key at zero.
fn release<K: std::hash::Hash + Eq>(map: &DashMap<K, usize>, key: &K) {
    map.remove_if_mut(key, |_, n| {
        *n = n.saturating_sub(1);
        *n == 0
    });
}

#[derive(Default)]
struct Tally {
    queued: usize,
    buffered: usize,
    dropped: usize,
    congested: Option<Arc<OutboundQueue>>,
}

impl Tally {
    fn add(&mut self, router: &Router, key: &str, d: Delivered) {
        match d {
            Delivered::Queued => self.queued += 1,
            Delivered::Congested => {
                self.queued += 1;
                if self.congested.is_none() {
                    self.congested = router.queue_of(key);
                }
            }
            Delivered::Buffered => self.buffered += 1,
            Delivered::Dropped => self.dropped += 1,
        }
    }

    fn total(&self) -> usize {
        self.queued + self.buffered + self.dropped
    }

    fn routed(self) -> Routed {
        Routed::Delivered {
            queued: self.queued,
            buffered: self.buffered,
            dropped: self.dropped,
            congested: self.congested,
        }
    }
}

/// Outcome of routing a client frame.
#[derive(Debug, Clone)]
pub enum Routed {
    /// Handed to `n` sessions (`buffered` of them dropped sessions, `dropped` lost).
    Delivered {
        /// Live deliveries.
        queued: usize,
        /// Grace-buffered deliveries.
        buffered: usize,
        /// Lost (grace buffer full).
        dropped: usize,
        /// A recipient queue above its slow-down mark: the sender should wait for
        /// its [`space`](OutboundQueue::space) before reading on.
        congested: Option<Arc<OutboundQueue>>,
    },
    /// For a node component.
    Service(Service),
    /// Nobody owns or subscribes to this address.
    NoRoute(String),
}

/// How many levels above an address [`Router::owner_of`] looks for the hyperty
/// it lies under.
pub const MAX_SUBTREE_DEPTH: usize = 8;

/// A routing table: a [`DashMap`] hashed with foldhash (seeded per process), which
/// hashes the short address keys every frame looks up several times at a fraction
/// of SipHash's cost.
pub(crate) type Table<K, V> = DashMap<K, V, TableHasher>;
/// The hasher of a [`Table`].
pub(crate) type TableHasher = foldhash::fast::RandomState;

/// How many times a routing table was written: its writer bumps it after every
/// change, so a reader that took the version *before* a lookup may reuse the
/// lookup's result while the version stays the same (see [`RouteMemo`]).
#[derive(Debug, Default)]
pub(crate) struct TableVersion(AtomicU64);

impl TableVersion {
    /// Marks a change (after it is made).
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What one session remembers of its last ownership check and its last
/// recipient lookup: a flood from one sender to one recipient then costs no table
/// lookup but the recipient's slot. Valid while `owners`, `runtimes` and
/// `subscribers` keep the versions it was filled at (`TableVersion`); any write
/// to them empties it.
#[derive(Debug, Default)]
pub struct RouteMemo {
    versions: [u64; 3],
    /// The session key and the `from` address it was found to own.
    owned: Option<(SessionKey, Box<str>)>,
    /// A recipient address and the session that owns it.
    owner: Option<(Box<str>, SessionKey)>,
}

impl RouteMemo {
    /// Empties the memo if a table changed since it was filled.
    fn refresh(&mut self, versions: [u64; 3]) {
        if self.versions != versions {
            *self = RouteMemo {
                versions,
                ..RouteMemo::default()
            };
        }
    }
}

/// The shared routing state of one node.
#[derive(Debug)]
pub struct Router {
    domain: String,
    allocation: String,
    object_allocation: String,
    hyperty_allocation: String,
    sm: String,
    pep: String,
    registry: String,
    qos: String,
    idp: String,
    node_prefix: String,
    events: String,
    grace_buffer: usize,
    grace_bytes: usize,
    next_id: AtomicU64,
    pub(crate) slots: Slots,
    pub(crate) runtimes: Runtimes,
    pub(crate) owners: Owners,
    pub(crate) subscribers: Subscribers,
    /// Open connections per client IP.
    per_ip: DashMap<std::net::IpAddr, usize>,
    /// Sessions per authenticated identity.
    per_user: DashMap<Arc<str>, usize>,
    /// Where evictions go (the session manager), set once at start-up.
    evictions: OnceLock<Recipient<Evict>>,
    /// Links to other domains' nodes, set once at start-up when federation is on.
    peers: OnceLock<Arc<dyn PeerRoutes>>,
    /// The other nodes of this domain, set once at start-up with `[cluster] redis`.
    cluster: OnceLock<Arc<crate::cluster::ClusterNode>>,
    /// This router, for the frames a read pass holds ([`handoff`](super::handoff));
    /// set once at start-up, without it frames are always handed over at once.
    this: OnceLock<std::sync::Weak<Router>>,
    /// Counters.
    pub stats: NodeStats,
    /// Counters by type and code, latency histograms (`GET /metrics`).
    pub metrics: super::metrics::NodeMetrics,
}

/// A live connection must go: its queue exceeded its budget or made no write
/// progress in time. Handled by the session manager, which frees the session.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Evict {
    /// The session.
    pub key: SessionKey,
    /// The connection being evicted (ignored if another one serves the session now).
    pub conn_id: u64,
    /// Why.
    pub reason: &'static str,
}

impl Router {
    /// Tables for a node of `domain`.
    pub fn new(domain: &str, grace_buffer: usize) -> Router {
        Router {
            domain: domain.to_owned(),
            allocation: format!("domain://msg-node.{domain}/address-allocation"),
            object_allocation: format!("domain://msg-node.{domain}/object-address-allocation"),
            hyperty_allocation: format!("domain://msg-node.{domain}/hyperty-address-allocation"),
            sm: format!("domain://msg-node.{domain}/sm"),
            pep: format!("domain://msg-node.{domain}/pep"),
            registry: format!("domain://registry.{domain}"),
            qos: format!("domain://qos.{domain}"),
            idp: format!("domain-idp://{domain}"),
            node_prefix: format!("domain://msg-node.{domain}"),
            events: format!("domain://msg-node.{domain}/session-events"),
            grace_buffer,
            grace_bytes: 64 << 20,
            next_id: AtomicU64::new(0),
            slots: Slots::default(),
            runtimes: Runtimes::default(),
            owners: Owners::default(),
            subscribers: Subscribers::default(),
            per_ip: DashMap::new(),
            per_user: DashMap::new(),
            evictions: OnceLock::new(),
            peers: OnceLock::new(),
            cluster: OnceLock::new(),
            this: OnceLock::new(),
            stats: NodeStats::default(),
            metrics: super::metrics::NodeMetrics::new(true),
        }
    }

    /// Lets read passes hold this router's deliveries (see
    /// [`handoff`](super::handoff)); called once, on the router's `Arc`.
    pub fn hold_in_passes(self: &Arc<Router>) {
        let _ = self.this.set(Arc::downgrade(self));
    }

    /// Counts by type and code and samples latencies (`enabled`), or does not.
    pub fn with_metrics(mut self, enabled: bool) -> Router {
        self.metrics = super::metrics::NodeMetrics::new(enabled);
        self
    }

    /// Bounds the bytes kept for a dropped session (default 64 MiB).
    pub fn with_grace_bytes(mut self, bytes: usize) -> Router {
        self.grace_bytes = bytes;
        self
    }

    /// The domain served.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `domain://msg-node.<D>/session-events`: where session lifecycle is published.
    pub fn events_address(&self) -> &str {
        &self.events
    }

    /// A fresh id for node-originated messages.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed) + 1
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Sessions (live and in their grace period).
    pub fn session_count(&self) -> usize {
        self.slots.len()
    }

    /// Live sessions.
    pub fn live_count(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    /// The node component `to` names, if any.
    pub fn service(&self, to: &str) -> Option<Service> {
        if to == "mn:/session" {
            Some(Service::Session)
        } else if to == self.allocation
            || to == self.object_allocation
            || to == self.hyperty_allocation
        {
            Some(Service::Allocation)
        } else if to == self.sm {
            Some(Service::Subscriptions)
        } else if to == self.pep {
            Some(Service::Policy)
        } else if to.strip_suffix('/').unwrap_or(to) == self.registry {
            Some(Service::Registry)
        } else if to.strip_suffix('/').unwrap_or(to) == self.idp {
            Some(Service::Idp)
        } else if to.strip_suffix('/').unwrap_or(to) == self.qos {
            Some(Service::Qos)
        } else {
            None
        }
    }

    /// True for addresses reserved to the node (`domain://msg-node.<D>/…`, `mn:/…`)
    /// that are not a service: clients may neither send from nor to them.
    pub fn is_reserved(&self, addr: &str) -> bool {
        (addr.starts_with(&self.node_prefix)
            && matches!(
                addr.as_bytes().get(self.node_prefix.len()),
                None | Some(b'/')
            ))
            || addr.starts_with("mn:/")
            || addr.strip_suffix('/').unwrap_or(addr) == self.registry
            || addr.strip_suffix('/').unwrap_or(addr) == self.idp
            || addr.strip_suffix('/').unwrap_or(addr) == self.qos
    }

    /// Counts a new connection from `ip`; false (and nothing counted) if that IP
    /// already has `limit` connections.
    pub fn connect_ip(&self, ip: std::net::IpAddr, limit: usize) -> bool {
        acquire(&self.per_ip, ip, limit)
    }

    /// Forgets a connection from `ip`.
    pub fn disconnect_ip(&self, ip: std::net::IpAddr) {
        release(&self.per_ip, &ip);
    }

    /// Counts a new session of `identity`; false (and nothing counted) if it
    /// already holds `limit` sessions.
    pub fn acquire_user(&self, identity: &Arc<str>, limit: usize) -> bool {
        acquire(&self.per_user, identity.clone(), limit)
    }

    /// Forgets a session of `identity`.
    pub fn release_user(&self, identity: &Arc<str>) {
        release(&self.per_user, identity);
    }

    /// The session key of a runtime URL.
    pub fn session_of(&self, runtime: &str) -> Option<SessionKey> {
        self.runtimes.get(runtime).map(|k| k.clone())
    }

    /// Closes the socket of session `key` (its session enters the grace period).
    pub fn kick(&self, key: &str, reason: &str) -> bool {
        match self.slots.get(key).and_then(|s| s.kicker.clone()) {
            Some(k) => {
                k.do_send(Kick {
                    reason: reason.to_owned(),
                });
                true
            }
            None => false,
        }
    }

    /// The authenticated identity of a session key.
    pub fn identity_of(&self, key: &str) -> Option<Arc<str>> {
        self.slots.get(key).and_then(|s| s.identity.clone())
    }

    /// True if session `key` may send from `from`: `from` is allocated to it (or
    /// is a derived channel of a data object allocated to it), or lies under its
    /// runtime URL or one of its stub URLs and no deeper URL of another session
    /// (see [`rights`](super::rights)).
    pub fn owns(&self, key: &str, from: &str) -> bool {
        self.owner_of(from).is_some_and(|k| &*k == key)
            || super::rights::object_of_channel(from)
                .and_then(|obj| self.owners.get(obj))
                .is_some_and(|k| &**k == key)
    }

    /// [`owns`](Self::owns), remembered in `memo` while the tables are unchanged.
    pub fn owns_memo(&self, memo: &mut RouteMemo, key: &SessionKey, from: &str) -> bool {
        memo.refresh(self.table_versions());
        if memo
            .owned
            .as_ref()
            .is_some_and(|(k, f)| Arc::ptr_eq(k, key) && **f == *from)
        {
            return true;
        }
        let owned = self.owns(key, from);
        if owned {
            memo.owned = Some((key.clone(), from.into()));
        }
        owned
    }

    /// The versions of the tables [`owner_of`](Self::owner_of) reads, taken before
    /// a lookup whose result is to be remembered.
    fn table_versions(&self) -> [u64; 3] {
        [
            self.owners.version(),
            self.runtimes.version(),
            self.subscribers.version(),
        ]
    }

    /// [`owner_of`](Self::owner_of), remembered in `memo` while the tables are
    /// unchanged (only found owners are remembered).
    fn owner_of_memo(&self, memo: &mut RouteMemo, to: &str) -> Option<SessionKey> {
        memo.refresh(self.table_versions());
        if let Some((t, k)) = &memo.owner {
            if **t == *to {
                return Some(k.clone());
            }
        }
        let owner = self.owner_of(to)?;
        memo.owner = Some((to.into(), owner.clone()));
        Some(owner)
    }

    /// Who holds the addresses of session `key`: its authenticated identity, or for
    /// an anonymous session its runtime URL.
    pub fn holder_of(&self, key: &str) -> Option<Arc<str>> {
        self.slots
            .get(key)
            .and_then(|s| s.identity.clone().or_else(|| s.runtime.clone()))
    }

    /// The runtime URL of session `key`, once it is open.
    pub fn runtime_of(&self, key: &str) -> Option<Arc<str>> {
        self.slots.get(key).and_then(|s| s.runtime.clone())
    }

    /// Sets where frames for other domains go (once, at start-up).
    pub fn set_peers(&self, peers: Arc<dyn PeerRoutes>) {
        let _ = self.peers.set(peers);
    }

    /// Sets this node's cluster handle (once, at start-up).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::ClusterNode>) {
        let _ = self.cluster.set(cluster);
    }

    /// This node's cluster handle, with `[cluster] redis`.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterNode>> {
        self.cluster.get()
    }

    /// Hands the recipients of `to` no local session owns to the cluster's
    /// forwarder (see [`crate::cluster::forward`]); `answer`: nothing local took
    /// the frame, so `sender` is answered if no node does. False without a
    /// cluster, or when there is nothing to forward; a full forwarder queue
    /// answers the sender 503 itself.
    pub fn forward(
        &self,
        to: &ToRef<'_>,
        frame: &ByteString,
        sender: Option<&SessionKey>,
        answer: bool,
    ) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return false;
        };
        let targets: Vec<String> = to
            .iter()
            .filter(|t| self.owner_of(t).is_none())
            .map(str::to_owned)
            .collect();
        if targets.is_empty() {
            return false;
        }
        let queued = cluster.forward(crate::cluster::node::Forward {
            targets,
            frame: frame.clone(),
            sender: sender.cloned(),
            answer,
            broadcast: false,
        });
        if !queued {
            if let Some(s) = sender.filter(|_| answer) {
                if let Ok(h) = super::frame::Header::parse(frame) {
                    if h.kind.expects_response() {
                        let text = crate::server::refusal::error_frame(
                            Some(h.id.to_json()),
                            h.to.first(),
                            Some(&h.from),
                            hyperty_actors::message::ResponseCode::ServiceUnavailable,
                            "the cluster forwarder is overloaded",
                        );
                        self.deliver(s, &ByteString::from(text));
                    }
                }
            }
        }
        true
    }

    /// The other domain `addr` belongs to, when federation is on.
    pub fn foreign_domain<'a>(&self, addr: &'a str) -> Option<&'a str> {
        self.peers.get()?;
        domain_of_address(addr).filter(|d| *d != self.domain)
    }

    /// The session that owns `to`: an allocated address, the longest runtime or
    /// stub URL `to` is or lies under, or for an address of another domain that no
    /// local session subscribed to, that domain's peer link.
    pub fn owner_of(&self, to: &str) -> Option<SessionKey> {
        if let Some(k) = self.owners.get(to) {
            return Some(k.clone());
        }
        self.runtime_owner(to).or_else(|| {
            if self.subscribers.contains_key(to) {
                return None;
            }
            self.hyperty_owner(to)
                .or_else(|| self.foreign_domain(to).map(peer_key))
        })
    }

    /// The holder of the nearest allocated hyperty URL above `to` (what lies under
    /// a hyperty's URL is its own, e.g. the nodes of a webinos pub/sub provider at
    /// `<provider>/<name>`), looking at most [`MAX_SUBTREE_DEPTH`] levels up.
    fn hyperty_owner(&self, to: &str) -> Option<SessionKey> {
        let rest = to.strip_prefix("hyperty://")?;
        let path_start = "hyperty://".len() + rest.find('/')?;
        let mut end = to.len();
        for _ in 0..MAX_SUBTREE_DEPTH {
            match to[..end].rfind('/') {
                Some(i) if i > path_start => end = i,
                _ => return None,
            }
            if let Some(k) = self.owners.get(&to[..end]) {
                return Some(k.clone());
            }
        }
        None
    }

    fn runtime_owner(&self, to: &str) -> Option<SessionKey> {
        if !(to.starts_with("runtime://") || to.starts_with("hyperty-runtime://")) {
            return None;
        }
        let path_start = to
            .find("://")
            .and_then(|i| to[i + 3..].find('/').map(|j| i + 3 + j))?;
        let mut end = to.len();
        loop {
            if let Some(k) = self.runtimes.get(&to[..end]) {
                return Some(k.clone());
            }
            match to[..end].rfind('/') {
                Some(i) if i > path_start => end = i,
                _ => return None,
            }
        }
    }

    /// Routes a client frame to the sessions behind the recipients `to` (one copy per
    /// session, however many of its addresses are listed).
    pub fn route(&self, to: &ToRef<'_>, frame: &ByteString) -> Routed {
        self.route_via(to, frame, Hop::Any, None)
    }

    /// [`route`](Self::route) for a session that keeps a [`RouteMemo`] of its
    /// lookups.
    pub fn route_memo(&self, to: &ToRef<'_>, frame: &ByteString, memo: &mut RouteMemo) -> Routed {
        self.route_via(to, frame, Hop::Any, Some(memo))
    }

    /// Routes a frame that came over a peer link: like [`route`](Self::route), but
    /// never to a peer link (a frame crosses one link at most).
    pub fn route_from_peer(&self, to: &ToRef<'_>, frame: &ByteString, event: bool) -> Routed {
        if event {
            self.route_event_via(to, frame, Hop::Local)
        } else {
            self.route_via(to, frame, Hop::Local, None)
        }
    }

    fn route_via(
        &self,
        to: &ToRef<'_>,
        frame: &ByteString,
        hop: Hop,
        memo: Option<&mut RouteMemo>,
    ) -> Routed {
        let mut tally = Tally::default();
        match to {
            ToRef::One(t) => {
                if let Some(s) = self.service(t) {
                    return Routed::Service(s);
                }
                let owner = match memo {
                    Some(m) => self.owner_of_memo(m, t),
                    None => self.owner_of(t),
                };
                if let Some(k) = owner.filter(|k| hop.may(k)) {
                    tally.add(self, &k, self.deliver(&k, frame));
                } else if let Some(subs) = self.subscribers.get(t.as_ref()) {
                    // a resource's subscriber list holds each session once
                    for k in subs.iter().filter(|k| hop.may(k)) {
                        tally.add(self, k, self.deliver(k, frame));
                    }
                }
                if tally.total() == 0 {
                    return Routed::NoRoute(t.to_string());
                }
            }
            ToRef::Many(list) => {
                let mut targets: Vec<SessionKey> = Vec::new();
                let mut seen: HashSet<SessionKey> = HashSet::new();
                let mut missing = None;
                for t in list {
                    if let Some(s) = self.service(t) {
                        return Routed::Service(s);
                    }
                    if let Some(k) = self.owner_of(t).filter(|k| hop.may(k)) {
                        if seen.insert(k.clone()) {
                            targets.push(k);
                        }
                        continue;
                    }
                    match self.subscribers.get(t.as_ref()) {
                        Some(subs) if !subs.is_empty() => {
                            for k in subs.iter().filter(|k| hop.may(k)) {
                                if seen.insert(k.clone()) {
                                    targets.push(k.clone());
                                }
                            }
                        }
                        _ => {
                            missing.get_or_insert_with(|| t.to_string());
                        }
                    }
                }
                if targets.is_empty() {
                    return Routed::NoRoute(missing.unwrap_or_default());
                }
                for k in &targets {
                    tally.add(self, k, self.deliver(k, frame));
                }
            }
        }
        tally.routed()
    }

    /// Routes a webinos event message: one copy per destination session, each with
    /// `to` and the event's bcc narrowed to that session's entities (see
    /// [`events`](super::events)); unowned recipients go to subscribers as usual.
    pub fn route_event(&self, to: &ToRef<'_>, frame: &ByteString) -> Routed {
        self.route_event_via(to, frame, Hop::Any)
    }

    fn route_event_via(&self, to: &ToRef<'_>, frame: &ByteString, hop: Hop) -> Routed {
        let owner = |t: &str| self.owner_of(t).filter(|k| hop.may(k));
        let (copies, unowned) = match super::events::split(frame, owner) {
            Ok(split) => split,
            Err(_) => return self.route_via(to, frame, hop, None),
        };
        let mut tally = Tally::default();
        for c in copies {
            let d = self.deliver(&c.session, &ByteString::from(c.frame));
            tally.add(self, &c.session, d);
        }
        let mut missing = None;
        for t in &unowned {
            match self.subscribers.get(t.as_str()) {
                Some(subs) if !subs.is_empty() => {
                    for k in subs.iter().filter(|k| hop.may(k)) {
                        tally.add(self, k, self.deliver(k, frame));
                    }
                }
                _ => {
                    missing.get_or_insert_with(|| t.clone());
                }
            }
        }
        if tally.total() == 0 {
            return Routed::NoRoute(missing.unwrap_or_default());
        }
        tally.routed()
    }

    /// Hands `frame` to the session `key`.
    pub fn deliver(&self, key: &str, frame: &ByteString) -> Delivered {
        if let Some(domain) = key.strip_prefix(PEER_KEY_PREFIX) {
            return self.deliver_to_peer(domain, frame);
        }
        let Some(slot) = self.slots.get(key) else {
            self.stats.dropped.fetch_add(1, Relaxed);
            return Delivered::Dropped;
        };
        if let (Some(conn), Some(queue)) = (&slot.conn, &slot.queue) {
            match queue.charge(frame.len()) {
                Charge::OverBudget => {
                    self.evict(key, &slot, "slow consumer: outbound budget exceeded");
                    self.stats.dropped.fetch_add(1, Relaxed);
                    return Delivered::Dropped;
                }
                // the connection just ended: keep the frame for a re-open
                Charge::Closed => {}
                charge if self.hold(key, &slot, queue, frame) => {
                    self.stats.delivered.fetch_add(1, Relaxed);
                    return if charge == Charge::Congested {
                        Delivered::Congested
                    } else {
                        Delivered::Queued
                    };
                }
                charge => match conn.try_send(Outbound(frame.clone())) {
                    Ok(()) => {
                        self.stats.delivered.fetch_add(1, Relaxed);
                        return if charge == Charge::Congested {
                            Delivered::Congested
                        } else {
                            Delivered::Queued
                        };
                    }
                    Err(SendError::Full(_)) => {
                        queue.refund(frame.len());
                        self.evict(key, &slot, "slow consumer: outbound queue full");
                        self.stats.dropped.fetch_add(1, Relaxed);
                        return Delivered::Dropped;
                    }
                    Err(SendError::Closed(_)) => queue.refund(frame.len()),
                },
            }
        }
        self.buffer(&slot, frame)
    }

    /// Holds `frame` for the end of this thread's read pass, if one is open.
    fn hold(&self, key: &str, slot: &Slot, queue: &Arc<OutboundQueue>, frame: &ByteString) -> bool {
        let (Some(this), Some(bursts)) = (self.this.get(), &slot.bursts) else {
            return false;
        };
        !queue.on_this_thread()
            && super::handoff::hold(this, key, slot.conn_id, bursts, queue, frame)
    }

    /// A frame held for `key` found its connection closed: it waits in the
    /// session's grace buffer, as it would have had it been handed over at once.
    pub(crate) fn held_for_closed(&self, key: &str, frame: &ByteString) {
        self.stats.delivered.fetch_sub(1, Relaxed);
        match self.slots.get(key) {
            Some(slot) => {
                self.buffer(&slot, frame);
            }
            None => {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// `n` frames held for `key` found its mailbox full: the session is evicted.
    pub(crate) fn held_for_full(&self, key: &str, n: usize) {
        self.stats.delivered.fetch_sub(n as u64, Relaxed);
        self.stats.dropped.fetch_add(n as u64, Relaxed);
        if let Some(slot) = self.slots.get(key) {
            self.evict(key, &slot, "slow consumer: outbound queue full");
        }
    }

    /// Hands `frame` to the link to `domain`'s node (which queues it while the link
    /// is down); a link past its byte budget is closed and reconnects.
    fn deliver_to_peer(&self, domain: &str, frame: &ByteString) -> Delivered {
        let Some(route) = self.peers.get().and_then(|p| p.route_to(domain)) else {
            self.stats.dropped.fetch_add(1, Relaxed);
            return Delivered::Dropped;
        };
        let charge = route.queue.charge(frame.len());
        let sent = match charge {
            Charge::OverBudget => {
                tracing::warn!(
                    peer = domain,
                    "closing a peer link past its outbound budget"
                );
                self.stats.slow_consumers.fetch_add(1, Relaxed);
                route.kicker.do_send(Kick {
                    reason: "slow consumer: outbound budget exceeded".to_owned(),
                });
                false
            }
            Charge::Closed => false,
            _ => match route.conn.try_send(Outbound(frame.clone())) {
                Ok(()) => true,
                Err(_) => {
                    route.queue.refund(frame.len());
                    false
                }
            },
        };
        if !sent {
            self.stats.dropped.fetch_add(1, Relaxed);
            return Delivered::Dropped;
        }
        self.stats.delivered.fetch_add(1, Relaxed);
        if charge == Charge::Congested {
            Delivered::Congested
        } else {
            Delivered::Queued
        }
    }

    /// The outbound queue of session `key`'s live connection (or peer link).
    pub fn queue_of(&self, key: &str) -> Option<Arc<OutboundQueue>> {
        if let Some(domain) = key.strip_prefix(PEER_KEY_PREFIX) {
            return self.peers.get()?.route_to(domain).map(|r| r.queue);
        }
        self.slots.get(key).and_then(|s| s.queue.clone())
    }

    /// Sets where evictions are sent (once, at start-up).
    pub fn set_evictions(&self, to: Recipient<Evict>) {
        let _ = self.evictions.set(to);
    }

    /// Evicts the live connection of `slot`: its queue closes (which shuts the
    /// socket and releases waiting senders) and the session manager frees the session.
    pub(crate) fn evict(&self, key: &str, slot: &Slot, reason: &'static str) {
        // the queue's close is the once-only guard: a connection is evicted once
        if !slot.queue.as_ref().is_some_and(|q| q.evict()) {
            return;
        }
        self.stats.slow_consumers.fetch_add(1, Relaxed);
        tracing::warn!(session = %slot.runtime.as_deref().unwrap_or(key), reason, "evicting a connection");
        if let Some(k) = &slot.kicker {
            k.do_send(Kick {
                reason: reason.to_owned(),
            });
        }
        if let Some(e) = self.evictions.get() {
            e.do_send(Evict {
                key: Arc::from(key),
                conn_id: slot.conn_id,
                reason,
            });
        }
    }

    fn buffer(&self, slot: &Slot, frame: &ByteString) -> Delivered {
        let mut buf = slot.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buf.frames.len() >= self.grace_buffer || buf.bytes + frame.len() > self.grace_bytes {
            self.stats.dropped.fetch_add(1, Relaxed);
            return Delivered::Dropped;
        }
        buf.bytes += frame.len();
        buf.frames.push_back(frame.clone());
        self.stats.buffered.fetch_add(1, Relaxed);
        Delivered::Buffered
    }

    /// Publishes a node-originated message to every subscriber of its `to`.
    pub fn publish(&self, msg: &Message) -> usize {
        let frame = ByteString::from(msg.to_json());
        let keys: Vec<SessionKey> = msg
            .to
            .iter()
            .filter_map(|t| self.subscribers.get(t.as_str()).map(|s| s.clone()))
            .flatten()
            .collect();
        let mut n = 0;
        for k in keys {
            if self.deliver(&k, &frame) != Delivered::Dropped {
                n += 1;
            }
        }
        self.metrics.frames_out(&msg.kind, n);
        if self.cluster.get().is_some() {
            let to = match msg.to.iter().collect::<Vec<_>>().as_slice() {
                [one] => ToRef::One(one.as_str().into()),
                many => ToRef::Many(many.iter().map(|t| t.as_str().into()).collect()),
            };
            self.forward(&to, &frame, None, false);
        }
        n
    }

    /// Sends a node-originated message to the session that owns its `to`.
    pub fn send_to_owner(&self, msg: &Message) -> bool {
        let to = msg.to.first().as_str();
        let sent = match self.owner_of(to) {
            Some(k) => self.deliver(&k, &ByteString::from(msg.to_json())) != Delivered::Dropped,
            None => false,
        };
        self.metrics.frames_out(&msg.kind, usize::from(sent));
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_reserved_addresses() {
        let r = Router::new("d.org", 8);
        assert_eq!(r.service("mn:/session"), Some(Service::Session));
        assert_eq!(
            r.service("domain://msg-node.d.org/address-allocation"),
            Some(Service::Allocation)
        );
        assert_eq!(
            r.service("domain://msg-node.d.org/object-address-allocation"),
            Some(Service::Allocation)
        );
        assert_eq!(
            r.service("domain://msg-node.d.org/hyperty-address-allocation"),
            Some(Service::Allocation)
        );
        assert_eq!(
            r.service("domain://msg-node.d.org/sm"),
            Some(Service::Subscriptions)
        );
        assert_eq!(
            r.service("domain://registry.d.org"),
            Some(Service::Registry)
        );
        assert_eq!(
            r.service("domain://registry.d.org/"),
            Some(Service::Registry)
        );
        assert_eq!(r.service("domain://qos.d.org"), Some(Service::Qos));
        assert!(r.is_reserved("domain://qos.d.org/"));
        assert_eq!(r.service("domain://msg-node.other.org/sm"), None);
        assert!(r.is_reserved("domain://msg-node.d.org/session-events"));
        assert!(r.is_reserved("domain://msg-node.d.org"));
        assert!(!r.is_reserved("domain://msg-node.d.org.evil/x"));
        assert!(r.is_reserved("mn:/anything"));
    }

    #[test]
    fn a_route_memo_is_forgotten_when_a_table_changes() {
        let r = Router::new("d.org", 8);
        let (k1, k2): (SessionKey, SessionKey) = (Arc::from("k1"), Arc::from("k2"));
        r.runtimes
            .insert_for_test(Arc::from("runtime://d.org/abc"), k1.clone());
        let mut memo = RouteMemo::default();
        assert!(r.owns_memo(&mut memo, &k1, "runtime://d.org/abc/h"));
        assert!(!r.owns_memo(&mut memo, &k2, "runtime://d.org/abc/h"));
        assert_eq!(
            r.owner_of_memo(&mut memo, "runtime://d.org/abc/h"),
            Some(k1.clone())
        );
        // the runtime URL moves to another session: neither answer may be reused
        r.runtimes
            .insert_for_test(Arc::from("runtime://d.org/abc"), k2.clone());
        assert_eq!(
            r.owner_of_memo(&mut memo, "runtime://d.org/abc/h"),
            Some(k2.clone())
        );
        assert!(!r.owns_memo(&mut memo, &k1, "runtime://d.org/abc/h"));
        assert!(r.owns_memo(&mut memo, &k2, "runtime://d.org/abc/h"));
        // an unowned recipient is looked up every time, and found once it is owned
        assert_eq!(r.owner_of_memo(&mut memo, "hyperty://d.org/1"), None);
        r.owners
            .insert_for_test(Arc::from("hyperty://d.org/1"), k1.clone());
        assert_eq!(
            r.owner_of_memo(&mut memo, "hyperty://d.org/1"),
            Some(k1.clone())
        );
        // a subscription to the address changes the subscribers' version too
        let v = r.table_versions();
        r.subscribers
            .insert_for_test(Arc::from("comm://d.org/x"), vec![k2.clone()]);
        assert_ne!(v, r.table_versions());
    }

    #[test]
    fn runtime_urls_own_their_subtree() {
        let r = Router::new("d.org", 8);
        let key: SessionKey = Arc::from("k1");
        r.runtimes
            .insert_for_test(Arc::from("runtime://d.org/abc"), key.clone());
        assert_eq!(r.owner_of("runtime://d.org/abc"), Some(key.clone()));
        assert_eq!(r.owner_of("runtime://d.org/abc/sm"), Some(key.clone()));
        assert_eq!(r.owner_of("runtime://d.org/abc/x/y/z"), Some(key.clone()));
        assert_eq!(r.owner_of("runtime://d.org/abcd"), None);
        assert_eq!(r.owner_of("runtime://d.org"), None);
        assert!(r.owns("k1", "runtime://d.org/abc/registry"));
        assert!(!r.owns("k1", "runtime://d.org/abcd"));
        r.owners
            .insert_for_test(Arc::from("hyperty://d.org/1"), key.clone());
        assert!(r.owns("k1", "hyperty://d.org/1"));
        assert!(!r.owns("k2", "hyperty://d.org/1"));
        assert_eq!(r.owner_of("hyperty://d.org/1"), Some(key.clone()));
        // an allocated data object's channels speak for it; routing stays exact
        r.owners
            .insert_for_test(Arc::from("comm://d.org/o"), key.clone());
        assert!(r.owns("k1", "comm://d.org/o/subscription"));
        assert!(r.owns("k1", "comm://d.org/o/children/"));
        assert!(!r.owns("k2", "comm://d.org/o/subscription"));
        assert!(!r.owns("k1", "comm://d.org/o/other"));
        assert_eq!(r.owner_of("comm://d.org/o/changes"), None);
        // what lies under an allocated hyperty URL is its holder's, unless subscribed
        assert_eq!(r.owner_of("hyperty://d.org/1/news"), Some(key.clone()));
        assert_eq!(r.owner_of("hyperty://d.org/1/a/b"), Some(key.clone()));
        assert!(r.owns("k1", "hyperty://d.org/1/news"));
        assert_eq!(r.owner_of("hyperty://d.org/10/news"), None);
        assert_eq!(r.owner_of("hyperty://d.org/2/news"), None);
        r.subscribers.insert_for_test(
            Arc::from("hyperty://d.org/1/presence"),
            vec![Arc::from("k3")],
        );
        assert_eq!(r.owner_of("hyperty://d.org/1/presence"), None);
        drop(key);
        // a deeper URL of another session is that session's, not the outer one's
        r.runtimes
            .insert_for_test(Arc::from("runtime://d.org/abc/deep"), Arc::from("k2"));
        assert!(r.owns("k2", "runtime://d.org/abc/deep/x"));
        assert!(!r.owns("k1", "runtime://d.org/abc/deep/x"));
        assert!(r.owns("k1", "runtime://d.org/abc/deeper"));
    }

    #[test]
    fn domains_of_addresses() {
        assert_eq!(domain_of_address("hyperty://b.org/1"), Some("b.org"));
        assert_eq!(
            domain_of_address("domain://msg-node.b.org/sm"),
            Some("b.org")
        );
        assert_eq!(domain_of_address("domain://registry.b.org"), Some("b.org"));
        assert_eq!(domain_of_address("domain-idp://b.org"), Some("b.org"));
        assert_eq!(domain_of_address("user://b.org/alice"), Some("b.org"));
        assert_eq!(domain_of_address("mn:/session"), None);
        assert_eq!(peer_key("b.org").as_ref(), "peer:b.org");
    }

    #[test]
    fn frames_from_a_peer_never_go_to_a_peer() {
        let r = Router::new("d.org", 8);
        r.subscribers
            .insert_for_test(Arc::from("comm://d.org/o/changes"), vec![peer_key("b.org")]);
        let to = ToRef::One("comm://d.org/o/changes".into());
        let f = ByteString::from_static("{}");
        assert!(matches!(
            r.route(&to, &f),
            Routed::Delivered { dropped: 1, .. }
        ));
        assert!(matches!(
            r.route_from_peer(&to, &f, false),
            Routed::NoRoute(_)
        ));
        assert!(matches!(
            r.route_from_peer(&to, &f, true),
            Routed::NoRoute(_)
        ));
    }

    #[test]
    fn lost_sessions_buffer_up_to_the_limit() {
        let r = Router::new("d.org", 2);
        let key: SessionKey = Arc::from("k1");
        r.slots.insert_for_test(
            key.clone(),
            Slot {
                conn_id: 0,
                conn: None,
                bursts: None,
                queue: None,
                kicker: None,
                runtime: None,
                identity: None,
                lost_since: Some(Instant::now()),
                buffer: Mutex::new(GraceBuffer::default()),
            },
        );
        let f = ByteString::from_static("{}");
        assert_eq!(r.deliver("k1", &f), Delivered::Buffered);
        assert_eq!(r.deliver("k1", &f), Delivered::Buffered);
        assert_eq!(r.deliver("k1", &f), Delivered::Dropped);
        assert_eq!(r.deliver("nobody", &f), Delivered::Dropped);
        let s = r.snapshot();
        assert_eq!((s.buffered, s.dropped), (2, 2));
    }
}
