//! User-visible notifications: a request reaches every runtime of the user, a
//! response from one of them reaches the requester and closes the notification on
//! all of them; replacement and expiration. The runtimes are connected through a
//! hub standing in for the messaging node (fan-out per destination runtime).

mod events_support;

use std::sync::Arc;
use std::time::Duration;

use events_support::*;
use hyperty::prelude::*;
use hyperty_actors::events::notifications::{ListNotifications, Respond, NOTIFICATION_RESPONSE};

const ALICE: &str = "user://idp.org/alice";

struct World {
    clock: ManualClock,
    svc: Entity,
    centers: Vec<Addr<NotificationCenter>>,
    _runtimes: Vec<RuntimeHandle>,
}

async fn world() -> World {
    let clock = ManualClock::new(T0);
    let service_rt = start("a.org", &clock);
    let phone = start("phone.org", &clock);
    let laptop = start("laptop.org", &clock);
    let hub = Arc::new(Hub::default());
    hub.join(&service_rt, |a| a.domain() == Some("a.org")).await;
    for rt in [&phone, &laptop] {
        let own = rt.url().domain().map(str::to_owned);
        hub.join(rt, move |a| {
            a.as_str() == ALICE || a.domain().map(str::to_owned) == own
        })
        .await;
    }
    let svc = entity(&service_rt, "hyperty://a.org/mail").await;
    let mut centers = Vec::new();
    for rt in [&phone, &laptop] {
        centers.push(
            NotificationCenter::start(rt.events(), addr(ALICE))
                .await
                .unwrap(),
        );
    }
    World {
        clock,
        svc,
        centers,
        _runtimes: vec![service_rt, phone, laptop],
    }
}

async fn shown_until(
    center: &Addr<NotificationCenter>,
    cond: impl Fn(&[ShownNotification]) -> bool,
) -> Vec<ShownNotification> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let list = center.send(ListNotifications).await.unwrap();
        if cond(&list) || tokio::time::Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn notify(w: &World, n: Notification) -> Event {
    let ev = n
        .request(w.svc.addr.clone(), &[addr(ALICE)], w.clock.now_ms())
        .unwrap();
    w.svc.ep.dispatch(ev.clone(), None, None).await.unwrap();
    ev
}

#[actix::test]
async fn a_request_reaches_every_runtime_and_one_answer_closes_it_everywhere() {
    let mut w = world().await;
    let request = notify(
        &w,
        Notification::new("You have mail")
            .urgency(Urgency::Normal)
            .body("<b>3</b> new messages")
            .action("default", "Open")
            .action("later", "Remind me later"),
    )
    .await;
    for c in &w.centers {
        let list = shown_until(c, |l| l.len() == 1).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].request.id(), request.id());
        assert_eq!(list[0].notification.summary, "You have mail");
        assert_eq!(list[0].state, NotificationState::Open);
    }

    // answered on the phone
    let phone = &w.centers[0];
    let bad = phone
        .send(Respond {
            request: request.id(),
            action: "explode".into(),
        })
        .await
        .unwrap();
    assert_eq!(bad.unwrap_err().code(), 1);
    let response = phone
        .send(Respond {
            request: request.id(),
            action: "later".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.source().as_str(), ALICE);
    assert_eq!(
        response.addressing().to(),
        std::slice::from_ref(&w.svc.addr)
    );
    assert_eq!(response.addressing().cc(), &[addr(ALICE)]);

    // the requester gets the chosen action, with the reference to its request
    let got = w.svc.inbox.recv(TIMEOUT).await.expect("response");
    assert_eq!(got.event.event_type().as_str(), NOTIFICATION_RESPONSE);
    assert_eq!(got.event.payload(), Some("later"));
    assert_eq!(
        got.in_response_to.as_ref().map(|e| e.id()),
        Some(request.id())
    );

    // and every runtime of the user sees it answered
    for c in &w.centers {
        let list = shown_until(c, |l| l[0].state != NotificationState::Open).await;
        assert_eq!(list[0].state, NotificationState::Answered("later".into()));
    }
    let again = w.centers[1]
        .send(Respond {
            request: request.id(),
            action: "default".into(),
        })
        .await
        .unwrap();
    assert!(again.is_err(), "already answered");
}

#[actix::test]
async fn a_request_can_replace_another_and_notifications_expire() {
    let w = world().await;
    let first = notify(&w, Notification::new("Meeting at 10")).await;
    let second = notify(
        &w,
        Notification::new("Meeting moved to 11").replaces(first.id()),
    )
    .await;
    for c in &w.centers {
        let list = shown_until(c, |l| l.len() == 2).await;
        assert_eq!(list[0].state, NotificationState::Replaced(second.id()));
        assert_eq!(list[1].state, NotificationState::Open);
    }
    let fleeting = notify(&w, Notification::new("Someone waved").expires_after(1_000)).await;
    for c in &w.centers {
        shown_until(c, |l| l.len() == 3).await;
    }
    w.clock.advance(Duration::from_millis(1_001));
    for c in &w.centers {
        let list = c.send(ListNotifications).await.unwrap();
        assert_eq!(list[2].request.id(), fleeting.id());
        assert_eq!(list[2].state, NotificationState::Expired);
        assert!(c
            .send(Respond {
                request: fleeting.id(),
                action: "default".into()
            })
            .await
            .unwrap()
            .is_err());
    }
}

#[actix::test]
async fn requests_go_to_users_only() {
    let w = world().await;
    let n = Notification::new("x");
    assert_eq!(
        n.request(w.svc.addr.clone(), std::slice::from_ref(&w.svc.addr), T0)
            .unwrap_err()
            .code(),
        1
    );
    assert_eq!(
        Notification::new("no default")
            .action("open", "Open")
            .request(w.svc.addr.clone(), &[addr(ALICE)], T0)
            .unwrap_err()
            .code(),
        1
    );
    let clock = ManualClock::new(T0);
    let rt = start("x.org", &clock);
    assert!(
        NotificationCenter::start(rt.events(), addr("hyperty://x.org/not-a-user"))
            .await
            .is_err()
    );
}
