//! webinos events in one runtime, step by step: an RPC call, an event with cc and
//! bcc recipients and delivery notifications, and a publish/subscribe node.
//!
//! `cargo run --example events`

use std::time::Duration;

use hyperty::prelude::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

/// An application owning one entity, with a listener on it.
struct App {
    addr: Address,
    ep: EventEndpoint,
    inbox: InboxReceiver,
}

async fn app(
    events: &EventsHandle,
    url: &str,
    owner: &str,
) -> Result<App, Box<dyn std::error::Error>> {
    let addr: Address = url.parse()?;
    let ep = events.endpoint(owner.parse()?);
    ep.register_entity(addr.clone()).await?;
    let (listener, inbox) = EventInbox::start();
    ep.add_listener(ListenerFilter::any().destination(addr.clone()), listener)
        .await?;
    Ok(App { addr, ep, inbox })
}

fn show(who: &str, got: &IncomingEvent) {
    let e = &got.event;
    let list = |l: &[Address]| l.iter().map(Address::as_str).collect::<Vec<_>>().join(", ");
    println!(
        "    {who:<6} got {} {:?}  to=[{}] cc=[{}] bcc=[{}]{}",
        e.event_type(),
        e.payload().unwrap_or_default(),
        list(e.addressing().to()),
        list(e.addressing().cc()),
        list(e.addressing().bcc()),
        e.forwarding()
            .map(|f| format!("  (forwarded by {})", f.addressing().source()))
            .unwrap_or_default(),
    );
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::start(RuntimeConfig::new("example.com"))?;
    let events = runtime.events().clone();
    println!(
        "runtime {} — event dispatcher at {}",
        runtime.url(),
        events.address()
    );

    let alice = app(
        &events,
        "hyperty://example.com/alice",
        "hyperty://example.com/alice",
    )
    .await?;
    let mut bob = app(
        &events,
        "hyperty://example.com/bob",
        "hyperty://example.com/bob",
    )
    .await?;
    let mut carol = app(
        &events,
        "hyperty://example.com/carol",
        "hyperty://example.com/carol",
    )
    .await?;
    // dave is a second entity of carol's application: carol's copy will show him in bcc
    let mut dave = app(
        &events,
        "hyperty://example.com/carol/dave",
        "hyperty://example.com/carol",
    )
    .await?;

    // 1. RPC -------------------------------------------------------------------
    println!("\n1. RPC: bob exposes `add`, alice calls it");
    let methods = RpcMethods::new().method("add", |call| {
        let sum: i64 = call
            .params
            .as_ref()
            .and_then(|p| p.as_array())
            .ok_or_else(|| RpcError::invalid_params("[a, b] expected"))?
            .iter()
            .filter_map(|v| v.as_i64())
            .sum();
        Ok(json!(sum))
    });
    bob.ep
        .serve_rpc(bob.addr.clone(), methods.start_handler())
        .await?;
    let result = alice
        .ep
        .call(
            alice.addr.clone(),
            bob.addr.clone(),
            "add",
            Some(json!([2, 3])),
        )
        .await?;
    println!("    alice → bob  JSONRPC20Request add([2, 3])");
    println!("    bob → alice  JSONRPC20Response {result}");
    let err = alice
        .ep
        .call(
            alice.addr.clone(),
            bob.addr.clone(),
            "divide",
            Some(json!([1, 0])),
        )
        .await
        .unwrap_err();
    println!("    alice → bob  divide(...) → {err}");

    // 2. cc, bcc and delivery notifications --------------------------------------
    println!("\n2. alice → to: bob, cc: carol, bcc: dave, with callbacks");
    let event = alice
        .ep
        .builder("chatMessage", alice.addr.clone())
        .to(bob.addr.clone())
        .cc(carol.addr.clone())
        .bcc(dave.addr.clone())
        .payload("Lunch at noon?")
        .build()?;
    println!("    event {}", event.to_json());
    let (callbacks, mut reports) = EventCallbacks::channel(CallbackSet::all());
    alice
        .ep
        .dispatch(event, Some(callbacks), Some(Duration::from_secs(60)))
        .await?;
    for (who, a) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("dave", &mut dave),
    ] {
        if let Some(got) = a.inbox.recv(WAIT).await {
            show(who, &got);
        }
    }
    // three onSending and one onDelivery: only the primary recipient reports delivery
    for _ in 0..4 {
        if let Some(r) = reports.recv(WAIT).await {
            println!("    callback {:?}", r.kind);
        }
    }

    // 3. a publish/subscribe node --------------------------------------------------
    println!("\n3. pub/sub: alice creates a node, bob subscribes, alice publishes");
    let provider: Address = "hyperty://example.com/pubsub".parse()?;
    PubSubProvider::start(&events, provider.clone()).await?;
    let created = alice
        .ep
        .call(
            alice.addr.clone(),
            provider.clone(),
            "createNode",
            Some(json!({"name": "lunch", "configuration": {"title": "Lunch plans"}})),
        )
        .await?;
    let node: Address = created["node"].as_str().unwrap_or_default().parse()?;
    println!("    node {node} created, owner alice");
    bob.ep
        .call(
            bob.addr.clone(),
            provider.clone(),
            "requestSubscribe",
            Some(json!({"node": node})),
        )
        .await?;
    println!("    bob subscribed");
    let post = alice
        .ep
        .builder("lunchPlan", alice.addr.clone())
        .to(node.clone())
        .payload("Pizza!")
        .build()?;
    alice.ep.dispatch(post.clone(), None, None).await?;
    if let Some(got) = bob.inbox.recv(WAIT).await {
        show("bob", &got);
        println!("    same id as published: {}", got.event.id() == post.id());
    }
    let intruder = carol
        .ep
        .builder("lunchPlan", carol.addr.clone())
        .to(node)
        .payload("Salad!")
        .build()?;
    match carol.ep.dispatch(intruder, None, None).await {
        Err(e) => println!("    carol (not a publisher) → {e} (code {})", e.code()),
        Ok(()) => println!("    carol published?!"),
    }

    runtime.shutdown().await;
    Ok(())
}
