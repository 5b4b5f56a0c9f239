//! `GET /metrics` of a real node after real WebSocket traffic, parsed as Prometheus
//! text; who may scrape it; and a runtime's bus rendered the same way.

mod common;

use std::collections::HashMap;

use common::*;
use hyperty::prelude::*;
use serde_json::json;

const D: &str = "metrics.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

/// Samples of a text exposition: `name{label="v",…}` (labels sorted) → value.
/// Panics on a line that is neither a comment, blank, nor `series value`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                let mut pairs: Vec<&str> = labels.split(',').filter(|p| !p.is_empty()).collect();
                for p in &pairs {
                    let (k, v) = p
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
                pairs.sort_unstable();
                format!("{name}{{{}}}", pairs.join(","))
            }
        };
        assert!(
            key.starts_with("hyperty_"),
            "every series is prefixed: {line}"
        );
        assert!(out.insert(key, value).is_none(), "duplicate series: {line}");
    }
    out
}

/// `GET /metrics` with an optional bearer token: status, content type, body.
async fn scrape(node: &hyperty::node::NodeHandle, token: Option<&str>) -> (u16, String, String) {
    let client = awc::Client::default();
    let mut req = client
        .get(format!("{}/metrics", node.http_url()))
        .timeout(TIMEOUT);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut resp = req.send().await.expect("GET /metrics");
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        ctype,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no series {key} in {:?}", m.keys().collect::<Vec<_>>()))
}

#[actix::test]
async fn metrics_show_frames_deliveries_errors_sessions_and_latencies() {
    let node = start_node(D, |_| {});
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let mut b = WsClient::connect(&node.ws_url()).await;
    b.open(&rt("b")).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    b.subscribe(&rt("b"), D, &[&format!("{ha}/changes")]).await;
    // requests from a to b, each answered by b
    const REQUESTS: u64 = 40;
    for i in 0..REQUESTS {
        let id = 100 + i;
        a.send(json!({"id": id, "type": "read", "from": ha, "to": hb}))
            .await;
        let r = b.recv_matching(|v| v["id"] == id).await;
        assert_eq!(r["type"], "read");
        b.send(json!({"id": id, "type": "response", "from": hb, "to": ha,
            "body": {"code": 200}}))
            .await;
        let r = a.recv_matching(|v| v["id"] == id).await;
        assert_eq!(r["body"]["code"], 200);
    }
    // a notification to the subscriber, and a request nobody can take (404)
    a.send(
        json!({"id": 1, "type": "update", "from": ha, "to": format!("{ha}/changes"),
        "body": {"value": {"n": 1}}}),
    )
    .await;
    b.recv_matching(|v| v["type"] == "update").await;
    let r = a
        .request(json!({"type": "read", "from": ha, "to": format!("hyperty://{D}/nobody")}))
        .await;
    assert_eq!(r["body"]["code"], 404);

    let (status, ctype, body) = scrape(&node, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ctype, "text/plain; version=0.0.4");
    let m = parse(&body);
    assert_eq!(
        get(&m, "hyperty_frames_in_total{type=\"read\"}"),
        (REQUESTS + 1) as f64
    );
    assert_eq!(
        get(&m, "hyperty_frames_in_total{type=\"response\"}"),
        REQUESTS as f64
    );
    assert_eq!(get(&m, "hyperty_frames_in_total{type=\"update\"}"), 1.0);
    assert_eq!(get(&m, "hyperty_frames_in_total{type=\"open\"}"), 2.0);
    assert_eq!(
        get(&m, "hyperty_frames_out_total{type=\"read\"}"),
        REQUESTS as f64
    );
    assert_eq!(get(&m, "hyperty_frames_out_total{type=\"update\"}"), 1.0);
    // routed responses, plus the node's own answers (open, allocate, subscribe, 404)
    assert!(get(&m, "hyperty_frames_out_total{type=\"response\"}") >= (REQUESTS + 6) as f64);
    assert!(
        get(&m, "hyperty_deliveries_total{outcome=\"delivered\"}") >= (2 * REQUESTS + 1) as f64
    );
    assert_eq!(
        get(&m, "hyperty_deliveries_total{outcome=\"dropped\"}"),
        0.0
    );
    assert_eq!(get(&m, "hyperty_errors_total{code=\"404\"}"), 1.0);
    assert_eq!(get(&m, "hyperty_errors_total{code=\"403\"}"), 0.0);
    assert_eq!(get(&m, "hyperty_sessions{state=\"live\"}"), 2.0);
    assert_eq!(get(&m, "hyperty_sessions{state=\"grace\"}"), 0.0);
    assert_eq!(get(&m, "hyperty_sessions_opened_total"), 2.0);
    assert_eq!(get(&m, "hyperty_allocated_addresses"), 2.0);
    assert_eq!(get(&m, "hyperty_subscriptions"), 1.0);
    assert_eq!(get(&m, "hyperty_peer_links{state=\"live\"}"), 0.0);
    assert_eq!(get(&m, "hyperty_registry_entries{kind=\"hyperty\"}"), 0.0);
    assert!(m.contains_key("hyperty_outbound_queue_bytes"));
    assert!(m.contains_key("hyperty_outbound_queue_max_bytes"));
    assert_eq!(get(&m, "hyperty_rate_limited_total"), 0.0);
    assert_eq!(get(&m, "hyperty_slow_consumers_total"), 0.0);
    // one frame in 16 per session is timed: at least 2 of a's 40 requests and 2 of
    // b's 40 responses (each sampled response stops its request's clock, each
    // sampled request is stopped by its response)
    let routing = get(&m, "hyperty_routing_latency_seconds_count");
    assert!(routing >= 4.0, "{body}");
    assert_eq!(
        get(&m, "hyperty_routing_latency_seconds_bucket{le=\"+Inf\"}"),
        routing
    );
    assert!(get(&m, "hyperty_routing_latency_seconds_sum") > 0.0);
    assert!(
        get(&m, "hyperty_request_latency_seconds_count") >= 2.0,
        "{body}"
    );
    node.stop().await;
}

#[actix::test]
async fn metrics_need_a_token_when_auth_is_required() {
    let node = start_node(D, |c| c.auth.mode = hyperty::config::AuthMode::Required);
    let (status, _, body) = scrape(&node, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"code\":401"), "{body}");
    let token = user_token(&node, "alice").await;
    let (status, _, body) = scrape(&node, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(parse(&body).contains_key("hyperty_sessions{state=\"live\"}"));
    node.stop().await;

    let open = start_node(D, |c| {
        c.auth.mode = hyperty::config::AuthMode::Required;
        c.metrics.public_reads = true;
    });
    let (status, _, body) = scrape(&open, None).await;
    assert_eq!(status, 200, "{body}");
    open.stop().await;
}

#[actix::test]
async fn metrics_can_be_switched_off() {
    let node = start_node(D, |c| c.metrics.enabled = false);
    let (status, _, _) = scrape(&node, None).await;
    assert_eq!(status, 404);
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    assert!(!node.state().router().metrics.enabled());
    assert_eq!(node.state().router().metrics.routing_samples(), 0);
    node.stop().await;
}

#[actix::test]
async fn a_runtime_renders_its_bus_statistics() {
    let rt = Runtime::start(RuntimeConfig::new("metrics.test")).unwrap();
    let me = rt.url().component("app");
    let nobody = addr("hyperty://metrics.test/nobody");
    let (rec, _probe) = Probe::start();
    rt.bus().add_listener(me.clone(), rec, None).await.unwrap();
    let err = rt
        .bus()
        .post(request(&me, &nobody, json!({})))
        .await
        .unwrap_err();
    assert_eq!(err, BusError::NoRoute(nobody.to_string()));
    let m = parse(&rt.metrics());
    assert_eq!(get(&m, "hyperty_bus_not_found_total"), 1.0);
    assert_eq!(get(&m, "hyperty_bus_pending_requests"), 0.0);
    assert!(get(&m, "hyperty_bus_listeners") >= 1.0);
    assert_eq!(get(&m, "hyperty_bus_stubs"), 0.0);
    for name in ["delivered", "busy", "rejected", "timeouts", "dropped"] {
        assert!(
            m.contains_key(&format!("hyperty_bus_{name}_total")),
            "{name}"
        );
    }
}

/// Scrapes until `cond` holds for the parsed series (the node's tables change
/// after the frames that change them are answered or delivered).
async fn scrape_until(
    node: &hyperty::node::NodeHandle,
    what: &str,
    mut cond: impl FnMut(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, _, body) = scrape(node, None).await;
        let m = parse(&body);
        if cond(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {what}: {m:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[actix::test]
async fn metrics_count_the_nodes_own_frames_and_the_frames_it_holds() {
    let node = start_node(D, |_| {});
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let mut w = WsClient::connect(&node.ws_url()).await;
    w.open(&rt("w")).await;
    w.subscribe(&rt("w"), D, &[&format!("{ha}/registration")])
        .await;
    // registering a's hyperty makes the node publish its status to the watcher:
    // an `update` no client sent
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": format!("domain://registry.{D}"),
            "body": {"value": {"user": format!("user://{D}/alice"), "url": ha, "runtime": rt("a"),
                "status": "live", "descriptor": "hyperty-catalogue://catalogue.metrics.test/.well-known/hyperty/Chat",
                "expires": 3600, "resources": ["chat"], "dataSchemes": ["comm"]}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let n = w.recv_matching(|v| v["type"] == "update").await;
    assert_eq!(n["from"], format!("domain://registry.{D}"));
    let m = scrape_until(&node, "the node's own update", |_| true).await;
    assert_eq!(get(&m, "hyperty_frames_in_total{type=\"update\"}"), 0.0);
    assert_eq!(get(&m, "hyperty_frames_out_total{type=\"update\"}"), 1.0);
    assert_eq!(get(&m, "hyperty_grace_buffered_frames"), 0.0);
    assert_eq!(get(&m, "hyperty_peer_link_queued_frames"), 0.0);

    // a session that lost its socket keeps what is sent to it for its grace period
    let mut b = WsClient::connect(&node.ws_url()).await;
    b.open(&rt("b")).await;
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    b.drop_socket().await;
    scrape_until(&node, "b in its grace period", |m| {
        m.get("hyperty_sessions{state=\"grace\"}") == Some(&1.0)
    })
    .await;
    for i in 0..3 {
        a.send(
            json!({"id": 900 + i, "type": "update", "from": ha, "to": hb,
            "body": {"value": {"n": i}}}),
        )
        .await;
    }
    let m = scrape_until(&node, "three frames held for b", |m| {
        m.get("hyperty_grace_buffered_frames") == Some(&3.0)
    })
    .await;
    assert_eq!(
        get(&m, "hyperty_deliveries_total{outcome=\"buffered\"}"),
        3.0
    );
    node.stop().await;
}

#[actix::test]
async fn frames_a_peer_link_routes_to_local_sessions_count_as_frames_out() {
    let nodes = start_domains(&["one.test", "two.test"], |_, _| {});
    let (one, two) = (&nodes[0], &nodes[1]);
    let mut a = WsClient::connect(&one.ws_url()).await;
    a.open("runtime://one.test/a").await;
    let ha = a
        .allocate("runtime://one.test/a", "one.test", 1)
        .await
        .remove(0);
    let mut b = WsClient::connect(&two.ws_url()).await;
    b.open("runtime://two.test/b").await;
    let hb = b
        .allocate("runtime://two.test/b", "two.test", 1)
        .await
        .remove(0);
    for i in 0..3 {
        a.send(json!({"id": 70 + i, "type": "update", "from": ha, "to": hb, "body": {"value": i}}))
            .await;
        b.recv_matching(|m| m["id"] == 70 + i).await;
    }
    let m = scrape_until(one, "the frames sent to the link", |_| true).await;
    assert_eq!(get(&m, "hyperty_frames_in_total{type=\"update\"}"), 3.0);
    assert_eq!(get(&m, "hyperty_frames_out_total{type=\"update\"}"), 3.0);
    assert_eq!(get(&m, "hyperty_peer_links{state=\"live\"}"), 1.0);
    // on the other side no client sent them, the link brought them
    let m = scrape_until(two, "the frames from the link", |_| true).await;
    assert_eq!(get(&m, "hyperty_frames_in_total{type=\"update\"}"), 0.0);
    assert_eq!(get(&m, "hyperty_frames_out_total{type=\"update\"}"), 3.0);
    stop_all(&nodes).await;
}
