//! Protocol on the fly: a runtime of domain A reaches a hyperty of domain B by
//! downloading B's protocol stub from B's catalogue — no gateway, no federation
//! between the two nodes.
//!
//! `cargo run --example protofly`

use std::net::TcpListener;

use hyperty::config::NodeConfig;
use hyperty::prelude::*;
use hyperty::ua::{RuntimeUa, UaConfig};
use serde_json::json;

/// B's stub for its node's own WebSocket dialect (JavaScript, run sandboxed).
const RAW_STUB: &str = include_str!("protofly/raw_stub.js");

/// Answers every request with a greeting.
struct Greeter {
    ctx: HypertyContext,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Greeter {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        println!("[domain B] greeter received: {}", m.to_json());
        self.ctx
            .reply(&m, ResponseCode::Ok, json!("hello from b.example"));
    }
}

fn node_config(domain: &str, catalogue: Option<std::path::PathBuf>) -> NodeConfig {
    let mut cfg = NodeConfig::default();
    cfg.node.domain = domain.to_owned();
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None;
    cfg.auth.mode = hyperty::config::AuthMode::Optional;
    cfg.federation.enabled = false;
    cfg.catalogue.dir = catalogue;
    cfg
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // domain B publishes its stub in its catalogue
    let listener_b = TcpListener::bind("127.0.0.1:0")?;
    let b_addr = listener_b.local_addr()?;
    let dir = std::env::temp_dir().join(format!("protofly-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("protocolstub"))?;
    std::fs::write(
        dir.join("protocolstub/default.json"),
        json!({"objectName": "default", "objectType": "protocolstub", "version": "1.0.0",
               "sourcePackageURL": "default.js",
               "configuration": {"url": format!("ws://{b_addr}/ws"), "domain": "b.example"}})
        .to_string(),
    )?;
    std::fs::write(dir.join("protocolstub/default.js"), RAW_STUB)?;
    let node_b = hyperty::node::start(listener_b, node_config("b.example", Some(dir.clone())))?;
    println!(
        "1. node of b.example at {}, catalogue at {}/.well-known/protocolstub/default",
        node_b.ws_url(),
        node_b.http_url()
    );

    let rt_b = Runtime::start(RuntimeConfig::new("b.example"))?;
    rt_b.attach_node(hyperty::bridge::BridgeConfig::new(node_b.ws_url()))
        .await?;
    let greeter = rt_b
        .spawn_hyperty(HypertySpec::new("greeter", "b.example", |ctx| Greeter {
            ctx,
        }))
        .await?;
    println!("2. hyperty {greeter} runs in a runtime of b.example");

    // domain A: its own node, a runtime with a user agent
    let node_a = hyperty::node::start(
        TcpListener::bind("127.0.0.1:0")?,
        node_config("a.example", None),
    )?;
    let rt_a = Runtime::start(RuntimeConfig::new("a.example"))?;
    rt_a.attach_node(hyperty::bridge::BridgeConfig::new(node_a.ws_url()))
        .await?;
    let mut ua = UaConfig::default();
    ua.resolve.insert("b.example".into(), b_addr.to_string());
    RuntimeUa::start(&rt_a, ua).await?;
    println!(
        "3. runtime {} of a.example (node {}), stubs: {:?}",
        rt_a.url(),
        node_a.ws_url(),
        rt_a.stubs()
            .await
            .iter()
            .map(|s| s.domain.clone())
            .collect::<Vec<_>>()
    );

    let me = rt_a.url().component("app");
    let request = Message::new(MessageType::Execute, me, greeter.clone().into_address())
        .with_value(json!("hi"));
    println!("4. [domain A] sends: {}", request.to_json());
    let response = rt_a.bus().post(request).await?;
    for s in rt_a.stubs().await {
        if let Some(d) = &s.domain {
            println!(
                "5. loaded, verified and started the stub of {d} at {} ({:?})",
                s.url, s.status
            );
        }
    }
    println!("6. [domain A] received: {}", response.to_json());

    rt_a.shutdown().await;
    rt_b.shutdown().await;
    node_a.stop().await;
    node_b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
