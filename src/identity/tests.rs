//! Unit tests: the provider's verifier against forged and malformed tokens, and
//! its reTHINK wire form.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::Actor;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyperty_actors::message::{Body, Message, MessageType, ResponseCode};
use serde_json::{json, Value};

use super::*;

fn provider(clock: &ManualClock) -> IdentityProvider {
    let cfg = IdpConfig {
        kdf: KdfParams::fast_insecure(),
        clock_skew_secs: 5,
        ..IdpConfig::default()
    };
    IdentityProvider::with_clock("a.org", cfg, Arc::new(clock.clone())).expect("provider")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Replaces the payload of `token` with `claims`, keeping header and signature.
fn swap_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    let _ = parts.next();
    let sig = parts.next().unwrap_or_default();
    format!("{header}.{}.{sig}", b64(claims))
}

#[test]
fn genuine_tokens_pass_and_forged_ones_fail() {
    let clock = ManualClock::starting_now();
    let idp = provider(&clock);
    let v = idp.verifier();
    let id = idp.claims_for_test("user://a.org/alice", TokenUse::Id);
    let token = idp.sign_for_test(&id);
    assert_eq!(v.verify_token(&token).unwrap().sub, "user://a.org/alice");

    // wrong issuer, wrong audience: signed with the right key, still refused
    let mut c = id.clone();
    c.iss = "domain-idp://evil.org".into();
    assert_eq!(
        v.verify_token(&idp.sign_for_test(&c)),
        Err(IdentityError::WrongIssuer)
    );
    let mut c = id.clone();
    c.aud = "domain://msg-node.evil.org".into();
    assert_eq!(
        v.verify_token(&idp.sign_for_test(&c)),
        Err(IdentityError::WrongAudience)
    );

    // a payload changed after signing
    let mut tampered = serde_json::to_value(&id).unwrap();
    tampered["sub"] = json!("user://a.org/mallory");
    assert_eq!(
        v.verify_token(&swap_payload(&token, &tampered)),
        Err(IdentityError::InvalidToken("bad signature"))
    );

    // not valid yet, beyond the tolerated skew
    let mut c = id.clone();
    c.nbf += 60;
    assert_eq!(
        v.verify_token(&idp.sign_for_test(&c)),
        Err(IdentityError::NotYetValid)
    );
    let mut c = id.clone();
    c.iat += 60;
    assert_eq!(
        v.verify_token(&idp.sign_for_test(&c)),
        Err(IdentityError::NotYetValid)
    );

    // an assertion is not a session token, and vice versa
    let a = idp.sign_for_test(&idp.claims_for_test("user://a.org/alice", TokenUse::Assertion));
    assert!(matches!(
        v.verify_token(&a),
        Err(IdentityError::WrongTokenUse {
            found: "assertion",
            ..
        })
    ));
    assert!(matches!(
        v.verify_device_token(&token),
        Err(IdentityError::WrongTokenUse { found: "id", .. })
    ));

    // a required claim missing
    let mut no_sub = serde_json::to_value(&id).unwrap();
    no_sub.as_object_mut().unwrap().remove("sub");
    let unsigned = swap_payload(&token, &no_sub);
    assert!(v.verify_token(&unsigned).is_err());
}

#[test]
fn expiry_follows_the_clock_with_skew() {
    let clock = ManualClock::starting_now();
    let idp = provider(&clock);
    let v = idp.verifier();
    let token = idp.sign_for_test(&idp.claims_for_test("user://a.org/alice", TokenUse::Id));
    // lifetime 60 s + skew 5 s
    clock.advance(Duration::from_secs(64));
    assert!(v.verify_token(&token).is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(v.verify_token(&token), Err(IdentityError::Expired));
}

#[test]
fn algorithm_confusion_is_refused() {
    let clock = ManualClock::starting_now();
    let idp = provider(&clock);
    let v = idp.verifier();
    let jwks = v.jwks();
    let jwk = &jwks.keys[0];
    let claims =
        serde_json::to_value(idp.claims_for_test("user://a.org/alice", TokenUse::Id)).unwrap();

    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": jwk.kid})),
        b64(&claims)
    );
    assert_eq!(
        v.verify_token(&none),
        Err(IdentityError::UnsupportedAlgorithm("none".into()))
    );

    // HS256 "signed" with the public key as the HMAC secret
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(jwk.kid.clone());
    let secret = URL_SAFE_NO_PAD.decode(&jwk.x).unwrap();
    let hs = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert_eq!(
        v.verify_token(&hs),
        Err(IdentityError::UnsupportedAlgorithm("HS256".into()))
    );

    // a token of another key carrying this provider's kid
    let other = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&other).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(jwk.kid.clone());
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        v.verify_token(&forged),
        Err(IdentityError::InvalidToken("bad signature"))
    );

    // an unknown kid
    header.kid = Some("nope".into());
    let unknown = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        v.verify_token(&unknown),
        Err(IdentityError::UnknownKey("nope".into()))
    );
}

fn execute(id: u64, method: Option<&str>, params: Option<Value>) -> Message {
    let mut body = serde_json::Map::new();
    if let Some(m) = method {
        body.insert("method".into(), json!(m));
    }
    if let Some(p) = params {
        body.insert("params".into(), p);
    }
    let mut m = Message::new(
        MessageType::Execute,
        "hyperty-runtime://a.org/rt".parse().unwrap(),
        "domain-idp://a.org"
            .parse::<hyperty_actors::address::Address>()
            .unwrap(),
    )
    .with_id(id);
    m.body = Body::from_map(body).unwrap();
    m
}

#[actix::test]
async fn wire_requests() {
    let clock = ManualClock::starting_now();
    let idp = provider(&clock).start();
    let ask = |m: Message| {
        let idp = idp.clone();
        async move { idp.send(IdpRequest::new(m)).await.expect("provider runs") }
    };
    let code = |m: &Message| m.code().map(ResponseCode::as_u16);

    let r = ask(execute(
        1,
        Some("registerUser"),
        Some(json!({"username": "alice", "password": "password-1", "profile": {"cn": "Alice"}})),
    ))
    .await;
    assert_eq!(code(&r), Some(200), "{r:?}");
    assert_eq!(r.id, 1);
    assert_eq!(r.from.as_str(), "domain-idp://a.org");
    assert_eq!(
        r.body.value.as_ref().unwrap()["userURL"],
        "user://a.org/alice"
    );

    // 400: no method, no params, unknown method, not an execute
    assert_eq!(
        code(&ask(execute(2, None, Some(json!({})))).await),
        Some(400)
    );
    assert_eq!(code(&ask(execute(3, Some("login"), None)).await), Some(400));
    assert_eq!(
        code(&ask(execute(4, Some("selfDestruct"), Some(json!({})))).await),
        Some(400)
    );
    let long = "ü".repeat(100);
    assert_eq!(
        code(&ask(execute(4, Some(&long), Some(json!({})))).await),
        Some(400)
    );
    let mut read = execute(5, Some("login"), Some(json!({})));
    read.kind = MessageType::Read;
    assert_eq!(code(&ask(read).await), Some(400));
    // malformed params: the answer does not echo them
    let r = ask(execute(
        6,
        Some("login"),
        Some(json!({"username": 1, "password": "s3cret-pw"})),
    ))
    .await;
    assert_eq!(code(&r), Some(400));
    assert!(!r.to_json().contains("s3cret-pw"));

    // 401 on bad credentials
    let r = ask(execute(
        7,
        Some("login"),
        Some(json!({"username": "alice", "password": "wrong-password"})),
    ))
    .await;
    assert_eq!(code(&r), Some(401));

    let r = ask(execute(
        8,
        Some("login"),
        Some(json!({"username": "alice", "password": "password-1"})),
    ))
    .await;
    assert_eq!(code(&r), Some(200));
    let id_token = r.body.value.as_ref().unwrap()["idToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = ask(execute(
        9,
        Some("generateAssertion"),
        Some(json!({"idToken": id_token, "hyperty": "hyperty://sp.org/h1"})),
    ))
    .await;
    assert_eq!(code(&r), Some(200), "{r:?}");
    let v = r.body.value.unwrap();
    assert_eq!(v["identity"]["userProfile"]["cn"], "Alice");
    let assertion = v["assertion"].as_str().unwrap().to_owned();

    let r = ask(execute(
        10,
        Some("validateAssertion"),
        Some(json!({"assertion": assertion})),
    ))
    .await;
    assert_eq!(code(&r), Some(200));
    let v = r.body.value.unwrap();
    assert_eq!(v["identity"], "user://a.org/alice");
    assert_eq!(v["contents"], "hyperty://sp.org/h1");

    let r = ask(execute(
        11,
        Some("validateAssertion"),
        Some(json!({"assertion": assertion, "audience": "someone-else"})),
    ))
    .await;
    assert_eq!(code(&r), Some(401));

    // an ID token is no assertion
    let r = ask(execute(
        12,
        Some("validateAssertion"),
        Some(json!({"assertion": id_token})),
    ))
    .await;
    assert_eq!(code(&r), Some(401));

    let r = ask(execute(13, Some("getLoginEndpoint"), Some(json!({})))).await;
    assert_eq!(code(&r), Some(200));
    assert_eq!(r.body.value.unwrap()["loginUrl"], "/idp/login");

    // a device needs its owner's ID token
    let r = ask(execute(
        14,
        Some("registerDevice"),
        Some(json!({"label": "tv"})),
    ))
    .await;
    assert_eq!(code(&r), Some(401), "{r:?}");
    let r = ask(execute(
        14,
        Some("registerDevice"),
        Some(json!({"label": "tv", "idToken": assertion})),
    ))
    .await;
    assert_eq!(code(&r), Some(401), "an assertion is no ID token");
    let r = ask(execute(
        14,
        Some("registerDevice"),
        Some(json!({"label": "tv", "idToken": id_token})),
    ))
    .await;
    assert_eq!(code(&r), Some(200), "{r:?}");
    let d = r.body.value.unwrap();
    let r = ask(execute(
        15,
        Some("deviceToken"),
        Some(json!({"device": d["device"], "secret": d["secret"]})),
    ))
    .await;
    assert_eq!(code(&r), Some(200));
    let r = ask(execute(
        16,
        Some("deviceToken"),
        Some(json!({"device": d["device"], "secret": "guess"})),
    ))
    .await;
    assert_eq!(code(&r), Some(401));
    let r = ask(execute(17, Some("getJwks"), Some(json!({})))).await;
    assert_eq!(
        r.body.value.unwrap()["keys"].as_array().map(Vec::len),
        Some(1)
    );

    // deletions: someone else's device is 403, the owner's deletion revokes it
    let r = ask(execute(
        18,
        Some("registerUser"),
        Some(json!({"username": "bob", "password": "password-2"})),
    ))
    .await;
    assert_eq!(code(&r), Some(200));
    let r = ask(execute(
        19,
        Some("login"),
        Some(json!({"username": "bob", "password": "password-2"})),
    ))
    .await;
    let bob = r.body.value.unwrap()["idToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = ask(execute(
        20,
        Some("deleteDevice"),
        Some(json!({"device": d["device"], "idToken": bob})),
    ))
    .await;
    assert_eq!(code(&r), Some(403), "{r:?}");
    let r = ask(execute(
        21,
        Some("deleteUser"),
        Some(json!({"username": "alice", "idToken": bob})),
    ))
    .await;
    assert_eq!(code(&r), Some(403), "{r:?}");
    let r = ask(execute(
        22,
        Some("deleteDevice"),
        Some(json!({"device": d["device"]})),
    ))
    .await;
    assert_eq!(code(&r), Some(401));
    let r = ask(execute(
        23,
        Some("deleteDevice"),
        Some(json!({"device": d["device"], "idToken": id_token})),
    ))
    .await;
    assert_eq!(code(&r), Some(200), "{r:?}");
    assert_eq!(
        r.body.value.unwrap()["runtimeURL"],
        format!("hyperty-runtime://a.org/{}", d["device"].as_str().unwrap())
    );
    let r = ask(execute(
        24,
        Some("deviceToken"),
        Some(json!({"device": d["device"], "secret": d["secret"]})),
    ))
    .await;
    assert_eq!(code(&r), Some(401), "a deleted device gets no token");
    let r = ask(execute(
        25,
        Some("deleteUser"),
        Some(json!({"username": "bob", "idToken": bob})),
    ))
    .await;
    assert_eq!(code(&r), Some(200), "{r:?}");
    assert_eq!(r.body.value.unwrap()["userURL"], "user://a.org/bob");
    let r = ask(execute(
        26,
        Some("login"),
        Some(json!({"username": "bob", "password": "password-2"})),
    ))
    .await;
    assert_eq!(code(&r), Some(401), "a deleted user cannot log in");
}

#[actix::test]
async fn deleting_revokes_every_token_of_the_subject() {
    let clock = ManualClock::starting_now();
    let cfg = IdpConfig {
        kdf: KdfParams::fast_insecure(),
        admins: vec!["root".into()],
        max_devices_per_user: 2,
        ..IdpConfig::default()
    };
    let idp = IdentityProvider::with_clock("a.org", cfg, Arc::new(clock.clone())).unwrap();
    let v = idp.verifier();
    let idp = idp.start();
    let mut tokens = std::collections::HashMap::new();
    for name in ["alice", "bob", "root"] {
        idp.send(RegisterUser {
            username: name.into(),
            password: Secret::new("password-1"),
            profile: Profile::default(),
        })
        .await
        .unwrap()
        .unwrap();
        let t = idp
            .send(Login {
                username: name.into(),
                password: Secret::new("password-1"),
                device: None,
                source: None,
            })
            .await
            .unwrap()
            .unwrap();
        tokens.insert(name, t.token);
    }
    let device = |owner: &str| RegisterDevice {
        label: None,
        id_token: tokens[owner].clone(),
    };
    let tv = idp.send(device("alice")).await.unwrap().unwrap();
    let _phone = idp.send(device("alice")).await.unwrap().unwrap();
    assert!(
        matches!(
            idp.send(device("alice")).await.unwrap(),
            Err(IdentityError::Full { limit: 2, .. })
        ),
        "devices per user are bounded"
    );
    let tv_token = idp
        .send(DeviceToken {
            device: tv.device.clone(),
            secret: tv.secret.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    // alice logs in on her tv: that ID token names the device
    let on_tv = idp
        .send(Login {
            username: "alice".into(),
            password: Secret::new("password-1"),
            device: Some(tv_token.token.clone()),
            source: None,
        })
        .await
        .unwrap()
        .unwrap();
    let assertion = idp
        .send(IssueAssertion {
            id_token: tokens["alice"].clone(),
            hyperty: "hyperty://a.org/h".parse().unwrap(),
            audience: DEFAULT_ASSERTION_AUDIENCE.into(),
        })
        .await
        .unwrap()
        .unwrap();
    let epoch = v.revocation_epoch();
    let iat = tv_token.claims.iat;
    assert!(!v.is_revoked(&tv.runtime, iat));

    // the tv is deleted: its device token, and the ID token naming it, stop verifying
    idp.send(DeleteDevice {
        device: tv.device.clone(),
        id_token: tokens["alice"].clone(),
    })
    .await
    .unwrap()
    .unwrap();
    assert_ne!(v.revocation_epoch(), epoch);
    assert!(v.is_revoked(&tv.runtime, iat));
    assert_eq!(
        v.verify_token(tv_token.token.expose()),
        Err(IdentityError::Revoked)
    );
    assert_eq!(
        v.verify_token(on_tv.token.expose()),
        Err(IdentityError::Revoked)
    );
    assert!(v.verify_token(tokens["alice"].expose()).is_ok());

    // bob may not delete alice; the admin may
    assert!(matches!(
        idp.send(DeleteUser {
            username: "alice".into(),
            id_token: tokens["bob"].clone(),
        })
        .await
        .unwrap(),
        Err(IdentityError::Forbidden(_))
    ));
    let gone = idp
        .send(DeleteUser {
            username: "Alice".into(),
            id_token: tokens["root"].clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.subject, "user://a.org/alice");
    assert_eq!(gone.devices.len(), 1, "her remaining device goes with her");
    assert_eq!(
        v.verify_token(tokens["alice"].expose()),
        Err(IdentityError::Revoked)
    );
    assert_eq!(
        v.verify_assertion(&assertion.assertion, DEFAULT_ASSERTION_AUDIENCE),
        Err(IdentityError::Revoked)
    );
    assert!(v.is_revoked("user://a.org/alice", iat));
    assert!(v.verify_token(tokens["bob"].expose()).is_ok());

    // a new alice (a second later) gets tokens that verify; the old ones stay refused
    clock.advance(Duration::from_secs(1));
    idp.send(RegisterUser {
        username: "alice".into(),
        password: Secret::new("password-9"),
        profile: Profile::default(),
    })
    .await
    .unwrap()
    .unwrap();
    let fresh = idp
        .send(Login {
            username: "alice".into(),
            password: Secret::new("password-9"),
            device: None,
            source: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(v.verify_token(fresh.token.expose()).is_ok());
    assert_eq!(
        v.verify_token(tokens["alice"].expose()),
        Err(IdentityError::Revoked)
    );
}

#[actix::test]
async fn logins_are_throttled_with_a_retry_hint() {
    let clock = ManualClock::starting_now();
    let idp = provider(&clock).start();
    idp.send(RegisterUser {
        username: "alice".into(),
        password: Secret::new("password-1"),
        profile: Profile::default(),
    })
    .await
    .unwrap()
    .unwrap();
    let from = |ip: [u8; 4], pw: &str| Login {
        username: "alice".into(),
        password: Secret::new(pw),
        device: None,
        source: Some(std::net::IpAddr::from(ip)),
    };
    let attacker = [192, 0, 2, 1];
    let mut refusals = Vec::new();
    for _ in 0..6 {
        refusals.push(
            idp.send(from(attacker, "guess"))
                .await
                .unwrap()
                .unwrap_err(),
        );
    }
    assert!(refusals[..3]
        .iter()
        .all(|e| *e == IdentityError::BadCredentials));
    assert_eq!(
        refusals[3],
        IdentityError::Throttled {
            retry_after_secs: 1
        }
    );
    // the real user elsewhere is not held back
    assert!(idp
        .send(from([198, 51, 100, 7], "password-1"))
        .await
        .unwrap()
        .is_ok());
    // even the right password waits out the attacker's backoff from its source
    assert!(matches!(
        idp.send(from(attacker, "password-1")).await.unwrap(),
        Err(IdentityError::Throttled { .. })
    ));
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        idp.send(from(attacker, "guess")).await.unwrap(),
        Err(IdentityError::BadCredentials)
    );
    assert_eq!(
        idp.send(from(attacker, "guess")).await.unwrap(),
        Err(IdentityError::Throttled {
            retry_after_secs: 2
        })
    );
}

#[actix::test]
async fn tables_are_bounded() {
    let clock = ManualClock::starting_now();
    let cfg = IdpConfig {
        kdf: KdfParams::fast_insecure(),
        max_users: 1,
        max_devices: 1,
        ..IdpConfig::default()
    };
    let idp = IdentityProvider::with_clock("a.org", cfg, Arc::new(clock))
        .unwrap()
        .start();
    let reg = |name: &str| RegisterUser {
        username: name.into(),
        password: Secret::new("password-1"),
        profile: Profile::default(),
    };
    assert!(idp.send(reg("alice")).await.unwrap().is_ok());
    assert_eq!(
        idp.send(reg("ALICE")).await.unwrap(),
        Err(IdentityError::UserExists("alice".into()))
    );
    assert!(matches!(
        idp.send(reg("bob")).await.unwrap(),
        Err(IdentityError::Full { limit: 1, .. })
    ));
    let token = idp
        .send(Login {
            username: "alice".into(),
            password: Secret::new("password-1"),
            device: None,
            source: None,
        })
        .await
        .unwrap()
        .unwrap()
        .token;
    let device = || RegisterDevice {
        label: None,
        id_token: token.clone(),
    };
    assert!(idp.send(device()).await.unwrap().is_ok());
    assert!(matches!(
        idp.send(device()).await.unwrap(),
        Err(IdentityError::Full { limit: 1, .. })
    ));
    let short = RegisterUser {
        username: "carol".into(),
        password: Secret::new("short"),
        profile: Profile::default(),
    };
    assert!(matches!(
        idp.send(short).await.unwrap(),
        Err(IdentityError::InvalidField { .. })
    ));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_-]{0,40}",
            Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k"}"#)),
            Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)),
            Just(URL_SAFE_NO_PAD.encode(r#"{"iss":"domain-idp://a.org","exp":1}"#)),
            Just(URL_SAFE_NO_PAD.encode("[]")),
        ]
    }

    proptest! {
        #[test]
        fn verifiers_never_panic(s in "\\PC{0,300}", parts in prop::collection::vec(segment(), 0..5)) {
            let clock = ManualClock::starting_now();
            let idp = provider(&clock);
            let v = idp.verifier();
            prop_assert!(v.verify_token(&s).is_err());
            let joined = parts.join(".");
            prop_assert!(v.verify_token(&joined).is_err());
            prop_assert!(v.verify_assertion(&joined, DEFAULT_ASSERTION_AUDIENCE).is_err());
        }
    }
}
