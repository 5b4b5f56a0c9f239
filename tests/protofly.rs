//! Protocol on the fly: a runtime of domain A reaches a hyperty of domain B
//! through the stub it downloads from B's catalogue, with no gateway and no
//! federation between the nodes.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use hyperty::prelude::*;
use hyperty::ua::{RuntimeUa, UaConfig};
use serde_json::json;

/// B's stub for its node's raw WebSocket dialect.
const RAW_STUB: &str = include_str!("../examples/protofly/raw_stub.js");

/// A catalogue serving `code` as the domain's `default` protocol stub.
fn stub_catalogue(domain: &str, endpoint: &str, code: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("protofly-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(d.join("protocolstub")).unwrap();
    std::fs::write(
        d.join("protocolstub/default.json"),
        json!({"objectName": "default", "objectType": "protocolstub", "version": "1.0.0",
               "sourcePackageURL": "default.js",
               "configuration": {"url": endpoint, "domain": domain},
               "constraints": {"node": true, "websocket": true}, "policies": [], "dataObjects": []})
        .to_string(),
    )
    .unwrap();
    std::fs::write(d.join("protocolstub/default.js"), code).unwrap();
    d
}

/// A node for `domain` without federation (no node-to-node link exists), with
/// `catalogue` served.
fn isolated_node(
    domain: &str,
    listener: TcpListener,
    catalogue: Option<PathBuf>,
) -> hyperty::node::NodeHandle {
    let mut cfg = node_config(domain);
    cfg.federation.enabled = false;
    cfg.catalogue.dir = catalogue;
    hyperty::node::start(listener, cfg).unwrap()
}

#[actix::test]
async fn a_runtime_reaches_another_domain_through_the_stub_it_downloads() {
    // domain B: a node serving its catalogue, a runtime with a hyperty
    let lb = TcpListener::bind("127.0.0.1:0").unwrap();
    let b_addr = lb.local_addr().unwrap();
    let b_dir = stub_catalogue("b.org", &format!("ws://{b_addr}/ws"), RAW_STUB);
    let node_b = isolated_node("b.org", lb, Some(b_dir.clone()));
    let rt_b = Runtime::start(RuntimeConfig::new("b.org")).unwrap();
    attach(&rt_b, &node_b).await;
    let bob = rt_b.spawn_hyperty(worker("b.org")).await.unwrap();

    // domain D: its catalogue's stub points at an endpoint where nothing listens
    let ld = TcpListener::bind("127.0.0.1:0").unwrap();
    let d_addr = ld.local_addr().unwrap();
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d_dir = stub_catalogue("d.org", &format!("ws://{nowhere}/ws"), RAW_STUB);
    let node_d = isolated_node("d.org", ld, Some(d_dir.clone()));

    // domain A: its own node, a runtime with a user agent that knows where catalogues are
    let node_a = isolated_node("a.org", TcpListener::bind("127.0.0.1:0").unwrap(), None);
    let rt_a = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    attach(&rt_a, &node_a).await;
    let mut ua = UaConfig::default();
    ua.resolve.insert("b.org".into(), b_addr.to_string());
    ua.resolve.insert("c.org".into(), nowhere.to_string());
    ua.resolve.insert("d.org".into(), d_addr.to_string());
    ua.connect_timeout = Duration::from_secs(2);
    RuntimeUa::start(&rt_a, ua).await.unwrap();
    assert!(rt_a.stubs().await.iter().all(|s| s.domain.is_none()));

    // the first messages for b.org wait while the stub is fetched, checked and started
    let me = rt_a.url().component("app");
    let first: Vec<_> = (0..3)
        .map(|i| {
            rt_a.bus()
                .post(request(&me, bob.address(), json!({"n": i})))
        })
        .collect();
    for (i, r) in futures_util::future::join_all(first)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.unwrap();
        assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
        assert_eq!(r.body.value.unwrap()["body"]["value"], json!({"n": i}));
        assert_eq!(r.to.first(), &me);
    }
    let stubs = rt_a.stubs().await;
    let b_stub = stubs
        .iter()
        .find(|s| s.domain.as_deref() == Some("b.org"))
        .expect("b.org's stub registered");
    assert_eq!(b_stub.status, StubStatus::Live);
    // later messages go straight through it
    let r = rt_a
        .bus()
        .post(request(&me, bob.address(), json!("again")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    // node A never saw b.org's traffic: it has no federation
    assert!(node_a.state().federation().is_none());

    // a catalogue that cannot be reached: 504 naming the domain
    let carol: Address = "hyperty://c.org/carol".parse().unwrap();
    let r = rt_a
        .bus()
        .post(request(&me, &carol, json!("hi")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::GatewayTimeout));
    let why = r.body.description.unwrap();
    assert!(
        why.contains("c.org") && why.contains("unreachable"),
        "{why}"
    );

    // a stub that never connects: 504 naming the domain, and nothing left registered
    let dave: Address = "hyperty://d.org/dave".parse().unwrap();
    let r = rt_a
        .bus()
        .post(request(&me, &dave, json!("hi")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::GatewayTimeout));
    let why = r.body.description.unwrap();
    // the stub reported `failed`, naming the endpoint it could not reach
    assert!(
        why.contains("d.org")
            && why.contains("failed while connecting")
            && why.contains(&format!("ws://{nowhere}/ws")),
        "{why}"
    );
    assert!(!rt_a
        .stubs()
        .await
        .iter()
        .any(|s| s.domain.as_deref() == Some("d.org")));

    rt_a.shutdown().await;
    rt_b.shutdown().await;
    stop_all(&[node_a, node_b, node_d]).await;
    let _ = std::fs::remove_dir_all(b_dir);
    let _ = std::fs::remove_dir_all(d_dir);
}

/// seed 003's "mysite.com": a WebSocket server for its own in-the-wire protocol.
/// A connection to `/rtc?user=<U>` is U online; a frame is routed to its
/// `destination-user` (without the cookie) once its `cookie` is checked against
/// its `source-user`, who must be the connection's user; a request to someone
/// offline is answered `not-online`.
mod mysite {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message as Ws;

    pub const COOKIES: &[(&str, &str)] = &[("Bob", "kj87kjsdhf"), ("Alice", "t112mnkszz")];
    type Online = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;

    pub async fn serve() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let online: Online = Arc::default();
        actix_rt::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                actix_rt::spawn(session(tcp, online.clone()));
            }
        });
        addr
    }

    // the handshake callback's error type is tungstenite's, not ours
    #[allow(clippy::result_large_err)]
    async fn session(tcp: tokio::net::TcpStream, online: Online) {
        let mut user = None;
        let ws = tokio_tungstenite::accept_hdr_async(
            tcp,
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                user = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("user="))
                    .map(str::to_owned);
                Ok(resp)
            },
        )
        .await
        .unwrap();
        let Some(user) = user else { return };
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        online.lock().unwrap().insert(user.clone(), tx.clone());
        actix_rt::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Ws::Text(text.into())).await.is_err() {
                    return;
                }
            }
        });
        while let Some(Ok(Ws::Text(text))) = stream.next().await {
            let Ok(mut frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let kind = if frame.get("request").is_some() {
                "request"
            } else {
                "response"
            };
            let Some(body) = frame.get_mut(kind).and_then(Value::as_object_mut) else {
                continue;
            };
            let source = body
                .get("source-user")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let cookie = body
                .remove("cookie")
                .and_then(|c| c.as_str().map(str::to_owned));
            let authorised = source == user
                && COOKIES
                    .iter()
                    .any(|(u, c)| *u == source && Some(*c) == cookie.as_deref());
            if !authorised {
                continue;
            }
            let dest = body
                .get("destination-user")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let target = online.lock().unwrap().get(&dest).cloned();
            match target {
                Some(t) => {
                    let _ = t.send(frame.to_string());
                }
                None if kind == "request" => {
                    let _ = tx.send(json!({"response": {
                        "call-id": body.get("call-id"), "transaction-id": body.get("transaction-id"),
                        "status": "not-online", "source-user": dest, "destination-user": source}})
                    .to_string());
                }
                None => {}
            }
        }
        online.lock().unwrap().remove(&user);
    }
}

/// The next text frame of `ws`, as JSON (bounded wait).
async fn next_frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    match tokio::time::timeout(TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Ws::Text(t)))) => serde_json::from_str(&t).unwrap(),
        other => panic!("no frame: {other:?}"),
    }
}

#[actix::test]
async fn a_hyperty_calls_a_user_of_a_site_speaking_its_own_json_dialect() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as Ws;

    let rtc = mysite::serve().await;
    // mysite.com's catalogue: its stub for its protocol, logged in as Bob
    let lm = TcpListener::bind("127.0.0.1:0").unwrap();
    let m_addr = lm.local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("protofly-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("protocolstub")).unwrap();
    std::fs::write(
        dir.join("protocolstub/default.json"),
        json!({"objectName": "default", "objectType": "protocolstub", "version": "1.0.0",
               "sourcePackageURL": "default.js",
               "configuration": {"url": format!("ws://{rtc}/rtc?user=Bob"), "domain": "mysite.com",
                                 "user": "Bob", "cookie": "kj87kjsdhf"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("protocolstub/default.js"),
        include_str!("../examples/protofly/rtc_stub.js"),
    )
    .unwrap();
    let catalogue = isolated_node("mysite.com", lm, Some(dir.clone()));

    // Alice is online at mysite.com in her browser
    let (mut alice, _) = tokio_tungstenite::connect_async(format!("ws://{rtc}/rtc?user=Alice"))
        .await
        .unwrap();

    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let mut ua = UaConfig::default();
    ua.resolve.insert("mysite.com".into(), m_addr.to_string());
    RuntimeUa::start(&rt, ua).await.unwrap();
    let me = rt.url().component("bob");
    let (probe, mut inbox) = Probe::start();
    rt.bus()
        .add_listener(me.clone(), probe, None)
        .await
        .unwrap();

    let alice_addr: Address = "hyperty://mysite.com/Alice".parse().unwrap();
    let call = rt.bus().post(request(
        &me,
        &alice_addr,
        json!({"subject": "lunch?", "media": {"type": "OFFER", "sdp": "v=0"}}),
    ));
    let call = actix_rt::spawn(call);

    // Alice's browser gets the call in mysite.com's dialect, without Bob's cookie
    let frame = next_frame(&mut alice).await;
    let req = &frame["request"];
    assert_eq!(req["request-type"], "call");
    assert_eq!(req["source-user"], "Bob");
    assert_eq!(req["destination-user"], "Alice");
    assert_eq!(req["subject"], "lunch?");
    assert_eq!(req["media"]["type"], "OFFER");
    assert!(req.get("cookie").is_none());
    let call_id = req["call-id"].clone();
    let tid = req["transaction-id"].clone();
    alice
        .send(Ws::Text(
            json!({"response": {"call-id": call_id, "transaction-id": tid, "status": "accepted",
                                "source-user": "Alice", "destination-user": "Bob",
                                "cookie": "t112mnkszz", "media": {"type": "ANSWER", "sdp": "v=0"}}})
            .to_string()
            .into(),
        ))
        .await
        .unwrap();

    // Bob's hyperty gets a reTHINK response; Alice gets the ack
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
    let v = r.body.value.unwrap();
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["media"]["type"], "ANSWER");
    assert_eq!(r.from, alice_addr);
    let ack = next_frame(&mut alice).await;
    assert_eq!(ack["request"]["request-type"], "ack");
    assert_eq!(ack["request"]["call-id"], call_id);

    // Alice hangs up: Bob's hyperty gets a delete from her address
    alice
        .send(Ws::Text(
            json!({"request": {"call-id": call_id, "transaction-id": 1002, "request-type": "hangup",
                               "source-user": "Alice", "destination-user": "Bob", "cookie": "t112mnkszz"}})
            .to_string()
            .into(),
        ))
        .await
        .unwrap();
    let hangup = inbox
        .recv_matching(TIMEOUT, |m| m.kind == MessageType::Delete)
        .await
        .expect("hangup delivered");
    assert_eq!(hangup.from, alice_addr);
    assert_eq!(hangup.body.value.unwrap()["callId"], call_id);

    // someone offline: 404 from the site, in reTHINK terms
    let carol: Address = "hyperty://mysite.com/Carol".parse().unwrap();
    let r = rt
        .bus()
        .post(request(&me, &carol, json!({})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
    assert_eq!(r.body.value.unwrap()["status"], "not-online");

    rt.shutdown().await;
    catalogue.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Domain B for the raw stub's tests: a node serving `RAW_STUB` as its stub
/// (the descriptor changed by `tune`), and a runtime attached through the
/// built-in bridge where bob (a worker) answers and carol (an inbox) takes what
/// comes.
struct DomainB {
    node: hyperty::node::NodeHandle,
    addr: std::net::SocketAddr,
    dir: PathBuf,
    rt: RuntimeHandle,
    bob: Address,
    carol: HypertyContext,
    carol_rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
}

impl DomainB {
    async fn start(tune: impl FnOnce(&mut serde_json::Value)) -> DomainB {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = stub_catalogue("b.org", &format!("ws://{addr}/ws"), RAW_STUB);
        let file = dir.join("protocolstub/default.json");
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        tune(&mut doc);
        std::fs::write(&file, doc.to_string()).unwrap();
        let node = isolated_node("b.org", listener, Some(dir.clone()));
        let rt = Runtime::start(RuntimeConfig::new("b.org")).unwrap();
        attach(&rt, &node).await;
        let bob = rt.spawn_hyperty(worker("b.org")).await.unwrap();
        let (carol, carol_rx) = inbox_hyperty(&rt, "b.org", None).await;
        DomainB {
            node,
            addr,
            dir,
            rt,
            bob: bob.address().clone(),
            carol,
            carol_rx,
        }
    }

    /// A runtime of a.org (with `policy`) whose user agent finds B's catalogue.
    async fn downloading_runtime(
        &self,
        policy: Option<hyperty::actors::policy::PolicyConfig>,
    ) -> RuntimeHandle {
        let mut rc = RuntimeConfig::new("a.org");
        rc.policy = policy;
        let rt = Runtime::start(rc).unwrap();
        let mut ua = UaConfig::default();
        ua.resolve.insert("b.org".into(), self.addr.to_string());
        RuntimeUa::start(&rt, ua).await.unwrap();
        rt
    }

    fn carol_address(&self) -> Address {
        self.carol.url().address().clone()
    }

    /// Stops B and the `others` runtimes.
    async fn stop(self, others: Vec<RuntimeHandle>) {
        for rt in others {
            rt.shutdown().await;
        }
        self.rt.shutdown().await;
        self.node.stop().await;
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// `m` as JSON without what legitimately differs between two runs (its `id`),
/// with `me` (the sender's own address) written `<me>`.
fn comparable(m: &Message, me: &Address) -> serde_json::Value {
    let text = m.to_json().replace(me.as_str(), "<me>");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("id");
    v
}

/// A subscribe from `me` to b.org's `/sm` for `resource`.
fn subscribe(me: &Address, resource: &Address) -> Message {
    let sm: Address = "domain://msg-node.b.org/sm".parse().unwrap();
    let mut sub = Message::new(MessageType::Subscribe, me.clone(), sm);
    sub.body.resources = Some(vec![resource.as_str().to_owned()]);
    sub
}

/// An update from `me` to `to` nobody answers.
fn update(me: &Address, to: &Address, value: serde_json::Value) -> Message {
    Message::new(MessageType::Update, me.clone(), to.clone()).with_value(value)
}

/// What `rt` gets back, scenario by scenario, from B's node and B's runtime
/// (bob: a worker; carol: an inbox; `resource`: a channel `rt` listens on).
async fn run_scenarios(
    rt: &RuntimeHandle,
    bob: &Address,
    carol: &Address,
    resource: &Address,
) -> (Vec<(&'static str, serde_json::Value)>, ProbeRx) {
    let me = rt.url().component("app");
    let mut out = Vec::new();
    // request/response to a remote hyperty
    let r = rt
        .bus()
        .post(request(&me, bob, json!({"n": 1})))
        .await
        .unwrap();
    out.push(("request/response", comparable(&r, &me)));
    // a message to an address nobody holds
    let nobody: Address = "hyperty://b.org/nobody".parse().unwrap();
    let r = rt
        .bus()
        .post(request(&me, &nobody, json!({})))
        .await
        .unwrap();
    out.push(("unknown address", comparable(&r, &me)));
    // /sm subscribe (the publication is sent once both runtimes subscribed)
    let (probe, inbox) = Probe::start();
    rt.bus()
        .add_listener(resource.clone(), probe, None)
        .await
        .unwrap();
    let r = rt.bus().post(subscribe(&me, resource)).await.unwrap();
    out.push(("subscribe", comparable(&r, &me)));
    // an update nobody answers
    rt.bus()
        .send(update(&me, carol, json!({"fire": "and forget"})));
    // a large frame each way
    let large = "x".repeat(300_000);
    let r = rt
        .bus()
        .post(request(&me, bob, json!({"large": large})))
        .await
        .unwrap();
    out.push(("large frame", comparable(&r, &me)));
    // a burst: every request taken and answered, none refused as overloaded
    let burst = (0..500).map(|i| rt.bus().post(request(&me, bob, json!({"burst": i}))));
    let codes: Vec<_> = futures_util::future::join_all(burst)
        .await
        .into_iter()
        .map(|r| r.map(|m| m.code()).map_err(|e| e.to_string()))
        .collect();
    out.push(("burst", json!(format!("{codes:?}"))));
    (out, inbox)
}

#[actix::test]
async fn the_downloaded_raw_stub_gives_the_same_results_as_the_built_in_bridge() {
    let mut b = DomainB::start(|_| {}).await;
    let carol = b.carol_address();
    // the same scenarios through the built-in bridge (a runtime of b.org) and
    // through the stub a runtime of a.org downloads from b.org's catalogue
    let bridged = Runtime::start(RuntimeConfig::new("b.org")).unwrap();
    attach(&bridged, &b.node).await;
    let stubbed = b.downloading_runtime(None).await;
    let resource: Address = "comm://b.org/parity/changes".parse().unwrap();

    let mut seen = Vec::new();
    let mut inboxes = Vec::new();
    for rt in [&bridged, &stubbed] {
        let (results, inbox) = run_scenarios(rt, &b.bob, &carol, &resource).await;
        inboxes.push(inbox);
        // what carol got from the update: the sender as the node knows it
        let update = next_message(&mut b.carol_rx, TIMEOUT)
            .await
            .expect("update delivered");
        seen.push((results, update));
    }
    let (bridge_results, bridge_update) = &seen[0];
    let (stub_results, stub_update) = &seen[1];
    for ((name, via_bridge), (_, via_stub)) in bridge_results.iter().zip(stub_results) {
        assert_eq!(
            via_bridge, via_stub,
            "{name}: the stub differs from the bridge"
        );
    }
    assert_eq!(bridge_results[0].1["body"]["code"], 200);
    assert_eq!(bridge_results[1].1["body"]["code"], 404);
    assert_eq!(bridge_results[2].1["body"]["code"], 200);
    assert_eq!(
        bridge_results[3].1["body"]["value"]["body"]["value"]["large"]
            .as_str()
            .map(str::len),
        Some(300_000)
    );
    assert_eq!(
        bridge_results[4].1,
        json!(format!(
            "{:?}",
            vec![Ok::<_, String>(Some(ResponseCode::Ok)); 500]
        ))
    );
    // the update: the same but for its sender, which through the stub is an
    // address of the stub's guest session at b.org's node
    let bridge_me = bridged.url().component("app");
    assert_eq!(bridge_update.from, bridge_me);
    assert!(
        stub_update
            .from
            .as_str()
            .starts_with("hyperty-runtime://b.org/guest-"),
        "{}",
        stub_update.from
    );
    let mut a = comparable(bridge_update, &bridge_update.from);
    let mut c = comparable(stub_update, &stub_update.from);
    for v in [&mut a, &mut c] {
        v["body"].as_object_mut().unwrap().remove("via");
    }
    assert_eq!(a, c, "update: the stub differs from the bridge");

    // one publication fans out to both subscribers alike
    b.carol.notify(
        MessageType::Update,
        resource.clone(),
        json!({"published": 1}),
    );
    let mut got = Vec::new();
    for inbox in &mut inboxes {
        let m = inbox
            .recv_matching(TIMEOUT, |m| m.kind == MessageType::Update)
            .await
            .expect("publication delivered");
        got.push(comparable(&m, &carol));
    }
    assert_eq!(
        got[0], got[1],
        "publication: the stub differs from the bridge"
    );
    assert_eq!(got[0]["body"]["value"], json!({"published": 1}));

    b.stop(vec![bridged, stubbed]).await;
}

/// The runtime URL of the guest session whose address `alias` is.
fn guest_of(alias: &Address) -> String {
    let s = alias.as_str();
    let start = "hyperty-runtime://b.org/".len();
    let end = s[start..].find('/').map_or(s.len(), |i| start + i);
    s[..end].to_owned()
}

/// True once a value `carol` publishes on `resource` reaches `inbox` (published
/// until it does: the publisher's own bridge may be reconnecting too).
async fn heard(carol: &HypertyContext, resource: &Address, inbox: &mut ProbeRx, n: u64) -> bool {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        carol.notify(MessageType::Update, resource.clone(), json!({"n": n}));
        let got = inbox
            .recv_matching(Duration::from_millis(200), |m| {
                m.body.value == Some(json!({"n": n}))
            })
            .await;
        if got.is_some() {
            return true;
        }
    }
    false
}

#[actix::test]
async fn the_raw_stub_survives_a_dropped_socket_and_a_node_restart() {
    let mut b = DomainB::start(|_| {}).await;
    let carol = b.carol_address();
    let rt = b.downloading_runtime(None).await;
    let me = rt.url().component("app");
    let resource: Address = "comm://b.org/survivor/changes".parse().unwrap();
    let (probe, mut inbox) = Probe::start();
    rt.bus()
        .add_listener(resource.clone(), probe, None)
        .await
        .unwrap();
    let r = rt.bus().post(subscribe(&me, &resource)).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    // the address the node knows the sender by
    rt.bus().send(update(&me, &carol, json!(0)));
    let alias = next_message(&mut b.carol_rx, TIMEOUT).await.unwrap().from;
    let guest = guest_of(&alias);

    let works = |n: u64| {
        let rt = rt.clone();
        let me = me.clone();
        let bob = b.bob.clone();
        async move {
            matches!(rt.bus().post(request(&me, &bob, json!({"n": n}))).await,
                     Ok(r) if r.code() == Some(ResponseCode::Ok))
        }
    };

    // 1. the node drops the stub's socket: it re-opens the same session
    let key = b
        .node
        .state()
        .router()
        .session_of(&guest)
        .expect("guest session");
    assert!(b.node.state().router().kick(&key, "test"));
    let router = b.node.state().router().clone();
    assert!(eventually(TIMEOUT, || async { router.snapshot().reopened == 1 }).await);
    assert!(
        eventually(TIMEOUT, || works(1)).await,
        "messages flow again"
    );
    assert!(
        heard(&b.carol, &resource, &mut inbox, 1).await,
        "subscription kept"
    );
    rt.bus().send(update(&me, &carol, json!(1)));
    let again = next_message(&mut b.carol_rx, TIMEOUT).await.unwrap();
    assert_eq!(again.from, alias, "address kept");

    // 2. the node restarts on the same port: a fresh session, same addresses,
    // the subscription made again
    b.node.stop().await;
    b.node = isolated_node(
        "b.org",
        TcpListener::bind(b.addr).unwrap(),
        Some(b.dir.clone()),
    );
    assert!(
        eventually(TIMEOUT, || works(2)).await,
        "messages flow again"
    );
    assert!(b.node.state().router().session_of(&guest).is_some());
    assert!(
        heard(&b.carol, &resource, &mut inbox, 2).await,
        "subscribed again"
    );
    rt.bus().send(update(&me, &carol, json!(2)));
    let again = next_message(&mut b.carol_rx, TIMEOUT).await.unwrap();
    assert_eq!(again.from, alias, "address kept");
    assert_eq!(
        rt.stubs()
            .await
            .iter()
            .filter(|s| s.domain.as_deref() == Some("b.org"))
            .count(),
        1
    );
    b.stop(vec![rt]).await;
}

#[actix::test]
async fn a_downloaded_stubs_policies_apply_to_its_domains_traffic_only() {
    let b = DomainB::start(|doc| {
        doc["policies"] = json!([{"id": "read-only", "rules": [
            {"id": "no-deletes", "effect": "deny", "target": {"types": ["delete"]}}]}]);
    })
    .await;
    let rt = b
        .downloading_runtime(Some(hyperty::actors::policy::PolicyConfig::default()))
        .await;
    let local = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let me = rt.url().component("app");

    // the first message loads the stub (and its policies); it passes
    let r = rt
        .bus()
        .post(request(&me, &b.bob, json!("hi")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    let delete = |to: &Address| Message::new(MessageType::Delete, me.clone(), to.clone());
    match rt.bus().post(delete(&b.bob)).await {
        Err(BusError::Rejected(r)) => {
            assert_eq!(r.code, ResponseCode::Forbidden);
            assert_eq!(r.description, "Blocked by policy");
        }
        other => panic!("not blocked: {other:?}"),
    }
    // deletes within a.org are not the stub's business
    let r = rt.bus().post(delete(local.address())).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    b.stop(vec![rt]).await;
}

#[actix::test]
async fn a_stub_whose_endpoint_never_opens_a_session_fails_naming_it_and_leaves_nothing() {
    // an endpoint that takes the WebSocket and never answers on it
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("ws://{}/ws", silent.local_addr().unwrap());
    actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                held.push(ws);
            }
        }
    });
    let b = DomainB::start(|doc| {
        doc["configuration"]["url"] = json!(endpoint);
        doc["configuration"]["handshakeTimeoutMs"] = json!(300);
    })
    .await;
    let rt = b.downloading_runtime(None).await;
    // the first stub of a runtime without a node is its protostub/1
    let status: Address = format!("{}/protostub/1/status", rt.url().as_str())
        .parse()
        .unwrap();
    let (probe, mut statuses) = Probe::start();
    rt.bus().add_listener(status, probe, None).await.unwrap();
    let me = rt.url().component("app");

    let r = rt
        .bus()
        .post(request(&me, &b.bob, json!("hi")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::GatewayTimeout));
    let why = r.body.description.unwrap();
    assert!(
        why.contains("b.org")
            && why.contains(&endpoint)
            && why.contains("no answer to the session request"),
        "{why}"
    );
    let failed = statuses
        .recv_matching(TIMEOUT, |m| m.body.value == Some(json!("failed")))
        .await
        .expect("failed reported");
    let desc = failed.body.desc.unwrap();
    assert!(
        desc.as_str().is_some_and(|d| d.contains(&endpoint)),
        "{desc}"
    );
    assert!(!rt
        .stubs()
        .await
        .iter()
        .any(|s| s.domain.as_deref() == Some("b.org")));
    b.stop(vec![rt]).await;
}
