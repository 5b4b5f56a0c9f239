//! Delivery notifications: every status, locally and across runtimes, the rules on
//! when they are generated, the callbacks they drive (onSending, onDelivery,
//! onError, onTimeout), and that applications never receive them.

mod events_support;

use std::sync::Arc;
use std::time::Duration;

use events_support::*;
use hyperty::prelude::*;
use serde_json::{json, Value};

struct Pair {
    a: RuntimeHandle,
    b: RuntimeHandle,
    ab: Side,
    s: Entity,
    r: Entity,
}

async fn pair(clock_a: &ManualClock, clock_b: &ManualClock) -> Pair {
    let a = start("a.org", clock_a);
    let b = start("b.org", clock_b);
    // recording stubs: some tests tamper with or inject into what crosses the wire
    let (ab, _ba) = link(&a, Some("a.org"), &b, Some("b.org")).await;
    let s = entity(&a, "hyperty://a.org/s").await;
    let r = entity(&b, "hyperty://b.org/r").await;
    Pair { a, b, ab, s, r }
}

fn event_to(p: &Pair, payload: &str) -> Event {
    p.s.ep
        .builder("t", p.s.addr.clone())
        .to(p.r.addr.clone())
        .payload(payload)
        .build()
        .unwrap()
}

fn no_notification_reached_an_app(inbox: &mut InboxReceiver) {
    for got in inbox.drain() {
        assert_ne!(got.event.event_type().as_str(), "deliveryNotification");
    }
}

#[actix::test]
async fn ok_is_reported_through_on_delivery_after_on_sending() {
    let clock = ManualClock::new(T0);
    let mut p = pair(&clock, &clock).await;
    ok_is_reported(&mut p.s, &p.r.addr, &p.b).await;
    assert!(p.r.inbox.recv(TIMEOUT).await.is_some());
}

#[actix::test]
async fn ok_is_reported_across_domains_through_their_nodes() {
    let clock = ManualClock::new(T0);
    let (nodes, rts) = federated(&["a.org", "b.org"], &clock).await;
    let mut s = hyperty_entity(&rts[0]).await;
    let mut r = hyperty_entity(&rts[1]).await;
    ok_is_reported(&mut s, &r.addr, &rts[1]).await;
    assert!(r.inbox.recv(TIMEOUT).await.is_some());
    assert!(r.inbox.recv(QUIET).await.is_none(), "delivered once");
    for rt in &rts {
        rt.shutdown().await;
    }
    stop_all(&nodes).await;
}

/// `s` sends an event to `r` (an entity of `b`): onSending, then onDelivery ok,
/// one notification sent by `b`, none of them seen by an application.
async fn ok_is_reported(s: &mut Entity, r: &Address, b: &RuntimeHandle) {
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::all());
    let ev =
        s.ep.builder("t", s.addr.clone())
            .to(r.clone())
            .payload("hello")
            .build()
            .unwrap();
    s.ep.dispatch(ev.clone(), Some(cb), None).await.unwrap();
    let first = rep.recv(TIMEOUT).await.unwrap();
    assert_eq!(
        first.kind,
        ReportKind::Sending {
            recipient: r.clone()
        }
    );
    assert_eq!(first.event.id(), ev.id());
    assert!(
        first.event.delivery_notification_wanted(),
        "derived from the callbacks"
    );
    assert_eq!(
        first_report(&mut rep).await,
        ReportKind::Delivery {
            recipient: r.clone(),
            duplicate: false
        }
    );
    // the notification on the wire follows the rules
    let dn = &stats_until(b, |s| s.notifications_sent == 1).await;
    assert_eq!(dn.notifications_sent, 1);
    no_notification_reached_an_app(&mut s.inbox);
}

#[actix::test]
async fn the_wire_form_of_a_notification() {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let b = start("b.org", &clock);
    // recording stubs: the test reads the notification as it crosses the wire
    let (_ab, ba) = link(&a, Some("a.org"), &b, Some("b.org")).await;
    let s = entity(&a, "hyperty://a.org/s").await;
    let _r = entity(&b, "hyperty://b.org/r").await;
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    let ev = Event::builder("t", s.addr.clone())
        .to(addr("hyperty://b.org/r"))
        .build()
        .unwrap();
    s.ep.dispatch(ev.clone(), Some(cb), None).await.unwrap();
    first_report(&mut rep).await;
    let dns = ba.events_of_type("deliveryNotification");
    assert_eq!(dns.len(), 1);
    let v: &Value = dns[0].body.value.as_ref().unwrap();
    assert_eq!(v["source"], json!("hyperty://b.org/r"));
    assert_eq!(v["to"], json!(["hyperty://a.org/s"]));
    assert_eq!(v["inResponseTo"], json!(ev.id().to_string()));
    assert_eq!(v["deliveryNotificationWanted"], json!(false));
    assert_eq!(v["addressingSensitive"], json!(true));
    assert_eq!(v["forwarding"], Value::Null);
    assert_eq!(v["payload"], json!("ok"));
}

#[actix::test]
async fn duplicate_is_reported_through_on_delivery_and_not_delivered_again() {
    let clock = ManualClock::new(T0);
    let mut p = pair(&clock, &clock).await;
    let ev = event_to(&p, "twice");
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep
        .dispatch(ev.clone(), Some(cb.clone()), None)
        .await
        .unwrap();
    assert_eq!(
        first_report(&mut rep).await,
        ReportKind::Delivery {
            recipient: p.r.addr.clone(),
            duplicate: false
        }
    );
    p.s.ep.dispatch(ev, Some(cb), None).await.unwrap();
    assert_eq!(
        first_report(&mut rep).await,
        ReportKind::Delivery {
            recipient: p.r.addr.clone(),
            duplicate: true
        }
    );
    assert!(p.r.inbox.recv(TIMEOUT).await.is_some());
    assert!(p.r.inbox.recv(QUIET).await.is_none());
    assert_eq!(p.b.events().stats().await.duplicates, 1);
}

#[actix::test]
async fn invalid_is_reported_when_the_content_no_longer_matches_its_id() {
    let clock = ManualClock::new(T0);
    let mut p = pair(&clock, &clock).await;
    // corruption in transit: the payload changes, the transmitted id does not
    p.ab.set_tamper(Some(Arc::new(|m: &mut Message| {
        if let Some(v) = m.body.value.as_mut() {
            if v["type"] == json!("t") {
                v["payload"] = json!("tampered");
            }
        }
    })));
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep
        .dispatch(event_to(&p, "original"), Some(cb), None)
        .await
        .unwrap();
    let k = first_report(&mut rep).await;
    assert_eq!(error_code(&k), Some(DeliveryErrorCode::Invalid), "{k:?}");
    assert!(matches!(&k, ReportKind::Error { recipient, .. } if *recipient == p.r.addr));
    assert!(p.r.inbox.recv(QUIET).await.is_none());
    assert_eq!(p.b.events().stats().await.invalid, 1);
}

#[actix::test]
async fn bad_destination_remote_and_local() {
    let clock = ManualClock::new(T0);
    let p = pair(&clock, &clock).await;
    // a hyperty of A that is on the bus but not an event entity
    let (bus_only, _probe) = hyperty_actors::testkit::Probe::start();
    let plain = addr("hyperty://a.org/plain");
    p.a.bus()
        .add_listener(plain.clone(), bus_only, None)
        .await
        .unwrap();
    let ghost_b = addr("hyperty://b.org/ghost");
    let ghost_b2 = addr("hyperty://b.org/ghost2");
    let ghost_local = addr("hyperty-runtime://a.org/rt/nobody");
    let cc_ghost = addr("hyperty://b.org/cc-ghost");
    let ev = Event::builder("t", p.s.addr.clone())
        .to(ghost_b.clone())
        .to(ghost_b2.clone())
        .to(ghost_local.clone())
        .to(plain.clone())
        .cc(cc_ghost)
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep.dispatch(ev, Some(cb), None).await.unwrap();
    let got = reports(&mut rep, 4, is_error).await;
    let mut who: Vec<String> = got
        .iter()
        .map(|k| match k {
            ReportKind::Error { recipient, error } => {
                assert_eq!(error.code, DeliveryErrorCode::BadDestination);
                recipient.to_string()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    who.sort();
    assert_eq!(
        who,
        vec![
            "hyperty-runtime://a.org/rt/nobody",
            "hyperty://a.org/plain",
            "hyperty://b.org/ghost",
            "hyperty://b.org/ghost2"
        ]
    );
    // B answered once for its two unknown primaries, from its dispatcher, and not
    // for the unknown cc recipient
    let b = stats_until(&p.b, |s| s.notifications_sent == 1).await;
    assert_eq!(b.notifications_sent, 1);
    assert_eq!(b.bad_destinations, 3);
}

#[actix::test]
async fn expired_at_the_recipient_and_at_dispatch() {
    // B's clock is a second ahead: the event leaves A valid and arrives expired
    let clock_a = ManualClock::new(T0);
    let clock_b = ManualClock::new(T0 + 1_000);
    let mut p = pair(&clock_a, &clock_b).await;
    let ev =
        p.s.ep
            .builder("t", p.s.addr.clone())
            .to(p.r.addr.clone())
            .expires_at(T0 + 10)
            .build()
            .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep.dispatch(ev.clone(), Some(cb), None).await.unwrap();
    assert_eq!(
        error_code(&first_report(&mut rep).await),
        Some(DeliveryErrorCode::Expired)
    );
    assert!(p.r.inbox.recv(QUIET).await.is_none());

    // already expired at dispatch: nothing transmitted, EXPIRED for every recipient
    clock_a.advance(Duration::from_millis(11));
    let local = entity(&p.a, "hyperty://a.org/local").await;
    let ev = Event::builder("t", p.s.addr.clone())
        .to(p.r.addr.clone())
        .cc(local.addr.clone())
        .expires_at(T0 + 10)
        .payload("late")
        .build()
        .unwrap();
    let before = p.a.events().stats().await.transmissions;
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep.dispatch(ev, Some(cb), None).await.unwrap();
    let got = reports(&mut rep, 2, is_error).await;
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|k| error_code(k) == Some(DeliveryErrorCode::Expired)));
    assert_eq!(p.a.events().stats().await.transmissions, before);
}

struct Refuse(Address);
impl EventPolicy for Refuse {
    fn name(&self) -> &str {
        "refuse"
    }
    fn check(&self, r: &EventPolicyRequest<'_>) -> EventPolicyDecision {
        if r.recipient == &self.0 && r.direction == EventDirection::Incoming {
            EventPolicyDecision::Deny("no visitors".into())
        } else {
            EventPolicyDecision::Allow
        }
    }
}

#[actix::test]
async fn refused_when_the_recipients_policy_says_no() {
    let clock = ManualClock::new(T0);
    let mut p = pair(&clock, &clock).await;
    p.b.events()
        .add_policy(Arc::new(Refuse(p.r.addr.clone())))
        .await
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep
        .dispatch(event_to(&p, "let me in"), Some(cb), None)
        .await
        .unwrap();
    assert_eq!(
        error_code(&first_report(&mut rep).await),
        Some(DeliveryErrorCode::Refused)
    );
    assert!(p.r.inbox.recv(QUIET).await.is_none());
    assert_eq!(p.b.events().stats().await.refused, 1);
}

#[actix::test]
async fn no_reference_unless_the_recipient_holds_the_event_responded_to() {
    let clock = ManualClock::new(T0);
    let mut p = pair(&clock, &clock).await;
    let unknown = Event::builder("t", p.s.addr.clone())
        .to(addr("hyperty://a.org/x"))
        .build()
        .unwrap();
    let answer = Event::builder("answer", p.s.addr.clone())
        .to(p.r.addr.clone())
        .in_response_to(&unknown)
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep.dispatch(answer, Some(cb), None).await.unwrap();
    assert_eq!(
        error_code(&first_report(&mut rep).await),
        Some(DeliveryErrorCode::NoReference)
    );
    assert!(p.r.inbox.recv(QUIET).await.is_none());

    // once R holds the event, a response to it is delivered with the reference
    let question = event_to(&p, "question");
    p.s.ep.dispatch(question.clone(), None, None).await.unwrap();
    assert_eq!(
        p.r.inbox.recv(TIMEOUT).await.unwrap().event.id(),
        question.id()
    );
    let follow_up = Event::builder("followUp", p.s.addr.clone())
        .to(p.r.addr.clone())
        .in_response_to(&question)
        .build()
        .unwrap();
    p.s.ep.dispatch(follow_up, None, None).await.unwrap();
    let got = p.r.inbox.recv(TIMEOUT).await.unwrap();
    assert_eq!(
        got.in_response_to.as_ref().map(|e| e.id()),
        Some(question.id())
    );
}

#[actix::test]
async fn no_notification_unless_wanted_and_primary() {
    let clock = ManualClock::new(T0);
    let mut p = pair(&clock, &clock).await;
    let mut cc = entity(&p.b, "hyperty://b.org/cc").await;
    // no callbacks: no delivery notification
    p.s.ep
        .dispatch(event_to(&p, "quiet"), None, None)
        .await
        .unwrap();
    assert!(p.r.inbox.recv(TIMEOUT).await.is_some());
    // callbacks: only the primary recipient answers
    let ev = Event::builder("t", p.s.addr.clone())
        .to(p.r.addr.clone())
        .cc(cc.addr.clone())
        .payload("loud")
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep.dispatch(ev, Some(cb), None).await.unwrap();
    assert!(cc.inbox.recv(TIMEOUT).await.is_some());
    assert!(p.r.inbox.recv(TIMEOUT).await.is_some());
    assert_eq!(
        first_report(&mut rep).await,
        ReportKind::Delivery {
            recipient: p.r.addr.clone(),
            duplicate: false
        }
    );
    assert_eq!(p.b.events().stats().await.notifications_sent, 1);
    assert!(rep.recv(QUIET).await.is_none());
}

#[actix::test]
async fn on_timeout_for_primary_recipients_that_do_not_respond() {
    let clock = ManualClock::new(T0);
    let mut p = pair(&clock, &clock).await;
    let mut r2 = entity(&p.b, "hyperty://b.org/r2").await;
    let question = Event::builder("question", p.s.addr.clone())
        .to(p.r.addr.clone())
        .to(r2.addr.clone())
        .generated_at(T0)
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::all());
    p.s.ep
        .dispatch(question.clone(), Some(cb), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let held = p.r.inbox.recv(TIMEOUT).await.unwrap().event;
    assert!(r2.inbox.recv(TIMEOUT).await.is_some());
    // R answers; R2 only gets its delivery notification sent (not a response)
    let answer = Event::builder("answer", p.r.addr.clone())
        .to(p.s.addr.clone())
        .in_response_to(&held)
        .build()
        .unwrap();
    p.r.ep.dispatch(answer, None, None).await.unwrap();
    assert_eq!(
        p.s.inbox
            .recv(TIMEOUT)
            .await
            .unwrap()
            .in_response_to
            .unwrap()
            .id(),
        question.id()
    );
    assert_eq!(reports(&mut rep, 2, is_delivery).await.len(), 2);

    p.a.events().tick().await;
    assert!(
        rep.recv_matching(QUIET, |k| matches!(k, ReportKind::Timeout { .. }))
            .await
            .is_none(),
        "not yet"
    );
    clock.advance(Duration::from_millis(1_001));
    p.a.events().tick().await;
    let t = rep
        .recv_matching(TIMEOUT, |k| matches!(k, ReportKind::Timeout { .. }))
        .await
        .unwrap();
    assert_eq!(
        t.kind,
        ReportKind::Timeout {
            recipient: r2.addr.clone()
        }
    );
    p.a.events().tick().await;
    assert!(
        rep.recv_matching(QUIET, |k| matches!(k, ReportKind::Timeout { .. }))
            .await
            .is_none(),
        "once"
    );
    no_notification_reached_an_app(&mut p.s.inbox);
}

#[actix::test]
async fn local_recipients_get_the_same_statuses_without_a_network() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let s = entity(&rt, "hyperty://a.org/s").await;
    let mut r = entity(&rt, "hyperty://a.org/r").await;
    let ev = Event::builder("t", s.addr.clone())
        .to(r.addr.clone())
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    s.ep.dispatch(ev.clone(), Some(cb.clone()), None)
        .await
        .unwrap();
    assert_eq!(
        first_report(&mut rep).await,
        ReportKind::Delivery {
            recipient: r.addr.clone(),
            duplicate: false
        }
    );
    assert!(r.inbox.recv(TIMEOUT).await.is_some());
    let stray = Event::builder("t", s.addr.clone())
        .to(addr("hyperty://a.org/x"))
        .build()
        .unwrap();
    let reply = Event::builder("t", s.addr.clone())
        .to(r.addr.clone())
        .in_response_to(&stray)
        .build()
        .unwrap();
    s.ep.dispatch(reply, Some(cb), None).await.unwrap();
    assert_eq!(
        error_code(&first_report(&mut rep).await),
        Some(DeliveryErrorCode::NoReference)
    );
    // nothing crossed a network: local statuses are reported directly
    assert_eq!(rt.events().stats().await.notifications_sent, 0);
}

#[actix::test]
async fn a_notification_from_someone_who_is_not_a_primary_recipient_is_ignored() {
    let clock = ManualClock::new(T0);
    let p = pair(&clock, &clock).await;
    let ev = event_to(&p, "genuine");
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    p.s.ep.dispatch(ev.clone(), Some(cb), None).await.unwrap();
    // a forged `ok` from an entity the event was never addressed to
    let forged = json!({
        "type": "deliveryNotification", "source": "hyperty://b.org/mallory",
        "to": ["hyperty://a.org/s"], "inResponseTo": ev.id().to_string(),
        "deliveryNotificationWanted": false, "addressingSensitive": true, "payload": "ok"
    });
    inject_event(
        &p.a,
        &p.ab.stub.url,
        "hyperty-runtime://b.org/rt",
        &["hyperty://a.org/s"],
        forged,
    );
    assert_eq!(
        first_report(&mut rep).await,
        ReportKind::Delivery {
            recipient: p.r.addr.clone(),
            duplicate: false
        }
    );
    let st = stats_until(&p.a, |s| s.notifications_received == 2).await;
    assert_eq!(st.notifications_received, 2);
    assert!(rep.recv(QUIET).await.is_none(), "nothing about mallory");
}

/// An event for an address nobody holds, sent through the nodes — of the other
/// domain or of the sender's own — is reported `badDestination`: the node answers
/// the event's message 404 and the sender's dispatcher names its recipients.
#[actix::test]
async fn an_event_nobody_holds_is_a_bad_destination_through_the_nodes() {
    let clock = ManualClock::new(T0);
    let (nodes, rts) = federated(&["a.org", "b.org"], &clock).await;
    let s = hyperty_entity(&rts[1]).await;
    for to in ["hyperty://a.org/nobody", "hyperty://b.org/nobody"] {
        let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
        let ev = Event::builder("t", s.addr.clone())
            .to(addr(to))
            .build()
            .unwrap();
        s.ep.dispatch(ev, Some(cb), None).await.unwrap();
        let r = rep.recv(TIMEOUT).await.expect("a report");
        assert_eq!(
            error_code(&r.kind),
            Some(DeliveryErrorCode::BadDestination),
            "{to}: {r:?}"
        );
    }
    stop_all(&nodes).await;
}
