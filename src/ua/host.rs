//! The actors that host downloaded code on the bus: [`JsHyperty`] (listens at
//! the hyperty's address) and [`JsStub`] (a protocol stub in the stub table).
//! Each owns one [`JsSandbox`] and gives it its powers ([`JsHost`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use awc::ws::{Frame, Message as WsMessage};
use futures_util::{SinkExt, StreamExt};
use hyperty_actors::address::HypertyUrl;
use hyperty_actors::bus::{BoundBus, Bus, Deliver, Holdings, RemoveListenersOf};
use hyperty_actors::message::{Message, MessageId, MessageType, ResponseCode};
use hyperty_actors::protostub::{Connect, Disconnect, StubContext, StubError, StubStatus};
use hyperty_actors::registry::UnregisterHyperty;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::jsbox::{JsError, JsEvent, JsEvents, JsHost, JsSandbox};

/// Most requests a JS hyperty holds unanswered; beyond, requests get 429.
pub const MAX_UNANSWERED: usize = 4096;
/// Frames queued for a stub's socket.
pub const SOCKET_QUEUE: usize = 1024;
/// How long a disconnected stub's code lives on to close its socket.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Requests delivered to a JS hyperty and not yet answered, by (sender, id).
pub(crate) type UnansweredTable = Arc<Mutex<HashMap<(String, MessageId), (Instant, Message)>>>;
type Unanswered = UnansweredTable;

/// Reports `update {value, desc}` from `url` to `<url>/status`.
fn report(bus: &Bus, url: &HypertyUrl, value: &str, desc: Option<&str>) {
    let mut m = Message::new(MessageType::Update, url.address().clone(), url.status())
        .with_value(json!(value));
    if let Some(d) = desc {
        m.body.desc = Some(json!(d));
    }
    bus.send(m);
}

/// The powers of a JS hyperty: it sends as itself only.
struct HypertyPowers {
    bus: BoundBus,
    plain: Bus,
    url: HypertyUrl,
    unanswered: Unanswered,
    /// Told when the code fails: the user agent, which removes the hyperty's
    /// policies and unregisters it.
    registry: Recipient<UnregisterHyperty>,
}

impl JsHost for HypertyPowers {
    fn post(&self, msg: Message) -> Result<(), String> {
        if !self.bus.holdings().holds(msg.from.as_str()) {
            return Err(format!("a hyperty sends as {} only", self.url));
        }
        if msg.kind == MessageType::Response
            && !msg.body.code.is_some_and(ResponseCode::is_provisional)
        {
            if let Ok(mut u) = self.unanswered.lock() {
                u.remove(&(msg.to.first().as_str().to_owned(), msg.id));
            }
        }
        self.bus.send(msg);
        Ok(())
    }
    fn status(&self, _: &str, _: Option<&str>) {}
    fn ws_open(&self, _: JsEvents) -> Result<(), String> {
        Err("hyperties have no sockets".to_owned())
    }
    fn ws_send(&self, _: String) -> Result<(), String> {
        Err("hyperties have no sockets".to_owned())
    }
    fn ws_close(&self) {}
    fn failed(&self, reason: &str) {
        let failed = self.plain.fail_requests_to(self.url.address());
        warn!(hyperty = %self.url, %reason, failed_requests = failed, "downloaded hyperty failed");
        self.plain
            .actor()
            .do_send(RemoveListenersOf(self.url.address().clone()));
        report(&self.plain, &self.url, "failed", Some(reason));
        self.registry.do_send(UnregisterHyperty(self.url.clone()));
    }
}

/// Swaps the running code for a newer version (same address, unanswered
/// requests handed to the new code); refused once the hyperty has failed.
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<(), super::UaError>")]
pub struct Replace(pub JsSandbox);

/// Hosts a downloaded hyperty at its address.
pub struct JsHyperty {
    url: HypertyUrl,
    bus: Bus,
    sandbox: Option<JsSandbox>,
    unanswered: Unanswered,
    /// Mailbox capacity: the sandbox's inbox, so a burst the code can queue is
    /// not refused before it.
    mailbox: usize,
}

impl std::fmt::Debug for JsHyperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsHyperty").field("url", &self.url).finish()
    }
}

impl JsHyperty {
    /// The powers for the code of the hyperty at `url`, and the table of its
    /// unanswered requests they share with the host.
    pub(crate) fn powers(
        bus: &Bus,
        url: &HypertyUrl,
        registry: Recipient<UnregisterHyperty>,
    ) -> (Box<dyn JsHost>, Unanswered) {
        let unanswered: Unanswered = Arc::default();
        let powers = HypertyPowers {
            bus: BoundBus::new(bus.clone(), Holdings::new(url.clone())),
            plain: bus.clone(),
            url: url.clone(),
            unanswered: unanswered.clone(),
            registry,
        };
        (Box::new(powers), unanswered)
    }

    /// A host for `sandbox` (started with [`JsHyperty::powers`]) whose inbox
    /// holds `mailbox` events.
    pub(crate) fn new(
        url: HypertyUrl,
        bus: Bus,
        (sandbox, mailbox): (JsSandbox, usize),
        unanswered: Unanswered,
    ) -> Self {
        JsHyperty {
            url,
            bus,
            sandbox: Some(sandbox),
            unanswered,
            mailbox,
        }
    }

    /// Powers for a replacement that share this host's unanswered requests.
    pub(crate) fn replacement_powers(
        bus: &Bus,
        url: &HypertyUrl,
        registry: Recipient<UnregisterHyperty>,
        unanswered: &Unanswered,
    ) -> Box<dyn JsHost> {
        Box::new(HypertyPowers {
            bus: BoundBus::new(bus.clone(), Holdings::new(url.clone())),
            plain: bus.clone(),
            url: url.clone(),
            unanswered: unanswered.clone(),
            registry,
        })
    }

    fn refuse(&self, m: &Message, code: ResponseCode, why: &str) {
        if m.kind.expects_response() {
            self.bus.send(m.reply_error(code, why));
        }
    }
}

impl Actor for JsHyperty {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox.max(16));
    }
}

impl Handler<Deliver> for JsHyperty {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let Some(sandbox) = &self.sandbox else {
            return self.refuse(&m, ResponseCode::InternalError, "hyperty failed");
        };
        if m.kind.expects_response() {
            let Ok(mut u) = self.unanswered.lock() else {
                return;
            };
            if u.len() >= MAX_UNANSWERED {
                // requests their senders stopped waiting for are forgotten
                let expired = self.bus.config().request_timeout;
                u.retain(|_, (at, _)| at.elapsed() < expired);
            }
            if u.len() >= MAX_UNANSWERED {
                drop(u);
                return self.refuse(&m, ResponseCode::TooManyRequests, "hyperty busy");
            }
            u.insert(
                (m.from.as_str().to_owned(), m.id),
                (Instant::now(), m.clone()),
            );
        }
        let key = (m.from.as_str().to_owned(), m.id);
        match sandbox.events().send(JsEvent::Message(m.to_json())) {
            Ok(()) => {}
            Err(e) => {
                if let Ok(mut u) = self.unanswered.lock() {
                    u.remove(&key);
                }
                let code = match e {
                    JsError::Busy => ResponseCode::TooManyRequests,
                    _ => ResponseCode::InternalError,
                };
                self.refuse(&m, code, &e.to_string());
            }
        }
    }
}

impl Handler<Replace> for JsHyperty {
    type Result = Result<(), super::UaError>;
    fn handle(&mut self, Replace(new): Replace, _: &mut Context<Self>) -> Self::Result {
        if !self.bus.has_listener(self.url.as_str()) {
            return Err(super::UaError::Unknown(format!("{} (it failed)", self.url)));
        }
        // the old code stops here; what it left unanswered goes to the new one
        self.sandbox = Some(new);
        let pending: Vec<Message> = self
            .unanswered
            .lock()
            .map(|u| u.values().map(|(_, m)| m.clone()).collect())
            .unwrap_or_default();
        info!(hyperty = %self.url, handed_over = pending.len(), "hyperty replaced by a newer version");
        if let Some(sb) = &self.sandbox {
            for m in pending {
                let _ = sb.events().send(JsEvent::Message(m.to_json()));
            }
        }
        Ok(())
    }
}

/// The powers of a JS stub: what it posts arrived from the wire; its socket
/// goes to the one endpoint its descriptor declares.
struct StubPowers {
    ctx: StubContext,
    endpoint: Option<String>,
    protocols: Vec<String>,
    arbiter: actix::ArbiterHandle,
    socket: Mutex<Option<mpsc::Sender<String>>>,
    status: watch::Sender<Reported>,
    connect_timeout: Duration,
    max_frame_bytes: usize,
}

/// The last status a stub's code reported, with its description.
pub(crate) type Reported = (StubStatus, Option<String>);

impl JsHost for StubPowers {
    fn post(&self, msg: Message) -> Result<(), String> {
        self.ctx.inject(msg);
        Ok(())
    }
    fn status(&self, status: &str, desc: Option<&str>) {
        let Some(s) = StubStatus::from_wire(status) else {
            warn!(stub = %self.ctx.url(), status, "unknown stub status ignored");
            return;
        };
        let _ = self.status.send((s, desc.map(str::to_owned)));
        self.ctx.report(s, desc);
    }
    fn ws_open(&self, events: JsEvents) -> Result<(), String> {
        let Some(url) = self.endpoint.clone() else {
            return Err("the descriptor declares no endpoint (configuration.url)".to_owned());
        };
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        if let Ok(mut s) = self.socket.lock() {
            *s = Some(tx);
        }
        let timeout = self.connect_timeout;
        let stub = self.ctx.url().clone();
        let protocols = self.protocols.clone();
        let max_frame = self.max_frame_bytes;
        let spawned = self.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let why = socket(&url, &protocols, (timeout, max_frame), rx, &events).await;
                info!(%stub, endpoint = %url, reason = %why, "stub socket closed");
                let _ = events.send(JsEvent::WsClosed(why));
            });
        });
        if !spawned {
            return Err("the runtime is stopping".to_owned());
        }
        Ok(())
    }
    fn ws_send(&self, text: String) -> Result<(), String> {
        let s = self.socket.lock().map_err(|_| "socket lost".to_owned())?;
        match s.as_ref() {
            Some(tx) => tx.try_send(text).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "socket queue full".to_owned(),
                mpsc::error::TrySendError::Closed(_) => "socket closed".to_owned(),
            }),
            None => Err("socket not open".to_owned()),
        }
    }
    fn ws_close(&self) {
        if let Ok(mut s) = self.socket.lock() {
            *s = None;
        }
    }
    fn failed(&self, reason: &str) {
        self.ws_close();
        let _ = self
            .status
            .send((StubStatus::Failed, Some(reason.to_owned())));
        self.ctx.report(StubStatus::Failed, Some(reason));
    }
}

/// Runs one WebSocket to `url` until either side closes; answers why it ended.
async fn socket(
    url: &str,
    protocols: &[String],
    (timeout, max_frame): (Duration, usize),
    mut outbound: mpsc::Receiver<String>,
    events: &JsEvents,
) -> String {
    let mut request = crate::bridge::http_client(timeout)
        .ws(url)
        .max_frame_size(max_frame);
    if !protocols.is_empty() {
        request = request.protocols(protocols);
    }
    let connecting = request.connect();
    let (_, framed) = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return format!("cannot connect to {url}: {e}"),
        Err(_) => return format!("cannot connect to {url}: timed out"),
    };
    let (mut sink, mut stream) = framed.split();
    if events.send(JsEvent::WsOpen).is_err() {
        return "sandbox stopped".to_owned();
    }
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Frame::Text(t))) => {
                    let text = String::from_utf8_lossy(&t).into_owned();
                    if let Err(e) = events.send(JsEvent::WsMessage(text)) {
                        return format!("frame not taken: {e}");
                    }
                }
                Some(Ok(Frame::Ping(p))) => {
                    let _ = sink.send(WsMessage::Pong(p)).await;
                }
                Some(Ok(Frame::Close(r))) => return format!("closed by the endpoint: {r:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("protocol error: {e}"),
                None => return "connection lost".to_owned(),
            },
            out = outbound.recv() => match out {
                Some(text) => {
                    if let Err(e) = sink.send(WsMessage::Text(text.into())).await {
                        return format!("send failed: {e}");
                    }
                }
                None => {
                    let _ = sink.send(WsMessage::Close(None)).await;
                    return "closed by the stub".to_owned();
                }
            },
        }
    }
}

/// A downloaded protocol stub.
pub struct JsStub {
    ctx: StubContext,
    sandbox: Option<JsSandbox>,
    status: watch::Receiver<Reported>,
    connect_timeout: Duration,
    /// Mailbox capacity (as [`JsHyperty`]'s).
    mailbox: usize,
}

impl std::fmt::Debug for JsStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsStub")
            .field("url", self.ctx.url())
            .finish()
    }
}

impl JsStub {
    /// The powers for a stub with `ctx` whose descriptor declares `endpoint`
    /// (and the WebSocket subprotocols to ask for there), and the status they
    /// report. Frames up to `max_frame_bytes` are taken from the endpoint.
    pub(crate) fn powers(
        ctx: StubContext,
        endpoint: Option<String>,
        protocols: Vec<String>,
        (connect_timeout, max_frame_bytes): (Duration, usize),
    ) -> (Box<dyn JsHost>, watch::Receiver<Reported>) {
        let (tx, rx) = watch::channel((StubStatus::Created, None));
        let powers = StubPowers {
            ctx,
            endpoint,
            protocols,
            arbiter: actix::Arbiter::current(),
            socket: Mutex::new(None),
            status: tx,
            connect_timeout,
            max_frame_bytes,
        };
        (Box::new(powers), rx)
    }

    /// A stub running `sandbox` (whose inbox holds `mailbox` events).
    pub(crate) fn new(
        ctx: StubContext,
        (sandbox, mailbox): (JsSandbox, usize),
        status: watch::Receiver<Reported>,
        connect_timeout: Duration,
    ) -> JsStub {
        JsStub {
            ctx,
            sandbox: Some(sandbox),
            status,
            connect_timeout,
            mailbox,
        }
    }
}

impl Actor for JsStub {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox.max(16));
    }
}

impl Handler<Connect> for JsStub {
    type Result = ResponseFuture<Result<(), StubError>>;
    /// Resolves when the code reports `live`; `failed`, or nothing within the
    /// connect timeout, is an error.
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        let sent = match &self.sandbox {
            Some(sb) => sb
                .events()
                .send(JsEvent::Connect)
                .map_err(|e| StubError::Connect(e.to_string())),
            None => Err(StubError::NotConnected),
        };
        let mut status = self.status.clone();
        let timeout = self.connect_timeout;
        let url = self.ctx.url().clone();
        Box::pin(async move {
            sent?;
            let settled = status.wait_for(|(s, _)| {
                matches!(
                    s,
                    StubStatus::Live | StubStatus::Failed | StubStatus::Disconnected
                )
            });
            match tokio::time::timeout(timeout, settled).await {
                Ok(Ok(s)) if s.0 == StubStatus::Live => Ok(()),
                Ok(Ok(s)) => Err(StubError::Connect(format!(
                    "stub {url} reported {} while connecting: {}",
                    s.0.as_str(),
                    s.1.as_deref().unwrap_or("no reason given")
                ))),
                Ok(Err(_)) => Err(StubError::Connect(format!("stub {url} stopped"))),
                Err(_) => Err(StubError::Connect(format!(
                    "stub {url} did not connect within {timeout:?}"
                ))),
            }
        })
    }
}

impl Handler<Disconnect> for JsStub {
    type Result = ();
    fn handle(&mut self, _: Disconnect, ctx: &mut Context<Self>) {
        if let Some(sb) = self.sandbox.take() {
            // the code says goodbye on its socket (e.g. a `close`) before it ends
            if sb.events().send(JsEvent::Disconnect).is_ok() {
                actix_rt::spawn(async move {
                    tokio::time::sleep(CLOSE_LINGER).await;
                    drop(sb);
                });
            }
        }
        // a stub that failed keeps `failed` (and its reason) as its last word
        if self.status.borrow().0 != StubStatus::Failed {
            self.ctx
                .report(StubStatus::Disconnected, Some("closed by the runtime"));
        }
        ctx.stop();
    }
}

impl Handler<Deliver> for JsStub {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let refused = match &self.sandbox {
            Some(sb) => sb.events().send(JsEvent::Message(m.to_json())).err(),
            None => Some(JsError::Stopped),
        };
        if let Some(e) = refused {
            if m.kind.expects_response() {
                let code = match e {
                    JsError::Busy => ResponseCode::TooManyRequests,
                    _ => ResponseCode::InternalError,
                };
                self.ctx
                    .inject(m.reply_error(code, format!("stub {}: {e}", self.ctx.url())));
            }
        }
    }
}
