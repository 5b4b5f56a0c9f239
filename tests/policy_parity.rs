//! One policy path: the same policy file gives the same decision on the node's PEP
//! (frames over a real WebSocket) and on a runtime's PEP (messages on its bus), for
//! every message of a table of types, senders and recipients.

mod common;

use common::*;
use hyperty::prelude::*;
use hyperty_actors::error::Rejection;
use hyperty_actors::policy::PolicyConfig;
use serde_json::json;

const D: &str = "parity.test";

const POLICIES: &str = r#"
[[policies]]
id = "parity"
combining = "deny-overrides"
  [[policies.rules]]
  id = "no-deletes-to-b"
  effect = "deny"
  target = { types = ["delete"], to = ["runtime://parity.test/b*"] }
  [[policies.rules]]
  id = "evil-may-only-read"
  effect = "deny"
  target = { types = ["create", "update", "delete", "execute"], from = ["runtime://parity.test/evil*"] }
  [[policies.rules]]
  id = "secrets-closed"
  effect = "deny"
  target = { to = ["runtime://parity.test/c/secret*"] }
"#;

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

/// Answers every message with 200 through the owner's bus (updates too, so that
/// `post` sees every delivery).
struct Answer(Bus);

impl Actor for Answer {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Answer {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        self.0.send(m.reply(ResponseCode::Ok));
    }
}

fn table() -> Vec<(MessageType, &'static str, String)> {
    let kinds = [
        MessageType::Read,
        MessageType::Create,
        MessageType::Update,
        MessageType::Delete,
        MessageType::Execute,
    ];
    let mut t = Vec::new();
    for from in ["a", "evil"] {
        for to in [rt("b"), rt("c/secret/x"), rt("d/open")] {
            for k in kinds.clone() {
                t.push((k, from, to.clone()));
            }
        }
    }
    t
}

/// The node's decision: delivered (true) or 403 "Blocked by policy" (false).
async fn on_the_node(
    node: &hyperty::node::NodeHandle,
    table: &[(MessageType, &'static str, String)],
) -> Vec<bool> {
    let mut senders = std::collections::HashMap::new();
    for name in ["a", "evil"] {
        let mut c = WsClient::connect(&node.ws_url()).await;
        c.open(&rt(name)).await;
        senders.insert(name, c);
    }
    let mut receivers = Vec::new();
    for name in ["b", "c", "d"] {
        let mut c = WsClient::connect(&node.ws_url()).await;
        c.open(&rt(name)).await;
        receivers.push((rt(name), c));
    }
    let mut out = Vec::new();
    for (i, (kind, from, to)) in table.iter().enumerate() {
        let id = 1000 + i as u64;
        let tx = senders.get_mut(from).unwrap();
        tx.send(json!({"id": id, "type": kind.as_str(), "from": rt(from), "to": to}))
            .await;
        let (_, rx) = receivers
            .iter_mut()
            .find(|(url, _)| to.starts_with(url.as_str()))
            .unwrap();
        // the recipient gets it, or the sender gets the refusal: whichever comes
        let delivered = tokio::select! {
            m = rx.recv_matching(|m| m["id"] == id) => {
                assert_eq!(m["to"], json!(to));
                true
            }
            r = tx.recv_matching(|m| m["id"] == id && m["type"] == "response") => {
                assert_eq!(r["body"]["code"], 403, "{r}");
                assert_eq!(r["body"]["description"], "Blocked by policy");
                false
            }
        };
        out.push(delivered);
    }
    out
}

/// The runtime's decision for the same messages, posted on its bus.
async fn on_a_runtime(
    file: &std::path::Path,
    table: &[(MessageType, &'static str, String)],
) -> Vec<bool> {
    let mut cfg = RuntimeConfig::new(D);
    cfg.policy = Some(PolicyConfig {
        file: Some(file.to_owned()),
        ..PolicyConfig::default()
    });
    let runtime = Runtime::start(cfg).unwrap();
    runtime.pdp().expect("a PDP").installed().await.unwrap();
    let bus = runtime.bus().clone();
    let answer = Answer(bus.clone()).start().recipient();
    for (_, _, to) in table {
        let _ = bus.add_listener(addr(to), answer.clone(), None).await;
    }
    let mut out = Vec::new();
    for (kind, from, to) in table {
        let msg = Message::new(kind.clone(), addr(&rt(from)), addr(to)).with_id(bus.next_id());
        out.push(match bus.post(msg).await {
            Ok(r) => {
                assert_eq!(r.code(), Some(ResponseCode::Ok));
                true
            }
            Err(BusError::Rejected(rej)) => {
                assert_eq!(rej, Rejection::blocked_by_policy());
                false
            }
            Err(e) => panic!("{kind} {from} → {to}: {e:?}"),
        });
    }
    runtime.shutdown().await;
    out
}

#[actix::test]
async fn one_policy_file_decides_alike_on_the_node_and_on_a_runtime() {
    let dir = std::env::temp_dir().join(format!("hyperty-parity-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policies.toml");
    std::fs::write(&file, POLICIES).unwrap();
    let table = table();
    assert!(table.len() >= 20);
    let node = start_node(D, |c| c.policy.file = Some(file.clone()));
    let node_says = on_the_node(&node, &table).await;
    let runtime_says = on_a_runtime(&file, &table).await;
    for (i, (kind, from, to)) in table.iter().enumerate() {
        assert_eq!(
            node_says[i], runtime_says[i],
            "{kind} from {from} to {to}: node {} runtime {}",
            node_says[i], runtime_says[i]
        );
    }
    // the table exercises both outcomes
    assert!(node_says.iter().any(|d| *d) && node_says.iter().any(|d| !*d));
    let permitted = node_says.iter().filter(|d| **d).count();
    assert_eq!(permitted, 11, "{node_says:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
