//! Protocol on the fly: a runtime of domain A reaches a hyperty of domain B
//! through the stub it downloads from B's catalogue, with no gateway and no
//! federation between the nodes.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use hyperty::prelude::*;
use hyperty::ua::{RuntimeUa, UaConfig};
use serde_json::json;

/// B's stub for its node's raw WebSocket dialect.
const RAW_STUB: &str = include_str!("../examples/protofly/raw_stub.js");

/// A catalogue serving `code` as the domain's `default` protocol stub.
fn stub_catalogue(domain: &str, endpoint: &str, code: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("protofly-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(d.join("protocolstub")).unwrap();
    std::fs::write(
        d.join("protocolstub/default.json"),
        json!({"objectName": "default", "objectType": "protocolstub", "version": "1.0.0",
               "sourcePackageURL": "default.js",
               "configuration": {"url": endpoint, "domain": domain},
               "constraints": {"browser": true}, "policies": [], "dataObjects": []})
        .to_string(),
    )
    .unwrap();
    std::fs::write(d.join("protocolstub/default.js"), code).unwrap();
    d
}

/// A node for `domain` without federation (no node-to-node link exists), with
/// `catalogue` served.
fn isolated_node(
    domain: &str,
    listener: TcpListener,
    catalogue: Option<PathBuf>,
) -> hyperty::node::NodeHandle {
    let mut cfg = node_config(domain);
    cfg.federation.enabled = false;
    cfg.catalogue.dir = catalogue;
    hyperty::node::start(listener, cfg).unwrap()
}

#[actix::test]
async fn a_runtime_reaches_another_domain_through_the_stub_it_downloads() {
    // domain B: a node serving its catalogue, a runtime with a hyperty
    let lb = TcpListener::bind("127.0.0.1:0").unwrap();
    let b_addr = lb.local_addr().unwrap();
    let b_dir = stub_catalogue("b.org", &format!("ws://{b_addr}/ws"), RAW_STUB);
    let node_b = isolated_node("b.org", lb, Some(b_dir.clone()));
    let rt_b = Runtime::start(RuntimeConfig::new("b.org")).unwrap();
    attach(&rt_b, &node_b).await;
    let bob = rt_b.spawn_hyperty(worker("b.org")).await.unwrap();

    // domain D: its catalogue's stub points at an endpoint where nothing listens
    let ld = TcpListener::bind("127.0.0.1:0").unwrap();
    let d_addr = ld.local_addr().unwrap();
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d_dir = stub_catalogue("d.org", &format!("ws://{nowhere}/ws"), RAW_STUB);
    let node_d = isolated_node("d.org", ld, Some(d_dir.clone()));

    // domain A: its own node, a runtime with a user agent that knows where catalogues are
    let node_a = isolated_node("a.org", TcpListener::bind("127.0.0.1:0").unwrap(), None);
    let rt_a = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    attach(&rt_a, &node_a).await;
    let mut ua = UaConfig::default();
    ua.resolve.insert("b.org".into(), b_addr.to_string());
    ua.resolve.insert("c.org".into(), nowhere.to_string());
    ua.resolve.insert("d.org".into(), d_addr.to_string());
    ua.connect_timeout = Duration::from_secs(2);
    RuntimeUa::start(&rt_a, ua).await.unwrap();
    assert!(rt_a.stubs().await.iter().all(|s| s.domain.is_none()));

    // the first messages for b.org wait while the stub is fetched, checked and started
    let me = rt_a.url().component("app");
    let first: Vec<_> = (0..3)
        .map(|i| {
            rt_a.bus()
                .post(request(&me, bob.address(), json!({"n": i})))
        })
        .collect();
    for (i, r) in futures_util::future::join_all(first)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.unwrap();
        assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
        assert_eq!(r.body.value.unwrap()["body"]["value"], json!({"n": i}));
        assert_eq!(r.to.first(), &me);
    }
    let stubs = rt_a.stubs().await;
    let b_stub = stubs
        .iter()
        .find(|s| s.domain.as_deref() == Some("b.org"))
        .expect("b.org's stub registered");
    assert_eq!(b_stub.status, StubStatus::Live);
    // later messages go straight through it
    let r = rt_a
        .bus()
        .post(request(&me, bob.address(), json!("again")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    // node A never saw b.org's traffic: it has no federation
    assert!(node_a.state().federation().is_none());

    // a catalogue that cannot be reached: 504 naming the domain
    let carol: Address = "hyperty://c.org/carol".parse().unwrap();
    let r = rt_a
        .bus()
        .post(request(&me, &carol, json!("hi")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::GatewayTimeout));
    let why = r.body.description.unwrap();
    assert!(
        why.contains("c.org") && why.contains("unreachable"),
        "{why}"
    );

    // a stub that never connects: 504 naming the domain, and nothing left registered
    let dave: Address = "hyperty://d.org/dave".parse().unwrap();
    let r = rt_a
        .bus()
        .post(request(&me, &dave, json!("hi")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::GatewayTimeout));
    let why = r.body.description.unwrap();
    assert!(
        why.contains("d.org") && why.contains("while connecting"),
        "{why}"
    );
    assert!(!rt_a
        .stubs()
        .await
        .iter()
        .any(|s| s.domain.as_deref() == Some("d.org")));

    rt_a.shutdown().await;
    rt_b.shutdown().await;
    stop_all(&[node_a, node_b, node_d]).await;
    let _ = std::fs::remove_dir_all(b_dir);
    let _ = std::fs::remove_dir_all(d_dir);
}
