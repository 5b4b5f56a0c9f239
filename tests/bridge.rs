//! The WebSocket bridge: runtimes talk through a real node, reconnect after the node
//! restarts on the same port, and interoperate with raw reTHINK wire clients.

mod common;

use std::net::TcpListener;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use serde_json::json;

const D: &str = "bridge.test";

fn node_on(listener: TcpListener) -> hyperty::node::NodeHandle {
    let mut cfg = hyperty::config::NodeConfig::default();
    cfg.node.domain = D.to_owned();
    cfg.node.workers = 2;
    cfg.auth.mode = hyperty::config::AuthMode::Optional;
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None;
    hyperty::node::start(listener, cfg).unwrap()
}

async fn attached(url: &str) -> RuntimeHandle {
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    rt.attach_node(BridgeConfig::new(url)).await.unwrap();
    rt
}

async fn live(rt: &RuntimeHandle) -> bool {
    rt.stubs()
        .await
        .iter()
        .any(|s| s.domain.is_none() && s.status == StubStatus::Live)
}

#[actix::test]
async fn two_runtimes_talk_through_the_node() {
    let node = start_node(D, |_| {});
    let a = attached(&node.ws_url()).await;
    let b = attached(&node.ws_url()).await;
    let wb = b.spawn_hyperty(worker(D)).await.unwrap();
    let wa = a.spawn_hyperty(worker(D)).await.unwrap();
    assert_eq!(wb.domain(), Some(D));
    // A's hyperty asks B's hyperty, exactly as if it were local
    let r = a
        .bus()
        .post(request(&wa, &wb, json!({"q": "across"})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    assert_eq!(r.from, *wb.address());
    assert_eq!(r.body.value.unwrap()["body"]["value"]["q"], "across");
    // and the other way round
    let r = b
        .bus()
        .post(request(&wb, &wa, json!({"q": "back"})))
        .await
        .unwrap();
    assert_eq!(r.body.value.unwrap()["body"]["value"]["q"], "back");
    // an address nobody holds: the node answers 404 across the bridge
    let r = a
        .bus()
        .post(request(
            &wa,
            &addr(&format!("hyperty://{D}/ghost")),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
    assert!(live(&a).await);
}

#[actix::test]
async fn hyperties_spawned_before_attaching_are_claimed() {
    let node = start_node(D, |_| {});
    let b = Runtime::start(RuntimeConfig::new(D)).unwrap();
    let early = b.spawn_hyperty(worker(D)).await.unwrap();
    b.attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    let a = attached(&node.ws_url()).await;
    let me = a.url().component("app");
    let r = a.bus().post(request(&me, &early, json!({}))).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
}

#[actix::test]
async fn raw_wire_clients_reach_runtime_hyperties() {
    let node = start_node(D, |_| {});
    let b = attached(&node.ws_url()).await;
    let wb = b.spawn_hyperty(worker(D)).await.unwrap();
    // a client written against the reference node: one JSON text frame per message
    let mut raw = WsClient::connect(&node.ws_url()).await;
    let me = format!("runtime://{D}/raw");
    raw.open(&me).await;
    let r = raw
        .request(json!({"id": 1, "type": "execute", "from": me, "to": wb.as_str(), "body": {"value": {"x": 1}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["from"], wb.as_str());
    assert_eq!(r["body"]["value"]["body"]["value"]["x"], 1);
}

#[actix::test]
async fn the_bridge_reconnects_after_the_node_restarts_on_the_same_port() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port_addr = listener.local_addr().unwrap();
    let node = node_on(listener);
    let url = node.ws_url();
    let a = attached(&url).await;
    let b = attached(&url).await;
    let wb = b.spawn_hyperty(worker(D)).await.unwrap();
    let wa = a.spawn_hyperty(worker(D)).await.unwrap();
    assert!(a.bus().post(request(&wa, &wb, json!({}))).await.is_ok());

    node.stop().await;
    assert!(eventually(TIMEOUT, || async { !live(&a).await && !live(&b).await }).await);

    let node2 = node_on(TcpListener::bind(port_addr).unwrap());
    assert!(
        eventually(TIMEOUT, || async { live(&a).await && live(&b).await }).await,
        "bridges back"
    );
    // the new node never saw these addresses: the bridges claimed them again
    assert!(
        eventually(TIMEOUT, || async {
            matches!(a.bus().post(request(&wa, &wb, json!({}))).await, Ok(r) if r.code() == Some(ResponseCode::Ok))
        })
        .await
    );
    node2.stop().await;
}

#[actix::test]
async fn reopen_keeps_the_session_when_only_the_socket_dropped() {
    let node = start_node(D, |_| {});
    let a = attached(&node.ws_url()).await;
    let b = attached(&node.ws_url()).await;
    let wb = b.spawn_hyperty(worker(D)).await.unwrap();
    let wa = a.spawn_hyperty(worker(D)).await.unwrap();
    // the node cuts B's socket (as a slow consumer would be); B re-opens with its token
    let opened_before = node.state().router().snapshot().opened;
    let key = node
        .state()
        .router()
        .session_of(b.url().as_str())
        .unwrap_or_else(|| panic!("{} not in {:?}", b.url(), node.state().router()));
    node.state().router().kick(&key, "test");
    let router = node.state().router().clone();
    assert!(
        eventually(TIMEOUT, || async {
            router.snapshot().reopened == 1 && live(&b).await
        })
        .await
    );
    let r = a.bus().post(request(&wa, &wb, json!({}))).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    assert_eq!(
        node.state().router().snapshot().opened,
        opened_before,
        "re-open, not a new open"
    );
}

/// A recipient that does not read: the node stops reading the sending runtime's
/// socket, and the bridge keeps what its writer holds within its budget — past
/// its queue, requests are answered 503 at once instead of piling up in memory —
/// and everything it took reaches the recipient, in order, once it reads.
#[actix::test]
async fn a_congested_link_holds_the_bridge_to_its_budget_and_loses_nothing() {
    const N: u64 = 1500;
    let node = start_node(D, |c| {
        c.session.slow_down_bytes = 64 << 10;
        c.session.write_deadline_ms = 60_000;
    });
    let sink_url = format!("hyperty-runtime://{D}/sink");
    let mut sink = WsClient::connect(&node.ws_url()).await;
    sink.open(&sink_url).await;
    let mut cfg = RuntimeConfig::new(D);
    cfg.bus.request_timeout = std::time::Duration::from_secs(60);
    let rt = Runtime::start(cfg).unwrap();
    let mut bridge = BridgeConfig::new(node.ws_url());
    bridge.write_budget = 256 << 10;
    bridge.queue_limit = 64;
    rt.attach_node(bridge).await.unwrap();
    let w = rt.spawn_hyperty(worker(D)).await.unwrap();
    let to = addr(&format!("{sink_url}/inbox"));
    let pad = "x".repeat(32 << 10);
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..N {
        let answer = rt.bus().post(request(&w, &to, json!({"i": i, "pad": pad})));
        let tx = tx.clone();
        actix::spawn(async move {
            let code = answer.await.ok().and_then(|m| m.code());
            let _ = tx.send((i, code));
        });
        tokio::task::yield_now().await;
    }
    // the bridge refuses what it cannot hold, while the sink still reads nothing
    let (_, first) = tokio::time::timeout(TIMEOUT, answers.recv())
        .await
        .expect("a refusal while the sink reads nothing")
        .unwrap();
    assert_eq!(first, Some(ResponseCode::ServiceUnavailable));
    let mut refused = 1;
    let mut answered = 0;
    let mut last_seen = None;
    let deadline = std::time::Instant::now() + TIMEOUT * 6;
    while refused + answered < N {
        assert!(
            std::time::Instant::now() < deadline,
            "{refused} refused, {answered} answered of {N}"
        );
        while let Some(m) = sink.recv(std::time::Duration::from_millis(20)).await {
            let i = m["body"]["value"]["i"].as_u64().unwrap();
            assert!(last_seen < Some(i), "{i} after {last_seen:?}: out of order");
            last_seen = Some(i);
            sink.send(json!({"id": m["id"], "type": "response", "from": m["to"], "to": m["from"], "body": {"code": 200}}))
                .await;
        }
        while let Ok((i, code)) = answers.try_recv() {
            match code {
                Some(ResponseCode::Ok) => answered += 1,
                Some(ResponseCode::ServiceUnavailable) => refused += 1,
                other => panic!("request {i}: {other:?}"),
            }
        }
    }
    assert!(answered > 0, "the link drained");
}
