//! The Runtime User Agent against a real node's catalogue over HTTP: signed
//! descriptors, hashed packages, sandboxed JavaScript, updates in place.

mod common;

use std::path::PathBuf;

use common::*;
use hyperty::actors::catalogue::IntegrityError;
use hyperty::prelude::*;
use hyperty::ua::{CheckForUpdate, LoadHyperty, RuntimeUa, UaConfig, UaError, Update};
use serde_json::{json, Value};

/// Holds requests with `{hold: true}`, answers the others with its version.
const ECHO_V1: &str = r#"
    var held = [];
    bus.listen(function (m) {
        if (m.type === "response") return;
        if (m.body.value && m.body.value.hold) { held.push(m); return; }
        bus.reply(m, 200, {version: 1, got: m.body.value});
    });
"#;
/// Answers everything, with its version.
const ECHO_V2: &str = r#"
    bus.listen(function (m) {
        if (m.type !== "response") bus.reply(m, 200, {version: 2, got: m.body.value});
    });
"#;
/// Spins, allocates without bound, or throws on request.
const FRAGILE: &str = r#"
    bus.listen(function (m) {
        var v = m.body.value;
        if (v === "spin") for (;;) {}
        if (v === "bomb") { var a = []; for (;;) a.push(new Array(65536).fill(v)); }
        if (v === "throw") throw new Error("asked to throw");
        bus.reply(m, 200, "fine");
    });
"#;

/// A catalogue directory with hyperties `(name, version, code)`.
fn catalogue(hyperties: &[(&str, &str, &str)]) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ua-catalogue-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(d.join("hyperty")).unwrap();
    for (name, version, code) in hyperties {
        std::fs::write(
            d.join(format!("hyperty/{name}.json")),
            json!({"objectName": name, "objectType": "hyperty", "version": version,
                   "sourcePackageURL": format!("{name}.js"), "configuration": {"greeting": "hi"},
                   "constraints": {}, "policies": [], "dataObjects": []})
            .to_string(),
        )
        .unwrap();
        std::fs::write(d.join(format!("hyperty/{name}.js")), code).unwrap();
    }
    d
}

fn ua_config(node: &hyperty::node::NodeHandle) -> UaConfig {
    let mut c = UaConfig::default();
    c.resolve
        .insert("b.org".into(), node.local_addr().to_string());
    c.js.cpu_per_call = std::time::Duration::from_millis(300);
    c.js.memory_bytes = 8 << 20;
    c
}

/// Loads b.org's hyperty `name` through `ua`.
async fn load(ua: &actix::Addr<RuntimeUa>, name: &str) -> Result<HypertyUrl, UaError> {
    ua.send(LoadHyperty {
        url: format!("hyperty-catalogue://b.org/.well-known/hyperty/{name}"),
    })
    .await
    .unwrap()
}

async fn ask(rt: &RuntimeHandle, to: &HypertyUrl, value: Value) -> Message {
    try_ask(rt, to, value).await.unwrap()
}

async fn try_ask(rt: &RuntimeHandle, to: &HypertyUrl, value: Value) -> Result<Message, BusError> {
    let me = rt.url().component("app");
    rt.bus().post(request(&me, to.address(), value)).await
}

#[actix::test]
async fn a_downloaded_hyperty_runs_and_a_changed_byte_is_refused() {
    let dir = catalogue(&[("Echo", "1.0.0", ECHO_V1)]);
    let node = start_node("b.org", |c| c.catalogue.dir = Some(dir.clone()));
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let ua = RuntimeUa::start(&rt, ua_config(&node)).await.unwrap();

    let echo = load(&ua, "Echo").await.unwrap();
    let r = ask(&rt, &echo, json!("ping")).await;
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    assert_eq!(r.body.value, Some(json!({"version": 1, "got": "ping"})));
    assert!(rt
        .hyperties()
        .await
        .iter()
        .any(|h| h.url == echo && h.provider == "b.org"));

    // the same descriptor, read straight over http, also works
    let direct = ua
        .send(LoadHyperty {
            url: format!("{}/.well-known/hyperty/Echo", node.http_url()),
        })
        .await
        .unwrap()
        .unwrap();
    assert_ne!(direct, echo);

    // a man in the middle: the node's signed descriptor and keys, a package with one byte changed
    let proxy = tamper_proxy(&node, TamperWith::Package).await;
    let err = ua
        .send(LoadHyperty {
            url: format!("http://{proxy}/.well-known/hyperty/Echo"),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, UaError::Integrity(IntegrityError::Mismatch { .. })),
        "{err}"
    );
    assert_eq!(err.response_code(), ResponseCode::Forbidden);
    // ... or a descriptor whose signed payload was edited
    let proxy = tamper_proxy(&node, TamperWith::Descriptor).await;
    let err = ua
        .send(LoadHyperty {
            url: format!("http://{proxy}/.well-known/hyperty/Echo"),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, UaError::Signature { .. }), "{err}");

    // unknown names, unreachable catalogues, the wrong object type
    let err = load(&ua, "Nope").await.unwrap_err();
    assert!(matches!(err, UaError::NotFound(_)), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = ua
        .send(LoadHyperty {
            url: format!("http://{closed}/.well-known/hyperty/Echo"),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, UaError::Unreachable { .. }), "{err}");
    assert_eq!(err.response_code(), ResponseCode::GatewayTimeout);
    // nothing half-started: only the two good loads are registered
    assert_eq!(rt.hyperties().await.len(), 2);

    // the wire face at <runtime>/ua
    let me = rt.url().component("app");
    let r = rt
        .bus()
        .post(
            Message::new(MessageType::Execute, me, rt.url().component("ua")).with_value(json!({
                "method": "loadHyperty", "url": "hyperty-catalogue://b.org/.well-known/hyperty/Nope"
            })),
        )
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
    assert!(r.body.description.unwrap().contains("Nope"));

    rt.shutdown().await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

enum TamperWith {
    Package,
    Descriptor,
}

/// Serves the node's descriptor and key set, changing one byte of the package
/// or of the signed payload.
async fn tamper_proxy(node: &hyperty::node::NodeHandle, what: TamperWith) -> std::net::SocketAddr {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let base = node.http_url();
    let (_, mut descriptor) =
        http_get_json(&format!("{base}/.well-known/hyperty/Echo"), None).await;
    let (_, jwks) = http_get_json(&format!("{base}/.well-known/jwks.json"), None).await;
    let mut package = awc::Client::default()
        .get(format!("{base}/.well-known/hyperty/Echo/sourcePackage"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap()
        .to_vec();
    match what {
        TamperWith::Package => package[10] ^= 0x20,
        TamperWith::Descriptor => {
            let jws = descriptor["signature"].as_str().unwrap().to_owned();
            let parts: Vec<&str> = jws.split('.').collect();
            let mut payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
            let at = payload.len() / 2;
            payload[at] ^= 0x01;
            descriptor["signature"] = json!(format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(payload),
                parts[2]
            ));
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = actix_web::HttpServer::new(move || {
        let (d, j, p) = (descriptor.clone(), jwks.clone(), package.clone());
        actix_web::App::new()
            .route(
                "/.well-known/hyperty/Echo",
                actix_web::web::get().to(move || {
                    let d = d.clone();
                    async move { actix_web::HttpResponse::Ok().json(d) }
                }),
            )
            .route(
                "/.well-known/jwks.json",
                actix_web::web::get().to(move || {
                    let j = j.clone();
                    async move { actix_web::HttpResponse::Ok().json(j) }
                }),
            )
            .route(
                "/.well-known/hyperty/Echo/sourcePackage",
                actix_web::web::get().to(move || {
                    let p = p.clone();
                    async move { actix_web::HttpResponse::Ok().body(p) }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    addr
}

#[actix::test]
async fn a_loop_a_memory_bomb_or_an_exception_fails_only_that_hyperty() {
    let dir = catalogue(&[("Fragile", "1", FRAGILE), ("Echo", "1", ECHO_V1)]);
    let node = start_node("b.org", |c| c.catalogue.dir = Some(dir.clone()));
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let ua = RuntimeUa::start(&rt, ua_config(&node)).await.unwrap();
    let echo = load(&ua, "Echo").await.unwrap();
    for poison in ["spin", "bomb", "throw"] {
        let fragile = load(&ua, "Fragile").await.unwrap();
        let (probe, mut status) = Probe::start();
        rt.bus()
            .add_listener(fragile.status(), probe, None)
            .await
            .unwrap();
        assert_eq!(
            ask(&rt, &fragile, json!("hello")).await.body.value,
            Some(json!("fine"))
        );

        // the request in flight fails with 500 when the sandbox stops
        let err = try_ask(&rt, &fragile, json!(poison)).await.unwrap_err();
        assert!(matches!(err, BusError::Unavailable(_)), "{poison}: {err}");
        assert_eq!(err.response_code(), ResponseCode::InternalError);
        let failed = status
            .recv_matching(TIMEOUT, |m| m.body.value == Some(json!("failed")))
            .await
            .unwrap_or_else(|| panic!("{poison}: no failed status"));
        assert!(failed.body.desc.is_some(), "{poison}");
        // gone from the registry and from the bus; the runtime keeps serving
        assert!(
            eventually(TIMEOUT, || async {
                !rt.hyperties().await.iter().any(|h| h.url == fragile)
            })
            .await,
            "{poison}"
        );
        let r = try_ask(&rt, &fragile, json!("hello")).await;
        assert!(matches!(r, Err(BusError::NoRoute(_))), "{poison}: {r:?}");
        let r = ask(&rt, &echo, json!(poison)).await;
        assert_eq!(r.body.value, Some(json!({"version": 1, "got": poison})));
    }
    rt.shutdown().await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[actix::test]
async fn a_newer_version_replaces_the_old_keeping_address_and_pending_requests() {
    let v1 = catalogue(&[("Echo", "1.9.0", ECHO_V1)]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap();
    let mut cfg = node_config("b.org");
    cfg.catalogue.dir = Some(v1.clone());
    let node = hyperty::node::start(listener, cfg).unwrap();
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let ua = RuntimeUa::start(&rt, ua_config(&node)).await.unwrap();
    let echo = load(&ua, "Echo").await.unwrap();
    assert_eq!(
        ua.send(CheckForUpdate {
            hyperty: echo.clone()
        })
        .await
        .unwrap(),
        Ok(Update::UpToDate("1.9.0".into()))
    );
    // a request the old version holds unanswered
    let me = rt.url().component("app");
    let held = rt
        .bus()
        .post(request(&me, echo.address(), json!({"hold": true})));
    let held = actix_rt::spawn(held);
    assert_eq!(
        ask(&rt, &echo, json!("before")).await.body.value,
        Some(json!({"version": 1, "got": "before"}))
    );

    // the domain publishes 1.10.0 (same port, new node, new signing key)
    node.stop().await;
    let v2 = catalogue(&[("Echo", "1.10.0", ECHO_V2)]);
    let mut cfg = node_config("b.org");
    cfg.catalogue.dir = Some(v2.clone());
    let node = hyperty::node::start(std::net::TcpListener::bind(port).unwrap(), cfg).unwrap();

    assert_eq!(
        ua.send(CheckForUpdate {
            hyperty: echo.clone()
        })
        .await
        .unwrap(),
        Ok(Update::Replaced("1.9.0".into(), "1.10.0".into()))
    );
    // the held request is answered by the new version, at the same address
    let r = held.await.unwrap().unwrap();
    assert_eq!(
        r.body.value,
        Some(json!({"version": 2, "got": {"hold": true}}))
    );
    assert_eq!(r.from, *echo.address());
    assert_eq!(
        ask(&rt, &echo, json!("after")).await.body.value,
        Some(json!({"version": 2, "got": "after"}))
    );
    assert_eq!(rt.hyperties().await.len(), 1);
    rt.shutdown().await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(v1);
    let _ = std::fs::remove_dir_all(v2);
}

/// A catalogue directory with one hyperty `name` of `version` whose descriptor
/// carries `constraints` and `policies`.
fn catalogue_with(
    name: &str,
    version: &str,
    code: &str,
    constraints: Value,
    policies: Value,
) -> PathBuf {
    let d = catalogue(&[(name, version, code)]);
    let file = d.join(format!("hyperty/{name}.json"));
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    doc["constraints"] = constraints;
    doc["policies"] = policies;
    std::fs::write(&file, doc.to_string()).unwrap();
    d
}

#[actix::test]
async fn a_descriptor_whose_constraints_the_runtime_cannot_meet_is_refused_before_anything_starts()
{
    let dir = catalogue_with(
        "Browsery",
        "1.0.0",
        ECHO_V2,
        json!({"browser": true}),
        json!([]),
    );
    let stub_dir = dir.join("protocolstub");
    std::fs::create_dir_all(&stub_dir).unwrap();
    std::fs::write(
        stub_dir.join("default.json"),
        json!({"objectName": "default", "objectType": "protocolstub", "version": "1.0.0",
               "sourcePackageURL": "default.js", "configuration": {"url": "ws://127.0.0.1:9/ws"},
               "constraints": {"node": true, "camera": true}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        stub_dir.join("default.js"),
        "stub.onconnect(function () {});",
    )
    .unwrap();
    std::fs::write(
        dir.join("hyperty/Nodey.json"),
        json!({"objectName": "Nodey", "objectType": "hyperty", "version": "1.0.0",
               "sourcePackageURL": "Browsery.js", "constraints": {"node": true, "browser": false}})
        .to_string(),
    )
    .unwrap();
    let node = start_node("b.org", |c| c.catalogue.dir = Some(dir.clone()));
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let ua = RuntimeUa::start(&rt, ua_config(&node)).await.unwrap();

    let err = load(&ua, "Browsery").await.unwrap_err();
    assert!(matches!(err, UaError::Unmet { .. }), "{err:?}");
    assert_eq!(err.response_code(), ResponseCode::Forbidden);
    assert!(err.to_string().contains("\"browser\""), "{err}");
    assert!(rt.hyperties().await.is_empty(), "nothing registered");

    let err = ua
        .send(hyperty::ua::LoadStub {
            domain: "b.org".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("\"camera\""), "{err}");
    assert!(
        rt.stubs().await.iter().all(|s| s.domain.is_none()),
        "no stub registered"
    );

    // a descriptor the runtime meets loads
    let nodey = load(&ua, "Nodey").await.unwrap();
    assert_eq!(
        ask(&rt, &nodey, json!(1)).await.body.value,
        Some(json!({"version": 2, "got": 1}))
    );
    rt.shutdown().await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[actix::test]
async fn a_descriptors_policies_apply_to_its_hyperty_only_and_follow_its_updates() {
    use hyperty::actors::policy::{ListPolicies, PolicyConfig};
    let guard = json!([{"id": "no-deletes", "rules": [
        {"id": "deny-delete", "effect": "deny", "target": {"types": ["delete"]}}]}]);
    let v1 = catalogue_with("Guarded", "1.0.0", ECHO_V2, json!({}), guard);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap();
    let mut cfg = node_config("b.org");
    cfg.catalogue.dir = Some(v1.clone());
    let node = hyperty::node::start(listener, cfg).unwrap();

    // a runtime without a policy engine cannot enforce them: refused
    let bare = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let bare_ua = RuntimeUa::start(&bare, ua_config(&node)).await.unwrap();
    let err = load(&bare_ua, "Guarded").await.unwrap_err();
    assert!(err.to_string().contains("no policy engine"), "{err}");
    assert!(bare.hyperties().await.is_empty());
    bare.shutdown().await;

    let mut rc = RuntimeConfig::new("a.org");
    rc.policy = Some(PolicyConfig::default());
    let rt = Runtime::start(rc).unwrap();
    let ua = RuntimeUa::start(&rt, ua_config(&node)).await.unwrap();
    let guarded = load(&ua, "Guarded").await.unwrap();
    let other = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let me = rt.url().component("app");
    let delete = |to: &Address| Message::new(MessageType::Delete, me.clone(), to.clone());

    match rt.bus().post(delete(guarded.address())).await {
        Err(BusError::Rejected(r)) => {
            assert_eq!(r.code, ResponseCode::Forbidden);
            assert_eq!(r.description, "Blocked by policy");
        }
        other => panic!("not blocked: {other:?}"),
    }
    // other messages to it, and deletes to other hyperties, pass
    assert_eq!(
        ask(&rt, &guarded, json!("hi")).await.code(),
        Some(ResponseCode::Ok)
    );
    let r = rt.bus().post(delete(other.address())).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
    let pdp = rt.pdp().unwrap().addr().clone();
    let ids: Vec<String> = pdp
        .send(ListPolicies)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![format!("{}#no-deletes", guarded.as_str())]);

    // version 2 ships no policies: its update removes them
    node.stop().await;
    let v2 = catalogue_with("Guarded", "2.0.0", ECHO_V2, json!({}), json!([]));
    let mut cfg = node_config("b.org");
    cfg.catalogue.dir = Some(v2.clone());
    let node = hyperty::node::start(std::net::TcpListener::bind(port).unwrap(), cfg).unwrap();
    assert_eq!(
        ua.send(CheckForUpdate {
            hyperty: guarded.clone()
        })
        .await
        .unwrap(),
        Ok(Update::Replaced("1.0.0".into(), "2.0.0".into()))
    );
    assert!(pdp.send(ListPolicies).await.unwrap().is_empty());
    let r = rt.bus().post(delete(guarded.address())).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");

    // a hyperty that fails takes its policies with it
    let fragile = json!({"objectName": "Fragile", "objectType": "hyperty", "version": "1.0.0",
        "sourcePackage": {"sourceCode": FRAGILE},
        "policies": [{"id": "p", "rules": [{"id": "r", "effect": "deny", "target": {"types": ["delete"]}}]}]});
    std::fs::write(v2.join("hyperty/Fragile.json"), fragile.to_string()).unwrap();
    node.state().catalogue().reload().unwrap();
    let fragile = load(&ua, "Fragile").await.unwrap();
    assert_eq!(pdp.send(ListPolicies).await.unwrap().len(), 1);
    assert!(try_ask(&rt, &fragile, json!("throw")).await.is_err());
    assert!(
        eventually(TIMEOUT, || async {
            pdp.send(ListPolicies).await.unwrap().is_empty()
        })
        .await,
        "policies removed"
    );

    rt.shutdown().await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(v1);
    let _ = std::fs::remove_dir_all(v2);
}

#[actix::test]
async fn the_node_reloads_its_catalogue_and_check_for_update_replaces_the_running_hyperty() {
    let dir = catalogue(&[("Echo", "1.0.0", ECHO_V1)]);
    let node = start_node("b.org", |c| {
        c.catalogue.dir = Some(dir.clone());
        c.catalogue.reload_interval_ms = 50;
    });
    let served = format!("http://{}/.well-known/hyperty/Echo", node.local_addr());
    let version = || {
        let served = served.clone();
        async move { http_get_json(&served, None).await.1["version"].clone() }
    };
    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let ua = RuntimeUa::start(&rt, ua_config(&node)).await.unwrap();
    let echo = load(&ua, "Echo").await.unwrap();
    let me = rt.url().component("app");
    let held = actix_rt::spawn(
        rt.bus()
            .post(request(&me, echo.address(), json!({"hold": true}))),
    );
    assert_eq!(
        ask(&rt, &echo, json!("before")).await.body.value,
        Some(json!({"version": 1, "got": "before"}))
    );

    // the domain changes the descriptor in place: served without a restart
    let write = |version: &str, code: &str| {
        std::fs::write(dir.join("hyperty/Echo.js"), code).unwrap();
        std::fs::write(
            dir.join("hyperty/Echo.json"),
            json!({"objectName": "Echo", "objectType": "hyperty", "version": version,
                   "sourcePackageURL": "Echo.js"})
            .to_string(),
        )
        .unwrap();
    };
    write("1.1.0", ECHO_V2);
    assert!(eventually(TIMEOUT, || async { version().await == json!("1.1.0") }).await);
    assert_eq!(
        ua.send(CheckForUpdate {
            hyperty: echo.clone()
        })
        .await
        .unwrap(),
        Ok(Update::Replaced("1.0.0".into(), "1.1.0".into()))
    );
    let r = held.await.unwrap().unwrap();
    assert_eq!(
        r.body.value,
        Some(json!({"version": 2, "got": {"hold": true}}))
    );
    assert_eq!(r.from, *echo.address());

    // a bad file: the previous catalogue stays served, and the error is kept
    std::fs::write(dir.join("hyperty/Broken.json"), "{not json").unwrap();
    write("1.2.0", ECHO_V1);
    let state = node.state().clone();
    assert!(
        eventually(TIMEOUT, || async {
            state
                .catalogue()
                .last_error()
                .is_some_and(|e| e.contains("Broken.json"))
        })
        .await
    );
    assert_eq!(version().await, json!("1.1.0"));
    assert_eq!(
        http_get_json(
            &format!("http://{}/.well-known/hyperty", node.local_addr()),
            None
        )
        .await
        .1,
        json!(["Echo"])
    );
    assert_eq!(
        ua.send(CheckForUpdate {
            hyperty: echo.clone()
        })
        .await
        .unwrap(),
        Ok(Update::UpToDate("1.1.0".into()))
    );
    // fixed: the next look serves the new catalogue
    std::fs::remove_file(dir.join("hyperty/Broken.json")).unwrap();
    assert!(eventually(TIMEOUT, || async { version().await == json!("1.2.0") }).await);
    assert_eq!(node.state().catalogue().last_error(), None);

    rt.shutdown().await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
