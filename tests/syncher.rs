//! The Syncher (rethink-wire.md §9): reporters and observers in one runtime and
//! across two runtimes through a real messaging node; who may write; bad input.

mod common;

use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use hyperty_actors::syncher::object::Op;
use serde_json::{json, Value};

const D: &str = "sync.test";

/// The next change event, skipping subscription notices.
async fn next_change(h: &mut Observer) -> hyperty_actors::syncher::object::Change {
    loop {
        let ev = tokio::time::timeout(TIMEOUT, h.next())
            .await
            .expect("an event in time")
            .expect("stream open");
        if let SyncEvent::Changed(c) = ev {
            return c;
        }
    }
}

/// A raw §9 request from a hyperty to `<rt>/sm`: the response.
async fn raw(ctx: &HypertyContext, kind: MessageType, body: Value) -> Message {
    let sm = ctx.runtime().component("sm");
    let Value::Object(m) = body else { panic!() };
    let msg = ctx.message(kind, sm).with_body(Body::from_map(m).unwrap());
    ctx.bus().post(msg).await.unwrap()
}

fn code(m: &Message) -> u16 {
    m.code().map(|c| c.as_u16()).unwrap_or(0)
}

#[actix::test]
async fn reporter_and_observers_in_one_runtime() {
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    let (alice, _) = inbox_hyperty(&rt, D, None).await;
    let (bob, _) = inbox_hyperty(&rt, D, None).await;
    let (carol, _) = inbox_hyperty(&rt, D, None).await;

    let reporter = alice
        .syncher()
        .create(
            ObjectSpec::new("room", "comm")
                .with_data(json!({"topic": "lunch", "members": ["alice"]})),
        )
        .await
        .unwrap();
    let url = reporter.url().clone();
    assert_eq!(url.scheme(), "comm");
    assert_eq!(reporter.version(), 0);

    // carol may not observe
    let carol_url = carol.url().address().clone();
    reporter
        .on_subscription(move |r| match r.observer == carol_url {
            true => SubscriptionDecision::Reject("not in this room".into()),
            false => SubscriptionDecision::Accept,
        })
        .await
        .unwrap();
    let err = carol.syncher().subscribe(&url).await.unwrap_err();
    assert_eq!(err.code().as_u16(), 403);
    assert!(err.to_string().contains("not in this room"), "{err}");

    let mut obs = bob.syncher().subscribe(&url).await.unwrap();
    assert_eq!(obs.data(), json!({"topic": "lunch", "members": ["alice"]}));
    assert_eq!(
        reporter.observers().await.unwrap(),
        vec![bob.url().address().clone()]
    );

    assert_eq!(reporter.set("topic", "dinner").await.unwrap(), 1);
    assert_eq!(reporter.push("members", "bob").await.unwrap(), 2);
    assert_eq!(reporter.insert("members.0", "zoe").await.unwrap(), 3);
    assert_eq!(reporter.remove("members.0", 1).await.unwrap(), 4);
    assert_eq!(reporter.set("place.city", "Lisbon").await.unwrap(), 5);
    assert_eq!(reporter.delete("place").await.unwrap(), 6);
    let child = obs.add_child(json!({"text": "hi"})).await.unwrap();
    assert_eq!(obs.update_child(&child, "text", "hello").await.unwrap(), 8);

    let mut versions = Vec::new();
    for _ in 0..8 {
        let c = next_change(&mut obs).await;
        versions.push(c.version);
        if c.version == 1 {
            assert_eq!(c.source, *alice.url().address());
            assert!(
                matches!(&c.op, Op::Set { attribute, value } if attribute.as_str() == "topic" && value == "dinner")
            );
        }
    }
    assert_eq!(
        versions,
        (1..=8).collect::<Vec<_>>(),
        "every change, in order"
    );
    let snap = obs.snapshot();
    assert_eq!(snap, reporter.snapshot());
    assert_eq!(
        snap.data,
        json!({"topic": "dinner", "members": ["alice", "bob"]})
    );
    assert_eq!(snap.children[&child].data, json!({"text": "hello"}));
    assert_eq!(snap.children[&child].reporter, *bob.url().address());

    // typed reading
    #[derive(serde::Deserialize)]
    struct Room {
        topic: String,
        members: Vec<String>,
    }
    let room: Room = obs.data_as().unwrap();
    assert_eq!((room.topic.as_str(), room.members.len()), ("dinner", 2));

    // bad input changes nothing
    let before = reporter.snapshot();
    let e = reporter.set("a..b", 1).await.unwrap_err();
    assert_eq!(e.code().as_u16(), 400, "{e}");
    assert!(e.to_string().contains("malformed attribute path"), "{e}");
    let e = reporter.remove("members.5", 1).await.unwrap_err();
    assert_eq!(e.code().as_u16(), 400, "{e}");
    let r = raw(
        &bob,
        MessageType::Update,
        json!({"resource": url.as_str(), "attribute": "topic", "value": "x"}),
    )
    .await;
    assert_eq!(
        code(&r),
        403,
        "an observer does not update: {}",
        r.to_json()
    );
    assert!(r
        .body
        .description_text()
        .unwrap()
        .contains("only the reporter"));
    let r = raw(
        &alice,
        MessageType::Update,
        json!({"resource": url.as_str(), "attribute": "topic", "value": "x", "version": 2}),
    )
    .await;
    assert_eq!(code(&r), 400, "{}", r.to_json());
    assert!(r
        .body
        .description_text()
        .unwrap()
        .contains("stale version 2"));
    let r = raw(
        &alice,
        MessageType::Update,
        json!({"resource": "comm://sync.test/nothing", "attribute": "a", "value": 1}),
    )
    .await;
    assert_eq!(code(&r), 404, "{}", r.to_json());
    let r = raw(&alice, MessageType::Read, json!({})).await;
    assert_eq!(code(&r), 400);
    let r = raw(&carol, MessageType::Read, json!({"resource": url.as_str()})).await;
    assert_eq!(code(&r), 403, "a rejected observer reads nothing");
    assert_eq!(reporter.snapshot(), before);
    assert!(obs.try_next().is_none(), "nothing was published");

    // unsubscribe: nothing more arrives
    obs.unsubscribe().await.unwrap();
    reporter.set("topic", "breakfast").await.unwrap();
    assert!(reporter.observers().await.unwrap().is_empty());
    let r = raw(&bob, MessageType::Read, json!({"resource": url.as_str()})).await;
    assert_eq!(code(&r), 403);

    // delete: observers are told
    let mut obs = bob.syncher().subscribe(&url).await.unwrap();
    reporter.delete_object().await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, obs.next()).await.unwrap() {
            Some(SyncEvent::Deleted) => break,
            Some(_) => continue,
            None => panic!("stream ended before Deleted"),
        }
    }
    let r = raw(&alice, MessageType::Read, json!({"resource": url.as_str()})).await;
    assert!(matches!(code(&r), 404 | 403 | 500), "{}", r.to_json());
    rt.shutdown().await;
}

#[actix::test]
async fn schemas_refuse_invalid_creates_and_updates() {
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    rt.register_schema(
        "Reading",
        json!({
            "type": "object",
            "properties": {
                "scheme": {"constant": "context"},
                "unit": {"enum": ["C", "F"]},
                "values": {"type": "array", "items": {"type": "number"}}
            },
            "required": ["unit", "values"]
        }),
    )
    .await
    .unwrap();
    let (dev, _) = inbox_hyperty(&rt, D, None).await;
    let s = dev.syncher();
    let e = s
        .create(
            ObjectSpec::new("t", "x")
                .with_schema(json!("Reading"))
                .with_data(json!({"unit": "K", "values": []})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().as_u16(), 400);
    assert!(e.to_string().contains("schema violation"), "{e}");
    let e = s
        .create(ObjectSpec::new("t", "x").with_schema(json!({"type": 12})))
        .await
        .unwrap_err();
    assert_eq!(e.code().as_u16(), 400);
    assert!(e.to_string().contains("invalid JSON Schema"), "{e}");

    let r = s
        .create(
            ObjectSpec::new("t", "x")
                .with_schema(json!("Reading"))
                .with_data(json!({"unit": "C", "values": [20.5]})),
        )
        .await
        .unwrap();
    assert_eq!(r.url().scheme(), "context", "the schema's scheme wins");
    let e = r.push("values", "warm").await.unwrap_err();
    assert_eq!(e.code().as_u16(), 400);
    assert!(e.to_string().contains("schema violation"), "{e}");
    let e = r.delete("unit").await.unwrap_err();
    assert_eq!(e.code().as_u16(), 400, "{e}");
    assert_eq!(r.version(), 0, "nothing applied");
    assert_eq!(r.push("values", 21.0).await.unwrap(), 1);
    assert_eq!(r.data(), json!({"unit": "C", "values": [20.5, 21.0]}));
    rt.shutdown().await;
}

async fn attached(url: &str) -> RuntimeHandle {
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    rt.attach_node(BridgeConfig::new(url)).await.unwrap();
    rt
}

#[actix::test]
async fn invite_observe_and_delete_across_the_node() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let node = start_node(D, |_| {});
    let (a, b) = (
        attached(&node.ws_url()).await,
        attached(&node.ws_url()).await,
    );
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let (bob, mut bob_inbox) = inbox_hyperty(&b, D, None).await;

    let mut reporter = alice
        .syncher()
        .create(
            ObjectSpec::new("chat", "comm")
                .with_resources(&["chat"])
                .with_data(json!({"messages": []}))
                .invite([bob.url().address().clone()]),
        )
        .await
        .unwrap();
    let url = reporter.url().clone();

    // Bob's hyperty is invited, acknowledges and subscribes
    let invite = tokio::time::timeout(TIMEOUT, bob_inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let inv = Invitation::from_message(&invite).expect("an invitation");
    assert_eq!(inv.object, url);
    assert_eq!(inv.reporter.as_ref(), Some(alice.url().address()));
    bob.reply(&invite, ResponseCode::Ok, Value::Null);
    let answered = loop {
        match tokio::time::timeout(TIMEOUT, reporter.next())
            .await
            .unwrap()
            .unwrap()
        {
            SyncEvent::InvitationAnswered { invitee, code } => break (invitee, code),
            _ => continue,
        }
    };
    assert_eq!(answered, (bob.url().address().clone(), 200));
    let mut obs = bob.syncher().subscribe(&url).await.unwrap();
    assert_eq!(obs.reporter(), *alice.url().address());

    // discovery through the domain registry
    let found = bob
        .syncher()
        .discover(&["comm"], &["chat"], None)
        .await
        .unwrap();
    assert!(
        found
            .iter()
            .any(|f| f.url == url.as_str() && f.reporter == alice.url().as_str()),
        "{found:?}"
    );
    assert!(bob
        .syncher()
        .discover(&["connection"], &[], None)
        .await
        .unwrap()
        .is_empty());

    for i in 0..20 {
        reporter.push("messages", json!({"n": i})).await.unwrap();
    }
    let child = obs.add_child(json!({"from": "bob"})).await.unwrap();
    let mut last = 0;
    while last < 21 {
        let c = next_change(&mut obs).await;
        assert_eq!(c.version, last + 1, "in order");
        last = c.version;
    }
    assert_eq!(obs.snapshot(), reporter.snapshot());
    assert_eq!(
        obs.snapshot().children[&child].reporter,
        *bob.url().address()
    );
    let r = raw(
        &bob,
        MessageType::Update,
        json!({"resource": url.as_str(), "attribute": "messages", "value": []}),
    )
    .await;
    assert_eq!(code(&r), 403, "{}", r.to_json());

    reporter.delete_object().await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, obs.next()).await.unwrap() {
            Some(SyncEvent::Deleted) => break,
            Some(_) => continue,
            None => panic!("stream ended before Deleted"),
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            bob.syncher()
                .discover(&["comm"], &["chat"], None)
                .await
                .unwrap()
                .is_empty()
        })
        .await,
        "the registry entry is gone"
    );
    a.shutdown().await;
    b.shutdown().await;
    node.stop().await;
}

/// Asserts that `eve` (a raw session) was sent nothing before the node's answer to
/// one more request of hers.
async fn heard_nothing(eve: &mut WsClient, url: &Address) {
    let r = eve
        .request(
            json!({"type": "unsubscribe", "from": format!("runtime://{D}/eve"),
            "to": format!("domain://msg-node.{D}/sm"),
            "body": {"resources": [format!("{url}/nothing")]}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let heard = eve.recv(Duration::ZERO).await;
    assert!(heard.is_none(), "eve heard {heard:?}");
}

/// The node lets only a reporter's accepted observers hear its object: a session
/// that subscribes at the node's `/sm` to the object's channels without being
/// accepted (as a runtime-core observer would, before asking) hears nothing, and
/// only the object's holder names who may.
#[actix::test]
async fn only_accepted_observers_hear_an_object_at_the_node() {
    let node = start_node(D, |_| {});
    let (a, b) = (
        attached(&node.ws_url()).await,
        attached(&node.ws_url()).await,
    );
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let (bob, _) = inbox_hyperty(&b, D, None).await;
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("room", "comm").with_data(json!({"n": 0})))
        .await
        .unwrap();
    let url = reporter.url().clone();
    let mut obs = bob.syncher().subscribe(&url).await.unwrap();

    // eve subscribes straight at the node, and tries to name herself the audience
    let sm = format!("domain://msg-node.{D}/sm");
    let mut eve = WsClient::connect(&node.ws_url()).await;
    eve.open(&format!("runtime://{D}/eve")).await;
    let channels = [format!("{url}/changes"), format!("{url}/children/")];
    let r = eve
        .request(
            json!({"type": "subscribe", "from": format!("runtime://{D}/eve"), "to": sm,
            "body": {"resources": channels}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let r = eve
        .request(json!({"type": "update", "from": format!("runtime://{D}/eve"), "to": sm,
            "body": {"resource": url.as_str(), "value": {"audience": [format!("runtime://{D}/eve")]}}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let r = eve
        .request(
            json!({"type": "update", "from": format!("runtime://{D}/eve"), "to": sm,
            "body": {"resource": url.as_str(), "value": {"audience": "everyone"}}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 400, "{r}");

    // the accepted observer hears every change and child; eve nothing
    for n in 1..=3 {
        reporter.set("n", n).await.unwrap();
    }
    reporter.add_child(json!({"note": "hi"})).await.unwrap();
    while obs.version() < 4 {
        next_change(&mut obs).await;
    }
    assert_eq!(obs.data()["n"], 3);
    // the node wrote every copy of those frames before it answered bob's runtime's
    // last read of them, so one more answer to eve shows what she was sent
    heard_nothing(&mut eve, &url).await;

    // an observer that leaves is parked again at the node
    obs.unsubscribe().await.unwrap();
    let (carol, _) = inbox_hyperty(&b, D, None).await;
    let mut carols = carol.syncher().subscribe(&url).await.unwrap();
    reporter.set("n", 4).await.unwrap();
    assert_eq!(next_change(&mut carols).await.version, 5);
    heard_nothing(&mut eve, &url).await;
    a.shutdown().await;
    b.shutdown().await;
    node.stop().await;
}
