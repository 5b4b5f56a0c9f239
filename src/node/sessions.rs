//! Session Manager: open, re-open, close, loss and grace period of runtime sessions.
//!
//! Every WebSocket connection gets a fresh session key (internal, never shown to
//! the client). `open` from a runtime URL of the node's domain (with a path below
//! the domain) to `mn:/session` binds the runtime URL — and any stub URLs announced
//! in `body.stubURL` — to the session (see [`rights`](super::rights)) and answers
//! `200 {runtimeToken}`: a fresh bearer secret, never logged. An `open` for a
//! runtime URL that still has a session replaces that session when
//! [`may_replace`] allows it (its socket is closed, its addresses and
//! subscriptions freed; the runtime URL passes to the new session without a
//! moment unrouted, and the frames the old one had buffered go out on the new
//! connection); otherwise 403. A second `open` or a `re-open` on a
//! connection that already has a session is refused.
//!
//! A socket dropped without `close` keeps its session — addresses, subscriptions,
//! and up to `session.grace_buffer` frames sent to it — for
//! `session.grace_period_ms`; `re-open` with the token (in `body.runtimeToken`, or
//! as the last segment of `from`, Vert.x style) from a new connection resumes it and
//! flushes the buffered frames first. The token is bound to the session's identity:
//! an authenticated session's `re-open` must also carry a valid token (ID or device)
//! of the same identity; an anonymous one's must carry none. After the grace period,
//! or on `close`, everything is freed.
//!
//! An authenticated session lives as long as its token: `update` to `mn:/session`
//! with a fresh `body.idToken` of the same identity renews it ([`Renew`]); a
//! session whose token expired `auth.expiry_grace_ms` ago is sent a `close` with
//! code 401 and its socket is closed.
//!
//! This actor is the only writer of the router's `slots` and `runtimes` tables. It
//! publishes each lifecycle change (`open`, `re-open`, `close`, `lost`) as an
//! `update` to `domain://msg-node.<D>/session-events`, which policy managers may
//! subscribe to through `/sm`, and logs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use hyperty_actors::address::Address;
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use serde_json::json;
use tracing::info;

use super::allocation::{AddressAllocation, AdoptAddresses, DropSession, HandOverAddresses};
use super::outbound::OutboundQueue;
use super::rights::{check_runtime_url, may_replace, stub_url, UrlRefused};
use super::router::{
    Evict, GraceBuffer, Kick, Outbound, OutboundBurst, Router, SessionKey, Slot, Table,
    TableVersion,
};
use super::subscriptions::{
    AdoptSubscriptions, DropSubscriptions, HandOverSubscriptions, SubscriptionManager,
};
use crate::identity::TokenVerifier;
use dashmap::mapref::one::{Ref, RefMut};

/// The router's `slots` table: session key → connection state. Read by anyone in
/// the crate; written only here, by the [`SessionManager`].
#[derive(Debug, Default)]
pub struct Slots(Table<SessionKey, Slot>);

impl Slots {
    /// The state of session `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Ref<'_, SessionKey, Slot>> {
        self.0.get(key)
    }

    /// Every session.
    pub(crate) fn iter(
        &self,
    ) -> dashmap::iter::Iter<'_, SessionKey, Slot, super::router::TableHasher> {
        self.0.iter()
    }

    /// Sessions (live and in their grace period).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&self, key: SessionKey, slot: Slot) {
        self.0.insert(key, slot);
    }

    fn get_mut(&self, key: &str) -> Option<RefMut<'_, SessionKey, Slot>> {
        self.0.get_mut(key)
    }

    fn remove(&self, key: &str) -> Option<(SessionKey, Slot)> {
        self.0.remove(key)
    }

    /// Puts a slot in place for a router unit test.
    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, key: SessionKey, slot: Slot) {
        self.insert(key, slot);
    }
}

/// The router's `runtimes` table: runtime and stub URLs → session key. Read by
/// anyone in the crate; written only here, by the [`SessionManager`].
#[derive(Debug, Default)]
pub struct Runtimes(Table<Arc<str>, SessionKey>, TableVersion);

impl Runtimes {
    /// The session bound to exactly `url`.
    pub(crate) fn get(&self, url: &str) -> Option<Ref<'_, Arc<str>, SessionKey>> {
        self.0.get(url)
    }

    /// See [`TableVersion`].
    pub(crate) fn version(&self) -> u64 {
        self.1.get()
    }

    fn insert(&self, url: Arc<str>, key: SessionKey) {
        self.0.insert(url, key);
        self.1.bump();
    }

    fn remove_if(&self, url: &str, key: &SessionKey) {
        if self.0.remove_if(url, |_, k| k == key).is_some() {
            self.1.bump();
        }
    }

    /// Binds `url` for a router unit test.
    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, url: Arc<str>, key: SessionKey) {
        self.insert(url, key);
    }
}

/// Why `open`/`re-open` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct SessionRefused {
    /// Response code.
    pub code: ResponseCode,
    /// Reason.
    pub description: String,
}

/// The answer to a `re-open` with a token no session holds (the reference wording).
fn unknown_token() -> SessionRefused {
    refuse(
        ResponseCode::Unauthorized,
        "Reconnection fail. Incorrect runtime token!",
    )
}

fn refuse(code: ResponseCode, description: impl Into<String>) -> SessionRefused {
    SessionRefused {
        code,
        description: description.into(),
    }
}

/// A new connection.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Connected {
    /// Its fresh key.
    pub key: SessionKey,
    /// Identifies the connection (a session may be served by several in turn).
    pub conn_id: u64,
    /// Where its frames go.
    pub conn: Recipient<Outbound>,
    /// Where bursts of its frames go.
    pub bursts: Recipient<OutboundBurst>,
    /// The byte account of its outbound queue.
    pub queue: Arc<OutboundQueue>,
    /// How to close it.
    pub kicker: Recipient<Kick>,
}

/// The authenticated user or device of a session, and until when its token holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user or device URL.
    pub identity: Arc<str>,
    /// The token's expiry, seconds since the epoch.
    pub expires: u64,
    /// When the token was issued (its `iat`): a deletion of the identity, or of
    /// the device the token names, after that revokes it.
    pub issued_at: u64,
    /// The device the token was issued for (its `device` claim), if any.
    pub device: Option<Arc<str>>,
}

/// `open` from `runtime`.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<Opened, SessionRefused>")]
pub struct Open {
    /// The connection's key.
    pub key: SessionKey,
    /// The runtime URL (`from` of the open).
    pub runtime: String,
    /// Stub URLs announced in `body.stubURL`.
    pub stubs: Vec<String>,
    /// The authenticated user or device, if any.
    pub identity: Option<Authenticated>,
}

/// A session opened or resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its key (a resumed session keeps its own).
    pub key: SessionKey,
    /// Its runtime token, for `re-open`.
    pub token: String,
    /// Its identity.
    pub identity: Option<Arc<str>>,
}

/// `re-open` with a token from a new connection.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<Opened, SessionRefused>")]
pub struct ReOpen {
    /// The new connection's key.
    pub key: SessionKey,
    /// The runtime token of the session to resume.
    pub token: String,
    /// The runtime URL it claims.
    pub runtime: String,
    /// Who re-opens (credentials in the `re-open`), if anyone.
    pub identity: Option<Authenticated>,
}

/// `update` to `mn:/session` with a fresh token: the session lives on.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), SessionRefused>")]
pub struct Renew {
    /// The session.
    pub key: SessionKey,
    /// The identity of the fresh token.
    pub identity: Authenticated,
}

/// Binds a stub URL to a session at its first use.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), SessionRefused>")]
pub struct BindStub {
    /// The session.
    pub key: SessionKey,
    /// The `from` the session sent from.
    pub from: String,
}

/// `close`: free the session now.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Close {
    /// The session.
    pub key: SessionKey,
}

/// The socket went away without `close`.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Lost {
    /// The session.
    pub key: SessionKey,
    /// The connection that went away (ignored if another one serves the session now).
    pub conn_id: u64,
    /// Why (for the log and the lifecycle event).
    pub reason: String,
}

/// Session `key` was re-opened on another node of the cluster: it leaves this
/// node (socket closed, tables cleared) and keeps its cluster entries.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct HandedOver {
    /// The session.
    pub key: SessionKey,
}

/// A new `open` of `runtime` on another node replaced its session here: it is
/// closed (socket, addresses, subscriptions, cluster entries).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct ReplacedElsewhere {
    /// The runtime URL.
    pub runtime: String,
}

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct GraceExpired {
    key: SessionKey,
    since: Instant,
}

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct ExpiryCheck {
    key: SessionKey,
}

/// Tunables of the session manager.
#[derive(Debug, Clone)]
pub struct SessionRules {
    /// How long a dropped session is kept.
    pub grace: Duration,
    /// Most sessions per identity.
    pub max_per_user: usize,
    /// Most stub URLs per session.
    pub max_stub_urls: usize,
    /// How long a session goes on after its token expired.
    pub expiry_grace: Duration,
}

/// The session manager actor.
#[derive(Debug)]
pub struct SessionManager {
    router: Arc<Router>,
    allocation: Addr<AddressAllocation>,
    subscriptions: Addr<SubscriptionManager>,
    grace: Duration,
    max_per_user: usize,
    lifecycle: Vec<Recipient<Lifecycle>>,
    write_deadline: Duration,
    /// Write progress of each connection with frames pending, as of the last sweep.
    stalls: HashMap<SessionKey, (u64, Instant)>,
    rules: SessionRules,
    verifier: TokenVerifier,
    /// runtime token → session key (the only place tokens are kept).
    tokens: HashMap<Arc<str>, SessionKey>,
    /// session key → its token, stub URLs, and token expiry.
    sessions: HashMap<SessionKey, Held>,
    /// The identity provider's revocation count as of the last sweep.
    revocations_seen: u64,
}

#[derive(Debug, Default)]
struct Held {
    token: Option<Arc<str>>,
    stubs: Vec<Arc<str>>,
    expires: Option<u64>,
    /// The token that authenticated the session (or renewed it last).
    credentials: Option<Authenticated>,
}

/// A lifecycle change, for other node components (e.g. the domain registry).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Lifecycle {
    /// `open`, `re-open`, `close` or `lost`.
    pub event: &'static str,
    /// The runtime URL.
    pub runtime: String,
}

impl SessionManager {
    /// A manager writing `router`'s session tables; `verifier` gives the time
    /// tokens expire against; every lifecycle change goes to each of `lifecycle`.
    pub fn new(
        router: Arc<Router>,
        allocation: Addr<AddressAllocation>,
        subscriptions: Addr<SubscriptionManager>,
        rules: SessionRules,
        verifier: TokenVerifier,
        lifecycle: Vec<Recipient<Lifecycle>>,
    ) -> Self {
        SessionManager {
            router,
            allocation,
            subscriptions,
            grace: rules.grace,
            max_per_user: rules.max_per_user,
            lifecycle,
            write_deadline: Duration::from_secs(2),
            stalls: HashMap::new(),
            rules,
            verifier,
            tokens: HashMap::new(),
            sessions: HashMap::new(),
            revocations_seen: 0,
        }
    }

    /// Evicts connections that made no write progress for `deadline` while frames
    /// were pending for them (default 2 s).
    pub fn with_write_deadline(mut self, deadline: Duration) -> Self {
        self.write_deadline = deadline;
        self
    }

    /// One pass of the write-deadline check.
    fn sweep_stalls(&mut self) {
        let now = Instant::now();
        let mut stalls = HashMap::with_capacity(self.stalls.len());
        let mut overdue = Vec::new();
        for slot in self.router.slots.iter() {
            let Some(q) = slot
                .queue
                .as_ref()
                .filter(|q| q.pending() > 0 && !q.is_closed())
            else {
                continue;
            };
            let progress = q.progress();
            let since = match self.stalls.get(slot.key()) {
                Some(&(p, since)) if p == progress => since,
                _ => now,
            };
            if now.duration_since(since) >= self.write_deadline {
                overdue.push(slot.key().clone());
            } else {
                stalls.insert(slot.key().clone(), (progress, since));
            }
        }
        self.stalls = stalls;
        for key in overdue {
            if let Some(slot) = self.router.slots.get(&key) {
                self.router
                    .evict(&key, &slot, "slow consumer: no write progress");
            }
        }
    }

    fn publish(&self, event: &'static str, runtime: &str, reason: Option<&str>) {
        info!(event, runtime, reason, "session lifecycle");
        let Ok(addr) = Address::parse(self.router.events_address()) else {
            return;
        };
        let mut value = json!({ "event": event, "runtime": runtime });
        if let Some(r) = reason {
            value["reason"] = json!(r);
        }
        let msg = Message::new(MessageType::Update, addr.clone(), addr)
            .with_id(self.router.next_id())
            .with_value(value);
        self.router.publish(&msg);
        for l in &self.lifecycle {
            l.do_send(Lifecycle {
                event,
                runtime: runtime.to_owned(),
            });
        }
    }

    /// Removes a session from every table; resolves once its addresses and
    /// subscriptions are gone.
    fn drop_session(
        &mut self,
        key: &SessionKey,
        event: &'static str,
        reason: Option<&str>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        if let Some(rt) = self.router.runtime_of(key) {
            self.publish(event, &rt, reason);
        }
        self.unbind(key, false)
    }

    /// Removes a session from every table without telling anyone; resolves once
    /// its addresses and subscriptions are gone.
    fn unbind(
        &mut self,
        key: &SessionKey,
        handed_over: bool,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let slot = self.router.slots.remove(key).map(|(_, s)| s);
        if let Some(id) = slot.as_ref().and_then(|s| s.identity.as_ref()) {
            self.router.release_user(id);
        }
        let mut entries = Vec::new();
        if let Some(held) = self.sessions.remove(key) {
            if let Some(t) = held.token {
                self.tokens.remove(&t);
                entries.push(vec!["token".to_owned(), t.to_string()]);
            }
            for stub in held.stubs {
                self.router.runtimes.remove_if(&stub, key);
                entries.push(vec!["rt".to_owned(), stub.to_string()]);
            }
        }
        if let Some(rt) = slot.as_ref().and_then(|s| s.runtime.as_ref()) {
            self.router.runtimes.remove_if(rt, key);
            entries.push(vec!["rt".to_owned(), rt.to_string()]);
        }
        if let Some(cluster) = self.router.cluster().cloned() {
            let keys: Vec<String> = entries
                .iter()
                .map(|e| cluster.key(&[&e[0], &e[1]]))
                .collect();
            if handed_over {
                keys.iter().for_each(|k| cluster.forget(k));
            } else {
                let urls: Vec<String> = entries
                    .into_iter()
                    .filter(|e| e[0] == "rt")
                    .map(|e| e[1].clone())
                    .collect();
                actix::spawn(async move {
                    let r = async {
                        cluster.release(&keys).await?;
                        cluster.invalidate(urls).await
                    };
                    if let Err(e) = r.await {
                        tracing::debug!(error = %e, "freeing a session in the cluster failed (it expires)");
                    }
                });
            }
        }
        // both are queued now, before anything else reaches those actors
        use futures_util::FutureExt;
        let (addresses, subscriptions) = if handed_over {
            (
                self.allocation
                    .send(HandOverAddresses(key.clone()))
                    .map(drop)
                    .boxed(),
                self.subscriptions
                    .send(HandOverSubscriptions(key.clone()))
                    .map(drop)
                    .boxed(),
            )
        } else {
            (
                self.allocation
                    .send(DropSession(key.clone()))
                    .map(drop)
                    .boxed(),
                self.subscriptions
                    .send(DropSubscriptions(key.clone()))
                    .map(drop)
                    .boxed(),
            )
        };
        async move {
            addresses.await;
            subscriptions.await;
        }
    }

    /// Records session `key` (its token, runtime and stub URLs) in the cluster, so
    /// a `re-open` reaches it from any node and frames for its URLs come here.
    fn assert_in_cluster(
        &self,
        key: &SessionKey,
        token: &str,
        runtime: &str,
        stubs: &[Arc<str>],
        identity: Option<&str>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let cluster = self.router.cluster().cloned();
        let record = cluster
            .as_ref()
            .map(|c| format!("{} {key} {runtime} {}", c.id(), identity.unwrap_or("-")));
        let token = token.to_owned();
        let identity = identity.map(str::to_owned);
        let mut urls = vec![runtime.to_owned()];
        urls.extend(stubs.iter().map(|s| s.to_string()));
        async move {
            let (Some(cluster), Some(record)) = (cluster, record) else {
                return;
            };
            let r = async {
                cluster
                    .claim(&[cluster.key(&["token", &token])], &record, true)
                    .await?;
                let keys: Vec<String> = urls.iter().map(|u| cluster.key(&["rt", u])).collect();
                let holder = format!("{} {}", cluster.id(), identity.as_deref().unwrap_or("-"));
                cluster.claim(&keys, &holder, true).await?;
                cluster.invalidate(urls).await
            };
            if let Err(e) = r.await {
                tracing::warn!(error = %e, "recording a session in the cluster failed (retried at the next heartbeat)");
            }
        }
    }
}

impl Actor for SessionManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.write_deadline / 4).max(Duration::from_millis(10));
        ctx.run_interval(every, |act, ctx| {
            act.sweep_stalls();
            act.sweep_revoked(ctx);
        });
    }
}

impl Handler<Evict> for SessionManager {
    type Result = ();
    fn handle(&mut self, e: Evict, _: &mut Context<Self>) {
        let current = self
            .router
            .slots
            .get(&e.key)
            .is_some_and(|s| s.conn_id == e.conn_id);
        if current {
            actix::spawn(self.drop_session(&e.key, "close", Some(e.reason)));
        }
    }
}

impl Handler<Connected> for SessionManager {
    type Result = ();
    fn handle(&mut self, c: Connected, _: &mut Context<Self>) {
        self.router.slots.insert(
            c.key,
            Slot::live(c.conn_id, c.conn, c.bursts, c.queue, c.kicker),
        );
    }
}

impl SessionManager {
    fn now(&self) -> u64 {
        self.verifier.now()
    }

    /// Checks an `open`; returns the session it replaces, if any.
    fn admit(&self, o: &Open) -> Result<Option<SessionKey>, SessionRefused> {
        check_runtime_url(&o.runtime, self.router.domain()).map_err(|e| match e {
            UrlRefused::Malformed(d) => refuse(ResponseCode::BadRequest, d),
            UrlRefused::ForeignDomain(d) => refuse(ResponseCode::Forbidden, d),
        })?;
        match self.router.slots.get(&o.key) {
            None => return Err(refuse(ResponseCode::InternalError, "unknown connection")),
            Some(slot) if slot.runtime.is_some() => {
                return Err(refuse(
                    ResponseCode::BadRequest,
                    format!(
                        "this connection is already open for {}",
                        slot.runtime.as_deref().unwrap_or_default()
                    ),
                ))
            }
            Some(_) => {}
        }
        for stub in &o.stubs {
            if stub_url(stub, self.router.domain()).is_none() {
                return Err(refuse(
                    ResponseCode::BadRequest,
                    format!(
                        "stub URL {stub} is not a hyperty-runtime:// URL of {}",
                        self.router.domain()
                    ),
                ));
            }
            if self.router.owner_of(stub).is_some() {
                return Err(refuse(
                    ResponseCode::Forbidden,
                    format!("stub URL {stub} belongs to another session"),
                ));
            }
        }
        if o.stubs.len() > self.rules.max_stub_urls {
            return Err(refuse(
                ResponseCode::TooManyRequests,
                format!(
                    "a session may hold at most {} stub URLs",
                    self.rules.max_stub_urls
                ),
            ));
        }
        let Some(holder) = self.router.owner_of(&o.runtime) else {
            return Ok(None);
        };
        let exact = self
            .router
            .runtimes
            .get(o.runtime.as_str())
            .is_some_and(|k| *k == holder);
        let old = self.router.identity_of(&holder);
        let new = o.identity.as_ref().map(|a| &*a.identity);
        if exact && may_replace(old.as_deref(), new, &o.runtime) {
            return Ok(Some(holder));
        }
        Err(refuse(
            ResponseCode::Forbidden,
            if exact {
                "this runtime URL has a session of another identity"
            } else {
                "this runtime URL lies under another session's URL"
            },
        ))
    }

    /// Binds the admitted `open` to its connection; `counted`: the identity's
    /// session is already counted (passed on by the session it replaces).
    fn bind(
        &mut self,
        o: Open,
        counted: bool,
        ctx: &mut Context<Self>,
    ) -> Result<Opened, SessionRefused> {
        let identity = o.identity.as_ref().map(|a| a.identity.clone());
        if let Some(id) = identity.as_ref().filter(|_| !counted) {
            if !self.router.acquire_user(id, self.max_per_user) {
                return Err(refuse(
                    ResponseCode::TooManyRequests,
                    format!("{id} already holds {} sessions", self.max_per_user),
                ));
            }
        }
        let runtime: Arc<str> = Arc::from(o.runtime.as_str());
        match self.router.slots.get_mut(&o.key) {
            Some(mut slot) if slot.runtime.is_none() => {
                slot.runtime = Some(runtime.clone());
                slot.identity = identity.clone();
            }
            _ => {
                if let Some(id) = &identity {
                    self.router.release_user(id);
                }
                return Err(refuse(
                    ResponseCode::InternalError,
                    "the connection went away",
                ));
            }
        }
        self.router.runtimes.insert(runtime, o.key.clone());
        let token: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
        let stubs: Vec<Arc<str>> = o.stubs.iter().map(|s| Arc::from(s.as_str())).collect();
        for s in &stubs {
            self.router.runtimes.insert(s.clone(), o.key.clone());
        }
        self.tokens.insert(token.clone(), o.key.clone());
        self.sessions.insert(
            o.key.clone(),
            Held {
                token: Some(token.clone()),
                stubs,
                expires: None,
                credentials: None,
            },
        );
        if let Some(a) = &o.identity {
            self.set_credentials(&o.key, a, ctx);
        }
        let stubs = self
            .sessions
            .get(&o.key)
            .map(|h| h.stubs.clone())
            .unwrap_or_default();
        let recorded =
            self.assert_in_cluster(&o.key, &token, &o.runtime, &stubs, identity.as_deref());
        ctx.wait(recorded.into_actor(self));
        self.router
            .stats
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish("open", &o.runtime, None);
        Ok(Opened {
            key: o.key,
            token: token.to_string(),
            identity,
        })
    }

    /// Records the session's token — when it expires (making sure a check is due
    /// then) and what would revoke it.
    fn set_credentials(&mut self, key: &SessionKey, a: &Authenticated, ctx: &mut Context<Self>) {
        let Some(held) = self.sessions.get_mut(key) else {
            return;
        };
        let expires = a.expires;
        let armed = held.expires.is_some();
        held.expires = Some(expires);
        held.credentials = Some(a.clone());
        if !armed {
            self.arm_expiry(key.clone(), expires, ctx);
        }
    }

    fn arm_expiry(&self, key: SessionKey, expires: u64, ctx: &mut Context<Self>) {
        let left =
            Duration::from_secs(expires.saturating_sub(self.now())) + self.rules.expiry_grace;
        ctx.run_later(left, move |_, ctx| ctx.notify(ExpiryCheck { key }));
    }
}

impl Handler<Open> for SessionManager {
    type Result = ResponseActFuture<Self, Result<Opened, SessionRefused>>;
    fn handle(&mut self, o: Open, ctx: &mut Context<Self>) -> Self::Result {
        let Some(cluster) = self.router.cluster().cloned() else {
            return Box::pin(fut::ready(self.open_here(o, ctx)));
        };
        // does another node hold a session of this runtime URL?
        let c = cluster.clone();
        let key = cluster.key(&["rt", &o.runtime]);
        let lookup = async move {
            c.store()
                .run::<Option<String>>(redis::cmd("GET").arg(key))
                .await
        };
        Box::pin(lookup.into_actor(self).map(move |held, act, ctx| {
            let remote = match held {
                Ok(Some(v)) => {
                    let mut parts = v.split(' ');
                    let node = parts.next().unwrap_or_default().to_owned();
                    let identity = parts.next().filter(|i| *i != "-").map(str::to_owned);
                    (node != cluster.id()).then_some((node, identity))
                }
                Ok(None) => None,
                Err(e) => {
                    // local sessions go on without the cluster; the heartbeat records it later
                    tracing::warn!(error = %e, "opening without checking the cluster");
                    None
                }
            };
            if let Some((_, old)) = &remote {
                let new = o.identity.as_ref().map(|a| &*a.identity);
                if !may_replace(old.as_deref(), new, &o.runtime) {
                    return Err(refuse(
                        ResponseCode::Forbidden,
                        "this runtime URL has a session of another identity (on another node)",
                    ));
                }
            }
            let runtime = o.runtime.clone();
            let opened = act.open_here(o, ctx)?;
            if let Some((node, _)) = remote {
                info!(runtime = %runtime, node = %node, "a new open replaces the runtime's session on another node");
                actix::spawn(async move {
                    if let Err(e) = cluster.control(&crate::cluster::Control::Replace { node, runtime }).await {
                        tracing::warn!(error = %e, "telling the other node of a replaced session failed");
                    }
                });
            }
            Ok(opened)
        }))
    }
}

impl SessionManager {
    fn open_here(&mut self, o: Open, ctx: &mut Context<Self>) -> Result<Opened, SessionRefused> {
        let _span = tracing::info_span!("node.open", runtime = %o.runtime).entered();
        // an open for the runtime URL this connection already holds: the same session
        if let Some(key) = self.router.session_of(&o.runtime).filter(|k| *k == o.key) {
            let held = self.sessions.get(&key);
            return Ok(Opened {
                token: held
                    .and_then(|h| h.token.as_deref())
                    .unwrap_or_default()
                    .to_owned(),
                identity: self.router.identity_of(&key),
                key,
            });
        }
        match self.admit(&o)? {
            Some(old) => self.replace(old, o, ctx),
            None => self.bind(o, false, ctx),
        }
    }
}

impl SessionManager {
    /// Hands the runtime URL of session `old` to the admitted `open` without a
    /// moment unrouted (a frame for the runtime then would be answered 404): the
    /// new binding is in place before the old session leaves the tables, and what
    /// the old one had buffered goes out on the new connection. Listeners hear the
    /// old session's `close` before the new `open`.
    fn replace(
        &mut self,
        old: SessionKey,
        o: Open,
        ctx: &mut Context<Self>,
    ) -> Result<Opened, SessionRefused> {
        info!(runtime = %o.runtime, "a new open replaces the runtime's session");
        self.router
            .kick(&old, "replaced by a new open of this runtime");
        self.publish("close", &o.runtime, Some("replaced by a new open"));
        // the same identity's session count passes from the old session to the new
        let inherited = match self.router.slots.get_mut(&old) {
            Some(mut slot)
                if slot.identity.is_some()
                    && slot.identity.as_deref() == o.identity.as_ref().map(|a| &*a.identity) =>
            {
                slot.identity.take()
            }
            _ => None,
        };
        // (a refused bind releases the count it was given)
        let opened = self.bind(o, inherited.is_some(), ctx);
        if let Ok(new) = &opened {
            let buffered = self
                .router
                .slots
                .get_mut(&old)
                .and_then(|mut s| s.buffer.get_mut().map(GraceBuffer::take).ok())
                .unwrap_or_default();
            if let Some(slot) = self.router.slots.get(&new.key) {
                if let (Some(conn), Some(queue)) = (&slot.conn, &slot.queue) {
                    for f in buffered {
                        queue.force(f.len());
                        conn.do_send(Outbound(f));
                    }
                }
            }
        }
        let dropped = self.unbind(&old, false);
        ctx.wait(dropped.into_actor(self));
        opened
    }
}

impl Handler<Renew> for SessionManager {
    type Result = Result<(), SessionRefused>;
    fn handle(&mut self, r: Renew, ctx: &mut Context<Self>) -> Self::Result {
        if self.router.identity_of(&r.key).as_deref() != Some(&*r.identity.identity) {
            return Err(refuse(
                ResponseCode::Forbidden,
                "the token is not of this session's identity",
            ));
        }
        self.set_credentials(&r.key, &r.identity, ctx);
        Ok(())
    }
}

impl Handler<ExpiryCheck> for SessionManager {
    type Result = ();
    fn handle(&mut self, e: ExpiryCheck, ctx: &mut Context<Self>) {
        let Some(expires) = self.sessions.get(&e.key).and_then(|h| h.expires) else {
            return;
        };
        let deadline = Duration::from_secs(expires) + self.rules.expiry_grace;
        if Duration::from_secs(self.now()) < deadline {
            // renewed meanwhile
            return self.arm_expiry(e.key, expires, ctx);
        }
        if let Some(h) = self.sessions.get_mut(&e.key) {
            h.expires = None;
        }
        info!(session = %e.key, "session token expired, closing");
        self.close_unauthorised(
            &e.key,
            "the session's token expired: open again with a fresh one",
        );
        self.router.kick(&e.key, "401: the session's token expired");
    }
}

impl SessionManager {
    /// Sends the session's runtime a `close` with code 401 and `why`.
    fn close_unauthorised(&self, key: &SessionKey, why: &str) {
        let Some(runtime) = self.router.runtime_of(key) else {
            return;
        };
        if let (Ok(to), Ok(from)) = (Address::parse(&runtime), Address::parse("mn:/session")) {
            let mut m = Message::new(MessageType::Close, from, to).with_id(self.router.next_id());
            m.body.code = Some(ResponseCode::Unauthorized);
            m.body.description = Some(why.to_owned());
            self.router.send_to_owner(&m);
        }
    }

    /// Ends, at once and for good, every session whose token a deletion of its
    /// user or device revoked (checked when the provider's revocations changed).
    fn sweep_revoked(&mut self, ctx: &mut Context<Self>) {
        let epoch = self.verifier.revocation_epoch();
        if epoch == self.revocations_seen {
            return;
        }
        self.revocations_seen = epoch;
        let revoked: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, h)| {
                h.credentials.as_ref().is_some_and(|a| {
                    self.verifier
                        .is_token_revoked(&a.identity, a.device.as_deref(), a.issued_at)
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in revoked {
            info!(session = %key, "the session's identity was deleted, closing");
            self.close_unauthorised(&key, "the session's identity was deleted");
            self.router
                .kick(&key, "401: the session's identity was deleted");
            let dropped = self.drop_session(&key, "close", Some("identity deleted"));
            ctx.spawn(dropped.into_actor(self));
        }
    }
}

impl Handler<BindStub> for SessionManager {
    type Result = Result<(), SessionRefused>;
    fn handle(&mut self, b: BindStub, _: &mut Context<Self>) -> Self::Result {
        let domain = self.router.domain();
        let Some(stub) = stub_url(&b.from, domain) else {
            return Err(refuse(
                ResponseCode::Forbidden,
                format!("from address {} is not owned by this session", b.from),
            ));
        };
        if self.router.owner_of(&b.from).is_some() || self.router.owner_of(&stub).is_some() {
            return Err(refuse(
                ResponseCode::Forbidden,
                format!("from address {} is not owned by this session", b.from),
            ));
        }
        let Some(held) = self.sessions.get_mut(&b.key) else {
            return Err(refuse(
                ResponseCode::Forbidden,
                "open the session first (open to mn:/session)",
            ));
        };
        if held.stubs.len() >= self.rules.max_stub_urls {
            return Err(refuse(
                ResponseCode::Forbidden,
                format!(
                    "{}: a session may hold at most {} stub URLs",
                    b.from, self.rules.max_stub_urls
                ),
            ));
        }
        let stub: Arc<str> = Arc::from(stub);
        held.stubs.push(stub.clone());
        self.router.runtimes.insert(stub.clone(), b.key);
        if let Some(cluster) = self.router.cluster().cloned() {
            actix::spawn(async move {
                let key = cluster.key(&["rt", &stub]);
                let r = async {
                    cluster.claim(&[key], cluster.id(), true).await?;
                    cluster.invalidate(vec![stub.to_string()]).await
                };
                if let Err(e) = r.await {
                    tracing::warn!(error = %e, "recording a stub URL in the cluster failed");
                }
            });
        }
        Ok(())
    }
}

impl Handler<ReOpen> for SessionManager {
    type Result = ResponseActFuture<Self, Result<Opened, SessionRefused>>;
    fn handle(&mut self, r: ReOpen, ctx: &mut Context<Self>) -> Self::Result {
        let known = self.tokens.contains_key(r.token.as_str());
        match self.router.cluster().cloned() {
            Some(cluster) if !known => self.reopen_from_cluster(cluster, r),
            _ => Box::pin(fut::ready(self.reopen_here(r, ctx))),
        }
    }
}

impl SessionManager {
    fn reopen_here(
        &mut self,
        r: ReOpen,
        ctx: &mut Context<Self>,
    ) -> Result<Opened, SessionRefused> {
        let _span = tracing::info_span!("node.reopen", runtime = %r.runtime).entered();
        if self
            .router
            .slots
            .get(&r.key)
            .is_some_and(|s| s.runtime.is_some())
        {
            return Err(refuse(
                ResponseCode::BadRequest,
                "this connection already has a session: re-open from a new connection",
            ));
        }
        let Some(key) = self.tokens.get(r.token.as_str()).cloned() else {
            return Err(unknown_token());
        };
        let runtime_ok = self
            .router
            .slots
            .get(&key)
            .is_some_and(|s| s.runtime.as_deref() == Some(r.runtime.as_str()));
        if !runtime_ok {
            return Err(unknown_token());
        }
        let session_identity = self.router.identity_of(&key);
        let presented = r.identity.as_ref().map(|a| &a.identity);
        if session_identity.as_ref() != presented {
            return Err(refuse(
                ResponseCode::Unauthorized,
                match session_identity {
                    Some(_) => "re-open needs a valid token of the session's own identity",
                    None => "this session is anonymous: re-open it without a token",
                },
            ));
        }
        let Some((_, fresh)) = self.router.slots.remove(&r.key) else {
            return Err(refuse(ResponseCode::InternalError, "unknown connection"));
        };
        let (Some(conn), Some(bursts), Some(queue), Some(kicker)) =
            (fresh.conn, fresh.bursts, fresh.queue, fresh.kicker)
        else {
            return Err(refuse(
                ResponseCode::InternalError,
                "connection already gone",
            ));
        };
        let Some(mut slot) = self.router.slots.get_mut(&key) else {
            return Err(unknown_token());
        };
        if let Some(old) = slot.kicker.take() {
            // the client reconnected before its old socket was noticed dead
            old.do_send(Kick {
                reason: "replaced by a newer connection".to_owned(),
            });
        }
        // frames buffered while away go first, before anything routed from now on
        let buffered = slot
            .buffer
            .get_mut()
            .map(GraceBuffer::take)
            .unwrap_or_default();
        for f in buffered {
            queue.force(f.len());
            conn.do_send(Outbound(f));
        }
        slot.conn = Some(conn);
        slot.bursts = Some(bursts);
        slot.queue = Some(queue);
        slot.conn_id = fresh.conn_id;
        slot.kicker = Some(kicker);
        slot.lost_since = None;
        drop(slot);
        self.router
            .stats
            .reopened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish("re-open", &r.runtime, None);
        if let Some(a) = &r.identity {
            self.set_credentials(&key, a, ctx);
        }
        Ok(Opened {
            token: r.token,
            identity: session_identity,
            key,
        })
    }
}

/// A session as the cluster records it (`token:<token>`).
#[derive(Debug)]
struct Recorded {
    node: String,
    key: SessionKey,
    runtime: String,
    identity: Option<Arc<str>>,
}

impl Recorded {
    fn parse(v: &str) -> Option<Recorded> {
        let mut parts = v.split(' ');
        let (node, key, runtime, identity) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        Some(Recorded {
            node: node.to_owned(),
            key: Arc::from(key),
            runtime: runtime.to_owned(),
            identity: (identity != "-").then(|| Arc::from(identity)),
        })
    }
}

impl SessionManager {
    /// `re-open` of a session another node holds (or held until it died): this
    /// node takes it over — its runtime URL, addresses and subscriptions — and
    /// tells the old node to drop it.
    fn reopen_from_cluster(
        &mut self,
        cluster: Arc<crate::cluster::ClusterNode>,
        r: ReOpen,
    ) -> ResponseActFuture<Self, Result<Opened, SessionRefused>> {
        if self
            .router
            .slots
            .get(&r.key)
            .is_none_or(|s| s.runtime.is_some())
        {
            return Box::pin(fut::ready(Err(refuse(
                ResponseCode::BadRequest,
                "this connection already has a session: re-open from a new connection",
            ))));
        }
        let c = cluster.clone();
        let token = r.token.clone();
        let lookup = async move {
            let unavailable = |e: crate::cluster::ClusterError| {
                refuse(
                    ResponseCode::ServiceUnavailable,
                    format!("cannot reach the cluster to re-open the session: {e}"),
                )
            };
            let v: Option<String> = c
                .store()
                .run(redis::cmd("GET").arg(c.key(&["token", &token])))
                .await
                .map_err(unavailable)?;
            let Some(rec) = v.as_deref().and_then(Recorded::parse) else {
                return Err(unknown_token());
            };
            let mut pipe = redis::pipe();
            pipe.cmd("SMEMBERS")
                .arg(c.key(&["sess", &rec.key, "addrs"]));
            pipe.cmd("SMEMBERS").arg(c.key(&["sess", &rec.key, "subs"]));
            let (addrs, subs): (Vec<String>, Vec<String>) =
                c.store().pipe(&pipe).await.map_err(unavailable)?;
            Ok((rec, addrs, subs))
        };
        Box::pin(lookup.into_actor(self).then(move |found, act, ctx| -> ResponseActFuture<Self, Result<Opened, SessionRefused>> {
            let adopted = found.and_then(|(rec, addrs, subs)| {
                act.adopt(&cluster, &r, &rec, ctx)
                    .map(|opened| (opened, rec, addrs, subs))
            });
            let (opened, rec, addrs, subs) = match adopted {
                Ok(x) => x,
                Err(e) => return Box::pin(fut::ready(Err(e))),
            };
            info!(runtime = %r.runtime, from = %rec.node, "re-open takes the session over from another node");
            let key = opened.key.clone();
            let addresses = act.allocation.send(AdoptAddresses {
                session: key.clone(),
                addresses: addrs.iter().map(|a| Arc::from(a.as_str())).collect(),
            });
            let subscriptions = act.subscriptions.send(AdoptSubscriptions {
                session: key.clone(),
                resources: subs,
            });
            let recorded =
                act.assert_in_cluster(&key, &r.token, &r.runtime, &[], rec.identity.as_deref());
            let old = rec.node.clone();
            let handover = async move {
                recorded.await;
                if let Ok(Err(e)) = addresses.await {
                    tracing::warn!(error = %e, "taking over a session's addresses failed");
                }
                let _ = subscriptions.await;
                if old != cluster.id() {
                    let c = crate::cluster::Control::HandOver {
                        node: old,
                        key: key.to_string(),
                    };
                    if let Err(e) = cluster.control(&c).await {
                        tracing::warn!(error = %e, "telling the old node of a hand-over failed");
                    }
                }
            };
            Box::pin(handover.into_actor(act).map(move |(), act, _| {
                act.router
                    .stats
                    .reopened
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                act.publish("re-open", &r.runtime, None);
                Ok(opened)
            }))
        }))
    }

    /// Binds the new connection of `r` to the session `rec` recorded in the cluster.
    fn adopt(
        &mut self,
        cluster: &crate::cluster::ClusterNode,
        r: &ReOpen,
        rec: &Recorded,
        ctx: &mut Context<Self>,
    ) -> Result<Opened, SessionRefused> {
        if rec.runtime != r.runtime || rec.node == cluster.id() {
            return Err(unknown_token());
        }
        let presented = r.identity.as_ref().map(|a| &a.identity);
        if rec.identity.as_ref() != presented {
            return Err(refuse(
                ResponseCode::Unauthorized,
                match rec.identity {
                    Some(_) => "re-open needs a valid token of the session's own identity",
                    None => "this session is anonymous: re-open it without a token",
                },
            ));
        }
        if self.router.slots.get(&rec.key).is_some() {
            return Err(refuse(
                ResponseCode::BadRequest,
                "this session is being re-opened on this node already",
            ));
        }
        if let Some(id) = &rec.identity {
            if !self.router.acquire_user(id, self.max_per_user) {
                return Err(refuse(
                    ResponseCode::TooManyRequests,
                    format!("{id} already holds {} sessions", self.max_per_user),
                ));
            }
        }
        let Some((_, fresh)) = self.router.slots.remove(&r.key) else {
            if let Some(id) = &rec.identity {
                self.router.release_user(id);
            }
            return Err(refuse(ResponseCode::InternalError, "unknown connection"));
        };
        let runtime: Arc<str> = Arc::from(r.runtime.as_str());
        let mut slot = fresh;
        slot.runtime = Some(runtime.clone());
        slot.identity = rec.identity.clone();
        self.router.slots.insert(rec.key.clone(), slot);
        self.router.runtimes.insert(runtime, rec.key.clone());
        let token: Arc<str> = Arc::from(r.token.as_str());
        self.tokens.insert(token.clone(), rec.key.clone());
        self.sessions.insert(
            rec.key.clone(),
            Held {
                token: Some(token),
                ..Held::default()
            },
        );
        if let Some(a) = &r.identity {
            self.set_credentials(&rec.key, a, ctx);
        }
        Ok(Opened {
            key: rec.key.clone(),
            token: r.token.clone(),
            identity: rec.identity.clone(),
        })
    }
}

impl Handler<HandedOver> for SessionManager {
    type Result = ();
    fn handle(&mut self, h: HandedOver, ctx: &mut Context<Self>) {
        if self.router.slots.get(&h.key).is_none() {
            return;
        }
        info!(session = %h.key, "the session was re-opened on another node, dropping it here");
        self.router.kick(&h.key, "re-opened on another node");
        let dropped = self.unbind(&h.key, true);
        ctx.spawn(dropped.into_actor(self));
    }
}

impl Handler<ReplacedElsewhere> for SessionManager {
    type Result = ();
    fn handle(&mut self, r: ReplacedElsewhere, ctx: &mut Context<Self>) {
        let Some(key) = self.router.session_of(&r.runtime) else {
            return;
        };
        info!(runtime = %r.runtime, "a new open on another node replaces the session here");
        self.router.kick(
            &key,
            "replaced by a new open of this runtime on another node",
        );
        let dropped = self.drop_session(
            &key,
            "close",
            Some("replaced by a new open on another node"),
        );
        ctx.spawn(dropped.into_actor(self));
    }
}

impl Handler<Close> for SessionManager {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, c: Close, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.drop_session(&c.key, "close", None))
    }
}

impl Handler<Lost> for SessionManager {
    type Result = ();
    fn handle(&mut self, l: Lost, ctx: &mut Context<Self>) {
        let opened = {
            let Some(mut slot) = self.router.slots.get_mut(&l.key) else {
                return;
            };
            if slot.conn_id != l.conn_id {
                // a newer connection already resumed this session
                return;
            }
            slot.conn = None;
            slot.bursts = None;
            slot.queue = None;
            slot.kicker = None;
            let since = Instant::now();
            slot.lost_since = Some(since);
            slot.runtime.clone().map(|rt| (rt, since))
        };
        let Some((runtime, since)) = opened else {
            // never opened: nothing worth keeping
            self.router.slots.remove(&l.key);
            return;
        };
        self.publish("lost", &runtime, Some(&l.reason));
        // a later re-open changes `lost_since`, which makes this timer a no-op
        let key = l.key;
        ctx.run_later(self.grace, move |_, ctx| {
            ctx.notify(GraceExpired { key, since });
        });
    }
}

impl Handler<GraceExpired> for SessionManager {
    type Result = ();
    fn handle(&mut self, g: GraceExpired, _: &mut Context<Self>) {
        let still_lost = self
            .router
            .slots
            .get(&g.key)
            .is_some_and(|s| s.lost_since == Some(g.since));
        if still_lost {
            actix::spawn(self.drop_session(&g.key, "close", Some("grace period expired")));
        }
    }
}
