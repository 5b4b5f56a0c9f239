//! One actor per WebSocket connection: the node side of a runtime's session.
//!
//! The [`WsSession`] reads text frames (one reTHINK message each; fragmented frames
//! are joined up to `session.max_frame_size`), checks the routing header, enforces
//! ownership of `from` (403), and routes: node services get the parsed message and
//! their answer is written back; everything else goes through the shared
//! [`Router`](crate::node::router::Router) straight into the recipients' mailboxes.
//! Malformed frames get a 400 response and the connection stays up.
//!
//! Flow control, both ways. Inbound, frames are decoded by
//! [`BoundedFrames`](super::inbound::BoundedFrames), which reads the socket only as
//! fast as the session handles frames; when a recipient's queue is congested the
//! session pauses its reading until that queue drains (the sender is slowed, the
//! receiver keeps everything). Outbound, its mailbox is its queue, with a byte account
//! ([`OutboundQueue`]): the router evicts a client past its byte budget or write
//! deadline. Every frame kind counts against the session's rate; a connection with
//! `limits.abuse_threshold` refusals within `limits.abuse_window_ms` is closed, and
//! one that opens no session within `session.open_timeout_ms` too. It pings every
//! `session.heartbeat_interval_ms` and drops a client silent for
//! `session.client_timeout_ms`. A socket that ends without a reTHINK `close`
//! leaves its session to the grace period (see
//! [`SessionManager`](crate::node::sessions::SessionManager)).
//!
//! All uses of `actix-web-actors` are in this file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::BytesMut;
use bytestring::ByteString;
use hyperty_actors::address::Address;
use hyperty_actors::message::{Message, MessageType, ParseError, ResponseCode, To};
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::config::AuthMode;
use crate::identity::TokenUse;
use crate::node::allocation::NodeRequest;
use crate::node::frame::{stamped, FrameId, Header, Partial, ASSERTED_IDENTITY};
use crate::node::metrics::SAMPLE_EVERY;
use crate::node::outbound::{ConnSocket, OutboundQueue, QueueLimits};
use crate::node::rights::{is_manager, stub_url};
use crate::node::router::{Kick, Outbound, Routed, Service, SessionKey};
use crate::node::sessions::{
    Authenticated, BindStub, Close, Connected, Lost, Open, Opened, ReOpen, Renew, SessionRefused,
};
use crate::node::NodeState;
use crate::server::inbound::{Admission, BoundedFrames, Gate, Refusal};
use hyperty_actors::error::ToResponseCode;
use hyperty_actors::policy::{domain_of, judge, PolicyRequest, PolicySet};

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh connection id (runtime sessions and federation links share the count).
pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// The actor of one WebSocket connection.
pub struct WsSession {
    node: NodeState,
    key: SessionKey,
    conn_id: u64,
    runtime: Option<Arc<str>>,
    /// The authenticated identity and its JSON form, spliced into every frame the
    /// session sends as `body.assertedIdentity`.
    identity: Option<(Arc<str>, String)>,
    /// When the client was last heard of, as of the last heartbeat tick; `heard`
    /// says whether anything arrived since (cheaper than a clock read per frame).
    last_heard: Instant,
    heard: bool,
    closed: bool,
    stop_reason: &'static str,
    fragments: Option<BytesMut>,
    /// Frames seen (one in [`SAMPLE_EVERY`] is timed), and when the one being
    /// timed arrived.
    tick: u32,
    parsed: Option<Instant>,
    peer: String,
    ip: Option<std::net::IpAddr>,
    admission: Admission,
    /// The client's frames, until the actor starts reading them.
    inbound: Option<BoundedFrames<web::Payload>>,
    gate: Arc<Gate>,
    queue: Arc<OutboundQueue>,
    /// Frames written since the actor last let the socket writer run.
    batch: usize,
    /// A close frame went out: nothing more is read or written.
    closing: bool,
}

/// How long a connection closed for a protocol error waits for its client to go.
const LINGER: Duration = Duration::from_secs(1);

/// Frames written in one go before the session lets its socket writer run: keeps the
/// writer's buffer small, so the queue's byte account stays close to the truth.
const WRITE_BATCH: usize = 256;

impl std::fmt::Debug for WsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSession")
            .field("runtime", &self.runtime)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// `GET /ws`: upgrades to a WebSocket session.
pub async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    node: web::Data<NodeState>,
) -> actix_web::Result<HttpResponse> {
    let node = node.get_ref().clone();
    if node.router.session_count() >= node.config.session.max_sessions {
        warn!("session limit reached, refusing a connection");
        return Ok(HttpResponse::ServiceUnavailable()
            .json(json!({"code": 503, "description": "session limit reached"})));
    }
    let ip = req.peer_addr().map(|a| a.ip());
    if let Some(ip) = ip {
        if !node
            .router
            .connect_ip(ip, node.config.limits.max_sessions_per_ip)
        {
            warn!(%ip, "per-address connection limit reached");
            return Ok(HttpResponse::TooManyRequests().json(
                json!({"code": 429, "description": "too many connections from this address"}),
            ));
        }
    }
    let s = &node.config.session;
    let mut response = match ws::handshake(&req) {
        Ok(r) => r,
        Err(e) => {
            if let Some(ip) = ip {
                node.router.disconnect_ip(ip);
            }
            return Err(e.into());
        }
    };
    let gate = Arc::new(Gate::default());
    let socket = req.conn_data::<ConnSocket>().cloned();
    let queue = OutboundQueue::new(
        QueueLimits {
            slow_down: s.slow_down_bytes,
            budget: s.max_pending_bytes,
        },
        socket,
    );
    let session = WsSession {
        ip,
        admission: Admission::new(&node.config.limits),
        inbound: Some(BoundedFrames::new(stream, s.max_frame_size, gate.clone())),
        gate,
        queue,
        batch: 0,
        closing: false,
        key: Arc::from(uuid::Uuid::new_v4().to_string()),
        conn_id: next_conn_id(),
        runtime: None,
        identity: None,
        last_heard: Instant::now(),
        heard: false,
        closed: false,
        stop_reason: "socket closed",
        fragments: None,
        tick: 0,
        parsed: None,
        peer: req.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        node,
    };
    // the context's own reader gets nothing: the session reads through `inbound`
    let none =
        futures_util::stream::pending::<Result<bytes::Bytes, actix_web::error::PayloadError>>();
    Ok(response.streaming(ws::WebsocketContext::create(session, none)))
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.node.config.session.outbound_queue);
        if let Some(frames) = self.inbound.take() {
            ctx.add_stream(frames);
        }
        self.node.sessions.do_send(Connected {
            key: self.key.clone(),
            conn_id: self.conn_id,
            conn: ctx.address().recipient(),
            queue: self.queue.clone(),
            kicker: ctx.address().recipient(),
        });
        ctx.run_later(self.node.config.session.open_timeout(), |act, ctx| {
            if act.runtime.is_none() {
                act.stop_reason = "no open in time";
                close_for_policy(ctx, "open a session (open to mn:/session) first");
            }
        });
        let timeout = self.node.config.session.client_timeout();
        ctx.run_interval(
            self.node.config.session.heartbeat_interval(),
            move |act, ctx| {
                if std::mem::take(&mut act.heard) {
                    act.last_heard = Instant::now();
                }
                if act.last_heard.elapsed() > timeout {
                    act.stop_reason = "client timeout";
                    ctx.stop();
                } else {
                    ctx.ping(b"");
                }
            },
        );
        debug!(peer = %self.peer, "websocket connected");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if self.admission.is_abusive() {
            self.stop_reason = "abusive";
        }
        // senders waiting for this queue go on; later frames go to the grace buffer
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
        debug!(peer = %self.peer, reason = self.stop_reason, "websocket ended");
    }
}

impl Handler<Outbound> for WsSession {
    type Result = ();
    fn handle(&mut self, Outbound(frame): Outbound, ctx: &mut Self::Context) {
        self.queue.written(frame.len());
        if self.closing {
            return;
        }
        ctx.text(frame);
        self.batch += 1;
        if self.batch >= WRITE_BATCH {
            // stop taking frames until the socket writer has run
            ctx.wait(
                actix::fut::wrap_future(tokio::task::yield_now())
                    .map(|(), act: &mut WsSession, _| act.batch = 0),
            );
        }
    }
}

impl Handler<Kick> for WsSession {
    type Result = ();
    fn handle(&mut self, k: Kick, ctx: &mut Self::Context) {
        warn!(peer = %self.peer, reason = %k.reason, "closing session");
        self.stop_reason = "closed by the node";
        close_for_policy(ctx, k.reason);
    }
}

/// How a refused frame is treated (sessions and peer links alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefusalRule {
    /// It counts towards the connection's abuse account (400, 403, 429).
    pub(crate) abuse: bool,
    /// Its sender is told.
    pub(crate) report: bool,
}

/// Treats a refused frame alike on sessions and peer links: counts it, asks
/// `closed_as_abusive` (the connection's abuse account) for refusals that count,
/// and returns the error frame to send back, if its sender is to be told.
pub(crate) fn refusal_answer(
    node: &NodeState,
    h: &Header<'_>,
    code: ResponseCode,
    description: &str,
    closed_as_abusive: impl FnOnce() -> bool,
) -> Option<String> {
    let rule = refusal_rule(&node.router.stats, &h.kind, code);
    let metrics = &node.router.metrics;
    if rule.abuse && closed_as_abusive() {
        metrics.refused(code, false);
        return None;
    }
    metrics.refused(code, rule.report);
    rule.report.then(|| {
        error_frame(
            Some(h.id.to_json()),
            h.to.first(),
            Some(&h.from),
            code,
            description,
        )
    })
}

/// Counts a frame of `kind` refused with `code` and says how to treat it: a
/// refusal (403/400) is reported for anything but a response; a missing route or
/// capacity (404/408/429) only to requests — notifications are dropped and counted.
pub(crate) fn refusal_rule(
    stats: &crate::node::router::NodeStats,
    kind: &MessageType,
    code: ResponseCode,
) -> RefusalRule {
    use std::sync::atomic::Ordering::Relaxed;
    let counter = match code {
        ResponseCode::Forbidden => &stats.forbidden,
        ResponseCode::NotFound => &stats.not_found,
        ResponseCode::TooManyRequests => &stats.rate_limited,
        _ => &stats.bad_requests,
    };
    counter.fetch_add(1, Relaxed);
    let report = match code {
        // an event nobody holds is answered too: its sender's dispatcher turns the
        // 404 into the recipients' `badDestination`
        ResponseCode::NotFound => kind.expects_response() || *kind == MessageType::Event,
        ResponseCode::RequestTimeout | ResponseCode::TooManyRequests => kind.expects_response(),
        _ => *kind != MessageType::Response,
    };
    if !report {
        stats.dropped.fetch_add(1, Relaxed);
    }
    RefusalRule {
        abuse: matches!(
            code,
            ResponseCode::Forbidden | ResponseCode::BadRequest | ResponseCode::TooManyRequests
        ),
        report,
    }
}

/// A reTHINK error response as wire text.
pub(crate) fn error_frame(
    id: Option<Value>,
    from: &str,
    to: Option<&str>,
    code: ResponseCode,
    description: &str,
) -> String {
    let mut v = json!({
        "type": "response",
        "from": from,
        "body": { "code": code, "description": description },
    });
    if let Some(id) = id {
        v["id"] = id;
    }
    if let Some(to) = to {
        v["to"] = json!(to);
    }
    v.to_string()
}

/// The whole message of a frame whose header `h` is valid (a string id is carried
/// aside: [`Message`] ids are numbers); a `body.assertedIdentity` is dropped.
pub(crate) fn full_message(text: &str, h: &Header<'_>) -> Result<Message, ParseError> {
    let parsed = match &h.id {
        FrameId::Num(_) => Message::parse(text),
        FrameId::Text(_) => serde_json::from_str::<Value>(text)
            .map_err(|e| ParseError::Json(e.to_string()))
            .and_then(|mut v| {
                v["id"] = json!(1);
                Message::from_value(v)
            }),
    };
    parsed.map(|mut m| {
        m.body.extra.remove(ASSERTED_IDENTITY);
        m
    })
}

/// A node answer on the wire, with the id the request came with.
pub(crate) fn answer_text(msg: &Message, id: &FrameId<'_>) -> String {
    match id {
        FrameId::Num(_) => msg.to_json(),
        FrameId::Text(_) => {
            let mut v = serde_json::to_value(msg).unwrap_or_default();
            v["id"] = id.to_json();
            v.to_string()
        }
    }
}

impl WsSession {
    fn reply(&self, ctx: &mut ws::WebsocketContext<Self>, msg: &Message, id: &FrameId<'_>) {
        self.node.router.metrics.answered(msg.body.code);
        ctx.text(answer_text(msg, id));
    }

    fn bad_request(&self, ctx: &mut ws::WebsocketContext<Self>, e: &ParseError, p: &Partial) {
        if self.count_refusal(ctx) {
            return;
        }
        self.node
            .router
            .stats
            .bad_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(peer = %self.peer, error = %e, "bad frame");
        self.node
            .router
            .metrics
            .refused(ResponseCode::BadRequest, true);
        ctx.text(error_frame(
            p.id.clone(),
            p.to.as_deref().unwrap_or("mn:/validator"),
            p.from.as_deref(),
            ResponseCode::BadRequest,
            &e.to_string(),
        ));
    }

    fn refuse(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        h: &Header<'_>,
        code: ResponseCode,
        description: &str,
    ) {
        if let Some(answer) =
            refusal_answer(&self.node, h, code, description, || self.count_refusal(ctx))
        {
            ctx.text(answer);
        }
    }

    fn on_text(&mut self, text: ByteString, ctx: &mut ws::WebsocketContext<Self>) {
        self.parsed = None;
        if self.node.router.metrics.enabled() {
            if self.tick % SAMPLE_EVERY == 0 {
                self.parsed = Some(Instant::now());
            }
            self.tick = self.tick.wrapping_add(1);
        }
        let router = &self.node.router;
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
                let _ = self.admission.check();
                return self.bad_request(ctx, &e, &partial);
            }
        };
        let _span = tracing::trace_span!("node.frame", id = %h.id, kind = %h.kind, from = %h.loggable_from(), to = %h.to.first()).entered();
        if !self.admission.check() {
            return self.refuse(
                ctx,
                &h,
                ResponseCode::TooManyRequests,
                "rate limit exceeded, slow down",
            );
        }
        let service = router.service(h.to.first());
        if service == Some(Service::Session) {
            return self.session_control(&text, ctx);
        }
        if self.runtime.is_none() {
            return self.refuse(
                ctx,
                &h,
                ResponseCode::Forbidden,
                "open the session first (open to mn:/session)",
            );
        }
        if !router.owns(&self.key, &h.from) {
            if router.owner_of(&h.from).is_none() && stub_url(&h.from, router.domain()).is_some() {
                let from = h.from.to_string();
                return self.bind_stub_then_route(from, service, text, ctx);
            }
            return self.refuse(
                ctx,
                &h,
                ResponseCode::Forbidden,
                &format!("from address {} is not owned by this session", h.from),
            );
        }
        self.route_owned(&h, service, &text, ctx);
    }

    /// A frame from an unheld stub URL of this domain: the URL is bound to this
    /// session (first use), then the frame goes on as any other.
    fn bind_stub_then_route(
        &mut self,
        from: String,
        service: Option<Service>,
        text: ByteString,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let bind = self.node.sessions.send(BindStub {
            key: self.key.clone(),
            from,
        });
        ctx.wait(bind.into_actor(self).map(move |r, act, ctx| {
            let Ok(h) = Header::parse(&text) else { return };
            match r.unwrap_or_else(|_| Err(gone())) {
                Ok(()) => act.route_owned(&h, service, &text, ctx),
                Err(e) => act.refuse(ctx, &h, e.code, &e.description),
            }
        }));
    }

    /// Routes a frame whose sender this session owns; `service` is the node service
    /// its first recipient names, if any.
    fn route_owned(
        &mut self,
        h: &Header<'_>,
        service: Option<Service>,
        text: &ByteString,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let router = &self.node.router;
        if let Some(t) =
            h.to.iter()
                .find(|t| router.is_reserved(t) && router.service(t).is_none())
        {
            return self.refuse(
                ctx,
                h,
                ResponseCode::Forbidden,
                &format!("{t} is reserved to the node"),
            );
        }
        if let Some(s) = service {
            return self.service_request(s, text, ctx);
        }
        let user = self.identity.as_ref().map(|(i, _)| &**i);
        let Some(stamp) = permits(&self.node, h, user, user.map(domain_of)) else {
            return self.refuse(ctx, h, ResponseCode::Forbidden, "Blocked by policy");
        };
        // the client's own assertedIdentity never goes through; the node's does,
        // unless a policy's strip-identity obligation says otherwise
        let identity = self
            .identity
            .as_ref()
            .filter(|_| stamp)
            .map(|(_, json)| json.as_str());
        if matches!(h.kind, MessageType::Subscribe | MessageType::Unsubscribe) {
            self.mirror_foreign_subscription(h, text);
        }
        let stamped_frame = stamped(text, h.body, identity).map(ByteString::from);
        let frame = stamped_frame.as_ref().unwrap_or(text);
        let parsed = self.parsed.take();
        let router = &self.node.router;
        let routed = if h.kind == MessageType::Event {
            router.route_event(&h.to, frame)
        } else {
            router.route(&h.to, frame)
        };
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
            } => match self.unlinked_domain(h.to.first()) {
                Some(domain) => self.refuse(
                    ctx,
                    h,
                    ResponseCode::ServiceUnavailable,
                    &format!(
                        "no link to {domain}: as many peer domains as allowed are linked \
                         (federation.max_peers)"
                    ),
                ),
                None => self.refuse(
                    ctx,
                    h,
                    ResponseCode::RequestTimeout,
                    "recipient temporarily unavailable",
                ),
            },
            Routed::Delivered {
                congested: Some(q), ..
            } => self.slow_down(q, ctx),
            Routed::Delivered { .. } => {}
            Routed::Service(s) => self.service_request(s, text, ctx),
            Routed::NoRoute(t) => {
                self.refuse(ctx, h, ResponseCode::NotFound, &format!("no route to {t}"))
            }
        }
    }

    /// The domain of `to` when it is another domain's and this node has no link
    /// to it (the peer table is full).
    fn unlinked_domain<'a>(&self, to: &'a str) -> Option<&'a str> {
        let domain = self.node.router.foreign_domain(to)?;
        let federation = self.node.federation()?;
        federation.link_info(domain).is_none().then_some(domain)
    }

    /// A `subscribe`/`unsubscribe` to another domain's `/sm` goes there; its
    /// resources are routed here to this session too (see
    /// [`Mirror`](crate::node::subscriptions::Mirror)).
    fn mirror_foreign_subscription(&self, h: &Header<'_>, text: &str) {
        let to = h.to.first();
        let Some(domain) = self.node.router.foreign_domain(to) else {
            return;
        };
        if to != format!("domain://msg-node.{domain}/sm") {
            return;
        }
        if let Ok(msg) = Message::parse(text) {
            self.node
                .subscriptions
                .do_send(crate::node::subscriptions::Mirror {
                    session: self.key.clone(),
                    msg,
                    domain: domain.to_owned(),
                });
        }
    }

    /// Sends a close frame, ignores the client from now on, and stops once the client
    /// has gone (at most [`LINGER`] later): stopping at once could reset the socket
    /// under the close frame while the client is still sending.
    fn close_and_linger(&mut self, ctx: &mut ws::WebsocketContext<Self>, reason: ws::CloseReason) {
        if self.closing {
            return;
        }
        self.closing = true;
        ctx.close(Some(reason));
        ctx.run_later(LINGER, |_, ctx| ctx.stop());
    }

    /// 400 to a frame that is no reTHINK message at all (binary, not UTF-8).
    fn refuse_frame(&self, ctx: &mut ws::WebsocketContext<Self>, description: &str) {
        self.node
            .router
            .stats
            .bad_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answered = !self.count_refusal(ctx);
        self.node
            .router
            .metrics
            .refused(ResponseCode::BadRequest, answered);
        if answered {
            ctx.text(error_frame(
                None,
                "mn:/validator",
                None,
                ResponseCode::BadRequest,
                description,
            ));
        }
    }

    /// Counts a refused frame; past `limits.abuse_threshold` refusals within
    /// `limits.abuse_window_ms` the connection is closed (true: it is).
    fn count_refusal(&self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        match self.admission.refuse() {
            Refusal::Counted => return false,
            Refusal::Abusive => return true,
            Refusal::NowAbusive => {}
        }
        self.node
            .router
            .stats
            .abusive
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(peer = %self.peer, runtime = ?self.runtime, "closing an abusive connection");
        close_for_policy(ctx, "rate limit exceeded: too many refused frames");
        true
    }

    /// Frames that are not text (binary, ping, continuation) count against the rate
    /// too; over it they are dropped and count as refusals. True if admitted.
    fn admit(&self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        if self.admission.check() {
            return true;
        }
        self.node
            .router
            .stats
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.count_refusal(ctx);
        false
    }

    /// A recipient's queue is congested: stop reading this client until it drains
    /// (or the recipient is evicted at its write deadline).
    fn slow_down(&mut self, queue: Arc<OutboundQueue>, ctx: &mut ws::WebsocketContext<Self>) {
        let deadline = self.node.config.session.write_deadline();
        let Some(hold) = self.gate.hold(queue, deadline) else {
            return;
        };
        self.node
            .router
            .stats
            .throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.spawn(actix::fut::wrap_future(hold));
    }

    /// The whole message of a frame for a node service, with the id it came with
    /// (a string id is carried aside: [`Message`] ids are numbers). A client's
    /// `body.assertedIdentity` is dropped. Malformed → 400, `None`.
    fn parse_full(
        &self,
        text: &str,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Option<(Message, FrameId<'static>)> {
        let h = match Header::parse(text) {
            Ok(h) => h,
            Err((e, p)) => {
                self.bad_request(ctx, &e, &p);
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
                self.bad_request(ctx, &e, &p);
                None
            }
        }
    }

    fn service_request(
        &mut self,
        service: Service,
        text: &str,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let Some((msg, id)) = self.parse_full(text, ctx) else {
            return;
        };
        if msg.is_response() {
            // node services never asked anything: a response to them is dropped
            self.node
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
            return self.reply(ctx, &r, &id);
        }
        let caller = ServiceCaller {
            key: self.key.clone(),
            identity: self.identity.as_ref().map(|(i, _)| i.clone()),
            runtime: self.runtime.clone(),
            ip: self.ip,
        };
        let Some(answer) = answer_service(&self.node, service, msg, caller) else {
            return;
        };
        // control-plane requests are answered in order: nothing else from this
        // client is read until the answer is written
        ctx.wait(
            answer
                .into_actor(self)
                .map(move |resp, act, ctx| act.reply(ctx, &resp, &id)),
        );
    }

    fn session_control(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let Some((msg, id)) = self.parse_full(text, ctx) else {
            return;
        };
        // a Vert.x style re-open carries the runtime token in `from`: never logged
        let runtime = match msg.kind {
            MessageType::ReOpen => reopen_token(&msg).map(|(_, rt)| rt).unwrap_or_default(),
            _ => msg.from.to_string(),
        };
        let _span =
            tracing::info_span!("node.session", kind = %msg.kind, runtime = %runtime).entered();
        match msg.kind {
            MessageType::Open => {
                let identity = match self.authenticate(&msg) {
                    Ok(identity) => identity,
                    Err(why) => return self.unauthorised(ctx, &msg, &id, &runtime, &why),
                };
                let stubs = match announced_stubs(&msg) {
                    Ok(s) => s,
                    Err(why) => {
                        let r = msg.reply_error(ResponseCode::BadRequest, why);
                        return self.reply(ctx, &r, &id);
                    }
                };
                let f = self.node.sessions.send(Open {
                    key: self.key.clone(),
                    runtime: msg.from.to_string(),
                    stubs,
                    identity,
                });
                ctx.wait(f.into_actor(self).map(move |r, act, ctx| {
                    let resp = match r.unwrap_or_else(|_| Err(gone())) {
                        Ok(opened) => {
                            act.runtime = Some(Arc::from(msg.from.as_str()));
                            act.identity = opened.identity.clone().map(stamped_identity);
                            token_reply(&msg, &opened)
                        }
                        Err(e) => msg.reply_error(e.code, e.description),
                    };
                    act.reply(ctx, &resp, &id);
                }));
            }
            MessageType::ReOpen => {
                if self.runtime.is_some() {
                    let r = msg.reply_error(
                        ResponseCode::BadRequest,
                        "this connection already has a session: re-open from a new connection",
                    );
                    return self.reply(ctx, &r, &id);
                }
                let (token, runtime) = match reopen_token(&msg) {
                    Some(t) => t,
                    None => {
                        let r = msg.reply_error(
                            ResponseCode::BadRequest,
                            "re-open needs body.runtimeToken (or from = <runtimeURL>/<token>)",
                        );
                        return self.reply(ctx, &r, &id);
                    }
                };
                let identity = match self.credentials(&msg, &runtime) {
                    Ok(identity) => identity,
                    Err(why) => return self.unauthorised(ctx, &msg, &id, &runtime, &why),
                };
                let f = self.node.sessions.send(ReOpen {
                    key: self.key.clone(),
                    token,
                    runtime: runtime.clone(),
                    identity,
                });
                ctx.wait(f.into_actor(self).map(move |r, act, ctx| {
                    let resp = match r.unwrap_or_else(|_| Err(gone())) {
                        Ok(opened) => {
                            act.key = opened.key.clone();
                            act.runtime = Some(Arc::from(runtime.as_str()));
                            act.identity = opened.identity.clone().map(stamped_identity);
                            token_reply(&msg, &opened)
                        }
                        Err(e) => msg.reply_error(e.code, e.description),
                    };
                    act.reply(ctx, &resp, &id);
                }));
            }
            MessageType::Update if self.runtime.is_some() => self.renew(msg, id, ctx),
            MessageType::Close => {
                self.closed = true;
                let f = self.node.sessions.send(Close {
                    key: self.key.clone(),
                });
                // everything is freed before the 200 goes out
                ctx.wait(f.into_actor(self).map(move |_, act, ctx| {
                    act.reply(ctx, &msg.reply(ResponseCode::Ok), &id);
                    ctx.close(Some(ws::CloseCode::Normal.into()));
                    ctx.stop();
                }));
            }
            MessageType::Ping => self.reply(ctx, &msg.reply(ResponseCode::Ok), &id),
            _ => {
                let r = msg.reply_error(
                    ResponseCode::BadRequest,
                    format!(
                        "mn:/session takes open, re-open, update (token renewal) and close, not {}",
                        msg.kind
                    ),
                );
                self.reply(ctx, &r, &id);
            }
        }
    }

    /// `update` to `mn:/session` with a fresh `body.idToken` (or device token) of
    /// the session's identity: the session lives on until the new expiry.
    fn renew(&mut self, msg: Message, id: FrameId<'static>, ctx: &mut ws::WebsocketContext<Self>) {
        let runtime = self.runtime.as_deref().unwrap_or_default().to_owned();
        let identity = match self.credentials(&msg, &runtime) {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                let r = msg.reply_error(
                    ResponseCode::BadRequest,
                    "renew the session with body.idToken",
                );
                return self.reply(ctx, &r, &id);
            }
            Err(why) => {
                let r = msg.reply_error(ResponseCode::Unauthorized, why);
                return self.reply(ctx, &r, &id);
            }
        };
        let expires = identity.expires;
        let f = self.node.sessions.send(Renew {
            key: self.key.clone(),
            identity,
        });
        ctx.wait(f.into_actor(self).map(move |r, act, ctx| {
            let resp = match r.unwrap_or_else(|_| Err(gone())) {
                Ok(()) => msg.reply_value(ResponseCode::Ok, json!({ "expires": expires })),
                Err(e) => msg.reply_error(e.code, e.description),
            };
            act.reply(ctx, &resp, &id);
        }));
    }

    /// Checks the credentials of an `open`: an ID token (a user) or a device token
    /// (the runtime itself, whose URL must then be the token's subject), in
    /// `body.idToken`, `body.token` or `body.accessToken`. Without one, the session
    /// is anonymous if `auth.mode` is `optional`.
    fn authenticate(&self, msg: &Message) -> Result<Option<Authenticated>, String> {
        match self.credentials(msg, msg.from.as_str())? {
            Some(a) => Ok(Some(a)),
            None => match self.node.config.auth.mode {
                AuthMode::Optional => Ok(None),
                AuthMode::Required => {
                    Err("authentication required: open with body.idToken".to_owned())
                }
            },
        }
    }

    /// The identity proven by the token in `msg`, if it carries one, for a session
    /// of `runtime`.
    fn credentials(&self, msg: &Message, runtime: &str) -> Result<Option<Authenticated>, String> {
        let token = ["idToken", "token", "accessToken"]
            .iter()
            .find_map(|k| msg.body.extra.get(*k))
            .map(|t| t.as_str().ok_or("the token must be a string"))
            .transpose()?;
        let Some(token) = token else {
            return Ok(None);
        };
        let claims = self
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

    /// 401 to the `open`, then the socket closes.
    fn unauthorised(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        msg: &Message,
        id: &FrameId<'_>,
        runtime: &str,
        why: &str,
    ) {
        warn!(peer = %self.peer, runtime, reason = why, "open refused");
        self.node
            .router
            .stats
            .unauthorised
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.reply(ctx, &msg.reply_error(ResponseCode::Unauthorized, why), id);
        self.stop_reason = "unauthorised";
        close_for_policy(ctx, "unauthorised");
    }

    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        let max = self.node.config.session.max_frame_size;
        let (start, bytes, last) = match item {
            actix_http::ws::Item::FirstText(b) => (true, b, false),
            actix_http::ws::Item::FirstBinary(_) => {
                self.fragments = None;
                return self.refuse_frame(ctx, "binary frames are not supported");
            }
            actix_http::ws::Item::Continue(b) => (false, b, false),
            actix_http::ws::Item::Last(b) => (false, b, true),
        };
        if start {
            self.fragments = Some(BytesMut::new());
        }
        let Some(buf) = self.fragments.as_mut() else {
            return;
        };
        if buf.len() + bytes.len() > max {
            self.fragments = None;
            self.stop_reason = "message too large";
            self.close_and_linger(
                ctx,
                ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some(format!("message larger than {max} bytes")),
                },
            );
            return;
        }
        buf.extend_from_slice(&bytes);
        if last {
            let whole = self.fragments.take().unwrap_or_default().freeze();
            match ByteString::try_from(whole) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.refuse_frame(ctx, "text frame is not UTF-8"),
            }
        }
    }
}

/// The node's PEP: every recipient must be permitted by the node's policies,
/// decided by the one policy function ([`judge`]) on the header and the sender's
/// authenticated identity `user` (which counts as asserted: the node checked it
/// at `open`, or the peer domain vouches for its own users). `None`: blocked;
/// `Some(stamp)`: deliver, stamping `assertedIdentity` unless a `strip-identity`
/// obligation says not to.
pub(crate) fn permits(
    node: &NodeState,
    h: &Header<'_>,
    user: Option<&str>,
    asserted_domain: Option<&str>,
) -> Option<bool> {
    let policies = node.pdp.policies();
    let snap = policies.snapshot();
    let now = if snap.needs_time() {
        policies.clock().now_ms()
    } else {
        0
    };
    let mut stamp = true;
    for t in h.to.iter() {
        let req = PolicyRequest::new(h.kind.as_str(), &h.from, t)
            .with_identity(user, user.is_some())
            .at(now);
        let v = judge(&snap, &req, asserted_domain);
        if !v.permit {
            return None;
        }
        stamp &= !v.strip_identity;
    }
    Some(stamp)
}

/// Who asks a node service.
#[derive(Debug, Clone)]
pub(crate) struct ServiceCaller {
    /// The session (or peer link) key.
    pub(crate) key: SessionKey,
    /// Its authenticated identity.
    pub(crate) identity: Option<Arc<str>>,
    /// Its runtime URL (none for a peer link).
    pub(crate) runtime: Option<Arc<str>>,
    /// Its client address.
    pub(crate) ip: Option<std::net::IpAddr>,
}

/// The answer of node service `service` to `msg` from `caller` (`None` for
/// `mn:/session`, which the session handles itself).
pub(crate) fn answer_service(
    node: &NodeState,
    service: Service,
    msg: Message,
    caller: ServiceCaller,
) -> Option<ResponseFuture<Message>> {
    let request = NodeRequest {
        session: caller.key.clone(),
        msg: msg.clone(),
    };
    Some(match service {
        Service::Allocation => answered(node.allocation.send(request), msg),
        Service::Subscriptions => answered(node.subscriptions.send(request), msg),
        Service::Registry => {
            let (router, key) = (node.router.clone(), caller.key.clone());
            let registry_caller = crate::domain_registry::Caller {
                identity: caller.identity.clone(),
                runtime: caller.runtime.clone(),
                owns: Arc::new(move |url: &str| router.owns(&key, url)),
            };
            answered(
                node.registry.send(crate::domain_registry::RegistryRequest {
                    msg: msg.clone(),
                    caller: registry_caller,
                }),
                msg,
            )
        }
        Service::Idp => answered(
            node.idp.send(crate::identity::IdpRequest {
                message: msg.clone(),
                source: caller.ip,
            }),
            msg,
        ),
        Service::Qos => answered(
            node.qos.send(crate::qos::QosRequest {
                msg: msg.clone(),
                runtime: caller.runtime.clone(),
            }),
            msg,
        ),
        Service::Policy => manage_policies(node, caller.identity.as_deref(), msg),
        Service::Session => return None,
    })
}

/// Policy management at `domain://msg-node.<D>/pep`, for sessions whose
/// authenticated identity matches `policy.managers`: `create {value: <policy
/// set>}` adds (or replaces) a set, `delete {resource: <set id>}` removes it,
/// `read` lists the sets.
fn manage_policies(
    node: &NodeState,
    identity: Option<&str>,
    msg: Message,
) -> ResponseFuture<Message> {
    let managers = &node.config.policy.managers;
    if !is_manager(managers, identity) {
        return Box::pin(async move {
            msg.reply_error(
                ResponseCode::Forbidden,
                "only policy managers may manage the node's policies",
            )
        });
    }
    let pdp = node.pdp.clone();
    Box::pin(async move {
        let result = match msg.kind {
            MessageType::Create => match msg.body.value.clone().map(PolicySet::from_value) {
                Some(Ok(set)) => pdp.add_policies(vec![set]).await.map(|()| Value::Null),
                Some(Err(e)) => Err(e),
                None => {
                    return msg.reply_error(ResponseCode::BadRequest, "missing field 'body.value'")
                }
            },
            MessageType::Delete => {
                let ids: Vec<String> = msg
                    .body
                    .resource
                    .iter()
                    .flat_map(|r| r.iter().cloned())
                    .collect();
                if ids.is_empty() {
                    return msg
                        .reply_error(ResponseCode::BadRequest, "missing field 'body.resource'");
                }
                pdp.remove_policies(ids).await.map(|()| Value::Null)
            }
            MessageType::Read => pdp
                .list_policies()
                .await
                .map(|sets| serde_json::to_value(sets).unwrap_or_default()),
            _ => {
                return msg.reply_error(
                    ResponseCode::BadRequest,
                    "the node PEP takes create, delete and read",
                )
            }
        };
        match result {
            Ok(Value::Null) => msg.reply(ResponseCode::Ok),
            Ok(v) => msg.reply_value(ResponseCode::Ok, v),
            Err(e) => msg.reply_error(e.response_code(), e.to_string()),
        }
    })
}

/// The answer of a node component, or 500 if the component is gone.
fn answered(
    answer: impl std::future::Future<Output = Result<Message, MailboxError>> + 'static,
    msg: Message,
) -> ResponseFuture<Message> {
    Box::pin(async move {
        answer.await.unwrap_or_else(|_| {
            msg.reply_error(ResponseCode::InternalError, "node component unavailable")
        })
    })
}

/// The identity with its JSON form, ready to be spliced into frames.
fn stamped_identity(identity: Arc<str>) -> (Arc<str>, String) {
    let json = Value::String(identity.to_string()).to_string();
    (identity, json)
}

/// Closes the socket with a policy-violation close frame and stops the session.
fn close_for_policy(ctx: &mut ws::WebsocketContext<WsSession>, reason: impl Into<String>) {
    ctx.close(Some(ws::CloseReason {
        code: ws::CloseCode::Policy,
        description: Some(reason.into()),
    }));
    ctx.stop();
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

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.heard = true;
        if self.closing {
            return;
        }
        let counted = matches!(
            item,
            Ok(ws::Message::Binary(_) | ws::Message::Ping(_) | ws::Message::Continuation(_))
        );
        if counted && !self.admit(ctx) {
            return;
        }
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(text, ctx),
            Ok(ws::Message::Binary(_)) => self.refuse_frame(
                ctx,
                "binary frames are not supported; send one JSON message per text frame",
            ),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                self.stop_reason = "socket closed by the client";
                ctx.close(reason);
                ctx.stop();
            }
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "websocket protocol error");
                self.stop_reason = "protocol error";
                let code = match e {
                    ws::ProtocolError::Overflow => ws::CloseCode::Size,
                    _ => ws::CloseCode::Protocol,
                };
                self.close_and_linger(
                    ctx,
                    ws::CloseReason {
                        code,
                        description: Some(e.to_string()),
                    },
                );
            }
        }
    }
}
