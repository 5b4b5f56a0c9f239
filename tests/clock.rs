//! One clock per node and per runtime: the instance handed down at start-up is the
//! one every time rule reads. Moving a node's manual clock once moves the domain
//! registry's expiry, the identity provider's token lifetimes and the policy
//! engine's time conditions together; moving a runtime's clock moves its policy
//! time conditions and its event expiry together. Nothing sleeps.

mod events_support;

use std::sync::Arc;
use std::time::Duration;

use events_support::common::{start_node_with_clock, user_token, WsClient};
use events_support::{entity, error_code, first_report, is_delivery, QUIET, TIMEOUT};
use hyperty::config::AuthMode;
use hyperty::prelude::*;
use hyperty_actors::clock::{utc_ms, ManualClock};
use hyperty_actors::policy::Authorise;
use serde_json::{json, Value};

const D: &str = "clock.test";

/// Monday 2024-01-01, noon UTC.
fn noon() -> u64 {
    utc_ms(2024, 1, 1, 12, 0, 0)
}

/// Updates are denied from 20:00 to 07:00 (UTC); nothing else is decided.
fn night_policy() -> PolicySet {
    PolicySet::from_toml(
        r#"
        id = "office-hours"
        [[rules]]
        id = "no-updates-at-night"
        effect = "deny"
        target = { types = ["update"] }
        conditions = { time_of_day = { from = "20:00", to = "07:00" } }
        "#,
    )
    .unwrap()
}

/// The PDP's decision on an update between two hyperties of `domain`, now.
async fn decision_on_update(pdp: &PdpHandle, domain: &str) -> DecisionEffect {
    let from: Address = format!("hyperty://{domain}/a").parse().unwrap();
    let to: Address = format!("hyperty://{domain}/b").parse().unwrap();
    let message = Message::new(MessageType::Update, from, to);
    pdp.addr()
        .send(Authorise {
            message,
            direction: None,
        })
        .await
        .unwrap()
        .decision
        .effect
}

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

/// Opens a session of runtime `name` with `token`: the response.
async fn open(node: &hyperty::node::NodeHandle, name: &str, token: &str) -> (WsClient, Value) {
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(
            json!({"type": "open", "from": rt(name), "to": "mn:/session",
            "body": {"idToken": token}}),
        )
        .await;
    (c, r)
}

async fn read_entry(c: &mut WsClient, from: &str, url: &str) -> Value {
    c.request(
        json!({"type": "read", "from": from, "to": format!("domain://registry.{D}"),
        "body": {"resource": url}}),
    )
    .await
}

#[actix::test]
async fn a_nodes_registry_tokens_and_policies_follow_the_clock_it_was_started_with() {
    let clock = ManualClock::new(noon());
    let node = start_node_with_clock(D, Arc::new(clock.clone()), |c| {
        c.auth.mode = AuthMode::Required;
        c.identity.id_token_lifetime_secs = 3_600;
    });
    node.state()
        .pdp()
        .add_policies(vec![night_policy()])
        .await
        .unwrap();

    // 12:00: a token valid until 13:00, an entry for ten minutes, updates allowed
    let token = user_token(&node, "alice").await;
    let (mut a, r) = open(&node, "a", &token).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let h = a.allocate(&rt("a"), D, 1).await.remove(0);
    let r = a
        .request(
            json!({"type": "create", "from": rt("a"), "to": format!("domain://registry.{D}"),
            "body": {"value": {"user": format!("user://{D}/alice"), "url": h, "runtime": rt("a"),
                "descriptor": "hyperty-catalogue://catalogue.clock.test/.well-known/hyperty/Chat",
                "expires": 600, "status": "live"}}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let r = read_entry(&mut a, &rt("a"), &h).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(
        decision_on_update(node.state().pdp(), D).await,
        DecisionEffect::NotApplicable
    );

    // 12:11: the entry's ten minutes are over, the token's hour is not
    clock.advance(Duration::from_secs(11 * 60));
    let r = read_entry(&mut a, &rt("a"), &h).await;
    assert_eq!(r["body"]["code"], 404, "{r}");
    let (_b, r) = open(&node, "b", &token).await;
    assert_eq!(r["body"]["code"], 200, "{r}");

    // 21:11: the token has expired, and updates are denied at night
    clock.advance(Duration::from_secs(9 * 3_600));
    let (_c, r) = open(&node, "c", &token).await;
    assert_eq!(r["body"]["code"], 401, "{r}");
    let why = r["body"]["description"].as_str().unwrap_or_default();
    assert!(why.contains("expired"), "{r}");
    assert_eq!(
        decision_on_update(node.state().pdp(), D).await,
        DecisionEffect::Deny
    );
}

#[actix::test]
async fn a_runtimes_policies_and_events_follow_the_clock_of_its_config() {
    let clock = ManualClock::new(noon());
    let mut cfg = RuntimeConfig::new("a.org").with_clock(Arc::new(clock.clone()));
    cfg.events.tick_interval = None;
    cfg.policy = Some(PolicyConfig::default());
    let rt = Runtime::start(cfg).unwrap();
    let pdp = rt.pdp().unwrap();
    pdp.add_policies(vec![night_policy()]).await.unwrap();
    let alice = entity(&rt, "hyperty://a.org/alice").await;
    let mut bob = entity(&rt, "hyperty://a.org/bob").await;
    // every event of the test expires at 13:00
    let event = |payload: &str| {
        alice
            .ep
            .builder("t", alice.addr.clone())
            .to(bob.addr.clone())
            .payload(payload)
            .expires_at(utc_ms(2024, 1, 1, 13, 0, 0))
            .build()
            .unwrap()
    };

    // 12:00: the event is delivered, updates are allowed
    let (cb, mut reports) = EventCallbacks::channel(CallbackSet::delivery());
    alice
        .ep
        .dispatch(event("on time"), Some(cb), None)
        .await
        .unwrap();
    let first = first_report(&mut reports).await;
    assert!(is_delivery(&first), "{first:?}");
    assert!(bob.inbox.recv(TIMEOUT).await.is_some());
    assert_eq!(
        decision_on_update(pdp, "a.org").await,
        DecisionEffect::NotApplicable
    );

    // 21:00: the same event has expired at dispatch, and updates are denied
    clock.advance(Duration::from_secs(9 * 3_600));
    let (cb, mut reports) = EventCallbacks::channel(CallbackSet::delivery());
    alice
        .ep
        .dispatch(event("late"), Some(cb), None)
        .await
        .unwrap();
    assert_eq!(
        error_code(&first_report(&mut reports).await),
        Some(DeliveryErrorCode::Expired)
    );
    assert!(bob.inbox.recv(QUIET).await.is_none());
    assert_eq!(decision_on_update(pdp, "a.org").await, DecisionEffect::Deny);
}
