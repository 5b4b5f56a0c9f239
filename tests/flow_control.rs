//! Flow control at the node: a fast sender is slowed, never its healthy receiver cut
//! off; a client that stops reading is evicted and freed; floods of any frame kind
//! before or after `open` are bounded and end in a disconnect.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Ws;

const D: &str = "flow.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(node: &hyperty::node::NodeHandle) -> Socket {
    tokio_tungstenite::connect_async_with_config(node.ws_url(), None, true)
        .await
        .expect("connect")
        .0
}

async fn open_raw(ws: &mut Socket, runtime: &str) {
    let open = json!({"id": 1, "type": "open", "from": runtime, "to": "mn:/session"});
    ws.send(Ws::Text(open.to_string().into())).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Ws::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["body"]["code"], 200, "{v}");
                return;
            }
            Some(Ok(_)) => continue,
            other => panic!("open failed: {other:?}"),
        }
    }
}

/// Reads until the node ends the connection; the close reason, if one was sent.
/// Panics if the connection is still up after the deadline.
async fn until_closed(ws: &mut Socket) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Ws::Close(c)))) => {
                return c.map(|c| c.reason.to_string()).unwrap_or_default()
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return e.to_string(),
            Ok(None) => return "ended".to_owned(),
            Err(_) => panic!("the node did not close the connection"),
        }
    }
}

/// A node with a small slow-down mark, so a burst congests its receiver.
fn burst_node() -> hyperty::node::NodeHandle {
    start_node(D, |c| {
        c.limits.messages_per_second = 10_000_000;
        c.limits.burst = 10_000_000;
        c.session.max_frame_size = 64 * 1024;
        c.session.slow_down_bytes = 32 * 1024;
        c.session.max_pending_bytes = 256 * 1024;
    })
}

/// The `i`th update of a burst from `from` to `to`, with a `pad`-byte padding.
fn burst_update(i: u64, from: &str, to: &str, pad: usize) -> Value {
    json!({"id": i, "type": "update", "from": from, "to": to, "body": {"value": {"n": i, "pad": "x".repeat(pad)}}})
}

/// Reads updates 1..=n in order, pausing every 2000 like a receiver that reads in
/// bursts.
async fn read_in_bursts(mut rx: Socket, n: u64) -> Socket {
    let mut next = 1u64;
    while next <= n {
        let t = match tokio::time::timeout(TIMEOUT, rx.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            other => panic!("receiver lost its connection at {next}: {other:?}"),
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["id"], next, "in order, none missing");
        next += 1;
        if next % 2_000 == 0 {
            // a receiver that reads in bursts: the sender must wait for it
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    rx
}

/// The sender was slowed, and nothing was dropped nor anyone evicted.
async fn assert_slowed_not_dropped(node: &hyperty::node::NodeHandle) {
    let h = health(node).await;
    assert_eq!(h["stats"]["slow_consumers"], 0, "{h}");
    assert_eq!(h["stats"]["dropped"], 0, "{h}");
    assert!(
        h["stats"]["throttled"].as_u64().unwrap() > 0,
        "the sender was slowed: {h}"
    );
}

#[actix::test]
async fn a_burst_to_a_healthy_receiver_arrives_whole_and_in_order() {
    const N: u64 = 20_000;
    let node = burst_node();
    let mut rx = raw(&node).await;
    open_raw(&mut rx, &rt("rx")).await;
    let mut tx = raw(&node).await;
    open_raw(&mut tx, &rt("tx")).await;
    let (to, from) = (rt("rx"), rt("tx"));
    let sender = async move {
        for i in 1..=N {
            let m = burst_update(i, &from, &to, 100);
            tx.feed(Ws::Text(m.to_string().into())).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    };
    let (_tx, _rx) = tokio::join!(sender, read_in_bursts(rx, N));
    assert_slowed_not_dropped(&node).await;
}

#[actix::test]
async fn a_socketio_burst_to_a_healthy_receiver_arrives_whole_and_in_order() {
    // a Socket.IO socket hands its session runs of packets; a congested recipient
    // still holds the rest of a run, and nothing is lost or reordered
    const N: u64 = 20_000;
    let node = burst_node();
    let mut rx = raw(&node).await;
    open_raw(&mut rx, &rt("sio-rx")).await;
    let mut tx = peers::SioPeer::connect(&node.http_url()).await;
    tx.send(&json!({"id": N + 1, "type": "open", "from": rt("sio-tx"), "to": "mn:/session"}))
        .await;
    let opened = tx.recv(TIMEOUT).await.expect("open answer");
    assert_eq!(opened["body"]["code"], 200, "{opened}");
    let (to, from) = (rt("sio-rx"), rt("sio-tx"));
    let sender = async move {
        for i in 1..=N {
            // larger frames: this sender writes one frame per flush
            tx.send(&burst_update(i, &from, &to, 1000)).await;
        }
        tx
    };
    let (_tx, _rx) = tokio::join!(sender, read_in_bursts(rx, N));
    assert_slowed_not_dropped(&node).await;
}

#[actix::test]
async fn a_client_that_stops_reading_is_evicted_and_freed() {
    let node = start_node(D, |c| {
        c.limits.messages_per_second = 10_000_000;
        c.limits.burst = 10_000_000;
        c.session.max_frame_size = 64 * 1024;
        c.session.slow_down_bytes = 16 * 1024;
        c.session.max_pending_bytes = 128 * 1024;
        c.session.write_deadline_ms = 200;
        // an evicted session is freed at once, not kept for a re-open
        c.session.grace_period_ms = 600_000;
    });
    let mut stuck = raw(&node).await;
    open_raw(&mut stuck, &rt("stuck")).await;
    let (mut tx, _) = {
        let mut c = WsClient::connect(&node.ws_url()).await;
        let t = c.open(&rt("tx")).await;
        (c, t)
    };
    let pad = "y".repeat(8 * 1024);
    let mut sent = 0;
    // the stuck client never reads; the sender keeps going until the node evicts it
    while health(&node).await["stats"]["slow_consumers"] == 0 {
        assert!(sent < 20_000, "no eviction after {sent} frames");
        for _ in 0..50 {
            sent += 1;
            tx.send(json!({"id": sent, "type": "update", "from": rt("tx"), "to": rt("stuck"), "body": {"value": pad}}))
                .await;
        }
    }
    assert!(
        eventually(TIMEOUT, || async { health(&node).await["sessions"] == 1 }).await,
        "the evicted session is freed, not kept: {}",
        health(&node).await
    );
    // its address is gone, the sender is fine
    let r = tx
        .request(json!({"type": "read", "from": rt("tx"), "to": rt("stuck")}))
        .await;
    assert_eq!(r["body"]["code"], 404, "{r}");
    // and the stuck socket really is closed by the node
    until_closed(&mut stuck).await;
}

#[actix::test]
async fn a_flood_before_open_is_disconnected_at_the_default_limits() {
    let node = start_node(D, |_| {});
    let mut ws = raw(&node).await;
    let frame = json!({"id": 1, "type": "update", "from": rt("x"), "to": rt("y")}).to_string();
    let (mut sink, mut stream) = ws.split();
    let flood = async move {
        for _ in 0..100_000 {
            if sink.feed(Ws::Text(frame.clone().into())).await.is_err() {
                return true;
            }
        }
        sink.flush().await.is_err()
    };
    let read = async move {
        let mut refused = 0u64;
        loop {
            match tokio::time::timeout(TIMEOUT, stream.next()).await {
                Ok(Some(Ok(Ws::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["body"]["code"], 403, "{v}");
                    refused += 1;
                }
                Ok(Some(Ok(Ws::Close(c)))) => return (refused, c.map(|c| c.reason.to_string())),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return (refused, None),
                Err(_) => panic!("still connected after {refused} refusals"),
            }
        }
    };
    let (_, (refused, reason)) = tokio::join!(flood, read);
    assert!(
        refused <= 1_000,
        "closed after the abuse threshold, not {refused}"
    );
    if let Some(r) = reason {
        assert!(r.contains("rate limit"), "{r}");
    }
    assert_eq!(health(&node).await["stats"]["abusive"], 1);
    ws = raw(&node).await;
    open_raw(&mut ws, &rt("fine")).await;
}

#[actix::test]
async fn ping_and_binary_floods_count_against_the_rate() {
    let node = start_node(D, |c| {
        c.limits.messages_per_second = 10;
        c.limits.burst = 5;
        c.limits.abuse_threshold = 50;
    });
    for (name, frame) in [
        ("pinger", Ws::Ping(vec![1].into())),
        ("binary", Ws::Binary(vec![1, 2].into())),
    ] {
        let mut ws = raw(&node).await;
        open_raw(&mut ws, &rt(name)).await;
        for _ in 0..200 {
            if ws.send(frame.clone()).await.is_err() {
                break;
            }
        }
        let reason = until_closed(&mut ws).await;
        assert!(!reason.is_empty());
    }
    let h = health(&node).await;
    assert_eq!(h["stats"]["abusive"], 2, "{h}");
    assert!(h["stats"]["rate_limited"].as_u64().unwrap() > 0, "{h}");
}

#[actix::test]
async fn a_connection_that_never_opens_is_closed_after_the_open_timeout() {
    let node = start_node(D, |c| {
        c.session.open_timeout_ms = 100;
        c.session.heartbeat_interval_ms = 20;
    });
    // reading answers the node's pings, so only the open timeout can end this
    let mut ws = raw(&node).await;
    let reason = until_closed(&mut ws).await;
    assert!(reason.contains("open"), "{reason}");
    assert!(eventually(TIMEOUT, || async { health(&node).await["sessions"] == 0 }).await);
}

#[test]
fn the_per_address_default_is_bounded_for_real_deployments() {
    let c = hyperty::config::NodeConfig::default();
    assert!(c.limits.max_sessions_per_ip <= 1_000);
    assert!(c.session.max_pending_bytes <= 64 << 20);
    assert!(c.session.write_deadline_ms <= 2_000);
}
