//! The JavaScript client library (`web/client/hyperty.js`, served at
//! `/client/hyperty.js`): its own tests (`web/client/test/*.test.mjs`) run under
//! Node.js against a real node and a Rust runtime attached to it, whose driver
//! hyperty reports and observes data objects for them and drops their socket.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use serde_json::{json, Value};

const D: &str = "js.test";

/// Runs `node --test` on the library's tests with `env`, in a blocking thread.
fn run_node(env: Vec<(&'static str, String)>) -> std::io::Result<Output> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/client");
    let tests: Vec<PathBuf> = std::fs::read_dir(dir.join("test"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    let mut node = Command::new("node");
    node.current_dir(&dir).args([
        "--experimental-websocket",
        "--no-warnings",
        "--test",
        "--test-concurrency=1",
        "--test-timeout=60000",
    ]);
    // `JS_TEST_PATTERN=<regex>` runs only the JavaScript tests whose names match
    if let Ok(p) = std::env::var("JS_TEST_PATTERN") {
        node.arg(format!("--test-name-pattern={p}"));
    }
    node.args(&tests).envs(env).output()
}

/// What the driver hyperty does for the JavaScript tests, one command at a time.
struct Driver {
    ctx: HypertyContext,
    node: hyperty::node::NodeHandle,
    reporter: Option<Reporter>,
    observer: Option<Observer>,
}

impl Driver {
    async fn handle(&mut self, m: Message) {
        let method = m
            .body
            .extra
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("");
        let params = m.body.extra.get("params").cloned().unwrap_or(Value::Null);
        let r = match method {
            "report" => self.report(&params).await,
            "change" => self.change(&params).await,
            "observe" => self.observe(&params).await,
            "await" => self.wait(&params).await,
            "drop" => self.drop_socket(&params).await,
            other => Err(format!("no such method {other:?}")),
        };
        match r {
            Ok(v) => self.ctx.reply(&m, ResponseCode::Ok, v),
            Err(e) => self
                .ctx
                .reply(&m, ResponseCode::BadRequest, json!({ "error": e })),
        }
    }

    /// A Rust reporter of a `comm` object; the JavaScript observer subscribes.
    async fn report(&mut self, p: &Value) -> Result<Value, String> {
        let r = self
            .ctx
            .syncher()
            .create(ObjectSpec::new("chat", "comm").with_data(p["data"].clone()))
            .await
            .map_err(|e| e.to_string())?;
        let url = r.url().to_string();
        self.reporter = Some(r);
        Ok(json!({ "url": url }))
    }

    /// `n` pushes, a topic, then a child: the JavaScript observer sees them in order.
    async fn change(&mut self, p: &Value) -> Result<Value, String> {
        let r = self.reporter.as_ref().ok_or("report first")?;
        for i in 0..p["n"].as_u64().unwrap_or(1) {
            r.push("messages", json!({ "n": i }))
                .await
                .map_err(|e| e.to_string())?;
        }
        r.set("topic", "from rust")
            .await
            .map_err(|e| e.to_string())?;
        let child = r
            .add_child(json!({ "text": "rust child" }))
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({ "version": r.version(), "child": child, "data": r.data() }))
    }

    /// A Rust observer of the JavaScript reporter's object.
    async fn observe(&mut self, p: &Value) -> Result<Value, String> {
        let url: Address = p["url"]
            .as_str()
            .ok_or("params.url")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let o = self
            .ctx
            .syncher()
            .subscribe(&url)
            .await
            .map_err(|e| e.to_string())?;
        let snap = o.snapshot().to_value();
        self.observer = Some(o);
        Ok(snap)
    }

    /// Waits until the Rust observer is at `version`: its snapshot.
    async fn wait(&mut self, p: &Value) -> Result<Value, String> {
        let o = self.observer.as_mut().ok_or("observe first")?;
        let want = p["version"].as_u64().unwrap_or(0);
        while o.version() < want {
            match tokio::time::timeout(TIMEOUT, o.next()).await {
                Ok(Some(_)) => {}
                _ => return Err(format!("the observer stopped at version {}", o.version())),
            }
        }
        Ok(o.snapshot().to_value())
    }

    /// Closes the socket of the session of `runtime` (it enters its grace
    /// period), then sends `n` notifications to `to` while it is away.
    async fn drop_socket(&mut self, p: &Value) -> Result<Value, String> {
        let runtime = p["runtime"].as_str().ok_or("params.runtime")?;
        let router = self.node.state().router();
        let key = router.session_of(runtime).ok_or("no such session")?;
        let live = router.live_count();
        router.kick(&key, "dropped for the test");
        let gone = eventually(TIMEOUT, || async { router.live_count() < live }).await;
        if !gone {
            return Err("the socket stayed up".into());
        }
        let to: Address = p["to"]
            .as_str()
            .ok_or("params.to")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        for i in 0..p["n"].as_u64().unwrap_or(1) {
            self.ctx
                .notify(MessageType::Update, to.clone(), json!({ "n": i }));
        }
        Ok(Value::Null)
    }
}

#[actix::test]
async fn javascript_client_against_a_real_node() {
    let node = start_node(D, |_| {});
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    rt.attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    let (ctx, mut inbox) = inbox_hyperty(&rt, D, None).await;
    let env = vec![
        ("HYPERTY_WS", node.ws_url()),
        ("HYPERTY_HTTP", node.http_url()),
        ("HYPERTY_DOMAIN", D.to_owned()),
        ("HYPERTY_DRIVER", ctx.url().to_string()),
    ];
    let node_run = tokio::task::spawn_blocking(move || run_node(env));
    tokio::pin!(node_run);
    let mut driver = Driver {
        ctx,
        node,
        reporter: None,
        observer: None,
    };
    let out = loop {
        tokio::select! {
            out = &mut node_run => break out.expect("node runner"),
            Some(m) = inbox.recv() => {
                if m.kind == MessageType::Execute {
                    driver.handle(m).await;
                }
            }
        }
    };
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "Node.js (20 or newer) is needed to test the JavaScript client: run scripts/test.sh \
             (it installs nodejs with apt-get), or install it yourself (apt-get install nodejs)"
        ),
        Err(e) => panic!("could not run node: {e}"),
    };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the JavaScript tests failed:\n{text}");
    assert!(text.contains("# fail 0"), "{text}");
    rt.shutdown().await;
    driver.node.stop().await;
}

#[actix::test]
async fn the_node_serves_the_library() {
    let node = start_node(D, |_| {});
    let url = format!("{}/client/hyperty.js", node.http_url());
    let resp = awc::Client::new().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        h("content-type").starts_with("text/javascript"),
        "{}",
        h("content-type")
    );
    assert!(h("cache-control").contains("max-age"));
    let etag = h("etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let mut resp = resp;
    let body = resp.body().await.unwrap();
    assert_eq!(body, hyperty::server::assets::HYPERTY_JS.as_bytes());
    let again = awc::Client::new()
        .get(&url)
        .insert_header(("If-None-Match", etag.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    node.stop().await;
}
