//! An example federated deployment: three domains, each its own `hyperty` node
//! process, linked node to node, and a scenario across them.
//!
//! `cargo run --example federation` starts the nodes of alpha.test, beta.test and
//! gamma.test (generated configurations in a temporary directory; each node finds
//! the others by discovery, `[federation] resolve` mapping the domains to
//! 127.0.0.1 ports), waits for their `listening on …` lines and runs the scenario:
//!
//! 1. chat among users of the three domains (requests and answers across nodes);
//! 2. presence: an observer in alpha subscribes at beta's node (`/sm`) to bob's
//!    presence channel, and bob's updates reach it;
//! 3. a webinos event from alpha with cc in beta and bcc in gamma, and its
//!    delivery notifications;
//! 4. an H2H call from alpha to beta: each side reports a `connection://` object
//!    (offer, answer) with the Syncher and invites the other, ICE candidates travel
//!    as children, the status goes ringing → connected → ended, hang-up deletes both;
//! 5. discovery of a beta user from alpha (a query to `domain://registry.beta.test`).
//!
//! Then it keeps the nodes running until Ctrl-C; with `--once` it stops them
//! after the scenario. The nodes log errors only; `RUST_LOG=info` shows their logs
//! (on stderr).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyperty::actors::message::OneOrMany;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

const DOMAINS: [&str; 3] = ["alpha.test", "beta.test", "gamma.test"];
const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(10);

/// The node processes; they are stopped when this goes.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM: the node closes its sessions and links, then exits
            let term = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if !term.is_ok_and(|s| s.success()) {
                let _ = c.kill();
            }
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// The `hyperty` binary beside this example's directory (built if missing).
fn node_binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?;
    let bin = profile_dir.join(format!("hyperty{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--bin", "hyperty", "--target-dir"])
            .arg(profile_dir.parent().ok_or("no target directory")?)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        if !build.status()?.success() {
            return Err("cargo build --bin hyperty failed".into());
        }
    }
    Ok(bin)
}

/// Starts one node per domain and waits for each one's `listening on` line.
fn start_nodes(dir: &Path) -> Result<(Nodes, Vec<String>), Error> {
    // free ports, known up front so that each configuration can resolve the others
    let ports: Vec<u16> = DOMAINS
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
        .map(|a| a.map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    let resolve: Vec<String> = DOMAINS
        .iter()
        .zip(&ports)
        .map(|(d, p)| format!("\"{d}\" = \"127.0.0.1:{p}\""))
        .collect();
    let bin = node_binary()?;
    let mut nodes = Nodes(Vec::new());
    let mut urls = Vec::new();
    for (domain, port) in DOMAINS.iter().zip(&ports) {
        let home = dir.join(domain);
        std::fs::create_dir_all(&home)?;
        let config = home.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\ndomain = \"{domain}\"\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\n\
                 data_dir = \"{node}\"\n\n[identity]\ndata_dir = \"{idp}\"\n\n\
                 [federation]\nresolve = {{ {resolve} }}\n",
                node = home.join("node").display(),
                idp = home.join("idp").display(),
                resolve = resolve.join(", "),
            ),
        )?;
        let mut child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        nodes.0.push(child);
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().ok_or("the node ended before listening")??;
        let url = line
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line: {line}"))?
            .to_owned();
        println!("[{domain}] node {url}");
        // keep draining what the node prints
        std::thread::spawn(move || lines.for_each(drop));
        urls.push(url);
    }
    Ok((nodes, urls))
}

/// Registers `user` at the node behind `ws_url` and logs in over HTTP: an ID token.
async fn login(ws_url: &str, user: &str) -> Result<String, Error> {
    let base = ws_url
        .replace("ws://", "http://")
        .trim_end_matches("/ws")
        .to_owned();
    let client = awc::Client::default();
    let creds = json!({"username": user, "password": PASSWORD});
    let r = client
        .post(format!("{base}/idp/users"))
        .send_json(&creds)
        .await?;
    if !r.status().is_success() {
        return Err(format!("registering {user}: HTTP {}", r.status()).into());
    }
    let v: Value = client
        .post(format!("{base}/idp/login"))
        .send_json(&creds)
        .await?
        .json()
        .await?;
    Ok(v["idToken"].as_str().ok_or("no idToken")?.to_owned())
}

/// A chat participant: prints what it is sent and answers it; acknowledges
/// invitations to data objects and hands them to `main`.
struct Chat {
    ctx: HypertyContext,
    name: &'static str,
    invitations: tokio::sync::mpsc::UnboundedSender<Invitation>,
}

impl Actor for Chat {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Chat {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        if let Some(invitation) = Invitation::from_message(&m) {
            self.ctx.reply(&m, ResponseCode::Ok, Value::Null);
            let _ = self.invitations.send(invitation);
            return;
        }
        let text = m.body.value.as_ref().and_then(|v| v.get("text"));
        match text.and_then(Value::as_str) {
            Some(text) if m.kind.expects_response() => {
                println!("    {:<6} got \"{text}\" from {}", self.name, m.from);
                let reply = format!("hi from {}", self.name);
                self.ctx
                    .reply(&m, ResponseCode::Ok, json!({ "text": reply }));
            }
            _ if m.kind == MessageType::Update => {
                let v = m.body.value.clone().unwrap_or_default();
                println!("    {:<6} sees {} -> {v}", self.name, m.to.first());
            }
            _ => {}
        }
    }
}

/// Hands every message on a channel it listens to to `main`.
struct Watch(tokio::sync::mpsc::UnboundedSender<Message>);

impl Actor for Watch {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Watch {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let _ = self.0.send(m);
    }
}

/// A user's runtime: attached to its domain's node with the user's token.
struct User {
    name: &'static str,
    runtime: RuntimeHandle,
    hyperty: HypertyUrl,
    /// The hyperty's context (its Syncher).
    ctx: HypertyContext,
    invitations: tokio::sync::mpsc::UnboundedReceiver<Invitation>,
}

async fn user(domain: &str, node: &str, name: &'static str) -> Result<User, Error> {
    let token = login(node, name).await?;
    let runtime = Runtime::start(RuntimeConfig::new(domain))?;
    let mut bridge = BridgeConfig::new(node);
    bridge.token = Some(token);
    runtime.attach_node(bridge).await?;
    let (tx, invitations) = tokio::sync::mpsc::unbounded_channel();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s = slot.clone();
    let hyperty = runtime
        .spawn_hyperty(HypertySpec::new("chat", domain, move |ctx| {
            *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.clone());
            Chat {
                ctx,
                name,
                invitations: tx.clone(),
            }
        }))
        .await?;
    let ctx = slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or("the chat hyperty did not start")?;
    Ok(User {
        name,
        runtime,
        hyperty,
        ctx,
        invitations,
    })
}

async fn ask(from: &User, to: &User, text: &str) -> Result<(), Error> {
    let msg = Message::new(
        MessageType::Execute,
        from.hyperty.address().clone(),
        to.hyperty.address().clone(),
    )
    .with_value(json!({ "text": text }));
    let r = from.runtime.bus().post(msg).await?;
    let answer = r.body.value.as_ref().and_then(|v| v.get("text")).cloned();
    println!(
        "    {:<6} <- {} {}",
        from.name,
        r.code().map_or(0, ResponseCode::as_u16),
        answer.unwrap_or_default()
    );
    Ok(())
}

async fn chat(alice: &User, bob: &User, carol: &User) -> Result<(), Error> {
    println!("1. chat across alpha.test, beta.test and gamma.test");
    ask(alice, bob, "hello bob, alice here (alpha)").await?;
    ask(alice, carol, "hello carol, alice here (alpha)").await?;
    ask(bob, carol, "hello carol, bob here (beta)").await?;
    ask(carol, alice, "hello alice, carol here (gamma)").await?;
    Ok(())
}

async fn presence(alice: &User, bob: &User) -> Result<(), Error> {
    println!("2. alice (alpha) follows bob's presence, held at beta's node");
    let channel: Address = format!("{}/presence", bob.hyperty.address()).parse()?;
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    alice
        .runtime
        .bus()
        .add_listener(channel.clone(), Watch(tx).start().recipient(), None)
        .await?;
    let sm: Address = "domain://msg-node.beta.test/sm".parse()?;
    let mut subscribe = Message::new(MessageType::Subscribe, alice.hyperty.address().clone(), sm);
    subscribe.body.resources = Some(vec![channel.to_string()]);
    let r = alice.runtime.bus().post(subscribe).await?;
    println!(
        "    alice  subscribed at domain://msg-node.beta.test/sm: {}",
        r.code().map_or(0, ResponseCode::as_u16)
    );
    for status in ["online", "busy"] {
        let update = Message::new(
            MessageType::Update,
            bob.hyperty.address().clone(),
            channel.clone(),
        )
        .with_value(json!({ "status": status }));
        bob.runtime.bus().send(update);
        let got = tokio::time::timeout(WAIT, seen.recv())
            .await?
            .ok_or("no presence update")?;
        println!(
            "    alice  sees {} is {}",
            bob.name,
            got.body.value.unwrap_or_default()["status"]
        );
    }
    Ok(())
}

async fn event(alice: &User, bob: &User, bea: &User, carol: &User) -> Result<(), Error> {
    println!("3. a webinos event from alpha: to bob, cc bea (beta), bcc carol (gamma)");
    let mut inboxes = Vec::new();
    for u in [bob, bea, carol] {
        let addr = u.hyperty.address().clone();
        let ep = u.runtime.events().endpoint(addr.clone());
        ep.register_entity(addr.clone()).await?;
        let (listener, inbox) = EventInbox::start();
        ep.add_listener(ListenerFilter::any().destination(addr), listener)
            .await?;
        inboxes.push((u.name, inbox));
    }
    let source = alice.hyperty.address().clone();
    let ep = alice.runtime.events().endpoint(source.clone());
    ep.register_entity(source.clone()).await?;
    let e = ep
        .builder("chat", source)
        .to(bob.hyperty.address().clone())
        .cc(bea.hyperty.address().clone())
        .bcc(carol.hyperty.address().clone())
        .payload("lunch at noon?")
        .build()?;
    let id = e.id();
    let (callbacks, mut reports) = EventCallbacks::channel(CallbackSet::all());
    ep.dispatch(e, Some(callbacks), Some(Duration::from_secs(30)))
        .await?;
    for (name, inbox) in &mut inboxes {
        let got = inbox
            .recv(WAIT)
            .await
            .ok_or("an event recipient got nothing")?;
        println!(
            "    {name:<6} got {:?} (same id: {}, bcc it sees: {})",
            got.event.payload().unwrap_or_default(),
            got.event.id() == id,
            got.event.addressing().bcc().len()
        );
    }
    while let Some(r) = reports.recv(WAIT).await {
        if let ReportKind::Delivery { recipient, .. } = &r.kind {
            println!("    alice  delivery notification: delivered to {recipient}");
            return Ok(());
        }
    }
    Err("no delivery notification".into())
}

/// `owner`'s connection object: its session description, ringing, `peer` invited.
fn connection(owner: &User, peer: &User, kind: &str, sdp: &str) -> ObjectSpec {
    ObjectSpec::new("call", "connection")
        .with_schema(json!({
            "properties": {"status": {"enum": ["ringing", "connected", "ended"]}},
            "required": ["status", "connectionDescription"]
        }))
        .with_data(
            json!({"owner": owner.hyperty.as_str(), "peer": peer.hyperty.as_str(),
            "status": "ringing", "connectionDescription": {"type": kind, "sdp": sdp}}),
        )
        .invite([peer.hyperty.address().clone()])
}

/// Waits until `view` has reached `version` (or, with `None`, is deleted).
async fn until(view: &mut Observer, version: Option<u64>) -> Result<(), Error> {
    loop {
        if version.is_some_and(|v| view.version() >= v) {
            return Ok(());
        }
        match tokio::time::timeout(WAIT, view.next()).await? {
            Some(SyncEvent::Deleted) if version.is_none() => return Ok(()),
            Some(_) => continue,
            None => return Err(format!("{} went away", view.url()).into()),
        }
    }
}

async fn call(alice: &mut User, bob: &mut User) -> Result<(), Error> {
    println!("4. alice (alpha) calls bob (beta): connection objects of the Syncher");
    let offer = connection(alice, bob, "offer", "v=0 o=alice 1 1 IN IP4 192.0.2.1");
    let alice_conn = alice.ctx.syncher().create(offer).await?;
    println!(
        "    alice  reports {} (ringing), invites bob",
        alice_conn.url()
    );
    let invitation = tokio::time::timeout(WAIT, bob.invitations.recv())
        .await?
        .ok_or("bob was not invited")?;
    let mut bob_view = bob.ctx.syncher().subscribe(&invitation.object).await?;
    println!(
        "    bob    observes the offer: {}",
        bob_view.data()["connectionDescription"]["sdp"]
    );
    let answer = connection(bob, alice, "answer", "v=0 o=bob 2 2 IN IP4 192.0.2.2");
    let bob_conn = bob.ctx.syncher().create(answer).await?;
    let invitation = tokio::time::timeout(WAIT, alice.invitations.recv())
        .await?
        .ok_or("alice was not invited")?;
    let mut alice_view = alice.ctx.syncher().subscribe(&invitation.object).await?;
    println!(
        "    alice  observes bob's answer in {}: {}",
        bob_conn.url(),
        alice_view.data()["connectionDescription"]["sdp"]
    );
    alice_conn
        .add_child(json!({"candidate": "candidate:1 1 UDP 2130706431 192.0.2.1 49170 typ host"}))
        .await?;
    bob_conn
        .add_child(json!({"candidate": "candidate:1 1 UDP 2130706431 192.0.2.2 49172 typ host"}))
        .await?;
    until(&mut bob_view, Some(1)).await?;
    until(&mut alice_view, Some(1)).await?;
    println!(
        "    both   see each other's ICE candidate ({} and {} children)",
        bob_view.snapshot().children.len(),
        alice_view.snapshot().children.len()
    );
    for (n, status) in [(2, "connected"), (3, "ended")] {
        alice_conn.set("status", status).await?;
        bob_conn.set("status", status).await?;
        until(&mut bob_view, Some(n)).await?;
        until(&mut alice_view, Some(n)).await?;
        println!(
            "    both   see the call {} (alice's v{}, bob's v{})",
            bob_view.data()["status"],
            bob_view.version(),
            alice_view.version()
        );
    }
    alice_conn.delete_object().await?;
    bob_conn.delete_object().await?;
    until(&mut bob_view, None).await?;
    until(&mut alice_view, None).await?;
    println!("    both   connection objects deleted: the call is over");
    Ok(())
}

async fn discovery(alice: &User, bob: &User) -> Result<(), Error> {
    println!("5. alice (alpha) discovers bob at beta's domain registry");
    let registry: Address = "domain://registry.beta.test".parse()?;
    let runtime_url = bob.runtime.url().address().clone();
    let from: Address = format!("{runtime_url}/registry/").parse()?;
    let register = Message::new(MessageType::Create, from, registry.clone()).with_value(json!({
        "user": "user://beta.test/bob",
        "descriptor": "hyperty-catalogue://catalogue.beta.test/.well-known/hyperty/Chat",
        "url": bob.hyperty.address().as_str(),
        "expires": 3600,
        "resources": ["chat"],
        "dataSchemes": ["comm"],
        "runtime": runtime_url.as_str(),
        "status": "live",
    }));
    bob.runtime.bus().post(register).await?;
    let mut read = Message::new(MessageType::Read, alice.hyperty.address().clone(), registry);
    read.body.resource = Some(OneOrMany::One("user://beta.test/bob".to_owned()));
    let r = alice.runtime.bus().post(read).await?;
    let found: Vec<String> = r
        .body
        .value
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    println!(
        "    alice  found user://beta.test/bob: {} -> {}",
        r.code().map_or(0, ResponseCode::as_u16),
        found.join(", ")
    );
    if found.iter().any(|h| h == bob.hyperty.address().as_str()) {
        Ok(())
    } else {
        Err("bob's hyperty not found".into())
    }
}

#[actix::main]
async fn main() -> Result<(), Error> {
    let once = std::env::args().any(|a| a == "--once");
    let dir = std::env::temp_dir().join(format!("hyperty-federation-{}", std::process::id()));
    let (nodes, urls) = start_nodes(&dir)?;
    let mut alice = user(DOMAINS[0], &urls[0], "alice").await?;
    let mut bob = user(DOMAINS[1], &urls[1], "bob").await?;
    let bea = user(DOMAINS[1], &urls[1], "bea").await?;
    let carol = user(DOMAINS[2], &urls[2], "carol").await?;

    chat(&alice, &bob, &carol).await?;
    presence(&alice, &bob).await?;
    event(&alice, &bob, &bea, &carol).await?;
    call(&mut alice, &mut bob).await?;
    discovery(&alice, &bob).await?;
    println!("federation scenario complete: 3 domains, 3 nodes");
    std::io::stdout().flush()?;

    if !once {
        println!("nodes running; Ctrl-C stops them");
        tokio::signal::ctrl_c().await?;
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
