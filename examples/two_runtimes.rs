//! A messaging node and two runtimes: a request crosses the node over real
//! WebSockets and the response comes back.
//!
//! `cargo run --example two_runtimes`

use std::net::TcpListener;

use hyperty::bridge::BridgeConfig;
use hyperty::config::NodeConfig;
use hyperty::identity::{Login, Profile, RegisterUser, Secret};
use hyperty::prelude::*;
use serde_json::json;

/// Answers every request with the time of day it was asked for.
struct Clock {
    ctx: HypertyContext,
}

impl Actor for Clock {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Clock {
    type Result = ();
    fn handle(&mut self, Deliver(request): Deliver, _: &mut Context<Self>) {
        println!(
            "[runtime B] {} received: {}",
            self.ctx.url(),
            request.to_json()
        );
        let city = request
            .body
            .value
            .as_ref()
            .and_then(|v| v.get("city"))
            .and_then(|c| c.as_str())
            .unwrap_or("nowhere")
            .to_owned();
        self.ctx.reply(
            &request,
            ResponseCode::Ok,
            json!({ "city": city, "time": "12:00" }),
        );
    }
}

/// Does nothing on its own: main posts on its behalf.
struct Asker;

impl Actor for Asker {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Asker {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let domain = "example.com";
    let mut cfg = NodeConfig::default();
    cfg.node.domain = domain.to_owned();
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None; // address holders in memory too // keys in memory for this demo
    let node = hyperty::node::start(TcpListener::bind("127.0.0.1:0")?, cfg)?;
    println!("node listening on {}", node.ws_url());

    // sessions authenticate: a user registers at the node's identity provider
    // (also reachable as POST /idp/users and /idp/login) and logs in
    let idp = node.state().idp();
    let password = Secret::new("correct horse battery");
    idp.send(RegisterUser {
        username: "alice".to_owned(),
        password: password.clone(),
        profile: Profile::default(),
    })
    .await??;
    let login = idp
        .send(Login {
            username: "alice".to_owned(),
            password,
            device: None,
            source: None,
        })
        .await??;
    println!("alice logged in as {}", login.claims.sub);
    let mut bridge = BridgeConfig::new(node.ws_url());
    bridge.token = Some(login.token.expose().to_owned());

    let a = Runtime::start(RuntimeConfig::new(domain))?;
    let b = Runtime::start(RuntimeConfig::new(domain))?;
    a.attach_node(bridge.clone()).await?;
    b.attach_node(bridge).await?;

    let clock = b
        .spawn_hyperty(HypertySpec::new("clock", domain, |ctx| Clock { ctx }))
        .await?;
    let asker = a
        .spawn_hyperty(HypertySpec::new("asker", domain, |_| Asker))
        .await?;
    println!("[runtime A] asker {asker}, [runtime B] clock {clock} (addresses from the node)");

    let request = Message::new(
        MessageType::Read,
        asker.into_address(),
        clock.into_address(),
    )
    .with_id(a.bus().next_id())
    .with_value(json!({ "city": "Lisbon" }));
    println!("[runtime A] sends: {}", request.to_json());
    let response = a.bus().post(request).await?;
    println!("[runtime A] received: {}", response.to_json());

    a.shutdown().await;
    b.shutdown().await;
    node.stop().await;
    Ok(())
}
