//! The reference client of the reTHINK Node.js node, socket.io-client 1.x from npm
//! (`tests/socketio/package.json`, installed by `npm ci` there, as
//! `scripts/test.sh` does), connects to our node unchanged: over polling only, and
//! over polling upgraded to a WebSocket. `tests/socketio/stub.js` opens a session,
//! asks a peer runtime on the raw WebSocket and gets its answer, has a frame
//! acknowledged and an unroutable one refused through the ack callback, and
//! closes.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

const D: &str = "sio.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/socketio")
}

/// Installs the locked client once (`npm ci`) if it is not there yet.
fn install_client() {
    let dir = client_dir();
    if dir
        .join("node_modules/socket.io-client/package.json")
        .exists()
    {
        return;
    }
    let out = Command::new("npm")
        .current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund"])
        .output()
        .expect("npm (Node.js) is needed by this test");
    assert!(
        out.status.success(),
        "npm ci in tests/socketio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the stub against `node` as `runtime`, asking `peer`, over `transports`
/// (`None`: the client's default, polling then the upgrade).
async fn run_stub(
    node: &hyperty::node::NodeHandle,
    runtime: &str,
    peer: &str,
    transports: Option<&str>,
) -> Output {
    let mut cmd = Command::new("node");
    cmd.current_dir(client_dir())
        .arg("stub.js")
        .env("NODE_URL", node.http_url())
        .env("RUNTIME", runtime)
        .env("PEER", peer);
    if let Some(t) = transports {
        cmd.env("TRANSPORTS", t);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("node"))
        .await
        .expect("the stub's thread")
}

/// Answers every execute `peer` gets with `pong` and the request's text, until
/// `done` resolves; returns how many it answered.
async fn answer_until(
    peer: &mut WsClient,
    me: &str,
    done: impl std::future::Future<Output = Output>,
) -> (Output, usize) {
    tokio::pin!(done);
    let mut answered = 0;
    loop {
        tokio::select! {
            out = &mut done => return (out, answered),
            m = peer.recv(TIMEOUT) => {
                let Some(m) = m else { continue };
                if m["type"] != "execute" {
                    continue;
                }
                let text = m["body"]["value"].as_str().unwrap_or_default();
                peer.send(json!({"id": m["id"], "type": "response", "from": me, "to": m["from"],
                    "body": {"code": 200, "value": text.replace("ping", "pong")}}))
                    .await;
                answered += 1;
            }
        }
    }
}

async fn stub_round(transports: Option<&str>, runtime: &str) -> Value {
    install_client();
    let node = start_node(D, |_| {});
    let me = rt("peer");
    let mut peer = WsClient::connect(&node.ws_url()).await;
    peer.open(&me).await;
    let stub = run_stub(&node, runtime, &me, transports);
    let (out, answered) = answer_until(&mut peer, &me, stub).await;
    assert!(
        out.status.success(),
        "stub: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(answered, 2, "both executes reached the peer");
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the stub's report");
    // the stub's session is closed and gone
    assert!(eventually(TIMEOUT, || async { health(&node).await["live"] == 1 }).await);
    seen
}

#[actix::test]
async fn the_reference_client_speaks_over_polling_only() {
    let seen = stub_round(Some("polling"), &rt("polling")).await;
    assert_eq!(seen["transports"], json!(["polling", "polling"]), "{seen}");
    assert_eq!(seen["acks"][0], json!({"code": 200}), "{seen}");
    assert_eq!(seen["acks"][1]["code"], 404, "{seen}");
    assert_eq!(seen["disconnect"], "io server disconnect", "{seen}");
}

#[actix::test]
async fn the_reference_client_upgrades_from_polling_to_websocket() {
    let seen = stub_round(None, &rt("upgrade")).await;
    assert_eq!(
        seen["transports"],
        json!(["polling", "websocket"]),
        "{seen}"
    );
    assert_eq!(seen["acks"][0], json!({"code": 200}), "{seen}");
    assert_eq!(seen["acks"][1]["code"], 404, "{seen}");
    assert_eq!(seen["disconnect"], "io server disconnect", "{seen}");
}

#[actix::test]
async fn the_reference_client_speaks_over_websocket_only() {
    let seen = stub_round(Some("websocket"), &rt("websocket")).await;
    assert_eq!(
        seen["transports"],
        json!(["websocket", "websocket"]),
        "{seen}"
    );
    assert_eq!(seen["acks"][0], json!({"code": 200}), "{seen}");
    assert_eq!(seen["disconnect"], "io server disconnect", "{seen}");
}
