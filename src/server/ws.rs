//! One actor per WebSocket connection: the node side of a runtime's session.
//!
//! The [`WsSession`] reads text frames (one reTHINK message each; fragmented frames
//! are joined up to `session.max_frame_size`), checks the routing header, enforces
//! ownership of `from` (403), and routes: node services get the parsed message and
//! their answer is written back; everything else goes through the shared
//! [`Router`](crate::node::router::Router) straight into the recipients' mailboxes.
//! Malformed frames get a 400 response and the connection stays up.
//!
//! Its mailbox is its bounded outbound queue (`session.outbound_queue`): when the
//! client stops reading, the HTTP layer stops polling the session, the queue fills
//! and the router cuts the session off as a slow consumer. It pings every
//! `session.heartbeat_interval_ms` and drops a client silent for
//! `session.client_timeout_ms`. A socket that ends without a reTHINK `close`
//! leaves its session to the grace period (see
//! [`SessionManager`](crate::node::sessions::SessionManager)).
//!
//! All uses of `actix-web-actors` are in this file.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::BytesMut;
use bytestring::ByteString;
use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hyperty_actors::address::Address;
use hyperty_actors::message::{Message, MessageType, ParseError, ResponseCode, To};
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::config::AuthMode;
use crate::identity::TokenUse;
use crate::node::allocation::NodeRequest;
use crate::node::frame::{with_asserted_identity, Header, Partial};
use crate::node::router::{Kick, Outbound, Routed, Service, SessionKey};
use crate::node::sessions::{Close, Connected, Lost, Open, ReOpen, SessionRefused};
use crate::node::NodeState;
use hyperty_actors::error::ToResponseCode;
use hyperty_actors::policy::{Effect, Obligation, PolicyRequest, PolicySet};

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    peer: String,
    ip: Option<std::net::IpAddr>,
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    refused_in_a_row: u32,
}

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
    let limits = &node.config.limits;
    let quota =
        Quota::per_second(NonZeroU32::new(limits.messages_per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN));
    let max = node.config.session.max_frame_size;
    let session = WsSession {
        ip,
        limiter: RateLimiter::direct(quota),
        refused_in_a_row: 0,
        key: Arc::from(uuid::Uuid::new_v4().to_string()),
        conn_id: NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        runtime: None,
        identity: None,
        last_heard: Instant::now(),
        heard: false,
        closed: false,
        stop_reason: "socket closed",
        fragments: None,
        peer: req.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        node,
    };
    let started = ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(max)
        .start();
    if started.is_err() {
        if let Some(ip) = ip {
            node_ip_release(&req, ip);
        }
    }
    started
}

fn node_ip_release(req: &HttpRequest, ip: std::net::IpAddr) {
    if let Some(node) = req.app_data::<web::Data<NodeState>>() {
        node.router.disconnect_ip(ip);
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.node.config.session.outbound_queue);
        self.node.sessions.do_send(Connected {
            key: self.key.clone(),
            conn_id: self.conn_id,
            conn: ctx.address().recipient(),
            kicker: ctx.address().recipient(),
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
        ctx.text(frame);
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

fn error_frame(
    id: Option<u64>,
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
        v["id"] = json!(id);
    }
    if let Some(to) = to {
        v["to"] = json!(to);
    }
    v.to_string()
}

impl WsSession {
    fn reply(&self, ctx: &mut ws::WebsocketContext<Self>, msg: &Message) {
        ctx.text(msg.to_json());
    }

    fn bad_request(&self, ctx: &mut ws::WebsocketContext<Self>, e: &ParseError, p: &Partial) {
        self.node
            .router
            .stats
            .bad_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(peer = %self.peer, error = %e, "bad frame");
        ctx.text(error_frame(
            p.id,
            "mn:/validator",
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
        let stats = &self.node.router.stats;
        let counter = match code {
            ResponseCode::Forbidden => &stats.forbidden,
            ResponseCode::NotFound => &stats.not_found,
            ResponseCode::TooManyRequests => &stats.rate_limited,
            _ => &stats.bad_requests,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // a refusal (403/400) is reported for anything but a response; a missing
        // route or capacity (404/408/429) only to requests: notifications are
        // dropped and counted
        let report = match code {
            ResponseCode::NotFound
            | ResponseCode::RequestTimeout
            | ResponseCode::TooManyRequests => h.kind.expects_response(),
            _ => h.kind != MessageType::Response,
        };
        if report {
            ctx.text(error_frame(
                Some(h.id),
                h.to.first(),
                Some(&h.from),
                code,
                description,
            ));
        } else {
            self.node
                .router
                .stats
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn on_text(&mut self, text: ByteString, ctx: &mut ws::WebsocketContext<Self>) {
        let router = &self.node.router;
        router
            .stats
            .frames_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let h = match Header::parse(&text) {
            Ok(h) => h,
            Err((e, partial)) => return self.bad_request(ctx, &e, &partial),
        };
        let _span = tracing::trace_span!("node.frame", id = h.id, kind = %h.kind, from = %h.from, to = %h.to.first()).entered();
        if self.limiter.check().is_err() {
            return self.rate_limited(ctx, &h);
        }
        self.refused_in_a_row = 0;
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
        if !router.owns(&self.key, self.runtime.as_deref(), &h.from) {
            return self.refuse(
                ctx,
                &h,
                ResponseCode::Forbidden,
                &format!("from address {} is not owned by this session", h.from),
            );
        }
        if let Some(t) =
            h.to.iter()
                .find(|t| router.is_reserved(t) && router.service(t).is_none())
        {
            return self.refuse(
                ctx,
                &h,
                ResponseCode::Forbidden,
                &format!("{t} is reserved to the node"),
            );
        }
        if let Some(s) = service {
            return self.service_request(s, &text, ctx);
        }
        if !self.permitted(&h) {
            return self.refuse(ctx, &h, ResponseCode::Forbidden, "Blocked by policy");
        }
        let stamped;
        let frame = match &self.identity {
            Some((_, json)) => {
                stamped = ByteString::from(with_asserted_identity(&text, h.body, json));
                &stamped
            }
            None => &text,
        };
        let routed = if h.kind == MessageType::Event {
            router.route_event(&h.to, frame)
        } else {
            router.route(&h.to, frame)
        };
        match routed {
            Routed::Delivered {
                queued: 0,
                buffered: 0,
                ..
            } => self.refuse(
                ctx,
                &h,
                ResponseCode::RequestTimeout,
                "recipient temporarily unavailable",
            ),
            Routed::Delivered { .. } => {}
            Routed::Service(s) => self.service_request(s, &text, ctx),
            Routed::NoRoute(t) => {
                self.refuse(ctx, &h, ResponseCode::NotFound, &format!("no route to {t}"))
            }
        }
    }

    /// The node's PEP: every recipient must be permitted by the node's policies,
    /// decided on the header and the session's authenticated identity (which counts
    /// as asserted: the node checked it at `open`).
    fn permitted(&self, h: &Header<'_>) -> bool {
        let policies = self.node.pdp.policies();
        let default = self.node.config.policy.default_behaviour;
        if policies.is_empty() {
            return default == Effect::Permit;
        }
        let user = self.identity.as_ref().map(|(i, _)| &**i);
        let now = policies.clock().now_ms();
        h.to.iter().all(|t| {
            let req = PolicyRequest::new(h.kind.as_str(), &h.from, t)
                .with_identity(user, user.is_some())
                .at(now);
            let d = policies.decide(&req);
            let assertion_ok = user.is_some()
                || !d
                    .obligations
                    .iter()
                    .any(|o| matches!(o, Obligation::RequireAssertion { .. }));
            d.permits(default) && assertion_ok
        })
    }

    /// Policy management at `domain://msg-node.<D>/pep`, for sessions whose
    /// authenticated identity matches `policy.managers`: `create {value: <policy
    /// set>}` adds (or replaces) a set, `delete {resource: <set id>}` removes it,
    /// `read` lists the sets.
    fn manage_policies(&self, msg: Message) -> ResponseFuture<Message> {
        let managers = &self.node.config.policy.managers;
        let who = self.identity.as_ref().map(|(i, _)| i.to_string());
        let allowed = who
            .as_deref()
            .is_some_and(|w| managers.iter().any(|m| m == w || m == "*"));
        if !allowed {
            return Box::pin(async move {
                msg.reply_error(
                    ResponseCode::Forbidden,
                    "only policy managers may manage the node's policies",
                )
            });
        }
        let pdp = self.node.pdp.clone();
        Box::pin(async move {
            let result = match msg.kind {
                MessageType::Create => match msg.body.value.clone().map(PolicySet::from_value) {
                    Some(Ok(set)) => pdp.add_policies(vec![set]).await.map(|()| Value::Null),
                    Some(Err(e)) => Err(e),
                    None => {
                        return msg
                            .reply_error(ResponseCode::BadRequest, "missing field 'body.value'")
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
                        return msg.reply_error(
                            ResponseCode::BadRequest,
                            "missing field 'body.resource'",
                        );
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

    /// Over the session's rate: 429 to requests, a counted drop otherwise; closed
    /// after `limits.abuse_threshold` refusals in a row.
    fn rate_limited(&mut self, ctx: &mut ws::WebsocketContext<Self>, h: &Header<'_>) {
        let stats = &self.node.router.stats;
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= self.node.config.limits.abuse_threshold {
            stats
                .abusive
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!(peer = %self.peer, runtime = ?self.runtime, "closing an abusive session");
            self.stop_reason = "rate limit exceeded";
            close_for_policy(ctx, "rate limit exceeded");
            return;
        }
        self.refuse(
            ctx,
            h,
            ResponseCode::TooManyRequests,
            "rate limit exceeded, slow down",
        );
    }

    fn parse_full(&self, text: &str, ctx: &mut ws::WebsocketContext<Self>) -> Option<Message> {
        match Message::parse(text) {
            Ok(m) => Some(m),
            Err(e) => {
                let p = Header::parse(text).map(|h| Partial {
                    id: Some(h.id),
                    from: Some(h.from.into_owned()),
                });
                self.bad_request(ctx, &e, &p.unwrap_or_default());
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
        let Some(msg) = self.parse_full(text, ctx) else {
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
            return self.reply(ctx, &r);
        }
        let request = NodeRequest {
            session: self.key.clone(),
            msg: msg.clone(),
        };
        let answer: ResponseFuture<Message> = match service {
            Service::Allocation => answered(self.node.allocation.send(request), msg),
            Service::Subscriptions => answered(self.node.subscriptions.send(request), msg),
            Service::Registry => answered(
                self.node
                    .registry
                    .send(crate::domain_registry::RegistryRequest(msg.clone())),
                msg,
            ),
            Service::Idp => answered(
                self.node.idp.send(crate::identity::IdpRequest {
                    message: msg.clone(),
                    source: self.ip,
                }),
                msg,
            ),
            Service::Policy => self.manage_policies(msg),
            Service::Session => return,
        };
        // control-plane requests are answered in order: nothing else from this
        // client is read until the answer is written
        ctx.wait(
            answer
                .into_actor(self)
                .map(|resp, act, ctx| act.reply(ctx, &resp)),
        );
    }

    fn session_control(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(msg) = self.parse_full(text, ctx) else {
            return;
        };
        let _span =
            tracing::info_span!("node.session", kind = %msg.kind, from = %msg.from).entered();
        match msg.kind {
            MessageType::Open => {
                let identity = match self.authenticate(&msg) {
                    Ok(identity) => identity,
                    Err(why) => return self.unauthorised(ctx, &msg, &why),
                };
                let f = self.node.sessions.send(Open {
                    key: self.key.clone(),
                    runtime: msg.from.to_string(),
                    identity: identity.clone(),
                });
                ctx.wait(f.into_actor(self).map(move |r, act, ctx| {
                    let r = r.unwrap_or_else(|_| Err(gone()));
                    let resp = match r {
                        Ok(token) => {
                            act.runtime = Some(Arc::from(msg.from.as_str()));
                            act.identity = identity.map(stamped_identity);
                            token_reply(&msg, &token)
                        }
                        Err(e) => msg.reply_error(e.code, e.description),
                    };
                    act.reply(ctx, &resp);
                }));
            }
            MessageType::ReOpen => {
                let (token, runtime) = match reopen_token(&msg) {
                    Some(t) => t,
                    None => {
                        let r = msg.reply_error(
                            ResponseCode::BadRequest,
                            "re-open needs body.runtimeToken (or from = <runtimeURL>/<token>)",
                        );
                        return self.reply(ctx, &r);
                    }
                };
                let f = self.node.sessions.send(ReOpen {
                    key: self.key.clone(),
                    token,
                    runtime: runtime.clone(),
                });
                ctx.wait(f.into_actor(self).map(move |r, act, ctx| {
                    let resp = match r.unwrap_or_else(|_| Err(gone())) {
                        Ok(token) => {
                            act.key = token.clone();
                            act.runtime = Some(Arc::from(runtime.as_str()));
                            act.identity =
                                act.node.router.identity_of(&token).map(stamped_identity);
                            token_reply(&msg, &token)
                        }
                        Err(e) => msg.reply_error(e.code, e.description),
                    };
                    act.reply(ctx, &resp);
                }));
            }
            MessageType::Close => {
                self.closed = true;
                let f = self.node.sessions.send(Close {
                    key: self.key.clone(),
                });
                // everything is freed before the 200 goes out
                ctx.wait(f.into_actor(self).map(move |_, act, ctx| {
                    act.reply(ctx, &msg.reply(ResponseCode::Ok));
                    ctx.close(Some(ws::CloseCode::Normal.into()));
                    ctx.stop();
                }));
            }
            MessageType::Ping => self.reply(ctx, &msg.reply(ResponseCode::Ok)),
            _ => {
                let r = msg.reply_error(
                    ResponseCode::BadRequest,
                    format!(
                        "mn:/session takes open, re-open and close, not {}",
                        msg.kind
                    ),
                );
                self.reply(ctx, &r);
            }
        }
    }

    /// Checks the credentials of an `open`: an ID token (a user) or a device token
    /// (the runtime itself, whose URL must then be the token's subject), in
    /// `body.idToken`, `body.token` or `body.accessToken`. Without one, the session
    /// is anonymous if `auth.mode` is `optional`.
    fn authenticate(&self, msg: &Message) -> Result<Option<Arc<str>>, String> {
        let token = ["idToken", "token", "accessToken"]
            .iter()
            .find_map(|k| msg.body.extra.get(*k))
            .map(|t| t.as_str().ok_or("the token must be a string"))
            .transpose()?;
        let Some(token) = token else {
            return match self.node.config.auth.mode {
                AuthMode::Optional => Ok(None),
                AuthMode::Required => {
                    Err("authentication required: open with body.idToken".to_owned())
                }
            };
        };
        let claims = self
            .node
            .verifier
            .verify_token(token)
            .map_err(|e| e.to_string())?;
        if claims.token_use == TokenUse::Device && claims.sub != msg.from.as_str() {
            return Err(format!(
                "this device token is for {}, not {}",
                claims.sub, msg.from
            ));
        }
        Ok(Some(Arc::from(claims.sub.as_str())))
    }

    /// 401 to the `open`, then the socket closes.
    fn unauthorised(&mut self, ctx: &mut ws::WebsocketContext<Self>, msg: &Message, why: &str) {
        warn!(peer = %self.peer, runtime = %msg.from, reason = why, "open refused");
        self.node
            .router
            .stats
            .unauthorised
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.reply(ctx, &msg.reply_error(ResponseCode::Unauthorized, why));
        self.stop_reason = "unauthorised";
        close_for_policy(ctx, "unauthorised");
    }

    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        let max = self.node.config.session.max_frame_size;
        let (start, bytes, last) = match item {
            actix_http::ws::Item::FirstText(b) => (true, b, false),
            actix_http::ws::Item::FirstBinary(_) => {
                ctx.text(error_frame(
                    None,
                    "mn:/validator",
                    None,
                    ResponseCode::BadRequest,
                    "binary frames are not supported",
                ));
                self.fragments = None;
                return;
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
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Size,
                description: Some(format!("message larger than {max} bytes")),
            }));
            ctx.stop();
            return;
        }
        buf.extend_from_slice(&bytes);
        if last {
            let whole = self.fragments.take().unwrap_or_default().freeze();
            match ByteString::try_from(whole) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => ctx.text(error_frame(
                    None,
                    "mn:/validator",
                    None,
                    ResponseCode::BadRequest,
                    "text frame is not UTF-8",
                )),
            }
        }
    }
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

fn token_reply(msg: &Message, token: &str) -> Message {
    let mut r = msg.reply(ResponseCode::Ok);
    r.body
        .extra
        .insert("runtimeToken".to_owned(), Value::String(token.to_owned()));
    r
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
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(text, ctx),
            Ok(ws::Message::Binary(_)) => ctx.text(error_frame(
                None,
                "mn:/validator",
                None,
                ResponseCode::BadRequest,
                "binary frames are not supported; send one JSON message per text frame",
            )),
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
                ctx.close(Some(ws::CloseReason {
                    code,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}
