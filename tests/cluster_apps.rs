//! Webinos events and Syncher objects across nodes of one cluster behave as on
//! one node: each runtime is attached to a different node.

mod common;

use common::cluster::{clean, start_cluster, unique_prefix, REDIS};
use common::*;
use hyperty::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

const D: &str = "apps.test";

async fn runtime(url: &str) -> RuntimeHandle {
    attached_runtime(D, url).await
}

#[actix::test]
async fn a_cc_bcc_event_reaches_runtimes_on_three_nodes() {
    let prefix = unique_prefix("events");
    let nodes = start_cluster(3, D, &prefix, |_| {}).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    let runtimes = cc_bcc_event_with_delivery(D, [&urls[0], &urls[1], &urls[2]]).await;
    for rt in runtimes {
        rt.shutdown().await;
    }
    clean(REDIS, &prefix).await;
}

async fn next_change(h: &mut Observer) -> hyperty_actors::syncher::object::Change {
    loop {
        let ev = tokio::time::timeout(TIMEOUT, h.next())
            .await
            .expect("an event in time")
            .expect("stream open");
        if let SyncEvent::Changed(c) = ev {
            return c;
        }
    }
}

#[actix::test]
async fn a_syncher_object_is_invited_observed_and_deleted_across_nodes() {
    let prefix = unique_prefix("syncher");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (a, b) = (
        runtime(&nodes[0].ws_url()).await,
        runtime(&nodes[1].ws_url()).await,
    );
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let (bob, mut bob_inbox) = inbox_hyperty(&b, D, None).await;
    let mut reporter = alice
        .syncher()
        .create(
            ObjectSpec::new("chat", "comm")
                .with_data(json!({"messages": []}))
                .invite([bob.url().address().clone()]),
        )
        .await
        .unwrap();
    let url = reporter.url().clone();
    let invite = tokio::time::timeout(TIMEOUT, bob_inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let inv = Invitation::from_message(&invite).expect("an invitation");
    assert_eq!(inv.object, url);
    bob.reply(&invite, ResponseCode::Ok, Value::Null);
    loop {
        match tokio::time::timeout(TIMEOUT, reporter.next())
            .await
            .unwrap()
            .unwrap()
        {
            SyncEvent::InvitationAnswered { code, .. } => {
                assert_eq!(code, 200);
                break;
            }
            _ => continue,
        }
    }
    let mut obs = bob.syncher().subscribe(&url).await.unwrap();
    assert_eq!(obs.reporter(), *alice.url().address());
    for i in 0..20 {
        reporter.push("messages", json!({"n": i})).await.unwrap();
    }
    let child = obs.add_child(json!({"from": "bob"})).await.unwrap();
    let mut last = 0;
    while last < 21 {
        let c = next_change(&mut obs).await;
        assert_eq!(c.version, last + 1, "in order");
        last = c.version;
    }
    assert_eq!(obs.snapshot(), reporter.snapshot());
    assert_eq!(
        obs.snapshot().children[&child].reporter,
        *bob.url().address()
    );
    reporter.delete_object().await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, obs.next()).await.unwrap() {
            Some(SyncEvent::Deleted) => break,
            Some(_) => continue,
            None => panic!("stream ended before Deleted"),
        }
    }
    a.shutdown().await;
    b.shutdown().await;
    clean(REDIS, &prefix).await;
}

/// The audience a reporter's node names reaches the other nodes: a raw session
/// there that subscribes to the object's channels without being accepted hears
/// nothing, while the accepted observer on the same node hears every change.
#[actix::test]
async fn only_accepted_observers_on_other_nodes_hear_an_object() {
    let prefix = unique_prefix("audience");
    let nodes = start_cluster(2, D, &prefix, |_| {}).await;
    let (a, b) = (
        runtime(&nodes[0].ws_url()).await,
        runtime(&nodes[1].ws_url()).await,
    );
    let (alice, _) = inbox_hyperty(&a, D, None).await;
    let (bob, _) = inbox_hyperty(&b, D, None).await;
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("room", "comm").with_data(json!({"n": 0})))
        .await
        .unwrap();
    let url = reporter.url().clone();
    let mut obs = bob.syncher().subscribe(&url).await.unwrap();
    let eve_rt = format!("runtime://{D}/eve");
    let sm = format!("domain://msg-node.{D}/sm");
    let mut eve = WsClient::connect(&nodes[1].ws_url()).await;
    eve.open(&eve_rt).await;
    let r = eve
        .request(json!({"type": "subscribe", "from": eve_rt, "to": sm,
            "body": {"resources": [format!("{url}/changes"), format!("{url}/children/")]}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    for n in 1..=3 {
        reporter.set("n", n).await.unwrap();
    }
    while obs.version() < 3 {
        next_change(&mut obs).await;
    }
    assert_eq!(obs.data()["n"], 3);
    // bob's node routed each change to every admitted local subscriber at once:
    // one more answer to eve shows what she was sent
    let r = eve
        .request(json!({"type": "unsubscribe", "from": eve_rt, "to": sm,
            "body": {"resources": [format!("{url}/nothing")]}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let heard = eve.recv(Duration::ZERO).await;
    assert!(heard.is_none(), "eve heard {heard:?}");
    a.shutdown().await;
    b.shutdown().await;
    clean(REDIS, &prefix).await;
}
