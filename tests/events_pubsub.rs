//! Publication/subscription nodes: the provider's RPC methods, policies, delivery
//! per the addressing-sensitive rule, refusal of non-publishers, and loops broken by
//! the id buffer.

mod events_support;

use std::collections::BTreeSet;

use events_support::*;
use hyperty::prelude::*;
use serde_json::{json, Value};

const PROVIDER: &str = "hyperty://a.org/pubsub";

struct World {
    p: RuntimeHandle,
    _b: RuntimeHandle,
    _nodes: Vec<hyperty::node::NodeHandle>,
    owner: Entity,
    s1: Entity,
    s2: Entity,
    outsider: Entity,
    remote_outsider: Entity,
}

/// Binds `addresses` (bare hyperty URLs of `rt`'s domain) to `rt`'s session at its
/// node, the way runtime-core makes its locally generated URLs routable.
async fn claim(rt: &RuntimeHandle, addresses: &[&str]) {
    let domain = rt.url().domain().unwrap().to_owned();
    let runtime = rt.url().address().clone();
    let mut m = Message::new(
        MessageType::Subscribe,
        runtime.clone(),
        addr(&format!("domain://msg-node.{domain}/sm")),
    );
    m.body.resources = Some(addresses.iter().map(|a| (*a).to_owned()).collect());
    m.body.source = Some(addr(&format!("{runtime}/address-allocation")));
    let r = rt.bus().post(m).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{}", r.to_json());
}

/// The provider and three entities in a.org, two entities in b.org, each domain
/// its own node, federated.
async fn world() -> World {
    let clock = ManualClock::new(T0);
    let (nodes, mut runtimes) = federated(&["a.org", "b.org"], &clock).await;
    let b = runtimes.pop().unwrap();
    let p = runtimes.pop().unwrap();
    claim(
        &p,
        &[
            PROVIDER,
            "hyperty://a.org/owner",
            "hyperty://a.org/s1",
            "hyperty://a.org/outsider",
        ],
    )
    .await;
    claim(&b, &["hyperty://b.org/s2", "hyperty://b.org/outsider"]).await;
    populate(p, b, nodes).await
}

/// The same world with the domains linked by an in-process stub, for an event the
/// provider's own runtime sends to one of its destroyed nodes: through a node that
/// event would come back to the runtime it left, which drops it as its own (no
/// `badDestination` report); without a stub for its domain the runtime knows at
/// once that nobody takes it.
async fn stub_world() -> World {
    let clock = ManualClock::new(T0);
    let p = start("a.org", &clock);
    let b = start("b.org", &clock);
    link(&p, Some("a.org"), &b, Some("b.org")).await;
    populate(p, b, Vec::new()).await
}

/// Starts the provider in `p` and the entities of both runtimes.
async fn populate(
    p: RuntimeHandle,
    b: RuntimeHandle,
    nodes: Vec<hyperty::node::NodeHandle>,
) -> World {
    PubSubProvider::start(p.events(), addr(PROVIDER))
        .await
        .unwrap();
    World {
        owner: entity(&p, "hyperty://a.org/owner").await,
        s1: entity(&p, "hyperty://a.org/s1").await,
        outsider: entity(&p, "hyperty://a.org/outsider").await,
        s2: entity(&b, "hyperty://b.org/s2").await,
        remote_outsider: entity(&b, "hyperty://b.org/outsider").await,
        p,
        _b: b,
        _nodes: nodes,
    }
}

async fn rpc(e: &Entity, method: &str, params: Value) -> Result<Value, RpcCallError> {
    e.ep.call(e.addr.clone(), addr(PROVIDER), method, Some(params))
        .await
}

fn code(r: Result<Value, RpcCallError>) -> i64 {
    match r {
        Err(RpcCallError::Rpc(e)) => e.code,
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

async fn create(owner: &Entity, name: &str, configuration: Value) -> Address {
    let r = rpc(
        owner,
        "createNode",
        json!({"name": name, "configuration": configuration}),
    )
    .await
    .unwrap();
    addr(r["node"].as_str().unwrap())
}

#[actix::test]
async fn subscribers_get_publications_per_the_addressing_sensitive_rule() {
    let mut w = world().await;
    let node = create(&w.owner, "news", json!({"title": "News"})).await;
    assert_eq!(node.as_str(), "hyperty://a.org/pubsub/news");
    assert_eq!(
        rpc(&w.s1, "requestSubscribe", json!({"node": node}))
            .await
            .unwrap(),
        json!({"granted": true})
    );
    rpc(
        &w.s2,
        "requestSubscribe",
        json!({"node": node, "types": ["headline"]}),
    )
    .await
    .unwrap();

    // addressing sensitive: forwarded one by one, id unchanged
    let headline = Event::builder("headline", w.owner.addr.clone())
        .to(node.clone())
        .payload("Rust 2.0 released")
        .build()
        .unwrap();
    w.owner
        .ep
        .dispatch(headline.clone(), None, None)
        .await
        .unwrap();
    for s in [&mut w.s1, &mut w.s2] {
        let got = s.inbox.recv(TIMEOUT).await.expect("relayed");
        assert_eq!(got.event.id(), headline.id());
        assert_eq!(got.event.source(), &w.owner.addr);
        let f = got.event.forwarding().expect("forwarded");
        assert_eq!(f.addressing().source(), &node);
        assert_eq!(
            f.addressing().to(),
            std::slice::from_ref(&s.addr),
            "no subscriber sees another"
        );
    }

    // only subscribers interested in the type
    let gossip = Event::builder("gossip", w.owner.addr.clone())
        .to(node.clone())
        .payload("psst")
        .build()
        .unwrap();
    w.owner.ep.dispatch(gossip, None, None).await.unwrap();
    assert_eq!(
        w.s1.inbox
            .recv(TIMEOUT)
            .await
            .unwrap()
            .event
            .event_type()
            .as_str(),
        "gossip"
    );
    assert!(w.s2.inbox.recv(QUIET).await.is_none());

    // addressing insensitive: re-sourced to the node, one event per subscriber, same id
    let tick = Event::builder("headline", w.owner.addr.clone())
        .to(node.clone())
        .cc(w.outsider.addr.clone())
        .payload("tick")
        .addressing_sensitive(false)
        .build()
        .unwrap();
    w.owner.ep.dispatch(tick.clone(), None, None).await.unwrap();
    assert!(
        w.outsider.inbox.recv(TIMEOUT).await.is_some(),
        "the cc recipient of the publication"
    );
    for s in [&mut w.s1, &mut w.s2] {
        let got = s.inbox.recv(TIMEOUT).await.expect("relayed");
        assert_eq!(got.event.id(), tick.id());
        assert_eq!(got.event.source(), &node);
        assert_eq!(got.event.addressing().to(), std::slice::from_ref(&s.addr));
        assert!(got.event.addressing().cc().is_empty());
        assert!(got.event.forwarding().is_none());
    }
}

#[actix::test]
async fn non_publishers_are_refused() {
    let mut w = world().await;
    let node = create(&w.owner, "board", json!({})).await;
    rpc(&w.s1, "requestSubscribe", json!({"node": node}))
        .await
        .unwrap();

    // a local non-publisher: the dispatch itself fails, nothing is delivered
    let ev = Event::builder("post", w.outsider.addr.clone())
        .to(node.clone())
        .payload("spam")
        .build()
        .unwrap();
    let err = w.outsider.ep.dispatch(ev, None, None).await.unwrap_err();
    assert_eq!(err.code(), 2, "{err}");

    // a remote non-publisher: a `refused` delivery notification
    let ev = Event::builder("post", w.remote_outsider.addr.clone())
        .to(node.clone())
        .payload("spam")
        .build()
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    w.remote_outsider
        .ep
        .dispatch(ev, Some(cb), None)
        .await
        .unwrap();
    let k = rep
        .recv_matching(TIMEOUT, |k| is_error(k) || is_delivery(k))
        .await
        .unwrap()
        .kind;
    assert_eq!(error_code(&k), Some(DeliveryErrorCode::Refused), "{k:?}");
    assert!(w.s1.inbox.recv(QUIET).await.is_none());

    // asking to publish under the default owner-only policy is refused too
    assert_eq!(
        code(rpc(&w.outsider, "requestPublish", json!({"node": node})).await),
        -32003
    );
    // until the owner opens publication
    rpc(
        &w.owner,
        "setConfiguration",
        json!({"node": node, "configuration": {"publicationPolicy": "public"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        rpc(&w.outsider, "requestPublish", json!({"node": node}))
            .await
            .unwrap(),
        json!({"granted": true})
    );
    let ev = Event::builder("post", w.outsider.addr.clone())
        .to(node.clone())
        .payload("hello")
        .build()
        .unwrap();
    w.outsider.ep.dispatch(ev, None, None).await.unwrap();
    assert_eq!(
        w.s1.inbox.recv(TIMEOUT).await.unwrap().event.payload(),
        Some("hello")
    );
    // the publisher does not get its own publication back, even as a subscriber
    rpc(&w.outsider, "requestSubscribe", json!({"node": node}))
        .await
        .unwrap();
    let ev = Event::builder("post", w.outsider.addr.clone())
        .to(node.clone())
        .payload("again")
        .build()
        .unwrap();
    w.outsider.ep.dispatch(ev, None, None).await.unwrap();
    assert_eq!(
        w.s1.inbox.recv(TIMEOUT).await.unwrap().event.payload(),
        Some("again")
    );
    assert!(w.outsider.inbox.recv(QUIET).await.is_none());
}

#[actix::test]
async fn owner_only_methods_lists_configuration_and_discovery() {
    let w = world().await;
    let node = create(
        &w.owner,
        "club",
        json!({"title": "Club", "discoveryPolicy": "hidden"}),
    )
    .await;
    let open = create(&w.owner, "open", json!({"title": "Open"})).await;
    assert_eq!(
        code(rpc(&w.owner, "createNode", json!({"name": "club"})).await),
        -32004
    );
    assert_eq!(
        code(rpc(&w.owner, "createNode", json!({"name": "bad/name"})).await),
        -32602
    );
    assert_eq!(code(rpc(&w.owner, "frobnicate", json!({})).await), -32601);
    assert_eq!(
        code(
            rpc(
                &w.s1,
                "getConfiguration",
                json!({"node": "hyperty://a.org/pubsub/none"})
            )
            .await
        ),
        -32001
    );

    // discovery honours the policy
    let titles = |v: Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        titles(rpc(&w.s1, "discover", json!({})).await.unwrap()),
        BTreeSet::from(["Open".to_owned()])
    );
    assert_eq!(
        titles(rpc(&w.owner, "discover", json!({})).await.unwrap()),
        BTreeSet::from(["Club".to_owned(), "Open".to_owned()])
    );
    assert_eq!(
        titles(
            rpc(&w.s2, "discover", json!({"title": "Open"}))
                .await
                .unwrap()
        )
        .len(),
        1
    );

    // configuration
    let defaults = rpc(&w.s1, "getDefaultConfiguration", json!({}))
        .await
        .unwrap();
    assert_eq!(defaults["publicationPolicy"], json!("owner-only"));
    let cfg = rpc(&w.s1, "getConfiguration", json!({"node": node}))
        .await
        .unwrap();
    assert_eq!(cfg["title"], json!("Club"));
    assert_eq!(cfg["discoveryPolicy"], json!("hidden"));
    assert_eq!(
        code(
            rpc(
                &w.s1,
                "setConfiguration",
                json!({"node": node, "configuration": {"title": "Mine"}})
            )
            .await
        ),
        -32003
    );

    // lists: owner only by default; owner modifies them
    rpc(
        &w.s1,
        "requestSubscribe",
        json!({"node": node, "types": ["a", "b"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        code(rpc(&w.s1, "getSubscribers", json!({"node": node})).await),
        -32003
    );
    assert_eq!(
        code(rpc(&w.s1, "getPublishers", json!({"node": node})).await),
        -32003
    );
    assert_eq!(
        code(
            rpc(
                &w.s1,
                "modifyPublishers",
                json!({"node": node, "add": ["hyperty://a.org/s1"]})
            )
            .await
        ),
        -32003
    );
    let subs = rpc(&w.owner, "getSubscribers", json!({"node": node}))
        .await
        .unwrap();
    assert_eq!(
        subs,
        json!([{"entity": "hyperty://a.org/s1", "types": ["a", "b"]}])
    );
    let pubs = rpc(
        &w.owner,
        "modifyPublishers",
        json!({"node": node, "add": ["hyperty://b.org/s2"]}),
    )
    .await
    .unwrap();
    assert_eq!(pubs, json!(["hyperty://a.org/owner", "hyperty://b.org/s2"]));
    let subs = rpc(
        &w.owner,
        "modifySubscribers",
        json!({"node": node, "add": [{"entity": "hyperty://b.org/s2", "types": null}], "remove": ["hyperty://a.org/s1"]}),
    )
    .await
    .unwrap();
    assert_eq!(subs, json!(["hyperty://b.org/s2"]));
    assert_eq!(
        rpc(&w.s2, "unsubscribe", json!({"node": node}))
            .await
            .unwrap(),
        json!({"removed": true})
    );

    // subscription policy: a whitelist
    rpc(
        &w.owner,
        "setConfiguration",
        json!({"node": open, "configuration": {"subscriptionPolicy": {"whitelist": ["hyperty://b.org/s2"]}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        code(rpc(&w.s1, "requestSubscribe", json!({"node": open})).await),
        -32003
    );
    rpc(&w.s2, "requestSubscribe", json!({"node": open}))
        .await
        .unwrap();

    // destruction: owner only; the node's address is gone afterwards
    assert_eq!(
        code(rpc(&w.s1, "destroyNode", json!({"node": node})).await),
        -32003
    );
    rpc(&w.owner, "destroyNode", json!({"node": node}))
        .await
        .unwrap();
    assert_eq!(
        code(rpc(&w.owner, "getConfiguration", json!({"node": node})).await),
        -32001
    );
    // an event from the other domain to the destroyed node: badDestination
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    let ev = Event::builder("t", w.s2.addr.clone())
        .to(node)
        .build()
        .unwrap();
    w.s2.ep.dispatch(ev, Some(cb), None).await.unwrap();
    let k = rep.recv(TIMEOUT).await.unwrap().kind;
    assert_eq!(error_code(&k), Some(DeliveryErrorCode::BadDestination));
}

#[actix::test]
async fn nodes_subscribed_in_a_loop_deliver_once_and_stop() {
    let mut w = stub_world().await;
    let n1 = create(&w.owner, "n1", json!({})).await;
    let n2 = create(&w.owner, "n2", json!({})).await;
    let n3 = create(&w.owner, "n3", json!({})).await;
    // n1 → n2 → n3 → n1, and s1 subscribed to n3
    for (from, to) in [(&n1, &n2), (&n2, &n3), (&n3, &n1)] {
        rpc(
            &w.owner,
            "modifySubscribers",
            json!({"node": from, "add": [to]}),
        )
        .await
        .unwrap();
        rpc(
            &w.owner,
            "modifyPublishers",
            json!({"node": to, "add": [from]}),
        )
        .await
        .unwrap();
    }
    rpc(&w.s1, "requestSubscribe", json!({"node": n3}))
        .await
        .unwrap();
    let ev = Event::builder("news", w.owner.addr.clone())
        .to(n1.clone())
        .payload("round")
        .build()
        .unwrap();
    w.owner.ep.dispatch(ev.clone(), None, None).await.unwrap();
    let got =
        w.s1.inbox
            .recv(TIMEOUT)
            .await
            .expect("relayed around the loop");
    assert_eq!(got.event.id(), ev.id());
    assert_eq!(got.event.sender(), &n3);
    // back at n1 the event is a duplicate: the loop ends there
    let st = stats_until(&w.p, |s| s.duplicates >= 1).await;
    assert_eq!(st.duplicates, 1);
    assert!(w.s1.inbox.recv(QUIET).await.is_none());
    assert_eq!(
        w.p.events().stats().await.duplicates,
        1,
        "no further rounds"
    );
}

#[actix::test]
async fn a_local_event_to_a_destroyed_node_is_a_bad_destination() {
    let w = stub_world().await;
    let node = create(&w.owner, "gone", json!({})).await;
    rpc(&w.owner, "destroyNode", json!({"node": node}))
        .await
        .unwrap();
    let (cb, mut rep) = EventCallbacks::channel(CallbackSet::delivery());
    let ev = Event::builder("t", w.owner.addr.clone())
        .to(node)
        .build()
        .unwrap();
    w.owner.ep.dispatch(ev, Some(cb), None).await.unwrap();
    let k = rep.recv(TIMEOUT).await.unwrap().kind;
    assert_eq!(error_code(&k), Some(DeliveryErrorCode::BadDestination));
}
