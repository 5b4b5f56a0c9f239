//! M2M (seed 000): a device bootstraps with a device token, reports a context
//! object, an application discovers it in the domain registry by criteria and
//! observes it; the device's socket drops mid-stream and the application still
//! sees every reading, in order, with no gap.

mod common;

use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::identity::{DeviceToken, RegisterDevice, Secret};
use hyperty::prelude::*;
use serde_json::json;

const D: &str = "m2m.test";

#[actix::test]
async fn device_context_is_discovered_and_observed_without_gaps() {
    let node = start_node(D, |c| {
        c.auth.mode = hyperty::config::AuthMode::Required;
        c.session.grace_buffer = 4;
    });
    let idp = node.state().idp();
    let owner = user_token(&node, "operator").await;
    let creds = idp
        .send(RegisterDevice {
            label: Some("meter".into()),
            id_token: Secret::new(owner),
        })
        .await
        .unwrap()
        .unwrap();
    let token = idp
        .send(DeviceToken {
            device: creds.device.clone(),
            secret: creds.secret.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    let mut dc = RuntimeConfig::new(D);
    dc.runtime_id = Some(creds.device.clone());
    let device = Runtime::start(dc).unwrap();
    let mut bridge = BridgeConfig::new(node.ws_url());
    bridge.token = Some(token.token.expose().to_owned());
    device.attach_node(bridge).await.unwrap();
    assert_eq!(device.url().as_str(), creds.runtime);

    let (sensor, _) = inbox_hyperty(&device, D, None).await;
    let ctx = sensor
        .syncher()
        .create(
            ObjectSpec::new("meter-1", "context")
                .with_schema(json!({"properties": {"scheme": {"const": "context"}, "values": {"type": "array", "items": {"type": "number"}}}}))
                .with_resources(&["power"])
                .with_data(json!({"values": []})),
        )
        .await
        .unwrap();
    assert_eq!(ctx.url().scheme(), "context");

    let mut ac = RuntimeConfig::new(D);
    ac.syncher.check_interval = Duration::from_millis(100);
    let app_rt = Runtime::start(ac).unwrap();
    let mut bridge = BridgeConfig::new(node.ws_url());
    bridge.token = Some(user_token(&node, "analyst").await);
    app_rt.attach_node(bridge).await.unwrap();
    let (app, _) = inbox_hyperty(&app_rt, D, None).await;
    assert!(app
        .syncher()
        .discover(&["context"], &["temperature"], None)
        .await
        .unwrap()
        .is_empty());
    let found = app
        .syncher()
        .discover(&["context"], &["power"], None)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].url, ctx.url().as_str());
    assert_eq!(found[0].reporter, sensor.url().as_str());
    assert_eq!(found[0].status, "live");
    let by_reporter = app
        .syncher()
        .discover(&["context"], &[], Some(sensor.url().address()))
        .await
        .unwrap();
    assert_eq!(by_reporter.len(), 1);
    let mut obs = app
        .syncher()
        .subscribe(&found[0].url.parse().unwrap())
        .await
        .unwrap();

    let router = node.state().router().clone();
    for i in 0..60u64 {
        ctx.push("values", i).await.unwrap();
        if i == 30 {
            let key = router
                .session_of(device.url().as_str())
                .expect("device session");
            router.kick(&key, "network lost");
        }
    }
    let mut seen = Vec::new();
    while seen.len() < 60 {
        match tokio::time::timeout(Duration::from_secs(20), obs.next())
            .await
            .expect("in time")
        {
            Some(SyncEvent::Changed(c)) => seen.push(c.version),
            Some(SyncEvent::Resync { version }) => panic!("a gap: resynchronised at {version}"),
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    assert_eq!(
        seen,
        (1..=60).collect::<Vec<_>>(),
        "every reading, in order"
    );
    assert_eq!(obs.snapshot(), ctx.snapshot());
    assert!(
        router.snapshot().reopened >= 1,
        "the device came back on its session"
    );
    device.shutdown().await;
    app_rt.shutdown().await;
    node.stop().await;
}
