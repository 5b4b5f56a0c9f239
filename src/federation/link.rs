//! [`PeerLink`]: the actor of one peer domain, for as long as the node runs.
//!
//! It is the peer's *session* on this node: the router hands it every frame for an
//! address of the peer's domain (key `peer:<domain>`, with a byte account like a
//! session's), and subscriptions the peer holds here are held under that key. It
//! owns at most one WebSocket connection to the peer's node at a time — dialled by
//! it, or accepted by the `/federation` endpoint and handed over ([`Attach`]) —
//! and
//!
//! * **out**: writes the frames it is handed to the connection; while there is none
//!   it keeps them in a bounded queue (`queue_frames`, `queue_bytes`), redials with
//!   exponential backoff and jitter, and answers each request that waited
//!   `delivery_timeout_ms` (or found the queue full) with 504 "domain unreachable:
//!   <domain>". A frame that came over a link is never routed to a link
//!   ([`Router::route_from_peer`](crate::node::router::Router::route_from_peer)),
//!   so a frame crosses one link at most: routing loops cannot form;
//! * **in**: treats the peer like a session — the same frame parser, rate limit and
//!   abuse account ([`Admission`]), and flow control ([`Gate`]: a congested local
//!   recipient stops the reading of the link) — and checks that the peer sends only
//!   from addresses of its own domain and to addresses of this node's domain (or to
//!   resources local sessions subscribed to at the peer, see
//!   [`Mirror`](crate::node::subscriptions::Mirror)); otherwise 403. The node's
//!   policies decide each frame with the peer's user (the `assertedIdentity` the
//!   peer's node vouches for) or else the peer's node as the authenticated
//!   identity, and the peer's domain as its domain. Node services answer over the
//!   link: `/sm`, registry reads, the identity provider;
//! * decides, when the peer dials while a connection exists or is being dialled,
//!   which one stays: the one dialled by the lower domain name ([`Offer`]).
//!
//! A link down for longer than `session.grace_period_ms` drops the subscriptions
//! the peer held here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{Message as WsMessage, ProtocolError};
use bytestring::ByteString;
use futures_util::StreamExt;
use hyperty_actors::message::{MessageType, ResponseCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::directory::Directory;
use super::error::FederationError;
use super::{LinkInfo, LinkState, Links};
use crate::identity::IssuePeerToken;
use crate::node::frame::{asserted_identity, stamped, Header, ToRef};
use crate::node::outbound::OutboundQueue;
use crate::node::router::{domain_of_address, Kick, Outbound, Routed, Service, SessionKey};
use crate::node::subscriptions::DropSubscriptions;
use crate::node::NodeState;
use crate::server::inbound::{Admission, Gate, Gated, Refusal};
use crate::server::policy::permits;
use crate::server::refusal::{error_frame, refusal_answer};
use crate::server::services::{answer_service, answer_text, full_message, ServiceCaller};

/// The header carrying the accepting node's peer token in its upgrade response.
pub const PEER_TOKEN_HEADER: &str = "hyperty-peer-token";

/// Frames read from a connection and not yet handled.
pub(crate) const INBOUND_WINDOW: usize = 256;

/// What a connection's writer is given.
#[derive(Debug)]
pub(crate) enum Out {
    /// A routed frame and the bytes it was charged to the link's account.
    Frame(ByteString, usize),
    /// A frame of the link itself (answers, errors, pings, close).
    Control(WsMessage),
}

/// One decoded item of a connection.
pub(crate) type Inbound = Result<WsMessage, ProtocolError>;

/// A connection handed to the link.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Attach {
    pub(crate) conn_id: u64,
    pub(crate) frames: mpsc::Receiver<Inbound>,
    pub(crate) out: mpsc::UnboundedSender<Out>,
    pub(crate) dialled: bool,
}

/// The peer dials us: may its connection `conn_id` replace what we have?
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), FederationError>")]
pub(crate) struct Offer {
    pub(crate) conn_id: u64,
}

/// Dial the peer now (unless connected or connecting).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Dial;

/// The node is stopping: close the connection (with a close frame) and stop.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// What a connection's reader reports to the link.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
enum LinkEvent {
    /// A decoded item of connection `.0`.
    Item(u64, Inbound),
    /// Connection `.0` ended.
    Ended(u64),
}

#[derive(Debug)]
enum State {
    /// No connection; redial at the next backoff tick.
    Down,
    /// Dialling.
    Dialling,
    /// An accepted connection is being set up.
    Accepting(u64),
    /// Connected.
    Live {
        conn_id: u64,
        out: mpsc::UnboundedSender<Out>,
        dialled: bool,
    },
}

/// A frame waiting for the link.
struct Parked {
    frame: ByteString,
    since: Instant,
    /// For requests: id, sender and recipient, to answer 504.
    request: Option<(Value, String, String)>,
}

/// The actor of one peer domain (see the module docs).
pub struct PeerLink {
    domain: Arc<str>,
    key: SessionKey,
    node: NodeState,
    directory: Arc<Directory>,
    links: Links,
    state: State,
    generation: u64,
    attempts: u32,
    queue: Arc<OutboundQueue>,
    parked: VecDeque<Parked>,
    parked_bytes: usize,
    gate: Arc<Gate>,
    admission: Admission,
    last_heard: Instant,
    down_since: Option<Instant>,
    opened: u64,
    /// A `[[peers]]` entry: never retired.
    configured: bool,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("domain", &self.domain)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    pub(crate) fn new(
        domain: &str,
        node: NodeState,
        directory: Arc<Directory>,
        links: Links,
        queue: Arc<OutboundQueue>,
        configured: bool,
    ) -> PeerLink {
        PeerLink {
            domain: Arc::from(domain),
            key: crate::node::router::peer_key(domain),
            admission: Admission::new(&node.config.limits),
            node,
            directory,
            links,
            state: State::Down,
            generation: 0,
            attempts: 0,
            queue,
            parked: VecDeque::new(),
            parked_bytes: 0,
            gate: Arc::new(Gate::default()),
            last_heard: Instant::now(),
            down_since: Some(Instant::now()),
            opened: 0,
            configured,
        }
    }

    fn own(&self) -> &str {
        self.directory.own()
    }

    fn publish_info(&self) {
        let (state, dialled) = match &self.state {
            State::Down => (LinkState::Down, false),
            State::Dialling | State::Accepting(_) => (LinkState::Connecting, false),
            State::Live { dialled, .. } => (LinkState::Live, *dialled),
        };
        self.links.info.insert(
            self.domain.to_string(),
            LinkInfo {
                state,
                dialled,
                opened: self.opened,
                queued: self.parked.len(),
            },
        );
    }

    /// Dials the peer unless a connection exists or is being made.
    fn dial(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.state, State::Down) {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        self.state = State::Dialling;
        self.publish_info();
        let domain = self.domain.to_string();
        let directory = self.directory.clone();
        let idp = self.node.idp.clone();
        let lifetime = directory.config().token_lifetime_secs;
        let max_frame = self.node.config.session.max_frame_size;
        let queue = self.queue.clone();
        let dialling = async move {
            let endpoints = directory.endpoints(&domain).await?;
            let token = idp
                .send(IssuePeerToken {
                    peer: domain.clone(),
                    lifetime_secs: lifetime,
                })
                .await
                .map_err(|e| FederationError::unreachable(&domain, e))?
                .map_err(|e| FederationError::unreachable(&domain, e))?;
            let client = crate::bridge::http_client(directory.config().connect_timeout());
            let connecting = client
                .ws(endpoints.ws.as_str())
                .bearer_auth(token)
                .max_frame_size(max_frame)
                .connect()
                .await;
            let (resp, framed) = match connecting {
                Ok(c) => c,
                Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 409 => {
                    return Err(FederationError::LinkExists(domain));
                }
                Err(e) => {
                    directory.forget(&domain);
                    return Err(FederationError::unreachable(
                        &domain,
                        format!("{}: {e}", endpoints.ws),
                    ));
                }
            };
            let theirs = resp
                .headers()
                .get(PEER_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    FederationError::unauthenticated(&domain, "the node sent no peer token")
                })?
                .to_owned();
            directory.verify(&domain, &endpoints, &theirs).await?;
            Ok(super::transport::dialled(framed, queue))
        };
        ctx.spawn(dialling.into_actor(self).map(move |result, act, ctx| {
            if act.generation != generation || !matches!(act.state, State::Dialling) {
                // an accepted connection won meanwhile
                return;
            }
            match result {
                Ok((frames, out)) => {
                    let conn_id = crate::server::session::next_conn_id();
                    act.attach(conn_id, frames, out, true, ctx);
                }
                Err(FederationError::LinkExists(_)) => {
                    debug!(peer = %act.domain, "the peer keeps its own link; waiting for it");
                    act.lost(ctx, "the peer keeps the link it dialled");
                }
                Err(e) => {
                    warn!(peer = %act.domain, error = %e, "dialling the peer failed");
                    if matches!(
                        e,
                        FederationError::UnknownDomain(_) | FederationError::Disabled
                    ) && !act.configured
                    {
                        // nothing to wait for
                        act.retire(ctx, &e.to_string());
                        return;
                    }
                    act.lost(ctx, &e.to_string());
                }
            }
        }));
    }

    fn attach(
        &mut self,
        conn_id: u64,
        mut frames: mpsc::Receiver<Inbound>,
        out: mpsc::UnboundedSender<Out>,
        dialled: bool,
        ctx: &mut Context<Self>,
    ) {
        if let State::Live { out: old, .. } = &self.state {
            let _ = old.send(Out::Control(WsMessage::Close(None)));
        }
        self.state = State::Live {
            conn_id,
            out,
            dialled,
        };
        self.attempts = 0;
        self.opened += 1;
        self.last_heard = Instant::now();
        self.down_since = None;
        self.gate.resume();
        let stream = futures_util::stream::poll_fn(move |cx| frames.poll_recv(cx));
        ctx.add_stream(
            Gated::new(stream, self.gate.clone())
                .map(move |m| LinkEvent::Item(conn_id, m))
                .chain(futures_util::stream::once(async move {
                    LinkEvent::Ended(conn_id)
                })),
        );
        info!(peer = %self.domain, dialled, conn = conn_id, queued = self.parked.len(), "peer link live");
        let parked = std::mem::take(&mut self.parked);
        self.parked_bytes = 0;
        for p in parked {
            self.write(Out::Frame(p.frame, 0));
        }
        self.publish_info();
    }

    /// Writes to the live connection; false if there is none.
    fn write(&self, out: Out) -> bool {
        match &self.state {
            State::Live { out: tx, .. } => tx.send(out).is_ok(),
            _ => false,
        }
    }

    fn lost(&mut self, ctx: &mut Context<Self>, why: &str) {
        if let State::Live { out, .. } = &self.state {
            let _ = out.send(Out::Control(WsMessage::Close(None)));
            warn!(peer = %self.domain, reason = why, "peer link lost");
        }
        self.state = State::Down;
        self.gate.resume();
        let since = *self.down_since.get_or_insert_with(Instant::now);
        self.publish_info();
        let f = self.directory.config();
        let delay = f
            .reconnect_initial()
            .saturating_mul(1 << self.attempts.min(16))
            .min(f.reconnect_max());
        self.attempts += 1;
        ctx.run_later(crate::bridge::jitter(delay), |act, ctx| act.dial(ctx));
        let grace = self.node.config.session.grace_period();
        ctx.run_later(grace, move |act, _| {
            if act.down_since == Some(since) {
                info!(peer = %act.domain, "peer link down for the grace period: its subscriptions end");
                act.node.subscriptions.do_send(DropSubscriptions(act.key.clone()));
            }
        });
    }

    /// Keeps a frame until the link is up; a request that cannot wait is answered
    /// 504 at once.
    fn park(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        let request = Header::parse(&frame).ok().and_then(|h| {
            h.kind
                .expects_response()
                .then(|| (h.id.to_json(), h.from.to_string(), h.to.first().to_owned()))
        });
        let f = self.directory.config();
        if self.parked.len() >= f.queue_frames || self.parked_bytes + frame.len() > f.queue_bytes {
            self.node
                .router
                .stats
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(r) = request {
                self.unreachable(&r, "its queue is full");
            }
            return;
        }
        self.parked_bytes += frame.len();
        self.parked.push_back(Parked {
            frame,
            since: Instant::now(),
            request,
        });
        self.dial(ctx);
    }

    /// 504 "domain unreachable" to the sender of a request.
    fn unreachable(&self, (id, from, to): &(Value, String, String), why: &str) {
        let text = error_frame(
            Some(id.clone()),
            to,
            Some(from),
            ResponseCode::GatewayTimeout,
            &format!("domain unreachable: {} ({why})", self.domain),
        );
        let to = ToRef::One(from.as_str().into());
        self.node.router.route(&to, &ByteString::from(text));
    }

    /// Leaves the peer table for good (a discovered peer that runs no node, or
    /// whose link stayed down with nothing waiting for `retire_after_ms`): waiting
    /// requests get 504, waiting notifications are dropped, the peer's
    /// subscriptions here end, and the domain's entry is free for a later link.
    fn retire(&mut self, ctx: &mut Context<Self>, why: &str) {
        info!(peer = %self.domain, reason = why, "peer link retired");
        self.fail_requests(why);
        let dropped = self.parked.len() as u64;
        self.parked.clear();
        self.parked_bytes = 0;
        self.node
            .router
            .stats
            .dropped
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        self.node
            .subscriptions
            .do_send(DropSubscriptions(self.key.clone()));
        self.links.retire(&self.domain, &ctx.address());
        ctx.stop();
    }

    /// Answers 504 to every waiting request.
    fn fail_requests(&mut self, why: &str) {
        let mut kept = VecDeque::with_capacity(self.parked.len());
        for p in std::mem::take(&mut self.parked) {
            match &p.request {
                Some(r) => {
                    self.parked_bytes -= p.frame.len();
                    self.unreachable(r, why);
                }
                None => kept.push_back(p),
            }
        }
        self.parked = kept;
    }

    /// Answers 504 to the requests that waited too long, and drops notifications
    /// that waited the grace period.
    fn expire(&mut self) {
        let f = self.directory.config();
        let (requests, others) = (
            f.delivery_timeout(),
            self.node.config.session.grace_period(),
        );
        let mut kept = VecDeque::with_capacity(self.parked.len());
        for p in std::mem::take(&mut self.parked) {
            let age = p.since.elapsed();
            match &p.request {
                Some(r) if age >= requests => {
                    self.parked_bytes -= p.frame.len();
                    self.unreachable(r, "no link in time");
                }
                None if age >= others => {
                    self.parked_bytes -= p.frame.len();
                    self.node
                        .router
                        .stats
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                _ => kept.push_back(p),
            }
        }
        self.parked = kept;
        if !self.parked.is_empty() || !matches!(self.state, State::Live { .. }) {
            self.publish_info();
        }
    }

    fn reply_text(&self, text: String) {
        self.write(Out::Control(WsMessage::Text(ByteString::from(text))));
    }

    /// Refuses a frame from the peer, as a session's are refused.
    fn refuse(&self, ctx: &mut Context<Self>, h: &Header<'_>, code: ResponseCode, why: &str) {
        warn!(peer = %self.domain, id = %h.id, from = %h.loggable_from(), to = %h.to.first(), code = code.as_u16(), reason = why, "frame from a peer refused");
        if let Some(answer) = refusal_answer(&self.node, h, code, why, || self.count_refusal(ctx)) {
            self.reply_text(answer);
        }
    }

    /// True if the link is (now) closed as abusive.
    fn count_refusal(&self, ctx: &mut Context<Self>) -> bool {
        match self.admission.refuse() {
            Refusal::Counted => false,
            Refusal::Abusive => true,
            Refusal::NowAbusive => {
                self.node
                    .router
                    .stats
                    .abusive
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(peer = %self.domain, "closing an abusive peer link");
                ctx.notify(Kick {
                    reason: "rate limit exceeded: too many refused frames".to_owned(),
                });
                true
            }
        }
    }

    /// The peer may send to `to`: an address of this domain, or a resource of the
    /// peer's domain that local sessions subscribed to there.
    fn may_receive(&self, to: &str) -> bool {
        match domain_of_address(to) {
            Some(d) if d == self.own() => true,
            Some(d) if d == &*self.domain => self.node.router.subscribers.contains_key(to),
            _ => false,
        }
    }

    fn on_text(&mut self, text: ByteString, ctx: &mut Context<Self>) {
        let router = self.node.router.clone();
        router
            .stats
            .frames_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let h = match Header::parse(&text) {
            Ok(h) => h,
            Err((e, p)) => {
                let _ = self.admission.check();
                router
                    .stats
                    .bad_requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(peer = %self.domain, error = %e, "malformed frame from a peer");
                if !self.count_refusal(ctx) {
                    self.reply_text(error_frame(
                        p.id.clone(),
                        p.to.as_deref().unwrap_or("mn:/validator"),
                        p.from.as_deref(),
                        ResponseCode::BadRequest,
                        &e.to_string(),
                    ));
                }
                return;
            }
        };
        let _span = tracing::trace_span!("federation.in", peer = %self.domain, id = %h.id, kind = %h.kind, from = %h.loggable_from(), to = %h.to.first()).entered();
        if !self.admission.check() {
            return self.refuse(
                ctx,
                &h,
                ResponseCode::TooManyRequests,
                "rate limit exceeded, slow down",
            );
        }
        if domain_of_address(&h.from) != Some(&*self.domain) {
            let why = format!(
                "from address {} is not of the peer's domain {}",
                h.from, self.domain
            );
            return self.refuse(ctx, &h, ResponseCode::Forbidden, &why);
        }
        if let Some(t) = h.to.iter().find(|t| !self.may_receive(t)) {
            let why = format!("{t} is not an address of {}", self.own());
            return self.refuse(ctx, &h, ResponseCode::Forbidden, &why);
        }
        let service = router.service(h.to.first());
        if let Some(t) = h.to.iter().find(|t| {
            router.is_reserved(t)
                && !matches!(
                    router.service(t),
                    Some(Service::Subscriptions | Service::Registry | Service::Idp)
                )
        }) {
            let why = format!("{t} is not open to peers");
            return self.refuse(ctx, &h, ResponseCode::Forbidden, &why);
        }
        // the peer's node vouches for its own users; anything else it stamped goes
        let vouched = asserted_identity(&text, h.body)
            .filter(|i| domain_of_address(i) == Some(&*self.domain));
        let node_identity = format!("domain://msg-node.{}", self.domain);
        let user = vouched.as_deref().unwrap_or(&node_identity);
        let Some(stamp) = permits(&self.node, &h, Some(user), Some(&self.domain)) else {
            return self.refuse(ctx, &h, ResponseCode::Forbidden, "Blocked by policy");
        };
        if let Some(s) = service {
            return self.service_request(s, &h, &text, user, ctx);
        }
        let keep = stamp && vouched.is_some();
        let restamped = stamped(&text, h.body, None)
            .filter(|_| !keep)
            .map(ByteString::from);
        let frame = restamped.as_ref().unwrap_or(&text);
        let routed = router.route_from_peer(&h.to, frame, h.kind == MessageType::Event);
        if let Routed::Delivered {
            queued, buffered, ..
        } = &routed
        {
            router.metrics.frames_out(&h.kind, queued + buffered);
        }
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
            Routed::Delivered {
                congested: Some(q), ..
            } => {
                let deadline = self.node.config.session.write_deadline();
                if let Some(hold) = self.gate.hold(q, deadline) {
                    router
                        .stats
                        .throttled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ctx.spawn(actix::fut::wrap_future(hold));
                }
            }
            Routed::Delivered { .. } => {}
            Routed::Service(s) => self.service_request(s, &h, &text, user, ctx),
            Routed::NoRoute(t) => {
                self.refuse(ctx, &h, ResponseCode::NotFound, &format!("no route to {t}"))
            }
        }
    }

    fn service_request(
        &mut self,
        service: Service,
        h: &Header<'_>,
        text: &str,
        user: &str,
        ctx: &mut Context<Self>,
    ) {
        if h.kind == MessageType::Response {
            return;
        }
        if service == Service::Registry && h.kind != MessageType::Read {
            return self.refuse(
                ctx,
                h,
                ResponseCode::Forbidden,
                "peers may only read the domain registry",
            );
        }
        let msg = match full_message(text, h) {
            Ok(m) => m,
            Err(e) => return self.refuse(ctx, h, ResponseCode::BadRequest, &e.to_string()),
        };
        let caller = ServiceCaller {
            key: self.key.clone(),
            identity: Some(Arc::from(user)),
            runtime: None,
            ip: None,
        };
        let id = h.id.clone().into_owned();
        let Some(answer) = answer_service(&self.node, service, msg, caller) else {
            return;
        };
        let answer = answer.into_actor(self).map(move |resp, act, _| {
            act.node.router.metrics.answered(resp.body.code);
            act.reply_text(answer_text(&resp, &id))
        });
        match service {
            // subscriptions and audiences take effect before the peer's next frames
            // are routed, as a session's control-plane requests do
            Service::Subscriptions => ctx.wait(answer),
            _ => {
                ctx.spawn(answer);
            }
        }
    }
}

impl Actor for PeerLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.node.config.session.outbound_queue);
        self.publish_info();
        let f = self.directory.config();
        let every = (f.delivery_timeout() / 4).max(Duration::from_millis(20));
        ctx.run_interval(every, |act, ctx| {
            act.expire();
            let idle = act.directory.config().retire_after();
            if !act.configured
                && act.parked.is_empty()
                && matches!(act.state, State::Down)
                && act.down_since.is_some_and(|t| t.elapsed() >= idle)
            {
                act.retire(ctx, "down with nothing waiting");
            }
        });
        let timeout = self.node.config.session.client_timeout();
        ctx.run_interval(
            self.node.config.session.heartbeat_interval(),
            move |act, ctx| {
                if !matches!(act.state, State::Live { .. }) {
                    return;
                }
                if act.last_heard.elapsed() > timeout {
                    act.lost(ctx, "no frame from the peer within the client timeout");
                } else {
                    act.write(Out::Control(WsMessage::Ping(Default::default())));
                }
            },
        );
    }
}

impl Handler<Outbound> for PeerLink {
    type Result = ();
    fn handle(&mut self, Outbound(frame): Outbound, ctx: &mut Context<Self>) {
        let _span = tracing::trace_span!("federation.out", peer = %self.domain).entered();
        let len = frame.len();
        if let State::Live { out, .. } = &self.state {
            if out.send(Out::Frame(frame.clone(), len)).is_ok() {
                return;
            }
        }
        // no connection: the frame leaves the router's account for the park queue
        self.queue.written(len);
        self.park(frame, ctx);
    }
}

impl Handler<Shutdown> for PeerLink {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        let reason = actix_http::ws::CloseReason {
            code: actix_http::ws::CloseCode::Away,
            description: Some("node shutting down".to_owned()),
        };
        self.write(Out::Control(WsMessage::Close(Some(reason))));
        self.fail_requests("its node is shutting down");
        ctx.stop();
    }
}

impl Handler<Dial> for PeerLink {
    type Result = ();
    fn handle(&mut self, _: Dial, ctx: &mut Context<Self>) {
        self.dial(ctx);
    }
}

impl Handler<Kick> for PeerLink {
    type Result = ();
    fn handle(&mut self, k: Kick, ctx: &mut Context<Self>) {
        if matches!(self.state, State::Live { .. }) {
            self.lost(ctx, &k.reason);
        }
    }
}

impl Handler<Offer> for PeerLink {
    type Result = Result<(), FederationError>;
    fn handle(&mut self, o: Offer, ctx: &mut Context<Self>) -> Self::Result {
        let ours_wins = self.own() < &*self.domain;
        let keep_ours = match &self.state {
            State::Live { dialled: true, .. } | State::Dialling => ours_wins,
            _ => false,
        };
        if keep_ours {
            return Err(FederationError::LinkExists(self.domain.to_string()));
        }
        // the peer's connection wins: whatever we dialled is abandoned
        self.generation += 1;
        if let State::Live { out, .. } = &self.state {
            let _ = out.send(Out::Control(WsMessage::Close(None)));
        }
        self.state = State::Accepting(o.conn_id);
        self.publish_info();
        let conn_id = o.conn_id;
        ctx.run_later(
            self.directory.config().connect_timeout(),
            move |act, ctx| {
                if matches!(act.state, State::Accepting(id) if id == conn_id) {
                    act.lost(ctx, "the accepted connection never came up");
                }
            },
        );
        Ok(())
    }
}

impl Handler<Attach> for PeerLink {
    type Result = ();
    fn handle(&mut self, a: Attach, ctx: &mut Context<Self>) {
        if !matches!(self.state, State::Accepting(id) if id == a.conn_id) {
            let _ = a.out.send(Out::Control(WsMessage::Close(None)));
            return;
        }
        self.attach(a.conn_id, a.frames, a.out, a.dialled, ctx);
    }
}

impl StreamHandler<LinkEvent> for PeerLink {
    fn handle(&mut self, item: LinkEvent, ctx: &mut Context<Self>) {
        let current = match &self.state {
            State::Live { conn_id, .. } => Some(*conn_id),
            _ => None,
        };
        match item {
            LinkEvent::Ended(id) if Some(id) == current => self.lost(ctx, "connection closed"),
            LinkEvent::Item(id, m) if Some(id) == current => {
                self.last_heard = Instant::now();
                match m {
                    Ok(WsMessage::Text(t)) => self.on_text(t, ctx),
                    Ok(WsMessage::Ping(p)) => {
                        self.write(Out::Control(WsMessage::Pong(p)));
                    }
                    Ok(WsMessage::Close(reason)) => {
                        let why = reason
                            .and_then(|r| r.description)
                            .unwrap_or_else(|| "closed by the peer".to_owned());
                        self.lost(ctx, &why);
                    }
                    Ok(WsMessage::Binary(_) | WsMessage::Continuation(_)) => {
                        warn!(peer = %self.domain, "binary frame from a peer refused");
                        if !self.count_refusal(ctx) {
                            self.reply_text(error_frame(
                                None,
                                "mn:/validator",
                                None,
                                ResponseCode::BadRequest,
                                "binary frames are not supported",
                            ));
                        }
                    }
                    Ok(WsMessage::Pong(_) | WsMessage::Nop) => {}
                    Err(ProtocolError::Io(e)) => self.lost(ctx, &format!("connection ended: {e}")),
                    Err(e) => {
                        warn!(peer = %self.domain, error = %e, "protocol error on a peer link");
                        self.lost(ctx, &format!("protocol error: {e}"));
                    }
                }
            }
            _ => {}
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}
