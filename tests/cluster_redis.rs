//! Redis trouble: with the cluster's Redis gone, local routing goes on and
//! cluster-wide operations answer 503; once Redis is back the nodes reconnect by
//! themselves and write their entries again.

mod common;

use std::time::Duration;

use common::cluster::{tune_cluster, unique_prefix, PrivateRedis};
use common::{eventually, start_node, WsClient, TIMEOUT};
use serde_json::json;

const D: &str = "trouble.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

async fn redis_is(node: &hyperty::node::NodeHandle, up: bool) -> bool {
    let c = node.state().router().cluster().expect("cluster").clone();
    eventually(Duration::from_secs(10), || {
        let c = c.clone();
        async move { c.redis_up() == up && (!up || c.members().len() == 2) }
    })
    .await
}

#[actix::test]
async fn without_redis_local_routing_goes_on_and_cluster_operations_answer_503() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let prefix = unique_prefix("trouble");
    let nodes: Vec<_> = (0..2)
        .map(|_| start_node(D, |c| tune_cluster(c, &url, &prefix)))
        .collect();
    for n in &nodes {
        assert!(redis_is(n, true).await, "the nodes reach the private Redis");
    }
    let mut a = WsClient::connect(&nodes[0].ws_url()).await;
    a.open(&rt("a")).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let mut b = WsClient::connect(&nodes[0].ws_url()).await;
    b.open(&rt("b")).await;
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    let mut c = WsClient::connect(&nodes[1].ws_url()).await;
    c.open(&rt("c")).await;
    let hc = c.allocate(&rt("c"), D, 1).await.remove(0);

    redis.stop();
    assert!(redis_is(&nodes[0], false).await, "the node notices");
    // local routing goes on
    a.send(json!({"id": 1, "type": "read", "from": ha, "to": hb}))
        .await;
    assert_eq!(b.expect().await["id"], 1);
    // allocation needs the cluster: 503 with a reason
    let r = a
        .request(json!({"type": "create", "from": rt("a"),
            "to": format!("domain://msg-node.{D}/address-allocation"), "body": {}}))
        .await;
    assert_eq!(r["body"]["code"], 503, "{r}");
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("cluster"),
        "{r}"
    );
    // an owner nobody here knows cannot be looked up: 503, not 404
    let r = a
        .request(json!({"type": "read", "from": ha, "to": format!("hyperty://{D}/elsewhere")}))
        .await;
    assert_eq!(r["body"]["code"], 503, "{r}");

    // Redis comes back empty: the nodes reconnect and write their entries again
    redis.restart();
    for n in &nodes {
        assert!(redis_is(n, true).await, "the nodes reconnect by themselves");
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let owner_key = format!("{prefix}:owner:{hc}");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let v: Option<String> = redis::cmd("GET")
            .arg(&owner_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if v.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the owner entry is written again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // and cross-node routing works again (the channels were subscribed again)
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut id = 10;
    loop {
        id += 1;
        a.send(json!({"id": id, "type": "read", "from": ha, "to": hc}))
            .await;
        match c.recv(Duration::from_millis(200)).await {
            Some(m) if m["id"] == id => break,
            _ => {}
        }
        // a 503/504 answer while the channels are being subscribed again
        while let Some(r) = a.recv(Duration::from_millis(1)).await {
            assert_eq!(r["type"], "response", "{r}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cross-node routing resumes"
        );
    }
}
