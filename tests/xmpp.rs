//! Protocol on the fly against a real XMPP server: a hyperty sends a chat
//! message to an XMPP account through the stub downloaded from the XMPP domain's
//! catalogue (XMPP over WebSocket, RFC 7395) and gets the reply — no gateway.
//!
//! Needs Debian's `prosody` (`scripts/test.sh` installs it where missing); the
//! test starts its own on 127.0.0.1 with the websocket module and creates the
//! accounts with `prosodyctl`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use hyperty::prelude::*;
use hyperty::ua::{RuntimeUa, UaConfig};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;

const DOMAIN: &str = "xmpp.test";

/// A Prosody of its own: killed (and its directory removed) on drop.
struct Prosody {
    child: Child,
    dir: PathBuf,
    http: u16,
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn prosodyctl(config: &Path, args: &[&str]) {
    let status = Command::new("prosodyctl")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("prosodyctl runs (apt-get install prosody; scripts/test.sh installs it)");
    assert!(status.success(), "prosodyctl {args:?}: {status}");
}

async fn start_prosody(accounts: &[(&str, &str)]) -> Prosody {
    let dir = std::env::temp_dir().join(format!("prosody-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let (http, c2s) = (free_port(), free_port());
    let d = dir.display();
    let config = dir.join("prosody.cfg.lua");
    std::fs::write(
        &config,
        format!(
            r#"pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
run_as_root = true
admins = {{}}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "websocket"; "posix" }}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
consider_websocket_secure = true
http_ports = {{ {http} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{}}
c2s_ports = {{ {c2s} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{}}
log = {{ info = "{d}/prosody.log" }}
authentication = "internal_plain"
VirtualHost "{DOMAIN}"
"#
        ),
    )
    .unwrap();
    for (user, password) in accounts {
        prosodyctl(&config, &["register", user, DOMAIN, password]);
    }
    let child = Command::new("prosody")
        .arg("--config")
        .arg(&config)
        .arg("-F")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prosody starts (apt-get install prosody)");
    let p = Prosody { child, dir, http };
    assert!(
        eventually(TIMEOUT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", http))
                .await
                .is_ok()
        })
        .await,
        "prosody did not listen on {http}"
    );
    p
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn frame(ws: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no XMPP frame: {other:?}"),
        }
    }
}

/// The next frame containing `what`.
async fn frame_with(ws: &mut Socket, what: &str) -> String {
    loop {
        let f = frame(ws).await;
        if f.contains(what) {
            return f;
        }
    }
}

async fn send(ws: &mut Socket, xml: &str) {
    ws.send(Ws::Text(xml.to_owned().into())).await.unwrap();
}

/// An XMPP client over WebSocket, logged in, bound and available.
async fn xmpp_login(http: u16, user: &str, password: &str) -> Socket {
    let mut req = format!("ws://127.0.0.1:{http}/xmpp-websocket")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let open = format!(
        r#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="{DOMAIN}" version="1.0"/>"#
    );
    send(&mut ws, &open).await;
    frame_with(&mut ws, "PLAIN").await;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    send(
        &mut ws,
        &format!(
            r#"<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{creds}</auth>"#
        ),
    )
    .await;
    assert!(frame(&mut ws).await.starts_with("<success"));
    send(&mut ws, &open).await;
    frame_with(&mut ws, "bind").await;
    send(
        &mut ws,
        r#"<iq type="set" id="b" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>phone</resource></bind></iq>"#,
    )
    .await;
    frame_with(&mut ws, "<jid>").await;
    send(&mut ws, r#"<presence xmlns="jabber:client"/>"#).await;
    ws
}

#[actix::test]
async fn a_hyperty_chats_with_an_xmpp_account_through_a_downloaded_stub() {
    let prosody = start_prosody(&[("alice", "alice-secret"), ("runtime", "runtime-secret")]).await;
    // the XMPP domain's catalogue publishes its stub, logged in as `runtime`
    let lc = TcpListener::bind("127.0.0.1:0").unwrap();
    let c_addr = lc.local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("xmpp-catalogue-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("protocolstub")).unwrap();
    std::fs::write(
        dir.join("protocolstub/default.json"),
        json!({"objectName": "default", "objectType": "protocolstub", "version": "1.0.0",
               "sourcePackageURL": "default.js",
               "configuration": {"url": format!("ws://127.0.0.1:{}/xmpp-websocket", prosody.http),
                                 "protocols": ["xmpp"], "domain": DOMAIN, "user": "runtime",
                                 "password": "runtime-secret", "resource": "hyperty"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("protocolstub/default.js"),
        include_str!("../examples/protofly/xmpp_stub.js"),
    )
    .unwrap();
    let mut cfg = node_config(DOMAIN);
    cfg.federation.enabled = false;
    cfg.catalogue.dir = Some(dir.clone());
    let catalogue = hyperty::node::start(lc, cfg).unwrap();

    let mut alice = xmpp_login(prosody.http, "alice", "alice-secret").await;

    let rt = Runtime::start(RuntimeConfig::new("a.org")).unwrap();
    let mut ua = UaConfig::default();
    ua.resolve.insert(DOMAIN.into(), c_addr.to_string());
    RuntimeUa::start(&rt, ua).await.unwrap();
    let me = rt.url().component("chat");
    let (probe, mut inbox) = Probe::start();
    rt.bus()
        .add_listener(me.clone(), probe, None)
        .await
        .unwrap();

    let alice_addr: Address = format!("hyperty://{DOMAIN}/alice").parse().unwrap();
    let r = rt
        .bus()
        .post(request(&me, &alice_addr, json!({"text": "hello alice <3"})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
    assert_eq!(r.body.value.unwrap()["jid"], format!("alice@{DOMAIN}"));

    // Alice's XMPP client gets a chat message from the runtime's account
    let m = frame_with(&mut alice, "<message").await;
    assert!(m.contains(&format!("runtime@{DOMAIN}/hyperty")), "{m}");
    assert!(m.contains("<body>hello alice &lt;3</body>"), "{m}");
    send(
        &mut alice,
        &format!(r#"<message xmlns="jabber:client" type="chat" to="runtime@{DOMAIN}/hyperty"><body>hi from XMPP &amp; co</body></message>"#),
    )
    .await;

    // ... and her reply reaches the hyperty as a reTHINK message from her address
    let reply = inbox
        .recv_matching(TIMEOUT, |m| m.kind == MessageType::Update)
        .await
        .expect("the reply arrives");
    assert_eq!(reply.from, alice_addr);
    let v = reply.body.value.unwrap();
    assert_eq!(v["text"], "hi from XMPP & co");
    assert!(v["jid"]
        .as_str()
        .unwrap()
        .starts_with(&format!("alice@{DOMAIN}/")));

    rt.shutdown().await;
    catalogue.stop().await;
    drop(prosody);
    let _ = std::fs::remove_dir_all(dir);
}
