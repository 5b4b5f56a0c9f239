//! Policy enforcement (threat T2): the PEP on the runtime bus in every direction,
//! run-time policy changes, policy files, rate limits, identity obligations, and
//! the absence of any path around the PEP.

mod common;

use std::sync::Arc;

use common::*;
use hyperty::prelude::*;
use hyperty::RuntimeError;
use hyperty_actors::error::Rejection;
use hyperty_actors::policy::{utc_ms, Authorise, ManualClock, PEP_NAME};
use hyperty_actors::registry::{Resolve, UnregisterPep};
use serde_json::{json, Value};
use tokio::sync::mpsc;

// ---- helpers ----------------------------------------------------------------

/// A hyperty that hands every delivered message to the test and answers requests
/// with 200 and the `body` it saw.
struct Recorder {
    ctx: HypertyContext,
    tx: mpsc::UnboundedSender<Message>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Recorder {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let _ = self.tx.send(m.clone());
        if m.kind.expects_response() {
            let body = serde_json::to_value(&m.body).unwrap_or_default();
            self.ctx.reply(&m, ResponseCode::Ok, body);
        }
    }
}

async fn recorder(rt: &RuntimeHandle) -> (Address, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let url = rt
        .spawn_hyperty(HypertySpec::new("recorder", "a.org", move |ctx| Recorder {
            ctx,
            tx: tx.clone(),
        }))
        .await
        .unwrap();
    (url.into_address(), rx)
}

/// The next message the recorder got, within the deadline.
async fn next(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("a delivery before the deadline")
        .expect("recorder alive")
}

/// Proves nothing was delivered to the recorder before now: a permitted `read`
/// marker sent afterwards by the same thread must be the next thing it sees
/// (a mailbox keeps the order of one sender).
async fn assert_nothing_before_marker(
    bus: &Bus,
    from: &Address,
    to: &Address,
    rx: &mut mpsc::UnboundedReceiver<Message>,
) {
    let marker =
        Message::new(MessageType::Read, from.clone(), to.clone()).with_value(json!("marker"));
    let r = bus.post(marker).await.expect("the marker is permitted");
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    let m = next(rx).await;
    assert_eq!(
        m.body.value,
        Some(json!("marker")),
        "something was delivered before the marker: {m}"
    );
}

fn policy(v: Value) -> PolicySet {
    PolicySet::from_value(v).unwrap()
}

fn deny(id: &str, target: Value) -> PolicySet {
    policy(
        json!({"id": id, "rules": [{"id": format!("{id}-rule"), "effect": "deny", "target": target}]}),
    )
}

fn config_with(domain: &str, policy: PolicyConfig) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(domain);
    c.policy = Some(policy);
    c
}

/// A runtime with an empty policy (default: permit) and its PDP, installed.
async fn runtime(domain: &str) -> (RuntimeHandle, PdpHandle) {
    runtime_with(domain, PolicyConfig::default()).await
}

async fn runtime_with(domain: &str, policy: PolicyConfig) -> (RuntimeHandle, PdpHandle) {
    let rt = Runtime::start(config_with(domain, policy)).unwrap();
    let pdp = rt.pdp().expect("a PDP").clone();
    pdp.installed().await.unwrap();
    (rt, pdp)
}

fn assert_blocked(r: Result<Message, BusError>) {
    match r {
        Err(BusError::Rejected(rej)) => assert_eq!(rej, Rejection::blocked_by_policy()),
        other => panic!("expected 403 Blocked by policy, got {other:?}"),
    }
}

/// Trusts identities whose `assertion` is `"valid"`; the IdP domain is `idp`.
struct TestVerifier;

impl AssertionVerifier for TestVerifier {
    fn verify(&self, id: &Value, _sender_domain: &str) -> Result<VerifiedIdentity, String> {
        if id["assertion"] != "valid" {
            return Err("bad signature".to_owned());
        }
        Ok(VerifiedIdentity {
            user: id["userProfile"]["userURL"]
                .as_str()
                .ok_or("no userURL")?
                .to_owned(),
            domain: id["idp"].as_str().ok_or("no idp")?.to_owned(),
        })
    }
}

fn identity(user: &str, idp: &str) -> Value {
    json!({"userProfile": {"userURL": user}, "idp": idp, "assertion": "valid"})
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("hyperty-policy-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

// ---- deny on the bus, in all three directions ------------------------------------

#[actix::test]
async fn a_deny_rule_blocks_a_local_message_with_403_and_delivers_nothing() {
    let (rt, pdp) = runtime("a.org").await;
    let (target, mut rx) = recorder(&rt).await;
    pdp.add_policies(vec![deny("no-deletes", json!({"types": ["delete"]}))])
        .await
        .unwrap();
    let me = rt.url().component("app");

    // a waiting poster gets the rejection
    assert_blocked(
        rt.bus()
            .post(Message::new(
                MessageType::Delete,
                me.clone(),
                target.clone(),
            ))
            .await,
    );
    // a fire-and-forget request gets the reTHINK 403 response on its listener
    let (rec, mut probe) = Probe::start();
    let sender = rt.url().component("sender");
    rt.bus()
        .add_listener(sender.clone(), rec, None)
        .await
        .unwrap();
    let id = rt.bus().send(Message::new(
        MessageType::Delete,
        sender.clone(),
        target.clone(),
    ));
    let resp = probe.recv(TIMEOUT).await.expect("a 403 response");
    assert_eq!(resp.kind, MessageType::Response);
    assert_eq!(resp.id, id);
    assert_eq!(resp.from, target, "from: the original recipient");
    assert_eq!(resp.to, To::One(sender.clone()), "to: the original sender");
    let wire: Value = serde_json::from_str(&resp.to_json()).unwrap();
    assert_eq!(
        wire["body"],
        json!({"code": 403, "description": "Blocked by policy"})
    );
    assert_nothing_before_marker(rt.bus(), &me, &target, &mut rx).await;
    assert_eq!(rt.bus().stats().rejected, 2);
}

#[actix::test]
async fn permit_sets_auth_true_and_not_applicable_sets_auth_false() {
    let (rt, pdp) = runtime("a.org").await;
    let (target, mut rx) = recorder(&rt).await;
    let me = rt.url().component("app");
    pdp.add_policies(vec![policy(json!({"id": "p", "rules": [
        {"id": "reads", "effect": "permit", "target": {"types": ["read"]}}]}))])
        .await
        .unwrap();
    // a sender cannot forge `auth`: the PEP always sets it
    let mut forged = Message::new(MessageType::Execute, me.clone(), target.clone());
    forged.body.auth = Some(true);
    rt.bus().post(forged).await.unwrap();
    assert_eq!(next(&mut rx).await.body.auth, Some(false));
    rt.bus()
        .post(Message::new(MessageType::Read, me.clone(), target.clone()))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.body.auth, Some(true));
}

#[actix::test]
async fn default_behaviour_deny_blocks_what_no_policy_permits() {
    let (rt, pdp) = runtime_with(
        "a.org",
        PolicyConfig {
            default_behaviour: Effect::Deny,
            ..PolicyConfig::default()
        },
    )
    .await;
    pdp.add_policies(vec![policy(json!({"id": "p", "rules": [
        {"id": "reads", "effect": "permit", "target": {"types": ["read", "response"]}}]}))])
        .await
        .unwrap();
    let (target, mut rx) = recorder(&rt).await;
    let me = rt.url().component("app");
    assert_blocked(
        rt.bus()
            .post(Message::new(MessageType::Update, me.clone(), target.clone()).with_id(5))
            .await,
    );
    assert_nothing_before_marker(rt.bus(), &me, &target, &mut rx).await;
}

#[actix::test]
async fn a_deny_rule_blocks_an_outgoing_message_before_it_leaves_the_runtime() {
    let nodes = start_domains(&["a.org", "b.org"], |_, _| {});
    let (a, pdp) = runtime("a.org").await;
    let b = Runtime::start(RuntimeConfig::new("b.org")).unwrap();
    attach(&a, &nodes[0]).await;
    attach(&b, &nodes[1]).await;
    let (target, mut rx) = recorder(&b).await;
    pdp.add_policies(vec![policy(json!({"id": "out", "rules": [{
        "id": "no-creates-to-b", "effect": "deny",
        "target": {"directions": ["outgoing"], "to_domains": ["b.org"], "types": ["create"]}}]}))])
        .await
        .unwrap();
    let wa = a.spawn_hyperty(worker("a.org")).await.unwrap();
    let from = wa.address().clone();
    assert_blocked(
        a.bus()
            .post(Message::new(
                MessageType::Create,
                from.clone(),
                target.clone(),
            ))
            .await,
    );
    // the same message is local-only when both ends are local: the rule does not apply
    let local = Message::new(MessageType::Create, from.clone(), from.clone());
    let d = pdp
        .addr()
        .send(Authorise {
            message: local,
            direction: Some(Direction::Local),
        })
        .await
        .unwrap();
    assert_eq!(d.decision.effect, DecisionEffect::NotApplicable);
    // what is permitted crosses to the other domain, and nothing came before it
    assert_nothing_before_marker(a.bus(), &from, &target, &mut rx).await;
    a.shutdown().await;
    b.shutdown().await;
    stop_all(&nodes).await;
}

#[actix::test]
async fn a_deny_rule_blocks_an_incoming_message_and_answers_403_across_domains() {
    let nodes = start_domains(&["a.org", "b.org"], |_, _| {});
    let a = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let (b, pdp) = runtime("b.org").await;
    attach(&a, &nodes[0]).await;
    attach(&b, &nodes[1]).await;
    let (target, mut rx) = recorder(&b).await;
    pdp.add_policies(vec![policy(json!({"id": "in", "rules": [{
        "id": "no-updates-from-a", "effect": "deny",
        "target": {"directions": ["incoming"], "domains": ["a.org"], "types": ["execute"]}}]}))])
        .await
        .unwrap();
    let wa = a.spawn_hyperty(worker("a.org")).await.unwrap();
    let from = wa.address().clone();
    // B's PEP refuses it; B's 403 travels back to A's poster as a response
    let r = a
        .bus()
        .post(Message::new(
            MessageType::Execute,
            from.clone(),
            target.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Forbidden));
    assert_eq!(r.body.description_text(), Some("Blocked by policy"));
    assert_eq!(r.from, target);
    assert_nothing_before_marker(a.bus(), &from, &target, &mut rx).await;
    assert_eq!(b.bus().stats().rejected, 1);
    a.shutdown().await;
    b.shutdown().await;
    stop_all(&nodes).await;
}

// ---- run-time changes ----------------------------------------------------------------

#[actix::test]
async fn add_and_remove_policies_take_effect_on_the_next_message() {
    let (rt, pdp) = runtime("a.org").await;
    let (target, _rx) = recorder(&rt).await;
    let me = rt.url().component("app");
    let msg = || Message::new(MessageType::Execute, me.clone(), target.clone());
    assert_eq!(
        rt.bus().post(msg()).await.unwrap().code(),
        Some(ResponseCode::Ok)
    );
    pdp.add_policies(vec![deny("stop", json!({"to": [target.as_str()]}))])
        .await
        .unwrap();
    assert_blocked(rt.bus().post(msg()).await);
    pdp.remove_policies(vec!["stop".to_owned()]).await.unwrap();
    assert_eq!(
        rt.bus().post(msg()).await.unwrap().code(),
        Some(ResponseCode::Ok)
    );
    // unknown ids: nothing changes, 404
    let e = pdp
        .remove_policies(vec!["nope".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(e.response_code(), ResponseCode::NotFound);
    // a set with a known id replaces the old one, in place
    pdp.add_policies(vec![
        deny("x", json!({"types": ["delete"]})),
        deny("y", json!({})),
    ])
    .await
    .unwrap();
    pdp.add_policies(vec![deny("x", json!({"types": ["update"]}))])
        .await
        .unwrap();
    let sets = pdp.list_policies().await.unwrap();
    let ids: Vec<&str> = sets.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["x", "y"]);
    assert_eq!(sets[0].rules[0].target.types, ["update"]);
    // an invalid batch changes nothing
    let bad = policy(
        json!({"id": "z", "rules": [{"id": "r", "effect": "deny", "target": {"from": ["a*b"]}}]}),
    );
    assert!(pdp.add_policies(vec![bad]).await.is_err());
    assert_eq!(pdp.list_policies().await.unwrap().len(), 2);
}

#[actix::test]
async fn create_read_and_delete_messages_to_pep_manage_policies() {
    let (rt, pdp) = runtime_with(
        "a.org",
        PolicyConfig {
            managers: vec!["user://a.org/admin".to_owned()],
            ..PolicyConfig::default()
        },
    )
    .await;
    pdp.set_verifier(TestVerifier);
    let (target, _rx) = recorder(&rt).await;
    let pep = rt.url().component("pep");
    let admin = rt.url().component("console");
    let as_admin = |kind, body: Value| {
        let mut m = Message::new(kind, admin.clone(), pep.clone());
        m.body = Body::from_map(body.as_object().cloned().unwrap_or_default()).unwrap();
        m.body.identity = Some(identity("user://a.org/admin", "a.org"));
        m
    };
    let msg = || Message::new(MessageType::Execute, admin.clone(), target.clone());
    assert_eq!(
        rt.bus().post(msg()).await.unwrap().code(),
        Some(ResponseCode::Ok)
    );

    // create → 200, and the very next message is judged by it
    let set = json!({"id": "lock", "rules": [{"id": "r", "effect": "deny", "target": {"to": [target.as_str()], "types": ["execute"]}}]});
    let r = rt
        .bus()
        .post(as_admin(MessageType::Create, json!({"value": set})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
    assert_eq!(r.body.value, Some(json!(["lock"])));
    assert_blocked(rt.bus().post(msg()).await);

    // read → the sets; one set by id; 404 for an unknown one
    let r = rt
        .bus()
        .post(as_admin(MessageType::Read, json!({})))
        .await
        .unwrap();
    assert_eq!(r.body.value.unwrap()[0]["id"], json!("lock"));
    let r = rt
        .bus()
        .post(as_admin(MessageType::Read, json!({"resource": "lock"})))
        .await
        .unwrap();
    assert_eq!(r.body.value.unwrap()["rules"][0]["id"], json!("r"));
    let r = rt
        .bus()
        .post(as_admin(MessageType::Read, json!({"resource": "nope"})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));

    // an invalid set → 400 naming the rule and field
    let bad =
        json!({"id": "bad", "rules": [{"id": "r9", "effect": "deny", "target": {"to": ["x*y"]}}]});
    let r = rt
        .bus()
        .post(as_admin(MessageType::Create, json!({"value": bad})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::BadRequest));
    let why = r.body.description_text().unwrap();
    assert!(
        why.contains("'bad'") && why.contains("'r9'") && why.contains("target.to[0]"),
        "{why}"
    );
    let r = rt
        .bus()
        .post(as_admin(MessageType::Create, json!({"value": 3})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::BadRequest));

    // delete → 200 and the next message passes; deleting again → 404
    let r = rt
        .bus()
        .post(as_admin(MessageType::Delete, json!({"resource": "lock"})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    assert_eq!(
        rt.bus().post(msg()).await.unwrap().code(),
        Some(ResponseCode::Ok)
    );
    let r = rt
        .bus()
        .post(as_admin(MessageType::Delete, json!({"resource": "lock"})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
}

#[actix::test]
async fn policy_management_over_the_bus_needs_a_verified_manager() {
    let (rt, pdp) = runtime_with(
        "a.org",
        PolicyConfig {
            managers: vec!["user://a.org/admin".to_owned()],
            ..PolicyConfig::default()
        },
    )
    .await;
    let pep = rt.url().component("pep");
    // a hyperty, even one that writes a runtime address as `from`
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let create = |from: &Address, id: Option<Value>| {
        let mut m = Message::new(MessageType::Create, from.clone(), pep.clone())
            .with_value(json!({"id": "evil", "default": "permit"}));
        m.body.identity = id;
        m
    };
    let spoofed = rt.url().component("app");
    for (from, id) in [
        (w.address(), None),
        (&spoofed, None),
        // no verifier installed yet: every assertion is refused
        (&spoofed, Some(identity("user://a.org/admin", "a.org"))),
    ] {
        let r = rt.bus().post(create(from, id)).await.unwrap();
        assert_eq!(r.code(), Some(ResponseCode::Forbidden));
    }
    pdp.set_verifier(TestVerifier);
    let r = rt
        .bus()
        .post(create(
            &spoofed,
            Some(identity("user://a.org/mallory", "a.org")),
        ))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Forbidden));
    let mut forged = identity("user://a.org/admin", "a.org");
    forged["assertion"] = json!("forged");
    let r = rt.bus().post(create(&spoofed, Some(forged))).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Forbidden));
    assert!(pdp.list_policies().await.unwrap().is_empty());

    // with no managers configured, nobody manages over the bus
    let (rt2, pdp2) = runtime("a.org").await;
    pdp2.set_verifier(TestVerifier);
    let mut m = Message::new(
        MessageType::Read,
        rt2.url().component("app"),
        rt2.url().component("pep"),
    );
    m.body.identity = Some(identity("user://a.org/admin", "a.org"));
    let r = rt2.bus().post(m).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Forbidden));
}

// ---- files -----------------------------------------------------------------------------

#[actix::test]
async fn policies_load_from_a_file_at_start() {
    let path = temp_file(
        "start.toml",
        r#"
        [[policies]]
        id = "from-file"
        [[policies.rules]]
        id = "no-deletes"
        effect = "deny"
        target = { types = ["delete"] }
        "#,
    );
    let (rt, pdp) = runtime_with(
        "a.org",
        PolicyConfig {
            file: Some(path.clone()),
            ..PolicyConfig::default()
        },
    )
    .await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(pdp.list_policies().await.unwrap()[0].id, "from-file");
    let (target, _rx) = recorder(&rt).await;
    assert_blocked(
        rt.bus()
            .post(Message::new(
                MessageType::Delete,
                rt.url().component("app"),
                target,
            ))
            .await,
    );
    // the same file in JSON
    let json = temp_file(
        "start.json",
        r#"{"policies": [{"id": "from-file", "rules": [{"id": "no-deletes", "effect": "deny", "target": {"types": ["delete"]}}]}]}"#,
    );
    let pdp2 = Pdp::from_file(&json).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(
        pdp2.start().list_policies().await.unwrap(),
        pdp.list_policies().await.unwrap()
    );
}

#[actix::test]
async fn bad_policy_files_are_typed_errors_naming_rule_and_field() {
    let start = |file: &std::path::Path| {
        Runtime::start(config_with(
            "a.org",
            PolicyConfig {
                file: Some(file.to_owned()),
                ..PolicyConfig::default()
            },
        ))
    };
    type Check = Box<dyn Fn(&PolicyError) -> bool>;
    let cases: [(&str, &str, Check); 5] = [
        (
            "bad-pattern.toml",
            "[[policies]]\nid = \"corp\"\n[[policies.rules]]\nid = \"r1\"\neffect = \"deny\"\ntarget = { from = [\"a*b\"] }\n",
            Box::new(|e| {
                matches!(e, PolicyError::Invalid { policy, rule: Some(r), field, .. }
                    if policy == "corp" && r == "r1" && field == "target.from[0]")
            }),
        ),
        (
            "unknown-field.json",
            r#"{"policies": [{"id": "corp", "rules": [{"id": "r2", "effect": "deny", "conditions": {"wekdays": ["mon"]}}]}]}"#,
            Box::new(|e| {
                matches!(e, PolicyError::Invalid { policy, rule: Some(r), reason, .. }
                    if policy == "corp" && r == "r2" && reason.contains("wekdays"))
            }),
        ),
        (
            "bad-time.toml",
            "[[policies]]\nid = \"corp\"\n[[policies.rules]]\nid = \"r3\"\neffect = \"deny\"\nconditions = { time_of_day = { from = \"25:00\", to = \"08:00\" } }\n",
            Box::new(|e| {
                matches!(e, PolicyError::Invalid { rule: Some(r), field, .. }
                    if r == "r3" && field == "conditions.time_of_day.from")
            }),
        ),
        (
            "syntax.toml",
            "[[policies]\nid=",
            Box::new(|e| matches!(e, PolicyError::Syntax { format: "TOML", .. })),
        ),
        (
            "syntax.json",
            "{\"policies\": [",
            Box::new(|e| matches!(e, PolicyError::Syntax { format: "JSON", .. })),
        ),
    ];
    for (name, text, check) in cases {
        let path = temp_file(name, text);
        let e = start(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        match &e {
            RuntimeError::Policy(p) => {
                assert!(check(p), "{name}: {p}");
                assert_eq!(e.response_code(), ResponseCode::BadRequest);
            }
            other => panic!("{name}: {other}"),
        }
    }
    let missing = std::env::temp_dir().join("hyperty-policy-does-not-exist.toml");
    assert!(matches!(
        start(&missing),
        Err(RuntimeError::Policy(PolicyError::Io { .. }))
    ));
    // an invalid manager pattern is a configuration error
    let e = Runtime::start(config_with(
        "a.org",
        PolicyConfig {
            managers: vec!["x*y".to_owned()],
            ..PolicyConfig::default()
        },
    ))
    .unwrap_err();
    assert!(
        matches!(e, RuntimeError::Policy(PolicyError::Config { .. })),
        "{e}"
    );
}

// ---- conditions and obligations through the PEP -------------------------------------------

#[actix::test]
async fn the_rate_condition_limits_each_sender() {
    let (rt, pdp) = runtime("a.org").await;
    let (target, _rx) = recorder(&rt).await;
    pdp.add_policies(vec![policy(json!({"id": "throttle", "rules": [{
        "id": "three-a-minute", "effect": "deny", "target": {"types": ["execute"]},
        "conditions": {"rate": {"max": 3, "window_ms": 60000}}}]}))])
        .await
        .unwrap();
    let one = rt.url().component("one");
    let two = rt.url().component("two");
    let post = |from: &Address| {
        rt.bus().post(Message::new(
            MessageType::Execute,
            from.clone(),
            target.clone(),
        ))
    };
    for _ in 0..3 {
        assert_eq!(post(&one).await.unwrap().code(), Some(ResponseCode::Ok));
    }
    assert_blocked(post(&one).await);
    assert_eq!(post(&two).await.unwrap().code(), Some(ResponseCode::Ok));
    // messages outside the target are not counted or limited
    let read = Message::new(MessageType::Read, one.clone(), target.clone());
    assert_eq!(
        rt.bus().post(read).await.unwrap().code(),
        Some(ResponseCode::Ok)
    );
}

#[actix::test]
async fn time_of_day_and_weekday_conditions_follow_the_injected_clock() {
    let clock = ManualClock::new(utc_ms(2024, 1, 1, 12, 0, 0)); // a Monday, noon
    let rt_url: RuntimeUrl = "hyperty-runtime://a.org/rt".parse().unwrap();
    let bus = MessageBus::start(rt_url, Default::default(), Default::default());
    let pdp = Pdp::new(PolicyConfig::default())
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .start();
    bus.add_interceptor(Arc::new(pdp.pep())).await.unwrap();
    pdp.add_policies(vec![policy(json!({"id": "hours", "rules": [
        {"id": "weekend", "effect": "deny", "conditions": {"weekdays": ["sat", "sun"]}},
        {"id": "night", "effect": "deny", "conditions": {"time_of_day": {"from": "20:00", "to": "07:00"}}}
    ]}))])
    .await
    .unwrap();
    let (rec, mut probe) = Probe::start();
    let target: Address = "hyperty://a.org/target".parse().unwrap();
    bus.add_listener(target.clone(), rec, None).await.unwrap();
    let from: Address = "hyperty://a.org/me".parse().unwrap();
    let update = |n: u32| {
        Message::new(MessageType::Update, from.clone(), target.clone()).with_value(json!(n))
    };
    bus.send(update(1));
    clock.set(utc_ms(2024, 1, 1, 21, 0, 0)); // Monday night
    bus.send(update(2));
    clock.set(utc_ms(2024, 1, 6, 12, 0, 0)); // Saturday noon
    bus.send(update(3));
    clock.set(utc_ms(2024, 1, 8, 7, 0, 0)); // Monday 07:00
    bus.send(update(4));
    assert_eq!(
        probe.recv(TIMEOUT).await.unwrap().body.value,
        Some(json!(1))
    );
    assert_eq!(
        probe.recv(TIMEOUT).await.unwrap().body.value,
        Some(json!(4))
    );
    assert_eq!(bus.stats().rejected, 2);
}

#[actix::test]
async fn require_assertion_fails_closed_without_a_verifier_and_passes_with_one() {
    let (rt, pdp) = runtime_with(
        "a.org",
        PolicyConfig {
            default_behaviour: Effect::Deny,
            ..PolicyConfig::default()
        },
    )
    .await;
    pdp.add_policies(vec![policy(json!({"id": "id", "combining": "first-applicable", "rules": [
        {"id": "answers", "effect": "permit", "target": {"types": ["response"]}},
        {"id": "asserted", "effect": "permit", "target": {"types": ["execute"]},
         "obligations": [{"kind": "require-assertion", "domain": "*a.org"}, {"kind": "attach-identity"}]}
    ]}))])
    .await
    .unwrap();
    let (target, mut rx) = recorder(&rt).await;
    let me = rt.url().component("app");
    let with_id = |id: Option<Value>| {
        let mut m = Message::new(MessageType::Execute, me.clone(), target.clone());
        m.body.identity = id;
        // a sender-supplied assertedIdentity is never trusted
        m.body.extra.insert(
            "assertedIdentity".to_owned(),
            json!({"userURL": "user://a.org/root"}),
        );
        m
    };
    // no verifier: even a "valid" assertion fails closed
    assert_blocked(
        rt.bus()
            .post(with_id(Some(identity("user://a.org/alice", "idp.a.org"))))
            .await,
    );
    pdp.set_verifier(TestVerifier);
    assert_blocked(rt.bus().post(with_id(None)).await);
    assert_blocked(
        rt.bus()
            .post(with_id(Some(identity("user://b.org/bob", "b.org"))))
            .await,
    );
    let r = rt
        .bus()
        .post(with_id(Some(identity("user://a.org/alice", "idp.a.org"))))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    let seen = next(&mut rx).await;
    assert_eq!(seen.body.auth, Some(true));
    assert_eq!(
        seen.body.extra["assertedIdentity"],
        json!({"userURL": "user://a.org/alice", "domain": "idp.a.org"})
    );
    // the three refused messages never arrived
    assert!(rx.try_recv().is_err());
}

#[actix::test]
async fn user_targets_and_strip_identity() {
    let (rt, pdp) = runtime("a.org").await;
    pdp.set_verifier(TestVerifier);
    pdp.add_policies(vec![policy(json!({"id": "users", "rules": [
        {"id": "no-bob", "effect": "deny", "target": {"users": ["user://b.org/*"]}},
        {"id": "private", "effect": "permit", "target": {"types": ["execute"]},
         "obligations": [{"kind": "strip-identity"}, {"kind": "audit", "note": "test"}]}
    ]}))])
    .await
    .unwrap();
    let (target, mut rx) = recorder(&rt).await;
    let me = rt.url().component("app");
    let mut m = Message::new(MessageType::Execute, me.clone(), target.clone());
    m.body.identity = Some(identity("user://b.org/bob", "b.org"));
    assert_blocked(rt.bus().post(m).await);
    let mut m = Message::new(MessageType::Execute, me.clone(), target.clone());
    m.body.identity = Some(identity("user://a.org/alice", "a.org"));
    rt.bus().post(m).await.unwrap();
    let seen = next(&mut rx).await;
    assert_eq!(seen.body.identity, None, "stripped before delivery");
    assert_eq!(seen.body.auth, Some(true));
}

#[actix::test]
async fn a_recipient_list_is_blocked_if_any_recipient_is_denied() {
    let (rt, pdp) = runtime("a.org").await;
    let (t1, mut rx1) = recorder(&rt).await;
    let (t2, _rx2) = recorder(&rt).await;
    pdp.add_policies(vec![deny("one", json!({"to": [t2.as_str()]}))])
        .await
        .unwrap();
    let me = rt.url().component("app");
    let m = Message::new(
        MessageType::Update,
        me.clone(),
        To::many(vec![t1.clone(), t2.clone()]).unwrap(),
    );
    rt.bus().send(m);
    assert_nothing_before_marker(rt.bus(), &me, &t1, &mut rx1).await;
    assert_eq!(rt.bus().stats().rejected, 1);
}

// ---- no way around the PEP ---------------------------------------------------------------

/// A hyperty that tries to reach `value.target` with everything a hyperty has,
/// and reports the outcome codes.
struct Intruder {
    ctx: HypertyContext,
}

impl Actor for Intruder {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Intruder {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, ctx: &mut Context<Self>) {
        if m.kind != MessageType::Execute {
            return;
        }
        let Some(target) = m.body.value.as_ref().and_then(|v| v["target"].as_str()) else {
            return;
        };
        let target: Address = target.parse().unwrap();
        let hctx = self.ctx.clone();
        let bus = self.ctx.bus().clone();
        // 1. a plain request; 2. the same with a runtime address as `from`.
        // Injecting as a stub, posting through the bus actor and removing the PEP
        // are not in a hyperty's bound handle at all (compile_fail doctests in
        // `hyperty_actors::bus::bound`).
        let direct = hctx.request(MessageType::Execute, target.clone(), json!("direct"));
        let spoof = bus.post(
            Message::new(
                MessageType::Execute,
                hctx.runtime().component("app"),
                target.clone(),
            )
            .with_value(json!("spoofed")),
        );
        // 3. a notification as the runtime
        bus.send(
            Message::new(MessageType::Update, hctx.runtime().component("app"), target)
                .with_value(json!("spoofed notification")),
        );
        ctx.spawn(
            async move {
                let code = |r: Result<Message, BusError>| match r {
                    Ok(m) => m.code().map(|c| c.as_u16()),
                    Err(e) => Some(e.response_code().as_u16()),
                };
                let direct = code(direct.await);
                let spoof = code(spoof.await);
                hctx.reply(
                    &m,
                    ResponseCode::Ok,
                    json!({"direct": direct, "spoof": spoof}),
                );
            }
            .into_actor(self),
        );
    }
}

#[actix::test]
async fn a_hyperty_cannot_reach_a_protected_hyperty_by_any_path() {
    let (rt, pdp) = runtime("a.org").await;
    let (victim, mut rx) = recorder(&rt).await;
    let intruder = rt
        .spawn_hyperty(HypertySpec::new("intruder", "evil.org", |ctx| Intruder {
            ctx,
        }))
        .await
        .unwrap();
    pdp.add_policies(vec![policy(json!({"id": "protect", "rules": [{
        "id": "only-reads", "effect": "deny",
        "target": {"to": [victim.as_str()], "types": ["execute", "update", "create", "delete"]}}]}))])
    .await
    .unwrap();
    let app = rt.url().component("app");
    let r = rt
        .bus()
        .post(
            Message::new(
                MessageType::Execute,
                app.clone(),
                intruder.address().clone(),
            )
            .with_value(json!({"target": victim.as_str()})),
        )
        .await
        .unwrap();
    assert_eq!(r.body.value.unwrap(), json!({"direct": 403, "spoof": 403}));
    // not even the spoofed notification arrived
    assert_nothing_before_marker(rt.bus(), &app, &victim, &mut rx).await;
    // the registry cannot drop it either
    let e = rt
        .registry()
        .send(UnregisterPep(PEP_NAME.to_owned()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.response_code(), ResponseCode::Forbidden);
}

/// Rewrites every `execute` to the victim, as a malicious component might.
struct Redirect(Address);

impl Interceptor for Redirect {
    fn name(&self) -> &str {
        "redirect"
    }
    fn intercept(&self, msg: &mut Message, _: Direction) -> Result<(), Rejection> {
        if msg.kind == MessageType::Execute {
            msg.to = To::One(self.0.clone());
        }
        Ok(())
    }
}

#[actix::test]
async fn an_interceptor_added_later_runs_before_the_sealed_pep() {
    let (rt, pdp) = runtime("a.org").await;
    let (victim, mut rx) = recorder(&rt).await;
    let (decoy, _drx) = recorder(&rt).await;
    pdp.add_policies(vec![deny(
        "protect",
        json!({"to": [victim.as_str()], "types": ["execute"]}),
    )])
    .await
    .unwrap();
    rt.bus()
        .add_interceptor(Arc::new(Redirect(victim.clone())))
        .await
        .unwrap();
    let app = rt.url().component("app");
    // aimed at the decoy, rewritten towards the victim: the PEP judges the rewrite
    assert_blocked(
        rt.bus()
            .post(Message::new(MessageType::Execute, app.clone(), decoy))
            .await,
    );
    assert_nothing_before_marker(rt.bus(), &app, &victim, &mut rx).await;
}

#[actix::test]
async fn what_a_hyperty_can_learn_about_routes_is_addresses_only() {
    let (rt, _pdp) = runtime("a.org").await;
    let (victim, _rx) = recorder(&rt).await;
    // the registry answers where an address leads, never with a handle to it
    let route: Route = rt.registry().send(Resolve(victim.clone())).await.unwrap();
    let described = match route {
        Route::Local => "local".to_owned(),
        Route::Stub(url) => {
            let url: Address = url; // an address, nothing to send to
            format!("stub {url}")
        }
        Route::Unknown => "unknown".to_owned(),
    };
    assert_eq!(described, "local");
    // a hyperty's context carries its own address, its runtime and a bound bus handle
    let probe = rt
        .spawn_hyperty(HypertySpec::new("probe", "a.org", |ctx: HypertyContext| {
            let _: (&HypertyUrl, &RuntimeUrl, &BoundBus) = (ctx.url(), ctx.runtime(), ctx.bus());
            Recorder {
                ctx,
                tx: mpsc::unbounded_channel().0,
            }
        }))
        .await;
    assert!(probe.is_ok());
}

#[actix::test]
async fn authorise_answers_without_delivering() {
    let (rt, pdp) = runtime("a.org").await;
    let (target, mut rx) = recorder(&rt).await;
    pdp.add_policies(vec![policy(json!({"id": "p", "rules": [
        {"id": "in", "effect": "deny", "target": {"directions": ["incoming"]}}]}))])
        .await
        .unwrap();
    let me = rt.url().component("app");
    let m = Message::new(MessageType::Update, me.clone(), target.clone());
    for (direction, effect) in [
        (Direction::Incoming, DecisionEffect::Deny),
        (Direction::Local, DecisionEffect::NotApplicable),
    ] {
        let a = pdp
            .addr()
            .send(Authorise {
                message: m.clone(),
                direction: Some(direction),
            })
            .await
            .unwrap();
        assert_eq!(a.decision.effect, effect);
        assert_eq!(a.result.is_ok(), effect != DecisionEffect::Deny);
    }
    assert_nothing_before_marker(rt.bus(), &me, &target, &mut rx).await;
}
