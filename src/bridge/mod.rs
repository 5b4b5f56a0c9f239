//! The WebSocket bridge: the protocol stub that connects a runtime to its messaging
//! node, so that remote addresses look local.
//!
//! [`NodeStub`] is an awc WebSocket client wrapped in an actor. It
//!
//! * connects to the node's `ws://…/ws` (TCP_NODELAY), handshakes with `open` from
//!   the runtime URL (or `re-open` with the runtime token after a reconnect), and
//!   reports `in-progress → live → disconnected | failed` on `<stubURL>/status`;
//! * carries every message the bus cannot deliver locally (it is the runtime's
//!   default route) as one JSON text frame, and hands every inbound frame to the bus;
//! * allocates hyperty addresses from the node (it is the registry's
//!   [`AllocateAddresses`] allocator) and, after a fresh `open` (the node lost the
//!   session, e.g. it restarted), re-claims them with an explicit allocation
//!   request (`create {value:{reclaim:[…]}}` to the node's address allocation),
//!   which the node grants only to the identity that held them;
//! * given several nodes of one domain ([`BridgeConfig::with_urls`]), moves to the
//!   next one when a connection attempt fails (its node is gone) and re-opens its
//!   session there with the runtime token, or opens afresh and re-claims its
//!   addresses if that node does not know the session;
//! * reconnects with exponential backoff (with jitter) after any loss, buffering up
//!   to `queue_limit` outbound messages meanwhile; beyond that, requests are answered
//!   504 "messaging node unreachable";
//! * keeps at most `write_budget` bytes written but not yet taken by the socket
//!   (the node stops reading a sender whose recipients fall behind, and the writer
//!   would otherwise buffer without limit): past it, messages wait in the same
//!   bounded queue until the socket drains to half, and beyond the queue requests
//!   are answered 503 "the link to the messaging node is congested";
//! * pings the node and treats `silence_timeout` without a frame as a lost connection;
//! * records its connectivity statistics in its [`StubStats`] (reported by the
//!   runtime's QoS user agent): the round trip of each ping (its payload is a
//!   sequence number the pong must echo; one ping in flight, the first as soon as
//!   the session is live), message frames and bytes each way, reconnections, the
//!   uptime of the current connection and the depth of the outbound queue.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_codec::Framed;
use actix_service::Service;
use actix_web::http;
use awc::ws::{Codec, Frame, Message as WsMessage};
use awc::BoxedSocket;
use futures_util::stream::{SplitSink, StreamExt};
use hyperty_actors::address::Address;
use hyperty_actors::bus::Deliver;
use hyperty_actors::connectivity::{Measures, StubStats};
use hyperty_actors::error::RegistryError;
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use hyperty_actors::protostub::{Connect, Disconnect, StubContext, StubError, StubStatus};
use hyperty_actors::registry::AllocateAddresses;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// How a runtime reaches its messaging node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// `ws://HOST:PORT/ws`: the node tried first.
    pub url: String,
    /// Other nodes of the same domain (`ws://HOST:PORT/ws` each), tried in turn
    /// after `url` when a connection attempt fails; the session is re-opened there
    /// with the runtime token (opened afresh, its addresses claimed again, if that
    /// node does not know it).
    pub fallback_urls: Vec<String>,
    /// An ID or device token from the node's identity provider, sent in `open` as
    /// `body.idToken` (nodes require one unless their `auth.mode` is `optional`).
    pub token: Option<String>,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long `connect` (and a control request) may take.
    pub connect_timeout: Duration,
    /// Outbound messages kept while disconnected or congested.
    pub queue_limit: usize,
    /// Bytes written to the socket's writer but not yet taken by the socket, past
    /// which messages wait in the queue.
    pub write_budget: usize,
    /// Largest frame accepted from the node.
    pub max_frame_size: usize,
    /// Ping interval.
    pub heartbeat: Duration,
    /// Silence after which the connection is considered lost.
    pub silence_timeout: Duration,
}

impl BridgeConfig {
    /// Defaults for the nodes at `urls`, tried in this order (`None` if the list
    /// is empty).
    pub fn with_urls<I, S>(urls: I) -> Option<BridgeConfig>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut urls = urls.into_iter().map(Into::into);
        let mut config = BridgeConfig::new(urls.next()?);
        config.fallback_urls = urls.collect();
        Some(config)
    }

    /// The `n`-th node URL (`url` first, then `fallback_urls`, round again).
    pub fn node_url(&self, n: usize) -> &str {
        match n % (1 + self.fallback_urls.len()) {
            0 => &self.url,
            i => &self.fallback_urls[i - 1],
        }
    }

    /// Defaults for the node at `url`.
    pub fn new(url: impl Into<String>) -> BridgeConfig {
        BridgeConfig {
            url: url.into(),
            fallback_urls: Vec::new(),
            token: None,
            reconnect_initial: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            queue_limit: 4096,
            write_budget: 4 << 20,
            max_frame_size: 1 << 20,
            heartbeat: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(30),
        }
    }
}

type WsSink = SplitSink<Framed<BoxedSocket, Codec>, WsMessage>;

/// The socket's writer, counting the text bytes [`SinkWrite`] holds for it:
/// `SinkWrite` buffers whatever it is given, so the bridge charges each text frame
/// to `pending` and this sink refunds it when the socket's codec takes the frame
/// (the codec's own buffer is bounded: it stops taking frames while the socket
/// does not accept more). Once the count is back to zero after the bridge held
/// messages back, the bridge is told ([`Drained`]).
struct Metered {
    inner: WsSink,
    pending: std::rc::Rc<Pending>,
    bridge: Recipient<Drained>,
}

/// Bytes held by a connection's [`SinkWrite`], and whether messages wait for them.
#[derive(Default)]
struct Pending {
    bytes: std::cell::Cell<usize>,
    waiting: std::cell::Cell<bool>,
}

impl futures_util::Sink<WsMessage> for Metered {
    type Error = awc::error::WsProtocolError;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::pin::Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: std::pin::Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        if let WsMessage::Text(t) = &item {
            let p = &self.pending;
            p.bytes.set(p.bytes.get().saturating_sub(t.len()));
        }
        std::pin::Pin::new(&mut self.inner).start_send(item)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        let flushed = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.drained();
        flushed
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl Metered {
    /// Tells the bridge, once, that its held-back messages may go.
    fn drained(&self) {
        let p = &self.pending;
        if p.waiting.get() && p.bytes.get() == 0 {
            p.waiting.set(false);
            self.bridge.do_send(Drained);
        }
    }
}

/// The socket's writer drained: held-back messages may go.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Drained;

/// How long a socket closed by the runtime stays open for its last frames
/// (the `close`) to go out, unless the node closes it first.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Addresses per re-claim request (the node's default `allocation.max_per_request`).
const RECLAIM_BATCH: usize = 100;

enum Inbound {
    Frame(u64, Result<Frame, awc::error::WsProtocolError>),
    Ended(u64),
}

impl actix::Message for Inbound {
    type Result = ();
}

enum Control {
    Open,
    ReOpen,
    /// A request whose answer is only logged when it is not 200 (what it was).
    Ack(&'static str),
    Allocate(oneshot::Sender<Result<Vec<Address>, RegistryError>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Connecting,
    Handshaking,
    Live,
    Stopped,
}

/// Claims addresses for this runtime at the node (an allocation request with
/// `value.reclaim`), e.g. hyperties registered before the node was attached.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct ClaimAddresses(pub Vec<Address>);

/// The bridge actor.
pub struct NodeStub {
    ctx: StubContext,
    config: BridgeConfig,
    runtime: Address,
    domain: String,
    state: State,
    generation: u64,
    sink: Option<SinkWrite<WsMessage, Metered>>,
    /// What the current connection's writer holds (see [`Metered`]).
    pending: std::rc::Rc<Pending>,
    token: Option<String>,
    control: HashMap<u64, Control>,
    queue: VecDeque<Message>,
    owned: Vec<Address>,
    waiters: Vec<oneshot::Sender<()>>,
    attempts: u32,
    last_heard: Instant,
    stats: StubStats,
    /// The ping awaiting its pong: its sequence number and when it went out.
    ping: Option<(u64, Instant)>,
    pings: u64,
    /// The bridge has been live before (a later `live` is a reconnection).
    was_live: bool,
    /// Which of the configured node URLs it connects to ([`BridgeConfig::node_url`]).
    node: usize,
}

impl std::fmt::Debug for NodeStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStub")
            .field("url", &self.node_url())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn nodelay_client(config: &BridgeConfig) -> awc::Client {
    http_client(config.connect_timeout)
}

/// An awc client whose connections set TCP_NODELAY, with `timeout` for connecting
/// and for each request (plain TCP: this build has no TLS).
pub(crate) fn http_client(timeout: Duration) -> awc::Client {
    let tcp = actix_tls::connect::Connector::default().service();
    let nodelay =
        actix_service::fn_service(move |req: actix_tls::connect::ConnectInfo<http::Uri>| {
            let connecting = tcp.call(req);
            async move {
                let conn = connecting.await?;
                let _ = conn.io_ref().set_nodelay(true);
                Ok::<_, actix_tls::connect::ConnectError>(conn)
            }
        });
    awc::Client::builder()
        .connector(awc::Connector::new().connector(nodelay).timeout(timeout))
        .timeout(timeout)
        .finish()
}

/// `d` ± 20 %, so that many clients do not retry in step.
pub(crate) fn jitter(d: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // 80 % .. 120 %
    d.mul_f64(0.8 + (r % 400) as f64 / 1000.0)
}

impl NodeStub {
    /// A bridge for the runtime of `ctx` to the node in `config`.
    pub fn new(ctx: StubContext, config: BridgeConfig) -> NodeStub {
        let runtime = ctx.bus().runtime_url().address().clone();
        let domain = runtime.domain().unwrap_or("localhost").to_owned();
        let stats = ctx.stats().clone();
        stats.measure(
            Measures::TRAFFIC | Measures::ROUND_TRIP | Measures::CONNECTION | Measures::QUEUE,
        );
        NodeStub {
            ctx,
            config,
            runtime,
            domain,
            state: State::Idle,
            generation: 0,
            sink: None,
            pending: Default::default(),
            token: None,
            control: HashMap::new(),
            queue: VecDeque::new(),
            owned: Vec::new(),
            waiters: Vec::new(),
            attempts: 0,
            last_heard: Instant::now(),
            stats,
            ping: None,
            pings: 0,
            was_live: false,
            node: 0,
        }
    }

    fn node_url(&self) -> &str {
        self.config.node_url(self.node)
    }

    fn node_address(&self, path: &str) -> Option<Address> {
        Address::parse(&format!("domain://msg-node.{}/{path}", self.domain)).ok()
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if matches!(
            self.state,
            State::Connecting | State::Handshaking | State::Live
        ) {
            return;
        }
        self.state = State::Connecting;
        self.generation += 1;
        let generation = self.generation;
        self.ctx.report(StubStatus::InProgress, None);
        let client = nodelay_client(&self.config);
        let request = client
            .ws(self.node_url())
            .max_frame_size(self.config.max_frame_size);
        let connecting = async move { request.connect().await };
        ctx.spawn(connecting.into_actor(self).map(move |result, act, ctx| {
            if act.generation != generation || act.state != State::Connecting {
                return;
            }
            match result {
                Ok((_, framed)) => {
                    let (sink, stream) = framed.split();
                    act.pending = Default::default();
                    let metered = Metered {
                        inner: sink,
                        pending: act.pending.clone(),
                        bridge: ctx.address().recipient(),
                    };
                    act.sink = Some(SinkWrite::new(metered, ctx));
                    ctx.add_stream(stream.map(move |f| Inbound::Frame(generation, f)).chain(
                        futures_util::stream::once(async move { Inbound::Ended(generation) }),
                    ));
                    act.last_heard = Instant::now();
                    act.handshake(ctx);
                }
                Err(e) => {
                    let why = format!("cannot connect to {}: {e}", act.node_url());
                    // this node is gone: the next attempt goes to the next one
                    act.node += 1;
                    act.lost(ctx, &why)
                }
            }
        }));
    }

    fn handshake(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Handshaking;
        let session = Address::parse("mn:/session").ok();
        let Some(session) = session else { return };
        let (kind, control) = match &self.token {
            Some(_) => (MessageType::ReOpen, Control::ReOpen),
            None => (MessageType::Open, Control::Open),
        };
        let mut msg = Message::new(kind, self.runtime.clone(), session);
        if let Some(t) = &self.token {
            msg.body
                .extra
                .insert("runtimeToken".to_owned(), Value::String(t.clone()));
        }
        if let Some(t) = &self.config.token {
            msg.body
                .extra
                .insert("token".to_owned(), Value::String(t.clone()));
        }
        self.send_control(msg, control);
        let generation = self.generation;
        ctx.run_later(self.config.connect_timeout, move |act, ctx| {
            if act.generation == generation && act.state == State::Handshaking {
                act.lost(ctx, "handshake timed out");
            }
        });
    }

    fn send_control(&mut self, mut msg: Message, control: Control) {
        msg.id = self.ctx.bus().next_id();
        self.control.insert(msg.id, control);
        self.write(&msg);
    }

    /// Writes `msg` to the socket; false if there is none.
    fn write(&mut self, msg: &Message) -> bool {
        let Some(sink) = &mut self.sink else {
            return false;
        };
        let text = msg.to_json();
        let len = text.len();
        let written = sink.write(WsMessage::Text(text.into())).is_ok();
        if written {
            self.pending.bytes.set(self.pending.bytes.get() + len);
            self.stats.sent(len);
        }
        written
    }

    /// Writes `msg` if the socket's writer is within its budget; false otherwise
    /// (the writer then says when it has drained).
    fn write_within_budget(&mut self, msg: &Message) -> bool {
        if self.pending.bytes.get() >= self.config.write_budget {
            self.pending.waiting.set(true);
            return false;
        }
        self.write(msg)
    }

    /// Sends what waits in the queue, in order, as far as the budget allows.
    fn flush_queue(&mut self) {
        while let Some(m) = self.queue.pop_front() {
            if !self.write_within_budget(&m) {
                self.queue.push_front(m);
                break;
            }
        }
        self.stats.queue_depth(self.queue.len());
    }

    /// Sends a ping whose payload is its sequence number; a pong echoing it gives
    /// the round trip. A ping still unanswered is superseded.
    fn send_ping(&mut self) {
        let Some(sink) = &mut self.sink else { return };
        self.pings += 1;
        let payload = bytes::Bytes::copy_from_slice(&self.pings.to_be_bytes());
        if sink.write(WsMessage::Ping(payload)).is_ok() {
            self.ping = Some((self.pings, Instant::now()));
        }
    }

    fn on_pong(&mut self, payload: &[u8]) {
        match self.ping {
            Some((seq, at)) if payload == seq.to_be_bytes() => {
                self.stats.round_trip(at.elapsed());
                self.ping = None;
            }
            _ => debug!(node = %self.node_url(), "pong for no ping in flight ignored"),
        }
    }

    fn go_live(&mut self) {
        self.state = State::Live;
        self.attempts = 0;
        info!(node = %self.node_url(), runtime = %self.runtime, "bridge live");
        self.ctx.report(StubStatus::Live, None);
        self.stats.connected(self.was_live);
        self.was_live = true;
        self.send_ping();
        self.flush_queue();
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// Re-claims `addresses` at the node, in requests of at most
    /// [`RECLAIM_BATCH`] addresses.
    fn claim(&mut self, addresses: Vec<Address>) {
        let Some(to) = self.node_address("address-allocation") else {
            return;
        };
        for batch in addresses.chunks(RECLAIM_BATCH) {
            let list: Vec<&str> = batch.iter().map(Address::as_str).collect();
            let msg = Message::new(MessageType::Create, self.runtime.clone(), to.clone())
                .with_value(json!({ "reclaim": list }));
            self.send_control(msg, Control::Ack("re-claiming addresses"));
        }
    }

    fn lost(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.state == State::Stopped {
            return;
        }
        warn!(node = %self.node_url(), reason = why, "bridge disconnected");
        self.sink = None;
        self.ping = None;
        self.stats.disconnected();
        self.generation += 1;
        self.state = State::Idle;
        for (_, c) in self.control.drain() {
            if let Control::Allocate(tx) = c {
                let _ = tx.send(Err(RegistryError::Allocation(why.to_owned())));
            }
        }
        self.ctx.report(StubStatus::Disconnected, Some(why));
        let delay = self
            .config
            .reconnect_initial
            .saturating_mul(1 << self.attempts.min(16))
            .min(self.config.reconnect_max);
        self.attempts += 1;
        ctx.run_later(jitter(delay), |act, ctx| {
            if act.state == State::Idle {
                act.connect(ctx);
            }
        });
    }

    fn on_control(&mut self, control: Control, resp: Message, ctx: &mut Context<Self>) {
        let ok = resp.code() == Some(ResponseCode::Ok);
        match control {
            Control::Open if ok => {
                self.token = resp
                    .body
                    .extra
                    .get("runtimeToken")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let owned = self.owned.clone();
                self.claim(owned);
                self.go_live();
            }
            Control::Open => {
                let why = resp
                    .body
                    .description_text()
                    .unwrap_or("open refused")
                    .to_owned();
                self.ctx.report(StubStatus::Failed, Some(&why));
                self.lost(ctx, &format!("open refused: {why}"));
            }
            Control::ReOpen if ok => self.go_live(),
            Control::ReOpen => {
                // the node no longer knows the session (it restarted, or the grace
                // period ended): start afresh and claim our addresses again
                debug!(node = %self.node_url(), "re-open refused, opening a new session");
                self.token = None;
                self.handshake(ctx);
            }
            Control::Ack(what) => {
                if !ok {
                    warn!(response = %resp.to_json(), "{what} at the node failed");
                }
            }
            Control::Allocate(tx) => {
                let result = if ok {
                    let list: Vec<Address> = resp
                        .body
                        .value
                        .as_ref()
                        .and_then(|v| v.get("allocated"))
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .filter_map(|s| Address::parse(s).ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    self.owned.extend(list.iter().cloned());
                    Ok(list)
                } else {
                    Err(RegistryError::Allocation(
                        resp.body
                            .description_text()
                            .unwrap_or("allocation refused")
                            .to_owned(),
                    ))
                };
                let _ = tx.send(result);
            }
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let msg = match Message::parse(text) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "unparseable frame from the node dropped");
                return;
            }
        };
        if msg.is_response() && msg.to.first() == &self.runtime {
            if let Some(c) = self.control.remove(&msg.id) {
                return self.on_control(c, msg, ctx);
            }
        }
        self.ctx.inject(msg);
    }

    /// Answers a request that finds the queue full: 503 while the link is up but
    /// congested, 504 while the node cannot be reached.
    fn unreachable(&self, m: &Message) {
        if m.kind.expects_response() {
            let (code, why) = match self.state {
                State::Live => (
                    ResponseCode::ServiceUnavailable,
                    "the link to the messaging node is congested",
                ),
                _ => (ResponseCode::GatewayTimeout, "messaging node unreachable"),
            };
            let mut r = m.reply(code);
            r.body.description = Some(why.to_owned());
            self.ctx.inject(r);
        }
    }
}

impl Actor for NodeStub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.queue_limit.max(16));
        ctx.run_interval(self.config.heartbeat, |act, ctx| {
            if act.state != State::Live && act.state != State::Handshaking {
                return;
            }
            if act.last_heard.elapsed() > act.config.silence_timeout {
                act.lost(ctx, "no frame from the node within the silence timeout");
            } else {
                act.send_ping();
            }
        });
    }
}

impl WriteHandler<awc::error::WsProtocolError> for NodeStub {
    /// A failed socket is done: its writer stops (continuing would call this again
    /// on every poll, and each call would end the next connection too).
    fn error(&mut self, err: awc::error::WsProtocolError, ctx: &mut Self::Context) -> Running {
        if self.sink.is_some() {
            self.lost(ctx, &format!("write failed: {err}"));
        }
        Running::Stop
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<Inbound> for NodeStub {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        match item {
            Inbound::Frame(g, f) if g == self.generation => {
                self.last_heard = Instant::now();
                match f {
                    Ok(Frame::Text(b)) => {
                        self.stats.received(b.len());
                        match std::str::from_utf8(&b) {
                            Ok(t) => self.on_text(t, ctx),
                            Err(_) => warn!("non-UTF-8 text frame from the node dropped"),
                        }
                    }
                    Ok(Frame::Ping(p)) => {
                        if let Some(s) = &mut self.sink {
                            let _ = s.write(WsMessage::Pong(p));
                        }
                    }
                    Ok(Frame::Pong(p)) => self.on_pong(&p),
                    Ok(Frame::Close(reason)) => {
                        let why = reason
                            .and_then(|r| r.description)
                            .unwrap_or_else(|| "closed by the node".to_owned());
                        self.lost(ctx, &why);
                    }
                    Ok(_) => {}
                    Err(e) => self.lost(ctx, &format!("protocol error: {e}")),
                }
            }
            Inbound::Ended(g) if g == self.generation => self.lost(ctx, "connection closed"),
            _ => {}
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Connect> for NodeStub {
    type Result = ResponseFuture<Result<(), StubError>>;
    fn handle(&mut self, _: Connect, ctx: &mut Context<Self>) -> Self::Result {
        if self.state == State::Live {
            return Box::pin(async { Ok(()) });
        }
        if self.state == State::Stopped {
            self.state = State::Idle;
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.connect(ctx);
        let timeout = self.config.connect_timeout;
        let url = self.node_url().to_owned();
        Box::pin(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(StubError::Connect(format!(
                    "{url} not reachable within {timeout:?} (still retrying)"
                ))),
            }
        })
    }
}

impl Handler<Disconnect> for NodeStub {
    type Result = ();
    /// Sends `close` (the node frees the session and closes the socket); the
    /// socket is closed from this side too after a second. Closing it at
    /// once would lose the `close`: the writer's close does not flush frames still
    /// in its buffer.
    fn handle(&mut self, _: Disconnect, ctx: &mut Context<Self>) {
        if let (State::Live, Ok(session)) = (self.state, Address::parse("mn:/session")) {
            let mut m = Message::new(MessageType::Close, self.runtime.clone(), session);
            m.id = self.ctx.bus().next_id();
            self.write(&m);
        }
        if let Some(mut s) = self.sink.take() {
            ctx.run_later(CLOSE_LINGER, move |_, _| s.close());
        }
        self.state = State::Stopped;
        self.generation += 1;
        self.ping = None;
        self.stats.disconnected();
        self.ctx
            .report(StubStatus::Disconnected, Some("closed by the runtime"));
    }
}

impl Handler<Deliver> for NodeStub {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let _span = tracing::trace_span!("bridge.out", id = m.id, to = %m.to.first()).entered();
        // behind what already waits, so that order holds
        if self.state == State::Live && self.queue.is_empty() && self.write_within_budget(&m) {
            return;
        }
        if self.queue.len() < self.config.queue_limit {
            self.queue.push_back(m);
            self.stats.queue_depth(self.queue.len());
        } else {
            self.unreachable(&m);
        }
    }
}

impl Handler<Drained> for NodeStub {
    type Result = ();
    fn handle(&mut self, _: Drained, _: &mut Context<Self>) {
        if self.state == State::Live {
            self.flush_queue();
        }
    }
}

impl Handler<AllocateAddresses> for NodeStub {
    type Result = ResponseFuture<Result<Vec<Address>, RegistryError>>;
    fn handle(&mut self, a: AllocateAddresses, _: &mut Context<Self>) -> Self::Result {
        let Some(to) = self.node_address("address-allocation") else {
            return Box::pin(async { Err(RegistryError::Unavailable("address allocation")) });
        };
        if self.state != State::Live {
            return Box::pin(async {
                Err(RegistryError::Allocation(
                    "not connected to the messaging node".to_owned(),
                ))
            });
        }
        let (tx, rx) = oneshot::channel();
        let mut msg = Message::new(MessageType::Create, self.runtime.clone(), to)
            .with_value(json!({ "number": a.number }));
        msg.body
            .extra
            .insert("scheme".to_owned(), Value::String(a.scheme));
        self.send_control(msg, Control::Allocate(tx));
        let timeout = self.config.connect_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(r)) => r,
                _ => Err(RegistryError::Allocation(
                    "no answer from the messaging node".to_owned(),
                )),
            }
        })
    }
}

impl Handler<ClaimAddresses> for NodeStub {
    type Result = ();
    fn handle(&mut self, c: ClaimAddresses, _: &mut Context<Self>) {
        for a in &c.0 {
            if !self.owned.contains(a) {
                self.owned.push(a.clone());
            }
        }
        if self.state == State::Live {
            self.claim(c.0);
        }
    }
}
