//! Actor tests with typed messages, and a property test of the request path.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::{Actor, Addr, Context, Handler, Recipient};
use hyperty_actors::message::{Message, MessageType, ResponseCode};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::core::Core;
use super::*;

const D: &str = "d.org";
const REGISTRY: &str = "domain://registry.d.org";
const RT: &str = "runtime://d.org/rt1";
const ALICE: &str = "user://idp.org/alice";
const WAIT: Duration = Duration::from_secs(5);

/// The manual clock's start, in milliseconds since the epoch.
const START_MS: u64 = 1_700_000_000_000;

fn start_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(START_MS)
}

struct Collector(mpsc::UnboundedSender<Message>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<RegistryNotification> for Collector {
    type Result = ();
    fn handle(&mut self, RegistryNotification(m): RegistryNotification, _: &mut Context<Self>) {
        let _ = self.0.send(m);
    }
}

struct Fixture {
    registry: Addr<DomainRegistry>,
    clock: ManualClock,
    notes: mpsc::UnboundedReceiver<Message>,
    next_id: u64,
    caller: Caller,
}

/// The anonymous session of `RT`, owning every address (the rules of who may
/// write are tested with other callers).
fn runtime_caller() -> Caller {
    Caller {
        identity: None,
        runtime: Some(Arc::from(RT)),
        owns: Arc::new(|_: &str| true),
    }
}

/// An authenticated session owning every address.
fn user_caller(identity: &str) -> Caller {
    Caller {
        identity: Some(Arc::from(identity)),
        runtime: Some(Arc::from(RT)),
        owns: Arc::new(|_: &str| true),
    }
}

fn collector() -> (
    Recipient<RegistryNotification>,
    mpsc::UnboundedReceiver<Message>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collector(tx).start().recipient(), rx)
}

fn fixture_with(config: DomainRegistryConfig) -> Fixture {
    let clock = ManualClock::new(START_MS);
    let (recipient, notes) = collector();
    let registry = DomainRegistry::new(D, config, recipient, Arc::new(clock.clone()))
        .expect("valid registry")
        .start();
    Fixture {
        registry,
        clock,
        notes,
        next_id: 0,
        caller: runtime_caller(),
    }
}

fn fixture() -> Fixture {
    fixture_with(DomainRegistryConfig::default())
}

fn request(id: u64, kind: &str, body: Value) -> Message {
    Message::from_value(json!({
        "id": id, "type": kind, "from": "runtime://d.org/rt1/registry",
        "to": REGISTRY, "body": body,
    }))
    .expect("valid request")
}

fn hyperty(n: u32, user: &str, runtime: &str, resources: &[&str]) -> Value {
    json!({"value": {
        "url": format!("hyperty://d.org/h{n}"), "user": user,
        "descriptor": "hyperty-catalogue://catalogue.d.org/.well-known/hyperty/Chat",
        "expires": 60, "resources": resources, "dataSchemes": ["comm"],
        "runtime": runtime, "status": "live", "guid": "user-guid://alice-guid",
        "p2pRequester": "hyperty-catalogue://catalogue.d.org/.well-known/protocolstub/p2p",
    }, "policy": "policy"})
}

fn data_object(n: u32, name: &str, reporter: &str) -> Value {
    json!({"value": {
        "url": format!("comm://d.org/o{n}"), "name": name,
        "schema": "hyperty-catalogue://catalogue.d.org/.well-known/dataschema/Communication",
        "reporter": reporter, "expires": 60, "dataSchemes": ["comm"], "resources": ["chat"],
        "runtime": RT, "status": "live",
    }})
}

impl Fixture {
    async fn send(&mut self, kind: &str, body: Value) -> Message {
        self.next_id += 1;
        let req = request(self.next_id, kind, body);
        let resp = self
            .registry
            .send(RegistryRequest {
                msg: req.clone(),
                caller: self.caller.clone(),
            })
            .await
            .expect("registry alive");
        assert_eq!(resp.id, req.id);
        assert_eq!(resp.kind, MessageType::Response);
        assert_eq!(resp.from.as_str(), REGISTRY);
        assert_eq!(resp.to.first(), &req.from);
        resp
    }

    async fn code(&mut self, kind: &str, body: Value) -> u16 {
        self.send(kind, body)
            .await
            .code()
            .map_or(0, ResponseCode::as_u16)
    }

    async fn note(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.notes.recv())
            .await
            .expect("a notification in time")
            .expect("collector alive")
    }

    /// Asserts a status notification for `url` and returns its id.
    async fn expect_note(&mut self, url: &str, status: &str) -> u64 {
        let n = self.note().await;
        assert_eq!(n.kind, MessageType::Update);
        assert_eq!(n.from.as_str(), REGISTRY);
        assert_eq!(n.to.first().as_str(), format!("{url}/registration"));
        assert_eq!(n.body.value, Some(json!(status)));
        assert_eq!(n.body.extra.get("attribute"), Some(&json!("status")));
        assert!(n.id > 0);
        n.id
    }

    /// Asserts that no notification is waiting (everything the registry sends is
    /// queued before its reply, so a round trip flushes it).
    async fn no_note(&mut self) {
        let _ = self.registry.send(GetStats).await;
        let _ = self
            .notes
            .try_recv()
            .map(|n| panic!("unexpected notification {n}"));
    }
}

#[actix::test]
async fn create_then_read_by_user_returns_objects() {
    let mut f = fixture();
    assert_eq!(
        f.code("create", hyperty(1, ALICE, RT, &["chat"])).await,
        200
    );
    f.expect_note("hyperty://d.org/h1", "live").await;
    let resp = f.send("read", json!({"resource": ALICE})).await;
    assert_eq!(resp.code(), Some(ResponseCode::Ok));
    let value = resp.body.value.expect("value");
    let h = &value["hyperty://d.org/h1"];
    assert!(
        h.is_object(),
        "value must be an object, not a string: {value}"
    );
    assert_eq!(h["hypertyID"], "hyperty://d.org/h1");
    assert_eq!(h["userID"], ALICE);
    assert_eq!(h["status"], "live");
    assert_eq!(h["expires"], 60);
    assert_eq!(h["resources"], json!(["chat"]));
    assert_eq!(h["dataSchemes"], json!(["comm"]));
    assert_eq!(h["runtime"], RT);
    assert_eq!(h["guid"], "user-guid://alice-guid");
    assert_eq!(h["startingTime"], rfc3339(start_time()));
    assert_eq!(h["lastModified"], rfc3339(start_time()));
}

#[actix::test]
async fn read_by_user_with_criteria_filters() {
    let mut f = fixture();
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await;
    f.code("create", hyperty(2, ALICE, RT, &["chat", "audio", "video"]))
        .await;
    let read = json!({"resource": format!("/hyperty/user/{ALICE}"),
                      "criteria": {"resources": ["audio"], "dataSchemes": ["comm"]}});
    let value = f.send("read", read).await.body.value.expect("value");
    let keys: Vec<_> = value.as_object().expect("object").keys().cloned().collect();
    assert_eq!(keys, vec!["hyperty://d.org/h2".to_owned()]);
    let none = json!({"resource": ALICE, "criteria": {"resources": ["file"]}});
    assert_eq!(f.code("read", none).await, 404);
    // by guid and by e-mail
    assert_eq!(
        f.code("read", json!({"resource": "user-guid://alice-guid"}))
            .await,
        200
    );
    assert_eq!(
        f.code(
            "read",
            json!({"resource": "/hyperty/idp-identifier/alice@idp.org"})
        )
        .await,
        200
    );
    let typed = f
        .registry
        .send(GetUserHyperties {
            user: ALICE.into(),
            criteria: Criteria {
                resources: vec!["video".into()],
                data_schemes: vec![],
            },
        })
        .await
        .expect("alive")
        .expect("found");
    assert_eq!(typed.len(), 1);
}

#[actix::test]
async fn read_by_hyperty_url_returns_the_instance() {
    let mut f = fixture();
    f.code("create", hyperty(7, ALICE, RT, &["chat"])).await;
    for resource in [
        "hyperty://d.org/h7",
        "/hyperty/hyperty://d.org/h7",
        "/hyperty/url/hyperty://d.org/h7",
    ] {
        let resp = f.send("read", json!({ "resource": resource })).await;
        assert_eq!(resp.code(), Some(ResponseCode::Ok), "{resource}");
        let v = resp.body.value.expect("value");
        assert_eq!(v["hypertyID"], "hyperty://d.org/h7");
        assert_eq!(
            v["descriptor"],
            "hyperty-catalogue://catalogue.d.org/.well-known/hyperty/Chat"
        );
    }
}

#[actix::test]
async fn data_objects_by_url_name_and_reporter() {
    let mut f = fixture();
    let reporter = "hyperty://d.org/h1";
    assert_eq!(
        f.code("create", data_object(1, "room", reporter)).await,
        200
    );
    f.expect_note("comm://d.org/o1", "live").await;
    f.code("create", data_object(2, "room", reporter)).await;
    f.code("create", data_object(3, "other", "hyperty://d.org/h2"))
        .await;
    let one = f
        .send("read", json!({"resource": "comm://d.org/o1"}))
        .await
        .body
        .value
        .expect("value");
    assert_eq!(one["url"], "comm://d.org/o1");
    assert_eq!(one["name"], "room");
    assert_eq!(one["reporter"], reporter);
    let named = f.send("read", json!({"resource": "room"})).await;
    assert_eq!(
        named
            .body
            .value
            .expect("value")
            .as_object()
            .map(|o| o.len()),
        Some(2)
    );
    let reported = f
        .send(
            "read",
            json!({"resource": "x", "criteria": {"reporter": reporter}}),
        )
        .await;
    assert_eq!(
        reported
            .body
            .value
            .expect("value")
            .as_object()
            .map(|o| o.len()),
        Some(2)
    );
    let typed = f
        .registry
        .send(GetDataObject {
            url: "comm://d.org/o3".into(),
        })
        .await
        .expect("alive")
        .expect("found");
    assert_eq!(typed.name, "other");
    assert_eq!(
        f.registry
            .send(GetDataObject {
                url: "hyperty://d.org/h1".into()
            })
            .await
            .expect("alive"),
        Err(DomainRegistryError::NotFound)
    );
}

#[actix::test]
async fn unknown_entries_answer_404() {
    let mut f = fixture();
    for body in [
        json!({"resource": ALICE}),
        json!({"resource": "hyperty://d.org/none"}),
        json!({"resource": "comm://d.org/none"}),
        json!({"resource": "no-such-name"}),
        json!({"resource": "user-guid://nobody"}),
    ] {
        let resp = f.send("read", body.clone()).await;
        assert_eq!(resp.code(), Some(ResponseCode::NotFound), "{body}");
        assert_eq!(resp.body.description.as_deref(), Some("Not Found"));
    }
    assert_eq!(
        f.code("update", json!({"resource": "hyperty://d.org/none"}))
            .await,
        404
    );
    assert_eq!(
        f.code(
            "update",
            json!({"resource": "hyperty://d.org/none", "value": {"status": "live", "user": ALICE}})
        )
        .await,
        404,
        "a resume of an unknown entry is 404, so the runtime falls back to create"
    );
    assert_eq!(
        f.code("delete", json!({"resource": "hyperty://d.org/none"}))
            .await,
        404
    );
    assert_eq!(
        f.registry
            .send(GetByUrl {
                url: "hyperty://d.org/none".into()
            })
            .await
            .expect("alive"),
        Err(DomainRegistryError::NotFound)
    );
}

#[actix::test]
async fn all_disconnected_answers_408_with_the_matches() {
    let mut f = fixture();
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await;
    f.code(
        "create",
        hyperty(2, ALICE, "runtime://d.org/rt2", &["chat"]),
    )
    .await;
    f.expect_note("hyperty://d.org/h1", "live").await;
    f.expect_note("hyperty://d.org/h2", "live").await;
    // the spec's unregister form really disconnects
    let unregister = json!({"resource": "/hyperty/hyperty://d.org/h1",
                            "value": "disconnected", "attribute": "status"});
    let resp = f.send("update", unregister).await;
    assert_eq!(resp.body.value.expect("value")["statusChanged"], true);
    f.expect_note("hyperty://d.org/h1", "disconnected").await;
    // one match still live: 200
    assert_eq!(f.code("read", json!({"resource": ALICE})).await, 200);
    let resp = f
        .send("read", json!({"resource": "hyperty://d.org/h1"}))
        .await;
    assert_eq!(resp.code(), Some(ResponseCode::RequestTimeout));
    assert_eq!(
        resp.body.description.as_deref(),
        Some("Temporarily Unavailable")
    );
    assert_eq!(resp.body.value.expect("value")["status"], "disconnected");
    // the other one through a status update
    let resp = f
        .send(
            "update",
            json!({"resource": "hyperty://d.org/h2", "value": {"status": "disconnected"}}),
        )
        .await;
    assert_eq!(
        resp.body.value,
        Some(json!({"statusChanged": true, "status": "disconnected", "message": "Updated"}))
    );
    f.expect_note("hyperty://d.org/h2", "disconnected").await;
    let resp = f.send("read", json!({"resource": ALICE})).await;
    assert_eq!(resp.code(), Some(ResponseCode::RequestTimeout));
    assert_eq!(
        resp.body.value.expect("value").as_object().map(|o| o.len()),
        Some(2)
    );
    // a keep-alive with status live brings one back
    let resp = f
        .send("update", json!({"resource": "hyperty://d.org/h2", "value": {"status": "live"}, "method": "refresh"}))
        .await;
    assert_eq!(resp.body.value.expect("value")["statusChanged"], true);
    f.expect_note("hyperty://d.org/h2", "live").await;
    assert_eq!(f.code("read", json!({"resource": ALICE})).await, 200);
}

#[actix::test]
async fn runtime_disconnect_and_reconnect_flip_its_entries() {
    let mut f = fixture();
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await;
    f.code("create", data_object(1, "room", "hyperty://d.org/h1"))
        .await;
    f.code(
        "create",
        hyperty(2, ALICE, "runtime://d.org/other", &["chat"]),
    )
    .await;
    for _ in 0..3 {
        f.note().await;
    }
    let n = f
        .registry
        .send(RuntimeDisconnected { runtime: RT.into() })
        .await
        .expect("alive");
    assert_eq!(n, 2);
    f.expect_note("comm://d.org/o1", "disconnected").await;
    f.expect_note("hyperty://d.org/h1", "disconnected").await;
    assert_eq!(
        f.code("read", json!({"resource": "hyperty://d.org/h1"}))
            .await,
        408
    );
    assert_eq!(
        f.code("read", json!({"resource": "comm://d.org/o1"})).await,
        408
    );
    assert_eq!(
        f.code("read", json!({"resource": "hyperty://d.org/h2"}))
            .await,
        200
    );
    // a second disconnect changes nothing and notifies nothing
    let again = RuntimeDisconnected { runtime: RT.into() };
    assert_eq!(f.registry.send(again).await.expect("alive"), 0);
    f.no_note().await;
    let n = f
        .registry
        .send(RuntimeReconnected { runtime: RT.into() })
        .await
        .expect("alive");
    assert_eq!(n, 2);
    f.expect_note("comm://d.org/o1", "live").await;
    f.expect_note("hyperty://d.org/h1", "live").await;
    assert_eq!(
        f.code("read", json!({"resource": "hyperty://d.org/h1"}))
            .await,
        200
    );
}

#[actix::test]
async fn keep_alive_extends_the_lifetime_and_expiry_removes_with_a_notification() {
    let mut f = fixture();
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await; // expires 60
    f.expect_note("hyperty://d.org/h1", "live").await;
    f.clock.advance(Duration::from_secs(50));
    let resp = f
        .send("update", json!({"resource": "hyperty://d.org/h1"}))
        .await;
    assert_eq!(
        resp.body.value,
        Some(json!({"statusChanged": false, "status": "live", "message": "Keep alive"}))
    );
    f.no_note().await;
    f.clock.advance(Duration::from_secs(50)); // 100 s after create, 50 after keep-alive
    assert_eq!(f.registry.send(Sweep).await.expect("alive"), 0);
    let v = f
        .send("read", json!({"resource": "hyperty://d.org/h1"}))
        .await
        .body
        .value
        .expect("value");
    assert_eq!(
        v["lastModified"],
        rfc3339(start_time() + Duration::from_secs(50))
    );
    assert_eq!(v["startingTime"], rfc3339(start_time()));
    f.clock.advance(Duration::from_secs(10)); // 60 s after the keep-alive
    assert_eq!(f.registry.send(Sweep).await.expect("alive"), 1);
    f.expect_note("hyperty://d.org/h1", "disconnected").await;
    assert_eq!(f.code("read", json!({"resource": ALICE})).await, 404);
    let stats = f.registry.send(GetStats).await.expect("alive");
    assert_eq!(stats.expired, 1);
    assert_eq!(stats.entries, 0);
}

#[actix::test]
async fn requests_expire_due_entries_first_and_expires_is_capped() {
    let mut f = fixture_with(DomainRegistryConfig {
        max_expires_secs: 100,
        default_expires_secs: 30,
        ..Default::default()
    });
    let mut body = hyperty(1, ALICE, RT, &["chat"]);
    body["value"]["expires"] = json!(1_000_000);
    f.code("create", body).await;
    let mut no_expires = hyperty(2, ALICE, RT, &["chat"]);
    no_expires["value"]
        .as_object_mut()
        .expect("object")
        .remove("expires");
    f.code("create", no_expires).await;
    let v = f
        .send("read", json!({"resource": ALICE}))
        .await
        .body
        .value
        .expect("value");
    assert_eq!(v["hyperty://d.org/h1"]["expires"], 100);
    assert_eq!(v["hyperty://d.org/h2"]["expires"], 30);
    f.clock.advance(Duration::from_secs(30));
    // no sweep: the read itself drops the due entry
    let v = f
        .send("read", json!({"resource": ALICE}))
        .await
        .body
        .value
        .expect("value");
    assert_eq!(v.as_object().map(|o| o.len()), Some(1));
}

#[actix::test]
async fn notification_ids_are_fresh_and_positive() {
    let mut f = fixture();
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await;
    let a = f.expect_note("hyperty://d.org/h1", "live").await;
    f.code(
        "update",
        json!({"resource": "hyperty://d.org/h1", "value": "disconnected", "attribute": "status"}),
    )
    .await;
    let b = f.expect_note("hyperty://d.org/h1", "disconnected").await;
    assert!(b > a);
    // a re-create of a disconnected entry makes it live again
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await;
    let c = f.expect_note("hyperty://d.org/h1", "live").await;
    assert!(c > b);
    // an unchanged status is not notified
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await;
    f.no_note().await;
}

#[actix::test]
async fn delete_forms() {
    let mut f = fixture();
    f.code("create", hyperty(1, ALICE, RT, &["chat"])).await;
    f.code("create", data_object(1, "room", "hyperty://d.org/h1"))
        .await;
    f.note().await;
    f.note().await;
    let wrong_user = json!({"value": {"user": "user://idp.org/bob", "url": "hyperty://d.org/h1"}});
    assert_eq!(f.code("delete", wrong_user).await, 404);
    let right = json!({"value": {"user": ALICE, "url": "hyperty://d.org/h1"}});
    assert_eq!(f.code("delete", right.clone()).await, 200);
    f.expect_note("hyperty://d.org/h1", "disconnected").await;
    assert_eq!(f.code("delete", right).await, 404);
    assert_eq!(
        f.code("delete", json!({"resource": "comm://d.org/o1"}))
            .await,
        200
    );
    f.expect_note("comm://d.org/o1", "disconnected").await;
    assert_eq!(f.registry.send(GetStats).await.expect("alive").entries, 0);
}

#[actix::test]
async fn limits_answer_429_per_caller_not_per_named_user() {
    let mut f = fixture_with(DomainRegistryConfig {
        max_entries_per_user: 2,
        max_entries: 5,
        ..Default::default()
    });
    f.caller = user_caller(ALICE);
    assert_eq!(f.code("create", hyperty(1, ALICE, RT, &[])).await, 200);
    assert_eq!(f.code("create", hyperty(2, ALICE, RT, &[])).await, 200);
    let resp = f.send("create", hyperty(3, ALICE, RT, &[])).await;
    assert_eq!(resp.code(), Some(ResponseCode::TooManyRequests));
    assert!(resp.body.description.expect("description").contains(ALICE));
    // replacing an existing entry is not a new one
    assert_eq!(
        f.code("create", hyperty(2, ALICE, RT, &["chat"])).await,
        200
    );
    // an anonymous runtime naming other users still counts as one caller
    f.caller = runtime_caller();
    for (n, user) in [(3, "user://idp.org/bob"), (4, "user://idp.org/carol")] {
        assert_eq!(f.code("create", hyperty(n, user, RT, &[])).await, 200);
    }
    let resp = f
        .send("create", hyperty(5, "user://idp.org/erin", RT, &[]))
        .await;
    assert_eq!(resp.code(), Some(ResponseCode::TooManyRequests));
    assert!(resp.body.description.expect("description").contains(RT));
    // another identity has its own allowance, up to the total
    f.caller = user_caller("user://idp.org/dave");
    assert_eq!(
        f.code("create", hyperty(5, "user://idp.org/dave", RT, &[]))
            .await,
        200
    );
    let resp = f
        .send("create", hyperty(6, "user://idp.org/dave", RT, &[]))
        .await;
    assert_eq!(resp.code(), Some(ResponseCode::TooManyRequests));
    assert!(resp.body.description.expect("description").contains("full"));
}

#[actix::test]
async fn writes_are_checked_against_the_caller() {
    let mut f = fixture();
    let own = |prefix: &'static str| -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
        Arc::new(move |url: &str| url.starts_with(prefix))
    };
    let alice = Caller {
        identity: Some(Arc::from(ALICE)),
        runtime: Some(Arc::from(RT)),
        owns: own("hyperty://d.org/h1"),
    };
    let bob = Caller {
        identity: Some(Arc::from("user://idp.org/bob")),
        runtime: Some(Arc::from("runtime://d.org/rt2")),
        owns: own("hyperty://d.org/h2"),
    };
    f.caller = alice.clone();
    // not alice's address; not alice's user
    let r = f.send("create", hyperty(2, ALICE, RT, &[])).await;
    assert_eq!(r.code(), Some(ResponseCode::Forbidden));
    assert!(r
        .body
        .description
        .expect("why")
        .contains("hyperty://d.org/h2"));
    let r = f
        .send("create", hyperty(1, "user://idp.org/bob", RT, &[]))
        .await;
    assert_eq!(r.code(), Some(ResponseCode::Forbidden));
    assert_eq!(
        f.code("create", hyperty(1, ALICE, RT, &["chat"])).await,
        200
    );
    f.expect_note("hyperty://d.org/h1", "live").await;
    // a data object needs a reporter alice owns
    assert_eq!(
        f.code("create", data_object(1, "room", "hyperty://d.org/h2"))
            .await,
        403
    );

    // bob can neither overwrite, update, nor delete alice's entry
    f.caller = Caller {
        owns: Arc::new(|_: &str| true),
        ..bob
    };
    let before = f
        .registry
        .send(GetByUrl {
            url: "hyperty://d.org/h1".into(),
        })
        .await
        .expect("alive")
        .expect("entry");
    for (kind, body) in [
        ("create", hyperty(1, "user://idp.org/bob", RT, &[])),
        (
            "update",
            json!({"resource": "hyperty://d.org/h1", "value": {"status": "disconnected"}}),
        ),
        ("update", json!({"resource": "hyperty://d.org/h1"})),
        ("delete", json!({"resource": "hyperty://d.org/h1"})),
        (
            "delete",
            json!({"value": {"user": ALICE, "url": "hyperty://d.org/h1"}}),
        ),
    ] {
        assert_eq!(f.code(kind, body).await, 403, "{kind}");
    }
    let after = f
        .registry
        .send(GetByUrl {
            url: "hyperty://d.org/h1".into(),
        })
        .await
        .expect("alive")
        .expect("entry");
    assert_eq!(after, before);
    f.no_note().await;

    // alice may not hand her entry to bob; she may update and delete it
    f.caller = alice;
    assert_eq!(
        f.code(
            "update",
            json!({"resource": "hyperty://d.org/h1", "value": {"user": "user://idp.org/bob"}})
        )
        .await,
        403
    );
    assert_eq!(
        f.code("update", json!({"resource": "hyperty://d.org/h1"}))
            .await,
        200
    );
    assert_eq!(
        f.code("delete", json!({"resource": "hyperty://d.org/h1"}))
            .await,
        200
    );
}

#[actix::test]
async fn bad_requests_answer_400_naming_the_field() {
    let mut f = fixture();
    let cases = [
        (
            "subscribe",
            json!({"resources": ["x"]}),
            "unsupported message type \"subscribe\"",
        ),
        ("execute", json!({}), "unsupported message type \"execute\""),
        ("create", json!({}), "missing field 'value'"),
        (
            "create",
            json!({"value": {"url": "hyperty://d.org/1", "descriptor": "d"}}),
            "missing field 'value.user'",
        ),
        (
            "create",
            json!({"value": {"url": "comm://d.org/1", "schema": "s", "reporter": "r"}}),
            "missing field 'value.name'",
        ),
        (
            "create",
            json!({"value": {"url": "hyperty://d.org/1", "user": "u", "descriptor": "d", "expires": "soon"}}),
            "'value.expires'",
        ),
        ("read", json!({}), "missing field 'resource'"),
        (
            "update",
            json!({"value": {"status": "live"}}),
            "missing field 'resource'",
        ),
        ("delete", json!({}), "missing field 'resource'"),
    ];
    for (kind, body, text) in cases {
        let resp = f.send(kind, body.clone()).await;
        assert_eq!(resp.code(), Some(ResponseCode::BadRequest), "{kind} {body}");
        let d = resp.body.description.expect("description");
        assert!(d.contains(text), "{kind} {body}: {d}");
    }
}

#[actix::test]
async fn construction_refuses_bad_domains_and_limits() {
    let (recipient, _rx) = collector();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    for domain in ["", "a b", "d.org/x"] {
        assert!(
            matches!(
                DomainRegistry::new(
                    domain,
                    DomainRegistryConfig::default(),
                    recipient.clone(),
                    clock.clone()
                ),
                Err(DomainRegistryError::InvalidConfig(_))
            ),
            "{domain:?}"
        );
    }
    let bad = DomainRegistryConfig {
        max_entries: 0,
        ..Default::default()
    };
    assert!(DomainRegistry::new(D, bad, recipient, clock).is_err());
}

// ---- property test: no input makes the registry panic or break its tables ----

fn arb_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("hyperty://d.org/h1")),
        Just(json!("hyperty://d.org/h2")),
        Just(json!("comm://d.org/o1")),
        Just(json!("user://idp.org/alice")),
        Just(json!("user-guid://g")),
        Just(json!("/hyperty/hyperty://d.org/h1")),
        Just(json!("/hyperty/user/user://idp.org/alice")),
        Just(json!("/hyperty/h1")),
        Just(json!("alice@idp.org")),
        Just(json!("live")),
        Just(json!("disconnected")),
        Just(json!("room")),
        Just(json!(RT)),
        Just(json!("")),
        Just(json!("/")),
        Just(json!("x://")),
        "[ -~]{0,12}".prop_map(Value::String),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        arb_text(),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("url".to_owned()),
                    Just("user".to_owned()),
                    Just("descriptor".to_owned()),
                    Just("expires".to_owned()),
                    Just("resources".to_owned()),
                    Just("dataSchemes".to_owned()),
                    Just("status".to_owned()),
                    Just("runtime".to_owned()),
                    Just("name".to_owned()),
                    Just("schema".to_owned()),
                    Just("reporter".to_owned()),
                    Just("guid".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A mostly well-formed entry, so that creates and updates succeed often.
fn arb_entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("hyperty://d.org/h1"),
            Just("hyperty://d.org/h2"),
            Just("comm://d.org/o1"),
            Just("comm://d.org/o2"),
        ],
        prop_oneof![Just(ALICE), Just("user://idp.org/bob")],
        prop_oneof![Just(RT), Just("runtime://d.org/rt2")],
        prop_oneof![Just("live"), Just("disconnected")],
        1u64..120,
        any::<bool>(),
    )
        .prop_map(|(url, user, runtime, status, expires, guid)| {
            let mut v = json!({
                "url": url, "user": user, "descriptor": "desc", "name": "room",
                "schema": "schema", "reporter": "hyperty://d.org/h1", "runtime": runtime,
                "status": status, "expires": expires, "resources": ["chat"],
                "dataSchemes": ["comm"],
            });
            if guid {
                v["guid"] = json!("user-guid://g");
            }
            v
        })
}

fn arb_resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop_oneof![
            Just(json!("hyperty://d.org/h1")),
            Just(json!("hyperty://d.org/h2")),
            Just(json!("comm://d.org/o1")),
            Just(json!("comm://d.org/o2")),
            Just(json!(ALICE)),
        ],
        1 => arb_text(),
    ]
}

fn arb_body() -> impl Strategy<Value = Value> {
    (
        proptest::option::weighted(
            0.7,
            prop_oneof![
                3 => arb_entry(),
                1 => prop_oneof![Just(json!("live")), Just(json!("disconnected"))],
                1 => arb_value(),
            ],
        ),
        proptest::option::weighted(0.8, arb_resource()),
        proptest::option::weighted(0.2, arb_value()),
        proptest::option::weighted(0.2, prop_oneof![Just(json!("status")), Just(json!("x"))]),
        proptest::option::weighted(0.2, prop_oneof![Just(json!("refresh")), Just(json!(3))]),
    )
        .prop_map(|(value, resource, criteria, attribute, method)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("value", value),
                ("resource", resource),
                ("criteria", criteria),
                ("attribute", attribute),
                ("method", method),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        })
}

fn arb_kind() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("create"),
        Just("create"),
        Just("read"),
        Just("read"),
        Just("update"),
        Just("update"),
        Just("delete"),
        Just("subscribe"),
        Just("response"),
        Just("frobnicate"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_request_gets_a_well_formed_answer(
        steps in prop::collection::vec(
            (arb_kind(), arb_body(), prop_oneof![4 => Just(0u64), 1 => 0u64..100], prop::bool::weighted(0.1)),
            1..40,
        )
    ) {
        let clock = ManualClock::new(START_MS);
        let config = DomainRegistryConfig { max_entries: 3, max_entries_per_user: 1, ..Default::default() };
        let mut core = Core::new(D, config, Arc::new(clock.clone())).expect("valid");
        for (i, (kind, body, advance, disconnect)) in steps.into_iter().enumerate() {
            clock.advance(Duration::from_secs(advance));
            let Ok(req) = Message::from_value(json!({
                "id": i + 1, "type": kind, "from": "runtime://d.org/rt1/registry",
                "to": REGISTRY, "body": body,
            })) else { continue };
            let caller = if i % 3 == 0 { user_caller(ALICE) } else { runtime_caller() };
            let resp = core.handle(&req, &caller);
            prop_assert_eq!(resp.id, req.id);
            prop_assert_eq!(&resp.kind, &MessageType::Response);
            prop_assert_eq!(resp.from.as_str(), REGISTRY);
            let code = resp.code().map(ResponseCode::as_u16);
            prop_assert!(matches!(code, Some(200 | 400 | 403 | 404 | 408 | 429)), "{:?}", code);
            if code != Some(200) {
                prop_assert!(resp.body.description.is_some());
            }
            if let Some(v) = &resp.body.value {
                prop_assert!(v.is_object(), "value must be an object: {}", v);
            }
            // wire text of the answer parses back
            prop_assert!(Message::parse(&resp.to_json()).is_ok());
            if disconnect {
                core.set_runtime_status(RT, Status::Disconnected);
            }
            for n in core.take_notifications() {
                prop_assert!(n.id > 0);
                prop_assert!(n.to.first().as_str().ends_with("/registration"));
            }
            core.check_invariants();
        }
    }
}
