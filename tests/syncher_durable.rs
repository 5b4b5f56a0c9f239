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
    let mut c = RuntimeConfig::new(D);
    c.runtime_id = Some(id.to_owned());
    c.syncher.path = Some(path.to_path_buf());
    c.syncher.check_interval = Duration::from_millis(50);
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
