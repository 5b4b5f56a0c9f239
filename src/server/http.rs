//! HTTP POST + long-poll: a runtime session across plain HTTP requests.
//!
//! | request | body | answer |
//! |---|---|---|
//! | `POST /http/session` | the `open` message (as on the WebSocket; `Authorization: Bearer <ID token>` stands for `body.idToken`) | `200 {"session":"<id>","frames":[<open response>, …]}`, the id also in the `Hyperty-Session` header and the `hyperty_session` cookie; a refused open gets its code (`401`, `400`, …) with the frames and no session |
//! | `POST /http/send` | one message, or a JSON array of messages | `200 {"accepted":<n>}`; with `?ack=1` also `"acks":[{"code":200}, {"code":<reTHINK code>,"description":…}, …]`, one per frame, each given once the frame is queued to every recipient or refused |
//! | `GET /http/poll?wait=<ms>` | — | `200 [<frame>, …]`: what waits for the session, or what arrives within `wait` (at most `transports.poll_max_wait_ms`); `[]` when nothing did |
//!
//! `send` and `poll` name their session by the `Hyperty-Session` header, the
//! `hyperty_session` cookie or `?session=<id>`. An unknown or expired session gets
//! `404 {"code":404,"description":…}`, an ended one `410`, a body larger than
//! `session.max_frame_size` `413`. A session not heard from for
//! `transports.session_expiry_ms` ends (its runtime session then has the grace
//! period, as for a dropped socket); a reTHINK `close` ends it at once.
//!
//! Each HTTP session is one [`HttpSession`] actor running the
//! [session core](super::session): frames are checked, authorised and routed exactly
//! as on the WebSocket; what the core and the router hand it waits in an
//! [`Outbox`] for the next poll. The frames of one `send` go to the session as one
//! run; a sender whose recipient is congested has the rest of its run (and its next
//! `send`) held until that recipient drains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytestring::ByteString;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::debug;

use crate::node::outbound::{OutboundQueue, QueueLimits};
use crate::node::router::{Kick, Outbound, OutboundBurst};
use crate::node::NodeState;
use crate::server::inbound::Gate;
use crate::server::polling::Outbox;
use crate::server::session::{self, End, SessionCore, SessionHost};

/// The header (and cookie name, lower case) carrying an HTTP session's id.
pub const SESSION_HEADER: &str = "hyperty-session";
const SESSION_COOKIE: &str = "hyperty_session";

/// The node's live HTTP sessions by id.
#[derive(Debug, Default)]
pub struct HttpSessions(DashMap<Arc<str>, Entry>);

#[derive(Debug, Clone)]
struct Entry {
    addr: Addr<HttpSession>,
    gate: Arc<Gate>,
}

/// A run of frames from one `send`, and whether each is to be acknowledged: the
/// session takes them in order, one after the other as separate frames would be
/// taken, and stops (after the first) when it has ended, when a frame has set off
/// work the session waits for (the rest then waits its turn in the mailbox, behind
/// that work), or when a recipient's congestion pauses its sender (see [`Gate`]).
#[derive(Debug, actix::Message)]
#[rtype(result = "SubmittedRun")]
struct SubmitRun(Vec<ByteString>, bool);

/// What became of a run of frames.
#[derive(Debug)]
struct SubmittedRun {
    /// Frames taken.
    taken: usize,
    /// The frames not taken, in order (the sender was paused, or the session ended).
    rest: Vec<ByteString>,
    /// The acknowledgements of the frames taken, when they were asked for.
    acks: Vec<Value>,
    /// The session has ended.
    ended: bool,
}

/// Takes the frames waiting, once the frames submitted before are handled; and
/// whether the session is open.
#[derive(Debug, actix::Message)]
#[rtype(result = "(Vec<String>, bool)")]
struct Drain;

/// A long-poll of at most `wait`.
#[derive(Debug, actix::Message)]
#[rtype(result = "Vec<String>")]
struct Poll {
    wait: Duration,
}

/// The actor of one HTTP session.
pub struct HttpSession {
    core: SessionCore,
    id: Arc<str>,
    sessions: web::Data<HttpSessions>,
    outbox: Outbox,
    last_request: Instant,
    /// The session has ended: what waits may still be polled, nothing is taken.
    ended: bool,
}

impl std::fmt::Debug for HttpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSession")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl SessionHost for HttpSession {
    fn core(&mut self) -> &mut SessionCore {
        &mut self.core
    }

    fn core_ref(&self) -> &SessionCore {
        &self.core
    }

    fn write(&mut self, ctx: &mut Self::Context, frame: String) {
        if !self.ended && !self.outbox.push(frame) {
            self.over_budget(ctx);
        }
    }

    fn end(&mut self, ctx: &mut Self::Context, end: End) {
        if self.ended {
            return;
        }
        debug!(session = %self.id, ?end, "http session ends");
        self.ended = true;
        self.outbox.end(ctx);
    }
}

impl HttpSession {
    fn over_budget(&mut self, ctx: &mut Context<Self>) {
        self.core.stop_reason = "outbound queue over budget";
        self.end(
            ctx,
            End::Refused("too many frames waiting for a poll".to_owned()),
        );
    }
}

impl Actor for HttpSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.core.node.config.session.outbound_queue);
        session::started(self, ctx);
        let expiry = self.core.node.config.transports.session_expiry();
        let tick = (expiry / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        ctx.run_interval(tick, move |act, ctx| {
            if !act.outbox.is_parked() && act.last_request.elapsed() > expiry {
                act.core.stop_reason = "http session expired";
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.outbox.flush();
        self.sessions.0.remove(&self.id);
        self.core.stopped();
        debug!(session = %self.id, reason = self.core.stop_reason, "http session stopped");
    }
}

impl Handler<Outbound> for HttpSession {
    type Result = ();
    fn handle(&mut self, Outbound(frame): Outbound, ctx: &mut Self::Context) {
        self.core.queue.written(frame.len());
        self.write(ctx, String::from(frame));
    }
}

impl Handler<OutboundBurst> for HttpSession {
    type Result = ();
    fn handle(&mut self, OutboundBurst(frames): OutboundBurst, ctx: &mut Self::Context) {
        for frame in frames {
            self.core.queue.written(frame.len());
            self.write(ctx, String::from(frame));
        }
    }
}

impl Handler<Kick> for HttpSession {
    type Result = ();
    fn handle(&mut self, k: Kick, ctx: &mut Self::Context) {
        session::kicked(self, ctx, k);
    }
}

impl Handler<SubmitRun> for HttpSession {
    type Result = ResponseFuture<SubmittedRun>;
    fn handle(
        &mut self,
        SubmitRun(frames, ack): SubmitRun,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        self.last_request = Instant::now();
        // what the run delivers is handed over when it is taken
        let _pass = crate::node::handoff::Pass::open();
        let mut frames = frames.into_iter();
        let mut pending = Vec::new();
        let mut taken = 0;
        let mut ended = false;
        let mut rest = Vec::new();
        while let Some(text) = frames.next() {
            if self.ended || (taken > 0 && (ctx.waiting() || self.core.gate.is_paused())) {
                ended = self.ended;
                rest.push(text);
                rest.extend(frames);
                break;
            }
            taken += 1;
            if ack {
                let (tx, rx) = oneshot::channel();
                session::on_text_then(self, text, ctx, move |_, _, refused| {
                    let _ = tx.send(session::ack_value(refused));
                });
                pending.push(rx);
            } else {
                session::on_text(self, text, ctx);
            }
        }
        Box::pin(async move {
            let mut acks = Vec::with_capacity(pending.len());
            for rx in pending {
                acks.extend(rx.await.ok());
            }
            SubmittedRun {
                taken,
                rest,
                acks,
                ended,
            }
        })
    }
}

impl Handler<Drain> for HttpSession {
    type Result = MessageResult<Drain>;
    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        let open = self.core.runtime.is_some() && !self.ended;
        let frames = self.outbox.take();
        if !open {
            ctx.stop();
        }
        MessageResult((frames, open))
    }
}

impl Handler<Poll> for HttpSession {
    type Result = ResponseFuture<Vec<String>>;
    fn handle(&mut self, p: Poll, ctx: &mut Self::Context) -> Self::Result {
        self.last_request = Instant::now();
        let (tx, rx) = oneshot::channel();
        if self.ended {
            let _ = tx.send(self.outbox.take());
            if self.outbox.is_empty() {
                ctx.stop();
            }
        } else if let Some(n) = self.outbox.poll(tx) {
            ctx.run_later(p.wait, move |act, _| act.outbox.expire(n));
        }
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

/// Mounts `/http/session`, `/http/send` and `/http/poll`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/http/session", web::post().to(open))
        .route("/http/send", web::post().to(send))
        .route("/http/poll", web::get().to(poll));
}

/// A refused HTTP request: its status and why, answered as
/// `{"code": <status>, "description": …}`.
#[derive(Debug, thiserror::Error)]
#[error("{description}")]
pub struct HttpError {
    status: StatusCode,
    description: String,
}

impl actix_web::ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(json!({"code": self.status.as_u16(), "description": self.description}))
    }
}

fn error(status: StatusCode, description: &str) -> HttpError {
    HttpError {
        status,
        description: description.to_owned(),
    }
}

/// A JSON array of frames that are JSON texts already.
fn frames_json(frames: &[String]) -> String {
    let mut out = String::with_capacity(2 + frames.iter().map(|f| f.len() + 1).sum::<usize>());
    out.push('[');
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(f);
    }
    out.push(']');
    out
}

/// The request body, at most `limit` bytes.
async fn body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, HttpError> {
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| error(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `POST /http/session`: opens a session with the `open` message in the body.
async fn open(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<NodeState>,
    sessions: web::Data<HttpSessions>,
) -> Result<HttpResponse, HttpError> {
    let node = node.get_ref().clone();
    let raw = body(payload, node.config.session.max_frame_size).await?;
    let Ok(text) = std::str::from_utf8(&raw) else {
        return Err(error(StatusCode::BAD_REQUEST, "the body is not UTF-8"));
    };
    let mut text = text.to_owned();
    if let Some(token) = bearer(&req) {
        // the bearer token stands for body.idToken
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(mut m)) => {
                let body = m.entry("body").or_insert_with(|| json!({}));
                if let Some(b) = body.as_object_mut() {
                    b.entry("idToken").or_insert_with(|| json!(token));
                }
                text = Value::Object(m).to_string();
            }
            _ => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "the body must be an open message",
                ))
            }
        }
    }
    let ip = req.peer_addr().map(|a| a.ip());
    if let Err((status, description)) = session::admit_connection(&node, ip) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(error(status, description));
    }
    let s = &node.config.session;
    let t = &node.config.transports;
    let queue = OutboundQueue::new(
        QueueLimits {
            slow_down: s.slow_down_bytes,
            budget: s.max_pending_bytes,
        },
        None,
    );
    let outbox = Outbox::new(s.max_pending_bytes, t.poll_max_frames, t.poll_max_bytes);
    let id: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let core = SessionCore::new(node, peer, ip, queue);
    let gate = core.gate.clone();
    let addr = HttpSession {
        core,
        id: id.clone(),
        sessions: sessions.clone(),
        outbox,
        last_request: Instant::now(),
        ended: false,
    }
    .start();
    let _ = addr
        .send(SubmitRun(vec![ByteString::from(text)], false))
        .await;
    let Ok((frames, open)) = addr.send(Drain).await else {
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "session ended"));
    };
    if !open {
        let status = frames
            .first()
            .and_then(|f| serde_json::from_str::<Value>(f).ok())
            .and_then(|v| v["body"]["code"].as_u64())
            .and_then(|c| u16::try_from(c).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|c| !c.is_success())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let body = format!(r#"{{"frames":{}}}"#, frames_json(&frames));
        return Ok(HttpResponse::build(status)
            .content_type("application/json")
            .body(body));
    }
    sessions.0.insert(id.clone(), Entry { addr, gate });
    let body = format!(
        r#"{{"session":{},"frames":{}}}"#,
        Value::String(id.to_string()),
        frames_json(&frames)
    );
    Ok(HttpResponse::Ok()
        .insert_header((SESSION_HEADER, &*id))
        .insert_header((
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}={id}; Path=/http; HttpOnly; SameSite=Strict"),
        ))
        .content_type("application/json")
        .body(body))
}

/// The session a request names (header, cookie or query).
fn session_of(req: &HttpRequest, sessions: &HttpSessions) -> Result<Entry, HttpError> {
    let from_header = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_cookie = || {
        req.headers()
            .get_all(header::COOKIE)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("hyperty_session=").map(str::to_owned))
    };
    let from_query = || {
        web::Query::<SessionQuery>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.into_inner().session)
    };
    let Some(id) = from_header.or_else(from_cookie).or_else(from_query) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "name the session: Hyperty-Session header, hyperty_session cookie or ?session=",
        ));
    };
    sessions
        .0
        .get(id.as_str())
        .map(|e| e.clone())
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "unknown or expired session"))
}

#[derive(Debug, serde::Deserialize)]
struct SessionQuery {
    session: Option<String>,
    wait: Option<u64>,
    ack: Option<String>,
}

/// `POST /http/send`: one frame or a JSON array of frames.
async fn send(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<NodeState>,
    sessions: web::Data<HttpSessions>,
) -> Result<HttpResponse, HttpError> {
    let entry = session_of(&req, &sessions)?;
    let raw = body(payload, node.config.session.max_frame_size).await?;
    let Ok(text) = std::str::from_utf8(&raw) else {
        return Err(error(StatusCode::BAD_REQUEST, "the body is not UTF-8"));
    };
    let frames: Vec<&str> = if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => items.into_iter().map(RawValue::get).collect(),
            Err(e) => return Err(error(StatusCode::BAD_REQUEST, &format!("bad batch: {e}"))),
        }
    } else {
        vec![text]
    };
    let ack = web::Query::<SessionQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().ack)
        .is_some_and(|a| a == "1" || a == "true");
    let mut accepted = 0;
    let mut acks = Vec::new();
    // the frames go to the session in runs: the whole batch, or what is left of it
    // once a congested recipient has drained
    let mut run: Vec<ByteString> = frames.into_iter().map(ByteString::from).collect();
    while !run.is_empty() {
        entry.gate.opened().await;
        match entry.addr.send(SubmitRun(run, ack)).await {
            Ok(r) => {
                accepted += r.taken;
                acks.extend(r.acks);
                if r.ended {
                    return Err(error(StatusCode::GONE, "the session has ended"));
                }
                run = r.rest;
            }
            Err(_) => return Err(error(StatusCode::NOT_FOUND, "unknown or expired session")),
        }
    }
    Ok(HttpResponse::Ok().json(match ack {
        true => json!({ "accepted": accepted, "acks": acks }),
        false => json!({ "accepted": accepted }),
    }))
}

/// `GET /http/poll?wait=<ms>`: the frames waiting, or arriving within `wait`.
async fn poll(
    req: HttpRequest,
    node: web::Data<NodeState>,
    sessions: web::Data<HttpSessions>,
) -> Result<HttpResponse, HttpError> {
    let entry = session_of(&req, &sessions)?;
    let max = node.config.transports.poll_max_wait();
    let wait = web::Query::<SessionQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.wait)
        .map_or(max, |ms| Duration::from_millis(ms).min(max));
    match entry.addr.send(Poll { wait }).await {
        Ok(frames) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(frames_json(&frames))),
        Err(_) => Err(error(StatusCode::NOT_FOUND, "unknown or expired session")),
    }
}
