//! Authenticated sessions (threat T1): no or bad token → 401 and the socket closes;
//! the session's identity rides on everything it sends; device tokens bind a runtime
//! URL; JWKS across two nodes of different domains.

mod common;

use std::time::Duration;

use common::*;
use hyperty::config::AuthMode;
use hyperty::identity::{
    DeviceToken, IdentityProvider, IdpConfig, KdfParams, Login, ManualClock, Profile,
    RegisterDevice, RegisterUser, Secret,
};
use hyperty::prelude::*;
use serde_json::{json, Value};

const D: &str = "auth.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

fn required(c: &mut hyperty::config::NodeConfig) {
    c.auth.mode = AuthMode::Required;
}

async fn refused(node: &hyperty::node::NodeHandle, body: Value, want: &str) {
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(json!({"type": "open", "from": rt("x"), "to": "mn:/session", "body": body}))
        .await;
    assert_eq!(r["body"]["code"], 401, "{r}");
    let d = r["body"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(d.contains(want), "{d} should mention {want}");
    assert!(c.recv(TIMEOUT).await.is_none(), "the socket closes");
}

#[actix::test]
async fn open_without_a_token_is_refused_when_auth_is_required() {
    let node = start_node(D, required);
    refused(&node, json!({}), "authentication required").await;
    let h: Value =
        serde_json::from_str(&http_get(&format!("{}/health", node.http_url())).await).unwrap();
    assert_eq!(h["stats"]["unauthorised"], 1);
}

#[actix::test]
async fn forged_tokens_are_refused() {
    let dir = std::env::temp_dir().join(format!("hyperty-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = start_node(D, |c| {
        required(c);
        c.identity.data_dir = Some(dir.clone());
    });
    // a token signed by another provider's key
    let other = start_node(D, |_| {});
    let foreign = user_token(&other, "eve").await;
    refused(&node, json!({"idToken": foreign}), "").await;

    // expired: the node's own key (same key file), minted by a provider whose clock
    // is two days behind
    let past = ManualClock::starting_now();
    past.set(past.now_ms() - 2 * 86_400_000);
    // forgers sign with a copy of the node's key file (the node holds its store)
    let keys_copy = |name: &str| {
        let copy = dir.with_extension(name);
        std::fs::create_dir_all(&copy).unwrap();
        let file = hyperty::identity::KEY_FILE_NAME;
        std::fs::copy(dir.join(file), copy.join(file)).unwrap();
        copy
    };
    let keys_only = keys_copy("keys");
    let mk = |issuer: Option<&str>| {
        let cfg = IdpConfig {
            data_dir: Some(keys_only.clone()),
            issuer: issuer.map(str::to_owned),
            kdf: KdfParams::fast_insecure(),
            ..IdpConfig::default()
        };
        IdentityProvider::with_clock(D, cfg, std::sync::Arc::new(past.clone()))
            .unwrap()
            .start()
    };
    async fn token_from(idp: &actix::Addr<IdentityProvider>) -> String {
        let password = Secret::new("correct horse battery");
        idp.send(RegisterUser {
            username: "mallory".into(),
            password: password.clone(),
            profile: Profile::default(),
        })
        .await
        .unwrap()
        .unwrap();
        let t = idp
            .send(Login {
                username: "mallory".into(),
                password,
                device: None,
                source: None,
            })
            .await
            .unwrap()
            .unwrap();
        t.token.expose().to_owned()
    }
    let expired = token_from(&mk(None)).await;
    refused(&node, json!({"idToken": expired}), "expired").await;

    // wrong issuer, same key, current time
    let wrong_iss = {
        let cfg = IdpConfig {
            data_dir: Some(keys_copy("evil")),
            issuer: Some("domain-idp://evil.test".into()),
            kdf: KdfParams::fast_insecure(),
            ..IdpConfig::default()
        };
        token_from(&IdentityProvider::new(D, cfg).unwrap().start()).await
    };
    refused(&node, json!({"idToken": wrong_iss}), "").await;

    // garbage, and a token that is not a string
    refused(&node, json!({"idToken": "not.a.jwt"}), "").await;
    refused(&node, json!({"token": 42}), "string").await;
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&keys_only).ok();
    std::fs::remove_dir_all(dir.with_extension("evil")).ok();
}

#[actix::test]
async fn a_valid_token_opens_and_the_identity_rides_on_every_message() {
    let node = start_node(D, required);
    let alice = user_token(&node, "alice").await;
    let bob = user_token(&node, "bob").await;
    let mut a = WsClient::connect(&node.ws_url()).await;
    let r = a.request(json!({"type": "open", "from": rt("a"), "to": "mn:/session", "body": {"idToken": alice}})).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let mut b = WsClient::connect(&node.ws_url()).await;
    let r = b
        .request(
            json!({"type": "open", "from": rt("b"), "to": "mn:/session", "body": {"token": bob}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
    // alice tries to pass as mallory: the node's stamp comes last and wins
    a.send(
        json!({"id": 5, "type": "update", "from": rt("a"), "to": rt("b"),
        "body": {"assertedIdentity": format!("user://{D}/mallory"), "value": 1}}),
    )
    .await;
    let got = b.expect().await;
    assert_eq!(got["body"]["assertedIdentity"], format!("user://{D}/alice"));
    assert_eq!(got["body"]["value"], 1);
    a.send(json!({"id": 6, "type": "update", "from": rt("a"), "to": rt("b")}))
        .await;
    assert_eq!(
        b.expect().await["body"]["assertedIdentity"],
        format!("user://{D}/alice")
    );
}

#[actix::test]
async fn device_tokens_authenticate_exactly_their_runtime() {
    let node = start_node(D, required);
    let idp = node.state().idp();
    let owner = user_token(&node, "owner").await;
    let creds = idp
        .send(RegisterDevice {
            label: Some("tv".into()),
            id_token: Secret::new(owner),
        })
        .await
        .unwrap()
        .unwrap();
    let t = idp
        .send(DeviceToken {
            device: creds.device.clone(),
            secret: creds.secret.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    let runtime = t.claims.sub.clone();
    let token = t.token.expose().to_owned();
    let mut ok = WsClient::connect(&node.ws_url()).await;
    let r = ok.request(json!({"type": "open", "from": runtime, "to": "mn:/session", "body": {"idToken": token}})).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let mut other = WsClient::connect(&node.ws_url()).await;
    let r = other.request(json!({"type": "open", "from": rt("stolen"), "to": "mn:/session", "body": {"idToken": token}})).await;
    assert_eq!(r["body"]["code"], 401);
    // several users on one device
    let password = Secret::new("correct horse battery");
    for user in ["ann", "ben"] {
        idp.send(RegisterUser {
            username: user.into(),
            password: password.clone(),
            profile: Profile::default(),
        })
        .await
        .unwrap()
        .unwrap();
        let login = idp
            .send(Login {
                username: user.into(),
                password: password.clone(),
                device: Some(t.token.clone()),
                source: None,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(login.claims.device.as_deref(), Some(creds.device.as_str()));
    }
}

#[actix::test]
async fn sessions_per_user_are_bounded() {
    let node = start_node(D, |c| {
        required(c);
        c.limits.max_sessions_per_user = 1;
    });
    let token = user_token(&node, "carol").await;
    let mut one = WsClient::connect(&node.ws_url()).await;
    let r = one.request(json!({"type": "open", "from": rt("c1"), "to": "mn:/session", "body": {"idToken": token}})).await;
    assert_eq!(r["body"]["code"], 200);
    let mut two = WsClient::connect(&node.ws_url()).await;
    let r = two.request(json!({"type": "open", "from": rt("c2"), "to": "mn:/session", "body": {"idToken": token}})).await;
    assert_eq!(r["body"]["code"], 429);
}

#[actix::test]
async fn a_runtime_bridge_authenticates_with_its_token() {
    let node = start_node(D, required);
    let rt_a = Runtime::start(RuntimeConfig::new(D)).unwrap();
    // no token: the bridge is refused and reports failure
    let mut cfg = hyperty::bridge::BridgeConfig::new(node.ws_url());
    cfg.connect_timeout = Duration::from_millis(500);
    assert!(rt_a.attach_node(cfg).await.is_err());
    assert!(
        eventually(TIMEOUT, || async {
            rt_a.stubs()
                .await
                .iter()
                .any(|s| s.status == StubStatus::Failed || s.status == StubStatus::Disconnected)
        })
        .await
    );
    // with a token it goes live and its hyperties are reachable
    let rt_b = Runtime::start(RuntimeConfig::new(D)).unwrap();
    let mut cfg = hyperty::bridge::BridgeConfig::new(node.ws_url());
    cfg.token = Some(user_token(&node, "dave").await);
    rt_b.attach_node(cfg).await.unwrap();
    let w = rt_b.spawn_hyperty(worker(D)).await.unwrap();
    let mut raw = WsClient::connect(&node.ws_url()).await;
    let t = user_token(&node, "erin").await;
    let r = raw
        .request(
            json!({"type": "open", "from": rt("raw"), "to": "mn:/session", "body": {"idToken": t}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
    let r = raw
        .request(json!({"type": "read", "from": rt("raw"), "to": w.as_str()}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    // the hyperty saw who asked
    assert_eq!(
        r["body"]["value"]["body"]["assertedIdentity"],
        format!("user://{D}/erin")
    );
}

#[actix::test]
async fn jwks_are_served_and_fetched_across_two_nodes_of_different_domains() {
    use hyperty::identity::{IdmConfig, IssueAssertion, ValidateAssertion};
    let node_a = start_node("a.auth.test", |_| {});
    let node_b = start_node("b.auth.test", |_| {});
    // node B's public keys over HTTP
    let jwks: Value = serde_json::from_str(
        &http_get(&format!("{}/.well-known/jwks.json", node_b.http_url())).await,
    )
    .unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    // a user of B gets an assertion for a hyperty
    let token = user_token(&node_b, "bea").await;
    let hyperty: HypertyUrl = "hyperty://b.auth.test/h1".parse().unwrap();
    let assertion = node_b
        .state()
        .idp()
        .send(IssueAssertion {
            id_token: Secret::new(token),
            hyperty: hyperty.clone(),
            audience: hyperty::identity::DEFAULT_ASSERTION_AUDIENCE.to_owned(),
        })
        .await
        .unwrap()
        .unwrap();
    // a runtime of domain A validates it, fetching B's JWKS from B's node
    let mut idm = IdmConfig::default();
    idm.idp_endpoints
        .insert("b.auth.test".into(), node_b.http_url());
    let mut cfg = RuntimeConfig::new("a.auth.test");
    cfg.identity = Some(idm);
    let rt_a = Runtime::start(cfg).unwrap();
    let v = rt_a
        .idm()
        .unwrap()
        .addr()
        .send(ValidateAssertion {
            assertion: assertion.assertion.clone(),
            idp: None,
            audience: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.user.as_str(), "user://b.auth.test/bea");
    // an assertion from an IdP this runtime does not know is rejected
    let token_a = user_token(&node_a, "ada").await;
    let from_a = node_a
        .state()
        .idp()
        .send(IssueAssertion {
            id_token: Secret::new(token_a),
            hyperty: "hyperty://a.auth.test/h2".parse().unwrap(),
            audience: hyperty::identity::DEFAULT_ASSERTION_AUDIENCE.to_owned(),
        })
        .await
        .unwrap()
        .unwrap();
    let idm = IdmConfig {
        discover_unlisted_idps: false,
        ..IdmConfig::default()
    };
    let mut cfg = RuntimeConfig::new("c.auth.test");
    cfg.identity = Some(idm);
    let rt_c = Runtime::start(cfg).unwrap();
    assert!(rt_c
        .idm()
        .unwrap()
        .addr()
        .send(ValidateAssertion {
            assertion: from_a.assertion.clone(),
            idp: None,
            audience: None
        })
        .await
        .unwrap()
        .is_err());
}
