//! The H2H call of seed 000 ("Alice invites Bob") through a real node, step by
//! step: offer object and invitation, acknowledgement, observation, answer
//! object, ICE candidates as children, ringing → connected → ended, hang-up.

mod common;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::prelude::*;
use hyperty_actors::syncher::object::Op;
use serde_json::{json, Value};

const D: &str = "call.test";
const ALPHA: &str = "alpha.test";
const BETA: &str = "beta.test";

async fn event(h: &mut Observer) -> SyncEvent {
    loop {
        match tokio::time::timeout(TIMEOUT, h.next())
            .await
            .expect("in time")
        {
            Some(SyncEvent::Subscribed { .. } | SyncEvent::InvitationAnswered { .. }) => continue,
            Some(ev) => return ev,
            None => panic!("stream ended"),
        }
    }
}

fn status_change(ev: &SyncEvent) -> Option<String> {
    match ev.attribute() {
        Some(("status", Some(v))) => v.as_str().map(str::to_owned),
        _ => None,
    }
}

async fn answered(r: &mut Reporter) -> (Address, u16) {
    loop {
        match tokio::time::timeout(TIMEOUT, r.next())
            .await
            .expect("in time")
        {
            Some(SyncEvent::InvitationAnswered { invitee, code }) => return (invitee, code),
            Some(_) => continue,
            None => panic!("stream ended"),
        }
    }
}

fn connection(owner: &HypertyContext, peer: &HypertyContext, kind: &str, sdp: &str) -> ObjectSpec {
    ObjectSpec::new("call", "connection")
        .with_schema(json!({
            "properties": {"scheme": {"const": "connection"}, "status": {"enum": ["ringing", "connected", "ended"]}},
            "required": ["status", "connectionDescription"]
        }))
        .with_data(json!({"owner": owner.url().as_str(), "status": "ringing",
            "connectionDescription": {"type": kind, "sdp": sdp}}))
        .invite([peer.url().address().clone()])
}

#[actix::test]
async fn alice_invites_bob() {
    let node = start_node(D, |_| {});
    let ra = runtime(D, &node).await;
    let rb = runtime(D, &node).await;
    call(&ra, &rb).await;
    ra.shutdown().await;
    rb.shutdown().await;
    node.stop().await;
}

/// The same call between two domains, each with its own node: the objects,
/// invitations, subscriptions and changes cross the peer link.
#[actix::test]
async fn alice_in_alpha_invites_bob_in_beta() {
    let nodes = start_domains(&[ALPHA, BETA], |_, _| {});
    let ra = runtime(ALPHA, &nodes[0]).await;
    let rb = runtime(BETA, &nodes[1]).await;
    call(&ra, &rb).await;
    ra.shutdown().await;
    rb.shutdown().await;
    for n in &nodes {
        n.stop().await;
    }
}

async fn runtime(domain: &str, node: &hyperty::node::NodeHandle) -> RuntimeHandle {
    let rt = Runtime::start(RuntimeConfig::new(domain)).unwrap();
    rt.attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    rt
}

/// The whole call between a hyperty of `ra` (Alice) and one of `rb` (Bob),
/// checked step by step.
async fn call(ra: &RuntimeHandle, rb: &RuntimeHandle) {
    let (da, db) = (
        ra.url().domain().unwrap().to_owned(),
        rb.url().domain().unwrap().to_owned(),
    );
    let (alice, mut alice_in) = inbox_hyperty(ra, &da, None).await;
    let (bob, mut bob_in) = inbox_hyperty(rb, &db, None).await;

    // Alice reports her offer and invites Bob
    let mut alice_conn = alice
        .syncher()
        .create(connection(&alice, &bob, "offer", "v=0 alice"))
        .await
        .unwrap();
    assert_eq!(alice_conn.url().scheme(), "connection");
    // Bob's runtime is notified; his hyperty acknowledges
    let invite = tokio::time::timeout(TIMEOUT, bob_in.recv())
        .await
        .unwrap()
        .unwrap();
    let inv = Invitation::from_message(&invite).expect("invitation");
    assert_eq!(&inv.object, alice_conn.url());
    assert_eq!(inv.value["scheme"], "connection");
    bob.reply(&invite, ResponseCode::Ok, Value::Null);
    assert_eq!(
        answered(&mut alice_conn).await,
        (bob.url().address().clone(), 200)
    );
    // Bob observes the offer
    let mut bob_view = bob.syncher().subscribe(&inv.object).await.unwrap();
    assert_eq!(
        bob_view.data()["connectionDescription"],
        json!({"type": "offer", "sdp": "v=0 alice"})
    );
    assert_eq!(bob_view.data()["status"], "ringing");
    // Bob answers with his own object and invites Alice
    let mut bob_conn = bob
        .syncher()
        .create(connection(&bob, &alice, "answer", "v=0 bob"))
        .await
        .unwrap();
    let invite = tokio::time::timeout(TIMEOUT, alice_in.recv())
        .await
        .unwrap()
        .unwrap();
    let inv = Invitation::from_message(&invite).expect("invitation");
    assert_eq!(&inv.object, bob_conn.url());
    alice.reply(&invite, ResponseCode::Ok, Value::Null);
    assert_eq!(answered(&mut bob_conn).await.1, 200);
    let mut alice_view = alice.syncher().subscribe(&inv.object).await.unwrap();
    assert_eq!(alice_view.data()["connectionDescription"]["type"], "answer");

    // ICE candidates as children, both ways
    let ca = alice_conn
        .add_child(json!({"candidate": "a1"}))
        .await
        .unwrap();
    let cb = bob_conn
        .add_child(json!({"candidate": "b1"}))
        .await
        .unwrap();
    for (view, id, from) in [(&mut bob_view, &ca, &alice), (&mut alice_view, &cb, &bob)] {
        let ev = event(view).await;
        let c = ev.change().expect("a change");
        assert_eq!(c.child.as_deref(), Some(id.as_str()));
        assert!(matches!(c.op, Op::CreateChild { .. }));
        assert_eq!(c.source, *from.url().address());
        assert_eq!(view.snapshot().children[id].reporter, *from.url().address());
    }

    // ringing → connected → ended, seen in order on both sides
    for status in ["connected", "ended"] {
        alice_conn.set("status", status).await.unwrap();
        bob_conn.set("status", status).await.unwrap();
        assert_eq!(
            status_change(&event(&mut bob_view).await).as_deref(),
            Some(status)
        );
        assert_eq!(
            status_change(&event(&mut alice_view).await).as_deref(),
            Some(status)
        );
    }
    // both final states, equal on each side
    assert_eq!(bob_view.snapshot(), alice_conn.snapshot());
    assert_eq!(alice_view.snapshot(), bob_conn.snapshot());
    assert_eq!((bob_view.version(), alice_view.version()), (3, 3));
    assert_eq!(bob_view.data()["status"], "ended");
    assert_eq!(alice_view.data()["status"], "ended");

    // hang-up deletes both objects; each observer is told
    let (a_url, b_url) = (alice_conn.url().clone(), bob_conn.url().clone());
    alice_conn.delete_object().await.unwrap();
    assert_eq!(event(&mut bob_view).await, SyncEvent::Deleted);
    bob_conn.delete_object().await.unwrap();
    assert_eq!(event(&mut alice_view).await, SyncEvent::Deleted);
    for (ctx, url) in [(&alice, &b_url), (&bob, &a_url)] {
        let e = ctx.syncher().read(url).await.unwrap_err();
        assert!(
            matches!(e.code().as_u16(), 403 | 404),
            "{e:?} reading {url} from {}",
            ctx.url()
        );
    }
    for ctx in [&alice, &bob] {
        assert!(
            eventually(TIMEOUT, || async {
                ctx.syncher()
                    .discover(&["connection"], &[], None)
                    .await
                    .unwrap()
                    .is_empty()
            })
            .await,
            "no connection object left in {}'s registry",
            ctx.url()
        );
    }
}
