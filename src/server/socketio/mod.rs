//! Socket.IO at `/socket.io/`: the dialect of the reTHINK Node.js messaging node
//! (socket.io 1.x: Engine.IO 3, Socket.IO protocol 4), so that its protostub
//! (socket.io-client 1.x) connects to this node unchanged.
//!
//! | client | node |
//! |---|---|
//! | `GET /socket.io/?EIO=3&transport=polling` | a payload of `0{"sid":…,"upgrades":["websocket"],"pingInterval":…,"pingTimeout":…}` and `40` (connected to `/`) |
//! | `GET /socket.io/?EIO=3&transport=websocket` | the same two packets as frames, `"upgrades":[]` |
//! | `GET …&transport=polling&sid=<sid>` | the packets waiting (a long-poll; `6` noop when nothing came within `transports.poll_max_wait_ms`) |
//! | `POST …&transport=polling&sid=<sid>` | a payload of client packets; `ok` |
//! | `GET …&transport=websocket&sid=<sid>`, `2probe`, `5` | `3probe`, then the session moves to the WebSocket |
//! | `2` (ping) | `3` (pong) |
//! | `42["message",<message or its JSON text>]` | routed as any reTHINK frame; frames for the session come as `42["message",{…}]` |
//! | `42<n>["message",…]` | the same, acknowledged with `43<n>[{"code":200}]` once the frame is queued to every recipient, or `43<n>[{"code":<reTHINK code>,"description":…}]` when it is refused |
//! | `41`, `1` | the client leaves (its session has the grace period) |
//! | — | `41` when the node ends the session (after a reTHINK `close`, when it is refused or evicted), preceded by `44"<reason>"` when refused |
//!
//! Polling payloads are text for `b64=1`, binary (`application/octet-stream`)
//! otherwise, and either form is taken in a POST (see [`packet`]). Bad packets get
//! a Socket.IO error (`44"…"`, `44/nsp,"Invalid namespace"`) and count as refused
//! frames; broken payloads, unknown sessions and bad requests get Engine.IO's HTTP
//! errors (`400 {"code":<n>,"message":…}`: 0 unknown transport, 1 unknown session,
//! 3 bad request, 5 unsupported protocol version); a POST larger than
//! `session.max_frame_size` gets `413`.
//!
//! Each Engine.IO session is one [`SioSession`] actor running the
//! [session core](super::session); while polling, packets wait in an [`Outbox`];
//! on a WebSocket they go to the connection's
//! [`EioSocket`](super::ws::EioSocket), which only frames.

pub(crate) mod packet;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytestring::ByteString;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::oneshot;
use tracing::debug;

use crate::node::handoff::Pass;
use crate::node::outbound::{ConnSocket, OutboundQueue, QueueLimits};
use crate::node::router::{Kick, Outbound, OutboundBurst};
use crate::node::NodeState;
use crate::server::inbound::Gate;
use crate::server::polling::Outbox;
use crate::server::session::{self, End, SessionCore, SessionHost};
use crate::server::ws::{EioOut, EioSocket};
use packet::{Eio, Sio};

/// The node's live Engine.IO sessions by sid.
#[derive(Debug, Default)]
pub struct SioSessions(DashMap<Arc<str>, Entry>);

#[derive(Debug, Clone)]
struct Entry {
    addr: Addr<SioSession>,
    gate: Arc<Gate>,
    queue: Arc<OutboundQueue>,
}

/// Engine.IO packets from a polling POST.
#[derive(Debug, actix::Message)]
#[rtype(result = "bool")]
struct Posted(Vec<String>);

/// A polling GET.
#[derive(Debug, actix::Message)]
#[rtype(result = "Vec<String>")]
struct Polled {
    wait: Duration,
}

/// Engine.IO packets from WebSocket `socket`, in the order they came. The session
/// takes them one after the other as separate packets would be taken, and answers
/// the packets it has not taken yet: those after one that set off work the session
/// waits for, or after its reading was paused (a recipient is congested), to be
/// handed again behind that work or once reading resumes.
#[derive(Debug, actix::Message)]
#[rtype(result = "Vec<ByteString>")]
pub(crate) struct SocketPackets {
    pub(crate) socket: u64,
    pub(crate) texts: Vec<ByteString>,
}

/// WebSocket `socket` of a session has closed.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct SocketGone {
    pub(crate) socket: u64,
}

/// A WebSocket for a session: its only transport, or a probe to upgrade to.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
struct Attach {
    socket: u64,
    out: Recipient<EioOut>,
    probe: bool,
}

/// What carries a session's packets to its client.
#[derive(Debug)]
enum Transport {
    Polling,
    Socket(u64, Recipient<EioOut>),
}

/// The actor of one Engine.IO session.
pub struct SioSession {
    core: SessionCore,
    sid: Arc<str>,
    sessions: web::Data<SioSessions>,
    transport: Transport,
    /// A WebSocket probed for an upgrade.
    probe: Option<(u64, Recipient<EioOut>)>,
    outbox: Outbox,
    /// The highest ack id the client has asked for.
    last_ack: Option<u64>,
    ended: bool,
}

impl std::fmt::Debug for SioSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SioSession")
            .field("sid", &self.sid)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl SessionHost for SioSession {
    fn core(&mut self) -> &mut SessionCore {
        &mut self.core
    }

    fn core_ref(&self) -> &SessionCore {
        &self.core
    }

    fn write(&mut self, ctx: &mut Self::Context, frame: String) {
        self.send(ctx, packet::message(&frame), 0);
    }

    fn end(&mut self, ctx: &mut Self::Context, end: End) {
        if self.ended {
            return;
        }
        debug!(sid = %self.sid, ?end, "socket.io session ends");
        if let End::Refused(reason) = &end {
            self.send(ctx, packet::error(None, reason), 0);
        }
        self.send(ctx, "41".to_owned(), 0);
        self.ended = true;
        match &self.transport {
            Transport::Socket(..) => ctx.stop(),
            Transport::Polling => self.outbox.end(ctx),
        }
    }
}

impl SioSession {
    /// Sends one Engine.IO packet on the session's transport; `charged`: the bytes
    /// of a routed frame charged to the session's queue.
    fn send(&mut self, ctx: &mut Context<Self>, packet: String, charged: usize) {
        if self.ended {
            self.core.queue.written(charged);
            return;
        }
        match &self.transport {
            Transport::Socket(_, out) => out.do_send(EioOut::Text(packet, charged)),
            Transport::Polling => {
                self.core.queue.written(charged);
                if !self.outbox.push(packet) {
                    self.core.stop_reason = "outbound queue over budget";
                    self.end(
                        ctx,
                        End::Refused("too many packets waiting for a poll".to_owned()),
                    );
                }
            }
        }
    }

    /// A bad packet: a Socket.IO error to the client, counted as a refused frame.
    fn bad_packet(&mut self, ctx: &mut Context<Self>, nsp: Option<&str>, description: &str) {
        debug!(sid = %self.sid, description, "bad socket.io packet");
        self.core
            .node
            .router
            .stats
            .bad_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !session::count_refusal(self, ctx) {
            self.send(ctx, packet::error(nsp, description), 0);
        }
    }

    fn on_packet(&mut self, ctx: &mut Context<Self>, text: &str) {
        self.core.heard = true;
        let (kind, data) = match packet::eio(text) {
            Ok(p) => p,
            Err(e) => return self.bad_packet(ctx, None, &e.to_string()),
        };
        if kind != Eio::Message && !session::admit(self, ctx) {
            return;
        }
        match kind {
            Eio::Ping => self.send(ctx, format!("3{data}"), 0),
            Eio::Message => self.on_message(ctx, data),
            Eio::Close => {
                self.core.stop_reason = "closed by the client";
                ctx.stop();
            }
            Eio::Pong | Eio::Noop => {}
            Eio::Open | Eio::Upgrade => self.bad_packet(ctx, None, "unexpected engine.io packet"),
        }
    }

    fn on_message(&mut self, ctx: &mut Context<Self>, data: &str) {
        let packet = match packet::sio(data) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.core.admission.check();
                return self.bad_packet(ctx, None, &e.to_string());
            }
        };
        match packet {
            Sio::Connect(None) => self.send(ctx, "40".to_owned(), 0),
            Sio::Connect(Some(nsp)) | Sio::Message { nsp: Some(nsp), .. } => {
                let _ = self.core.admission.check();
                self.bad_packet(ctx, Some(nsp), "Invalid namespace")
            }
            Sio::Disconnect => {
                self.core.stop_reason = "socket.io disconnect";
                ctx.stop();
            }
            Sio::Other(why) => {
                let _ = self.core.admission.check();
                self.bad_packet(ctx, None, &why)
            }
            Sio::Message {
                nsp: None,
                ack,
                frame,
            } => {
                if let Some(id) = ack {
                    if self.last_ack.is_some_and(|last| id <= last) {
                        let _ = self.core.admission.check();
                        return self.bad_packet(
                            ctx,
                            None,
                            &format!("ack id {id} was used before: ack ids must increase"),
                        );
                    }
                    self.last_ack = Some(id);
                }
                let frame = ByteString::from(frame);
                match ack {
                    None => session::on_text(self, frame, ctx),
                    Some(id) => {
                        session::on_text_then(self, frame, ctx, move |act, ctx, refused| {
                            let value = session::ack_value(refused);
                            act.send(ctx, packet::ack(id, &value.to_string()), 0);
                        })
                    }
                }
            }
        }
    }

    fn upgrading(&self) -> bool {
        self.probe.is_some()
    }
}

impl Actor for SioSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.core.node.config.session.outbound_queue);
        session::started(self, ctx);
        let t = &self.core.node.config.transports;
        let timeout = t.socketio_timeout();
        let expiry = t.session_expiry();
        let tick = Duration::from_millis(t.socketio_ping_interval_ms).min(expiry / 2);
        ctx.run_interval(tick.max(Duration::from_millis(10)), move |act, ctx| {
            let polling = matches!(act.transport, Transport::Polling);
            let limit = if polling && !act.outbox.is_parked() {
                timeout.min(expiry)
            } else {
                timeout
            };
            if act.core.silent_for(limit) {
                act.core.stop_reason = "ping timeout";
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.outbox.flush();
        if let Transport::Socket(_, out) = &self.transport {
            out.do_send(EioOut::Close);
        }
        if let Some((_, out)) = self.probe.take() {
            out.do_send(EioOut::Close);
        }
        self.sessions.0.remove(&self.sid);
        self.core.stopped();
        debug!(sid = %self.sid, reason = self.core.stop_reason, "socket.io session stopped");
    }
}

impl Handler<Outbound> for SioSession {
    type Result = ();
    fn handle(&mut self, Outbound(frame): Outbound, ctx: &mut Self::Context) {
        let len = frame.len();
        self.send(ctx, packet::message(&frame), len);
    }
}

impl Handler<OutboundBurst> for SioSession {
    type Result = ();
    fn handle(&mut self, OutboundBurst(frames): OutboundBurst, ctx: &mut Self::Context) {
        for frame in frames {
            let len = frame.len();
            self.send(ctx, packet::message(&frame), len);
        }
    }
}

impl Handler<Kick> for SioSession {
    type Result = ();
    fn handle(&mut self, k: Kick, ctx: &mut Self::Context) {
        session::kicked(self, ctx, k);
    }
}

impl Handler<Posted> for SioSession {
    type Result = bool;
    fn handle(&mut self, Posted(packets): Posted, ctx: &mut Self::Context) -> bool {
        if self.ended || !matches!(self.transport, Transport::Polling) {
            return false;
        }
        // what the packets deliver is handed over when the run is done
        let _pass = Pass::open();
        for p in packets {
            self.on_packet(ctx, &p);
        }
        true
    }
}

impl Handler<Polled> for SioSession {
    type Result = ResponseFuture<Vec<String>>;
    fn handle(&mut self, p: Polled, ctx: &mut Self::Context) -> Self::Result {
        self.core.heard = true;
        let (tx, rx) = oneshot::channel();
        if self.ended || self.upgrading() || !matches!(self.transport, Transport::Polling) {
            let mut packets = self.outbox.take();
            if packets.is_empty() {
                packets.push("6".to_owned());
            }
            let _ = tx.send(packets);
            if self.ended && self.outbox.is_empty() {
                ctx.stop();
            }
        } else if let Some(n) = self.outbox.poll(tx) {
            ctx.run_later(p.wait, move |act, _| act.outbox.expire(n));
        }
        Box::pin(async move {
            let packets = rx.await.unwrap_or_default();
            if packets.is_empty() {
                vec!["6".to_owned()]
            } else {
                packets
            }
        })
    }
}

impl Handler<Attach> for SioSession {
    type Result = ();
    fn handle(&mut self, a: Attach, ctx: &mut Self::Context) {
        if self.ended {
            a.out.do_send(EioOut::Close);
            return;
        }
        if a.probe {
            if let Some((_, old)) = self.probe.replace((a.socket, a.out)) {
                old.do_send(EioOut::Close);
            }
        } else {
            self.transport = Transport::Socket(a.socket, a.out);
            let open = handshake(&self.sid, &self.core.node, false);
            self.send(ctx, open, 0);
            self.send(ctx, "40".to_owned(), 0);
        }
    }
}

impl Handler<SocketPackets> for SioSession {
    type Result = MessageResult<SocketPackets>;
    fn handle(&mut self, p: SocketPackets, ctx: &mut Self::Context) -> Self::Result {
        let _pass = Pass::open();
        let mut texts = p.texts.into_iter();
        while let Some(text) = texts.next() {
            self.socket_packet(ctx, p.socket, &text);
            if self.ended {
                // what follows the end is not taken
                break;
            }
            if ctx.waiting() || self.core.gate.is_paused() {
                return MessageResult(texts.collect());
            }
        }
        MessageResult(Vec::new())
    }
}

impl SioSession {
    /// One packet from WebSocket `socket`: the session's transport, or a probe.
    fn socket_packet(&mut self, ctx: &mut Context<Self>, socket: u64, text: &str) {
        let probing = self.probe.as_ref().is_some_and(|(id, _)| *id == socket);
        if !probing {
            if matches!(self.transport, Transport::Socket(id, _) if id == socket) {
                self.on_packet(ctx, text);
            }
            return;
        }
        self.core.heard = true;
        match text {
            "2probe" => {
                if let Some((_, out)) = &self.probe {
                    out.do_send(EioOut::Text("3probe".to_owned(), 0));
                }
                // the client pauses polling: answer its pending poll
                self.outbox.flush();
            }
            "5" => {
                let Some((id, out)) = self.probe.take() else {
                    return;
                };
                self.outbox.flush();
                for packet in self.outbox.take_all() {
                    out.do_send(EioOut::Text(packet, 0));
                }
                self.transport = Transport::Socket(id, out);
                debug!(sid = %self.sid, "socket.io session upgraded to websocket");
            }
            _ => {
                if let Some((_, out)) = self.probe.take() {
                    out.do_send(EioOut::Close);
                }
                self.bad_packet(ctx, None, "expected 2probe or 5 on an upgrading websocket");
            }
        }
    }
}

impl Handler<SocketGone> for SioSession {
    type Result = ();
    fn handle(&mut self, g: SocketGone, ctx: &mut Self::Context) {
        if self.probe.as_ref().is_some_and(|(id, _)| *id == g.socket) {
            self.probe = None;
        } else if matches!(self.transport, Transport::Socket(id, _) if id == g.socket) {
            self.core.stop_reason = "socket closed";
            ctx.stop();
        }
    }
}

/// Mounts `/socket.io/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/socket.io/", "/socket.io"] {
        cfg.route(path, web::get().to(get))
            .route(path, web::post().to(post));
    }
}

/// Engine.IO's HTTP error: `{"code": <n>, "message": …}` (0 unknown transport,
/// 1 unknown session, 2 bad handshake method, 3 bad request, 5 unsupported
/// protocol version), with status 400 unless said otherwise.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EioError {
    status: StatusCode,
    code: u8,
    message: String,
}

impl actix_web::ResponseError for EioError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({"code": self.code, "message": self.message}))
    }
}

fn eio_error(code: u8, message: &str) -> EioError {
    EioError {
        status: StatusCode::BAD_REQUEST,
        code,
        message: message.to_owned(),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
struct Query {
    eio: Option<String>,
    #[serde(rename = "transport")]
    transport: Option<String>,
    #[serde(rename = "sid")]
    sid: Option<String>,
    #[serde(rename = "b64")]
    b64: Option<String>,
    #[serde(rename = "j")]
    j: Option<String>,
}

/// The query of an Engine.IO request, checked.
fn query(req: &HttpRequest) -> Result<Query, EioError> {
    let q = web::Query::<Query>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| eio_error(3, "Bad request"))?;
    if q.eio.as_deref() != Some("3") {
        return Err(eio_error(
            5,
            "Unsupported protocol version: this node speaks EIO=3",
        ));
    }
    if q.j.is_some() {
        return Err(eio_error(3, "Bad request: JSONP polling is not supported"));
    }
    match q.transport.as_deref() {
        Some("polling" | "websocket") => Ok(q),
        _ => Err(eio_error(0, "Transport unknown")),
    }
}

fn handshake(sid: &str, node: &NodeState, polling: bool) -> String {
    let t = &node.config.transports;
    let upgrades: &[&str] = if polling { &["websocket"] } else { &[] };
    format!(
        "0{}",
        json!({
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": t.socketio_ping_interval_ms,
            "pingTimeout": t.socketio_ping_timeout_ms,
        })
    )
}

fn payload(packets: &[String], b64: bool) -> HttpResponse {
    if b64 {
        HttpResponse::Ok()
            .content_type("text/plain; charset=UTF-8")
            .body(packet::encode_text(packets))
    } else {
        HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(packet::encode_binary(packets))
    }
}

fn entry(sessions: &SioSessions, sid: &str) -> Result<Entry, EioError> {
    sessions
        .0
        .get(sid)
        .map(|e| e.clone())
        .ok_or_else(|| eio_error(1, "Session ID unknown"))
}

/// A new session: its first packets are queued for polling, or sent once its
/// WebSocket is attached.
fn new_session(
    req: &HttpRequest,
    node: &NodeState,
    sessions: &web::Data<SioSessions>,
    socket: Option<ConnSocket>,
    polling: bool,
) -> Result<Entry, EioError> {
    let ip = req.peer_addr().map(|a| a.ip());
    if let Err((status, description)) = session::admit_connection(node, ip) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(EioError {
            status,
            code: 3,
            message: description.to_owned(),
        });
    }
    let s = &node.config.session;
    let t = &node.config.transports;
    let queue = OutboundQueue::new(
        QueueLimits {
            slow_down: s.slow_down_bytes,
            budget: s.max_pending_bytes,
        },
        socket,
    );
    let sid: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let core = SessionCore::new(node.clone(), peer, ip, queue);
    let (gate, queue) = (core.gate.clone(), core.queue.clone());
    let mut outbox = Outbox::new(s.max_pending_bytes, t.poll_max_frames, t.poll_max_bytes);
    if polling {
        outbox.push(handshake(&sid, node, true));
        outbox.push("40".to_owned());
    }
    let addr = SioSession {
        core,
        sid: sid.clone(),
        sessions: sessions.clone(),
        transport: Transport::Polling,
        probe: None,
        outbox,
        last_ack: None,
        ended: false,
    }
    .start();
    let e = Entry { addr, gate, queue };
    sessions.0.insert(sid, e.clone());
    Ok(e)
}

/// `GET /socket.io/`: handshake, polling, or a WebSocket.
async fn get(
    req: HttpRequest,
    stream: web::Payload,
    node: web::Data<NodeState>,
    sessions: web::Data<SioSessions>,
) -> Result<HttpResponse, EioError> {
    let q = query(&req)?;
    let b64 = q.b64.is_some();
    let websocket = q.transport.as_deref() == Some("websocket");
    let (e, probe) = match (websocket, q.sid.as_deref()) {
        (false, sid) => {
            let (e, wait) = match sid {
                None => (
                    new_session(&req, &node, &sessions, None, true)?,
                    Duration::ZERO,
                ),
                Some(sid) => (
                    entry(&sessions, sid)?,
                    node.config.transports.poll_max_wait(),
                ),
            };
            let packets = e
                .addr
                .send(Polled { wait })
                .await
                .map_err(|_| eio_error(1, "Session ID unknown"))?;
            return Ok(payload(&packets, b64));
        }
        (true, Some(sid)) => (entry(&sessions, sid)?, true),
        (true, None) => {
            let socket = req.conn_data::<ConnSocket>().cloned();
            (new_session(&req, &node, &sessions, socket, false)?, false)
        }
    };
    let addr = e.addr.clone();
    let socket = crate::server::session::next_conn_id();
    let started = EioSocket::start(
        &req,
        stream,
        &node,
        e.gate,
        e.queue,
        socket,
        addr.clone().recipient(),
        addr.clone().recipient(),
    );
    Ok(match started {
        Ok((resp, out)) => {
            addr.do_send(Attach { socket, out, probe });
            resp
        }
        Err(err) => {
            if !probe {
                addr.do_send(SocketGone { socket });
            }
            HttpResponse::from_error(err)
        }
    })
}

/// `POST /socket.io/?…&transport=polling&sid=…`: a payload of client packets.
async fn post(
    req: HttpRequest,
    mut body: web::Payload,
    node: web::Data<NodeState>,
    sessions: web::Data<SioSessions>,
) -> Result<HttpResponse, EioError> {
    let q = query(&req)?;
    let sid = q
        .sid
        .as_deref()
        .ok_or_else(|| eio_error(2, "Bad handshake method"))?;
    let e = entry(&sessions, sid)?;
    let limit = node.config.session.max_frame_size;
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| eio_error(3, "Bad request"))?;
        if buf.len() + chunk.len() > limit {
            return Err(EioError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: 3,
                message: format!("payload larger than {limit} bytes"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    let binary = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let packets = match packet::decode_payload(&buf, binary) {
        Ok(p) => p,
        Err(err) => {
            // a broken payload costs its sender like a refused frame
            let _ = e.addr.send(Posted(vec![String::new()])).await;
            return Err(eio_error(3, &format!("Bad request: {err}")));
        }
    };
    e.gate.opened().await;
    match e.addr.send(Posted(packets)).await {
        Ok(true) => Ok(HttpResponse::Ok()
            .content_type("text/html; charset=UTF-8")
            .body("ok")),
        Ok(false) => Err(eio_error(3, "Bad request: the session is not polling")),
        Err(_) => Err(eio_error(1, "Session ID unknown")),
    }
}
