//! The messaging node over real WebSockets: handshake, allocation, /sm fan-out,
//! routing and anti-spoofing, bad input, re-open and grace period, lifecycle events,
//! slow consumers, frame limits.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const D: &str = "node.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

async fn client(node: &hyperty::node::NodeHandle, name: &str) -> (WsClient, String) {
    let mut c = WsClient::connect(&node.ws_url()).await;
    let token = c.open(&rt(name)).await;
    (c, token)
}

#[actix::test]
async fn open_answers_200_with_a_runtime_token() {
    let node = start_node(D, |_| {});
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(json!({"id": 1, "type": "open", "from": rt("a"), "to": "mn:/session"}))
        .await;
    assert_eq!(r["id"], 1);
    assert_eq!(r["from"], "mn:/session");
    assert_eq!(r["to"], rt("a"));
    assert_eq!(r["body"]["code"], 200);
    let token = r["body"]["runtimeToken"].as_str().unwrap().to_owned();
    // open again on the same connection: same token
    assert_eq!(c.open(&rt("a")).await, token);
    // another connection opening the same runtime URL replaces the (anonymous)
    // session, with a new token, and the old socket is closed
    let mut other = WsClient::connect(&node.ws_url()).await;
    let r = other
        .request(json!({"type": "open", "from": rt("a"), "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_ne!(r["body"]["runtimeToken"], token.as_str());
    assert!(c.recv(TIMEOUT).await.is_none(), "the old socket closes");
    assert!(c.closed.is_some());
    // open must come from a runtime URL
    let mut other = WsClient::connect(&node.ws_url()).await;
    let r = other
        .request(json!({"type": "open", "from": "hyperty://node.test/x", "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 400);
    let h = health(&node).await;
    assert_eq!(h["status"], "up");
    assert_eq!(h["domain"], D);
}

#[actix::test]
async fn nothing_is_routed_before_open() {
    let node = start_node(D, |_| {});
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(json!({"type": "read", "from": rt("a"), "to": rt("b")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    assert!(r["body"]["description"].as_str().unwrap().contains("open"));
}

#[actix::test]
async fn point_to_point_routing_forwards_the_frame_unchanged() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    assert!(ha.starts_with(&format!("hyperty://{D}/")));
    // exotic spacing, key order and unknown fields survive byte for byte
    let frame = format!(
        r#"{{ "to":"{hb}", "body":{{"value":{{"x":6e78,"s":"é\u00e9"}},"extra":[1,{{}}]}}, "id":7,"type":"execute","from":"{ha}" }}"#
    );
    a.send_text(&frame).await;
    assert_eq!(b.recv_text(TIMEOUT).await.unwrap(), frame);
    // and the response comes back
    b.send(json!({"id": 7, "type": "response", "from": hb, "to": ha, "body": {"code": 200}}))
        .await;
    let r = a.expect().await;
    assert_eq!(
        (r["id"].clone(), r["body"]["code"].clone()),
        (json!(7), json!(200))
    );
    // a runtime URL owns everything under it
    a.send(json!({"id": 8, "type": "update", "from": ha, "to": format!("{}/sm", rt("b"))}))
        .await;
    assert_eq!(b.expect().await["id"], 8);
}

#[actix::test]
async fn recipient_lists_reach_each_session_once() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let (mut c, _) = client(&node, "c").await;
    let to = json!([
        format!("{}/x", rt("b")),
        format!("{}/y", rt("b")),
        format!("{}/x", rt("c"))
    ]);
    a.send(json!({"id": 3, "type": "update", "from": rt("a"), "to": to}))
        .await;
    assert_eq!(b.expect().await["id"], 3);
    assert_eq!(c.expect().await["id"], 3);
    assert!(
        b.recv(Duration::from_millis(50)).await.is_none(),
        "one copy per session"
    );
}

#[actix::test]
async fn allocation_numbers_schemes_limits_and_errors() {
    let node = start_node(D, |c| c.allocation.max_per_session = 5);
    let (mut a, _) = client(&node, "a").await;
    let alloc = format!("domain://msg-node.{D}/address-allocation");
    // number defaults to 1
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": alloc, "body": {"value": {}}}))
        .await;
    assert_eq!(r["body"]["value"]["allocated"].as_array().unwrap().len(), 1);
    assert_eq!(r["from"], alloc);
    // data-object scheme
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": alloc, "body": {"scheme": "comm", "value": {"number": 2}}}))
        .await;
    let objs = r["body"]["value"]["allocated"].as_array().unwrap();
    assert!(objs
        .iter()
        .all(|o| o.as_str().unwrap().starts_with(&format!("comm://{D}/"))));
    // legacy alias
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": format!("domain://msg-node.{D}/hyperty-address-allocation"), "body": {"value": {"number": 1}}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    // limit: 4 held, asking for 2 more
    let r = a.request(json!({"type": "create", "from": rt("a"), "to": alloc, "body": {"value": {"number": 2}}})).await;
    assert_eq!(r["body"]["code"], 429);
    for bad in [
        json!({"value": {"number": 0}}),
        json!({"value": {"number": "x"}}),
        json!({"scheme": "ftp"}),
        json!({"scheme": 3}),
    ] {
        let r = a
            .request(json!({"type": "create", "from": rt("a"), "to": alloc, "body": bad}))
            .await;
        assert_eq!(r["body"]["code"], 400, "{bad}: {r}");
    }
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": alloc}))
        .await;
    assert_eq!(r["body"]["code"], 400);
}

#[actix::test]
async fn freeing_addresses_stops_routing() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let alloc = format!("domain://msg-node.{D}/address-allocation");
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": alloc,
            "body": {"value": {"number": 6, "allocationKey": "k1"}}}))
        .await;
    let addrs: Vec<String> = r["body"]["value"]["allocated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    // reachable: the request arrives at A, A answers
    for addr in &addrs {
        b.send(json!({"id": 500, "type": "read", "from": rt("b"), "to": addr}))
            .await;
        let got = a.expect().await;
        assert_eq!(got["to"], *addr);
        a.send(json!({"id": 500, "type": "response", "from": addr, "to": rt("b"), "body": {"code": 200}})).await;
        assert_eq!(b.expect().await["body"]["code"], 200);
    }
    // free by a flat list, a nested list, by key in `resource` (as a list, as the perf tests do)
    let r = a.request(json!({"type": "delete", "from": rt("a"), "to": alloc, "body": {"childrenResources": [addrs[0]]}})).await;
    assert_eq!(r["body"]["code"], 200);
    let r = a.request(json!({"type": "delete", "from": rt("a"), "to": alloc, "body": {"childrenResources": [[addrs[1]], [addrs[2]]]}})).await;
    assert_eq!(r["body"]["code"], 200);
    for gone in &addrs[..3] {
        assert_eq!(
            reach(&mut b, gone).await["body"]["code"],
            404,
            "{gone} still routed"
        );
    }
    let r = a
        .request(
            json!({"type": "delete", "from": rt("a"), "to": alloc, "body": {"resource": ["k1"]}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
    for gone in &addrs[3..] {
        assert_eq!(
            reach(&mut b, gone).await["body"]["code"],
            404,
            "{gone} still routed"
        );
    }
    // and the freed address can no longer be used as a sender
    let r = a
        .request(json!({"type": "update", "from": addrs[0], "to": rt("b")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    // freeing by body.value.allocationKey also works; unknown keys still answer 200
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": alloc, "body": {"value": {"number": 1, "allocationKey": "k2"}}}))
        .await;
    let k2 = r["body"]["value"]["allocated"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let r = a.request(json!({"type": "delete", "from": rt("a"), "to": alloc, "body": {"value": {"allocationKey": "k2"}}})).await;
    assert_eq!(r["body"]["code"], 200);
    assert_eq!(reach(&mut b, &k2).await["body"]["code"], 404);
    let r = a
        .request(
            json!({"type": "delete", "from": rt("a"), "to": alloc, "body": {"resource": "nope"}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
}

#[actix::test]
async fn sm_fans_out_to_every_subscriber_including_the_sender() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let (mut c, _) = client(&node, "c").await;
    // the reporter allocates its object and subscribes to the changes channel
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": format!("domain://msg-node.{D}/address-allocation"),
            "body": {"scheme": "comm", "value": {"number": 1}}}))
        .await;
    let obj = r["body"]["value"]["allocated"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let changes = format!("{obj}/changes");
    assert_eq!(
        a.subscribe(&format!("{}/sm", rt("a")), D, &[&obj, &changes])
            .await["body"]["code"],
        200
    );
    assert_eq!(
        b.subscribe(&format!("{}/sm", rt("b")), D, &[&changes])
            .await["body"]["code"],
        200
    );
    // legacy key spelling
    let r = c
        .request(json!({"type": "subscribe", "from": format!("{}/sm", rt("c")), "to": format!("domain://msg-node.{D}/sm"), "body": {"subscribe": [changes]}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let update = json!({"id": 40, "type": "update", "from": obj, "to": changes, "body": {"version": 1, "value": "hi"}});
    a.send(update.clone()).await;
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(s.expect().await, update);
    }
    // unsubscribe stops delivery
    let r = c
        .request(json!({"type": "unsubscribe", "from": format!("{}/sm", rt("c")), "to": format!("domain://msg-node.{D}/sm"), "body": {"resources": [changes]}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    a.send(json!({"id": 41, "type": "update", "from": obj, "to": changes}))
        .await;
    assert_eq!(b.expect().await["id"], 41);
    assert!(c.recv(Duration::from_millis(50)).await.is_none());
    // bad /sm requests
    let sm = format!("domain://msg-node.{D}/sm");
    for body in [
        json!({}),
        json!({"resources": [changes], "subscribe": [changes]}),
        json!({"resources": ["not an address"]}),
        json!({"resources": []}),
    ] {
        let r = c
            .request(json!({"type": "subscribe", "from": rt("c"), "to": sm, "body": body}))
            .await;
        assert_eq!(r["body"]["code"], 400, "{body}");
    }
    let r = c
        .request(json!({"type": "create", "from": rt("c"), "to": sm, "body": {}}))
        .await;
    assert_eq!(r["body"]["code"], 400);
    // naming another session's object as `source` subscribes, but grants nothing
    let r = c.request(json!({"type": "subscribe", "from": rt("c"), "to": sm, "body": {"resources": [changes], "source": obj}})).await;
    assert_eq!(r["body"]["code"], 200);
    let r = c
        .request(json!({"type": "update", "from": obj, "to": changes}))
        .await;
    assert_eq!(r["body"]["code"], 403);
}

#[actix::test]
async fn claimed_hyperty_addresses_are_routable_like_runtime_core_makes_them() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let local = format!("hyperty://{D}/generated-by-runtime");
    let r = a
        .request(json!({"type": "subscribe", "from": format!("{}/sm", rt("a")), "to": format!("domain://msg-node.{D}/sm"),
            "body": {"resources": [local], "source": format!("{}/address-allocation", rt("a"))}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    b.send(json!({"id": 9, "type": "create", "from": rt("b"), "to": local}))
        .await;
    assert_eq!(a.expect().await["id"], 9);
    // and A may now send from it, B may not
    a.send(json!({"id": 10, "type": "update", "from": local, "to": rt("b")}))
        .await;
    assert_eq!(b.expect().await["id"], 10);
    let r = b
        .request(json!({"type": "update", "from": local, "to": rt("a")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
}

#[actix::test]
async fn unknown_destinations_spoofing_and_reserved_addresses() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    // request to nobody → 404 from the address asked for
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": format!("hyperty://{D}/nobody")}))
        .await;
    assert_eq!(r["body"]["code"], 404);
    assert_eq!(r["from"], format!("hyperty://{D}/nobody"));
    // an update to nobody is dropped and counted, no reply
    a.send(
        json!({"id": 2, "type": "update", "from": rt("a"), "to": format!("hyperty://{D}/nobody")}),
    )
    .await;
    assert!(a.recv(Duration::from_millis(50)).await.is_none());
    // spoofing another session's runtime URL or allocated address → 403, not delivered
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    for from in [
        rt("b"),
        format!("{}/x", rt("b")),
        hb.clone(),
        format!("hyperty://{D}/unowned"),
    ] {
        let r = a
            .request(json!({"type": "update", "from": from, "to": rt("b")}))
            .await;
        assert_eq!(r["body"]["code"], 403, "{from}");
    }
    assert!(b.recv(Duration::from_millis(50)).await.is_none());
    // node-reserved addresses
    let r = a.request(json!({"type": "update", "from": rt("a"), "to": format!("domain://msg-node.{D}/session-events")})).await;
    assert_eq!(r["body"]["code"], 403);
    let h = health(&node).await;
    assert!(h["stats"]["forbidden"].as_u64().unwrap() >= 5);
    assert!(h["stats"]["not_found"].as_u64().unwrap() >= 1);
    assert!(h["stats"]["dropped"].as_u64().unwrap() >= 1);
}

#[actix::test]
async fn bad_input_gets_400_and_the_connection_stays_up() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let cases = [
        ("{not json", None),
        ("[1,2]", None),
        (
            r#"{"id":5,"type":"read","to":"runtime://node.test/b"}"#,
            Some("from"),
        ),
        (
            r#"{"id":0,"type":"read","from":"runtime://node.test/a","to":"runtime://node.test/b"}"#,
            Some("id"),
        ),
        (
            r#"{"id":6,"type":"read","from":"runtime://node.test/a","to":"gopher://x/y"}"#,
            Some("to"),
        ),
        (
            r#"{"id":7,"type":"read","from":"runtime://node.test/a","to":[]}"#,
            Some("to"),
        ),
        (
            r#"{"id":8,"type":"read","from":"runtime://node.test/a","to":"runtime://node.test/b","body":"x"}"#,
            Some("body"),
        ),
    ];
    for (frame, field) in cases {
        a.send_text(frame).await;
        let r = a.expect().await;
        assert_eq!(r["type"], "response", "{frame}");
        assert_eq!(r["body"]["code"], 400, "{frame}");
        let d = r["body"]["description"].as_str().unwrap();
        if let Some(f) = field {
            assert!(d.contains(f), "{frame}: {d}");
        }
    }
    // the partial header addresses the error
    a.send_text(r#"{"id":9,"type":"read","from":"runtime://node.test/a","to":"nope"}"#)
        .await;
    let r = a.expect().await;
    assert_eq!(
        (r["id"].clone(), r["to"].clone()),
        (json!(9), json!(rt("a")))
    );
    a.send_binary(vec![1, 2, 3]).await;
    assert_eq!(a.expect().await["body"]["code"], 400);
    // still up
    let (mut b, _) = client(&node, "b").await;
    a.send(json!({"id": 10, "type": "update", "from": rt("a"), "to": rt("b")}))
        .await;
    assert_eq!(b.expect().await["id"], 10);
    assert!(
        health(&node).await["stats"]["bad_requests"]
            .as_u64()
            .unwrap()
            >= 8
    );
}

#[actix::test]
async fn oversize_frames_close_the_connection() {
    let node = start_node(D, |c| c.session.max_frame_size = 4096);
    let (mut a, _) = client(&node, "a").await;
    let big = json!({"id": 1, "type": "update", "from": rt("a"), "to": rt("a"), "body": {"value": "x".repeat(8192)}});
    a.send(big).await;
    assert!(a.recv(TIMEOUT).await.is_none());
    assert!(
        a.closed.as_deref().unwrap_or_default().starts_with("1009"),
        "{:?}",
        a.closed
    );
}

#[actix::test]
async fn reopen_after_a_dropped_socket_restores_addresses_and_buffered_frames() {
    let node = start_node(D, |_| {});
    let (mut a, token) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    a.drop_socket().await;
    // wait until the node noticed
    assert!(eventually(TIMEOUT, || async { health(&node).await["live"] == 1 }).await);
    // sent while A is away: kept for it
    b.send(json!({"id": 21, "type": "update", "from": rt("b"), "to": ha}))
        .await;
    b.send(json!({"id": 22, "type": "update", "from": rt("b"), "to": format!("{}/x", rt("a"))}))
        .await;
    // a wrong token is refused
    let mut a2 = WsClient::connect(&node.ws_url()).await;
    let r = a2.request(json!({"type": "re-open", "from": rt("a"), "to": "mn:/session", "body": {"runtimeToken": "bogus"}})).await;
    assert_eq!(r["body"]["code"], 401);
    // the right one resumes, buffered frames first
    let r = a2.request(json!({"type": "re-open", "from": rt("a"), "to": "mn:/session", "body": {"runtimeToken": token}})).await;
    assert_eq!(r["body"]["code"], 200);
    assert_eq!(r["body"]["runtimeToken"], token);
    assert_eq!(a2.expect().await["id"], 21);
    assert_eq!(a2.expect().await["id"], 22);
    b.send(json!({"id": 23, "type": "update", "from": rt("b"), "to": ha}))
        .await;
    assert_eq!(a2.expect().await["id"], 23);
    // and A still owns its address as a sender
    a2.send(json!({"id": 24, "type": "update", "from": ha, "to": rt("b")}))
        .await;
    assert_eq!(b.expect().await["id"], 24);
}

#[actix::test]
async fn vertx_style_reopen_from_runtime_url_slash_token() {
    let node = start_node(D, |_| {});
    let (a, token) = client(&node, "a").await;
    a.ws_close().await;
    assert!(eventually(TIMEOUT, || async { health(&node).await["live"] == 0 }).await);
    let mut a2 = WsClient::connect(&node.ws_url()).await;
    let r = a2
        .request(
            json!({"type": "re-open", "from": format!("{}/{token}", rt("a")), "to": "mn:/session"}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
}

#[actix::test]
async fn the_grace_period_ends_a_dropped_session() {
    let node = start_node(D, |c| c.session.grace_period_ms = 200);
    let (mut a, token) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    a.drop_socket().await;
    assert!(
        eventually(TIMEOUT, || async { health(&node).await["sessions"] == 1 }).await,
        "the dropped session ends"
    );
    let r = b
        .request(json!({"type": "read", "from": rt("b"), "to": ha}))
        .await;
    assert_eq!(r["body"]["code"], 404);
    let mut a2 = WsClient::connect(&node.ws_url()).await;
    let r = a2.request(json!({"type": "re-open", "from": rt("a"), "to": "mn:/session", "body": {"runtimeToken": token}})).await;
    assert_eq!(r["body"]["code"], 401);
    // the runtime URL is free again
    assert!(!a2.open(&rt("a")).await.is_empty());
}

#[actix::test]
async fn close_frees_everything_at_once() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let r = a
        .request(json!({"type": "close", "from": rt("a"), "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    assert!(a.recv(TIMEOUT).await.is_none());
    let r = b
        .request(json!({"type": "read", "from": rt("b"), "to": ha}))
        .await;
    assert_eq!(r["body"]["code"], 404);
    let r = b
        .request(json!({"type": "read", "from": rt("b"), "to": rt("a")}))
        .await;
    assert_eq!(r["body"]["code"], 404);
}

#[actix::test]
async fn lifecycle_events_are_published_to_subscribers() {
    let node = start_node(D, |c| {
        c.session.grace_period_ms = 60_000;
        c.policy.managers = vec![format!("user://{D}/ops")];
    });
    let ops = user_token(&node, "ops").await;
    let mut watcher = WsClient::connect(&node.ws_url()).await;
    let r = watcher
        .request(json!({"type": "open", "from": rt("watcher"), "to": "mn:/session", "body": {"idToken": ops}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let events = format!("domain://msg-node.{D}/session-events");
    assert_eq!(
        watcher.subscribe(&rt("watcher"), D, &[&events]).await["body"]["code"],
        200
    );
    let mut next_event = async || {
        let e = watcher.expect().await;
        assert_eq!(e["type"], "update");
        assert_eq!(e["from"], events);
        assert_eq!(e["body"]["value"]["runtime"], rt("a"));
        assert!(e["body"]["value"].get("token").is_none());
        e["body"]["value"]["event"].as_str().unwrap().to_owned()
    };
    let (a, token) = client(&node, "a").await;
    assert_eq!(next_event().await, "open");
    a.drop_socket().await;
    // (a re-open that beats the node to noticing the drop makes no `lost`)
    assert_eq!(next_event().await, "lost");
    let mut a2 = WsClient::connect(&node.ws_url()).await;
    let r = a2.request(json!({"type": "re-open", "from": rt("a"), "to": "mn:/session", "body": {"runtimeToken": token}})).await;
    assert_eq!(r["body"]["code"], 200);
    assert_eq!(next_event().await, "re-open");
    a2.request(json!({"type": "close", "from": rt("a"), "to": "mn:/session"}))
        .await;
    assert_eq!(next_event().await, "close");
}

#[actix::test]
async fn a_slow_consumer_is_cut_off_while_others_keep_receiving() {
    let node = start_node(D, |c| {
        c.session.outbound_queue = 8;
        c.session.grace_buffer = 16;
        c.session.max_frame_size = 1 << 20;
    });
    let (mut a, _) = client(&node, "a").await;
    let (slow, _) = client(&node, "slow").await;
    let (mut fast, _) = client(&node, "fast").await;
    let pad = "p".repeat(64 * 1024);
    let mut received = 0;
    // the slow client never reads; the fast one reads everything
    for i in 0..600u64 {
        a.send(json!({"id": i + 1, "type": "update", "from": rt("a"), "to": rt("slow"), "body": {"value": pad}})).await;
        a.send(json!({"id": i + 1, "type": "update", "from": rt("a"), "to": rt("fast")}))
            .await;
        while let Some(m) = fast.recv(Duration::from_millis(0)).await {
            assert_eq!(m["to"], rt("fast"));
            received += 1;
        }
        if health(&node).await["stats"]["slow_consumers"] == 1 {
            break;
        }
    }
    let h = health(&node).await;
    assert_eq!(h["stats"]["slow_consumers"], 1, "{h}");
    // memory stayed bounded: at most the grace buffer was kept for it
    assert!(
        h["stats"]["dropped"].as_u64().unwrap() > 0
            || h["stats"]["buffered"].as_u64().unwrap() <= 16
    );
    // the fast client got every one of its messages
    let sent = h["stats"]["frames_in"].as_u64().unwrap();
    while received < sent / 2 - 1 {
        match fast.recv(TIMEOUT).await {
            Some(_) => received += 1,
            None => break,
        }
    }
    assert!(
        received >= sent / 2 - 1,
        "fast got {received} of ~{}",
        sent / 2
    );
    drop(slow);
}

async fn reach(b: &mut WsClient, to: &str) -> Value {
    b.request(json!({"type": "read", "from": rt("b"), "to": to}))
        .await
}

#[actix::test]
async fn a_silent_client_is_dropped_after_the_client_timeout() {
    let node = start_node(D, |c| {
        c.session.heartbeat_interval_ms = 20;
        c.session.client_timeout_ms = 100;
    });
    let (a, _) = client(&node, "a").await;
    // the client reads nothing, so it never answers the node's pings
    assert!(eventually(TIMEOUT, || async { health(&node).await["live"] == 0 }).await);
    drop(a);
}

#[actix::test]
async fn events_are_split_per_runtime_with_bcc_narrowed() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let (mut c, _) = client(&node, "c").await;
    let (b1, b2) = (format!("{}/e1", rt("b")), format!("{}/e2", rt("b")));
    let c1 = format!("{}/e1", rt("c"));
    let event = json!({"type": "chat", "source": format!("{}/src", rt("a")), "to": [b1], "cc": [c1], "bcc": [b2],
        "payload": "hello"});
    a.send(json!({"id": 70, "type": "event", "from": format!("{}/events", rt("a")), "to": [b1, c1, b2], "body": {"value": event}}))
        .await;
    let gb = b.expect().await;
    assert_eq!(gb["to"], json!([b1, b2]));
    assert_eq!(gb["body"]["value"]["bcc"], json!([b2]));
    let gc = c.expect().await;
    assert_eq!(gc["to"], json!(c1));
    assert_eq!(
        gc["body"]["value"]["bcc"],
        json!([]),
        "C never learns of B's blind copy"
    );
    assert_eq!(gc["body"]["value"]["payload"], "hello");
    assert!(b.recv(Duration::from_millis(30)).await.is_none());
}
