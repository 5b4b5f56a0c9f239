//! One session core behind three transports: raw WebSocket, HTTP POST + long-poll
//! and Socket.IO (Engine.IO 3). The same scenarios run on every transport (pair):
//! a message A→B and back, `/sm` fan-out mixing transports, the rate limit, a
//! policy denial; then each dialect's bad input.

mod common;

use std::time::Duration;

use common::peers::{HttpPeer, Kind, Peer, SioPeer, KINDS};
use common::*;
use serde_json::{json, Value};

const D: &str = "transports.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

fn name(k: Kind) -> &'static str {
    match k {
        Kind::Ws => "ws",
        Kind::Http => "http",
        Kind::SocketIo => "sio",
    }
}

async fn live(node: &hyperty::node::NodeHandle) -> u64 {
    health(node).await["live"].as_u64().expect("live")
}

async fn close(p: &mut Peer, runtime: &str) {
    let r = p
        .request(json!({"id": 99, "type": "close", "from": runtime, "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
}

#[actix::test]
async fn a_message_goes_from_a_to_b_and_back_on_every_transport_pair() {
    let node = start_node(D, |_| {});
    for a in KINDS {
        for b in KINDS {
            let (ra, rb) = (
                rt(&format!("{}-{}-a", name(a), name(b))),
                rt(&format!("{}-{}-b", name(a), name(b))),
            );
            let mut pa = Peer::open(a, &node, &ra).await;
            let mut pb = Peer::open(b, &node, &rb).await;
            let m = json!({"id": 7, "type": "execute", "from": ra, "to": rb,
                "body": {"value": {"text": "héllo ✓", "n": [1, 2.5]}}});
            pa.send(m.clone()).await;
            assert_eq!(pb.expect().await, m, "{a:?} → {b:?}");
            let r = json!({"id": 7, "type": "response", "from": rb, "to": ra,
                "body": {"code": 200, "value": "back"}});
            pb.send(r.clone()).await;
            assert_eq!(pa.expect().await, r, "{b:?} → {a:?}");
            close(&mut pa, &ra).await;
            close(&mut pb, &rb).await;
        }
    }
    // nothing is left behind
    assert!(eventually(TIMEOUT, || async { live(&node).await == 0 }).await);
    assert_eq!(health(&node).await["sessions"], 0);
}

#[actix::test]
async fn sm_fan_out_mixes_transports() {
    let node = start_node(D, |_| {});
    for reporter in KINDS {
        let rr = rt(&format!("rep-{}", name(reporter)));
        let mut rep = Peer::open(reporter, &node, &rr).await;
        let r = rep
            .request(json!({"id": 2, "type": "create", "from": rr,
                "to": format!("domain://msg-node.{D}/address-allocation"),
                "body": {"scheme": "comm", "value": {"number": 1}}}))
            .await;
        let obj = r["body"]["value"]["allocated"][0]
            .as_str()
            .expect("an address")
            .to_owned();
        let changes = format!("{obj}/changes");
        let mut subs = Vec::new();
        for k in KINDS {
            let rs = rt(&format!("sub-{}-{}", name(reporter), name(k)));
            let mut s = Peer::open(k, &node, &rs).await;
            let r = s
                .request(
                    json!({"id": 3, "type": "subscribe", "from": format!("{rs}/sm"),
                    "to": format!("domain://msg-node.{D}/sm"), "body": {"resources": [changes]}}),
                )
                .await;
            assert_eq!(r["body"]["code"], 200, "{r}");
            subs.push((k, s));
        }
        let update = json!({"id": 40, "type": "update", "from": obj, "to": changes,
            "body": {"version": 1, "value": "hi"}});
        rep.send(update.clone()).await;
        for (k, s) in &mut subs {
            assert_eq!(s.expect().await, update, "{reporter:?} → {k:?}");
        }
    }
}

#[actix::test]
async fn the_rate_limit_applies_on_every_transport() {
    let node = start_node(D, |c| {
        c.limits.messages_per_second = 1;
        c.limits.burst = 5;
        c.limits.abuse_threshold = 100_000;
    });
    let rb = rt("target");
    let _b = Peer::open(Kind::Ws, &node, &rb).await;
    for k in KINDS {
        let ra = rt(&format!("flood-{}", name(k)));
        let mut a = Peer::open(k, &node, &ra).await;
        let frames: Vec<Value> = (10..40u64)
            .map(|i| json!({"id": i, "type": "read", "from": ra, "to": rb}))
            .collect();
        match &mut a {
            // a batch of 30 in one request
            Peer::Http(h, _) => {
                let (status, v) = h.send_raw(Value::Array(frames).to_string()).await;
                assert_eq!((status, &v["accepted"]), (200, &json!(30)), "{v}");
            }
            _ => {
                for f in frames {
                    a.send(f).await;
                }
            }
        }
        let mut limited = 0;
        while limited < 20 {
            let r = a.expect().await;
            assert_eq!(r["body"]["code"], 429, "{k:?}: {r}");
            assert_eq!(r["body"]["description"], "rate limit exceeded, slow down");
            limited += 1;
        }
    }
}

#[actix::test]
async fn a_policy_denies_on_every_transport() {
    let dir = std::env::temp_dir().join(format!("hyperty-transports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policies.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[policies]]
id = "no-deletes"
combining = "first-applicable"
  [[policies.rules]]
  id = "deny-deletes"
  effect = "deny"
  target = {{ types = ["delete"], to = ["runtime://{D}/guarded*"] }}
"#
        ),
    )
    .unwrap();
    let node = start_node(D, |c| c.policy.file = Some(file.clone()));
    for a in KINDS {
        for b in KINDS {
            let ra = rt(&format!("pol-{}-{}", name(a), name(b)));
            let rb = rt(&format!("guarded-{}-{}", name(a), name(b)));
            let mut pa = Peer::open(a, &node, &ra).await;
            let mut pb = Peer::open(b, &node, &rb).await;
            let r = pa
                .request(json!({"id": 5, "type": "delete", "from": ra, "to": rb}))
                .await;
            assert_eq!(r["body"]["code"], 403, "{a:?} → {b:?}: {r}");
            assert_eq!(r["body"]["description"], "Blocked by policy");
            // other types pass
            pa.send(json!({"id": 6, "type": "update", "from": ra, "to": rb}))
                .await;
            assert_eq!(pb.expect().await["id"], 6);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix::test]
async fn http_sessions_refuse_bad_requests_and_expire() {
    let node = start_node(D, |c| {
        c.transports.session_expiry_ms = 300;
        c.session.max_frame_size = 4096;
    });
    let base = node.http_url();
    let anon = HttpPeer::new(&base);
    // no session, an unknown one
    let (status, body) = anon.call("GET", "/http/poll", None, None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = anon.call("GET", "/http/poll", Some("nope"), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unknown or expired session"), "{body}");
    let (status, _) = anon
        .call("POST", "/http/send", Some("nope"), Some("{}".into()))
        .await;
    assert_eq!(status, 404);
    // an open that is no open gets its refusal, and no session
    let mut h = HttpPeer::new(&base);
    let (status, v) = h
        .open_with(json!({"id": 1, "type": "update", "from": rt("x"), "to": rt("y")}))
        .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["frames"][0]["body"]["code"], 403, "{v}");
    assert!(h.session.is_none());
    let (status, _) = h.open_with(json!("not a message")).await;
    assert_eq!(status, 400);
    // a real session
    let (status, v) = h
        .open_with(json!({"id": 1, "type": "open", "from": rt("h"), "to": "mn:/session"}))
        .await;
    assert_eq!(status, 200, "{v}");
    // oversized body, broken batch, a frame that is not a message
    let (status, v) = h.send_raw(format!("[{}]", "1,".repeat(3000) + "1")).await;
    assert_eq!(status, 413, "{v}");
    let (status, v) = h.send_raw("[{\"id\":1},".to_owned()).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = h.send_raw("{\"id\": 2, \"type\": 7}".to_owned()).await;
    assert_eq!((status, &v["accepted"]), (200, &json!(1)));
    let (status, frames) = h.poll(TIMEOUT).await;
    assert_eq!(status, 200);
    assert_eq!(frames[0]["body"]["code"], 400, "{frames}");
    // a poll with nothing to take answers an empty array
    let (status, frames) = h.poll(Duration::from_millis(20)).await;
    assert_eq!((status, frames), (200, json!([])));
    // abandoned, the session expires and its connection is gone
    assert!(eventually(TIMEOUT, || async { live(&node).await == 0 }).await);
    assert_eq!(h.poll(Duration::ZERO).await.0, 404);
}

#[actix::test]
async fn http_acknowledges_each_frame_of_a_batch_when_asked() {
    let node = start_node(D, |_| {});
    let (ra, rb) = (rt("ack-a"), rt("ack-b"));
    let mut b = Peer::open(Kind::Ws, &node, &rb).await;
    let Peer::Http(a, _) = Peer::open(Kind::Http, &node, &ra).await else {
        unreachable!()
    };
    let batch = json!([
        {"id": 1, "type": "update", "from": ra, "to": rb},
        {"id": 2, "type": "update", "from": ra, "to": rt("nobody")},
        {"id": 3, "type": "update", "from": rb, "to": ra},
    ]);
    let (status, body) = a
        .call(
            "POST",
            "/http/send?ack=1",
            a.session.as_deref(),
            Some(batch.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["accepted"], 3);
    assert_eq!(v["acks"][0], json!({"code": 200}), "{v}");
    assert_eq!(v["acks"][1]["code"], 404, "{v}");
    assert_eq!(v["acks"][2]["code"], 403, "{v}");
    assert_eq!(b.expect().await["id"], 1);
}

#[actix::test]
async fn the_body_flag_acknowledges_a_frame_on_every_transport() {
    let node = start_node(D, |_| {});
    let node_addr = format!("domain://msg-node.{D}");
    for k in KINDS {
        let (ra, rb) = (
            rt(&format!("flag-{}-a", name(k))),
            rt(&format!("flag-{}-b", name(k))),
        );
        let mut a = Peer::open(k, &node, &ra).await;
        let mut b = Peer::open(Kind::Ws, &node, &rb).await;
        // queued to its recipient: the recipient gets the frame as sent, the sender 200
        let m = json!({"id": 11, "type": "update", "from": ra, "to": rb,
            "body": {"ack": true, "value": {"n": 1}}});
        a.send(m.clone()).await;
        assert_eq!(b.expect().await, m, "{k:?}");
        let ack = a.expect().await;
        assert_eq!(
            ack,
            json!({"id": 11, "type": "response", "from": node_addr, "to": ra,
                "body": {"ack": true, "code": 200}}),
            "{k:?}"
        );
        // no recipient: an update is otherwise dropped silently; flagged, it is told 404
        a.send(
            json!({"id": 12, "type": "update", "from": ra, "to": rt("nobody"),
            "body": {"ack": true}}),
        )
        .await;
        let ack = a.expect().await;
        assert_eq!(ack["id"], 12, "{k:?} {ack}");
        assert_eq!(ack["body"]["ack"], true, "{k:?} {ack}");
        assert_eq!(ack["body"]["code"], 404, "{k:?} {ack}");
        assert!(
            ack["body"]["description"]
                .as_str()
                .unwrap_or("")
                .contains("no route"),
            "{k:?} {ack}"
        );
        // refused: the error response as without the flag, then the 403 acknowledgement
        a.send(json!({"id": 13, "type": "update", "from": rb, "to": ra,
            "body": {"ack": true}}))
            .await;
        let refusal = a.expect().await;
        assert_eq!(refusal["body"]["code"], 403, "{k:?} {refusal}");
        assert!(refusal["body"].get("ack").is_none(), "{k:?} {refusal}");
        let ack = a.expect().await;
        assert_eq!(
            (ack["id"].clone(), ack["body"]["code"].clone()),
            (json!(13), json!(403)),
            "{k:?} {ack}"
        );
        // a node service's answer comes before the acknowledgement; `ack` other than
        // true asks for nothing
        let r = a
            .request(json!({"id": 14, "type": "subscribe", "from": ra,
                "to": format!("domain://msg-node.{D}/sm"),
                "body": {"ack": true, "subscribe": [format!("{ra}/changes")]}}))
            .await;
        assert_eq!(r["body"]["code"], 200, "{k:?} {r}");
        assert!(r["body"].get("ack").is_none(), "{k:?} {r}");
        assert_eq!(
            a.expect().await["body"],
            json!({"ack": true, "code": 200}),
            "{k:?}"
        );
        a.send(json!({"id": 15, "type": "update", "from": ra, "to": rb,
            "body": {"ack": "yes"}}))
            .await;
        assert_eq!(b.expect().await["id"], 15, "{k:?}");
        a.send(json!({"id": 16, "type": "update", "from": ra, "to": rb, "body": {"ack": true}}))
            .await;
        assert_eq!(b.expect().await["id"], 16, "{k:?}");
        assert_eq!(
            a.expect().await["id"],
            16,
            "{k:?}: frame 15 was acknowledged"
        );
        close(&mut a, &ra).await;
        close(&mut b, &rb).await;
    }
}

#[actix::test]
async fn the_bearer_token_opens_an_http_session_when_authentication_is_required() {
    let node = start_node(D, |c| c.auth.mode = hyperty::config::AuthMode::Required);
    let token = user_token(&node, "alice").await;
    let mut h = HttpPeer::new(&node.http_url());
    let open = json!({"id": 1, "type": "open", "from": rt("alice"), "to": "mn:/session"});
    let (status, v) = h.open_with(open.clone()).await;
    assert_eq!(status, 401, "{v}");
    let (status, body) = h
        .call_with_bearer("/http/session", &token, open.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix::test]
async fn socketio_refuses_bad_packets_in_its_own_dialect() {
    let node = start_node(D, |_| {});
    let r = rt("sio-bad");
    let mut s = SioPeer::connect(&node.http_url()).await;
    s.send(&json!({"id": 1, "type": "open", "from": r, "to": "mn:/session"}))
        .await;
    assert_eq!(
        s.recv(TIMEOUT).await.expect("open answer")["body"]["code"],
        200
    );
    // wrong namespace, broken packets, unknown events, replayed acks
    s.send_packet(r#"42/chat,["message",{}]"#).await;
    assert_eq!(
        s.expect_packet("44").await,
        r#"44/chat,"Invalid namespace""#
    );
    s.send_packet("40/admin").await;
    assert_eq!(
        s.expect_packet("44").await,
        r#"44/admin,"Invalid namespace""#
    );
    for bad in [
        "9",
        "4",
        "42[",
        r#"42["message"]"#,
        r#"42["other",1]"#,
        "43[1]",
    ] {
        s.send_packet(bad).await;
        let e = s.expect_packet("44").await;
        assert!(e.starts_with("44\""), "{bad}: {e}");
    }
    let ping = json!({"id": 2, "type": "ping", "from": r, "to": "mn:/session"});
    let id = s.send_acked(&ping).await;
    assert_eq!(s.recv(TIMEOUT).await.expect("answer")["body"]["code"], 200);
    assert_eq!(
        s.expect_packet("43").await,
        format!(r#"43{id}[{{"code":200}}]"#)
    );
    s.send_packet(&format!("42{id}{}", json!(["message", ping.to_string()])))
        .await;
    assert!(s.expect_packet("44").await.contains("was used before"));
    // the engine.io ping, and the session still works
    s.send_packet("2").await;
    assert_eq!(s.expect_packet("3").await, "3");
    let id = s
        .send_acked(&json!({"id": 3, "type": "execute", "from": r, "to": rt("nobody")}))
        .await;
    let ack = s.expect_packet(&format!("43{id}")).await;
    assert!(ack.contains("\"code\":404"), "{ack}");
    // engine.io HTTP errors
    let http = HttpPeer::new(&node.http_url());
    for (path, code) in [
        ("/socket.io/?EIO=3&transport=polling&sid=nope", 1),
        ("/socket.io/?EIO=4&transport=polling", 5),
        ("/socket.io/?EIO=3&transport=carrier-pigeon", 0),
        ("/socket.io/?EIO=3&transport=polling&j=0", 3),
    ] {
        let (status, body) = http.call("GET", path, None, None).await;
        assert_eq!(status, 400, "{path}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["code"], code, "{path}: {v}");
    }
    // 41 leaves; the session goes
    s.send_packet("41").await;
    assert!(s.closes().await);
    assert!(eventually(TIMEOUT, || async { live(&node).await == 0 }).await);
}

#[actix::test]
async fn socketio_polling_speaks_engine_io_3_payloads() {
    let node = start_node(D, |c| c.session.max_frame_size = 4096);
    let http = HttpPeer::new(&node.http_url());
    // handshake, text payloads (b64=1)
    let (status, body) = http
        .call(
            "GET",
            "/socket.io/?EIO=3&transport=polling&b64=1&t=x",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (len, rest) = body.split_once(':').expect("a payload");
    let open = &rest[..len.parse::<usize>().unwrap()];
    assert!(open.starts_with("0{"), "{body}");
    assert!(rest.ends_with("2:40"), "{body}");
    let hs: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(hs["upgrades"], json!(["websocket"]));
    let sid = hs["sid"].as_str().unwrap().to_owned();
    let q = format!("/socket.io/?EIO=3&transport=polling&b64=1&sid={sid}");
    // a ping and an open in one POST; the non-ASCII text is UTF-8 inside the packet
    let open = format!(
        "42{}",
        json!([
            "message",
            json!({"id": 1, "type": "open", "from": rt("poll-é"), "to": "mn:/session"}).to_string()
        ])
    );
    let encoded: String = open.bytes().map(char::from).collect();
    let payload = format!("1:2{}:{encoded}", open.len());
    let (status, body) = http.call("POST", &q, None, Some(payload)).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let mut got = String::new();
    while !got.contains("mn:/session") {
        let (status, body) = http.call("GET", &q, None, None).await;
        assert_eq!(status, 200, "{body}");
        got.push_str(&body);
    }
    assert!(got.starts_with("1:3"), "{got}");
    // a broken payload is a bad request
    let (status, body) = http.call("POST", &q, None, Some("7:42[".into())).await;
    assert_eq!(status, 400, "{body}");
    // a close packet ends the session
    let (status, _) = http.call("POST", &q, None, Some("1:1".into())).await;
    assert_eq!(status, 200);
    assert!(
        eventually(TIMEOUT, || async {
            http.call("GET", &q, None, None).await.0 == 400
        })
        .await
    );
    assert!(eventually(TIMEOUT, || async { live(&node).await == 0 }).await);
}

#[actix::test]
async fn an_abusive_socketio_client_is_told_and_disconnected() {
    let node = start_node(D, |c| c.limits.abuse_threshold = 5);
    let mut s = SioPeer::connect(&node.http_url()).await;
    s.send(&json!({"id": 1, "type": "open", "from": rt("abuser"), "to": "mn:/session"}))
        .await;
    assert_eq!(
        s.recv(TIMEOUT).await.expect("open answer")["body"]["code"],
        200
    );
    for _ in 0..10 {
        s.send_packet("42[").await;
    }
    loop {
        let p = s.next_packet(TIMEOUT).await.expect("the refusal");
        if p.contains("too many refused frames") {
            assert_eq!(p, r#"44"rate limit exceeded: too many refused frames""#);
            break;
        }
        assert!(p.starts_with("44\""), "{p}");
    }
    assert_eq!(s.expect_packet("41").await, "41");
    assert!(s.closes().await);
    assert!(eventually(TIMEOUT, || async { live(&node).await == 0 }).await);
}
