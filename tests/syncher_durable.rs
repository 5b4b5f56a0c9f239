//! Durability: reported and observed objects live in the runtime's redb store;
//! after a restart, `resume` brings reporters and observers back with the same
//! URLs and versions, and changes flow again through the node.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use serde_json::json;

const D: &str = "durable.test";

fn db(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hyperty-sync-{name}-{}.redb", uuid::Uuid::new_v4()))
}

async fn runtime(
    id: &str,
    path: &std::path::Path,
    node: &str,
) -> (
    RuntimeHandle,
    hyperty::runtime::StubHandle<hyperty::bridge::NodeStub>,
) {
    runtime_with(id, path, node, |_| {}).await
}

async fn runtime_with(
    id: &str,
    path: &std::path::Path,
    node: &str,
    tune: impl FnOnce(&mut RuntimeConfig),
) -> (
    RuntimeHandle,
    hyperty::runtime::StubHandle<hyperty::bridge::NodeStub>,
) {
    let mut c = RuntimeConfig::new(D);
    c.runtime_id = Some(id.to_owned());
    c.syncher.path = Some(path.to_path_buf());
    c.syncher.check_interval = Duration::from_millis(50);
    tune(&mut c);
    let rt = Runtime::start(c).unwrap();
    let stub = rt.attach_node(BridgeConfig::new(node)).await.unwrap();
    (rt, stub)
}

/// Ends a runtime as a process exit would: its socket closes, its store is written.
async fn stop(rt: RuntimeHandle, stub: hyperty::runtime::StubHandle<hyperty::bridge::NodeStub>) {
    stub.disconnect().await.unwrap();
    rt.shutdown().await;
}

#[actix::test]
async fn reporters_and_observers_resume_after_a_restart() {
    let node = start_node(D, |_| {});
    let (pa, pb) = (db("a"), db("b"));
    let (a, sa) = runtime("reporter-rt", &pa, &node.ws_url()).await;
    let (b, sb) = runtime("observer-rt", &pb, &node.ws_url()).await;
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let (bob, _) = inbox_hyperty(&b, D, None).await;
    let (alice_url, bob_url) = (alice.url().clone(), bob.url().clone());
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("log", "comm").with_data(json!({"lines": []})))
        .await
        .unwrap();
    let url = reporter.url().clone();
    let obs = bob.syncher().subscribe(&url).await.unwrap();
    for i in 0..5 {
        reporter.push("lines", i).await.unwrap();
    }
    assert!(
        eventually(TIMEOUT, || {
            let v = obs.version();
            async move { v == 5 }
        })
        .await
    );
    drop((reporter, obs));

    // the reporter's runtime restarts: same URL, same version, same observer
    stop(a, sa).await;
    let (a, sa) = runtime("reporter-rt", &pa, &node.ws_url()).await;
    let (alice, _) = inbox_hyperty(&a, D, Some(alice_url.clone())).await;
    assert_eq!(alice.url(), &alice_url);
    let mut reporters = alice.syncher().resume_reporters().await.unwrap();
    assert_eq!(reporters.len(), 1);
    let reporter = reporters.pop().unwrap();
    assert_eq!(reporter.url(), &url);
    assert_eq!(reporter.version(), 5);
    assert_eq!(reporter.data(), json!({"lines": [0, 1, 2, 3, 4]}));
    assert_eq!(
        reporter.observers().await.unwrap(),
        vec![bob_url.address().clone()]
    );
    reporter.push("lines", 5).await.unwrap();

    // the observer's runtime restarts too, and catches up
    stop(b, sb).await;
    reporter.push("lines", 6).await.unwrap();
    let (b, sb) = runtime("observer-rt", &pb, &node.ws_url()).await;
    let (bob, _) = inbox_hyperty(&b, D, Some(bob_url.clone())).await;
    let mut observers = bob.syncher().resume_observers().await.unwrap();
    assert_eq!(observers.len(), 1);
    let obs = observers.pop().unwrap();
    assert_eq!(obs.url(), &url);
    assert!(
        obs.version() >= 5,
        "resumed at its stored version, not from scratch"
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let v = obs.version();
            async move { v == 7 }
        })
        .await,
        "caught up: {}",
        obs.version()
    );
    reporter.push("lines", 7).await.unwrap();
    assert!(
        eventually(TIMEOUT, || {
            let v = obs.version();
            async move { v == 8 }
        })
        .await
    );
    assert_eq!(obs.snapshot(), reporter.snapshot());

    // nothing to resume for a hyperty that reported nothing
    let (carol, _) = inbox_hyperty(&b, D, None).await;
    assert!(carol.syncher().resume_reporters().await.unwrap().is_empty());
    stop(a, sa).await;
    stop(b, sb).await;
    node.stop().await;
    for p in [pa, pb] {
        let _ = std::fs::remove_file(p);
    }
}

/// While the reporter's runtime is away, the node answers the observer's checks
/// 404 (nobody holds the object): the replica is kept — and catches up once the
/// reporter is back — unless the object stays unheld past `gone_after`.
#[actix::test]
async fn an_observer_keeps_its_replica_while_the_reporter_is_away() {
    let node = start_node(D, |_| {});
    let (pa, pb, pc) = (db("a"), db("b"), db("c"));
    let (a, sa) = runtime("away-reporter", &pa, &node.ws_url()).await;
    let (b, sb) = runtime("patient-observer", &pb, &node.ws_url()).await;
    let (c, sc) = runtime_with("hasty-observer", &pc, &node.ws_url(), |c| {
        c.syncher.gone_after = Duration::from_millis(200);
    })
    .await;
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let alice_url = alice.url().clone();
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("log", "comm").with_data(json!({"n": 0})))
        .await
        .unwrap();
    let url = reporter.url().clone();
    let (bob, _) = inbox_hyperty(&b, D, None).await;
    let (carol, _) = inbox_hyperty(&c, D, None).await;
    let mut patient = bob.syncher().subscribe(&url).await.unwrap();
    let mut hasty = carol.syncher().subscribe(&url).await.unwrap();
    reporter.set("n", 1).await.unwrap();
    for o in [&patient, &hasty] {
        let v = || o.version();
        assert!(eventually(TIMEOUT, || async move { v() == 1 }).await);
    }
    drop(reporter);
    let not_found = || async {
        health(&node).await["stats"]["not_found"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = not_found().await;
    stop(a, sa).await;
    // both observers' checks are refused a few times...
    assert!(eventually(TIMEOUT, || async { not_found().await >= before + 6 }).await);
    // ...the hasty one gives the object up, the patient one keeps it
    let deleted = async {
        loop {
            match hasty.next().await {
                Some(SyncEvent::Deleted) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    };
    assert!(
        tokio::time::timeout(TIMEOUT, deleted)
            .await
            .unwrap_or(false),
        "dropped past gone_after"
    );
    while let Some(e) = patient.try_next() {
        assert_ne!(
            e,
            SyncEvent::Deleted,
            "the patient observer keeps its replica"
        );
    }
    assert_eq!(patient.version(), 1);

    // the reporter comes back: the kept replica catches up
    let (a, sa) = runtime("away-reporter", &pa, &node.ws_url()).await;
    let (alice, _) = inbox_hyperty(&a, D, Some(alice_url)).await;
    let reporter = alice
        .syncher()
        .resume_reporters()
        .await
        .unwrap()
        .pop()
        .unwrap();
    reporter.set("n", 2).await.unwrap();
    let v = || patient.version();
    assert!(
        eventually(TIMEOUT, || async move { v() == 2 }).await,
        "caught up: {}",
        patient.version()
    );
    assert_eq!(patient.snapshot(), reporter.snapshot());
    for (rt, stub) in [(a, sa), (b, sb), (c, sc)] {
        stop(rt, stub).await;
    }
    node.stop().await;
    for p in [pa, pb, pc] {
        let _ = std::fs::remove_file(p);
    }
}
