//! The raw WebSocket transport: one actor per connection at `GET /ws`, one reTHINK
//! message per text frame.
//!
//! [`WsSession`] only frames and unframes: text frames (fragmented ones are joined
//! up to `session.max_frame_size`) go to the [session core](super::session), which
//! does everything else, and the core's answers and the frames routed to this
//! session go out as text frames. Binary frames get a 400 and the connection stays
//! up.
//!
//! Flow control, both ways. Inbound, frames are decoded by
//! [`BoundedFrames`](super::inbound::BoundedFrames), which reads the socket only as
//! fast as the session handles frames, and not at all while the session's gate is
//! closed. Outbound, its mailbox is its queue, with a byte account
//! ([`OutboundQueue`]): the router evicts a client past its byte budget or write
//! deadline. Every frame kind counts against the session's rate. It pings every
//! `session.heartbeat_interval_ms` and drops a client silent for
//! `session.client_timeout_ms`.
//!
//! [`EioSocket`] is the WebSocket of a Socket.IO session: it frames Engine.IO
//! packets for [`socketio`](super::socketio).
//!
//! All uses of `actix-web-actors` are in this file.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::BytesMut;
use bytestring::ByteString;
use serde_json::json;
use tracing::{debug, warn};

use crate::node::outbound::{ConnSocket, OutboundQueue, QueueLimits};
use crate::node::router::{Kick, Outbound, OutboundBurst};
use crate::node::NodeState;
use crate::server::inbound::{read_frames, read_frames_in_runs, BoundedFrames};
use crate::server::session::{self, End, SessionCore, SessionHost};
use crate::server::socketio::{SocketGone, SocketPackets};

/// The actor of one WebSocket connection.
pub struct WsSession {
    core: SessionCore,
    fragments: Option<BytesMut>,
    /// The client's frames, until the actor starts reading them.
    inbound: Option<BoundedFrames<web::Payload>>,
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
            .field("core", &self.core)
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
    let ip = req.peer_addr().map(|a| a.ip());
    if let Err((status, description)) = session::admit_connection(&node, ip) {
        let status = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
        return Ok(HttpResponse::build(status)
            .json(json!({"code": status.as_u16(), "description": description})));
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
    let socket = req.conn_data::<ConnSocket>().cloned();
    let queue = OutboundQueue::new(
        QueueLimits {
            slow_down: s.slow_down_bytes,
            budget: s.max_pending_bytes,
        },
        socket,
    );
    let max_frame_size = s.max_frame_size;
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let core = SessionCore::new(node, peer, ip, queue);
    let session = WsSession {
        inbound: Some(BoundedFrames::new(
            stream,
            max_frame_size,
            core.gate.clone(),
        )),
        core,
        batch: 0,
        closing: false,
        fragments: None,
    };
    // the context's own reader gets nothing: the session reads through `inbound`
    let none =
        futures_util::stream::pending::<Result<bytes::Bytes, actix_web::error::PayloadError>>();
    Ok(response.streaming(ws::WebsocketContext::create(session, none)))
}

impl SessionHost for WsSession {
    fn core(&mut self) -> &mut SessionCore {
        &mut self.core
    }

    fn core_ref(&self) -> &SessionCore {
        &self.core
    }

    fn write(&mut self, ctx: &mut Self::Context, frame: String) {
        ctx.text(frame);
    }

    fn end(&mut self, ctx: &mut Self::Context, end: End) {
        match end {
            End::Refused(reason) => close_for_policy(ctx, reason),
            End::Closed => {
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
        }
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.core.node.config.session.outbound_queue);
        if let Some(frames) = self.inbound.take() {
            read_frames::<Self, _>(frames, ctx);
        }
        session::started(self, ctx);
        let timeout = self.core.node.config.session.client_timeout();
        ctx.run_interval(
            self.core.node.config.session.heartbeat_interval(),
            move |act, ctx| {
                if act.core.silent_for(timeout) {
                    act.core.stop_reason = "client timeout";
                    ctx.stop();
                } else {
                    ctx.ping(b"");
                }
            },
        );
        debug!(peer = %self.core.peer, "websocket connected");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.core.stopped();
        debug!(peer = %self.core.peer, reason = self.core.stop_reason, "websocket ended");
    }
}

impl Handler<Outbound> for WsSession {
    type Result = ();
    fn handle(&mut self, Outbound(frame): Outbound, ctx: &mut Self::Context) {
        self.write_frames(std::iter::once(frame), ctx);
    }
}

impl Handler<OutboundBurst> for WsSession {
    type Result = ();
    fn handle(&mut self, OutboundBurst(frames): OutboundBurst, ctx: &mut Self::Context) {
        self.write_frames(frames.into_iter(), ctx);
    }
}

impl WsSession {
    /// Writes frames routed to the session; after [`WRITE_BATCH`] of them it
    /// takes no more until the socket writer has run.
    fn write_frames(
        &mut self,
        frames: impl Iterator<Item = ByteString>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        for frame in frames {
            self.core.queue.written(frame.len());
            if !self.closing {
                ctx.text(frame);
                self.batch += 1;
            }
        }
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
        session::kicked(self, ctx, k);
    }
}

impl WsSession {
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

    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        let max = self.core.node.config.session.max_frame_size;
        let (start, bytes, last) = match item {
            actix_http::ws::Item::FirstText(b) => (true, b, false),
            actix_http::ws::Item::FirstBinary(_) => {
                self.fragments = None;
                return session::refuse_frame(self, ctx, "binary frames are not supported");
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
            self.core.stop_reason = "message too large";
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
                Ok(text) => session::on_text(self, text, ctx),
                Err(_) => session::refuse_frame(self, ctx, "text frame is not UTF-8"),
            }
        }
    }
}

/// Closes the socket with a policy-violation close frame and stops the session.
fn close_for_policy(ctx: &mut ws::WebsocketContext<WsSession>, reason: impl Into<String>) {
    ctx.close(Some(ws::CloseReason {
        code: ws::CloseCode::Policy,
        description: Some(reason.into()),
    }));
    ctx.stop();
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.core.heard = true;
        if self.closing {
            return;
        }
        let counted = matches!(
            item,
            Ok(ws::Message::Binary(_) | ws::Message::Ping(_) | ws::Message::Continuation(_))
        );
        if counted && !session::admit(self, ctx) {
            return;
        }
        match item {
            Ok(ws::Message::Text(text)) => session::on_text(self, text, ctx),
            Ok(ws::Message::Binary(_)) => session::refuse_frame(
                self,
                ctx,
                "binary frames are not supported; send one JSON message per text frame",
            ),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                self.core.stop_reason = "socket closed by the client";
                ctx.close(reason);
                ctx.stop();
            }
            Err(e) => {
                warn!(peer = %self.core.peer, error = %e, "websocket protocol error");
                self.core.stop_reason = "protocol error";
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

/// What an Engine.IO session hands its WebSocket.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) enum EioOut {
    /// One packet, and the bytes of a routed frame it carries that were charged
    /// to the session's queue.
    Text(String, usize),
    /// Close the socket.
    Close,
}

/// Bytes of packets an [`EioSocket`] collects before it hands them to its session
/// (whatever is left of a run of frames is handed on at the run's end).
const PACKETS_BYTES: usize = 64 * 1024;

/// The WebSocket of a Socket.IO session (see
/// [`socketio`](crate::server::socketio)): each text frame is one Engine.IO packet;
/// the packets of one run of frames (see
/// [`read_frames_in_runs`](crate::server::inbound::read_frames_in_runs)) are handed to
/// the session together, and the socket reads on once the session has taken them;
/// the session's packets are written as text frames.
pub(crate) struct EioSocket {
    id: u64,
    packets: Recipient<SocketPackets>,
    /// Packets read and not yet handed to the session, and their bytes.
    pending: Vec<ByteString>,
    pending_bytes: usize,
    /// The session's gate (also on `inbound`): the rest of a run waits while it is
    /// paused.
    gate: Arc<crate::server::inbound::Gate>,
    gone: Recipient<SocketGone>,
    queue: Arc<OutboundQueue>,
    inbound: Option<BoundedFrames<web::Payload>>,
    closing: bool,
}

impl std::fmt::Debug for EioSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EioSocket")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EioSocket {
    /// Upgrades `req` to the WebSocket `id` of a session: its packets go to
    /// `packets`, its end to `gone`; it reads only while `gate` is open and
    /// discharges `queue` as it writes routed frames.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        req: &HttpRequest,
        stream: web::Payload,
        node: &NodeState,
        gate: Arc<crate::server::inbound::Gate>,
        queue: Arc<OutboundQueue>,
        id: u64,
        packets: Recipient<SocketPackets>,
        gone: Recipient<SocketGone>,
    ) -> Result<(HttpResponse, Recipient<EioOut>), actix_web::Error> {
        let mut response = ws::handshake(req)?;
        let socket = EioSocket {
            id,
            packets,
            pending: Vec::new(),
            pending_bytes: 0,
            gone,
            queue,
            inbound: Some(BoundedFrames::new(
                stream,
                node.config.session.max_frame_size,
                gate.clone(),
            )),
            gate,
            closing: false,
        };
        let none =
            futures_util::stream::pending::<Result<bytes::Bytes, actix_web::error::PayloadError>>();
        let (addr, body) = ws::WebsocketContext::create_with_addr(socket, none);
        Ok((response.streaming(body), addr.recipient()))
    }
}

impl EioSocket {
    /// Collects one packet; hands the collection on once it is large.
    fn collect(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: ByteString) {
        self.pending_bytes += text.len();
        self.pending.push(text);
        if self.pending_bytes >= PACKETS_BYTES {
            self.hand_on(ctx);
        }
    }

    /// Hands the collected packets to the session and reads on once it has taken
    /// them: the socket is read as fast as the session works.
    fn hand_on(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.pending.is_empty() || self.closing {
            return;
        }
        self.pending_bytes = 0;
        let sent = self.packets.send(SocketPackets {
            socket: self.id,
            texts: std::mem::take(&mut self.pending),
        });
        ctx.wait(sent.into_actor(self).map(|r, act, ctx| match r {
            // what the session did not take yet goes again, before anything newer
            Ok(rest) => {
                if rest.is_empty() {
                    return;
                }
                act.pending_bytes = rest.iter().map(|t| t.len()).sum();
                act.pending = rest;
                if act.gate.is_paused() {
                    let gate = act.gate.clone();
                    let opened = async move { gate.opened().await };
                    ctx.wait(opened.into_actor(act).map(|(), act, ctx| act.hand_on(ctx)));
                } else {
                    act.hand_on(ctx);
                }
            }
            Err(_) => ctx.stop(),
        }));
    }

    /// Hands the collected packets to the session without waiting (the socket is
    /// ending).
    fn hand_on_last(&mut self) {
        if !self.pending.is_empty() {
            self.pending_bytes = 0;
            self.packets.do_send(SocketPackets {
                socket: self.id,
                texts: std::mem::take(&mut self.pending),
            });
        }
    }
}

impl Actor for EioSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(frames) = self.inbound.take() {
            read_frames_in_runs::<Self, _>(frames, ctx, Self::hand_on);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if !self.closing {
            self.hand_on_last();
        }
        self.gone.do_send(SocketGone { socket: self.id });
    }
}

impl Handler<EioOut> for EioSocket {
    type Result = ();
    fn handle(&mut self, out: EioOut, ctx: &mut Self::Context) {
        match out {
            EioOut::Text(packet, charged) => {
                self.queue.written(charged);
                if !self.closing {
                    ctx.text(packet);
                }
            }
            EioOut::Close => {
                self.closing = true;
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.run_later(LINGER, |_, ctx| ctx.stop());
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for EioSocket {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        match item {
            Ok(ws::Message::Text(text)) => self.collect(ctx, text),
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                // Engine.IO 3 binary packets carry attachments reTHINK has no use for
                self.collect(ctx, ByteString::from_static("4binary"));
            }
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(e) => {
                warn!(error = %e, "socket.io websocket protocol error");
                self.hand_on_last();
                self.closing = true;
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: Some(e.to_string()),
                }));
                ctx.run_later(LINGER, |_, ctx| ctx.stop());
            }
        }
    }
}
