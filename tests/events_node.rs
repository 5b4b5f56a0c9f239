//! webinos events across runtimes through a real messaging node and the WebSocket
//! bridge: one transmission per runtime, bcc narrowed by the node and stripped per
//! owner by the receiving dispatcher, delivery notifications back to the sender.

mod common;

use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;

const D: &str = "ev.test";

async fn runtime(url: &str) -> RuntimeHandle {
    let rt = Runtime::start(RuntimeConfig::new(D)).unwrap();
    rt.attach_node(BridgeConfig::new(url)).await.unwrap();
    rt
}

#[actix::test]
async fn cc_bcc_event_through_the_node_with_delivery_notifications() {
    let node = start_node(D, |_| {});
    let (ra, rb, rc) = (
        runtime(&node.ws_url()).await,
        runtime(&node.ws_url()).await,
        runtime(&node.ws_url()).await,
    );
    let alice = party(&ra, D).await;
    let mut bob = party(&rb, D).await;
    let mut carol = party(&rc, D).await;
    let mut dave = party(&rc, D).await;

    let event = alice
        .ep
        .builder("chat", alice.addr.clone())
        .to(bob.addr.clone())
        .cc(carol.addr.clone())
        .bcc(dave.addr.clone())
        .payload("lunch?")
        .build()
        .unwrap();
    let id = event.id();
    let (callbacks, mut reports) = EventCallbacks::channel(CallbackSet::all());
    alice
        .ep
        .dispatch(event, Some(callbacks), Some(Duration::from_secs(30)))
        .await
        .unwrap();

    let b = bob.inbox.recv(TIMEOUT).await.expect("bob got it");
    assert_eq!(b.event.id(), id, "same id end to end");
    assert!(
        b.event.addressing().bcc().is_empty(),
        "bob never sees the bcc"
    );
    let c = carol.inbox.recv(TIMEOUT).await.expect("carol got it");
    assert!(
        c.event.addressing().bcc().is_empty(),
        "carol is not dave's owner"
    );
    let d = dave.inbox.recv(TIMEOUT).await.expect("dave got it");
    assert_eq!(d.event.addressing().bcc(), std::slice::from_ref(&dave.addr));
    assert_eq!(d.event.payload(), Some("lunch?"));

    // the primary recipient's delivery notification comes back across the node
    let mut delivered = false;
    while let Some(r) = reports.recv(TIMEOUT).await {
        if let ReportKind::Delivery {
            recipient,
            duplicate,
        } = &r.kind
        {
            assert_eq!(recipient, &bob.addr);
            assert!(!duplicate);
            delivered = true;
            break;
        }
    }
    assert!(delivered, "onDelivery for bob");
    // exactly one copy each
    assert!(bob.inbox.recv(Duration::from_millis(50)).await.is_none());
    assert!(dave.inbox.recv(Duration::from_millis(10)).await.is_none());
}
