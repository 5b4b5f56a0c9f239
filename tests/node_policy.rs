//! The node's PEP (threat T2 on the node): a deny rule blocks frames on the routing
//! path, policy managers change the rules at run time through
//! `domain://msg-node.<D>/pep`, and the change applies to the next message.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const D: &str = "pol.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

#[actix::test]
async fn policies_on_the_node_block_and_change_at_run_time() {
    let dir = std::env::temp_dir().join(format!("hyperty-node-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policies.toml");
    std::fs::write(
        &file,
        r#"
[[policies]]
id = "no-deletes-to-b"
combining = "first-applicable"
  [[policies.rules]]
  id = "deny-deletes"
  effect = "deny"
  target = { types = ["delete"], to = ["runtime://pol.test/b*"] }
"#,
    )
    .unwrap();
    let node = start_node(D, |c| {
        c.policy.file = Some(file.clone());
        c.policy.managers = vec![format!("user://{D}/admin")];
    });
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let mut b = WsClient::connect(&node.ws_url()).await;
    b.open(&rt("b")).await;

    // the file's rule: deletes to B are blocked, nothing delivered
    let r = a
        .request(json!({"type": "delete", "from": rt("a"), "to": rt("b")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    assert_eq!(r["body"]["description"], "Blocked by policy");
    assert!(b.recv(Duration::from_millis(50)).await.is_none());
    // other types pass
    a.send(json!({"id": 9, "type": "update", "from": rt("a"), "to": rt("b")}))
        .await;
    assert_eq!(b.expect().await["id"], 9);

    // an anonymous session may not manage policies
    let pep = format!("domain://msg-node.{D}/pep");
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": pep}))
        .await;
    assert_eq!(r["body"]["code"], 403);

    // the manager adds a rule: the very next update is blocked
    let token = user_token(&node, "admin").await;
    let mut admin = WsClient::connect(&node.ws_url()).await;
    let r = admin
        .request(json!({"type": "open", "from": rt("admin"), "to": "mn:/session", "body": {"idToken": token}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let set = json!({"id": "no-updates", "rules": [{"id": "u", "effect": "deny", "target": {"types": ["update"]}}]});
    let r = admin
        .request(json!({"type": "create", "from": rt("admin"), "to": pep, "body": {"value": set}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let r = a
        .request(json!({"type": "update", "from": rt("a"), "to": rt("b")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    let r = admin
        .request(json!({"type": "read", "from": rt("admin"), "to": pep}))
        .await;
    assert_eq!(r["body"]["value"].as_array().unwrap().len(), 2);
    // a bad set is a 400, not a panic
    let r = admin
        .request(json!({"type": "create", "from": rt("admin"), "to": pep, "body": {"value": {"id": "x", "rules": [{"effect": "maybe"}]}}}))
        .await;
    assert_eq!(r["body"]["code"], 400, "{r}");
    // removing it lets updates through again
    let r = admin
        .request(json!({"type": "delete", "from": rt("admin"), "to": pep, "body": {"resource": "no-updates"}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    a.send(json!({"id": 11, "type": "update", "from": rt("a"), "to": rt("b")}))
        .await;
    assert_eq!(b.expect().await["id"], 11);
    std::fs::remove_dir_all(&dir).ok();
}

#[actix::test]
async fn a_bad_policy_file_stops_the_node_from_starting() {
    let dir = std::env::temp_dir().join(format!("hyperty-node-badpolicy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[[policies]]\nid = 3\n").unwrap();
    let mut cfg = hyperty::config::NodeConfig::default();
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None;
    cfg.policy.file = Some(file);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = hyperty::node::start(listener, cfg).unwrap_err();
    assert!(matches!(err, hyperty::node::NodeError::Policy(_)), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
