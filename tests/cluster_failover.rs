//! Failover with three real node processes on the shared Redis: one is killed
//! (-9) under traffic; its runtime re-opens on another node and keeps its address
//! and subscription; the request in flight to it is answered 504.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{clean, unique_prefix, REDIS};
use common::{eventually, http_get_json, WsClient};
use serde_json::json;

const D: &str = "failover.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

/// A node process, killed on drop.
struct NodeProcess {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl NodeProcess {
    fn start(prefix: &str, n: usize) -> NodeProcess {
        let dir = std::env::temp_dir().join(format!("{prefix}-{n}"));
        std::fs::create_dir_all(&dir).expect("a working directory");
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\ndomain = \"{D}\"\n[auth]\nmode = \"optional\"\n\
                 [cluster]\nprefix = \"{prefix}\"\nnode_id = \"n{n}\"\nheartbeat_ms = 100\n\
                 entry_ttl_ms = 4000\nrequest_timeout_ms = 3000\n"
            ),
        )
        .expect("a config file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyperty"))
            .current_dir(&dir)
            .args(["--cluster", REDIS, "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the node binary runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the listening line");
        let port = line
            .strip_prefix("listening on ws://127.0.0.1:")
            .and_then(|l| l.trim_end().strip_suffix("/ws"))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        NodeProcess { child, port, dir }
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn members_seen(port: u16) -> usize {
    let (code, h) = http_get_json(&format!("http://127.0.0.1:{port}/health"), None).await;
    if code != 200 {
        return 0;
    }
    h["cluster"]["members"].as_array().map_or(0, Vec::len)
}

/// Three node processes under `prefix`, each seeing all three.
async fn start_three(prefix: &str) -> Vec<NodeProcess> {
    let nodes: Vec<NodeProcess> = (0..3).map(|n| NodeProcess::start(prefix, n)).collect();
    for n in &nodes {
        let port = n.port;
        assert!(
            eventually(Duration::from_secs(10), || async move {
                members_seen(port).await == 3
            })
            .await,
            "every node sees three members"
        );
    }
    nodes
}

#[actix::test]
async fn a_killed_nodes_runtime_reopens_elsewhere_and_keeps_its_address_and_subscription() {
    let prefix = unique_prefix("failover");
    let mut nodes = start_three(&prefix).await;
    let mut x = WsClient::connect(&nodes[0].ws()).await;
    let token = x.open(&rt("x")).await;
    let hx = x.allocate(&rt("x"), D, 1).await.remove(0);
    let topic = format!("comm://{D}/room/changes");
    let r = x.subscribe(&format!("{}/sm", rt("x")), D, &[&topic]).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let mut y = WsClient::connect(&nodes[1].ws()).await;
    y.open(&rt("y")).await;
    let hy = y.allocate(&rt("y"), D, 1).await.remove(0);
    let mut z = WsClient::connect(&nodes[2].ws()).await;
    z.open(&rt("z")).await;
    let hz = z.allocate(&rt("z"), D, 1).await.remove(0);
    // traffic: y asks x, x answers, across nodes
    for id in 1..=20 {
        y.send(json!({"id": id, "type": "read", "from": hy, "to": hx}))
            .await;
        let q = x.expect().await;
        assert_eq!(q["id"], id);
        x.send(json!({"id": id, "type": "response", "from": hx, "to": hy, "body": {"code": 200}}))
            .await;
        assert_eq!(y.expect().await["body"]["code"], 200);
    }
    // a request reaches x, and x's node dies before it answers
    y.send(json!({"id": 100, "type": "read", "from": hy, "to": hx}))
        .await;
    assert_eq!(x.expect().await["id"], 100);
    nodes[0].kill();
    let r = y.expect().await;
    assert_eq!(
        (r["id"].clone(), r["body"]["code"].clone()),
        (json!(100), json!(504)),
        "{r}"
    );
    // x's runtime reconnects to another node with its token
    let mut x2 = WsClient::connect(&nodes[2].ws()).await;
    let r = x2
        .request(
            json!({"type": "re-open", "from": rt("x"), "to": "mn:/session",
            "body": {"runtimeToken": token}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    // its address and its subscription followed it
    y.send(json!({"id": 101, "type": "read", "from": hy, "to": hx}))
        .await;
    assert_eq!(x2.expect().await["id"], 101);
    x2.send(json!({"id": 101, "type": "response", "from": hx, "to": hy, "body": {"code": 200}}))
        .await;
    let r = y.expect().await;
    assert_eq!(
        (r["id"].clone(), r["body"]["code"].clone()),
        (json!(101), json!(200))
    );
    for id in [200, 201] {
        z.send(json!({"id": id, "type": "update", "from": hz, "to": topic}))
            .await;
    }
    // each exactly once, in order
    assert_eq!(x2.expect().await["id"], 200);
    assert_eq!(x2.expect().await["id"], 201);
    clean(REDIS, &prefix).await;
}

const N: usize = 300;
const RECEIVER: &str = "hyperty-runtime://failover.test/receiver/inbox";
const SENDER: &str = "hyperty-runtime://failover.test/sender/app";

fn bridge(url: &str) -> hyperty::bridge::BridgeConfig {
    let mut b = hyperty::bridge::BridgeConfig::new(url);
    b.reconnect_max = Duration::from_millis(200);
    b
}

fn addr(s: &str) -> hyperty::prelude::Address {
    s.parse().unwrap()
}

#[actix::test]
async fn durable_events_arrive_exactly_once_when_the_receivers_node_is_killed() {
    use hyperty::prelude::*;
    let prefix = unique_prefix("durable");
    let mut nodes = start_three(&prefix).await;
    let dir = std::env::temp_dir().join(format!("{prefix}-caches"));
    std::fs::create_dir_all(&dir).unwrap();
    // the receiver, durable, on the node that will die
    let mut cfg = RuntimeConfig::new(D);
    cfg.runtime_id = Some("receiver".into());
    cfg.events.cache.path = Some(dir.join("receiver.redb"));
    let receiver = Runtime::start(cfg).unwrap();
    let me = addr(RECEIVER);
    let rep = receiver.events().endpoint(me.clone());
    rep.register_entity_with(me.clone(), EntityOptions::durable())
        .await
        .unwrap();
    let (listener, mut inbox) = EventInbox::start();
    rep.add_listener(ListenerFilter::any().destination(me), listener)
        .await
        .unwrap();
    receiver.attach_node(bridge(&nodes[0].ws())).await.unwrap();
    // the sender, with a durable cache and quick retransmission, on another node
    let mut cfg = RuntimeConfig::new(D);
    cfg.runtime_id = Some("sender".into());
    cfg.events.cache.path = Some(dir.join("sender.redb"));
    cfg.events.cache.ack_timeout = Duration::from_secs(1);
    cfg.events.cache.retry_base = Duration::from_millis(100);
    cfg.events.cache.retry_max = Duration::from_millis(500);
    cfg.events.tick_interval = Some(Duration::from_millis(50));
    let sender = Runtime::start(cfg).unwrap();
    let ep = sender.events().endpoint(addr(SENDER));
    ep.register_entity(addr(SENDER)).await.unwrap();
    sender.attach_node(bridge(&nodes[1].ws())).await.unwrap();

    let (callbacks, mut reports) = EventCallbacks::channel(CallbackSet::delivery());
    for n in 1..=N {
        let ev = ep
            .builder("numbered", addr(SENDER))
            .to(addr(RECEIVER))
            .payload(n.to_string())
            .build()
            .unwrap();
        ep.dispatch(ev, Some(callbacks.clone()), None)
            .await
            .unwrap();
    }
    let mut got = std::collections::BTreeMap::<usize, usize>::new();
    let note = |e: Option<hyperty_actors::events::listeners::IncomingEvent>,
                got: &mut std::collections::BTreeMap<usize, usize>| {
        let e = e.expect("an event within the deadline");
        let n: usize = e.event.payload().unwrap().parse().unwrap();
        *got.entry(n).or_default() += 1;
    };
    // a part arrives, then the receiver's node dies under the burst
    while got.len() < N / 4 {
        note(inbox.recv(Duration::from_secs(10)).await, &mut got);
    }
    nodes[0].kill();
    // the receiver's runtime moves to another node
    receiver.remove_stub(None).await.unwrap();
    receiver.attach_node(bridge(&nodes[2].ws())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {N} arrived",
            got.len()
        );
        note(inbox.recv(Duration::from_secs(30)).await, &mut got);
    }
    // every one confirmed to the sender
    let mut delivered = std::collections::BTreeSet::new();
    while delivered.len() < N {
        let r = reports
            .recv(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{} of {N} confirmed", delivered.len()));
        if let ReportKind::Delivery { .. } = r.kind {
            delivered.insert(r.event.payload().unwrap().to_owned());
        }
    }
    // settled: nothing left to retransmit, and nothing arrived twice
    let settled = eventually(Duration::from_secs(30), || async {
        sender.events().cached().await == 0
    })
    .await;
    assert!(settled, "the sender's cache empties");
    while let Some(e) = inbox.recv(Duration::from_millis(300)).await {
        note(Some(e), &mut got);
    }
    assert!(
        got.values().all(|&c| c == 1),
        "each exactly once: {:?}",
        got.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>()
    );
    sender.shutdown().await;
    receiver.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    clean(REDIS, &prefix).await;
}

/// Registers hyperty `url` of the session's runtime `runtime` for alice.
async fn register(ws: &mut WsClient, runtime: &str, url: &str) {
    let r = ws
        .request(
            json!({"type": "create", "from": format!("{runtime}/registry/"),
            "to": format!("domain://registry.{D}"),
            "body": {"value": {"user": format!("user://{D}/alice"),
                "descriptor": format!("hyperty-catalogue://catalogue.{D}/.well-known/hyperty/Chat"),
                "url": url, "expires": 3600, "resources": ["chat"], "dataSchemes": ["comm"],
                "runtime": runtime, "status": "live"}, "policy": "policy"}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
}

/// The registry status of `url`, read by the session of `runtime` (an entry
/// that is disconnected is answered 408, with the entry).
async fn status(ws: &mut WsClient, runtime: &str, url: &str) -> serde_json::Value {
    let r = ws
        .request(
            json!({"type": "read", "from": runtime, "to": format!("domain://registry.{D}"),
                        "body": {"resource": url}}),
        )
        .await;
    assert!(
        [200, 408].contains(&r["body"]["code"].as_u64().unwrap_or(0)),
        "{r}"
    );
    r["body"]["value"]["status"].clone()
}

#[actix::test]
async fn a_killed_nodes_hyperties_show_as_disconnected_on_the_others() {
    let prefix = unique_prefix("failover-registry");
    let mut nodes = start_three(&prefix).await;
    let mut x = WsClient::connect(&nodes[0].ws()).await;
    x.open(&rt("x")).await;
    let hx = x.allocate(&rt("x"), D, 1).await.remove(0);
    register(&mut x, &rt("x"), &hx).await;
    let mut y = WsClient::connect(&nodes[1].ws()).await;
    y.open(&rt("y")).await;
    let hy = y.allocate(&rt("y"), D, 1).await.remove(0);
    register(&mut y, &rt("y"), &hy).await;
    let mut z = WsClient::connect(&nodes[2].ws()).await;
    z.open(&rt("z")).await;
    assert_eq!(status(&mut z, &rt("z"), &hx).await, "live");

    nodes[0].kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&mut z, &rt("z"), &hx).await != "disconnected" {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed node's hyperty never showed as disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the hyperty of a runtime on a live node stays live, on every node
    assert_eq!(status(&mut z, &rt("z"), &hy).await, "live");
    assert_eq!(status(&mut y, &rt("y"), &hx).await, "disconnected");
    // x re-registering from another node brings it back
    let mut x2 = WsClient::connect(&nodes[2].ws()).await;
    x2.open(&rt("x")).await;
    let r = x2
        .request(
            json!({"type": "update", "from": rt("x"), "to": format!("domain://registry.{D}"),
            "body": {"resource": hx, "value": {"status": "live"}, "method": "refresh"}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(status(&mut y, &rt("y"), &hx).await, "live");
    nodes.iter_mut().for_each(NodeProcess::kill);
    clean(REDIS, &prefix).await;
}
