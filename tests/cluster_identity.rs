//! The identity provider's state shared by the nodes of one domain through Redis:
//! one key set for the domain, so a token issued by one node verifies on another
//! and the JWKS are the same; no signing before the set is loaded (503); users,
//! devices and revocations seen by every node; 503 while Redis is away.

mod common;

use std::time::Duration;

use common::cluster::{clean, section, unique_prefix, until_up, PrivateRedis, REDIS};
use hyperty::cluster::ClusterStore;
use hyperty::identity::{
    DeleteDevice, DeviceToken, IdentityError, IdentityProvider, IdpConfig, Jwks, KdfParams, Login,
    Profile, RegisterDevice, RegisterUser, Secret, TokenVerifier,
};
use hyperty::prelude::*;

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
