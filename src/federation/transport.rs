//! The two ends of a node-to-node WebSocket, reduced to one seam: a channel of
//! decoded frames in ([`Inbound`]) and a channel of frames out ([`Out`]), each
//! served by a reader and a writer task on the thread that owns the socket. The
//! link actor sees only the channels, whichever node dialled.
//!
//! * [`dialled`]: the awc client connection this node opened.
//! * [`accept`]: `GET /federation`, the connection a peer opens. The peer proves
//!   its domain with `Authorization: Bearer <peer token>`, checked against its
//!   domain's keys; this node answers the upgrade with its own token in
//!   [`PEER_TOKEN_HEADER`]. Refusals are JSON `{code, description}`: 401 (no or a
//!   bad token), 403 (unknown domain, federation off), 409 (the link the tie-break
//!   keeps exists), 503 (too many peers), 504 (the peer's keys unreachable).
//!
//! Both readers stop reading the socket while the link's channel is full (its
//! [`INBOUND_WINDOW`]), so TCP pushes back on a peer that floods; the accepting
//! side decodes with the sessions' [`BoundedFrames`].

use std::sync::Arc;

use actix_codec::{Encoder, Framed};
use actix_http::ws::{Codec, Frame, Message as WsMessage, ProtocolError};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hyperty_actors::error::ToResponseCode;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::error::FederationError;
use super::link::{Attach, Inbound, Offer, Out, INBOUND_WINDOW, PEER_TOKEN_HEADER};
use super::PeerConnector;
use crate::identity::IssuePeerToken;
use crate::node::outbound::OutboundQueue;
use crate::server::inbound::{BoundedFrames, Gate};

fn message(frame: Result<Frame, ProtocolError>) -> Inbound {
    Ok(match frame? {
        Frame::Text(data) => WsMessage::Text(
            bytestring::ByteString::try_from(data)
                .map_err(|e| ProtocolError::Io(std::io::Error::other(e.to_string())))?,
        ),
        Frame::Binary(data) => WsMessage::Binary(data),
        Frame::Continuation(item) => WsMessage::Continuation(item),
        Frame::Ping(p) => WsMessage::Ping(p),
        Frame::Pong(p) => WsMessage::Pong(p),
        Frame::Close(reason) => WsMessage::Close(reason),
    })
}

fn out_message(out: Out) -> (WsMessage, usize) {
    match out {
        Out::Frame(text, charged) => (WsMessage::Text(text), charged),
        Out::Control(m) => (m, 0),
    }
}

/// Reader and writer tasks for a connection this node dialled.
pub(crate) fn dialled(
    framed: Framed<awc::BoxedSocket, awc::ws::Codec>,
    queue: Arc<OutboundQueue>,
) -> (mpsc::Receiver<Inbound>, mpsc::UnboundedSender<Out>) {
    let (mut sink, mut stream) = framed.split();
    let (frames_tx, frames_rx) = mpsc::channel(INBOUND_WINDOW);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    actix::spawn(async move {
        while let Some(f) = stream.next().await {
            if frames_tx.send(message(f)).await.is_err() {
                break;
            }
        }
    });
    actix::spawn(async move {
        while let Some(first) = out_rx.recv().await {
            // everything already waiting goes in one flush
            let mut next = Some(first);
            let mut closing = false;
            while let Some(out) = next.take() {
                let (m, charged) = out_message(out);
                closing |= matches!(m, WsMessage::Close(_));
                if sink.feed(m).await.is_err() {
                    return;
                }
                if charged > 0 {
                    queue.written(charged);
                }
                next = out_rx.try_recv().ok();
            }
            if sink.flush().await.is_err() || closing {
                let _ = sink.close().await;
                return;
            }
        }
    });
    (frames_rx, out_tx)
}

fn refusal(e: &FederationError) -> HttpResponse {
    let code = e.response_code().as_u16();
    let status = actix_web::http::StatusCode::from_u16(code)
        .unwrap_or(actix_web::http::StatusCode::FORBIDDEN);
    let mut r = HttpResponse::build(status);
    if code == 401 {
        r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    r.json(json!({ "code": code, "description": e.to_string() }))
}

/// `GET /federation`: a peer node dials (see the module docs).
pub(crate) async fn accept(
    req: HttpRequest,
    payload: web::Payload,
    connector: web::Data<Arc<PeerConnector>>,
) -> HttpResponse {
    match authenticate(&req, &connector).await {
        Ok(domain) => match open(&req, payload, &connector, &domain).await {
            Ok(r) => r,
            Err(e) => {
                warn!(peer = %domain, error = %e, "peer link refused");
                refusal(&e)
            }
        },
        Err(e) => {
            warn!(peer_addr = ?req.peer_addr(), error = %e, "peer link refused");
            refusal(&e)
        }
    }
}

/// The domain the dialling peer proved.
async fn authenticate(
    req: &HttpRequest,
    connector: &PeerConnector,
) -> Result<String, FederationError> {
    let directory = connector.directory();
    if !directory.config().enabled {
        return Err(FederationError::Disabled);
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            FederationError::unauthenticated("?", "dial with Authorization: Bearer <peer token>")
        })?;
    let (_, domain) = crate::identity::peer::claimed_domain(token)
        .map_err(|e| FederationError::unauthenticated("?", e))?;
    let _span = tracing::info_span!("federation.accept", peer = %domain).entered();
    if domain == directory.own() {
        return Err(FederationError::unauthenticated(
            &domain,
            "a node does not link to its own domain",
        ));
    }
    let endpoints = directory.endpoints(&domain).await?;
    directory.verify(&domain, &endpoints, token).await?;
    Ok(domain)
}

/// The tie-break, this node's token, and the upgrade.
async fn open(
    req: &HttpRequest,
    payload: web::Payload,
    connector: &PeerConnector,
    domain: &str,
) -> Result<HttpResponse, FederationError> {
    let (link, route) = connector
        .link(domain)
        .ok_or(FederationError::TooManyPeers(connector.max_peers()))?;
    let mut response = actix_http::ws::handshake(req.head()).map_err(|e| {
        FederationError::unauthenticated(domain, format!("not a WebSocket upgrade: {e}"))
    })?;
    let token = connector
        .idp()
        .send(IssuePeerToken {
            peer: domain.to_owned(),
            lifetime_secs: connector.directory().config().token_lifetime_secs,
        })
        .await
        .map_err(|e| FederationError::unreachable(domain, e))?
        .map_err(|e| FederationError::unreachable(domain, e))?;
    let conn_id = crate::server::session::next_conn_id();
    link.send(Offer { conn_id })
        .await
        .map_err(|e| FederationError::unreachable(domain, e))??;
    let (frames_tx, frames_rx) = mpsc::channel(INBOUND_WINDOW);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Out>();
    let max_frame = connector.max_frame_size();
    actix::spawn(async move {
        let mut frames = BoundedFrames::new(payload, max_frame, Arc::new(Gate::default()));
        while let Some(f) = frames.next().await {
            if frames_tx.send(f).await.is_err() {
                break;
            }
        }
    });
    let body = futures_util::stream::unfold(
        Some((out_rx, Codec::new(), route.queue)),
        |state| async move {
            let (mut rx, mut codec, queue) = state?;
            let mut next = Some(rx.recv().await?);
            let mut buf = BytesMut::new();
            let mut closing = false;
            // everything already waiting goes in one chunk
            while let Some(out) = next.take() {
                let (m, charged) = out_message(out);
                closing = matches!(m, WsMessage::Close(_));
                codec.encode(m, &mut buf).ok()?;
                if charged > 0 {
                    queue.written(charged);
                }
                if !closing {
                    next = rx.try_recv().ok();
                }
            }
            let state = (!closing).then_some((rx, codec, queue));
            Some((Ok::<Bytes, actix_web::Error>(buf.freeze()), state))
        },
    );
    link.do_send(Attach {
        conn_id,
        frames: frames_rx,
        out: out_tx,
        dialled: false,
    });
    info!(peer = %domain, conn = conn_id, "peer link accepted");
    response.insert_header((PEER_TOKEN_HEADER, token));
    let body = actix_web::body::BoxBody::new(actix_web::body::BodyStream::new(body));
    response
        .message_body(body)
        .map(HttpResponse::from)
        .map_err(|e| FederationError::unreachable(domain, e))
}
