//! The Local Event Cache: events that cannot be transmitted wait in a redb
//! database, are retransmitted with backoff once a route appears, expire, and
//! survive a graceful restart (crashes: `events_crash.rs`).

mod events_support;

use std::path::PathBuf;
use std::time::Duration;

use events_support::*;
use hyperty::prelude::*;

fn temp_db(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "hyperty-events-{name}-{}.redb",
        uuid::Uuid::new_v4()
    ))
}

async fn cached(rt: &RuntimeHandle, n: usize) -> bool {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if rt.events().cached().await == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

#[actix::test]
async fn an_unreachable_recipient_is_reached_once_a_route_appears() {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let b = start("b.org", &clock);
    let s = entity(&a, "hyperty://a.org/s").await;
    let mut r = entity(&b, "hyperty://b.org/r").await;
    let ev = Event::builder("t", s.addr.clone())
        .to(r.addr.clone())
        .payload("later")
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::all());
    s.ep.dispatch(ev.clone(), Some(cb), None).await.unwrap();
    let k = rep.recv(TIMEOUT).await.unwrap().kind;
    assert_eq!(k, ReportKind::Caching);
    assert!(cached(&a, 1).await);

    // the route appears, but the first retry is not due before the backoff (an
    // in-process stub: the test decides when the link exists)
    link(&a, Some("a.org"), &b, Some("b.org")).await;
    clock.advance(Duration::from_millis(100));
    a.events().tick().await;
    assert!(r.inbox.recv(QUIET).await.is_none());
    clock.advance(Duration::from_millis(400));
    a.events().tick().await;
    let got = r.inbox.recv(TIMEOUT).await.expect("retransmitted");
    assert_eq!(got.event.id(), ev.id());
    assert_eq!(
        rep.recv(TIMEOUT).await.unwrap().kind,
        ReportKind::Sending {
            recipient: r.addr.clone()
        }
    );
    assert_eq!(
        rep.recv(TIMEOUT).await.unwrap().kind,
        ReportKind::Delivery {
            recipient: r.addr.clone(),
            duplicate: false
        }
    );
    assert!(cached(&a, 0).await);
    // nothing more, however long we wait
    for _ in 0..3 {
        clock.advance(Duration::from_secs(120));
        a.events().tick().await;
    }
    assert!(r.inbox.recv(QUIET).await.is_none());
    let st = a.events().stats().await;
    assert_eq!((st.cached, st.retransmitted), (1, 1));
}

#[actix::test]
async fn a_stub_that_is_not_live_means_the_cache() {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let b = start("b.org", &clock);
    // an in-process stub: the test takes the link down
    let (ab, _ba) = link(&a, Some("a.org"), &b, Some("b.org")).await;
    let s = entity(&a, "hyperty://a.org/s").await;
    let mut r = entity(&b, "hyperty://b.org/r").await;
    ab.stub.disconnect().await.unwrap();
    let ev = Event::builder("t", s.addr.clone())
        .to(r.addr.clone())
        .build()
        .unwrap();
    s.ep.dispatch(ev, None, None).await.unwrap();
    assert!(cached(&a, 1).await);
    assert!(
        ab.events().is_empty(),
        "nothing handed to a stub that is down"
    );
    ab.stub.connect().await.unwrap();
    clock.advance(Duration::from_secs(1));
    a.events().tick().await;
    assert!(r.inbox.recv(TIMEOUT).await.is_some());
    assert!(cached(&a, 0).await);
    assert_eq!(ab.events().len(), 1);
}

#[actix::test]
async fn an_event_expiring_in_the_cache_is_reported_expired_and_dropped() {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let b = start("b.org", &clock);
    let s = entity(&a, "hyperty://a.org/s").await;
    let mut r = entity(&b, "hyperty://b.org/r").await;
    let mut local = entity(&a, "hyperty://a.org/local").await;
    let ev = Event::builder("t", s.addr.clone())
        .to(r.addr.clone())
        .cc(local.addr.clone())
        .expires_at(T0 + 1_000)
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    s.ep.dispatch(ev, Some(cb), None).await.unwrap();
    assert!(
        local.inbox.recv(TIMEOUT).await.is_some(),
        "local recipients are not held up"
    );
    assert!(cached(&a, 1).await);
    clock.advance(Duration::from_millis(1_001));
    a.events().tick().await;
    let k = rep.recv_matching(TIMEOUT, is_error).await.unwrap().kind;
    assert_eq!(
        k,
        ReportKind::Error {
            recipient: r.addr.clone(),
            error: DeliveryError::new(DeliveryErrorCode::Expired, "expired in the event cache"),
        }
    );
    assert!(cached(&a, 0).await);
    // a route now (an in-process stub, added when the test says) would be too
    // late: nothing left to send
    link(&a, Some("a.org"), &b, Some("b.org")).await;
    clock.advance(Duration::from_secs(60));
    a.events().tick().await;
    assert!(r.inbox.recv(QUIET).await.is_none());
    assert_eq!(a.events().stats().await.expired, 1);
}

#[actix::test]
async fn a_gracefully_restarted_runtime_resumes_retransmission_of_its_cache() {
    let clock = ManualClock::new(T0);
    let db = temp_db("restart");
    let start_a = || {
        Runtime::start(config("a.org", &clock).tap(|c| c.events.cache.path = Some(db.clone())))
            .unwrap()
    };
    let b = start("b.org", &clock);
    let mut r = entity(&b, "hyperty://b.org/r").await;

    // 1. cached while B is unreachable, then the runtime stops
    let a1 = start_a();
    let s = entity(&a1, "hyperty://a.org/s").await;
    let ev = Event::builder("t", s.addr.clone())
        .to(r.addr.clone())
        .payload("survives")
        .build()
        .unwrap();
    s.ep.dispatch(ev.clone(), None, None).await.unwrap();
    assert!(cached(&a1, 1).await);
    a1.shutdown().await;

    // 2. restarted on the same database: retransmitted once B is reachable
    let a2 = start_a();
    let _s = entity(&a2, "hyperty://a.org/s").await;
    assert_eq!(a2.events().cached().await, 1);
    // an in-process stub: the test decides when B becomes reachable
    link(&a2, Some("a.org"), &b, Some("b.org")).await;
    a2.events().tick().await;
    assert_eq!(r.inbox.recv(TIMEOUT).await.unwrap().event.id(), ev.id());
    assert!(cached(&a2, 0).await);
    a2.shutdown().await;

    let _ = std::fs::remove_file(&db);
}

#[actix::test]
async fn a_second_runtime_cannot_open_a_database_in_use() {
    let clock = ManualClock::new(T0);
    let db = temp_db("locked");
    let a = Runtime::start(config("a.org", &clock).tap(|c| c.events.cache.path = Some(db.clone())))
        .unwrap();
    let second =
        Runtime::start(config("a.org", &clock).tap(|c| c.events.cache.path = Some(db.clone())));
    match second {
        Err(hyperty::RuntimeError::Events(EventError::Cache(CacheError::Open(_)))) => {}
        other => panic!("expected a cache open error, got {other:?}"),
    }
    a.shutdown().await;
    let _ = std::fs::remove_file(&db);
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl<T> Tap for T {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[actix::test]
async fn a_burst_larger_than_the_stub_mailbox_loses_nothing() {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let b = start("b.org", &clock);
    // an in-process stub: its small mailbox is what the burst must overflow
    link(&a, Some("a.org"), &b, Some("b.org")).await;
    let s = entity(&a, "hyperty://a.org/s").await;
    let mut r = entity(&b, "hyperty://b.org/r").await;
    const N: usize = 200;
    let sends: Vec<_> = (0..N)
        .map(|i| {
            let ev = Event::builder("t", s.addr.clone())
                .to(r.addr.clone())
                .payload(i.to_string())
                .build()
                .unwrap();
            s.ep.dispatch(ev, None, None)
        })
        .collect();
    for res in futures_util::future::join_all(sends).await {
        res.unwrap();
    }
    let mut got = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while got.len() < N && tokio::time::Instant::now() < deadline {
        while let Some(e) = r.inbox.recv(Duration::from_millis(20)).await {
            assert!(
                got.insert(e.event.payload().unwrap().to_owned()),
                "delivered twice"
            );
        }
        clock.advance(Duration::from_secs(1));
        a.events().tick().await;
    }
    assert_eq!(got.len(), N);
    let st = a.events().stats().await;
    assert_eq!(st.transmissions as usize, N, "{st:?}");
    assert!(
        st.cached > 0,
        "the burst overflowed the stub's mailbox: {st:?}"
    );
    assert_eq!(st.retransmitted, st.cached, "{st:?}");
    assert!(cached(&a, 0).await);
}
