//! The bridge given several nodes of one domain moves to the next when its node
//! is gone, and its hyperties stay reachable at the address they had.

mod common;

use std::time::Duration;

use common::cluster::{clean, section, unique_prefix, REDIS};
use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use serde_json::json;

const D: &str = "failover.test";

fn cluster_node(prefix: &str) -> hyperty::node::NodeHandle {
    let prefix = prefix.to_owned();
    start_node(D, move |cfg| cfg.cluster = section(REDIS, &prefix))
}

async fn live(rt: &RuntimeHandle) -> bool {
    rt.stubs()
        .await
        .iter()
        .any(|s| s.domain.is_none() && s.status == StubStatus::Live)
}

/// Until the cluster's session directory is in, the second node refuses the
/// re-open and the bridge opens afresh there, claiming its addresses again; with
/// it, the re-open itself keeps them. Either way the address must survive.
#[actix::test]
async fn hyperty_address_survives_its_node_going_away() {
    let prefix = unique_prefix("bridge-failover");
    let first = cluster_node(&prefix);
    let second = cluster_node(&prefix);
    let config = BridgeConfig::with_urls([first.ws_url(), second.ws_url()]).expect("urls");
    assert_eq!(config.node_url(1), second.ws_url());
    assert_eq!(config.node_url(2), first.ws_url());

    let moving = Runtime::start(RuntimeConfig::new(D)).expect("runtime");
    moving.attach_node(config).await.expect("attached");
    let w = moving.spawn_hyperty(worker(D)).await.expect("hyperty");

    let other = Runtime::start(RuntimeConfig::new(D)).expect("runtime");
    attach(&other, &second).await;
    let asker = other.spawn_hyperty(worker(D)).await.expect("hyperty");

    first.stop().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            if !live(&moving).await {
                return false;
            }
            let answer = other
                .bus()
                .post(request(&asker, &w, json!({"q": "still here?"})))
                .await;
            answer.is_ok_and(|r| r.code() == Some(ResponseCode::Ok))
        })
        .await,
        "the bridge never came back on the second node with its address"
    );
    // and the moved runtime reaches hyperties on its new node
    let back = moving
        .bus()
        .post(request(&w, &asker, json!({"q": "back"})))
        .await
        .expect("answered");
    assert_eq!(back.code(), Some(ResponseCode::Ok));
    second.stop().await;
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn one_url_keeps_the_single_node_behaviour() {
    let config = BridgeConfig::with_urls(["ws://127.0.0.1:1/ws"]).expect("one url");
    assert!(config.fallback_urls.is_empty());
    assert_eq!(config.node_url(3), "ws://127.0.0.1:1/ws");
    assert!(BridgeConfig::with_urls(Vec::<String>::new()).is_none());
}
