//! The Syncher against runtime-core's own frames (rethink-wire.md §9): a raw
//! WebSocket session through a real node plays a runtime-core runtime — an
//! observer that creates and updates children straight on `<obj>/children/`, a
//! reporter that deletes its object from `<obj>/subscription`, an observer that
//! hears our reporter's delete — against our runtimes.

mod common;

use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use hyperty_actors::syncher::manager::GetSyncStats;
use hyperty_actors::syncher::object::{Change, Op};
use serde_json::{json, Value};

const D: &str = "wire.test";

async fn attached(url: &str) -> RuntimeHandle {
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    rt.attach_node(BridgeConfig::new(url)).await.unwrap();
    rt
}

/// The next change event, skipping subscription notices.
async fn next_change(h: &mut Observer) -> Change {
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

/// A runtime-core runtime on a raw session: its runtime URL and one hyperty,
/// made routable the way runtime-core does it (a `/sm` subscribe with
/// `source:<rt>/address-allocation`).
struct RcRuntime {
    ws: WsClient,
    rt: String,
    hyperty: String,
}

impl RcRuntime {
    async fn open(node: &hyperty::node::NodeHandle, name: &str) -> RcRuntime {
        let rt = format!("runtime://{D}/{name}");
        let hyperty = format!("hyperty://{D}/{name}-{}", uuid::Uuid::new_v4());
        let mut ws = WsClient::connect(&node.ws_url()).await;
        ws.open(&rt).await;
        let r = ws
            .request(
                json!({"type": "subscribe", "from": rt, "to": format!("domain://msg-node.{D}/sm"),
                "body": {"resources": [hyperty], "source": format!("{rt}/address-allocation")}}),
            )
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
        RcRuntime { ws, rt, hyperty }
    }

    fn sm(&self) -> String {
        format!("{}/sm", self.rt)
    }

    /// `/sm` subscribe at the node, from the runtime's SM for `source`.
    async fn node_subscribe(&mut self, resources: &[String]) {
        let r = self
            .ws
            .request(json!({"type": "subscribe", "from": self.sm(),
                "to": format!("domain://msg-node.{D}/sm"),
                "body": {"resources": resources, "source": self.hyperty}}))
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
    }

    /// Observes `obj` as runtime-core's SM does (§9 Subscribe steps 2 and 4):
    /// the reporter's answer.
    async fn observe(&mut self, obj: &Address) -> Value {
        self.node_subscribe(&[format!("{obj}/changes"), format!("{obj}/children/")])
            .await;
        self.ws
            .request(
                json!({"type": "subscribe", "from": self.sm(), "to": format!("{obj}/subscription"),
                "body": {"subscriber": self.hyperty, "identity": {}}}),
            )
            .await
    }

    /// The next frame (not a response) sent `to`, skipping others.
    async fn next_to(&mut self, to: &str, kind: &str) -> Value {
        self.ws
            .recv_matching(|f| f["to"] == to && f["type"] == kind)
            .await
    }

    /// One more answer from the node: every frame it wrote to this session
    /// before is read by then, and none of them may be `unexpected`.
    async fn quiet(&mut self, unexpected: impl Fn(&Value) -> bool) {
        let r = self
            .ws
            .request(json!({"type": "unsubscribe", "from": self.rt,
                "to": format!("domain://msg-node.{D}/sm"),
                "body": {"resources": [format!("{}/nothing", self.rt)]}}))
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
        while let Some(f) = self.ws.recv(Duration::ZERO).await {
            assert!(!unexpected(&f), "unexpected frame {f}");
        }
    }
}

/// A runtime-core observer's children (`create` and `update` straight on
/// `<obj>/children/`, with its own child id) reach the reporter's manager and
/// every observer: receivers answer the create 100, the reporter 200 with the
/// version it gave it, and the child is in the reporter's object and in every
/// replica. A sender that neither reports nor observes gets 403 and nothing is
/// applied anywhere.
#[actix::test]
async fn runtime_core_children_reach_the_reporter_and_every_observer() {
    let node = start_node(D, |_| {});
    let (a, b) = (
        attached(&node.ws_url()).await,
        attached(&node.ws_url()).await,
    );
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let (bob, _) = inbox_hyperty(&b, D, None).await;
    let mut reporter = alice
        .syncher()
        .create(ObjectSpec::new("call", "connection").with_data(json!({"status": "ringing"})))
        .await
        .unwrap();
    let url = reporter.url().clone();
    let children = format!("{url}/children/");
    let mut obs = bob.syncher().subscribe(&url).await.unwrap();

    let mut carol = RcRuntime::open(&node, "carol").await;
    let accepted = carol.observe(&url).await;
    assert_eq!(accepted["body"]["code"], 200, "{accepted}");
    assert_eq!(accepted["body"]["value"]["data"]["status"], "ringing");

    // §9 Children: create, exactly as runtime-core sends it
    let child = "1764680000000-carol#1";
    let id = carol.ws.id();
    carol
        .ws
        .send(
            json!({"id": id, "type": "create", "from": carol.hyperty, "to": children,
            "body": {"resource": child, "identity": {},
                "value": {"url": child, "parent": url.as_str(), "reporter": carol.hyperty,
                    "data": {"candidate": "a=candidate:1"}}}}),
        )
        .await;
    let (mut from_reporter, mut from_bob, mut published, mut done) = (false, false, None, None);
    while done.is_none() || published.is_none() || !from_reporter || !from_bob {
        let f = carol.ws.expect().await;
        if f["type"] == "response" && f["id"] == id {
            match f["body"]["code"].as_u64() {
                Some(100) if f["from"] == children => from_reporter = true,
                Some(100) if f["from"] == format!("{}/sm", b.url()) => from_bob = true,
                Some(200) => done = Some(f),
                _ => panic!("unexpected answer {f}"),
            }
        } else if f["type"] == "create" && f["from"] == url.as_str() {
            published = Some(f);
        }
    }
    let done = done.unwrap();
    assert_eq!(done["from"], children, "{done}");
    assert_eq!(done["body"]["resource"], child, "{done}");
    assert_eq!(done["body"]["value"]["version"], 1, "{done}");
    // carol's replica hears the reporter's sequenced create
    let published = published.unwrap();
    assert_eq!(published["to"], children);
    assert_eq!(published["body"]["resource"], child);
    assert_eq!(published["body"]["version"], 1);
    assert_eq!(published["body"]["source"], carol.hyperty);
    assert_eq!(
        published["body"]["value"]["data"]["candidate"],
        "a=candidate:1"
    );
    assert_eq!(published["body"]["value"]["parent"], url.as_str());
    // bob's replica and the reporter's object have it, at version 1
    let c = next_change(&mut obs).await;
    assert_eq!((c.version, c.child.as_deref()), (1, Some(child)));
    assert!(matches!(c.op, Op::CreateChild { .. }));
    let snap = obs.snapshot();
    assert_eq!(
        snap.children[child].data,
        json!({"candidate": "a=candidate:1"})
    );
    assert_eq!(snap.children[child].reporter.as_str(), carol.hyperty);
    assert_eq!(reporter.snapshot(), snap);

    // §9 child update: as Update, on `<obj>/children/`, with body.resource
    let id = carol.ws.id();
    carol
        .ws
        .send(
            json!({"id": id, "type": "update", "from": carol.hyperty, "to": children,
            "body": {"resource": child, "version": 1, "source": carol.hyperty,
                "attribute": "candidate", "value": "a=candidate:2", "lastModified": 1}}),
        )
        .await;
    let up = carol
        .ws
        .recv_matching(|f| f["type"] == "update" && f["from"] == url.as_str())
        .await;
    assert_eq!(
        (
            up["to"].as_str(),
            &up["body"]["resource"],
            &up["body"]["version"]
        ),
        (Some(children.as_str()), &json!(child), &json!(2))
    );
    let c = next_change(&mut obs).await;
    assert_eq!((c.version, c.child.as_deref()), (2, Some(child)));
    assert_eq!(
        obs.snapshot().children[child].data["candidate"],
        "a=candidate:2"
    );
    assert_eq!(reporter.snapshot(), obs.snapshot());

    // eve neither reports nor observes: 403, nothing applied
    let mut eve = RcRuntime::open(&node, "eve").await;
    let r = eve
        .ws
        .request(
            json!({"type": "create", "from": eve.hyperty, "to": children,
            "body": {"resource": "1764680000001-eve#1",
                "value": {"url": "1764680000001-eve#1", "parent": url.as_str(),
                    "reporter": eve.hyperty, "data": {"candidate": "evil"}}}}),
        )
        .await;
    let r = match r["body"]["code"].as_u64() {
        // bob's manager heard it first and answered as every receiver does
        Some(100) => {
            eve.ws
                .recv_matching(|f| {
                    f["type"] == "response" && f["body"]["code"].as_u64().unwrap_or(0) >= 200
                })
                .await
        }
        _ => r,
    };
    assert_eq!(r["body"]["code"], 403, "{r}");
    assert_eq!(r["from"], children, "the reporter refused it: {r}");
    let id = eve.ws.id();
    eve.ws
        .send(
            json!({"id": id, "type": "update", "from": eve.hyperty, "to": children,
            "body": {"resource": child, "attribute": "candidate", "value": "evil"}}),
        )
        .await;
    let r = eve
        .ws
        .recv_matching(|f| f["type"] == "response" && f["body"]["code"] == 403)
        .await;
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("neither reports nor observes"),
        "{r}"
    );
    // the reporter's next change is version 3: nothing of eve's came between
    assert_eq!(reporter.set("status", "connected").await.unwrap(), 3);
    assert_eq!(next_change(&mut obs).await.version, 3);
    assert_eq!(obs.snapshot().children.len(), 1);
    assert_eq!(
        obs.snapshot().children[child].data["candidate"],
        "a=candidate:2"
    );
    assert_eq!(reporter.snapshot(), obs.snapshot());
    let up = carol.next_to(&format!("{url}/changes"), "update").await;
    assert_eq!(up["body"]["version"], 3);
    carol
        .quiet(|f| f["from"] == url.as_str() && f["body"]["version"].as_u64() != Some(3))
        .await;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::ZERO, reporter.next()).await {
        assert!(!matches!(ev, SyncEvent::Changed(c) if c.version > 3));
    }
    a.shutdown().await;
    b.shutdown().await;
    node.stop().await;
}

/// A runtime-core reporter deletes its object (§9 Delete: `delete` from
/// `<obj>/subscription` to `<obj>/changes`): our observer's manager answers
/// `{code:200, source:<its runtime>}`, the observer is told and the replica is
/// dropped.
#[actix::test]
async fn a_runtime_core_reporter_deletes_and_our_observer_answers() {
    let node = start_node(D, |_| {});
    let b = attached(&node.ws_url()).await;
    let (bob, _) = inbox_hyperty(&b, D, None).await;

    let mut rep = RcRuntime::open(&node, "rep").await;
    let obj: Address = format!("comm://{D}/{}", uuid::Uuid::new_v4())
        .parse()
        .unwrap();
    let r = rep
        .ws
        .request(json!({"type": "create", "from": rep.rt,
            "to": format!("domain://msg-node.{D}/address-allocation"),
            "body": {"value": {"reclaim": [obj.as_str()]}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    // §9 Create step 2
    rep.node_subscribe(&[obj.to_string(), format!("{obj}/subscription")])
        .await;
    rep.node_subscribe(&[format!("{obj}/children/")]).await;

    let subscription = format!("{obj}/subscription");
    let rep_hyperty = rep.hyperty.clone();
    let answer = async {
        // §9 Subscribe step 4, and the reporter's accept (step 6)
        let ask = rep.next_to(&subscription, "subscribe").await;
        assert_eq!(ask["from"], format!("{}/sm", b.url()), "{ask}");
        assert_eq!(ask["body"]["subscriber"], bob.url().as_str(), "{ask}");
        rep.ws
            .send(json!({"id": ask["id"], "type": "response", "from": subscription, "to": ask["from"],
                "body": {"code": 200, "schema": "hyperty-catalogue://catalogue.wire.test/.well-known/dataschema/Communication",
                    "value": {"url": obj.as_str(), "name": "chat", "reporter": rep_hyperty,
                        "status": "live", "data": {"topic": "lunch"}, "version": 0}}}))
            .await;
    };
    let syncher = bob.syncher();
    let (subscribed, ()) = tokio::join!(syncher.subscribe(&obj), answer);
    let mut obs = subscribed.expect("subscribed to the runtime-core reporter");
    assert_eq!(obs.data(), json!({"topic": "lunch"}));
    assert_eq!(obs.reporter().as_str(), rep.hyperty);

    let id = rep.ws.id();
    rep.ws
        .send(
            json!({"id": id, "type": "update", "from": obj.as_str(), "to": format!("{obj}/changes"),
            "body": {"version": 1, "source": rep.hyperty, "attribute": "topic", "value": "dinner",
                "lastModified": 1_764_680_000_000u64}}),
        )
        .await;
    assert_eq!(next_change(&mut obs).await.version, 1);
    assert_eq!(obs.data()["topic"], "dinner");

    let r = rep
        .ws
        .request(
            json!({"type": "delete", "from": subscription, "to": format!("{obj}/changes"),
            "body": {"resource": obj.as_str()}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["body"]["source"], b.url().as_str(), "{r}");
    loop {
        match tokio::time::timeout(TIMEOUT, obs.next()).await.unwrap() {
            Some(SyncEvent::Deleted) => break,
            Some(_) => continue,
            None => panic!("stream ended before Deleted"),
        }
    }
    assert!(
        eventually(TIMEOUT, || async {
            b.syncher().send(GetSyncStats).await.unwrap().observed == 0
        })
        .await,
        "the replica is dropped"
    );
    b.shutdown().await;
    node.stop().await;
}

/// Our reporter deletes its object the way runtime-core does: a runtime-core
/// observer hears `delete` from `<obj>/subscription` to `<obj>/changes` and its
/// answer (`{code:200, source}`) reaches the reporter's side without a refusal.
#[actix::test]
async fn our_reporter_deletes_as_runtime_core_does() {
    let node = start_node(D, |_| {});
    let a = attached(&node.ws_url()).await;
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("chat", "comm").with_data(json!({"n": 0})))
        .await
        .unwrap();
    let url = reporter.url().clone();

    let mut obs = RcRuntime::open(&node, "obs").await;
    let r = obs.observe(&url).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["body"]["value"]["version"], 0, "{r}");

    // §9 Update, as our reporter sends it
    reporter.set("n", 1).await.unwrap();
    let up = obs.next_to(&format!("{url}/changes"), "update").await;
    assert_eq!(up["from"], url.as_str());
    let body = &up["body"];
    assert_eq!(
        (&body["version"], &body["attribute"], &body["value"]),
        (&json!(1), &json!("n"), &json!(1))
    );
    assert_eq!(body["source"], alice.url().as_str());
    assert!(body["lastModified"].is_u64(), "{up}");

    reporter.delete_object().await.unwrap();
    let del = obs.next_to(&format!("{url}/changes"), "delete").await;
    assert_eq!(del["from"], format!("{url}/subscription"), "{del}");
    assert_eq!(del["body"]["resource"], url.as_str(), "{del}");
    obs.ws
        .send(
            json!({"id": del["id"], "type": "response", "from": obs.sm(), "to": del["from"],
            "body": {"code": 200, "source": obs.rt}}),
        )
        .await;
    // the node took the answer (a refused frame would be answered here)
    obs.quiet(|f| f["type"] == "response" && f["body"]["code"] != 200)
        .await;
    a.shutdown().await;
    node.stop().await;
}
