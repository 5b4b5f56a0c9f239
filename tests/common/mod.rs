//! Shared test helpers: a scriptable hyperty, an in-process stub pair, deadlines.
#![allow(dead_code, unused_imports, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperty::prelude::*;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub use hyperty_actors::testkit::{Probe, ProbeRx, TIMEOUT};

pub mod cluster;
pub mod peers;
pub mod wsclient;
pub use wsclient::WsClient;

/// The test defaults of a node for `domain`: anonymous sessions allowed, nothing
/// on disk, fast password hashing.
pub fn node_config(domain: &str) -> hyperty::config::NodeConfig {
    let mut cfg = hyperty::config::NodeConfig::default();
    cfg.node.domain = domain.to_owned();
    cfg.node.workers = 2;
    // most tests speak as anonymous runtimes; tests/auth.rs covers authentication
    cfg.auth.mode = hyperty::config::AuthMode::Optional;
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None;
    cfg.identity.kdf = hyperty::identity::KdfParams::fast_insecure();
    cfg
}

/// Starts a node for `domain` on 127.0.0.1:0 with `tune` applied to the defaults.
pub fn start_node(
    domain: &str,
    tune: impl FnOnce(&mut hyperty::config::NodeConfig),
) -> hyperty::node::NodeHandle {
    start_node_with_clock(domain, Arc::new(hyperty_actors::clock::SystemClock), tune)
}

/// Like [`start_node`], with every time rule of the node read on `clock`.
pub fn start_node_with_clock(
    domain: &str,
    clock: Arc<dyn hyperty_actors::clock::Clock>,
    tune: impl FnOnce(&mut hyperty::config::NodeConfig),
) -> hyperty::node::NodeHandle {
    let mut cfg = node_config(domain);
    tune(&mut cfg);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    hyperty::node::start_with_clock(listener, cfg, clock).unwrap()
}

/// Starts one node per domain on 127.0.0.1:0, each able to find the others by
/// discovery (`[federation] resolve` maps every domain to its node's port); `tune`
/// gets each domain and its configuration.
pub fn start_domains(
    domains: &[&str],
    mut tune: impl FnMut(&str, &mut hyperty::config::NodeConfig),
) -> Vec<hyperty::node::NodeHandle> {
    let listeners: Vec<_> = domains
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let resolve: std::collections::BTreeMap<String, String> = domains
        .iter()
        .zip(&listeners)
        .map(|(d, l)| ((*d).to_owned(), l.local_addr().unwrap().to_string()))
        .collect();
    domains
        .iter()
        .zip(listeners)
        .map(|(d, l)| {
            let mut cfg = node_config(d);
            cfg.federation.resolve = resolve.clone();
            tune(d, &mut cfg);
            hyperty::node::start(l, cfg).unwrap()
        })
        .collect()
}

/// One node per domain of `configs` (started by [`start_domains`], linked by
/// discovery) and a runtime of each configuration attached to its domain's node
/// through the WebSocket bridge, in the same order.
pub async fn federated(
    configs: Vec<RuntimeConfig>,
    tune: impl FnMut(&str, &mut hyperty::config::NodeConfig),
) -> (Vec<hyperty::node::NodeHandle>, Vec<RuntimeHandle>) {
    let domains: Vec<&str> = configs.iter().map(|c| c.domain.as_str()).collect();
    let nodes = start_domains(&domains, tune);
    let mut runtimes = Vec::new();
    for (cfg, node) in configs.into_iter().zip(&nodes) {
        let rt = Runtime::start(cfg).unwrap();
        attach(&rt, node).await;
        runtimes.push(rt);
    }
    (nodes, runtimes)
}

/// Attaches `rt` to `node` through the WebSocket bridge (the node allocates the
/// addresses of the hyperties spawned afterwards).
pub async fn attach(rt: &RuntimeHandle, node: &hyperty::node::NodeHandle) {
    rt.attach_node(hyperty::bridge::BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
}

/// Stops every node of `nodes`.
pub async fn stop_all(nodes: &[hyperty::node::NodeHandle]) {
    for n in nodes {
        n.stop().await;
    }
}

/// A hyperty whose behaviour is chosen by the request's `value.action`:
/// `"crash"` panics, `"silent"` never answers, `"progress"` answers 100 then 200,
/// `"stop"` stops the actor, anything else echoes `{body, restarts}` with 200.
pub struct Worker {
    pub ctx: HypertyContext,
    pub gate: Option<oneshot::Receiver<()>>,
}

impl Actor for Worker {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(gate) = self.gate.take() {
            // hold the mailbox closed until the gate opens
            ctx.wait(
                async move {
                    let _ = gate.await;
                }
                .into_actor(self),
            );
        }
    }
}

impl Handler<Deliver> for Worker {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, ctx: &mut Context<Self>) {
        if !m.kind.expects_response() {
            return;
        }
        let action = m
            .body
            .value
            .as_ref()
            .and_then(|v| v.get("action"))
            .and_then(Value::as_str)
            .unwrap_or("echo");
        match action {
            "crash" => panic!("asked to crash"),
            "silent" => {}
            "stop" => ctx.stop(),
            "progress" => {
                self.ctx.reply(&m, ResponseCode::Provisional, Value::Null);
                self.ctx.reply(&m, ResponseCode::Ok, json!("done"));
            }
            _ => {
                let body = serde_json::to_value(&m.body).unwrap_or_default();
                self.ctx.reply(
                    &m,
                    ResponseCode::Ok,
                    json!({"body": body, "restarts": self.ctx.restarts()}),
                );
            }
        }
    }
}

pub fn worker(provider: &str) -> HypertySpec {
    HypertySpec::new("worker", provider, |ctx| Worker { ctx, gate: None })
}

/// A worker whose mailbox stays closed until the returned sender fires (or drops).
pub fn gated_worker(provider: &str) -> (HypertySpec, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel();
    let slot = Arc::new(Mutex::new(Some(rx)));
    let spec = HypertySpec::new("gated", provider, move |ctx| Worker {
        ctx,
        gate: slot.lock().unwrap().take(),
    });
    (spec, tx)
}

pub fn action(a: &str) -> Value {
    json!({ "action": a })
}

pub fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

pub fn request(from: &Address, to: &Address, value: Value) -> Message {
    Message::new(MessageType::Execute, from.clone(), to.clone()).with_value(value)
}

/// One end of an in-process stub pair: what it is delivered, it injects into the
/// peer runtime as if it had crossed a wire.
pub struct LoopStub {
    pub ctx: StubContext,
    pub peer: Arc<Mutex<Option<StubContext>>>,
}

impl Actor for LoopStub {
    type Context = Context<Self>;
}

impl Handler<Deliver> for LoopStub {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        // serialise and parse, as a wire would
        let wire = m.to_json();
        let back = Message::parse(&wire).expect("round trip");
        if let Some(peer) = self.peer.lock().unwrap().as_ref() {
            peer.inject(back);
        }
    }
}

impl Handler<Connect> for LoopStub {
    type Result = Result<(), StubError>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        self.ctx.report(StubStatus::InProgress, None);
        self.ctx.report(StubStatus::Live, None);
        Ok(())
    }
}

impl Handler<Disconnect> for LoopStub {
    type Result = ();
    fn handle(&mut self, _: Disconnect, _: &mut Context<Self>) {
        self.ctx.report(StubStatus::Disconnected, Some("requested"));
    }
}

/// Connects `a` to `b` (stub in `a` for `b_domain`) and `b` to `a` (stub in `b` for
/// `a_domain`). Returns the two stub URLs.
pub async fn link(
    a: &RuntimeHandle,
    a_domain: Option<&str>,
    b: &RuntimeHandle,
    b_domain: Option<&str>,
) -> (Address, Address) {
    let a_slot = Arc::new(Mutex::new(None));
    let b_slot = Arc::new(Mutex::new(None));
    let (ab, ba) = (b_slot.clone(), a_slot.clone());
    let sa = a
        .add_stub(b_domain, move |ctx| {
            *ba.lock().unwrap() = Some(ctx.clone());
            LoopStub { ctx, peer: ab }
        })
        .await
        .unwrap();
    let (ba2, ab2) = (a_slot.clone(), b_slot.clone());
    let sb = b
        .add_stub(a_domain, move |ctx| {
            *ab2.lock().unwrap() = Some(ctx.clone());
            LoopStub { ctx, peer: ba2 }
        })
        .await
        .unwrap();
    sa.connect().await.unwrap();
    sb.connect().await.unwrap();
    (sa.url, sb.url)
}

/// A hyperty registered as a webinos event entity, with a listener on it.
pub struct Party {
    pub addr: Address,
    pub ep: EventEndpoint,
    pub inbox: InboxReceiver,
}

/// A hyperty of `domain` in `rt` (its address allocated by the node it is attached
/// to) registered as an event entity.
pub async fn party(rt: &RuntimeHandle, domain: &str) -> Party {
    let addr = rt
        .spawn_hyperty(worker(domain))
        .await
        .unwrap()
        .into_address();
    let ep = rt.events().endpoint(addr.clone());
    ep.register_entity(addr.clone()).await.unwrap();
    let (listener, inbox) = EventInbox::start();
    ep.add_listener(ListenerFilter::any().destination(addr.clone()), listener)
        .await
        .unwrap();
    Party { addr, ep, inbox }
}

/// A runtime of `domain` attached to the node at `url`.
pub async fn attached_runtime(domain: &str, url: &str) -> RuntimeHandle {
    let rt = Runtime::start(RuntimeConfig::new(domain)).unwrap();
    rt.attach_node(hyperty::bridge::BridgeConfig::new(url))
        .await
        .unwrap();
    rt
}

/// Webinos addressing end to end through the nodes at `urls` (one runtime on
/// each): alice (first) sends to bob (second), cc carol and bcc dave (both third);
/// each gets it once, only dave sees the bcc, and bob's delivery notification
/// comes back to alice. Returns the three runtimes.
pub async fn cc_bcc_event_with_delivery(domain: &str, urls: [&str; 3]) -> [RuntimeHandle; 3] {
    let ra = attached_runtime(domain, urls[0]).await;
    let rb = attached_runtime(domain, urls[1]).await;
    let rc = attached_runtime(domain, urls[2]).await;
    let alice = party(&ra, domain).await;
    let mut bob = party(&rb, domain).await;
    let mut carol = party(&rc, domain).await;
    let mut dave = party(&rc, domain).await;

    let event = alice
        .ep
        .builder("chat", alice.addr.clone())
        .to(bob.addr.clone())
        .cc(carol.addr.clone())
        .bcc(dave.addr.clone())
        .payload("lunch?")
        .build()
        .unwrap();
    let id = event.id();
    let (callbacks, mut reports) = EventCallbacks::channel(CallbackSet::all());
    alice
        .ep
        .dispatch(event, Some(callbacks), Some(Duration::from_secs(30)))
        .await
        .unwrap();

    let b = bob.inbox.recv(TIMEOUT).await.expect("bob got it");
    assert_eq!(b.event.id(), id, "same id end to end");
    assert!(
        b.event.addressing().bcc().is_empty(),
        "bob never sees the bcc"
    );
    let c = carol.inbox.recv(TIMEOUT).await.expect("carol got it");
    assert!(
        c.event.addressing().bcc().is_empty(),
        "carol is not dave's owner"
    );
    let d = dave.inbox.recv(TIMEOUT).await.expect("dave got it");
    assert_eq!(d.event.addressing().bcc(), std::slice::from_ref(&dave.addr));
    assert_eq!(d.event.payload(), Some("lunch?"));

    // the primary recipient's delivery notification comes back
    let mut delivered = false;
    while let Some(r) = reports.recv(TIMEOUT).await {
        if let ReportKind::Delivery {
            recipient,
            duplicate,
        } = &r.kind
        {
            assert_eq!(recipient, &bob.addr);
            assert!(!duplicate);
            delivered = true;
            break;
        }
    }
    assert!(delivered, "onDelivery for bob");
    // exactly one copy each
    assert!(bob.inbox.recv(Duration::from_millis(200)).await.is_none());
    assert!(dave.inbox.recv(Duration::from_millis(10)).await.is_none());
    [ra, rb, rc]
}

/// Polls `cond` until it holds or the deadline passes.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A GET over a raw TCP socket; returns the JSON body of a 200 answer.
pub async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .expect("a path");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = out.split_once("\r\n\r\n").map(|b| b.1).unwrap_or_default();
    let start = body.find('{').expect("a JSON body");
    let end = body.rfind('}').expect("a JSON body");
    body[start..=end].to_owned()
}

/// `GET` with an optional bearer token: the status and the JSON body.
pub async fn http_get_json(url: &str, token: Option<&str>) -> (u16, Value) {
    let client = awc::Client::default();
    let mut req = client.get(url).timeout(TIMEOUT);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body:?}")),
    )
}

/// `method` with an optional bearer token and JSON body: the status and the JSON
/// body (`null` when there is none).
pub async fn http_json(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = awc::Client::default();
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut req = client.request(method, url).timeout(TIMEOUT);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let sent = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    let mut resp = sent.unwrap_or_else(|e| panic!("{url}: {e}"));
    let body = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// `encodeURIComponent`, for URLs in request paths.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The node's `/health` document.
pub async fn health(node: &hyperty::node::NodeHandle) -> Value {
    serde_json::from_str(&http_get(&format!("{}/health", node.http_url())).await).unwrap()
}

/// Registers `user` at the node's identity provider and logs in: an ID token.
pub async fn user_token(node: &hyperty::node::NodeHandle, user: &str) -> String {
    use hyperty::identity::{Login, Profile, RegisterUser, Secret};
    let idp = node.state().idp();
    let password = Secret::new("correct horse battery");
    idp.send(RegisterUser {
        username: user.to_owned(),
        password: password.clone(),
        profile: Profile::default(),
    })
    .await
    .expect("idp")
    .expect("registered");
    let t = idp
        .send(Login {
            username: user.to_owned(),
            password,
            device: None,
            source: None,
        })
        .await
        .expect("idp")
        .expect("logged in");
    t.token.expose().to_owned()
}

/// A hyperty that hands every message it is delivered to the test.
pub struct Inbox {
    pub tx: tokio::sync::mpsc::UnboundedSender<Message>,
}

impl Actor for Inbox {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Inbox {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let _ = self.tx.send(m);
    }
}

/// Starts an [`Inbox`] hyperty of `provider` in `rt` (at `url` if given): its
/// context (for its Syncher) and what it is delivered.
pub async fn inbox_hyperty(
    rt: &RuntimeHandle,
    provider: &str,
    url: Option<HypertyUrl>,
) -> (
    HypertyContext,
    tokio::sync::mpsc::UnboundedReceiver<Message>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let slot: Arc<Mutex<Option<HypertyContext>>> = Arc::new(Mutex::new(None));
    let s = slot.clone();
    let mut spec = HypertySpec::new("inbox", provider, move |ctx| {
        *s.lock().unwrap() = Some(ctx);
        Inbox { tx: tx.clone() }
    });
    if let Some(u) = url {
        spec = spec.with_url(u);
    }
    rt.spawn_hyperty(spec).await.unwrap();
    let ctx = slot.lock().unwrap().take().expect("factory ran");
    (ctx, rx)
}

/// The next message an [`Inbox`] hyperty was delivered, if one comes `within`.
pub async fn next_message(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Message>,
    within: Duration,
) -> Option<Message> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}
