//! The domain registry embedded in the node, reached over the node's WebSocket and
//! HTTP: create/read/keep-alive/404/408 and status notifications to /sm subscribers.

mod common;

use common::*;
use serde_json::json;

const D: &str = "reg.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

#[actix::test]
async fn registry_over_the_wire() {
    let node = start_node(D, |_| {});
    let registry = format!("domain://registry.{D}");
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let user = format!("user://{D}/alice");

    // a watcher subscribes to the status channel of A's hyperty
    let mut w = WsClient::connect(&node.ws_url()).await;
    w.open(&rt("w")).await;
    let registration = format!("{ha}/registration");
    assert_eq!(
        w.subscribe(&rt("w"), D, &[&registration]).await["body"]["code"],
        200
    );

    let r = a
        .request(json!({"type": "create", "from": format!("{}/registry/", rt("a")), "to": registry,
            "body": {"value": {"user": user, "descriptor": "hyperty-catalogue://catalogue.reg.test/.well-known/hyperty/Chat",
                "url": ha, "expires": 3600, "resources": ["chat"], "dataSchemes": ["comm"],
                "runtime": rt("a"), "status": "live"}, "policy": "policy"}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["from"], registry);
    let n = w.expect().await;
    assert_eq!(
        (n["type"].clone(), n["from"].clone(), n["to"].clone()),
        (json!("update"), json!(registry), json!(registration))
    );
    assert_eq!(n["body"]["value"], "live");

    // read by user: an object, not a string
    let r = a
        .request(
            json!({"type": "read", "from": rt("a"), "to": registry, "body": {"resource": user}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
    assert!(r["body"]["value"].is_object());
    assert_eq!(r["body"]["value"][&ha]["status"], "live");
    // with criteria
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": registry,
            "body": {"resource": user, "criteria": {"resources": ["chat"], "dataSchemes": ["comm"]}}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": registry,
            "body": {"resource": user, "criteria": {"resources": ["video"]}}}))
        .await;
    assert_eq!(r["body"]["code"], 404);
    // by hyperty URL, keep-alive, unknown
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": registry, "body": {"resource": ha}}))
        .await;
    assert_eq!(r["body"]["value"]["runtime"], rt("a"));
    let r = a
        .request(json!({"type": "update", "from": rt("a"), "to": registry, "body": {"resource": ha, "value": {"status": "live"}, "method": "refresh"}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let r = a.request(json!({"type": "read", "from": rt("a"), "to": format!("{registry}/"), "body": {"resource": format!("hyperty://{D}/nobody")}})).await;
    assert_eq!(r["body"]["code"], 404);
    // bad request names the field
    let r = a.request(json!({"type": "create", "from": rt("a"), "to": registry, "body": {"value": {"url": ha}}})).await;
    assert_eq!(r["body"]["code"], 400);

    // readable over HTTP too
    let enc: String = ha
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let body = http_get(&format!("{}/registry/hyperty/url/{enc}", node.http_url())).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "live", "{v}");

    // A's runtime drops: its entries become disconnected, readers get 408
    a.drop_socket().await;
    let n = w.expect().await;
    assert_eq!(n["body"]["value"], "disconnected");
    let r = w
        .request(
            json!({"type": "read", "from": rt("w"), "to": registry, "body": {"resource": user}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 408);
    assert_eq!(r["body"]["description"], "Temporarily Unavailable");
}
