//! The identity provider's state shared by the nodes of one domain through Redis:
//! one key set for the domain, so a token issued by one node verifies on another
//! and the JWKS are the same; no signing before the set is loaded (503); users,
//! devices and revocations seen by every node; 503 while Redis is away.

mod common;

use std::time::Duration;

use common::cluster::{
    clean, section, start_cluster, unique_prefix, until_up, PrivateRedis, REDIS,
};
use common::{eventually, http_json, stop_all, WsClient};
use hyperty::cluster::ClusterStore;
use hyperty::identity::{
    DeleteDevice, DeviceToken, IdentityError, IdentityProvider, IdpConfig, Jwks, KdfParams, Login,
    Profile, RegisterDevice, RegisterUser, RotateKeys, Secret, TokenVerifier,
};
use hyperty::node::NodeHandle;
use hyperty::prelude::*;
use serde_json::{json, Value};

const DOMAIN: &str = "example.com";

fn provider(url: &str, prefix: &str) -> (Addr<IdentityProvider>, TokenVerifier, ClusterStore) {
    let store = ClusterStore::open(&section(url, prefix))
        .expect("settings")
        .expect("a store");
    let config = IdpConfig {
        kdf: KdfParams::fast_insecure(),
        ..IdpConfig::default()
    };
    let idp = IdentityProvider::new(DOMAIN, config)
        .expect("provider")
        .with_cluster(Some(store.clone()));
    let verifier = idp.verifier();
    (idp.start(), verifier, store)
}

async fn login(idp: &Addr<IdentityProvider>, user: &str) -> Result<String, IdentityError> {
    let password = Secret::new("correct horse battery");
    idp.send(RegisterUser {
        username: user.to_owned(),
        password: password.clone(),
        profile: Profile::default(),
    })
    .await
    .expect("idp answers")?;
    let t = idp
        .send(Login {
            username: user.to_owned(),
            password,
            device: None,
            source: None,
        })
        .await
        .expect("idp answers")?;
    Ok(t.token.expose().to_owned())
}

#[actix::test]
async fn a_token_of_one_node_verifies_on_the_other() {
    let prefix = unique_prefix("identity-keys");
    let (a, verify_a, _) = provider(REDIS, &prefix);
    let (b, verify_b, _) = provider(REDIS, &prefix);
    let token = login(&a, "alice").await.expect("token from a");
    let claims = verify_b
        .verify_id_token(&token)
        .expect("b verifies a's token");
    assert!(claims.sub.contains("alice"), "{}", claims.sub);
    let token_b = login(&b, "bob").await.expect("token from b");
    verify_a
        .verify_id_token(&token_b)
        .expect("a verifies b's token");
    let (ja, jb) = (
        a.send(Jwks).await.expect("answers"),
        b.send(Jwks).await.expect("answers"),
    );
    assert_eq!(
        serde_json::to_value(&ja).expect("json"),
        serde_json::to_value(&jb).expect("json")
    );
    assert!(!ja.keys.is_empty());
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn no_signing_until_the_domain_keys_are_loaded() {
    let redis = PrivateRedis::start();
    let prefix = unique_prefix("identity-outage");
    let probe = ClusterStore::open(&section(&redis.url(), &prefix))
        .expect("settings")
        .expect("a store");
    until_up(&probe).await;
    redis.freeze();
    let (a, verify_a, _) = provider(&redis.url(), &prefix);
    match login(&a, "carol").await {
        Err(e @ IdentityError::Shared(_)) => {
            assert_eq!(
                hyperty_actors::error::ToResponseCode::response_code(&e).as_u16(),
                503
            );
        }
        other => panic!("expected 503 while Redis is away, got {other:?}"),
    }
    redis.thaw();
    let mut token = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        match login(&a, &format!("dave{n}")).await {
            Ok(t) => {
                token = Some(t);
                break;
            }
            Err(IdentityError::Shared(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("login after Redis came back: {e}"),
        }
    }
    let token = token.expect("a token");
    // a second node loads the same keys and verifies it; then, Redis gone for
    // good, both keep verifying from the keys they hold
    let (_b, verify_b, _) = provider(&redis.url(), &prefix);
    let started = std::time::Instant::now();
    while verify_b.verify_id_token(&token).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "b never loaded the keys"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(redis);
    verify_a.verify_id_token(&token).expect("a still verifies");
    verify_b.verify_id_token(&token).expect("b still verifies");
}

async fn login_only(
    idp: &Addr<IdentityProvider>,
    user: &str,
    device: Option<Secret>,
) -> Result<String, IdentityError> {
    let t = idp
        .send(Login {
            username: user.to_owned(),
            password: Secret::new("correct horse battery"),
            device,
            source: None,
        })
        .await
        .expect("idp answers")?;
    Ok(t.token.expose().to_owned())
}

#[actix::test]
async fn a_user_signed_up_on_one_node_logs_in_on_the_other() {
    let prefix = unique_prefix("identity-users");
    let (a, _, _) = provider(REDIS, &prefix);
    let (b, verify_b, _) = provider(REDIS, &prefix);
    login(&a, "alice").await.expect("alice signs up on a");
    let token = login_only(&b, "alice", None)
        .await
        .expect("alice logs in on b");
    assert!(verify_b.verify_id_token(&token).is_ok());
    assert!(matches!(
        login_only(&b, "nobody", None).await,
        Err(IdentityError::BadCredentials)
    ));
    // the name is the domain's: b refuses it too
    match login(&b, "alice").await {
        Err(IdentityError::UserExists(name)) => assert_eq!(name, "alice"),
        other => panic!("expected the name to be taken on b, got {other:?}"),
    }
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn a_device_deleted_on_one_node_is_refused_on_the_other() {
    let prefix = unique_prefix("identity-devices");
    let (a, _, _) = provider(REDIS, &prefix);
    let (b, _, _) = provider(REDIS, &prefix);
    let id_token = Secret::new(login(&a, "erin").await.expect("erin on a"));
    let creds = a
        .send(RegisterDevice {
            label: Some("tv".into()),
            id_token: id_token.clone(),
        })
        .await
        .expect("answers")
        .expect("device registered on a");
    let device_token = b
        .send(DeviceToken {
            device: creds.device.clone(),
            secret: creds.secret.clone(),
        })
        .await
        .expect("answers")
        .expect("b knows a's device");
    login_only(&b, "erin", Some(device_token.token.clone()))
        .await
        .expect("login with the device on b");
    a.send(DeleteDevice {
        device: creds.device.clone(),
        id_token,
    })
    .await
    .expect("answers")
    .expect("deleted on a");
    assert!(matches!(
        b.send(DeviceToken {
            device: creds.device.clone(),
            secret: creds.secret.clone(),
        })
        .await
        .expect("answers"),
        Err(IdentityError::BadCredentials)
    ));
    match login_only(&b, "erin", Some(device_token.token)).await {
        Err(e) => assert!(
            !matches!(e, IdentityError::Shared(_)),
            "refused for the deletion, not for Redis: {e}"
        ),
        Ok(_) => panic!("b accepted a deleted device's token"),
    }
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn signup_login_and_devices_answer_503_while_redis_is_away() {
    let redis = PrivateRedis::start();
    let prefix = unique_prefix("identity-store-outage");
    let probe = ClusterStore::open(&section(&redis.url(), &prefix))
        .expect("settings")
        .expect("a store");
    until_up(&probe).await;
    let (a, _, _) = provider(&redis.url(), &prefix);
    let (b, _, _) = provider(&redis.url(), &prefix);
    let id_token = Secret::new(login(&a, "frank").await.expect("frank on a"));
    login_only(&b, "frank", None).await.expect("frank on b");
    redis.freeze();
    let code = |e: &IdentityError| hyperty_actors::error::ToResponseCode::response_code(e).as_u16();
    match login_only(&b, "frank", None).await {
        Err(e @ IdentityError::Shared(_)) => assert_eq!(code(&e), 503),
        other => panic!("login: expected 503, got {other:?}"),
    }
    match login(&a, "grace").await {
        Err(e @ IdentityError::Shared(_)) => assert_eq!(code(&e), 503),
        other => panic!("signup: expected 503, got {other:?}"),
    }
    match a
        .send(RegisterDevice {
            label: None,
            id_token: id_token.clone(),
        })
        .await
        .expect("answers")
    {
        Err(e @ IdentityError::Shared(_)) => assert_eq!(code(&e), 503),
        other => panic!("device: expected 503, got {other:?}"),
    }
    redis.thaw();
    // back: a signup answered 503 may still have landed (the command was sent
    // before the timeout); either way grace signs up once and logs in everywhere
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match login(&b, "grace").await {
            Ok(_) | Err(IdentityError::UserExists(_)) => break,
            Err(IdentityError::Shared(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("signup after Redis came back: {e}"),
        }
    }
    login_only(&a, "grace", None).await.expect("grace on a");
}

const PASSWORD: &str = "correct horse battery";

/// `method path` on `node`'s HTTP side: the status and the JSON body.
async fn http(
    node: &NodeHandle,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    http_json(method, &format!("{}{path}", node.http_url()), token, body).await
}

/// The code of an `open` of `runtime` on `node` with `token`.
async fn open_code(node: &NodeHandle, runtime: &str, token: &str) -> Value {
    let mut ws = WsClient::connect(&node.ws_url()).await;
    let r = ws
        .request(json!({"type": "open", "from": runtime, "to": "mn:/session",
                        "body": {"idToken": token}}))
        .await;
    r["body"]["code"].clone()
}

#[actix::test]
async fn a_user_deleted_on_one_node_has_every_token_refused_on_the_other() {
    let prefix = unique_prefix("identity-user-deleted");
    let nodes = start_cluster(2, DOMAIN, &prefix, |_| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let user = json!({"username": "alice", "password": PASSWORD});
    assert_eq!(
        http(a, "POST", "/idp/users", None, Some(user.clone()))
            .await
            .0,
        201
    );
    let (code, login) = http(a, "POST", "/idp/login", None, Some(user.clone())).await;
    assert_eq!(code, 200, "{login}");
    let id_token = login["idToken"].as_str().expect("an ID token").to_owned();
    let (code, device) = http(a, "POST", "/idp/devices", Some(&id_token), None).await;
    assert_eq!(code, 201, "{device}");
    let secret = json!({"device": device["device"], "secret": device["secret"]});
    let (code, t) = http(a, "POST", "/idp/devices/token", None, Some(secret.clone())).await;
    assert_eq!(code, 200, "{t}");
    let device_token = t["deviceToken"]
        .as_str()
        .expect("a device token")
        .to_owned();
    let runtime = t["runtimeURL"].as_str().expect("a runtime URL").to_owned();
    let hyperty = json!({"hyperty": format!("hyperty://{DOMAIN}/h1")});

    // before: b takes both tokens, and knows the user and the device
    assert_eq!(
        open_code(b, &format!("runtime://{DOMAIN}/r0"), &id_token).await,
        200
    );
    assert_eq!(open_code(b, &runtime, &device_token).await, 200);
    let (code, _) = http(
        b,
        "POST",
        "/idp/assertions",
        Some(&id_token),
        Some(hyperty.clone()),
    )
    .await;
    assert_eq!(code, 200, "b issues assertions for a user of a");
    let mut live = WsClient::connect(&b.ws_url()).await;
    let r = live
        .request(
            json!({"type": "open", "from": format!("runtime://{DOMAIN}/live"),
                        "to": "mn:/session", "body": {"idToken": id_token}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");

    let path = "/idp/users/alice";
    let (code, deleted) = http(a, "DELETE", path, Some(&id_token), None).await;
    assert_eq!(code, 200, "{deleted}");

    // b's verifier refuses both tokens within the revocation poll
    assert!(
        eventually(Duration::from_secs(10), || {
            let token = id_token.clone();
            async move { open_code(b, &format!("runtime://{DOMAIN}/r1"), &token).await == 401 }
        })
        .await,
        "b refuses the deleted user's ID token at open"
    );
    assert_eq!(open_code(b, &runtime, &device_token).await, 401);
    // and the user's live session on b is closed
    let close = live.recv_matching(|v| v["type"] == "close").await;
    assert_eq!(close["body"]["code"], 401, "{close}");
    // b's provider refuses the user, the tokens and the device
    assert_eq!(http(b, "POST", "/idp/login", None, Some(user)).await.0, 401);
    assert_eq!(
        http(b, "POST", "/idp/devices", Some(&id_token), None)
            .await
            .0,
        401
    );
    assert_eq!(
        http(b, "POST", "/idp/assertions", Some(&id_token), Some(hyperty))
            .await
            .0,
        401
    );
    assert_eq!(
        http(b, "POST", "/idp/devices/token", None, Some(secret))
            .await
            .0,
        401
    );
    stop_all(&nodes).await;
    clean(REDIS, &prefix).await;
}

/// `execute {method, params}` to `domain-idp://<D>` from an open session: the
/// response's code and value.
async fn wire(ws: &mut WsClient, runtime: &str, method: &str, params: Value) -> (Value, Value) {
    let r = ws
        .request(
            json!({"type": "execute", "from": runtime, "to": format!("domain-idp://{DOMAIN}"),
                        "body": {"method": method, "params": params}}),
        )
        .await;
    (r["body"]["code"].clone(), r["body"]["value"].clone())
}

#[actix::test]
async fn identity_requests_over_the_wire_share_the_domain_with_http() {
    let prefix = unique_prefix("identity-wire");
    let nodes = start_cluster(2, DOMAIN, &prefix, |_| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (rt_a, rt_b) = (
        format!("runtime://{DOMAIN}/wa"),
        format!("runtime://{DOMAIN}/wb"),
    );
    let mut on_a = WsClient::connect(&a.ws_url()).await;
    on_a.open(&rt_a).await;
    let mut on_b = WsClient::connect(&b.ws_url()).await;
    on_b.open(&rt_b).await;
    let alice = json!({"username": "alice", "password": PASSWORD});
    let bob = json!({"username": "bob", "password": PASSWORD});

    // signed up on a over the wire: the name is taken on b, and alice logs in there over HTTP
    assert_eq!(
        wire(&mut on_a, &rt_a, "registerUser", alice.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        http(b, "POST", "/idp/users", None, Some(alice.clone()))
            .await
            .0,
        409
    );
    let (code, login) = http(b, "POST", "/idp/login", None, Some(alice.clone())).await;
    assert_eq!(code, 200, "{login}");
    // signed up on b over HTTP: bob logs in on a over the wire
    assert_eq!(
        http(b, "POST", "/idp/users", None, Some(bob.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        wire(&mut on_a, &rt_a, "registerUser", bob.clone()).await.0,
        409
    );
    let (code, bob_login) = wire(&mut on_a, &rt_a, "login", bob).await;
    assert_eq!(code, 200, "{bob_login}");
    // a device registered on a over the wire gets its token on b over HTTP
    let (code, alice_login) = wire(&mut on_a, &rt_a, "login", alice.clone()).await;
    assert_eq!(code, 200, "{alice_login}");
    let id_token = alice_login["idToken"]
        .as_str()
        .expect("an ID token")
        .to_owned();
    let (code, device) = wire(
        &mut on_a,
        &rt_a,
        "registerDevice",
        json!({"idToken": id_token}),
    )
    .await;
    assert_eq!(code, 200, "{device}");
    let secret = json!({"device": device["device"], "secret": device["secret"]});
    let (code, t) = http(b, "POST", "/idp/devices/token", None, Some(secret.clone())).await;
    assert_eq!(code, 200, "{t}");
    // and the other way: a device registered on b over HTTP gets its token on a over the wire
    let (code, other) = http(b, "POST", "/idp/devices", Some(&id_token), None).await;
    assert_eq!(code, 201, "{other}");
    let other_secret = json!({"device": other["device"], "secret": other["secret"]});
    assert_eq!(
        wire(&mut on_a, &rt_a, "deviceToken", other_secret.clone())
            .await
            .0,
        200
    );
    // an assertion over the wire on b for a user who logged in on a
    let hyperty = format!("hyperty://{DOMAIN}/h1");
    let params = json!({"idToken": id_token, "hyperty": hyperty});
    assert_eq!(
        wire(&mut on_b, &rt_b, "generateAssertion", params).await.0,
        200
    );
    // alice deleted on b over the wire: a refuses her and both devices
    let params = json!({"username": "alice", "idToken": id_token});
    let (code, deleted) = wire(&mut on_b, &rt_b, "deleteUser", params).await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(
        deleted["devices"].as_array().map(Vec::len),
        Some(2),
        "{deleted}"
    );
    assert_eq!(wire(&mut on_a, &rt_a, "login", alice).await.0, 401);
    assert_eq!(wire(&mut on_a, &rt_a, "deviceToken", secret).await.0, 401);
    assert_eq!(
        http(a, "POST", "/idp/devices/token", None, Some(other_secret))
            .await
            .0,
        401
    );
    stop_all(&nodes).await;
    clean(REDIS, &prefix).await;
}

/// What a node of `nodes` answers to the sign-ups and device registrations
/// past `max_users = 1` and `max_devices = 1`, and which user got in.
async fn past_the_limits(nodes: &[NodeHandle]) -> ((u16, Value), (u16, Value)) {
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let alice = json!({"username": "alice", "password": PASSWORD});
    let bob = json!({"username": "bob", "password": PASSWORD});
    // two sign-ups at once, on two nodes when there are two: one gets in
    let (ra, rb) = futures_util::future::join(
        http(a, "POST", "/idp/users", None, Some(alice.clone())),
        http(b, "POST", "/idp/users", None, Some(bob.clone())),
    )
    .await;
    let (winner, refused) = match (ra.0, rb.0) {
        (201, _) => (alice, rb),
        (_, 201) => (bob, ra),
        _ => panic!("one of the sign-ups gets in: {ra:?} {rb:?}"),
    };
    assert_ne!(refused.0, 201, "only one gets in: {refused:?}");
    let carol = json!({"username": "carol", "password": PASSWORD});
    for node in nodes {
        let again = http(node, "POST", "/idp/users", None, Some(carol.clone())).await;
        assert_eq!(again, refused, "every node refuses alike");
    }
    let (code, login) = http(b, "POST", "/idp/login", None, Some(winner)).await;
    assert_eq!(code, 200, "{login}");
    let token = login["idToken"].as_str().expect("an ID token").to_owned();
    assert_eq!(
        http(a, "POST", "/idp/devices", Some(&token), None).await.0,
        201
    );
    let device_refused = http(b, "POST", "/idp/devices", Some(&token), None).await;
    (refused, device_refused)
}

#[actix::test]
async fn user_and_device_limits_hold_for_the_whole_domain() {
    let limits = |c: &mut hyperty::config::NodeConfig| {
        c.identity.max_users = 1;
        c.identity.max_devices = 1;
    };
    let single = common::start_node(DOMAIN, limits);
    let on_one = past_the_limits(std::slice::from_ref(&single)).await;
    single.stop().await;
    assert_eq!(on_one.0 .0, 429, "{:?}", on_one.0);
    assert_eq!(on_one.1 .0, 429, "{:?}", on_one.1);

    let prefix = unique_prefix("identity-limits");
    let nodes = start_cluster(2, DOMAIN, &prefix, limits).await;
    let on_two = past_the_limits(&nodes).await;
    assert_eq!(on_two, on_one, "two nodes refuse as one does");
    stop_all(&nodes).await;
    clean(REDIS, &prefix).await;
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("a header");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let header: Value = serde_json::from_slice(&json).expect("a JSON header");
    header["kid"].as_str().expect("a kid").to_owned()
}

#[actix::test]
async fn a_key_rotated_on_one_node_signs_and_verifies_on_every_node() {
    let prefix = unique_prefix("identity-rotation");
    let (a, verify_a, _) = provider(REDIS, &prefix);
    let (b, verify_b, _) = provider(REDIS, &prefix);
    let old = login(&a, "alice").await.expect("alice on a");
    let old_kid = kid_of(&old);
    let kid = a
        .send(RotateKeys)
        .await
        .expect("answers")
        .expect("the domain's key rotated on a");
    assert_ne!(kid, old_kid);
    let new = login_only(&a, "alice", None).await.expect("alice on a");
    assert_eq!(kid_of(&new), kid, "a signs with the new key at once");
    // b takes the rotated set within its key poll: a's new tokens verify there,
    // and b signs with the new key too
    let started = std::time::Instant::now();
    while verify_b.verify_id_token(&new).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "b never took the rotated keys"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from_b = login_only(&b, "alice", None).await.expect("alice on b");
    assert_eq!(kid_of(&from_b), kid, "b signs with the new key");
    verify_a
        .verify_id_token(&from_b)
        .expect("a verifies b's token");
    // the old key's tokens keep verifying on both for the overlap
    verify_a
        .verify_id_token(&old)
        .expect("a verifies the old token");
    verify_b
        .verify_id_token(&old)
        .expect("b verifies the old token");
    let (ja, jb) = (
        a.send(Jwks).await.expect("answers"),
        b.send(Jwks).await.expect("answers"),
    );
    assert_eq!(ja.keys.len(), 2);
    assert_eq!(
        serde_json::to_value(&ja).expect("json"),
        serde_json::to_value(&jb).expect("json")
    );
    // two rotations at once on both nodes: each either rotates or is told to
    // try again (503); the domain still has one key set
    let (ra, rb) = futures_util::future::join(a.send(RotateKeys), b.send(RotateKeys)).await;
    let results = [ra.expect("answers"), rb.expect("answers")];
    assert!(results.iter().any(Result::is_ok), "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, IdentityError::Shared(_)), "{e}");
        }
    }
    let rotated: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let started = std::time::Instant::now();
    loop {
        let ta = login_only(&a, "alice", None).await.expect("alice on a");
        let tb = login_only(&b, "alice", None).await.expect("alice on b");
        if kid_of(&ta) == kid_of(&tb) {
            assert!(rotated.contains(&&kid_of(&ta)), "{rotated:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the nodes never agreed on the signing key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    verify_a
        .verify_id_token(&old)
        .expect("still the old token on a");
    verify_b
        .verify_id_token(&new)
        .expect("still the first rotation's token on b");
    clean(REDIS, &prefix).await;
}
