//! "Alice invites Bob" (seed 000): a call set up with reporter/observer data
//! objects across two runtimes and a real messaging node.
//!
//! Alice's connector reports a `connection://` object holding her offer (SDP as
//! data) and invites Bob's connector; Bob's runtime is notified, acknowledges,
//! observes it, and reports his own connection object with the answer, inviting
//! Alice. ICE candidates travel as children; the status goes ringing →
//! connected → ended; hanging up deletes both objects.
//!
//! `cargo run --example h2h_call`

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use hyperty::bridge::BridgeConfig;
use hyperty::config::NodeConfig;
use hyperty::identity::{Login, Profile, RegisterUser, Secret};
use hyperty::prelude::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A connection object's schema (reTHINK's Connection, trimmed).
fn connection_schema() -> Value {
    json!({
        "$id": "hyperty-catalogue://catalogue.example.com/.well-known/dataschema/Connection",
        "type": "object",
        "properties": {
            "scheme": {"constant": "connection"},
            "owner": {"type": "string"},
            "peer": {"type": "string"},
            "status": {"enum": ["ringing", "connected", "ended"]},
            "connectionDescription": {
                "type": "object",
                "properties": {"type": {"enum": ["offer", "answer"]}, "sdp": {"type": "string"}},
                "required": ["type", "sdp"]
            }
        },
        "required": ["owner", "status", "connectionDescription"]
    })
}

/// A connector hyperty: acknowledges invitations (the notification step of
/// seed 000) and hands them to its application.
struct Connector {
    ctx: HypertyContext,
    invitations: mpsc::UnboundedSender<Invitation>,
}

impl Actor for Connector {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Connector {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        if let Some(inv) = Invitation::from_message(&m) {
            println!(
                "[{}] invited to {} — acknowledging",
                self.ctx.url(),
                inv.object
            );
            self.ctx.reply(&m, ResponseCode::Ok, Value::Null);
            let _ = self.invitations.send(inv);
        }
    }
}

/// Starts a connector in `rt`: its context and its invitations.
async fn connector(
    rt: &RuntimeHandle,
    user: UserUrl,
) -> Result<(HypertyContext, mpsc::UnboundedReceiver<Invitation>), Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    let spec = HypertySpec::new("connector", "example.com", move |ctx| {
        *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.clone());
        Connector {
            ctx,
            invitations: tx.clone(),
        }
    })
    .with_user(user);
    rt.spawn_hyperty(spec).await?;
    let ctx = slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or("the connector did not start")?;
    Ok((ctx, rx))
}

async fn login(
    node: &hyperty::node::NodeHandle,
    user: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let idp = node.state().idp();
    let password = Secret::new("correct horse battery");
    idp.send(RegisterUser {
        username: user.to_owned(),
        password: password.clone(),
        profile: Profile::default(),
    })
    .await??;
    let t = idp
        .send(Login {
            username: user.to_owned(),
            password,
            device: None,
            source: None,
        })
        .await??;
    Ok(t.token.expose().to_owned())
}

/// Waits for the next change of `h`'s object (or its deletion) and prints it.
async fn next_change(who: &str, h: &mut Observer) -> Result<SyncEvent, Box<dyn std::error::Error>> {
    loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), h.next())
            .await?
            .ok_or("object gone")?;
        match &ev {
            SyncEvent::Changed(c) => {
                match ev.attribute() {
                    Some((attr, value)) => println!(
                        "[{who}] sees v{} {attr} = {}",
                        c.version,
                        value.cloned().unwrap_or_default()
                    ),
                    None => println!(
                        "[{who}] sees v{} child {}",
                        c.version,
                        c.child.as_deref().unwrap_or("")
                    ),
                }
                return Ok(ev);
            }
            SyncEvent::Deleted => {
                println!("[{who}] sees the object deleted");
                return Ok(ev);
            }
            _ => continue,
        }
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let domain = "example.com";
    let mut cfg = NodeConfig::default();
    cfg.node.domain = domain.to_owned();
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None;
    let node = hyperty::node::start(TcpListener::bind("127.0.0.1:0")?, cfg)?;

    let (alice_rt, bob_rt) = (
        Runtime::start(RuntimeConfig::new(domain))?,
        Runtime::start(RuntimeConfig::new(domain))?,
    );
    for (rt, user) in [(&alice_rt, "alice"), (&bob_rt, "bob")] {
        let mut bridge = BridgeConfig::new(node.ws_url());
        bridge.token = Some(login(&node, user).await?);
        rt.attach_node(bridge).await?;
        rt.register_schema("Connection", connection_schema())
            .await?;
    }
    let (alice, mut alice_invites) =
        connector(&alice_rt, format!("user://{domain}/alice").parse()?).await?;
    let (bob, mut bob_invites) =
        connector(&bob_rt, format!("user://{domain}/bob").parse()?).await?;

    // 1. Alice reports her connection object with the offer and invites Bob
    let mut alice_conn = alice
        .syncher()
        .create(
            ObjectSpec::new("call", "connection")
                .with_schema(json!("Connection"))
                .with_data(json!({
                    "owner": alice.url().as_str(), "peer": bob.url().as_str(), "status": "ringing",
                    "connectionDescription": {"type": "offer", "sdp": "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\nm=audio 49170 RTP/AVP 0\r\n"}
                }))
                .invite([bob.url().address().clone()]),
        )
        .await?;
    println!(
        "[alice] reports {} (ringing) and invites bob",
        alice_conn.url()
    );

    // 2. Bob's runtime is notified; Bob observes Alice's object and answers
    let invitation = bob_invites.recv().await.ok_or("bob was not invited")?;
    loop {
        if let Some(SyncEvent::InvitationAnswered { code, .. }) = alice_conn.next().await {
            println!("[alice] bob acknowledged the invitation ({code})");
            break;
        }
    }
    let mut bob_view = bob.syncher().subscribe(&invitation.object).await?;
    println!(
        "[bob] observes alice's offer: {}",
        bob_view.data()["connectionDescription"]["sdp"]
    );
    let bob_conn = bob
        .syncher()
        .create(
            ObjectSpec::new("call", "connection")
                .with_schema(json!("Connection"))
                .with_data(json!({
                    "owner": bob.url().as_str(), "peer": alice.url().as_str(), "status": "ringing",
                    "connectionDescription": {"type": "answer", "sdp": "v=0\r\no=bob 2 2 IN IP4 192.0.2.2\r\nm=audio 49172 RTP/AVP 0\r\n"}
                }))
                .invite([alice.url().address().clone()]),
        )
        .await?;
    println!(
        "[bob] reports {} with his answer and invites alice",
        bob_conn.url()
    );
    let invitation = alice_invites.recv().await.ok_or("alice was not invited")?;
    let mut alice_view = alice.syncher().subscribe(&invitation.object).await?;
    println!(
        "[alice] observes bob's answer: {}",
        alice_view.data()["connectionDescription"]["type"]
    );

    // 3. ICE candidates travel as children, both ways
    alice_conn
        .add_child(json!({"candidate": "candidate:1 1 UDP 2130706431 192.0.2.1 49170 typ host"}))
        .await?;
    bob_conn
        .add_child(json!({"candidate": "candidate:1 1 UDP 2130706431 192.0.2.2 49172 typ host"}))
        .await?;
    next_change("bob", &mut bob_view).await?;
    next_change("alice", &mut alice_view).await?;

    // 4. connected
    alice_conn.set("status", "connected").await?;
    bob_conn.set("status", "connected").await?;
    next_change("bob", &mut bob_view).await?;
    next_change("alice", &mut alice_view).await?;
    println!("[alice] call connected; [bob] call connected");

    // 5. Alice hangs up: ended, and both objects are deleted
    alice_conn.set("status", "ended").await?;
    next_change("bob", &mut bob_view).await?;
    bob_conn.set("status", "ended").await?;
    next_change("alice", &mut alice_view).await?;
    let (alice_final, bob_final) = (bob_view.data(), alice_view.data());
    alice_conn.delete_object().await?;
    next_change("bob", &mut bob_view).await?;
    bob_conn.delete_object().await?;
    next_change("alice", &mut alice_view).await?;
    println!(
        "call ended: alice's object {}, bob's object {}; both deleted",
        alice_final["status"], bob_final["status"]
    );
    alice_rt.shutdown().await;
    bob_rt.shutdown().await;
    node.stop().await;
    Ok(())
}
