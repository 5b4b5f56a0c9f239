//! Many nodes of one domain on the shared Redis: cross-node routing, exclusive
//! allocation, `/sm` fan-out once per node, re-open on another node.

mod common;

use std::time::Duration;

use common::cluster::{clean, start_cluster, unique_prefix, REDIS};
use common::{WsClient, TIMEOUT};
use serde_json::json;

const D: &str = "cluster.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

async fn client(node: &hyperty::node::NodeHandle, name: &str) -> (WsClient, String) {
    let mut c = WsClient::connect(&node.ws_url()).await;
    let token = c.open(&rt(name)).await;
    (c, token)
}

fn forwarded(node: &hyperty::node::NodeHandle) -> u64 {
    node.state().router().snapshot().forwarded
}

#[actix::test]
async fn frames_and_responses_cross_nodes_unchanged() {
    let prefix = unique_prefix("relay");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (mut a, _) = client(&nodes[0], "a").await;
    let (mut b, _) = client(&nodes[1], "b").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    let frame = format!(
        r#"{{ "to":"{hb}", "body":{{"value":{{"x":6e78}}}}, "id":7,"type":"execute","from":"{ha}" }}"#
    );
    a.send_text(&frame).await;
    assert_eq!(b.recv_text(TIMEOUT).await.unwrap(), frame);
    b.send(json!({"id": 7, "type": "response", "from": hb, "to": ha, "body": {"code": 200}}))
        .await;
    let r = a.expect().await;
    assert_eq!(
        (r["id"].clone(), r["body"]["code"].clone()),
        (json!(7), json!(200))
    );
    // a runtime URL (and what lies under it) is found on its node too
    a.send(json!({"id": 8, "type": "update", "from": ha, "to": format!("{}/sm", rt("b"))}))
        .await;
    assert_eq!(b.expect().await["id"], 8);
    // nobody anywhere: 404 as on one node
    let r = a
        .request(json!({"type": "read", "from": ha, "to": format!("hyperty://{D}/nobody")}))
        .await;
    assert_eq!(r["body"]["code"], 404, "{r}");
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn an_address_is_held_by_one_node_only() {
    let prefix = unique_prefix("alloc");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (mut a, _) = client(&nodes[0], "a").await;
    let (mut b, _) = client(&nodes[1], "b").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let r = b
        .request(json!({"type": "create", "from": rt("b"),
            "to": format!("domain://msg-node.{D}/address-allocation"),
            "body": {"value": {"reclaim": [ha]}}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("another node"),
        "{r}"
    );
    // the refused address stays a's
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    b.send(json!({"id": 3, "type": "read", "from": hb, "to": ha}))
        .await;
    assert_eq!(a.expect().await["id"], 3);
    // freed, it may be claimed elsewhere
    let r = a
        .request(json!({"type": "delete", "from": rt("a"),
            "to": format!("domain://msg-node.{D}/address-allocation"),
            "body": {"childrenResources": [ha]}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let r = b
            .request(json!({"type": "create", "from": rt("b"),
                "to": format!("domain://msg-node.{D}/address-allocation"),
                "body": {"value": {"reclaim": [ha]}}}))
            .await;
        if r["body"]["code"] == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn sm_fan_out_is_published_once_per_node() {
    let prefix = unique_prefix("fanout");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (mut p, _) = client(&nodes[0], "p").await;
    let obj = p.allocate(&rt("p"), D, 1).await.remove(0);
    let changes = format!("{obj}/changes");
    let mut subs = Vec::new();
    for (i, node) in [&nodes[0], &nodes[1], &nodes[1], &nodes[1]]
        .iter()
        .enumerate()
    {
        let name = format!("s{i}");
        let (mut s, _) = client(node, &name).await;
        let r = s
            .subscribe(&format!("{}/sm", rt(&name)), D, &[&changes])
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
        subs.push(s);
    }
    let before = forwarded(&nodes[0]);
    let frame = format!(
        r#"{{"id":1,"type":"update","from":"{obj}","to":"{changes}","body":{{"value":1}}}}"#
    );
    p.send_text(&frame).await;
    for s in &mut subs {
        assert_eq!(s.recv_text(TIMEOUT).await.unwrap(), frame);
    }
    assert_eq!(
        forwarded(&nodes[0]) - before,
        1,
        "one publish for the three on the other node"
    );
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn reopen_on_another_node_keeps_addresses_and_subscriptions() {
    let prefix = unique_prefix("reopen");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (mut a, token) = client(&nodes[0], "a").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let topic = format!("comm://{D}/topic/changes");
    assert_eq!(
        a.subscribe(&format!("{}/sm", rt("a")), D, &[&topic]).await["body"]["code"],
        200
    );
    let (mut b, _) = client(&nodes[0], "b").await;
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    a.drop_socket().await;
    let mut a2 = WsClient::connect(&nodes[1].ws_url()).await;
    let r = a2
        .request(
            json!({"type": "re-open", "from": rt("a"), "to": "mn:/session",
            "body": {"runtimeToken": token}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    // the old node let the session go
    let old = nodes[0].state().router().clone();
    assert!(
        common::eventually(TIMEOUT, || {
            let old = old.clone();
            async move { old.session_count() == 1 }
        })
        .await
    );
    b.send(json!({"id": 5, "type": "read", "from": hb, "to": ha}))
        .await;
    assert_eq!(a2.expect().await["id"], 5);
    b.send(json!({"id": 6, "type": "update", "from": hb, "to": topic}))
        .await;
    assert_eq!(a2.expect().await["id"], 6);
    // and it may send from its address on the new node
    a2.send(json!({"id": 9, "type": "response", "from": ha, "to": hb, "body": {"code": 200}}))
        .await;
    assert_eq!(b.expect().await["id"], 9);
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn health_shows_the_members_and_a_stopped_node_leaves() {
    let prefix = unique_prefix("health");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let h = common::health(&nodes[0]).await;
    let c = &h["cluster"];
    assert_eq!(c["redis"], "reachable", "{h}");
    let members = c["members"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{h}");
    for m in members {
        assert!(
            m["heartbeat"].as_u64().unwrap() >= m["started_at"].as_u64().unwrap(),
            "{m}"
        );
        assert!(
            m["url"].as_str().unwrap().starts_with("ws://127.0.0.1:"),
            "{m}"
        );
    }
    let ids: Vec<&str> = members
        .iter()
        .map(|m| m["node"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&c["node"].as_str().unwrap()), "{h}");
    nodes[1].stop().await;
    let first = nodes[0].state().router().cluster().unwrap().clone();
    assert!(
        common::eventually(TIMEOUT, || {
            let first = first.clone();
            async move { first.members().len() == 1 }
        })
        .await,
        "the stopped node left"
    );
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn a_gone_nodes_addresses_free_up_when_its_entries_expire() {
    let prefix = unique_prefix("expiry");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (mut a, _) = client(&nodes[1], "a").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let (mut b, _) = client(&nodes[0], "b").await;
    let reclaim = json!({"type": "create", "from": rt("b"),
        "to": format!("domain://msg-node.{D}/address-allocation"),
        "body": {"value": {"reclaim": [ha]}}});
    assert_eq!(b.request(reclaim.clone()).await["body"]["code"], 403);
    // the node goes away without freeing anything: nobody refreshes its entries
    nodes[1].stop().await;
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.request(reclaim.clone()).await;
        if r["body"]["code"] == 200 {
            break;
        }
        assert_eq!(r["body"]["code"], 403, "{r}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the entry never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn a_new_open_on_another_node_replaces_the_session() {
    let prefix = unique_prefix("replace");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (mut a, _) = client(&nodes[0], "a").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let (mut b, _) = client(&nodes[0], "b").await;
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    // the runtime comes back with a fresh open, through another node
    let (mut a2, _) = client(&nodes[1], "a").await;
    let old = nodes[0].state().router().clone();
    assert!(
        common::eventually(TIMEOUT, || {
            let old = old.clone();
            async move { old.session_count() == 1 }
        })
        .await,
        "the old node closed the replaced session"
    );
    // frames for the runtime URL reach the new session, from the old node too
    b.send(json!({"id": 4, "type": "read", "from": hb, "to": format!("{}/x", rt("a"))}))
        .await;
    assert_eq!(a2.expect().await["id"], 4);
    // the replaced session's address was freed
    let r = b
        .request(json!({"type": "read", "from": hb, "to": ha}))
        .await;
    assert_eq!(r["body"]["code"], 404, "{r}");
    drop(a);
    clean(REDIS, &prefix).await;
}
