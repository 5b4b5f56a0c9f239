//! QoS: a runtime's connectivity statistics over the bus (round trip, traffic,
//! reconnections), periodic reports to the node's broker at `domain://qos.<D>`,
//! served at `GET /qos`; reports about another runtime are refused.

mod common;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use hyperty_actors::qos::{GetReportingState, GET_STATISTICS, SEND_TO_BROKER};
use serde_json::{json, Value};

const D: &str = "net.test";

async fn attached(node: &hyperty::node::NodeHandle) -> (RuntimeHandle, StubHandle) {
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    let stub = rt
        .attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    (rt, stub)
}

type StubHandle = hyperty::StubHandle<hyperty::bridge::NodeStub>;

/// `execute {method, params}` from `<rt>/app` to `<rt>/qos`, over the bus.
async fn call(rt: &RuntimeHandle, method: Value, params: Option<Value>) -> Message {
    let mut m = Message::new(
        MessageType::Execute,
        rt.url().component("app"),
        rt.url().component("qos"),
    );
    m.body.extra.insert("method".to_owned(), method);
    if let Some(p) = params {
        m.body.extra.insert("params".to_owned(), p);
    }
    rt.bus().post(m).await.unwrap()
}

/// The statistics of the runtime's bridge (its default stub), as JSON.
async fn bridge_stats(rt: &RuntimeHandle) -> Value {
    let r = call(rt, json!(GET_STATISTICS), None).await;
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{}", r.to_json());
    let v = r.body.value.unwrap();
    assert_eq!(v["runtime"], rt.url().as_str());
    let stubs = v["stubs"].as_array().cloned().unwrap_or_default();
    stubs
        .into_iter()
        .find(|s| s["domain"].is_null())
        .unwrap_or_else(|| panic!("no default stub in {v}"))
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} in {v}"))
}

#[actix::test]
async fn statistics_show_round_trip_traffic_and_reconnections() {
    let node = start_node(D, |_| {});
    let (rt, _stub) = attached(&node).await;

    // the bridge pings as soon as it is live: a round trip is measured
    assert!(
        eventually(TIMEOUT, || async {
            bridge_stats(&rt).await["roundTrip"]["lastMs"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0)
        })
        .await,
        "{}",
        bridge_stats(&rt).await
    );
    let before = bridge_stats(&rt).await;
    assert_eq!(before["status"], "live");
    assert_eq!(before["queueDepth"], 0);
    assert!(before["roundTrip"]["smoothedMs"].as_f64().unwrap() > 0.0);
    assert!(before["connection"]["connectedMs"].is_u64(), "{before}");
    assert_eq!(n(&before, &["connection", "reconnects"]), 0);
    // the handshake went both ways
    assert!(n(&before, &["traffic", "framesSent"]) >= 1);
    assert!(n(&before, &["traffic", "bytesReceived"]) > 0);

    // a request across the node (answered 404 by it) is one frame each way
    let me = rt.url().component("app");
    let ghost = Address::parse(&format!("hyperty://{D}/ghost")).unwrap();
    let r = rt
        .bus()
        .post(request(&me, &ghost, json!({})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
    let after = bridge_stats(&rt).await;
    for (count, by) in [
        ("framesSent", 1),
        ("framesReceived", 1),
        ("bytesSent", 20),
        ("bytesReceived", 20),
    ] {
        assert!(
            n(&after, &["traffic", count]) >= n(&before, &["traffic", count]) + by,
            "{count}: {before} then {after}"
        );
    }

    // the node drops the connection: the bridge comes back, counted
    let router = node.state().router().clone();
    let key = router.session_of(rt.url().as_str()).expect("a session");
    router.kick(&key, "test");
    assert!(
        eventually(TIMEOUT, || async {
            let s = bridge_stats(&rt).await;
            s["status"] == "live" && s["connection"]["reconnects"] == 1
        })
        .await,
        "{}",
        bridge_stats(&rt).await
    );
    assert!(n(&bridge_stats(&rt).await, &["uptimeMs"]) >= n(&after, &["uptimeMs"]));
}

#[actix::test]
async fn periodic_reports_reach_the_broker_and_are_served_over_http() {
    let node = start_node(D, |_| {});
    let (rt, stub) = attached(&node).await;
    let r = call(&rt, json!(SEND_TO_BROKER), Some(json!({"interval": 50}))).await;
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{}", r.to_json());
    let state = r.body.value.unwrap();
    assert_eq!(state["active"], true);
    assert_eq!(state["broker"], format!("domain://qos.{D}"));
    assert_eq!(state["intervalMs"], 50);

    let qos = format!("{}/qos", node.http_url());
    let one = format!("{qos}/{}", enc(rt.url().as_str()));
    // several reports arrive, each replacing the last
    assert!(
        eventually(TIMEOUT, || async {
            http_get_json(&one, None).await.0 == 200
        })
        .await
    );
    let (_, first) = http_get_json(&one, None).await;
    assert_eq!(first["runtime"], rt.url().as_str());
    assert_eq!(first["stale"], false);
    assert!(first["receivedAt"].as_u64().unwrap() > 0);
    let stubs = first["stubs"].as_array().unwrap();
    assert_eq!(stubs.len(), 1, "{first}");
    assert_eq!(stubs[0]["url"], stub.url.as_str());
    assert_eq!(stubs[0]["status"], "live");
    assert!(stubs[0]["traffic"]["framesSent"].as_u64().unwrap() >= 1);
    let qos_agent = rt.qos().clone();
    assert!(
        eventually(TIMEOUT, || async {
            qos_agent
                .send(GetReportingState)
                .await
                .unwrap()
                .acknowledged
                >= 3
        })
        .await
    );
    let (status, later) = http_get_json(&one, None).await;
    assert_eq!(status, 200);
    assert!(
        n(&later["stubs"][0], &["traffic", "framesSent"])
            > n(&first["stubs"][0], &["traffic", "framesSent"]),
        "later reports carry the later counts: {first} then {later}"
    );
    let (status, all) = http_get_json(&qos, None).await;
    assert_eq!(status, 200);
    assert_eq!(all["count"], 1, "{all}");
    assert_eq!(all["reports"][0]["runtime"], rt.url().as_str());
    let (status, none) = http_get_json(
        &format!("{qos}/{}", enc("hyperty-runtime://net.test/x")),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(none["description"].is_string(), "{none}");

    // stopped: nothing more is sent
    let r = call(&rt, json!(SEND_TO_BROKER), Some(json!({"enabled": false}))).await;
    assert_eq!(r.body.value.unwrap()["active"], false);
    // the runtime closes its session: its report is dropped
    stub.disconnect().await.unwrap();
    assert!(
        eventually(TIMEOUT, || async {
            http_get_json(&qos, None).await.1["count"] == 0
        })
        .await
    );
}

fn report(runtime: &str) -> Value {
    json!({"runtime": runtime, "sentAt": 1, "stubs": []})
}

async fn send_report(c: &mut WsClient, from: &str, value: Value) -> Value {
    c.request(
        json!({"type": "update", "from": from, "to": format!("domain://qos.{D}"),
        "body": {"value": value}}),
    )
    .await
}

#[actix::test]
async fn a_session_reports_only_about_its_own_runtime() {
    let node = start_node(D, |_| {});
    let me = format!("runtime://{D}/raw");
    let mut c = WsClient::connect(&node.ws_url()).await;
    c.open(&me).await;

    let other = format!("runtime://{D}/someone-else");
    let r = send_report(&mut c, &format!("{me}/qos"), report(&other)).await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    assert!(r["body"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("own runtime")));
    let r = send_report(&mut c, &format!("{me}/qos"), json!({"runtime": me})).await;
    assert_eq!(r["body"]["code"], 400, "{r}");
    assert!(r["body"]["description"].is_string());
    let r = c
        .request(json!({"type": "read", "from": me, "to": format!("domain://qos.{D}")}))
        .await;
    assert_eq!(r["body"]["code"], 400, "{r}");
    let (_, all) = http_get_json(&format!("{}/qos", node.http_url()), None).await;
    assert_eq!(all["count"], 0, "nothing refused was kept: {all}");

    let r = send_report(&mut c, &format!("{me}/qos"), report(&me)).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["from"], format!("domain://qos.{D}"));

    // the socket drops without close: the report is kept, marked stale
    c.drop_socket().await;
    let one = format!("{}/qos/{}", node.http_url(), enc(&me));
    assert!(
        eventually(TIMEOUT, || async {
            http_get_json(&one, None).await.1["stale"] == true
        })
        .await
    );
}

#[actix::test]
async fn another_runtime_may_not_ask_the_agent() {
    let node = start_node(D, |_| {});
    let (rt, _stub) = attached(&node).await;
    let me = format!("runtime://{D}/raw");
    let mut c = WsClient::connect(&node.ws_url()).await;
    c.open(&me).await;
    let r = c
        .request(json!({"type": "execute", "from": me, "to": rt.url().component("qos").as_str(),
            "body": {"method": SEND_TO_BROKER, "params": {"broker": format!("hyperty://{D}/elsewhere")}}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    assert_eq!(
        r["from"],
        rt.url().component("qos").as_str(),
        "the agent refused: {r}"
    );
    assert!(r["body"]["description"].is_string(), "{r}");
    assert!(!rt.qos().send(GetReportingState).await.unwrap().active);
}

#[actix::test]
async fn bad_requests_are_answered_with_a_description() {
    let node = start_node(D, |_| {});
    let (rt, _stub) = attached(&node).await;
    for (method, params, code) in [
        (json!(7), None, 400),
        (json!("getEverything"), None, 404),
        (json!(SEND_TO_BROKER), Some(json!({"interval": 1})), 400),
        (
            json!(SEND_TO_BROKER),
            Some(json!({"broker": "nowhere"})),
            400,
        ),
        (json!(SEND_TO_BROKER), Some(json!({"colour": "red"})), 400),
        (json!(SEND_TO_BROKER), Some(json!([50])), 400),
    ] {
        let r = call(&rt, method.clone(), params.clone()).await;
        assert_eq!(
            r.code().map(ResponseCode::as_u16),
            Some(code),
            "{method} {params:?}: {}",
            r.to_json()
        );
        assert!(
            r.body.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{}",
            r.to_json()
        );
    }
    // execute without a method
    let m = Message::new(
        MessageType::Execute,
        rt.url().component("app"),
        rt.url().component("qos"),
    );
    let r = rt.bus().post(m).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::BadRequest), "{}", r.to_json());
    assert!(!rt.qos().send(GetReportingState).await.unwrap().active);
}

#[actix::test]
async fn http_reads_need_a_token_when_auth_is_required() {
    let node = start_node(D, |c| c.auth.mode = hyperty::config::AuthMode::Required);
    let url = format!("{}/qos", node.http_url());
    let (status, body) = http_get_json(&url, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["description"]
        .as_str()
        .is_some_and(|d| d.contains("Bearer")));
    let (status, _) = http_get_json(&url, Some("not.a.token")).await;
    assert_eq!(status, 401);
    let token = user_token(&node, "alice").await;
    let (status, body) = http_get_json(&url, Some(&token)).await;
    assert_eq!((status, body["count"].clone()), (200, json!(0)), "{body}");

    let open = start_node(D, |c| {
        c.auth.mode = hyperty::config::AuthMode::Required;
        c.qos.public_reads = true;
    });
    let (status, _) = http_get_json(&format!("{}/qos", open.http_url()), None).await;
    assert_eq!(status, 200);
}
