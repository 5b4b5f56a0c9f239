//! Denial-of-service protection on the node (threat T4): per-session rate limits,
//! abusive sessions closed, per-address connection limits, bounded tables.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const D: &str = "limits.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

#[actix::test]
async fn a_flooding_session_gets_429_while_others_keep_flowing() {
    let node = start_node(D, |c| {
        c.limits.messages_per_second = 50;
        c.limits.burst = 20;
        c.limits.abuse_threshold = 100_000;
    });
    let mut flood = WsClient::connect(&node.ws_url()).await;
    flood.open(&rt("flood")).await;
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let mut b = WsClient::connect(&node.ws_url()).await;
    b.open(&rt("b")).await;
    for i in 1..=200u64 {
        flood
            .send(json!({"id": i, "type": "read", "from": rt("flood"), "to": rt("b")}))
            .await;
    }
    // the flooder sees 429s
    let mut limited = 0;
    while let Some(r) = flood.recv(Duration::from_millis(300)).await {
        if r["body"]["code"] == 429 {
            assert_eq!(r["body"]["description"], "rate limit exceeded, slow down");
            limited += 1;
        }
    }
    assert!(limited >= 100, "only {limited} refused");
    // another session is not affected
    a.send(json!({"id": 1, "type": "update", "from": rt("a"), "to": rt("b")}))
        .await;
    let got = b.recv_matching(|m| m["from"] == rt("a")).await;
    assert_eq!(got["id"], 1);
    let h: serde_json::Value =
        serde_json::from_str(&http_get(&format!("{}/health", node.http_url())).await).unwrap();
    assert!(h["stats"]["rate_limited"].as_u64().unwrap() >= 100);
}

#[actix::test]
async fn sustained_abuse_closes_the_session() {
    let node = start_node(D, |c| {
        c.limits.messages_per_second = 10;
        c.limits.burst = 5;
        c.limits.abuse_threshold = 50;
    });
    let mut flood = WsClient::connect(&node.ws_url()).await;
    flood.open(&rt("flood")).await;
    for i in 1..=200u64 {
        flood
            .send_text(
                &json!({"id": i, "type": "update", "from": rt("flood"), "to": rt("flood")})
                    .to_string(),
            )
            .await;
    }
    while flood.recv(TIMEOUT).await.is_some() {}
    assert!(
        flood
            .closed
            .as_deref()
            .unwrap_or_default()
            .contains("rate limit"),
        "{:?}",
        flood.closed
    );
    let h: serde_json::Value =
        serde_json::from_str(&http_get(&format!("{}/health", node.http_url())).await).unwrap();
    assert_eq!(h["stats"]["abusive"], 1);
}

#[actix::test]
async fn connections_per_address_are_bounded() {
    let node = start_node(D, |c| c.limits.max_sessions_per_ip = 2);
    let _a = WsClient::connect(&node.ws_url()).await;
    let b = WsClient::connect(&node.ws_url()).await;
    let third = tokio_tungstenite::connect_async(node.ws_url()).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected HTTP 429, got {:?}", other.map(|_| ())),
    }
    // a slot frees when a connection ends
    b.drop_socket().await;
    assert!(
        eventually(TIMEOUT, || async {
            tokio_tungstenite::connect_async(node.ws_url())
                .await
                .is_ok()
        })
        .await
    );
}

#[actix::test]
async fn subscriptions_per_session_are_bounded() {
    let node = start_node(D, |c| c.subscriptions.max_per_session = 3);
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let r = a
        .subscribe(
            &rt("a"),
            D,
            &[
                "comm://limits.test/1/changes",
                "comm://limits.test/2/changes",
            ],
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
    let r = a
        .subscribe(
            &rt("a"),
            D,
            &[
                "comm://limits.test/3/changes",
                "comm://limits.test/4/changes",
            ],
        )
        .await;
    assert_eq!(r["body"]["code"], 429);
}
