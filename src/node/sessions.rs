//! Session Manager: open, re-open, close, loss and grace period of runtime sessions.
//!
//! Every WebSocket connection gets a fresh session key. `open` from a runtime URL to
//! `mn:/session` binds the runtime URL to the session (it then owns that URL and
//! everything under it) and answers `200 {runtimeToken}`: the key, a bearer secret.
//! A socket dropped without `close` keeps its session — addresses, subscriptions,
//! and up to `session.grace_buffer` frames sent to it — for
//! `session.grace_period_ms`; `re-open` with the token (in `body.runtimeToken`, or
//! as the last segment of `from`, Vert.x style) from a new connection resumes it and
//! flushes the buffered frames first. After the grace period, or on `close`,
//! everything is freed.
//!
//! This actor is the only writer of the router's `slots` and `runtimes` tables. It
//! publishes each lifecycle change (`open`, `re-open`, `close`, `lost`) as an
//! `update` to `domain://msg-node.<D>/session-events`, which anyone may subscribe to
//! through `/sm`, and logs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use hyperty_actors::address::{Address, AddressKind};
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use serde_json::json;
use tracing::info;

use super::allocation::{AddressAllocation, DropSession};
use super::outbound::OutboundQueue;
use super::router::{Evict, Kick, Outbound, Router, SessionKey, Slot};
use super::subscriptions::{DropSubscriptions, SubscriptionManager};

/// Why `open`/`re-open` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct SessionRefused {
    /// Response code.
    pub code: ResponseCode,
    /// Reason.
    pub description: String,
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
    /// The byte account of its outbound queue.
    pub queue: Arc<OutboundQueue>,
    /// How to close it.
    pub kicker: Recipient<Kick>,
}

/// `open` from `runtime`.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<SessionKey, SessionRefused>")]
pub struct Open {
    /// The connection's key.
    pub key: SessionKey,
    /// The runtime URL (`from` of the open).
    pub runtime: String,
    /// The authenticated user or device, if any.
    pub identity: Option<Arc<str>>,
}

/// `re-open` with a token from a new connection.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<SessionKey, SessionRefused>")]
pub struct ReOpen {
    /// The new connection's key.
    pub key: SessionKey,
    /// The runtime token of the session to resume.
    pub token: String,
    /// The runtime URL it claims.
    pub runtime: String,
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

#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct GraceExpired {
    key: SessionKey,
    since: Instant,
}

/// The session manager actor.
#[derive(Debug)]
pub struct SessionManager {
    router: Arc<Router>,
    allocation: Addr<AddressAllocation>,
    subscriptions: Addr<SubscriptionManager>,
    grace: Duration,
    max_per_user: usize,
    lifecycle: Option<Recipient<Lifecycle>>,
    write_deadline: Duration,
    /// Write progress of each connection with frames pending, as of the last sweep.
    stalls: std::collections::HashMap<SessionKey, (u64, Instant)>,
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
    /// A manager writing `router`'s session tables.
    pub fn new(
        router: Arc<Router>,
        allocation: Addr<AddressAllocation>,
        subscriptions: Addr<SubscriptionManager>,
        grace: Duration,
        max_per_user: usize,
        lifecycle: Option<Recipient<Lifecycle>>,
    ) -> Self {
        SessionManager {
            router,
            allocation,
            subscriptions,
            grace,
            max_per_user,
            lifecycle,
            write_deadline: Duration::from_secs(2),
            stalls: std::collections::HashMap::new(),
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
        let mut stalls = std::collections::HashMap::with_capacity(self.stalls.len());
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
        if let Some(l) = &self.lifecycle {
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
        let slot = self.router.slots.remove(key).map(|(_, s)| s);
        if let Some(id) = slot.as_ref().and_then(|s| s.identity.as_ref()) {
            self.router.release_user(id);
        }
        if let Some(rt) = slot.as_ref().and_then(|s| s.runtime.as_ref()) {
            self.router.runtimes.remove_if(rt, |_, k| k == key);
            self.publish(event, rt, reason);
        }
        let addresses = self.allocation.send(DropSession(key.clone()));
        let subscriptions = self.subscriptions.send(DropSubscriptions(key.clone()));
        async move {
            let _ = addresses.await;
            let _ = subscriptions.await;
        }
    }
}

impl Actor for SessionManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.write_deadline / 4).max(Duration::from_millis(10));
        ctx.run_interval(every, |act, _| act.sweep_stalls());
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
        self.router
            .slots
            .insert(c.key, Slot::live(c.conn_id, c.conn, c.queue, c.kicker));
    }
}

impl Handler<Open> for SessionManager {
    type Result = Result<SessionKey, SessionRefused>;
    fn handle(&mut self, o: Open, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::info_span!("node.open", runtime = %o.runtime).entered();
        match Address::check(&o.runtime) {
            Ok(AddressKind::Runtime) => {}
            _ => {
                return Err(refuse(
                    ResponseCode::BadRequest,
                    "open must come from a runtime URL (runtime:// or hyperty-runtime://)",
                ))
            }
        }
        if let Some(existing) = self
            .router
            .runtimes
            .get(o.runtime.as_str())
            .map(|k| k.clone())
        {
            if existing == o.key {
                return Ok(o.key);
            }
            return Err(refuse(
                ResponseCode::Forbidden,
                "this runtime URL has a session already; resume it with re-open and its runtimeToken",
            ));
        }
        if let Some(id) = &o.identity {
            if !self.router.acquire_user(id, self.max_per_user) {
                return Err(refuse(
                    ResponseCode::TooManyRequests,
                    format!("{id} already holds {} sessions", self.max_per_user),
                ));
            }
        }
        let runtime: Arc<str> = Arc::from(o.runtime.as_str());
        {
            let refused = match self.router.slots.get_mut(&o.key) {
                None => Some(refuse(ResponseCode::InternalError, "unknown connection")),
                Some(slot) if slot.runtime.is_some() => Some(refuse(
                    ResponseCode::BadRequest,
                    format!(
                        "this connection is already open for {}",
                        slot.runtime.as_deref().unwrap_or_default()
                    ),
                )),
                Some(mut slot) => {
                    slot.runtime = Some(runtime.clone());
                    slot.identity = o.identity.clone();
                    None
                }
            };
            if let Some(e) = refused {
                if let Some(id) = &o.identity {
                    self.router.release_user(id);
                }
                return Err(e);
            }
        }
        self.router.runtimes.insert(runtime, o.key.clone());
        self.router
            .stats
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish("open", &o.runtime, None);
        Ok(o.key)
    }
}

impl Handler<ReOpen> for SessionManager {
    type Result = Result<SessionKey, SessionRefused>;
    fn handle(&mut self, r: ReOpen, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::info_span!("node.reopen", runtime = %r.runtime).entered();
        let unknown = || {
            refuse(
                ResponseCode::Unauthorized,
                "Reconnection fail. Incorrect runtime token!",
            )
        };
        let token: SessionKey = Arc::from(r.token.as_str());
        if token == r.key {
            return Ok(token);
        }
        let runtime_ok = self
            .router
            .slots
            .get(&token)
            .is_some_and(|s| s.runtime.as_deref() == Some(r.runtime.as_str()));
        if !runtime_ok {
            return Err(unknown());
        }
        let Some((_, fresh)) = self.router.slots.remove(&r.key) else {
            return Err(refuse(ResponseCode::InternalError, "unknown connection"));
        };
        let (Some(conn), Some(queue), Some(kicker)) = (fresh.conn, fresh.queue, fresh.kicker)
        else {
            return Err(refuse(
                ResponseCode::InternalError,
                "connection already gone",
            ));
        };
        let Some(mut slot) = self.router.slots.get_mut(&token) else {
            return Err(unknown());
        };
        if let Some(old) = slot.kicker.take() {
            // the client reconnected before its old socket was noticed dead
            old.do_send(Kick {
                reason: "replaced by a newer connection".to_owned(),
            });
        }
        // frames buffered while away go first, before anything routed from now on
        let buffered: Vec<_> = slot
            .buffer
            .get_mut()
            .map(|b| b.drain(..).collect())
            .unwrap_or_default();
        for f in buffered {
            queue.force(f.len());
            conn.do_send(Outbound(f));
        }
        slot.conn = Some(conn);
        slot.queue = Some(queue);
        slot.conn_id = fresh.conn_id;
        slot.kicker = Some(kicker);
        slot.lost_since = None;
        slot.kicked
            .store(false, std::sync::atomic::Ordering::Relaxed);
        drop(slot);
        self.router
            .stats
            .reopened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish("re-open", &r.runtime, None);
        Ok(token)
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
