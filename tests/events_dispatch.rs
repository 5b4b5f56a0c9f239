//! The event dispatcher: local delivery, listener filters, the owner model (bcc
//! stripping, listener fan-out), duplicates, forwarding, the policy hook, API
//! refusals, the spec's A..I to/cc/bcc example across runtimes, and bad events.

mod events_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use events_support::*;
use hyperty::prelude::*;
use serde_json::json;

fn set(list: &[Address]) -> BTreeSet<String> {
    list.iter().map(|a| a.to_string()).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[actix::test]
async fn local_delivery_and_listener_filters() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let alice = entity(&rt, "hyperty://a.org/alice").await;
    let mut bob = entity(&rt, "hyperty://a.org/bob").await;
    let (chat, mut chat_rx) = EventInbox::start();
    let (other, mut other_rx) = EventInbox::start();
    let (from_carol, mut from_carol_rx) = EventInbox::start();
    bob.ep
        .add_listener(
            ListenerFilter::any()
                .event_type("chat")
                .source(alice.addr.clone()),
            chat,
        )
        .await
        .unwrap();
    bob.ep
        .add_listener(ListenerFilter::any().event_type("other"), other)
        .await
        .unwrap();
    bob.ep
        .add_listener(
            ListenerFilter::any().source(addr("hyperty://a.org/carol")),
            from_carol,
        )
        .await
        .unwrap();

    let ev = alice
        .ep
        .builder("chat", alice.addr.clone())
        .to(bob.addr.clone())
        .payload("hi")
        .build()
        .unwrap();
    alice.ep.dispatch(ev.clone(), None, None).await.unwrap();

    let got = bob.inbox.recv(TIMEOUT).await.expect("delivered");
    assert_eq!(got.event.id(), ev.id());
    assert_eq!(got.recipient, bob.addr);
    assert_eq!(got.event.payload(), Some("hi"));
    assert_eq!(got.event.generation_timestamp(), Some(T0));
    assert_eq!(chat_rx.recv(TIMEOUT).await.unwrap().event.id(), ev.id());
    assert!(other_rx.recv(QUIET).await.is_none());
    assert!(from_carol_rx.recv(QUIET).await.is_none());

    // a removed listener hears nothing more
    bob.ep.remove_listener(bob.listener).await.unwrap();
    assert_eq!(
        bob.ep
            .remove_listener(bob.listener)
            .await
            .unwrap_err()
            .code(),
        1
    );
    let ev2 = alice
        .ep
        .builder("chat", alice.addr.clone())
        .to(bob.addr.clone())
        .payload("again")
        .build()
        .unwrap();
    alice.ep.dispatch(ev2, None, None).await.unwrap();
    assert_eq!(
        chat_rx.recv(TIMEOUT).await.unwrap().event.payload(),
        Some("again")
    );
    assert!(bob.inbox.recv(QUIET).await.is_none());
    assert_eq!(rt.events().stats().await.delivered, 2);
}

#[actix::test]
async fn a_listener_without_destination_fires_once_per_recipient_entity() {
    // decision 15: one copy per unique local recipient entity
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let src = entity(&rt, "hyperty://a.org/src").await;
    let app = addr("hyperty://a.org/app");
    let svc = addr("hyperty://a.org/app/svc");
    let ep = rt.events().endpoint(app.clone());
    ep.register_entity(app.clone()).await.unwrap();
    ep.register_entity(svc.clone()).await.unwrap();
    let (rec, mut rx) = EventInbox::start();
    ep.add_listener(ListenerFilter::any(), rec).await.unwrap();

    let ev = Event::builder("t", src.addr.clone())
        .to(app.clone())
        .to(app.clone()) // a set: once
        .cc(svc.clone())
        .build()
        .unwrap();
    src.ep.dispatch(ev, None, None).await.unwrap();
    let a = rx.recv(TIMEOUT).await.unwrap();
    let b = rx.recv(TIMEOUT).await.unwrap();
    assert_eq!(
        names(&[a.recipient.as_str(), b.recipient.as_str()]),
        names(&["hyperty://a.org/app", "hyperty://a.org/app/svc"])
    );
    assert!(rx.recv(QUIET).await.is_none());
}

#[actix::test]
async fn a_delivered_copy_keeps_only_the_bcc_entities_of_its_owner() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let s = entity(&rt, "hyperty://a.org/s").await;
    let mut a = entity(&rt, "hyperty://a.org/a").await;
    let mut g1 = entity_owned_by(&rt, "hyperty://a.org/g1", "hyperty://a.org/appg").await;
    let mut g2 = entity_owned_by(&rt, "hyperty://a.org/g2", "hyperty://a.org/appg").await;
    let mut x = entity(&rt, "hyperty://a.org/x").await;
    let ev = Event::builder("t", s.addr.clone())
        .to(a.addr.clone())
        .bcc(g1.addr.clone())
        .bcc(g2.addr.clone())
        .bcc(x.addr.clone())
        .build()
        .unwrap();
    s.ep.dispatch(ev.clone(), None, None).await.unwrap();
    let got_a = a.inbox.recv(TIMEOUT).await.unwrap();
    let got_g1 = g1.inbox.recv(TIMEOUT).await.unwrap();
    let got_g2 = g2.inbox.recv(TIMEOUT).await.unwrap();
    let got_x = x.inbox.recv(TIMEOUT).await.unwrap();
    assert!(got_a.event.addressing().bcc().is_empty());
    let g = names(&["hyperty://a.org/g1", "hyperty://a.org/g2"]);
    assert_eq!(set(got_g1.event.addressing().bcc()), g);
    assert_eq!(set(got_g2.event.addressing().bcc()), g);
    assert_eq!(
        set(got_x.event.addressing().bcc()),
        names(&["hyperty://a.org/x"])
    );
    for got in [got_a, got_g1, got_g2, got_x] {
        assert_eq!(got.event.id(), ev.id(), "bcc does not enter the id");
    }
}

#[actix::test]
async fn a_second_dispatch_of_the_same_event_is_a_duplicate() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let s = entity(&rt, "hyperty://a.org/s").await;
    let mut r = entity(&rt, "hyperty://a.org/r").await;
    let ev = Event::builder("t", s.addr.clone())
        .to(r.addr.clone())
        .payload("once")
        .build()
        .unwrap();
    let (cb, mut reports_rx) = EventCallbacks::channel(CallbackSet::delivery());
    s.ep.dispatch(ev.clone(), Some(cb.clone()), None)
        .await
        .unwrap();
    s.ep.dispatch(ev.clone(), Some(cb), None).await.unwrap();
    assert!(r.inbox.recv(TIMEOUT).await.is_some());
    let got = reports(&mut reports_rx, 2, is_delivery).await;
    assert_eq!(
        got,
        vec![
            ReportKind::Delivery {
                recipient: r.addr.clone(),
                duplicate: false
            },
            ReportKind::Delivery {
                recipient: r.addr.clone(),
                duplicate: true
            },
        ]
    );
    assert!(r.inbox.recv(QUIET).await.is_none(), "delivered once");
    assert_eq!(rt.events().stats().await.duplicates, 1);
}

#[actix::test]
async fn forwarding_keeps_the_id_and_notifies_the_forwarder() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let alice = entity(&rt, "hyperty://a.org/alice").await;
    let mut bob = entity(&rt, "hyperty://a.org/bob").await;
    let mut carol = entity(&rt, "hyperty://a.org/carol").await;
    let mut dave = entity(&rt, "hyperty://a.org/dave").await;
    let ev = Event::builder("t", alice.addr.clone())
        .to(bob.addr.clone())
        .payload("fwd me")
        .build()
        .unwrap();
    alice.ep.dispatch(ev.clone(), None, None).await.unwrap();
    let received = bob.inbox.recv(TIMEOUT).await.unwrap().event;

    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::all());
    clock.advance(std::time::Duration::from_millis(7));
    let fwd = bob
        .ep
        .forward(
            &received,
            Addressing::new(bob.addr.clone())
                .with_to(carol.addr.clone())
                .with_bcc(dave.addr.clone()),
            true,
            Some(cb),
            None,
        )
        .await
        .unwrap();
    assert_eq!(fwd.id(), ev.id());
    assert_eq!(fwd.forwarding().unwrap().timestamp(), Some(T0 + 7));
    let at_carol = carol.inbox.recv(TIMEOUT).await.unwrap();
    assert_eq!(at_carol.event.id(), ev.id());
    assert_eq!(at_carol.event.sender(), &bob.addr);
    assert_eq!(at_carol.event.source(), &alice.addr);
    assert!(at_carol
        .event
        .forwarding()
        .unwrap()
        .addressing()
        .bcc()
        .is_empty());
    let at_dave = dave.inbox.recv(TIMEOUT).await.unwrap();
    assert_eq!(
        set(at_dave.event.forwarding().unwrap().addressing().bcc()),
        names(&["hyperty://a.org/dave"])
    );
    // the forwarder is notified about its primary recipient only
    let d = reports(&mut rep, 1, is_delivery).await;
    assert_eq!(
        d,
        vec![ReportKind::Delivery {
            recipient: carol.addr.clone(),
            duplicate: false
        }]
    );
    // forwarding to someone who already has it: duplicate
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    bob.ep
        .forward(
            &received,
            Addressing::new(bob.addr.clone()).with_to(carol.addr.clone()),
            false,
            Some(cb),
            None,
        )
        .await
        .unwrap();
    let d = reports(&mut rep, 1, is_delivery).await;
    assert_eq!(
        d,
        vec![ReportKind::Delivery {
            recipient: carol.addr.clone(),
            duplicate: true
        }]
    );
    assert!(carol.inbox.recv(QUIET).await.is_none());
}

struct DenyTo(Address);
impl EventPolicy for DenyTo {
    fn name(&self) -> &str {
        "deny-to"
    }
    fn check(&self, r: &EventPolicyRequest<'_>) -> EventPolicyDecision {
        if r.recipient == &self.0 {
            EventPolicyDecision::Deny("not to this one".into())
        } else {
            EventPolicyDecision::Allow
        }
    }
}

#[actix::test]
async fn a_policy_denial_refuses_a_local_dispatch_atomically() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let alice = entity(&rt, "hyperty://a.org/alice").await;
    let mut bob = entity(&rt, "hyperty://a.org/bob").await;
    let mut carol = entity(&rt, "hyperty://a.org/carol").await;
    rt.events()
        .add_policy(Arc::new(DenyTo(carol.addr.clone())))
        .await
        .unwrap();
    assert!(
        rt.events()
            .add_policy(Arc::new(DenyTo(carol.addr.clone())))
            .await
            .is_err(),
        "names are unique"
    );
    let ev = Event::builder("t", alice.addr.clone())
        .to(bob.addr.clone())
        .cc(carol.addr.clone())
        .build()
        .unwrap();
    let err = alice.ep.dispatch(ev.clone(), None, None).await.unwrap_err();
    assert_eq!(err.code(), 2, "{err}");
    assert!(
        bob.inbox.recv(QUIET).await.is_none(),
        "nothing delivered, not even to bob"
    );
    assert_eq!(rt.events().stats().await.dispatched, 0);
    assert!(rt.events().remove_policy("deny-to").await);
    alice.ep.dispatch(ev, None, None).await.unwrap();
    assert!(bob.inbox.recv(TIMEOUT).await.is_some());
    assert!(carol.inbox.recv(TIMEOUT).await.is_some());
}

#[actix::test]
async fn the_runtime_pdp_decides_events_by_default() {
    let dir = std::env::temp_dir().join(format!("hyperty-event-pdp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policies.toml");
    std::fs::write(
        &file,
        r#"
[[policies]]
id = "no-events-to-carol"
  [[policies.rules]]
  id = "deny"
  effect = "deny"
  target = { types = ["event"], to = ["hyperty://a.org/carol"] }
"#,
    )
    .unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg = config("a.org", &clock);
    cfg.policy = Some(hyperty_actors::policy::PolicyConfig {
        file: Some(file),
        ..Default::default()
    });
    let rt = Runtime::start(cfg).unwrap();
    let alice = entity(&rt, "hyperty://a.org/alice").await;
    let mut bob = entity(&rt, "hyperty://a.org/bob").await;
    let mut carol = entity(&rt, "hyperty://a.org/carol").await;
    let to_carol = Event::builder("t", alice.addr.clone())
        .to(carol.addr.clone())
        .build()
        .unwrap();
    let err = alice.ep.dispatch(to_carol, None, None).await.unwrap_err();
    assert_eq!(err.code(), 2, "{err}");
    assert!(carol.inbox.recv(QUIET).await.is_none(), "nothing delivered");
    let to_bob = Event::builder("t", alice.addr.clone())
        .to(bob.addr.clone())
        .build()
        .unwrap();
    alice.ep.dispatch(to_bob, None, None).await.unwrap();
    assert!(bob.inbox.recv(TIMEOUT).await.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix::test]
async fn the_api_refuses_what_an_application_may_not_do() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let alice = entity(&rt, "hyperty://a.org/alice").await;
    let bob = entity(&rt, "hyperty://a.org/bob").await;
    // sending from an entity it does not own
    let ev = Event::builder("t", bob.addr.clone())
        .to(alice.addr.clone())
        .build()
        .unwrap();
    assert_eq!(
        alice
            .ep
            .dispatch(ev.clone(), None, None)
            .await
            .unwrap_err()
            .code(),
        2
    );
    // forwarding on behalf of someone else
    let fwd = Addressing::new(bob.addr.clone()).with_to(alice.addr.clone());
    assert_eq!(
        alice
            .ep
            .forward(&ev, fwd, false, None, None)
            .await
            .unwrap_err()
            .code(),
        2
    );
    // forwarding to nobody
    let fwd = Addressing::new(alice.addr.clone()).with_cc(bob.addr.clone());
    assert_eq!(
        alice
            .ep
            .forward(&ev, fwd, false, None, None)
            .await
            .unwrap_err()
            .code(),
        1
    );
    // reserved types, even smuggled in through the JSON form
    let dn = Event::from_value(json!({
        "type": "deliveryNotification", "source": "hyperty://a.org/alice", "to": ["hyperty://a.org/bob"],
        "addressingSensitive": true, "payload": "ok"
    }))
    .unwrap();
    assert_eq!(
        alice.ep.dispatch(dn, None, None).await.unwrap_err().code(),
        1
    );
    // listening on an entity of another owner, taking another owner's entity
    let (rec, _rx) = EventInbox::start();
    assert_eq!(
        alice
            .ep
            .add_listener(
                ListenerFilter::any().destination(bob.addr.clone()),
                rec.clone()
            )
            .await
            .unwrap_err()
            .code(),
        2
    );
    assert_eq!(
        alice
            .ep
            .add_listener(ListenerFilter::any().event_type("no-dash"), rec)
            .await
            .unwrap_err()
            .code(),
        1
    );
    assert_eq!(
        alice
            .ep
            .register_entity(bob.addr.clone())
            .await
            .unwrap_err()
            .code(),
        2
    );
    assert_eq!(
        alice
            .ep
            .unregister_entity(bob.addr.clone())
            .await
            .unwrap_err()
            .code(),
        2
    );
    assert_eq!(
        alice
            .ep
            .unregister_entity(addr("hyperty://a.org/none"))
            .await
            .unwrap_err()
            .code(),
        1
    );
    // nor can a local component bypass the API by messaging the dispatcher
    let mut bob = bob;
    let forged = Message::new(
        MessageType::Event,
        alice.addr.clone(),
        rt.events().address().clone(),
    )
    .with_value(json!({
        "type": "t", "source": "hyperty://a.org/carol", "to": ["hyperty://a.org/bob"],
        "addressingSensitive": true
    }));
    rt.bus().send(forged);
    assert_eq!(rt.bus().stats().rejected, 1);
    assert!(bob.inbox.recv(QUIET).await.is_none());
}

/// Seed 004's example: to A, B, C; cc D, E, F; bcc G, H, I; A and G local; B, C on
/// device X; D, F on device Z; E, H, I on device Y.
#[actix::test]
async fn the_spec_example_a_to_i() {
    let clock = ManualClock::new(T0);
    let l = start("a.org", &clock);
    let x = start("x.org", &clock);
    let y = start("y.org", &clock);
    let z = start("z.org", &clock);
    // recording stubs: the test counts the transmissions per runtime on the wire
    let (lx, _) = link(&l, Some("a.org"), &x, Some("x.org")).await;
    let (ly, _) = link(&l, Some("a.org"), &y, Some("y.org")).await;
    let (lz, _) = link(&l, Some("a.org"), &z, Some("z.org")).await;

    let s = entity(&l, "hyperty://a.org/S").await;
    let mut a = entity(&l, "hyperty://a.org/A").await;
    let mut g = entity(&l, "hyperty://a.org/G").await;
    let mut b = entity(&x, "hyperty://x.org/B").await;
    let mut c = entity(&x, "hyperty://x.org/C").await;
    let mut d = entity(&z, "hyperty://z.org/D").await;
    let mut f = entity(&z, "hyperty://z.org/F").await;
    let mut e = entity(&y, "hyperty://y.org/E").await;
    // H and I belong to one application, so each sees both in its bcc
    let mut h = entity_owned_by(&y, "hyperty://y.org/H", "hyperty://y.org/appHI").await;
    let mut i = entity_owned_by(&y, "hyperty://y.org/I", "hyperty://y.org/appHI").await;

    let ev = Event::builder("exampleEvent", s.addr.clone())
        .to(a.addr.clone())
        .to(b.addr.clone())
        .to(c.addr.clone())
        .cc(d.addr.clone())
        .cc(e.addr.clone())
        .cc(f.addr.clone())
        .bcc(g.addr.clone())
        .bcc(h.addr.clone())
        .bcc(i.addr.clone())
        .payload("A..I")
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::all());
    s.ep.dispatch(ev.clone(), Some(cb), None).await.unwrap();

    // every recipient gets exactly its copy
    let bcc_of = |got: &IncomingEvent| set(got.event.addressing().bcc());
    let got_a = a.inbox.recv(TIMEOUT).await.expect("A");
    assert!(bcc_of(&got_a).is_empty(), "A: empty bcc");
    let got_g = g.inbox.recv(TIMEOUT).await.expect("G");
    assert_eq!(bcc_of(&got_g), names(&["hyperty://a.org/G"]), "G: only G");
    for (who, inbox) in [
        ("B", &mut b),
        ("C", &mut c),
        ("D", &mut d),
        ("F", &mut f),
        ("E", &mut e),
    ] {
        let got = inbox
            .inbox
            .recv(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("{who}"));
        assert!(bcc_of(&got).is_empty(), "{who}: empty bcc");
        assert_eq!(got.event.id(), ev.id());
    }
    let hi = names(&["hyperty://y.org/H", "hyperty://y.org/I"]);
    assert_eq!(bcc_of(&h.inbox.recv(TIMEOUT).await.expect("H")), hi);
    assert_eq!(bcc_of(&i.inbox.recv(TIMEOUT).await.expect("I")), hi);

    // one transmission per device, bcc split per device
    let (to_x, to_y, to_z) = (lx.events(), ly.events(), lz.events());
    assert_eq!((to_x.len(), to_y.len(), to_z.len()), (1, 1, 1));
    let wire_to = |m: &Message| m.to.iter().map(|a| a.to_string()).collect::<BTreeSet<_>>();
    let wire_bcc = |m: &Message| {
        m.body.value.as_ref().unwrap()["bcc"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        wire_to(&to_x[0]),
        names(&["hyperty://x.org/B", "hyperty://x.org/C"])
    );
    assert!(wire_bcc(&to_x[0]).is_empty());
    assert_eq!(
        wire_to(&to_z[0]),
        names(&["hyperty://z.org/D", "hyperty://z.org/F"])
    );
    assert!(wire_bcc(&to_z[0]).is_empty());
    assert_eq!(
        wire_to(&to_y[0]),
        names(&[
            "hyperty://y.org/E",
            "hyperty://y.org/H",
            "hyperty://y.org/I"
        ])
    );
    assert_eq!(wire_bcc(&to_y[0]), hi);
    assert_eq!(to_x[0].from.as_str(), "hyperty-runtime://a.org/rt/events");

    // delivery notifications: primary recipients only (A, B, C)
    let delivered = reports(&mut rep, 3, is_delivery).await;
    let who: BTreeSet<String> = delivered
        .iter()
        .map(|k| match k {
            ReportKind::Delivery {
                recipient,
                duplicate: false,
            } => recipient.to_string(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        who,
        names(&[
            "hyperty://a.org/A",
            "hyperty://x.org/B",
            "hyperty://x.org/C"
        ])
    );
    assert_eq!(
        stats_until(&x, |s| s.notifications_sent == 2)
            .await
            .notifications_sent,
        2
    );
    assert_eq!(y.events().stats().await.notifications_sent, 0);
    assert_eq!(z.events().stats().await.notifications_sent, 0);
    assert_eq!(
        stats_until(&l, |s| s.notifications_received == 2)
            .await
            .notifications_received,
        2
    );
    let rest: Vec<ReportKind> = rep.drain().into_iter().map(|r| r.kind).collect();
    assert!(
        rest.iter().all(|k| matches!(k, ReportKind::Sending { .. })),
        "{rest:?}"
    );
    assert_eq!(l.events().stats().await.transmissions, 3);
}

#[actix::test]
async fn bad_events_are_invalid_and_never_delivered() {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let b = start("b.org", &clock);
    // a recording stub: the test injects malformed events as if from the wire
    let (_ab, ba) = link(&a, Some("a.org"), &b, Some("b.org")).await;
    let stub_in_b = ba.stub.url.clone();
    let _s = entity(&a, "hyperty://a.org/s").await;
    let mut r = entity(&b, "hyperty://b.org/r").await;
    let handler = RpcMethods::new()
        .method("m", |_| Ok(json!(1)))
        .start_handler();
    r.ep.serve_rpc(r.addr.clone(), handler).await.unwrap();

    let good = json!({
        "type": "t", "source": "hyperty://a.org/s", "to": ["hyperty://b.org/r"],
        "deliveryNotificationWanted": true, "addressingSensitive": true, "payload": "x"
    });
    let with = |k: &str, v: serde_json::Value| {
        let mut e = good.clone();
        e[k] = v;
        e
    };
    let to_r = ["hyperty://b.org/r"];
    let from = "hyperty-runtime://a.org/rt";
    inject_event(&b, &stub_in_b, from, &to_r, with("type", json!("9-bad")));
    inject_event(&b, &stub_in_b, from, &to_r, with("to", json!([])));
    inject_event(
        &b,
        &stub_in_b,
        from,
        &to_r,
        with("id", json!("0".repeat(64))),
    );
    inject_event(
        &b,
        &stub_in_b,
        from,
        &to_r,
        with("to", json!(["not an address"])),
    );
    let mut rpc = with("type", json!("JSONRPC20Request"));
    rpc["payload"] = json!("{ not json");
    inject_event(&b, &stub_in_b, from, &to_r, rpc);
    let mut empty_batch = with("type", json!("JSONRPC20Request"));
    empty_batch["payload"] = json!("[]");
    inject_event(&b, &stub_in_b, from, &to_r, empty_batch);
    // a remote runtime claiming to send from an entity of this runtime
    inject_event(
        &b,
        &stub_in_b,
        from,
        &to_r,
        with("source", json!("hyperty://b.org/r")),
    );
    // garbage straight at the dispatcher
    let disp = "hyperty-runtime://b.org/rt/events";
    inject_event(&b, &stub_in_b, from, &[disp], json!(42));
    inject_event(
        &b,
        &stub_in_b,
        from,
        &[disp],
        json!({"type": 1, "source": "x"}),
    );
    let bare = Message::new(
        MessageType::Event,
        addr("hyperty-runtime://a.org/rt/events"),
        addr(disp),
    )
    .with_id(1);
    b.bus().inject(bare, &stub_in_b);

    let stats = stats_until(&b, |s| s.invalid >= 10).await;
    assert_eq!(stats.invalid, 10, "{stats:?}");
    assert_eq!(stats.delivered, 0);
    assert_eq!(stats.rpc_served, 0);
    assert!(r.inbox.recv(QUIET).await.is_none(), "nothing delivered");
    // `invalid` went back for the events whose sender and primary recipient could
    // be named: bad type, id mismatch, two bad RPC payloads
    assert_eq!(
        stats_until(&a, |s| s.notifications_received >= 4)
            .await
            .notifications_received,
        4
    );
    assert_eq!(b.events().stats().await.notifications_sent, 4);
    // the runtime still works
    inject_event(&b, &stub_in_b, from, &to_r, good);
    assert_eq!(
        r.inbox.recv(TIMEOUT).await.unwrap().event.payload(),
        Some("x")
    );
}
