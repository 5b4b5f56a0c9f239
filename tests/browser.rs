//! The demo page (`/`, `web/demo/`) in a real browser: `web/test/browser.test.mjs`
//! drives headless Chromium with playwright-core against a real node (auth
//! required) — two people sign up and log in, chat, and call each other over
//! WebRTC with the signalling through the node — then the node's dashboard (in
//! the browser) and its counters are checked for that traffic.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `CHROMIUM=<path>`) and
//! `npm ci` in `web/test` (both done by `scripts/test.sh`). Without them the
//! browser test fails under CI (`CI` set) and is skipped, saying so, elsewhere.
//! `HYPERTY_SCREENSHOTS=docs` writes the two pages mid-call to
//! `docs/demo-alice.png` and `docs/demo-bob.png`, and the dashboard to
//! `docs/dashboard.png`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use hyperty::config::AuthMode;

const D: &str = "demo.test";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The browser to drive: `CHROMIUM`, `/usr/bin/chromium`, or `chromium` on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let default = PathBuf::from("/usr/bin/chromium");
    if default.exists() {
        return Some(default);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.exists())
    })
}

/// What is missing to run the browser test, if anything.
fn missing() -> Option<String> {
    if chromium().is_none() {
        return Some("Chromium (apt-get install chromium)".into());
    }
    if !repo()
        .join("web/test/node_modules/playwright-core")
        .exists()
    {
        return Some("playwright-core (npm ci in web/test)".into());
    }
    None
}

/// Runs the browser script under `node --test` with `env`.
fn run_script(env: Vec<(&'static str, String)>) -> std::io::Result<Output> {
    Command::new("node")
        .current_dir(repo().join("web/test"))
        .args([
            "--no-warnings",
            "--test",
            "--test-timeout=90000",
            "browser.test.mjs",
        ])
        .envs(env)
        .output()
}

/// The value of the sample `series` (name and labels, exactly as rendered) in a
/// Prometheus text exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[actix::test]
async fn two_browsers_chat_and_call_through_the_node() {
    if let Some(what) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the browser test needs {what}: scripts/test.sh installs it"
        );
        eprintln!("SKIPPED two_browsers_chat_and_call_through_the_node: it needs {what}; run scripts/test.sh");
        return;
    }
    let node = start_node(D, |c| c.auth.mode = AuthMode::Required);
    let mut env = vec![
        ("HYPERTY_HTTP", node.http_url()),
        (
            "HYPERTY_DASHBOARD_TOKEN",
            user_token(&node, "operator").await,
        ),
        (
            "CHROMIUM",
            chromium().unwrap_or_default().display().to_string(),
        ),
    ];
    if let Some(dir) = std::env::var_os("HYPERTY_SCREENSHOTS") {
        let dir = repo().join(Path::new(&dir));
        std::fs::create_dir_all(&dir).unwrap();
        env.push(("HYPERTY_SCREENSHOT_DIR", dir.display().to_string()));
    }
    let out = tokio::task::spawn_blocking(move || run_script(env))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("could not run node (20 or newer is needed): {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{text}");
    assert!(
        text.contains("# pass 1") && text.contains("# fail 0"),
        "{text}"
    );

    // the node counted what the two pages did
    let bearer = format!("Bearer {}", user_token(&node, "scraper").await);
    let mut resp = awc::Client::new()
        .get(format!("{}/metrics", node.http_url()))
        .insert_header(("Authorization", bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = String::from_utf8(resp.body().limit(1 << 22).await.unwrap().to_vec()).unwrap();
    // alice, bob, bob again after logging out
    assert!(sample(&metrics, "hyperty_sessions_opened_total") >= 3.0);
    for t in [
        "create",
        "read",
        "update",
        "delete",
        "subscribe",
        "response",
    ] {
        let n = sample(
            &metrics,
            &format!("hyperty_frames_in_total{{type=\"{t}\"}}"),
        );
        assert!(n > 0.0, "no {t} frames counted:\n{metrics}");
    }
    assert!(sample(&metrics, "hyperty_deliveries_total{outcome=\"delivered\"}") > 0.0);
    node.stop().await;
}

#[actix::test]
async fn the_node_serves_the_demo_page() {
    let node = start_node(D, |_| {});
    let client = awc::Client::new();
    for (path, ty, cache) in [
        ("/", "text/html", "no-cache"),
        ("/demo/demo.js", "text/javascript", "max-age"),
        ("/demo/demo.css", "text/css", "max-age"),
    ] {
        let url = format!("{}{path}", node.http_url());
        let mut resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert!(
            h("content-type").starts_with(ty),
            "{path}: {}",
            h("content-type")
        );
        assert!(h("cache-control").contains(cache), "{path}");
        assert!(
            h("content-security-policy").contains("script-src 'self'"),
            "{path}"
        );
        assert_eq!(h("x-content-type-options"), "nosniff");
        let etag = h("etag");
        let body = resp.body().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        let again = client
            .get(&url)
            .insert_header(("If-None-Match", etag.as_str()))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let mut page = client.get(node.http_url()).send().await.unwrap();
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(html.contains(r#"src="/demo/demo.js""#), "{html}");
    node.stop().await;
}
