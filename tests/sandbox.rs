//! Sandboxes: crash isolation, restarts, restart limits, stop; registry resolve.

mod common;

use std::time::Duration;

use common::*;
use hyperty::prelude::*;
use hyperty_actors::registry::{DiscoverProtostub, GetSandbox, IsLocal, RegisterDataObject};
use serde_json::json;

async fn status_probe(rt: &RuntimeHandle, url: &HypertyUrl) -> ProbeRx {
    let (rec, probe) = Probe::start();
    rt.bus()
        .add_listener(url.status(), rec, None)
        .await
        .unwrap();
    probe
}

fn status_of(m: &Message) -> String {
    m.body
        .value
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

#[actix::test]
async fn a_panicking_hyperty_is_isolated_and_restarted_while_another_keeps_answering() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let crasher = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let steady = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let mut status = status_probe(&rt, &crasher).await;
    let me = rt.url().component("app");

    let err = rt
        .bus()
        .post(request(&me, &crasher, action("crash")))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert_eq!(err.response_code(), ResponseCode::InternalError);

    // the other hyperty of the same sandbox answers meanwhile
    let r = rt
        .bus()
        .post(request(&me, &steady, json!({})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));

    let m = status.recv(TIMEOUT).await.expect("restart reported");
    assert_eq!(status_of(&m), "restarted");
    assert!(m
        .body
        .desc
        .as_ref()
        .unwrap()
        .as_str()
        .unwrap()
        .contains("asked to crash"));

    // same address, new instance
    let r = rt
        .bus()
        .post(request(&me, &crasher, json!({})))
        .await
        .unwrap();
    assert_eq!(r.body.value.unwrap()["restarts"], json!(1));
    let info = rt
        .hyperties()
        .await
        .into_iter()
        .find(|h| h.url == crasher)
        .unwrap();
    assert_eq!((info.status, info.restarts), ("restarted", 1));
}

#[actix::test]
async fn requests_queued_for_a_crashing_hyperty_get_500() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let (spec, gate) = gated_worker("a.org");
    let w = rt.spawn_hyperty(spec).await.unwrap();
    let me = rt.url().component("app");
    let crash = rt.bus().post(request(&me, &w, action("crash")));
    let queued: Vec<_> = (0..3)
        .map(|_| rt.bus().post(request(&me, &w, json!({}))))
        .collect();
    gate.send(()).unwrap();
    assert!(matches!(crash.await, Err(BusError::Unavailable(_))));
    for q in queued {
        assert!(matches!(q.await, Err(BusError::Unavailable(_))));
    }
}

#[actix::test]
async fn remote_requesters_of_a_crashing_hyperty_get_a_500_response() {
    let (nodes, rts) = federated(
        vec![RuntimeConfig::new("a.org"), RuntimeConfig::new("b.org")],
        |_, _| {},
    )
    .await;
    let (a, b) = (&rts[0], &rts[1]);
    let wb = b.spawn_hyperty(worker("b.org")).await.unwrap();
    let wa = a.spawn_hyperty(worker("a.org")).await.unwrap();
    let r = a
        .bus()
        .post(request(&wa, &wb, action("crash")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::InternalError));
    assert_eq!(r.from, *wb.address());
    a.shutdown().await;
    b.shutdown().await;
    stop_all(&nodes).await;
}

#[actix::test]
async fn the_restart_limit_ends_in_failed_and_unregistered() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let spec = worker("a.org").with_restart(RestartPolicy {
        max_restarts: 1,
        window: Duration::from_secs(60),
    });
    let w = rt.spawn_hyperty(spec).await.unwrap();
    let mut status = status_probe(&rt, &w).await;
    let me = rt.url().component("app");
    let _ = rt.bus().post(request(&me, &w, action("crash"))).await;
    assert_eq!(status_of(&status.recv(TIMEOUT).await.unwrap()), "restarted");
    let _ = rt.bus().post(request(&me, &w, action("crash"))).await;
    let failed = status.recv(TIMEOUT).await.unwrap();
    assert_eq!(status_of(&failed), "failed");
    assert!(eventually(TIMEOUT, || async { rt.hyperties().await.is_empty() }).await);
    assert!(matches!(
        rt.bus().post(request(&me, &w, json!({}))).await,
        Err(BusError::NoRoute(_))
    ));
}

#[actix::test]
async fn a_hyperty_that_stops_itself_is_restarted_too() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let mut status = status_probe(&rt, &w).await;
    let me = rt.url().component("app");
    assert!(matches!(
        rt.bus().post(request(&me, &w, action("stop"))).await,
        Err(BusError::Unavailable(_))
    ));
    assert_eq!(status_of(&status.recv(TIMEOUT).await.unwrap()), "restarted");
    assert_eq!(
        rt.bus()
            .post(request(&me, &w, json!({})))
            .await
            .unwrap()
            .code(),
        Some(ResponseCode::Ok)
    );
}

#[actix::test]
async fn stopping_a_hyperty_unregisters_it_without_restart() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let mut status = status_probe(&rt, &w).await;
    rt.stop_hyperty(&w).await.unwrap();
    assert_eq!(status_of(&status.recv(TIMEOUT).await.unwrap()), "stopped");
    assert!(!rt.bus().has_listener(w.as_str()));
    assert!(rt.hyperties().await.is_empty());
    assert!(rt.stop_hyperty(&w).await.is_err());
}

#[actix::test]
async fn a_factory_that_panics_fails_the_spawn_cleanly() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let spec = HypertySpec::new("broken", "a.org", |ctx: HypertyContext| -> Worker {
        let _ = ctx;
        panic!("cannot build")
    });
    assert!(rt.spawn_hyperty(spec).await.is_err());
    assert!(rt.hyperties().await.is_empty());
    // the sandbox still works
    assert!(rt.spawn_hyperty(worker("a.org")).await.is_ok());
}

#[actix::test]
async fn sandboxes_are_per_provider() {
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let w1 = rt.spawn_hyperty(worker("one.org")).await.unwrap();
    let w2 = rt.spawn_hyperty(worker("two.org")).await.unwrap();
    let s1 = rt
        .registry()
        .send(GetSandbox(w1.address().clone()))
        .await
        .unwrap()
        .unwrap();
    let s2 = rt
        .registry()
        .send(GetSandbox(w2.address().clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s1.provider.as_str(), s2.provider.as_str()),
        ("one.org", "two.org")
    );
    assert_ne!(s1.addr, s2.addr);
    let again = rt
        .registry()
        .send(GetSandbox(addr("hyperty://one.org/x")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.addr, s1.addr);
    assert!(rt
        .registry()
        .send(GetSandbox(addr("hyperty://three.org/x")))
        .await
        .unwrap()
        .is_none());
}

#[actix::test]
async fn registry_resolves_local_stub_default_and_unknown() {
    let a = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let b = Runtime::start(RuntimeConfig::new("b.org")).unwrap();
    let w = a.spawn_hyperty(worker("a.org")).await.unwrap();
    assert_eq!(a.resolve(w.address().clone()).await, Route::Local);
    let remote = addr("hyperty://b.org/1");
    assert_eq!(a.resolve(remote.clone()).await, Route::Unknown);

    let (stub_ab, _) = link(&a, None, &b, Some("b.org")).await;
    assert_eq!(
        a.resolve(remote.clone()).await,
        Route::Stub(stub_ab.clone())
    );
    assert_eq!(
        a.resolve(addr("domain://registry.b.org")).await,
        Route::Stub(stub_ab.clone())
    );
    assert_eq!(
        a.registry()
            .send(DiscoverProtostub("b.org".into()))
            .await
            .unwrap(),
        Some(stub_ab.clone())
    );
    assert_eq!(
        a.registry()
            .send(DiscoverProtostub("c.org".into()))
            .await
            .unwrap(),
        None
    );
    assert!(
        eventually(TIMEOUT, || async {
            a.stubs()
                .await
                .iter()
                .any(|s| s.url == stub_ab && s.status == StubStatus::Live)
        })
        .await
    );

    // a default stub catches every other domain, never runtime-internal addresses
    let b2 = Runtime::start(RuntimeConfig::new("b.org")).unwrap();
    let (default_stub, _) = link(&a, None, &b2, None).await;
    assert_eq!(
        a.resolve(addr("hyperty://c.org/1")).await,
        Route::Stub(default_stub)
    );
    assert_eq!(a.resolve(a.url().component("none")).await, Route::Unknown);

    // is_local: own URL space, hyperties, data objects (with /subscription)
    let reg = a.registry();
    assert!(reg.send(IsLocal(a.url().component("sm"))).await.unwrap());
    assert!(reg.send(IsLocal(w.address().clone())).await.unwrap());
    assert!(!reg.send(IsLocal(remote)).await.unwrap());
    let obj = addr("comm://a.org/obj");
    reg.send(RegisterDataObject {
        url: obj.clone(),
        owner: w.clone(),
    })
    .await
    .unwrap()
    .unwrap();
    assert!(reg
        .send(IsLocal(addr("comm://a.org/obj/subscription")))
        .await
        .unwrap());
    assert!(!reg.send(IsLocal(addr("comm://a.org/other"))).await.unwrap());

    assert_eq!(a.remove_stub(Some("b.org")).await.unwrap(), stub_ab);
    assert!(a.remove_stub(Some("b.org")).await.is_err());
}

#[actix::test]
async fn stub_status_goes_through_the_lifecycle() {
    let a = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let (rec, mut probe) = Probe::start();
    let url_slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = url_slot.clone();
    let stub = a
        .add_stub(Some("b.org"), move |ctx| {
            *slot.lock().unwrap() = Some(ctx.status_address().clone());
            LoopStub {
                ctx,
                peer: Default::default(),
            }
        })
        .await
        .unwrap();
    let status_addr = url_slot.lock().unwrap().clone().unwrap();
    a.bus().add_listener(status_addr, rec, None).await.unwrap();
    stub.connect().await.unwrap();
    stub.disconnect().await.unwrap();
    let mut seen = Vec::new();
    while let Some(m) = probe.recv(Duration::from_millis(200)).await {
        assert_eq!(m.from, stub.url);
        seen.push(status_of(&m));
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen, ["in-progress", "live", "disconnected"]);
}
