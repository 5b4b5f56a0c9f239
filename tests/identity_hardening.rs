//! The node's identity provider under attack, over real HTTP and WebSocket: a
//! password flood cannot lock the real user out, anonymous device registration
//! is refused, identities survive a restart on the same data directory, and
//! deleting a user or device revokes its tokens.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use common::*;
use hyperty::config::AuthMode;
use hyperty::identity::{KEY_FILE_NAME, STORE_FILE_NAME};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const D: &str = "idp.test";
const PASSWORD: &str = "correct horse battery";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

/// One HTTP request from the loopback address `source`.
async fn http(
    node: &hyperty::node::NodeHandle,
    source: IpAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut s = socket.connect(node.local_addr()).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        node.local_addr(),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let retry_after = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().parse().ok())?
    });
    let body = payload
        .find('{')
        .and_then(|i| serde_json::from_str(payload[i..].trim_end()).ok())
        .unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn register(node: &hyperty::node::NodeHandle, name: &str) -> Answer {
    let body = json!({"username": name, "password": PASSWORD});
    http(node, ip(1), "POST", "/idp/users", None, Some(body)).await
}

async fn login_from(
    node: &hyperty::node::NodeHandle,
    source: IpAddr,
    name: &str,
    password: &str,
) -> Answer {
    let body = json!({"username": name, "password": password});
    http(node, source, "POST", "/idp/login", None, Some(body)).await
}

/// A device registered by the owner of `owner_token`: its id, a device token and
/// its runtime URL.
async fn new_device(
    node: &hyperty::node::NodeHandle,
    owner_token: &str,
) -> (String, String, String) {
    let dev = http(node, ip(1), "POST", "/idp/devices", Some(owner_token), None).await;
    assert_eq!(dev.status, 201);
    let device = dev.body["device"].as_str().unwrap().to_owned();
    let t = http(
        node,
        ip(1),
        "POST",
        "/idp/devices/token",
        None,
        Some(json!({"device": device, "secret": dev.body["secret"]})),
    )
    .await;
    let token = t.body["deviceToken"].as_str().unwrap().to_owned();
    let runtime = t.body["runtimeURL"].as_str().unwrap().to_owned();
    (device, token, runtime)
}

async fn id_token(node: &hyperty::node::NodeHandle, name: &str) -> String {
    let a = login_from(node, ip(1), name, PASSWORD).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["idToken"].as_str().unwrap().to_owned()
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("hyperty-idp-hardening-{}", uuid::Uuid::new_v4()))
}

#[actix::test]
async fn a_password_flood_from_one_source_never_locks_the_real_user_out() {
    let node = start_node(D, |_| {});
    assert_eq!(register(&node, "alice").await.status, 201);
    let (attacker, user) = (ip(2), ip(3));
    let rounds = 6;
    let burst = 16;
    let (mut checked, mut throttled) = (0, 0);
    let node = &node;
    for round in 0..rounds {
        let guesses: Vec<_> = (0..burst)
            .map(|i| {
                let pw = format!("guess {round} {i}");
                async move { login_from(node, attacker, "alice", &pw).await }
            })
            .collect();
        let (answers, real) = futures_util::future::join(
            futures_util::future::join_all(guesses),
            login_from(node, user, "alice", PASSWORD),
        )
        .await;
        assert_eq!(real.status, 200, "round {round}: {}", real.body);
        assert_eq!(real.body["userURL"], format!("user://{D}/alice"));
        for a in answers {
            match a.status {
                401 => checked += 1,
                429 => {
                    throttled += 1;
                    assert!(a.retry_after.is_some_and(|s| s >= 1), "a retry hint");
                    let d = a.body["description"].as_str().unwrap_or_default();
                    assert!(d.contains("retry after"), "{d}");
                }
                other => panic!("unexpected answer {other}: {}", a.body),
            }
        }
        // and every time, the real user's next login from elsewhere works too
        assert_eq!(login_from(node, user, "alice", PASSWORD).await.status, 200);
    }
    assert!(throttled > 0, "the flooding source is throttled");
    assert!(
        checked < rounds * burst / 2,
        "most guesses are refused before any password check ({checked} were checked)"
    );
    // the flooding source is throttled even with the right password
    let a = login_from(node, attacker, "alice", PASSWORD).await;
    assert_eq!(a.status, 429, "{}", a.body);

    // the WebSocket face throttles per session address just the same
    let idp = format!("domain-idp://{D}");
    let login = |pw: &str| {
        json!({"type": "execute", "from": format!("runtime://{D}/x"), "to": idp,
               "body": {"method": "login", "params": {"username": "alice", "password": pw}}})
    };
    let open = |rt: &str| json!({"type": "open", "from": format!("runtime://{D}/{rt}"), "to": "mn:/session"});
    let mut flood = WsClient::connect_from(&node.ws_url(), ip(4)).await;
    assert_eq!(flood.request(open("x")).await["body"]["code"], 200);
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(flood.request(login("guess")).await["body"]["code"].clone());
    }
    assert!(codes.contains(&json!(429)), "{codes:?}");
    let mut real = WsClient::connect_from(&node.ws_url(), ip(5)).await;
    let open_y = json!({"type": "open", "from": format!("runtime://{D}/y"), "to": "mn:/session"});
    assert_eq!(real.request(open_y).await["body"]["code"], 200);
    let mut ok = login(PASSWORD);
    ok["from"] = json!(format!("runtime://{D}/y"));
    let r = real.request(ok).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
}

#[actix::test]
async fn devices_need_an_authenticated_owner_and_are_bounded_per_user() {
    let node = start_node(D, |c| c.identity.max_devices_per_user = 2);
    assert_eq!(register(&node, "alice").await.status, 201);
    let token = id_token(&node, "alice").await;
    let client = awc::Client::default();
    let url = format!("{}/idp/devices", node.http_url());
    for i in 0..10_000 {
        let resp = client.post(&url).send_json(&json!({"label": "x"})).await;
        assert_eq!(
            resp.unwrap().status().as_u16(),
            401,
            "anonymous registration {i}"
        );
    }
    for bad in ["not.a.jwt", &format!("{token}x")] {
        let resp = client.post(&url).bearer_auth(bad).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    let mut devices = Vec::new();
    for _ in 0..2 {
        let a = http(&node, ip(1), "POST", "/idp/devices", Some(&token), None).await;
        assert_eq!(a.status, 201, "{}", a.body);
        devices.push(a.body);
    }
    let a = http(&node, ip(1), "POST", "/idp/devices", Some(&token), None).await;
    assert_eq!(a.status, 429, "{}", a.body);
    // each device still authenticates its runtime
    let a = http(
        &node,
        ip(1),
        "POST",
        "/idp/devices/token",
        None,
        Some(json!({"device": devices[0]["device"], "secret": devices[0]["secret"]})),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["runtimeURL"], devices[0]["runtimeURL"]);
}

#[actix::test]
async fn deleting_a_user_or_device_revokes_its_tokens() {
    let node = start_node(D, |c| {
        c.auth.mode = AuthMode::Required;
        c.identity.admins = vec!["root".into()];
    });
    for name in ["alice", "bob", "root"] {
        assert_eq!(register(&node, name).await.status, 201);
    }
    let (alice, bob, root) = (
        id_token(&node, "alice").await,
        id_token(&node, "bob").await,
        id_token(&node, "root").await,
    );
    let (device, device_token, runtime) = new_device(&node, &alice).await;
    let ws = node.ws_url();
    let opens = |from: &str, token: &str| {
        let open =
            json!({"type": "open", "from": from, "to": "mn:/session", "body": {"idToken": token}});
        let ws = ws.clone();
        async move {
            let mut c = WsClient::connect(&ws).await;
            c.request(open).await["body"]["code"].as_u64()
        }
    };
    assert_eq!(opens(&runtime, &device_token).await, Some(200));
    assert_eq!(opens(&format!("runtime://{D}/a"), &alice).await, Some(200));

    // only the owner (or an admin) may delete
    let path = format!("/idp/devices/{device}");
    assert_eq!(
        http(&node, ip(1), "DELETE", &path, None, None).await.status,
        401
    );
    assert_eq!(
        http(&node, ip(1), "DELETE", &path, Some(&bob), None)
            .await
            .status,
        403
    );
    let a = http(&node, ip(1), "DELETE", &path, Some(&alice), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["runtimeURL"], runtime);
    assert_eq!(opens(&runtime, &device_token).await, Some(401));
    assert_eq!(
        http(&node, ip(1), "DELETE", &path, Some(&alice), None)
            .await
            .status,
        404
    );

    let users = "/idp/users/alice";
    assert_eq!(
        http(&node, ip(1), "DELETE", users, Some(&bob), None)
            .await
            .status,
        403
    );
    let a = http(&node, ip(1), "DELETE", users, Some(&alice), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["userURL"], format!("user://{D}/alice"));
    assert_eq!(opens(&format!("runtime://{D}/a2"), &alice).await, Some(401));
    let assertion = http(
        &node,
        ip(1),
        "POST",
        "/idp/assertions",
        Some(&alice),
        Some(json!({"hyperty": format!("hyperty://{D}/h")})),
    )
    .await;
    assert_eq!(assertion.status, 401);
    assert_eq!(
        login_from(&node, ip(1), "alice", PASSWORD).await.status,
        401
    );
    // an admin deletes bob; bob's token goes with him
    let a = http(&node, ip(1), "DELETE", "/idp/users/bob", Some(&root), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(opens(&format!("runtime://{D}/b"), &bob).await, Some(401));
    assert_eq!(opens(&format!("runtime://{D}/r"), &root).await, Some(200));
}

#[actix::test]
async fn identities_survive_a_restart_on_the_same_data_dir() {
    let dir = temp_dir();
    let tune =
        |dir: PathBuf| move |c: &mut hyperty::config::NodeConfig| c.identity.data_dir = Some(dir);
    let node = start_node(D, tune(dir.clone()));
    assert_eq!(register(&node, "alice").await.status, 201);
    assert_eq!(register(&node, "carol").await.status, 201);
    let alice = id_token(&node, "alice").await;
    let carol = id_token(&node, "carol").await;
    let dev = http(&node, ip(1), "POST", "/idp/devices", Some(&alice), None).await;
    assert_eq!(dev.status, 201);
    // carol is deleted before the restart: her token must stay revoked after it
    let a = http(
        &node,
        ip(1),
        "DELETE",
        "/idp/users/carol",
        Some(&carol),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    node.stop().await;
    drop(node);

    // the store is released once the old provider has stopped
    let mut again = None;
    let started = eventually(TIMEOUT, || {
        let ok = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()
            .and_then(|l| {
                let mut cfg = hyperty::config::NodeConfig::default();
                cfg.node.domain = D.to_owned();
                cfg.node.workers = 1;
                cfg.auth.mode = AuthMode::Optional;
                cfg.identity.kdf = hyperty::identity::KdfParams::fast_insecure();
                cfg.identity.data_dir = Some(dir.clone());
                hyperty::node::start(l, cfg).ok()
            });
        let found = ok.is_some();
        if found {
            again = ok;
        }
        async move { found }
    })
    .await;
    assert!(started, "the node restarts on its data directory");
    let node = again.unwrap();
    let a = login_from(&node, ip(1), "alice", PASSWORD).await;
    assert_eq!(a.status, 200, "alice and her password survive: {}", a.body);
    let a = register(&node, "alice").await;
    assert_eq!(a.status, 409, "nobody can register alice again: {}", a.body);
    let a = http(
        &node,
        ip(1),
        "POST",
        "/idp/devices/token",
        None,
        Some(json!({"device": dev.body["device"], "secret": dev.body["secret"]})),
    )
    .await;
    assert_eq!(a.status, 200, "her device survives: {}", a.body);
    // carol's deletion and revocation survive too
    assert_eq!(
        login_from(&node, ip(1), "carol", PASSWORD).await.status,
        401
    );
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(
            json!({"type": "open", "from": format!("runtime://{D}/c"), "to": "mn:/session",
                        "body": {"idToken": carol}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 401, "{r}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.join(STORE_FILE_NAME)), 0o600);
        assert_eq!(mode(dir.join(KEY_FILE_NAME)), 0o600);
        assert_eq!(mode(dir.clone()), 0o700);
    }
    node.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Live sessions go with their identity: deleting a device closes the session
/// its device token opened, deleting a user closes theirs — each is sent a
/// `close` with code 401 and ends for good (no grace period to re-open into) —
/// while other users' sessions go on.
#[actix::test]
async fn deleting_a_user_or_device_closes_its_live_sessions() {
    let node = start_node(D, |c| {
        c.auth.mode = AuthMode::Required;
        c.session.grace_period_ms = 60_000;
    });
    for name in ["alice", "bob"] {
        assert_eq!(register(&node, name).await.status, 201);
    }
    let (alice, bob) = (id_token(&node, "alice").await, id_token(&node, "bob").await);
    let (device, device_token, runtime) = new_device(&node, &alice).await;
    let open = |from: String, token: String| {
        let ws = node.ws_url();
        async move {
            let mut c = WsClient::connect(&ws).await;
            let r = c
                .request(json!({"type": "open", "from": from, "to": "mn:/session", "body": {"idToken": token}}))
                .await;
            assert_eq!(r["body"]["code"], 200, "{r}");
            c
        }
    };
    let mut on_device = open(runtime.clone(), device_token).await;
    let mut as_alice = open(format!("runtime://{D}/a"), alice.clone()).await;
    let mut as_bob = open(format!("runtime://{D}/b"), bob).await;
    assert_eq!(health(&node).await["sessions"], 3);
    let closed = |m: serde_json::Value| {
        assert_eq!(
            (m["type"].clone(), m["body"]["code"].clone()),
            (json!("close"), json!(401)),
            "{m}"
        );
    };

    let path = format!("/idp/devices/{device}");
    assert_eq!(
        http(&node, ip(1), "DELETE", &path, Some(&alice), None)
            .await
            .status,
        200
    );
    closed(
        on_device
            .recv(TIMEOUT)
            .await
            .expect("a close for the device's session"),
    );
    assert!(on_device.recv(TIMEOUT).await.is_none(), "the socket closes");

    let a = http(
        &node,
        ip(1),
        "DELETE",
        "/idp/users/alice",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    closed(
        as_alice
            .recv(TIMEOUT)
            .await
            .expect("a close for alice's session"),
    );
    assert!(as_alice.recv(TIMEOUT).await.is_none(), "the socket closes");

    // gone for good, not waiting in a grace period; bob's session is untouched
    assert!(eventually(TIMEOUT, || async { health(&node).await["sessions"] == 1 }).await);
    let r = as_bob
        .request(json!({"type": "ping", "from": format!("runtime://{D}/b"), "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
}
