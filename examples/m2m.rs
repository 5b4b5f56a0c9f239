//! M2M (seed 000): device bootstrap, registration, context discovery, pub-sub.
//!
//! A device runtime bootstraps with a device token from the node's identity
//! provider, registers, and reports a `context://` object whose readings are
//! updates. An application discovers it in the domain registry by scheme and
//! resource type and observes it. The device's socket drops mid-stream and comes
//! back; the application sees every reading, in order, with no gap.
//!
//! `cargo run --example m2m`

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperty::bridge::BridgeConfig;
use hyperty::config::NodeConfig;
use hyperty::identity::{DeviceToken, Login, Profile, RegisterDevice, RegisterUser, Secret};
use hyperty::prelude::*;
use serde_json::{json, Value};

/// A hyperty that does nothing on its own; `main` uses its Syncher.
struct Quiet;

impl Actor for Quiet {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Quiet {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
}

async fn quiet_hyperty(
    rt: &RuntimeHandle,
    name: &str,
) -> Result<HypertyContext, Box<dyn std::error::Error>> {
    let slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    rt.spawn_hyperty(HypertySpec::new(name, "example.com", move |ctx| {
        *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx);
        Quiet
    }))
    .await?;
    let ctx = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    Ok(ctx.ok_or("the hyperty did not start")?)
}

/// The context schema: a unit and readings.
fn context_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "scheme": {"const": "context"},
            "unit": {"enum": ["C", "F"]},
            "latest": {"type": ["number", "null"]},
            "values": {"type": "array", "items": {"type": "number"}}
        },
        "required": ["unit", "values"]
    })
}

const READINGS: u64 = 40;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let domain = "example.com";
    let mut cfg = NodeConfig::default();
    cfg.node.domain = domain.to_owned();
    cfg.identity.data_dir = None;
    cfg.node.data_dir = None;
    let node = hyperty::node::start(TcpListener::bind("127.0.0.1:0")?, cfg)?;
    let idp = node.state().idp();
    let password = Secret::new("correct horse battery");
    for user in ["operator", "analyst"] {
        idp.send(RegisterUser {
            username: user.to_owned(),
            password: password.clone(),
            profile: Profile::default(),
        })
        .await??;
    }
    let login = |user: &str| Login {
        username: user.to_owned(),
        password: password.clone(),
        device: None,
        source: None,
    };

    // bootstrap: the operator registers the device, which gets a device token
    let operator = idp.send(login("operator")).await??;
    let creds = idp
        .send(RegisterDevice {
            label: Some("thermometer".into()),
            id_token: operator.token.clone(),
        })
        .await??;
    let device_token = idp
        .send(DeviceToken {
            device: creds.device.clone(),
            secret: creds.secret.clone(),
        })
        .await??;
    let mut device_cfg = RuntimeConfig::new(domain);
    device_cfg.runtime_id = Some(creds.device.clone());
    let device = Runtime::start(device_cfg)?;
    let mut bridge = BridgeConfig::new(node.ws_url());
    bridge.token = Some(device_token.token.expose().to_owned());
    device.attach_node(bridge).await?;
    println!("[device] {} registered with a device token", device.url());

    // registration: the device reports its context object
    let sensor = quiet_hyperty(&device, "thermometer").await?;
    let context = sensor
        .syncher()
        .create(
            ObjectSpec::new("living-room", "context")
                .with_schema(context_schema())
                .with_resources(&["temperature"])
                .with_data(json!({"unit": "C", "latest": null, "values": []})),
        )
        .await?;
    println!("[device] reports {}", context.url());

    // discovery: the application finds it by criteria and observes it
    let mut app_cfg = RuntimeConfig::new(domain);
    // an idle observer checks its version with the reporter this often
    app_cfg.syncher.check_interval = Duration::from_millis(200);
    let app_rt = Runtime::start(app_cfg)?;
    let mut bridge = BridgeConfig::new(node.ws_url());
    bridge.token = Some(idp.send(login("analyst")).await??.token.expose().to_owned());
    app_rt.attach_node(bridge).await?;
    let app = quiet_hyperty(&app_rt, "dashboard").await?;
    let found = app
        .syncher()
        .discover(&["context"], &["temperature"], None)
        .await?;
    let first = found.first().ok_or("nothing found")?;
    println!(
        "[app] discovered {} reported by {} ({})",
        first.url, first.reporter, first.status
    );
    let mut observer = app.syncher().subscribe(&first.url.parse()?).await?;

    // pub-sub: readings are updates; the device's socket drops half-way
    let router = node.state().router().clone();
    for i in 0..READINGS {
        let reading = 20.0 + i as f64 / 10.0;
        context.set("latest", reading).await?;
        context.push("values", reading).await?;
        if i == READINGS / 2 {
            if let Some(key) = router.session_of(device.url().as_str()) {
                router.kick(&key, "network lost");
                println!("[device] socket dropped");
            }
        }
    }
    let mut last = 0;
    let mut gaps = 0;
    let want = context.version();
    while observer.version() < want || last < want {
        match tokio::time::timeout(Duration::from_secs(10), observer.next()).await? {
            Some(SyncEvent::Changed(c)) => {
                if c.version != last + 1 {
                    gaps += 1;
                }
                last = c.version;
            }
            Some(SyncEvent::Resync { version }) => last = version,
            Some(_) => {}
            None => return Err("the context object went away".into()),
        }
    }
    let values = observer.data()["values"].as_array().map_or(0, Vec::len);
    println!(
        "[app] application saw {values} readings up to version {last}, {}",
        match (
            gaps,
            values as u64 == READINGS && observer.snapshot() == context.snapshot()
        ) {
            (0, true) => "in order, no gap",
            _ => "with a gap",
        }
    );
    device.shutdown().await;
    app_rt.shutdown().await;
    node.stop().await;
    Ok(())
}
