//! The session core: the node side of one runtime's session, whatever carries it.
//!
//! A transport (raw WebSocket in [`ws`](super::ws), HTTP POST + long-poll in
//! [`http`](super::http), Socket.IO in [`socketio`](super::socketio)) owns one
//! actor per connection, unframes the client's reTHINK messages and hands each
//! one, as text, to [`on_text`]. Everything a session does with a frame happens
//! here, once: the routing header is checked (400), the rate limit applies (429),
//! `mn:/session` opens, re-opens, renews and closes the session (authentication
//! with a bearer ID token or device token, 401), the sender must own `from` (403,
//! or an unheld stub URL of this domain is bound on first use), reserved addresses
//! are refused, node services ([`services`](super::services)) answer, the node's
//! PEP ([`policy`](super::policy)) decides, and everything else goes through the
//! shared [`Router`](crate::node::router::Router) straight into the recipients'
//! mailboxes. Refusals are answered by [`refusal`](super::refusal).
//!
//! The transport gives the core three things through [`SessionHost`]: the
//! [`SessionCore`] state, a way to write one reTHINK frame back to its client, and
//! a way to end the connection. Routed frames reach the transport's actor as
//! [`Outbound`](crate::node::router::Outbound) in its mailbox, charged to its
//! [`OutboundQueue`]; the transport discharges them as it hands them to its client.
//!
//! Flow control: when a recipient's queue is congested the session pauses its
//! [`Gate`] until that queue drains; the transport stops reading its client while
//! the gate is closed. A connection with `limits.abuse_threshold` refusals within
//! `limits.abuse_window_ms` is ended, and one that opens no session within
//! `session.open_timeout_ms` too. A connection that ends without a reTHINK `close`
//! leaves its session to the grace period (see
//! [`SessionManager`](crate::node::sessions::SessionManager)).

use std::sync::Arc;
use std::time::Instant;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytestring::ByteString;
use hyperty_actors::address::Address;
use hyperty_actors::message::{Message, MessageType, ParseError, ResponseCode, To};
use hyperty_actors::policy::domain_of;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::config::AuthMode;
use crate::identity::TokenUse;
use crate::node::frame::{may_ask_for_ack, stamped, FrameId, Header, Partial};
use crate::node::metrics::SAMPLE_EVERY;
use crate::node::outbound::OutboundQueue;
use crate::node::rights::stub_url;
use crate::node::router::{Kick, Outbound, OutboundBurst, RouteMemo, Routed, Service, SessionKey};
use crate::node::sessions::{
    Authenticated, BindStub, Close, Connected, Lost, Open, Opened, ReOpen, Renew, SessionRefused,
};
use crate::node::NodeState;
use crate::server::inbound::{Admission, Gate, Refusal};
use crate::server::policy::{permits_memo, PepMemo};
use crate::server::refusal::{error_frame, refusal_answer};
use crate::server::services::{answer_service, answer_text, full_message, ServiceCaller};

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh connection id (runtime sessions and federation links share the count).
pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// How a transport's connection ends.
#[derive(Debug)]
pub(crate) enum End {
    /// The node refuses the connection (unauthorised, abusive, no open in time,
    /// kicked): the reason goes to the client in that transport's form.
    Refused(String),
    /// The client closed its session with a reTHINK `close`, answered already.
    Closed,
}

/// What a transport's connection actor gives the session core.
pub(crate) trait SessionHost: Actor + Sized {
    /// The session state.
    fn core(&mut self) -> &mut SessionCore;
    /// The session state, read only.
    fn core_ref(&self) -> &SessionCore;
    /// Writes one reTHINK frame (an answer of the node) to the client.
    fn write(&mut self, ctx: &mut Self::Context, frame: String);
    /// Ends the connection.
    fn end(&mut self, ctx: &mut Self::Context, end: End);
}

/// The transport-independent state of one connection's session.
pub(crate) struct SessionCore {
    pub(crate) node: NodeState,
    pub(crate) key: SessionKey,
    pub(crate) conn_id: u64,
    pub(crate) runtime: Option<Arc<str>>,
    /// The authenticated identity and its JSON form, spliced into every frame the
    /// session sends as `body.assertedIdentity`.
    pub(crate) identity: Option<(Arc<str>, String)>,
    /// When the client was last heard of, as of the last heartbeat tick; `heard`
    /// says whether anything arrived since (cheaper than a clock read per frame).
    pub(crate) last_heard: Instant,
    pub(crate) heard: bool,
    /// The session was closed with a reTHINK `close` (nothing is left to the grace
    /// period).
    pub(crate) closed: bool,
    pub(crate) stop_reason: &'static str,
    /// Frames seen (one in [`SAMPLE_EVERY`] is timed), and when the one being
    /// timed arrived.
    tick: u32,
    parsed: Option<Instant>,
    pub(crate) peer: String,
    pub(crate) ip: Option<std::net::IpAddr>,
    pub(crate) admission: Admission,
    pub(crate) gate: Arc<Gate>,
    pub(crate) queue: Arc<OutboundQueue>,
    /// How the last frame handed to [`on_text`] was refused, if it was (for
    /// transports that acknowledge frames; the transport resets it).
    pub(crate) refused: Option<(ResponseCode, String)>,
    /// The session's last ownership check and recipient lookup.
    routes: RouteMemo,
    /// The session's last policy decision.
    pep: PepMemo,
}

impl std::fmt::Debug for SessionCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCore")
            .field("runtime", &self.runtime)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl SessionCore {
    /// The state of a fresh connection from `peer` (at `ip`), whose frames are
    /// charged to `queue`.
    pub(crate) fn new(
        node: NodeState,
        peer: String,
        ip: Option<std::net::IpAddr>,
        queue: Arc<OutboundQueue>,
    ) -> SessionCore {
        SessionCore {
            ip,
            admission: Admission::new(&node.config.limits),
            gate: Arc::new(Gate::default()),
            queue,
            key: Arc::from(uuid::Uuid::new_v4().to_string()),
            conn_id: next_conn_id(),
            runtime: None,
            identity: None,
            last_heard: Instant::now(),
            heard: false,
            closed: false,
            stop_reason: "socket closed",
            tick: 0,
            parsed: None,
            refused: None,
            routes: RouteMemo::default(),
            pep: PepMemo::default(),
            peer,
            node,
        }
    }

    /// Whether the client was silent for longer than `timeout` at this heartbeat
    /// tick.
    pub(crate) fn silent_for(&mut self, timeout: std::time::Duration) -> bool {
        if std::mem::take(&mut self.heard) {
            self.last_heard = Instant::now();
        }
        self.last_heard.elapsed() > timeout
    }

    /// The connection has ended: senders waiting for its queue go on, later frames
    /// go to the grace buffer (unless the session was closed).
    pub(crate) fn stopped(&mut self) {
        if self.admission.is_abusive() {
            self.stop_reason = "abusive";
        }
        self.queue.close();
        if let Some(ip) = self.ip {
            self.node.router.disconnect_ip(ip);
        }
        if !self.closed {
            self.node.sessions.do_send(Lost {
                key: self.key.clone(),
                conn_id: self.conn_id,
                reason: self.stop_reason.to_owned(),
            });
        }
    }
}

/// Admits a new connection from `ip` to the node's session and per-address limits:
/// `Err((status, description))` when it is refused.
pub(crate) fn admit_connection(
    node: &NodeState,
    ip: Option<std::net::IpAddr>,
) -> Result<(), (u16, &'static str)> {
    if node.router.session_count() >= node.config.session.max_sessions {
        warn!("session limit reached, refusing a connection");
        return Err((503, "session limit reached"));
    }
    if let Some(ip) = ip {
        if !node
            .router
            .connect_ip(ip, node.config.limits.max_sessions_per_ip)
        {
            warn!(%ip, "per-address connection limit reached");
            return Err((429, "too many connections from this address"));
        }
    }
    Ok(())
}

/// The connection's actor started: its session slot is registered (frames routed to
/// it reach `conn`), and it is ended if it opens no session in time.
pub(crate) fn started<A>(act: &mut A, ctx: &mut A::Context)
where
    A: SessionHost + Handler<Outbound> + Handler<OutboundBurst> + Handler<Kick>,
    A::Context: AsyncContext<A>
        + ToEnvelope<A, Outbound>
        + ToEnvelope<A, OutboundBurst>
        + ToEnvelope<A, Kick>,
{
    let core = act.core_ref();
    core.node.sessions.do_send(Connected {
        key: core.key.clone(),
        conn_id: core.conn_id,
        conn: ctx.address().recipient(),
        bursts: ctx.address().recipient(),
        queue: core.queue.clone(),
        kicker: ctx.address().recipient(),
    });
    ctx.run_later(
        core.node.config.session.open_timeout(),
        |act: &mut A, ctx| {
            if act.core_ref().runtime.is_none() {
                act.core().stop_reason = "no open in time";
                act.end(
                    ctx,
                    End::Refused("open a session (open to mn:/session) first".to_owned()),
                );
            }
        },
    );
}

/// The node tells the connection to go (evicted, session replaced, expired).
pub(crate) fn kicked<A: SessionHost>(act: &mut A, ctx: &mut A::Context, k: Kick) {
    warn!(peer = %act.core_ref().peer, reason = %k.reason, "closing session");
    act.core().stop_reason = "closed by the node";
    act.end(ctx, End::Refused(k.reason));
}

fn reply<A: SessionHost>(act: &mut A, ctx: &mut A::Context, msg: &Message, id: &FrameId<'_>) {
    act.core_ref().node.router.metrics.answered(msg.body.code);
    act.write(ctx, answer_text(msg, id));
}

fn bad_request<A: SessionHost>(act: &mut A, ctx: &mut A::Context, e: &ParseError, p: &Partial) {
    act.core().refused = Some((ResponseCode::BadRequest, e.to_string()));
    if count_refusal(act, ctx) {
        return;
    }
    let core = act.core_ref();
    core.node
        .router
        .stats
        .bad_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    debug!(peer = %core.peer, error = %e, "bad frame");
    core.node
        .router
        .metrics
        .refused(ResponseCode::BadRequest, true);
    let frame = error_frame(
        p.id.clone(),
        p.to.as_deref().unwrap_or("mn:/validator"),
        p.from.as_deref(),
        ResponseCode::BadRequest,
        &e.to_string(),
    );
    act.write(ctx, frame);
}

/// Answers a refused frame (if its sender is to be told) and counts the refusal.
pub(crate) fn refuse<A: SessionHost>(
    act: &mut A,
    ctx: &mut A::Context,
    h: &Header<'_>,
    code: ResponseCode,
    description: &str,
) {
    act.core().refused = Some((code, description.to_owned()));
    let core = act.core_ref();
    let mut verdict = Refusal::Counted;
    let answer = refusal_answer(&core.node, h, code, description, || {
        verdict = core.admission.refuse();
        verdict != Refusal::Counted
    });
    if abusive(act, ctx, verdict) {
        return;
    }
    if let Some(answer) = answer {
        act.write(ctx, answer);
    }
}

/// One reTHINK frame from the client. A frame flagged `"body": {"ack": true}` is
/// acknowledged on every transport (see [`on_text_then`]) with [`ack_frame`].
pub(crate) fn on_text<A>(act: &mut A, text: ByteString, ctx: &mut A::Context)
where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    // the substring search keeps unflagged frames to one header parse
    let ack = match may_ask_for_ack(&text).then(|| Header::parse(&text)) {
        Some(Ok(h)) if h.ack_requested(&text) => Some((h.id.into_owned(), h.from.into_owned())),
        _ => None,
    };
    let Some((id, from)) = ack else {
        return route_text(act, text, ctx);
    };
    on_text_then(act, text, ctx, move |act, ctx, refused| {
        let frame = ack_frame(act.core_ref().node.router.domain(), &id, &from, refused);
        act.write(ctx, frame);
    });
}

/// One frame from the client, then `then` with how it was refused (`None`: it was
/// queued to every recipient), once everything it set off on the node is done: a
/// stub binding, a node service's answer, whatever those set off in turn. The
/// actor's waits run last-in first-out, so `then` waits beneath them.
pub(crate) fn on_text_then<A, F>(act: &mut A, text: ByteString, ctx: &mut A::Context, then: F)
where
    A: SessionHost,
    A::Context: AsyncContext<A>,
    F: FnOnce(&mut A, &mut A::Context, Option<(ResponseCode, String)>) + 'static,
{
    act.core().refused = None;
    ctx.wait(actix::fut::ready(()).map(move |(), act: &mut A, ctx| {
        let refused = act.core().refused.take();
        then(act, ctx, refused);
    }));
    route_text(act, text, ctx);
}

/// The acknowledgement of frame `id` from `from`: a reTHINK response from the node
/// (`domain://msg-node.<D>`) whose body says `"ack": true` and the frame's fate.
pub(crate) fn ack_frame(
    domain: &str,
    id: &FrameId<'_>,
    from: &str,
    refused: Option<(ResponseCode, String)>,
) -> String {
    let mut body = ack_value(refused);
    body["ack"] = Value::Bool(true);
    json!({
        "id": id.to_json(),
        "type": "response",
        "from": format!("domain://msg-node.{domain}"),
        "to": from,
        "body": body,
    })
    .to_string()
}

/// What an acknowledgement says of a frame's fate: `{"code":200}`, or the code and
/// description it was refused with.
pub(crate) fn ack_value(refused: Option<(ResponseCode, String)>) -> Value {
    match refused {
        None => json!({"code": ResponseCode::Ok}),
        Some((code, description)) => json!({"code": code, "description": description}),
    }
}

/// Routes one frame from the client (see [`on_text`]).
fn route_text<A>(act: &mut A, text: ByteString, ctx: &mut A::Context)
where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    let core = act.core();
    core.parsed = None;
    if core.node.router.metrics.enabled() {
        if core.tick % SAMPLE_EVERY == 0 {
            core.parsed = Some(Instant::now());
        }
        core.tick = core.tick.wrapping_add(1);
    }
    let core = act.core_ref();
    let router = &core.node.router;
    router
        .stats
        .frames_in
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let h = match Header::parse(&text) {
        Ok(h) => {
            router.metrics.frame_in(Some(&h.kind));
            h
        }
        Err((e, partial)) => {
            router.metrics.frame_in(None);
            // a malformed frame costs its sender a token like any other
            let _ = core.admission.check();
            return bad_request(act, ctx, &e, &partial);
        }
    };
    let _span = tracing::trace_span!("node.frame", id = %h.id, kind = %h.kind, from = %h.loggable_from(), to = %h.to.first()).entered();
    if !core.admission.check() {
        return refuse(
            act,
            ctx,
            &h,
            ResponseCode::TooManyRequests,
            "rate limit exceeded, slow down",
        );
    }
    let service = router.service(h.to.first());
    if service == Some(Service::Session) {
        return session_control(act, &text, ctx);
    }
    if core.runtime.is_none() {
        return refuse(
            act,
            ctx,
            &h,
            ResponseCode::Forbidden,
            "open the session first (open to mn:/session)",
        );
    }
    let core = act.core();
    let router = &core.node.router;
    if !router.owns_memo(&mut core.routes, &core.key, &h.from) {
        if router.owner_of(&h.from).is_none() && stub_url(&h.from, router.domain()).is_some() {
            let from = h.from.to_string();
            return bind_stub_then_route(act, from, service, text, ctx);
        }
        let why = format!("from address {} is not owned by this session", h.from);
        return refuse(act, ctx, &h, ResponseCode::Forbidden, &why);
    }
    route_owned(act, &h, service, &text, ctx);
}

/// A frame from an unheld stub URL of this domain: the URL is bound to this
/// session (first use), then the frame goes on as any other.
fn bind_stub_then_route<A>(
    act: &mut A,
    from: String,
    service: Option<Service>,
    text: ByteString,
    ctx: &mut A::Context,
) where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    let core = act.core_ref();
    let bind = core.node.sessions.send(BindStub {
        key: core.key.clone(),
        from,
    });
    ctx.wait(bind.into_actor(act).map(move |r, act, ctx| {
        let Ok(h) = Header::parse(&text) else { return };
        match r.unwrap_or_else(|_| Err(gone())) {
            Ok(()) => route_owned(act, &h, service, &text, ctx),
            Err(e) => refuse(act, ctx, &h, e.code, &e.description),
        }
    }));
}

/// Routes a frame whose sender this session owns; `service` is the node service
/// its first recipient names, if any.
fn route_owned<A>(
    act: &mut A,
    h: &Header<'_>,
    service: Option<Service>,
    text: &ByteString,
    ctx: &mut A::Context,
) where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    let core = act.core_ref();
    let router = &core.node.router;
    if let Some(t) =
        h.to.iter()
            .find(|t| router.is_reserved(t) && router.service(t).is_none())
    {
        let why = format!("{t} is reserved to the node");
        return refuse(act, ctx, h, ResponseCode::Forbidden, &why);
    }
    if let Some(s) = service {
        return service_request(act, s, text, ctx);
    }
    let core = act.core();
    let user = core.identity.as_ref().map(|(i, _)| &**i);
    let permitted = permits_memo(&core.node, h, user, user.map(domain_of), &mut core.pep);
    let Some(stamp) = permitted else {
        return refuse(act, ctx, h, ResponseCode::Forbidden, "Blocked by policy");
    };
    let core = act.core_ref();
    // the client's own assertedIdentity never goes through; the node's does,
    // unless a policy's strip-identity obligation says otherwise
    let identity = core
        .identity
        .as_ref()
        .filter(|_| stamp)
        .map(|(_, json)| json.as_str());
    if matches!(h.kind, MessageType::Subscribe | MessageType::Unsubscribe) {
        mirror_foreign_subscription(core, h, text);
    }
    let stamped_frame = stamped(text, h.body, identity).map(ByteString::from);
    let frame = stamped_frame.as_ref().unwrap_or(text);
    let core = act.core();
    let parsed = core.parsed.take();
    let router = &core.node.router;
    if parsed.is_some() {
        router.metrics.routing(h);
    }
    let routed = if h.kind == MessageType::Event {
        router.route_event(&h.to, frame)
    } else {
        router.route_memo(&h.to, frame, &mut core.routes)
    };
    let core = act.core_ref();
    let router = &core.node.router;
    if h.kind == MessageType::Response {
        if let Some(c) = router.cluster() {
            c.answered(h.to.first(), &h.id.to_json());
        }
    }
    // recipients no local session owns may live on another node of the cluster
    let forwarded = router.forward(
        &h.to,
        frame,
        Some(&core.key),
        matches!(routed, Routed::NoRoute(_)),
    );
    let metrics = &router.metrics;
    if let Routed::Delivered {
        queued, buffered, ..
    } = &routed
    {
        metrics.frames_out(&h.kind, queued + buffered);
    }
    match parsed {
        Some(t0) => metrics.routed(h, t0),
        None if h.kind == MessageType::Response && metrics.enabled() => metrics.response(h),
        None => {}
    }
    match routed {
        Routed::Delivered {
            queued: 0,
            buffered: 0,
            ..
        } => match unlinked_domain(core, h.to.first()) {
            Some(domain) => {
                let why = format!(
                    "no link to {domain}: as many peer domains as allowed are linked \
                     (federation.max_peers)"
                );
                refuse(act, ctx, h, ResponseCode::ServiceUnavailable, &why)
            }
            None => refuse(
                act,
                ctx,
                h,
                ResponseCode::RequestTimeout,
                "recipient temporarily unavailable",
            ),
        },
        Routed::Delivered {
            congested: Some(q), ..
        } => slow_down(act, q, ctx),
        Routed::Delivered { .. } => {}
        Routed::Service(s) => service_request(act, s, text, ctx),
        // the forwarder answers if no node takes it
        Routed::NoRoute(_) if forwarded => {}
        Routed::NoRoute(t) => {
            let why = format!("no route to {t}");
            refuse(act, ctx, h, ResponseCode::NotFound, &why)
        }
    }
}

/// The domain of `to` when it is another domain's and this node has no link
/// to it (the peer table is full).
fn unlinked_domain<'a>(core: &SessionCore, to: &'a str) -> Option<&'a str> {
    let domain = core.node.router.foreign_domain(to)?;
    let federation = core.node.federation()?;
    federation.link_info(domain).is_none().then_some(domain)
}

/// A `subscribe`/`unsubscribe` to another domain's `/sm` goes there; its
/// resources are routed here to this session too (see
/// [`Mirror`](crate::node::subscriptions::Mirror)).
fn mirror_foreign_subscription(core: &SessionCore, h: &Header<'_>, text: &str) {
    let to = h.to.first();
    let Some(domain) = core.node.router.foreign_domain(to) else {
        return;
    };
    if to != format!("domain://msg-node.{domain}/sm") {
        return;
    }
    if let Ok(msg) = Message::parse(text) {
        core.node
            .subscriptions
            .do_send(crate::node::subscriptions::Mirror {
                session: core.key.clone(),
                msg,
                domain: domain.to_owned(),
            });
    }
}

/// 400 to a frame that is no reTHINK message at all (binary, not UTF-8, not a
/// message of the transport's dialect).
pub(crate) fn refuse_frame<A: SessionHost>(act: &mut A, ctx: &mut A::Context, description: &str) {
    act.core().refused = Some((ResponseCode::BadRequest, description.to_owned()));
    act.core_ref()
        .node
        .router
        .stats
        .bad_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let answered = !count_refusal(act, ctx);
    act.core_ref()
        .node
        .router
        .metrics
        .refused(ResponseCode::BadRequest, answered);
    if answered {
        let frame = error_frame(
            None,
            "mn:/validator",
            None,
            ResponseCode::BadRequest,
            description,
        );
        act.write(ctx, frame);
    }
}

/// Counts a refused frame; past `limits.abuse_threshold` refusals within
/// `limits.abuse_window_ms` the connection is ended (true: it is).
pub(crate) fn count_refusal<A: SessionHost>(act: &mut A, ctx: &mut A::Context) -> bool {
    let verdict = act.core_ref().admission.refuse();
    abusive(act, ctx, verdict)
}

/// Ends a connection this refusal made abusive; true if it is (or already was).
fn abusive<A: SessionHost>(act: &mut A, ctx: &mut A::Context, verdict: Refusal) -> bool {
    match verdict {
        Refusal::Counted => return false,
        Refusal::Abusive => return true,
        Refusal::NowAbusive => {}
    }
    let core = act.core_ref();
    core.node
        .router
        .stats
        .abusive
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    warn!(peer = %core.peer, runtime = ?core.runtime, "closing an abusive connection");
    act.end(
        ctx,
        End::Refused("rate limit exceeded: too many refused frames".to_owned()),
    );
    true
}

/// Frames that are no reTHINK messages (binary, pings, continuations) count against
/// the rate too; over it they are dropped and count as refusals. True if admitted.
pub(crate) fn admit<A: SessionHost>(act: &mut A, ctx: &mut A::Context) -> bool {
    let core = act.core_ref();
    if core.admission.check() {
        return true;
    }
    core.node
        .router
        .stats
        .rate_limited
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    count_refusal(act, ctx);
    false
}

/// A recipient's queue is congested: stop reading this client until it drains
/// (or the recipient is evicted at its write deadline).
fn slow_down<A>(act: &mut A, queue: Arc<OutboundQueue>, ctx: &mut A::Context)
where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    let core = act.core_ref();
    let deadline = core.node.config.session.write_deadline();
    let Some(hold) = core.gate.hold(queue, deadline) else {
        return;
    };
    core.node
        .router
        .stats
        .throttled
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ctx.spawn(actix::fut::wrap_future(hold));
}

/// The whole message of a frame for a node service, with the id it came with
/// (a string id is carried aside: [`Message`] ids are numbers). A client's
/// `body.assertedIdentity` is dropped. Malformed → 400, `None`.
fn parse_full<A: SessionHost>(
    act: &mut A,
    text: &str,
    ctx: &mut A::Context,
) -> Option<(Message, FrameId<'static>)> {
    let h = match Header::parse(text) {
        Ok(h) => h,
        Err((e, p)) => {
            bad_request(act, ctx, &e, &p);
            return None;
        }
    };
    match full_message(text, &h) {
        Ok(m) => Some((m, h.id.into_owned())),
        Err(e) => {
            let p = Partial {
                id: Some(h.id.to_json()),
                from: Some(h.from.into_owned()),
                to: Some(h.to.first().to_owned()),
            };
            bad_request(act, ctx, &e, &p);
            None
        }
    }
}

fn service_request<A>(act: &mut A, service: Service, text: &str, ctx: &mut A::Context)
where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    let Some((msg, id)) = parse_full(act, text, ctx) else {
        return;
    };
    let core = act.core_ref();
    if msg.is_response() {
        // node services never asked anything: a response to them is dropped
        core.node
            .router
            .stats
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    if !matches!(msg.to, To::One(_)) {
        let r = msg.reply_error(
            ResponseCode::BadRequest,
            "node services take a single recipient",
        );
        return reply(act, ctx, &r, &id);
    }
    let caller = ServiceCaller {
        key: core.key.clone(),
        identity: core.identity.as_ref().map(|(i, _)| i.clone()),
        runtime: core.runtime.clone(),
        ip: core.ip,
    };
    let Some(answer) = answer_service(&core.node, service, msg, caller) else {
        return;
    };
    // control-plane requests are answered in order: nothing else from this
    // client is read until the answer is written
    ctx.wait(
        answer
            .into_actor(act)
            .map(move |resp, act, ctx| reply(act, ctx, &resp, &id)),
    );
}

fn session_control<A>(act: &mut A, text: &str, ctx: &mut A::Context)
where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    let Some((msg, id)) = parse_full(act, text, ctx) else {
        return;
    };
    // a Vert.x style re-open carries the runtime token in `from`: never logged
    let runtime = match msg.kind {
        MessageType::ReOpen => reopen_token(&msg).map(|(_, rt)| rt).unwrap_or_default(),
        _ => msg.from.to_string(),
    };
    let _span = tracing::info_span!("node.session", kind = %msg.kind, runtime = %runtime).entered();
    let core = act.core_ref();
    match msg.kind {
        MessageType::Open => {
            let identity = match authenticate(core, &msg) {
                Ok(identity) => identity,
                Err(why) => return unauthorised(act, ctx, &msg, &id, &runtime, &why),
            };
            let stubs = match announced_stubs(&msg) {
                Ok(s) => s,
                Err(why) => {
                    let r = msg.reply_error(ResponseCode::BadRequest, why);
                    return reply(act, ctx, &r, &id);
                }
            };
            let f = core.node.sessions.send(Open {
                key: core.key.clone(),
                runtime: msg.from.to_string(),
                stubs,
                identity,
            });
            ctx.wait(f.into_actor(act).map(move |r, act, ctx| {
                let resp = match r.unwrap_or_else(|_| Err(gone())) {
                    Ok(opened) => {
                        let core = act.core();
                        core.runtime = Some(Arc::from(msg.from.as_str()));
                        core.identity = opened.identity.clone().map(stamped_identity);
                        token_reply(&msg, &opened)
                    }
                    Err(e) => msg.reply_error(e.code, e.description),
                };
                reply(act, ctx, &resp, &id);
            }));
        }
        MessageType::ReOpen => {
            if core.runtime.is_some() {
                let r = msg.reply_error(
                    ResponseCode::BadRequest,
                    "this connection already has a session: re-open from a new connection",
                );
                return reply(act, ctx, &r, &id);
            }
            let (token, runtime) = match reopen_token(&msg) {
                Some(t) => t,
                None => {
                    let r = msg.reply_error(
                        ResponseCode::BadRequest,
                        "re-open needs body.runtimeToken (or from = <runtimeURL>/<token>)",
                    );
                    return reply(act, ctx, &r, &id);
                }
            };
            let identity = match credentials(core, &msg, &runtime) {
                Ok(identity) => identity,
                Err(why) => return unauthorised(act, ctx, &msg, &id, &runtime, &why),
            };
            let f = core.node.sessions.send(ReOpen {
                key: core.key.clone(),
                token,
                runtime: runtime.clone(),
                identity,
            });
            ctx.wait(f.into_actor(act).map(move |r, act, ctx| {
                let resp = match r.unwrap_or_else(|_| Err(gone())) {
                    Ok(opened) => {
                        let core = act.core();
                        core.key = opened.key.clone();
                        core.runtime = Some(Arc::from(runtime.as_str()));
                        core.identity = opened.identity.clone().map(stamped_identity);
                        token_reply(&msg, &opened)
                    }
                    Err(e) => msg.reply_error(e.code, e.description),
                };
                reply(act, ctx, &resp, &id);
            }));
        }
        MessageType::Update if core.runtime.is_some() => renew(act, msg, id, ctx),
        MessageType::Close => {
            let f = core.node.sessions.send(Close {
                key: core.key.clone(),
            });
            act.core().closed = true;
            // everything is freed before the 200 goes out
            ctx.wait(f.into_actor(act).map(move |_, act, ctx| {
                reply(act, ctx, &msg.reply(ResponseCode::Ok), &id);
                act.end(ctx, End::Closed);
            }));
        }
        MessageType::Ping => reply(act, ctx, &msg.reply(ResponseCode::Ok), &id),
        _ => {
            let r = msg.reply_error(
                ResponseCode::BadRequest,
                format!(
                    "mn:/session takes open, re-open, update (token renewal) and close, not {}",
                    msg.kind
                ),
            );
            reply(act, ctx, &r, &id);
        }
    }
}

/// `update` to `mn:/session` with a fresh `body.idToken` (or device token) of
/// the session's identity: the session lives on until the new expiry.
fn renew<A>(act: &mut A, msg: Message, id: FrameId<'static>, ctx: &mut A::Context)
where
    A: SessionHost,
    A::Context: AsyncContext<A>,
{
    let core = act.core_ref();
    let runtime = core.runtime.as_deref().unwrap_or_default().to_owned();
    let identity = match credentials(core, &msg, &runtime) {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            let r = msg.reply_error(
                ResponseCode::BadRequest,
                "renew the session with body.idToken",
            );
            return reply(act, ctx, &r, &id);
        }
        Err(why) => {
            let r = msg.reply_error(ResponseCode::Unauthorized, why);
            return reply(act, ctx, &r, &id);
        }
    };
    let expires = identity.expires;
    let f = core.node.sessions.send(Renew {
        key: core.key.clone(),
        identity,
    });
    ctx.wait(f.into_actor(act).map(move |r, act, ctx| {
        let resp = match r.unwrap_or_else(|_| Err(gone())) {
            Ok(()) => msg.reply_value(ResponseCode::Ok, json!({ "expires": expires })),
            Err(e) => msg.reply_error(e.code, e.description),
        };
        reply(act, ctx, &resp, &id);
    }));
}

/// Checks the credentials of an `open`: an ID token (a user) or a device token
/// (the runtime itself, whose URL must then be the token's subject), in
/// `body.idToken`, `body.token` or `body.accessToken`. Without one, the session
/// is anonymous if `auth.mode` is `optional`.
fn authenticate(core: &SessionCore, msg: &Message) -> Result<Option<Authenticated>, String> {
    match credentials(core, msg, msg.from.as_str())? {
        Some(a) => Ok(Some(a)),
        None => match core.node.config.auth.mode {
            AuthMode::Optional => Ok(None),
            AuthMode::Required => Err("authentication required: open with body.idToken".to_owned()),
        },
    }
}

/// The identity proven by the token in `msg`, if it carries one, for a session
/// of `runtime`.
fn credentials(
    core: &SessionCore,
    msg: &Message,
    runtime: &str,
) -> Result<Option<Authenticated>, String> {
    let token = ["idToken", "token", "accessToken"]
        .iter()
        .find_map(|k| msg.body.extra.get(*k))
        .map(|t| t.as_str().ok_or("the token must be a string"))
        .transpose()?;
    let Some(token) = token else {
        return Ok(None);
    };
    let claims = core
        .node
        .verifier
        .verify_token(token)
        .map_err(|e| e.to_string())?;
    if claims.token_use == TokenUse::Device && claims.sub != runtime {
        return Err(format!(
            "this device token is for {}, not {runtime}",
            claims.sub
        ));
    }
    Ok(Some(Authenticated {
        identity: Arc::from(claims.sub.as_str()),
        expires: claims.exp,
        issued_at: claims.iat,
        device: claims.device.as_deref().map(Arc::from),
    }))
}

/// 401 to the `open`, then the connection ends.
fn unauthorised<A: SessionHost>(
    act: &mut A,
    ctx: &mut A::Context,
    msg: &Message,
    id: &FrameId<'_>,
    runtime: &str,
    why: &str,
) {
    let core = act.core_ref();
    warn!(peer = %core.peer, runtime, reason = why, "open refused");
    core.node
        .router
        .stats
        .unauthorised
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    reply(
        act,
        ctx,
        &msg.reply_error(ResponseCode::Unauthorized, why),
        id,
    );
    act.core().stop_reason = "unauthorised";
    act.end(ctx, End::Refused("unauthorised".to_owned()));
}

/// The identity with its JSON form, ready to be spliced into frames.
fn stamped_identity(identity: Arc<str>) -> (Arc<str>, String) {
    let json = Value::String(identity.to_string()).to_string();
    (identity, json)
}

fn gone() -> SessionRefused {
    SessionRefused {
        code: ResponseCode::InternalError,
        description: "session manager unavailable".to_owned(),
    }
}

fn token_reply(msg: &Message, opened: &Opened) -> Message {
    let mut r = msg.reply(ResponseCode::Ok);
    r.body.extra.insert(
        "runtimeToken".to_owned(),
        Value::String(opened.token.clone()),
    );
    r
}

/// Stub URLs announced in an `open`'s `body.stubURL` (a string or a list).
fn announced_stubs(msg: &Message) -> Result<Vec<String>, String> {
    match msg.body.extra.get("stubURL") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "body.stubURL must be a URL or a list of URLs".to_owned()),
        Some(_) => Err("body.stubURL must be a URL or a list of URLs".to_owned()),
    }
}

/// The token and runtime URL of a `re-open`: `body.runtimeToken` (runtime = `from`),
/// or Vert.x style `from = <runtimeURL>/<token>`.
fn reopen_token(msg: &Message) -> Option<(String, String)> {
    let from = msg.from.as_str();
    if let Some(t) = msg
        .body
        .extra
        .get("runtimeToken")
        .or_else(|| msg.body.value.as_ref().and_then(|v| v.get("runtimeToken")))
        .and_then(Value::as_str)
    {
        let runtime = from
            .strip_suffix(t)
            .and_then(|r| r.strip_suffix('/'))
            .unwrap_or(from);
        return Some((t.to_owned(), runtime.to_owned()));
    }
    let (runtime, token) = from.rsplit_once('/')?;
    Address::parse(runtime).ok()?;
    (!token.is_empty()).then(|| (token.to_owned(), runtime.to_owned()))
}
