//! Identity: providers of two domains served over real HTTP on port 0, runtimes
//! whose identity modules log users in, bind them to hyperties, and validate
//! assertions across domains; forged tokens, key rotation, restarts on the same
//! data directory and unknown providers.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{ServerHandle, Service};
use actix_web::{web, App, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use hyperty::identity::{
    self, BindIdentity, BoundIdentity, DeviceToken as DeviceTokenMsg, FetchKeys, GenerateAssertion,
    IdentityError, IdentityProvider, IdmConfig, IdmHandle, IdpConfig, Jwks, KdfParams,
    ListSessions, LoginUser, LogoutUser, ManualClock, RefreshBindings, RegisterDevice, RotateKeys,
    Secret, TokenVerifier, ValidateAssertion, KEY_FILE_NAME,
};
use hyperty::prelude::*;
use hyperty::RuntimeError;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const PASSWORD: &str = "correct horse battery";

/// A provider served over HTTP on 127.0.0.1:0.
struct Provider {
    addr: Addr<IdentityProvider>,
    verifier: TokenVerifier,
    base: String,
    server: ServerHandle,
    jwks_fetches: Arc<AtomicUsize>,
}

fn fast(data_dir: Option<PathBuf>) -> IdpConfig {
    IdpConfig {
        data_dir,
        kdf: KdfParams::fast_insecure(),
        ..IdpConfig::default()
    }
}

fn serve(domain: &str, cfg: IdpConfig, clock: &ManualClock) -> Provider {
    let idp = IdentityProvider::with_clock(domain, cfg, Arc::new(clock.clone())).unwrap();
    let verifier = idp.verifier();
    let addr = idp.start();
    let fetches = Arc::new(AtomicUsize::new(0));
    let (data, counter) = (addr.clone(), fetches.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new()
            .app_data(web::Data::new(data.clone()))
            .wrap_fn(move |req, srv| {
                if req.path() == "/.well-known/jwks.json" {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                srv.call(req)
            })
            .configure(identity::configure)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Provider {
        addr,
        verifier,
        base,
        server: handle,
        jwks_fetches: fetches,
    }
}

async fn http(method: &str, url: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = awc::Client::default();
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let mut resp = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("HTTP request");
    let status = resp.status().as_u16();
    let v = resp
        .json::<Value>()
        .limit(1 << 20)
        .await
        .unwrap_or(Value::Null);
    (status, v)
}

async fn register(p: &Provider, username: &str) {
    let (status, v) = http(
        "POST",
        &format!("{}/idp/users", p.base),
        None,
        Some(json!({"username": username, "password": PASSWORD, "profile": {"cn": username.to_uppercase()}})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
}

async fn login(p: &Provider, username: &str, device_token: Option<&str>) -> String {
    let (status, v) = http(
        "POST",
        &format!("{}/idp/login", p.base),
        None,
        Some(json!({"username": username, "password": PASSWORD, "deviceToken": device_token})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["idToken"].as_str().unwrap().to_owned()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn idm_config(endpoints: &[(&str, &Provider)]) -> IdmConfig {
    let mut cfg = IdmConfig {
        discover_unlisted_idps: false,
        ..IdmConfig::default()
    };
    for (domain, p) in endpoints {
        cfg.idp_endpoints
            .insert((*domain).to_owned(), p.base.clone());
    }
    cfg
}

fn runtime(domain: &str, idm: IdmConfig) -> RuntimeHandle {
    let mut cfg = RuntimeConfig::new(domain);
    cfg.identity = Some(idm);
    Runtime::start(cfg).unwrap()
}

fn user(s: &str) -> UserUrl {
    s.parse().unwrap()
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("hyperty-identity-{}", uuid::Uuid::new_v4()))
}

/// A new data directory holding a copy of `dir`'s signing keys (and nothing
/// else): a second provider signing with the same keys, beside the first.
fn sharing_keys_of(dir: &std::path::Path) -> PathBuf {
    let copy = temp_dir();
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(dir.join(KEY_FILE_NAME), copy.join(KEY_FILE_NAME)).unwrap();
    copy
}

#[actix::test]
async fn users_register_and_log_in_over_http() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    register(&a, "alice").await;

    // errors are JSON with the status as code
    let users = format!("{}/idp/users", a.base);
    let (s, v) = http(
        "POST",
        &users,
        None,
        Some(json!({"username": "Alice", "password": PASSWORD})),
    )
    .await;
    assert_eq!((s, v["code"].as_u64()), (409, Some(409)));
    let (s, _) = http(
        "POST",
        &users,
        None,
        Some(json!({"username": "a/b", "password": PASSWORD})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = http("POST", &users, None, Some(json!({"username": "bob"}))).await;
    assert_eq!(s, 400);
    let (s, v) = http(
        "POST",
        &format!("{}/idp/nothing", a.base),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!((s, v["code"].as_u64()), (404, Some(404)));

    let login_url = format!("{}/idp/login", a.base);
    for (name, pw) in [("alice", "wrong password"), ("nobody", PASSWORD)] {
        let (s, v) = http(
            "POST",
            &login_url,
            None,
            Some(json!({"username": name, "password": pw})),
        )
        .await;
        assert_eq!(s, 401);
        assert_eq!(v["description"], "invalid credentials");
    }

    let token = login(&a, "ALICE", None).await;
    let claims = a.verifier.verify_token(&token).unwrap();
    assert_eq!(claims.iss, "domain-idp://a.org");
    assert_eq!(claims.sub, "user://a.org/alice");
    assert_eq!(claims.aud, "domain://msg-node.a.org");
    assert_eq!(claims.name.as_deref(), Some("ALICE"));
    assert!(claims.exp > claims.iat && !claims.jti.is_empty());

    let (s, jwks) = http(
        "GET",
        &format!("{}/.well-known/jwks.json", a.base),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let resp = awc::Client::default()
        .get(format!("{}/.well-known/jwks.json", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|h| h.to_str().ok()),
        Some("public, max-age=300")
    );
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["kid"].as_str(), Some(kid_of(&token).as_str()));
    assert!(keys[0].get("d").is_none(), "no private part is published");
    a.server.stop(true).await;
}

#[actix::test]
async fn forged_tokens_are_refused_with_401() {
    let clock = ManualClock::starting_now();
    let dir = temp_dir();
    let a = serve("a.org", fast(Some(dir.clone())), &clock);
    register(&a, "alice").await;
    let token = login(&a, "alice", None).await;
    let assertions = format!("{}/idp/assertions", a.base);
    let body = json!({"hyperty": "hyperty://sp.org/h1"});
    let (s, _) = http("POST", &assertions, Some(&token), Some(body.clone())).await;
    assert_eq!(s, 200);

    // wrong key: signed by a key of our own under a.org's kid
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
    let other = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&other).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid_of(&token));
    let wrong_key = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        a.verifier.verify_token(&wrong_key),
        Err(IdentityError::InvalidToken("bad signature"))
    );

    // alg confusion: none, and HS256 keyed with the public key
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": kid_of(&token)})),
        b64(&claims)
    );
    let jwk = a.verifier.jwks().keys.remove(0);
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(jwk.kid.clone());
    let hs = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&jwk.x).unwrap()),
    )
    .unwrap();
    for forged in [&none, &hs] {
        assert!(matches!(
            a.verifier.verify_token(forged),
            Err(IdentityError::UnsupportedAlgorithm(_))
        ));
    }

    // wrong issuer / wrong audience: providers sharing a.org's keys but not its names
    let evil_iss = IdpConfig {
        issuer: Some("domain-idp://evil.org".into()),
        ..fast(Some(sharing_keys_of(&dir)))
    };
    let evil = serve("a.org", evil_iss, &clock);
    register(&evil, "alice").await;
    let wrong_issuer = login(&evil, "alice", None).await;
    assert_eq!(kid_of(&wrong_issuer), kid_of(&token), "same key");
    assert_eq!(
        a.verifier.verify_token(&wrong_issuer),
        Err(IdentityError::WrongIssuer)
    );
    let evil_aud = IdpConfig {
        audience: Some("domain://msg-node.evil.org".into()),
        ..fast(Some(sharing_keys_of(&dir)))
    };
    let other_aud = serve("a.org", evil_aud, &clock);
    register(&other_aud, "alice").await;
    let wrong_audience = login(&other_aud, "alice", None).await;
    assert_eq!(
        a.verifier.verify_token(&wrong_audience),
        Err(IdentityError::WrongAudience)
    );

    // every forgery is a 401 over HTTP, with WWW-Authenticate
    for forged in [
        &wrong_key,
        &none,
        &hs,
        &wrong_issuer,
        &wrong_audience,
        &"garbage".to_owned(),
    ] {
        let resp = awc::Client::default()
            .post(&assertions)
            .bearer_auth(forged)
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{forged}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|h| h.to_str().ok()),
            Some("Bearer")
        );
    }
    let (s, _) = http("POST", &assertions, None, Some(body.clone())).await;
    assert_eq!(s, 401, "no bearer token");

    // an assertion cannot stand in for an ID token
    let (_, a1) = http("POST", &assertions, Some(&token), Some(body.clone())).await;
    let (s, _) = http(
        "POST",
        &assertions,
        Some(a1["assertion"].as_str().unwrap()),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 401);

    // expired: past the lifetime and the tolerated skew
    clock.advance(Duration::from_secs(3_600 + 31));
    assert_eq!(a.verifier.verify_token(&token), Err(IdentityError::Expired));
    let (s, _) = http("POST", &assertions, Some(&token), Some(body)).await;
    assert_eq!(s, 401);

    for p in [&a, &evil, &other_aud] {
        p.server.stop(true).await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix::test]
async fn rotation_keeps_old_tokens_valid_until_they_expire() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    register(&a, "alice").await;
    let old = login(&a, "alice", None).await;
    let new_kid = a.addr.send(RotateKeys).await.unwrap().unwrap();
    assert_ne!(new_kid, kid_of(&old));

    let fresh = login(&a, "alice", None).await;
    assert_eq!(kid_of(&fresh), new_kid, "new tokens use the new key");
    assert!(
        a.verifier.verify_token(&old).is_ok(),
        "old tokens still verify"
    );
    assert!(a.verifier.verify_token(&fresh).is_ok());
    let (_, jwks) = http(
        "GET",
        &format!("{}/.well-known/jwks.json", a.base),
        None,
        None,
    )
    .await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // once every token of the old key has expired, it is no longer published
    clock.advance(Duration::from_secs(86_400 + 31));
    let set = a.addr.send(Jwks).await.unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].kid, new_kid);
    assert!(a.verifier.verify_token(&old).is_err());
    a.server.stop(true).await;
}

#[actix::test]
async fn a_restarted_provider_reuses_its_keys() {
    let clock = ManualClock::starting_now();
    let dir = temp_dir();
    let first =
        IdentityProvider::with_clock("a.org", fast(Some(dir.clone())), Arc::new(clock.clone()))
            .unwrap();
    let first_kid = first.verifier().jwks().keys[0].kid.clone();
    let first = first.start();
    first
        .send(hyperty::identity::RegisterUser {
            username: "owner".into(),
            password: Secret::new(PASSWORD),
            profile: Default::default(),
        })
        .await
        .unwrap()
        .unwrap();
    let owner = first
        .send(hyperty::identity::Login {
            username: "owner".into(),
            password: Secret::new(PASSWORD),
            device: None,
            source: None,
        })
        .await
        .unwrap()
        .unwrap();
    let device = first
        .send(RegisterDevice {
            label: None,
            id_token: owner.token,
        })
        .await
        .unwrap()
        .unwrap();
    let token = first
        .send(DeviceTokenMsg {
            device: device.device.clone(),
            secret: device.secret.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // the first provider holds the store until it has stopped
    first.send(hyperty::identity::Shutdown).await.unwrap();
    let mut again = None;
    assert!(
        eventually(TIMEOUT, || {
            again = IdentityProvider::with_clock(
                "a.org",
                fast(Some(dir.clone())),
                Arc::new(clock.clone()),
            )
            .ok()
            .or(again.take());
            let found = again.is_some();
            async move { found }
        })
        .await
    );
    let again = again.unwrap();
    assert_eq!(again.verifier().jwks().keys[0].kid, first_kid);
    let claims = again.verifier().verify_token(token.token.expose()).unwrap();
    assert_eq!(claims.sub, device.runtime);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix::test]
async fn devices_register_apart_from_users_and_carry_several_users() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    let devices = format!("{}/idp/devices", a.base);
    // a device is registered by its owner, a logged-in user (anonymous: 401)
    let (s, _) = http("POST", &devices, None, Some(json!({"label": "tv"}))).await;
    assert_eq!(s, 401);
    register(&a, "owner").await;
    let owner = login(&a, "owner", None).await;
    let (s, d) = http("POST", &devices, Some(&owner), Some(json!({"label": "tv"}))).await;
    assert_eq!(s, 201);
    let (s, _) = http("POST", &devices, Some(&owner), None).await;
    assert_eq!(s, 201, "the label is optional");
    let (s, _) = http("POST", &devices, Some(&owner), Some(json!({"label": 5}))).await;
    assert_eq!(s, 400);
    let token_url = format!("{}/idp/devices/token", a.base);
    let (s, _) = http(
        "POST",
        &token_url,
        None,
        Some(json!({"device": d["device"], "secret": "guess"})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, t) = http(
        "POST",
        &token_url,
        None,
        Some(json!({"device": d["device"], "secret": d["secret"]})),
    )
    .await;
    assert_eq!(s, 200);
    let device_token = t["deviceToken"].as_str().unwrap();
    let claims = a.verifier.verify_token(device_token).unwrap();
    assert_eq!(claims.sub, d["runtimeURL"].as_str().unwrap());
    assert_eq!(
        claims.sub,
        format!("hyperty-runtime://a.org/{}", d["device"].as_str().unwrap())
    );
    assert_eq!(claims.device.as_deref(), d["device"].as_str());
    assert!(
        a.verifier.verify_id_token(device_token).is_err(),
        "a device is not a user"
    );

    // two users on the one device
    for name in ["alice", "bob"] {
        register(&a, name).await;
        let id = login(&a, name, Some(device_token)).await;
        let c = a.verifier.verify_token(&id).unwrap();
        assert_eq!(c.sub, format!("user://a.org/{name}"));
        assert_eq!(c.device.as_deref(), d["device"].as_str());
    }
    // a user's ID token is not a device token
    let alice = login(&a, "alice", None).await;
    let (s, _) = http(
        "POST",
        &format!("{}/idp/login", a.base),
        None,
        Some(json!({"username": "bob", "password": PASSWORD, "deviceToken": alice})),
    )
    .await;
    assert_eq!(s, 401);
    a.server.stop(true).await;
}

/// Sends what it is delivered to a channel (a stand-in for a far runtime).
struct Capture(mpsc::UnboundedSender<Message>);

impl Actor for Capture {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Capture {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let _ = self.0.send(m);
    }
}

impl Handler<Connect> for Capture {
    type Result = Result<(), StubError>;
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

impl Handler<Disconnect> for Capture {
    type Result = ();
    fn handle(&mut self, _: Disconnect, _: &mut Context<Self>) {}
}

#[actix::test]
async fn bound_identities_travel_across_domains_and_validate_there() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    let b = serve("b.org", fast(None), &clock);
    register(&a, "alice").await;
    register(&b, "bob").await;

    // a runtime of sp.org whose users come from a.org and b.org, its domain's node
    // federated with b.org's
    let nodes = start_domains(&["sp.org", "b.org"], |_, _| {});
    let sp = runtime("sp.org", idm_config(&[("a.org", &a), ("b.org", &b)]));
    attach(&sp, &nodes[0]).await;
    let idm = sp.idm().unwrap().clone();
    for (idp, name) in [("a.org", "alice"), ("b.org", "bob")] {
        let s = idm
            .addr()
            .send(LoginUser {
                idp: idp.into(),
                username: name.into(),
                password: Secret::new(PASSWORD),
                device_token: None,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.user.as_str(), format!("user://{idp}/{name}"));
    }
    assert_eq!(idm.addr().send(ListSessions).await.unwrap().len(), 2);

    // a runtime of b.org that trusts a.org's provider only
    let far = runtime("b.org", idm_config(&[("a.org", &a)]));
    attach(&far, &nodes[1]).await;
    let w = far.spawn_hyperty(worker("b.org")).await.unwrap();

    // alice's hyperty: bound at registration
    let h = sp
        .spawn_hyperty(worker("sp.org").with_user(user("user://a.org/alice")))
        .await
        .unwrap();
    let bound = idm
        .addr()
        .send(BoundIdentity { hyperty: h.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.user_profile.user_url, "user://a.org/alice");

    // its message to the far runtime carries body.identity (the worker echoes the body)
    let r = sp
        .bus()
        .post(request(&h, &w, json!({"q": 1})))
        .await
        .unwrap();
    let identity = r.body.value.unwrap()["body"]["identity"].clone();
    assert_eq!(identity["userProfile"]["userURL"], "user://a.org/alice");
    assert_eq!(identity["userProfile"]["username"], "alice");
    assert_eq!(identity["userProfile"]["cn"], "ALICE");
    assert_eq!(identity["idp"], "a.org");
    let assertion = identity["assertion"].as_str().unwrap().to_owned();

    // the far runtime: nothing cached yet for the synchronous check...
    let far_idm = far.idm().unwrap().clone();
    let check = far_idm.verifier();
    assert_eq!(
        check.verify(&identity, "sp.org"),
        Err(IdentityError::KeysNotCached("a.org".into()))
    );
    // ...the module fetches a.org's JWKS over HTTP and validates
    assert!(
        eventually(TIMEOUT, || async {
            a.jwks_fetches.load(Ordering::SeqCst) >= 1
        })
        .await,
        "the miss asked for a background fetch"
    );
    let v = far_idm
        .addr()
        .send(ValidateAssertion {
            assertion: assertion.clone(),
            idp: Some("a.org".into()),
            audience: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.user.as_str(), "user://a.org/alice");
    assert_eq!(v.hyperty.as_ref(), Some(&h));
    assert_eq!(v.user_profile.cn.as_deref(), Some("ALICE"));
    let fetched = a.jwks_fetches.load(Ordering::SeqCst);
    // now the synchronous check passes from the cache, without another fetch
    assert_eq!(check.verify(&identity, "sp.org").unwrap().user, v.user);
    assert_eq!(
        check.verify_sender(&identity, h.as_str()).unwrap().user,
        v.user
    );
    assert!(check.verify(&identity, "elsewhere.org").is_err());
    assert!(check.verify_sender(&identity, w.as_str()).is_err());
    let mut swapped = identity.clone();
    swapped["userProfile"]["userURL"] = json!("user://a.org/mallory");
    assert!(matches!(
        check.verify(&swapped, "sp.org"),
        Err(IdentityError::IdentityMismatch(_))
    ));
    far_idm
        .addr()
        .send(ValidateAssertion {
            assertion: assertion.clone(),
            idp: None,
            audience: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.jwks_fetches.load(Ordering::SeqCst),
        fetched,
        "served from the cache"
    );

    // the far runtime's hyperties can ask their IdM over the bus
    let mut ask = Message::new(
        MessageType::Execute,
        w.clone().into_address(),
        far_idm.address().clone(),
    );
    ask.body
        .extra
        .insert("method".into(), json!("validateAssertion"));
    ask.body
        .extra
        .insert("params".into(), json!({"identity": identity}));
    let r = far.bus().post(ask).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
    assert_eq!(r.body.value.unwrap()["userURL"], "user://a.org/alice");

    // bob's assertion comes from b.org, a provider the far runtime does not trust
    let hb = sp
        .spawn_hyperty(worker("sp.org").with_user(user("user://b.org/bob")))
        .await
        .unwrap();
    let r = sp.bus().post(request(&hb, &w, json!({}))).await.unwrap();
    let bob_identity = r.body.value.unwrap()["body"]["identity"].clone();
    assert_eq!(bob_identity["idp"], "b.org");
    let rejected = far_idm
        .addr()
        .send(ValidateAssertion {
            assertion: bob_identity["assertion"].as_str().unwrap().to_owned(),
            idp: None,
            audience: None,
        })
        .await
        .unwrap();
    assert_eq!(rejected, Err(IdentityError::UnknownIdp("b.org".into())));
    assert_eq!(
        check.verify(&bob_identity, "sp.org"),
        Err(IdentityError::UnknownIdp("b.org".into()))
    );
    // and an a.org identity claiming b.org is refused too
    let mut wrong_idp = identity.clone();
    wrong_idp["idp"] = json!("b.org");
    assert!(matches!(
        check.verify(&wrong_idp, "sp.org"),
        Err(IdentityError::IdentityMismatch(_))
    ));

    // logging out unbinds: alice's hyperty becomes anonymous
    assert_eq!(
        idm.addr()
            .send(LogoutUser {
                user: user("user://a.org/alice")
            })
            .await
            .unwrap(),
        1
    );
    let r = sp.bus().post(request(&h, &w, json!({}))).await.unwrap();
    assert_eq!(
        r.body.value.unwrap()["body"]["identity"],
        json!({"userProfile": {"guid": "anonymous"}})
    );
    sp.shutdown().await;
    far.shutdown().await;
    stop_all(&nodes).await;
    a.server.stop(true).await;
    b.server.stop(true).await;
}

#[actix::test]
async fn unknown_or_unreachable_providers_and_forged_assertions_are_rejected() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    let c = serve("c.org", fast(None), &clock);
    register(&a, "alice").await;
    register(&c, "carol").await;
    let hyperty: HypertyUrl = "hyperty://sp.org/h1".parse().unwrap();
    let assertion_of = |p: &Provider, token: String| {
        let url = format!("{}/idp/assertions", p.base);
        async move {
            let (s, v) = http(
                "POST",
                &url,
                Some(&token),
                Some(json!({"hyperty": "hyperty://sp.org/h1"})),
            )
            .await;
            assert_eq!(s, 200);
            v["assertion"].as_str().unwrap().to_owned()
        }
    };
    let alice = assertion_of(&a, login(&a, "alice", None).await).await;
    let carol = assertion_of(&c, login(&c, "carol", None).await).await;

    // c.org is unknown; d.org's endpoint does not answer
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut cfg = idm_config(&[("a.org", &a)]);
    cfg.idp_endpoints.insert("c2.org".into(), dead);
    let rt = Runtime::start(RuntimeConfig::new("sp.org")).unwrap();
    let idm = IdmHandle::start_with_clock(rt.bus().clone(), cfg, Arc::new(clock.clone())).unwrap();
    let validate = |assertion: String| {
        let idm = idm.clone();
        async move {
            idm.addr()
                .send(ValidateAssertion {
                    assertion,
                    idp: None,
                    audience: None,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        validate(carol.clone()).await,
        Err(IdentityError::UnknownIdp("c.org".into()))
    );
    assert_eq!(c.jwks_fetches.load(Ordering::SeqCst), 0, "never asked");

    // a provider that cannot be reached: c2.org names a closed port
    let c2 = serve("c2.org", fast(None), &clock);
    register(&c2, "dave").await;
    let dave = assertion_of(&c2, login(&c2, "dave", None).await).await;
    assert!(matches!(
        validate(dave).await,
        Err(IdentityError::IdpUnreachable { ref idp, .. }) if idp == "c2.org"
    ));

    // a.org's genuine assertion passes; forgeries do not
    let v = validate(alice.clone()).await.unwrap();
    assert_eq!(v.hyperty, Some(hyperty));
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&alice).unwrap();
    let other = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&other).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid_of(&alice));
    let sign = |claims: &Value| {
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(
        validate(sign(&claims)).await,
        Err(IdentityError::InvalidToken("bad signature"))
    );
    // carol's genuine c.org assertion relabelled as a.org's: a.org's key does not match
    let mut relabelled: Value = jsonwebtoken::dangerous::insecure_decode_claims(&carol).unwrap();
    relabelled["iss"] = json!("domain-idp://a.org");
    let mut parts = carol.split('.');
    let forged = format!(
        "{}.{}.{}",
        parts.next().unwrap(),
        URL_SAFE_NO_PAD.encode(relabelled.to_string()),
        parts.nth(1).unwrap()
    );
    assert!(validate(forged).await.is_err());
    // a wrong audience
    let r = idm
        .addr()
        .send(ValidateAssertion {
            assertion: alice.clone(),
            idp: None,
            audience: Some("urn:somewhere-else".into()),
        })
        .await
        .unwrap();
    assert_eq!(r, Err(IdentityError::WrongAudience));
    // expired
    clock.advance(Duration::from_secs(3_600 + 31));
    assert_eq!(validate(alice).await, Err(IdentityError::Expired));
    for p in [&a, &c, &c2] {
        p.server.stop(true).await;
    }
}

#[actix::test]
async fn keys_are_cached_and_refetched_at_most_once_per_interval() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    register(&a, "alice").await;
    let token = login(&a, "alice", None).await;
    let rt = Runtime::start(RuntimeConfig::new("sp.org")).unwrap();
    let idm = IdmHandle::start_with_clock(
        rt.bus().clone(),
        idm_config(&[("a.org", &a)]),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let issue = || {
        let url = format!("{}/idp/assertions", a.base);
        let token = token.clone();
        async move {
            let (_, v) = http(
                "POST",
                &url,
                Some(&token),
                Some(json!({"hyperty": "hyperty://sp.org/h"})),
            )
            .await;
            v["assertion"].as_str().unwrap().to_owned()
        }
    };
    let validate = |assertion: String| {
        let idm = idm.clone();
        async move {
            idm.addr()
                .send(ValidateAssertion {
                    assertion,
                    idp: None,
                    audience: None,
                })
                .await
                .unwrap()
        }
    };
    // concurrent validations share one fetch
    let first = issue().await;
    let (r1, r2) = tokio::join!(validate(first.clone()), validate(first.clone()));
    assert!(r1.is_ok() && r2.is_ok());
    assert_eq!(a.jwks_fetches.load(Ordering::SeqCst), 1);

    // after a rotation the new kid is unknown: one refetch, then none within the interval
    a.addr.send(RotateKeys).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(10));
    let rotated = issue().await;
    assert!(validate(rotated.clone()).await.is_ok());
    assert_eq!(a.jwks_fetches.load(Ordering::SeqCst), 2);
    a.addr.send(RotateKeys).await.unwrap().unwrap();
    let again = issue().await;
    assert!(matches!(
        validate(again.clone()).await,
        Err(IdentityError::UnknownKey(_))
    ));
    assert_eq!(
        a.jwks_fetches.load(Ordering::SeqCst),
        2,
        "not within the interval"
    );
    clock.advance(Duration::from_secs(10));
    assert!(validate(again).await.is_ok());
    assert_eq!(a.jwks_fetches.load(Ordering::SeqCst), 3);
    // an explicit fetch (to warm the cache) answers how many keys were taken
    assert_eq!(
        idm.addr()
            .send(FetchKeys {
                idp: "a.org".into()
            })
            .await
            .unwrap(),
        Ok(3)
    );
    a.server.stop(true).await;
}

#[actix::test]
async fn the_interceptor_marks_anonymous_senders_and_leaves_components_alone() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    let rt = runtime("sp.org", idm_config(&[("a.org", &a)]));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stub = rt
        .add_stub(Some("far.org"), move |_| Capture(tx))
        .await
        .unwrap();
    stub.connect().await.unwrap();
    let far: Address = "hyperty://far.org/x".parse().unwrap();
    let h = rt.spawn_hyperty(worker("sp.org")).await.unwrap();
    async fn next(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
        tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .ok()
            .flatten()
            .expect("the stub received the message")
    }

    // an anonymous hyperty cannot claim an identity of its own making
    let mut m = Message::new(MessageType::Update, h.clone().into_address(), far.clone());
    m.body.identity =
        Some(json!({"userProfile": {"userURL": "user://a.org/alice"}, "assertion": "x"}));
    rt.bus().send(m);
    let got = next(&mut rx).await;
    assert_eq!(
        got.body.identity,
        Some(json!({"userProfile": {"guid": "anonymous"}}))
    );

    // runtime components keep what they send
    let component = rt.url().component("sm");
    let mut m = Message::new(MessageType::Update, component, far.clone());
    m.body.identity = Some(json!({"userProfile": {"userURL": "user://a.org/alice"}}));
    rt.bus().send(m);
    assert_eq!(
        next(&mut rx).await.body.identity.unwrap()["userProfile"]["userURL"],
        "user://a.org/alice"
    );

    // local messages are not touched
    let (probe, mut local) = Probe::start();
    let here: Address = "hyperty://sp.org/local".parse().unwrap();
    rt.bus()
        .add_listener(here.clone(), probe, None)
        .await
        .unwrap();
    rt.bus().send(Message::new(
        MessageType::Update,
        h.clone().into_address(),
        here,
    ));
    assert_eq!(local.recv(TIMEOUT).await.unwrap().body.identity, None);

    // without mark_anonymous, an unbound sender's identity is removed
    let mut cfg = idm_config(&[("a.org", &a)]);
    cfg.mark_anonymous = false;
    let quiet = runtime("sp.org", cfg);
    let (tx, mut rx2) = mpsc::unbounded_channel();
    let s = quiet
        .add_stub(Some("far.org"), move |_| Capture(tx))
        .await
        .unwrap();
    s.connect().await.unwrap();
    let q = quiet.spawn_hyperty(worker("sp.org")).await.unwrap();
    let mut m = Message::new(MessageType::Update, q.into_address(), far);
    m.body.identity = Some(json!({"userProfile": {"userURL": "user://a.org/alice"}}));
    quiet.bus().send(m);
    assert_eq!(next(&mut rx2).await.body.identity, None);
    a.server.stop(true).await;
}

#[actix::test]
async fn a_hyperty_of_a_user_who_is_not_logged_in_does_not_start() {
    let clock = ManualClock::starting_now();
    let a = serve("a.org", fast(None), &clock);
    let rt = runtime("sp.org", idm_config(&[("a.org", &a)]));
    let err = rt
        .spawn_hyperty(worker("sp.org").with_user(user("user://a.org/alice")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Identity(IdentityError::NotLoggedIn(_))),
        "{err}"
    );
    assert!(rt.hyperties().await.is_empty(), "unregistered again");
    // binding an assertion of someone else's hyperty is refused
    register(&a, "alice").await;
    let token = login(&a, "alice", None).await;
    let (_, v) = http(
        "POST",
        &format!("{}/idp/assertions", a.base),
        Some(&token),
        Some(json!({"hyperty": "hyperty://sp.org/someone-else"})),
    )
    .await;
    let r = rt
        .idm()
        .unwrap()
        .addr()
        .send(BindIdentity {
            hyperty: "hyperty://sp.org/mine".parse().unwrap(),
            user: user("user://a.org/alice"),
            assertion: v["assertion"].as_str().map(str::to_owned),
        })
        .await
        .unwrap();
    assert!(
        matches!(r, Err(IdentityError::IdentityMismatch(_))),
        "{r:?}"
    );
    a.server.stop(true).await;
}

#[actix::test]
async fn bindings_are_renewed_before_they_expire() {
    let clock = ManualClock::starting_now();
    let short = IdpConfig {
        assertion_lifetime_secs: 600,
        ..fast(None)
    };
    let a = serve("a.org", short, &clock);
    register(&a, "alice").await;
    let rt = Runtime::start(RuntimeConfig::new("sp.org")).unwrap();
    let idm = IdmHandle::start_with_clock(
        rt.bus().clone(),
        idm_config(&[("a.org", &a)]),
        Arc::new(clock.clone()),
    )
    .unwrap();
    idm.addr()
        .send(LoginUser {
            idp: "a.org".into(),
            username: "alice".into(),
            password: Secret::new(PASSWORD),
            device_token: None,
        })
        .await
        .unwrap()
        .unwrap();
    let h: HypertyUrl = "hyperty://sp.org/h".parse().unwrap();
    idm.hyperty_registered(&h, Some(&user("user://a.org/alice")))
        .await
        .unwrap();
    let first = idm
        .addr()
        .send(BoundIdentity { hyperty: h.clone() })
        .await
        .unwrap()
        .unwrap();

    // nothing is due yet
    assert_eq!(idm.addr().send(RefreshBindings).await.unwrap(), 0);
    // within the margin (120 s): renewed
    clock.advance(Duration::from_secs(500));
    assert_eq!(idm.addr().send(RefreshBindings).await.unwrap(), 1);
    let second = idm
        .addr()
        .send(BoundIdentity { hyperty: h.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_ne!(second.assertion, first.assertion);
    assert_eq!(second.expires, first.expires + 500);

    // the ID token itself expires: no renewal, and the expired binding is dropped
    clock.advance(Duration::from_secs(3_200));
    let r = idm
        .addr()
        .send(GenerateAssertion {
            user: user("user://a.org/alice"),
            hyperty: h.clone(),
            audience: None,
        })
        .await
        .unwrap();
    assert!(matches!(r, Err(IdentityError::NotLoggedIn(_))));
    assert_eq!(idm.addr().send(RefreshBindings).await.unwrap(), 0);
    let dropped = eventually(TIMEOUT, || {
        let idm = idm.clone();
        let h = h.clone();
        async move {
            idm.addr()
                .send(BoundIdentity { hyperty: h })
                .await
                .unwrap()
                .is_none()
        }
    })
    .await;
    assert!(dropped);
    a.server.stop(true).await;
}
