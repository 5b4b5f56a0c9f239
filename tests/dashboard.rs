//! The live dashboard of a real node: `/dashboard/data` after real WebSocket
//! traffic, its bounded history, who may read it, and the page itself — served,
//! and run in headless Chromium (`/usr/bin/chromium`, or `$CHROMIUM`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const D: &str = "dashboard.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

/// `GET` with an optional bearer token: status, content type, body.
async fn get(url: &str, token: Option<&str>) -> (u16, String, String) {
    let client = awc::Client::default();
    let mut req = client.get(url).timeout(TIMEOUT);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.body().limit(8 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        ctype,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

async fn data(node: &hyperty::node::NodeHandle, query: &str) -> Value {
    let (status, ctype, body) =
        get(&format!("{}/dashboard/data{query}", node.http_url()), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    serde_json::from_str(&body).expect("JSON")
}

fn samples(d: &Value) -> &Vec<Value> {
    d["samples"].as_array().expect("samples")
}

/// Polls `/dashboard/data` until `cond` holds for it; the last answer.
async fn data_until(
    node: &hyperty::node::NodeHandle,
    what: &str,
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = data(node, "").await;
        if cond(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dashboard never showed {what}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn any(d: &Value, key: &str, pred: impl Fn(f64) -> bool) -> bool {
    samples(d)
        .iter()
        .any(|s| s[key].as_f64().is_some_and(&pred))
}

#[actix::test]
async fn dashboard_data_shows_real_traffic() {
    let node = start_node(D, |c| c.dashboard.interval_ms = 50);
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let mut b = WsClient::connect(&node.ws_url()).await;
    b.open(&rt("b")).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let hb = b.allocate(&rt("b"), D, 1).await.remove(0);
    b.subscribe(&rt("b"), D, &[&format!("{ha}/changes")]).await;
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": format!("domain://registry.{D}"),
            "body": {"value": {"user": format!("user://{D}/alice"), "url": ha, "runtime": rt("a"),
                "status": "live", "descriptor": "hyperty-catalogue://catalogue.dashboard.test/.well-known/hyperty/Chat",
                "expires": 3600, "resources": ["chat"], "dataSchemes": ["comm"]}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    // requests from a to b, each answered by b (one frame in 16 of a session is
    // timed), then updates to b's subscription
    for i in 0..64u64 {
        let id = 1000 + i;
        a.send(json!({"id": id, "type": "read", "from": ha, "to": hb}))
            .await;
        b.recv_matching(|v| v["id"] == id).await;
        b.send(json!({"id": id, "type": "response", "from": hb, "to": ha,
            "body": {"code": 200}}))
            .await;
        a.recv_matching(|v| v["id"] == id && v["type"] == "response")
            .await;
    }
    for i in 0..64u64 {
        a.send(json!({"id": 5000 + i, "type": "update", "from": ha,
            "to": format!("{ha}/changes"), "body": {"value": {"n": i}}}))
            .await;
        b.recv_matching(|v| v["id"] == 5000 + i).await;
    }
    let r = a
        .request(json!({"type": "read", "from": ha, "to": format!("hyperty://{D}/nobody")}))
        .await;
    assert_eq!(r["body"]["code"], 404);

    let d = data_until(&node, "the traffic and the registry entry", |d| {
        let last = samples(d).last().cloned().unwrap_or_default();
        last["hyperties"] == 1
            && any(d, "in_rate", |v| v > 0.0)
            && any(d, "out_rate", |v| v > 0.0)
            && any(d, "delivered_rate", |v| v > 0.0)
            && any(d, "error_rate", |v| v > 0.0)
            && any(d, "routing_p50_us", |v| v > 0.0)
            && any(d, "request_p50_us", |v| v > 0.0)
    })
    .await;
    assert_eq!(d["domain"], D);
    assert_eq!(d["interval_ms"], 50);
    let last = samples(&d).last().expect("a sample").clone();
    assert_eq!(last["live"], 2, "{last}");
    assert_eq!(last["grace"], 0);
    assert_eq!(last["addresses"], 2);
    assert_eq!(last["subscriptions"], 1);
    assert_eq!(last["data_objects"], 0);
    assert_eq!(last["peers_up"], 0);
    for s in samples(&d) {
        let p50 = s["routing_p50_us"].as_f64();
        let p99 = s["routing_p99_us"].as_f64();
        assert_eq!(p50.is_some(), p99.is_some(), "{s}");
        if let (Some(p50), Some(p99)) = (p50, p99) {
            assert!(p50 <= p99, "{s}");
        }
    }
    let t = &d["totals"];
    // 2 opens, 2 allocations, subscribe, registry create, 64 × (read, response,
    // update), the 404
    let sent: u64 = 2 + 2 + 1 + 1 + 3 * 64 + 1;
    assert!(t["frames_in"].as_u64().unwrap() >= sent, "{t}");
    assert!(t["delivered"].as_u64().unwrap() >= 3 * 64, "{t}");
    assert_eq!(t["errors"], 1, "{t}");
    assert_eq!(t["opened"], 2);
    assert_eq!(t["slow_consumers"], 0);
    assert!(d["backlog"].is_array());
    assert!(d.get("peers").is_some(), "federation is on by default: {d}");

    // ?since= gives only later samples
    let newest = last["t"].as_u64().unwrap();
    let later = data(&node, &format!("?since={newest}")).await;
    assert!(samples(&later)
        .iter()
        .all(|s| s["t"].as_u64().unwrap() > newest));
    let (status, _, body) = get(
        &format!("{}/dashboard/data?since=yesterday", node.http_url()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"code\":400"), "{body}");
    node.stop().await;
}

#[actix::test]
async fn dashboard_history_stays_within_its_ring() {
    // 5 ms a sample, one second of history: 200 samples
    let node = start_node(D, |c| {
        c.dashboard.interval_ms = 5;
        c.dashboard.history_secs = 1;
    });
    let d = data_until(&node, "more samples than its ring holds", |d| {
        d["taken"].as_u64().unwrap_or(0) > 260
    })
    .await;
    assert_eq!(d["capacity"], 200);
    assert_eq!(samples(&d).len(), 200, "a full ring, no more");
    let ts: Vec<u64> = samples(&d)
        .iter()
        .map(|s| s["t"].as_u64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "oldest first: {ts:?}");
    // later readings still hold no more than the ring
    let d = data_until(&node, "a ring that keeps turning", |d| {
        d["taken"].as_u64().unwrap_or(0) > 400
    })
    .await;
    assert_eq!(samples(&d).len(), 200);
    node.stop().await;
}

#[actix::test]
async fn dashboard_data_needs_a_token_when_auth_is_required() {
    let node = start_node(D, |c| c.auth.mode = hyperty::config::AuthMode::Required);
    let url = format!("{}/dashboard/data", node.http_url());
    let (status, _, body) = get(&url, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"code\":401"), "{body}");
    let (status, _, body) = get(&url, Some("not-a-token")).await;
    assert_eq!(status, 401, "{body}");
    let token = user_token(&node, "alice").await;
    let (status, _, body) = get(&url, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["domain"], D);
    // the page itself holds no data: it asks for the token
    let (status, _, page) = get(&format!("{}/dashboard", node.http_url()), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"token\""), "{page}");
    node.stop().await;

    let open = start_node(D, |c| {
        c.auth.mode = hyperty::config::AuthMode::Required;
        c.dashboard.public_reads = true;
    });
    let (status, _, body) = get(&format!("{}/dashboard/data", open.http_url()), None).await;
    assert_eq!(status, 200, "{body}");
    open.stop().await;
}

#[actix::test]
async fn dashboard_page_is_html_that_polls_its_data() {
    let node = start_node(D, |_| {});
    let base = node.http_url();
    let (status, ctype, page) = get(&format!("{base}/dashboard"), None).await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/html; charset=utf-8");
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("data-source=\"/dashboard/data\""), "{page}");
    assert!(page.contains("src=\"/dashboard/dashboard.js\""), "{page}");
    assert!(page.contains("href=\"/dashboard/dashboard.css\""), "{page}");
    assert!(page.contains("name=\"viewport\""), "readable on a phone");

    let (status, ctype, js) = get(&format!("{base}/dashboard/dashboard.js"), None).await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/javascript; charset=utf-8");
    assert!(
        js.contains("dataset.source"),
        "polls the page's data source"
    );
    assert!(js.contains("createElementNS"), "draws SVG");
    assert!(
        js.contains("\"title\"") && js.contains("\"desc\""),
        "SVGs carry a title and desc"
    );
    for markup in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!js.contains(markup), "everything shown is text: {markup}");
    }
    let (status, ctype, _) = get(&format!("{base}/dashboard/dashboard.css"), None).await;
    assert_eq!((status, ctype.as_str()), (200, "text/css; charset=utf-8"));
    node.stop().await;

    let off = start_node(D, |c| c.dashboard.enabled = false);
    let (status, _, _) = get(&format!("{}/dashboard", off.http_url()), None).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&format!("{}/dashboard/data", off.http_url()), None).await;
    assert_eq!(status, 404);
    off.stop().await;
}

#[actix::test]
async fn dashboard_shows_rate_limited_frames() {
    let node = start_node(D, |c| {
        c.dashboard.interval_ms = 50;
        c.limits.messages_per_second = 50;
        c.limits.burst = 20;
        c.limits.abuse_threshold = 100_000;
    });
    let mut flood = WsClient::connect(&node.ws_url()).await;
    flood.open(&rt("flood")).await;
    let mut b = WsClient::connect(&node.ws_url()).await;
    b.open(&rt("b")).await;
    for i in 1..=200u64 {
        flood
            .send(json!({"id": i, "type": "read", "from": rt("flood"), "to": rt("b")}))
            .await;
    }
    flood.recv_matching(|r| r["body"]["code"] == 429).await;
    let d = data_until(&node, "rate-limited frames", |d| {
        d["totals"]["rate_limited"].as_u64().unwrap_or(0) > 0
            && any(d, "rate_limited_rate", |v| v > 0.0)
            && any(d, "error_rate", |v| v > 0.0)
    })
    .await;
    assert!(
        d["totals"]["errors"].as_u64().unwrap() >= d["totals"]["rate_limited"].as_u64().unwrap()
    );
    node.stop().await;
}

#[actix::test]
async fn dashboard_shows_peer_domains_once_linked() {
    let nodes = start_domains(&["one.test", "two.test"], |_, c| {
        c.dashboard.interval_ms = 50
    });
    let (one, two) = (&nodes[0], &nodes[1]);
    let d = data(one, "").await;
    assert_eq!(d["peers"], json!([]), "no link before a frame needs one");
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
    a.send(json!({"id": 7, "type": "update", "from": ha, "to": hb, "body": {"value": 1}}))
        .await;
    b.recv_matching(|m| m["id"] == 7).await;
    let d = data_until(one, "the live link to two.test", |d| {
        let last = samples(d).last().cloned().unwrap_or_default();
        d["peers"][0]["state"] == "live" && last["peers_up"] == 1
    })
    .await;
    assert_eq!(d["peers"][0]["domain"], "two.test");
    assert_eq!(d["peers"].as_array().unwrap().len(), 1);
    stop_all(&nodes).await;
}

/// The DOM of `url` after Chromium (headless, `/usr/bin/chromium` or
/// `$CHROMIUM`) has run its scripts for a few seconds of virtual time. Runs on a
/// thread of its own so the node's actors on this one keep answering.
async fn chromium_dom(url: String) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!(
            "hyperty-dashboard-chromium-{}-{run}",
            std::process::id()
        ));
        let out = std::process::Command::new(
            std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
        )
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .output();
        let _ = std::fs::remove_dir_all(&profile);
        let _ = tx.send(out);
    });
    let out = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("chromium ends within a minute")
        .expect("chromium thread")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 DOM")
}

#[actix::test]
async fn dashboard_page_draws_its_charts_in_chromium() {
    let node = start_node(D, |c| c.dashboard.interval_ms = 50);
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    for i in 0..20u64 {
        a.send(json!({"id": 10 + i, "type": "update", "from": ha, "to": ha, "body": {"value": i}}))
            .await;
        a.recv_matching(|m| m["id"] == 10 + i).await;
    }
    data_until(&node, "a few samples of traffic", |d| {
        samples(d).len() > 3 && any(d, "in_rate", |v| v > 0.0)
    })
    .await;
    let dom = chromium_dom(format!("{}/dashboard", node.http_url())).await;
    assert!(
        dom.contains(&format!("Messaging node <span id=\"domain\">{D}</span>")),
        "{dom}"
    );
    assert!(!dom.contains("Cannot reach the node"), "{dom}");
    assert!(
        dom.contains("<main id=\"dashboard\" data-source=\"/dashboard/data\">"),
        "shown: {dom}"
    );
    for title in [
        "Sessions and addresses",
        "Frames per second",
        "Deliveries and errors per second",
        "Routing latency (sampled)",
        "Request → response latency",
        "Outbound queues",
    ] {
        assert!(
            dom.contains(&format!(">{title}</title>")),
            "no chart {title:?}: {dom}"
        );
    }
    assert!(dom.contains("role=\"img\""), "{dom}");
    assert!(
        dom.contains("<path class=\"line s0\""),
        "lines are drawn: {dom}"
    );
    assert!(dom.contains("<table>"), "each chart has a table: {dom}");
    assert!(
        dom.contains("live sessions: 1"),
        "the bars' description: {dom}"
    );
    assert!(
        dom.contains("<section id=\"peers-section\" aria-labelledby=\"peers-title\" hidden=\"\">"),
        "no peers, no section: {dom}"
    );
    assert!(
        dom.contains("<form id=\"login\" hidden=\"\">"),
        "no token asked: {dom}"
    );
    node.stop().await;
}

#[actix::test]
async fn the_page_asks_for_a_token_and_uses_one_from_its_link() {
    let node = start_node(D, |c| {
        c.auth.mode = hyperty::config::AuthMode::Required;
        c.dashboard.interval_ms = 50;
    });
    let page = format!("{}/dashboard", node.http_url());
    let dom = chromium_dom(page.clone()).await;
    assert!(
        dom.contains("<form id=\"login\">"),
        "the form is shown: {dom}"
    );
    assert!(dom.contains("A token is needed."), "{dom}");
    assert!(
        dom.contains("<main id=\"dashboard\" data-source=\"/dashboard/data\" hidden=\"\">"),
        "{dom}"
    );
    let token = user_token(&node, "alice").await;
    let dom = chromium_dom(format!("{page}#token={token}")).await;
    assert!(dom.contains("<form id=\"login\" hidden=\"\">"), "{dom}");
    assert!(dom.contains(">Frames per second</title>"), "{dom}");
    assert!(!dom.contains(&token), "the token is not shown: {dom}");
    node.stop().await;
}
