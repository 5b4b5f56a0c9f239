//! The domain registry shared by two nodes of one domain through Redis: writes on
//! one are read on the other, status and expiry travel, concurrent writes keep the
//! limits, and a lost Redis answers 503 without losing an acknowledged write.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::{clean, section, unique_prefix, until_up, PrivateRedis, REDIS};
use hyperty::cluster::ClusterStore;
use hyperty::domain_registry::{
    Caller, DomainRegistry, DomainRegistryConfig, DomainRegistryError, GetByUrl,
    RegistryNotification, RegistryRequest, RuntimeDisconnected, Status, Sweep,
};
use hyperty::prelude::*;
use hyperty_actors::clock::ManualClock;
use serde_json::{json, Value};

const DOMAIN: &str = "example.com";

/// Stands in for a node's publisher.
struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<RegistryNotification> for Sink {
    type Result = ();
    fn handle(&mut self, _: RegistryNotification, _: &mut Context<Self>) {}
}

fn registry(
    url: &str,
    prefix: &str,
    config: DomainRegistryConfig,
    clock: Arc<ManualClock>,
) -> (Addr<DomainRegistry>, ClusterStore) {
    let store = ClusterStore::open(&section(url, prefix))
        .expect("settings")
        .expect("a store");
    let r = DomainRegistry::new(DOMAIN, config, Sink.start().recipient(), clock)
        .expect("registry")
        .with_cluster(Some(store.clone()))
        .start();
    (r, store)
}

/// Two nodes' registries of one domain on `url` under `prefix`, on one manual
/// clock; the first one's store too.
fn two_registries(
    url: &str,
    prefix: &str,
    config: DomainRegistryConfig,
) -> (
    Addr<DomainRegistry>,
    Addr<DomainRegistry>,
    ClusterStore,
    Arc<ManualClock>,
) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (a, store) = registry(url, prefix, config.clone(), clock.clone());
    let (b, _) = registry(url, prefix, config, clock.clone());
    (a, b, store, clock)
}

fn caller(user: &str, owns: &'static str) -> Caller {
    Caller {
        identity: Some(Arc::from(format!("user://idp.org/{user}").as_str())),
        runtime: Some(Arc::from(format!("runtime://{DOMAIN}/{user}").as_str())),
        owns: Arc::new(move |url: &str| url.starts_with(owns)),
    }
}

fn request(id: u64, kind: MessageType, body: Value) -> Message {
    let mut m = Message::new(
        kind,
        "runtime://example.com/rt/registry".parse().expect("from"),
        format!("domain://registry.{DOMAIN}")
            .parse::<Address>()
            .expect("to"),
    )
    .with_id(id);
    m.body = Body::from_map(body.as_object().cloned().expect("object")).expect("body");
    m
}

fn hyperty(url: &str, user: &str) -> Value {
    json!({"value": {
        "url": url, "user": format!("user://idp.org/{user}"),
        "descriptor": "hyperty-catalogue://catalogue.example.com/.well-known/hyperty/Chat",
        "resources": ["chat"], "dataSchemes": ["comm"],
        "runtime": format!("runtime://{DOMAIN}/{user}"), "expires": 60,
    }})
}

async fn ask(r: &Addr<DomainRegistry>, who: &Caller, m: Message) -> Message {
    r.send(RegistryRequest {
        msg: m,
        caller: who.clone(),
    })
    .await
    .expect("registry answers")
}

fn code(m: &Message) -> u16 {
    m.code().map(|c| c.as_u16()).unwrap_or(0)
}

#[actix::test]
async fn a_write_on_one_node_is_read_on_the_other() {
    let prefix = unique_prefix("registry-share");
    let (a, b, _, _) = two_registries(REDIS, &prefix, DomainRegistryConfig::default());
    let alice = caller("alice", "hyperty://example.com/a");
    let h = "hyperty://example.com/a1";

    let created = ask(
        &a,
        &alice,
        request(1, MessageType::Create, hyperty(h, "alice")),
    )
    .await;
    assert_eq!(code(&created), 200, "{:?}", created.body);

    let found = ask(
        &b,
        &alice,
        request(
            2,
            MessageType::Read,
            json!({"resource": "user://idp.org/alice"}),
        ),
    )
    .await;
    assert_eq!(code(&found), 200, "{:?}", found.body);
    assert_eq!(
        found.body.value.as_ref().expect("value")[h]["status"],
        "live"
    );

    // the holder is shared too: bob may not delete alice's entry on either node
    let bob = caller("bob", "hyperty://example.com/b");
    let refused = ask(
        &b,
        &bob,
        request(3, MessageType::Delete, json!({"resource": h})),
    )
    .await;
    assert_eq!(code(&refused), 403);

    // a status change on b is seen on a
    assert_eq!(
        b.send(RuntimeDisconnected {
            runtime: format!("runtime://{DOMAIN}/alice"),
        })
        .await
        .expect("answers"),
        1
    );
    let entry = a.send(GetByUrl { url: h.into() }).await.expect("answers");
    assert_eq!(entry.expect("found").status(), Status::Disconnected);

    // a delete on a is seen on b
    let gone = ask(
        &a,
        &alice,
        request(4, MessageType::Delete, json!({"resource": h})),
    )
    .await;
    assert_eq!(code(&gone), 200);
    let missing = b.send(GetByUrl { url: h.into() }).await.expect("answers");
    assert_eq!(missing, Err(DomainRegistryError::NotFound));
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn an_entry_expires_on_every_node_once_one_sweeps_it() {
    let prefix = unique_prefix("registry-expiry");
    let (a, b, _, clock) = two_registries(REDIS, &prefix, DomainRegistryConfig::default());
    let alice = caller("alice", "hyperty://example.com/a");
    let h = "hyperty://example.com/a2";
    let created = ask(
        &a,
        &alice,
        request(1, MessageType::Create, hyperty(h, "alice")),
    )
    .await;
    assert_eq!(code(&created), 200);

    clock.advance(Duration::from_secs(61));
    assert_eq!(b.send(Sweep).await.expect("answers"), 1);
    // a did not sweep: it learns the removal from the shared table
    assert_eq!(a.send(Sweep).await.expect("answers"), 0);
    let missing = a.send(GetByUrl { url: h.into() }).await.expect("answers");
    assert_eq!(missing, Err(DomainRegistryError::NotFound));
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn concurrent_creates_on_two_nodes_respect_the_shared_limit() {
    let prefix = unique_prefix("registry-limit");
    let config = DomainRegistryConfig {
        max_entries_per_user: 5,
        ..DomainRegistryConfig::default()
    };
    let (a, b, _, _) = two_registries(REDIS, &prefix, config);
    let alice = caller("alice", "hyperty://example.com/a");
    let mut pending = Vec::new();
    for n in 0..12u64 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let m = request(
            n + 1,
            MessageType::Create,
            hyperty(&format!("hyperty://example.com/a-{n}"), "alice"),
        );
        let who = alice.clone();
        pending.push(async move { code(&ask(&node, &who, m).await) });
    }
    let codes = futures_util::future::join_all(pending).await;
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 7, "{codes:?}");
    let all = ask(
        &b,
        &alice,
        request(
            99,
            MessageType::Read,
            json!({"resource": "user://idp.org/alice"}),
        ),
    )
    .await;
    assert_eq!(
        all.body
            .value
            .as_ref()
            .and_then(Value::as_object)
            .map(|m| m.len()),
        Some(5)
    );
    clean(REDIS, &prefix).await;
}

#[actix::test]
async fn redis_down_answers_503_and_keeps_acknowledged_writes() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let prefix = unique_prefix("registry-outage");
    let (a, b, store, _) = two_registries(&url, &prefix, DomainRegistryConfig::default());
    until_up(&store).await;
    let alice = caller("alice", "hyperty://example.com/a");
    let kept = "hyperty://example.com/a-kept";
    let created = ask(
        &a,
        &alice,
        request(1, MessageType::Create, hyperty(kept, "alice")),
    )
    .await;
    assert_eq!(code(&created), 200);

    redis.freeze();
    let late = "hyperty://example.com/a-late";
    let refused = ask(
        &a,
        &alice,
        request(2, MessageType::Create, hyperty(late, "alice")),
    )
    .await;
    assert_eq!(code(&refused), 503);
    let why = refused.body.description.clone().unwrap_or_default();
    assert!(
        why.contains("shared domain registry is unreachable"),
        "{why}"
    );
    let read = ask(
        &b,
        &alice,
        request(3, MessageType::Read, json!({"resource": kept})),
    )
    .await;
    assert_eq!(code(&read), 503);
    assert_eq!(b.send(Sweep).await.expect("answers"), 0);

    // Redis is back: the nodes reconnect by themselves and the acknowledged write
    // is there on both (the refused one may or may not have run: 503 promised
    // nothing)
    redis.thaw();
    until_up(&store).await;
    for (n, node) in [&a, &b].into_iter().enumerate() {
        let seen = ask(
            node,
            &alice,
            request(4 + n as u64, MessageType::Read, json!({"resource": kept})),
        )
        .await;
        assert_eq!(code(&seen), 200, "{:?}", seen.body);
    }
    let next = "hyperty://example.com/a-next";
    let again = ask(
        &b,
        &alice,
        request(9, MessageType::Create, hyperty(next, "alice")),
    )
    .await;
    assert_eq!(code(&again), 200, "{:?}", again.body);
    let seen = a
        .send(GetByUrl { url: next.into() })
        .await
        .expect("answers");
    assert!(seen.is_ok());
}
