//! Who may speak as which address at the node, attacked over real WebSockets:
//! subscribing grants nothing, runtime URLs need a path and the node's domain,
//! re-open cannot leak or steal sessions, client identities are stripped, dot
//! segments are refused, runtime tokens are bound to their identity and never
//! logged, tokens expire and renew, session events are for managers only, stub URLs,
//! replacement on re-connect, string ids, object schemes, and re-claims after a
//! restart only for the identity that held the address.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::config::AuthMode;
use hyperty::prelude::*;
use serde_json::{json, Value};

const D: &str = "rights.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

fn alloc() -> String {
    format!("domain://msg-node.{D}/address-allocation")
}

fn sm() -> String {
    format!("domain://msg-node.{D}/sm")
}

async fn client(node: &hyperty::node::NodeHandle, name: &str) -> (WsClient, String) {
    let mut c = WsClient::connect(&node.ws_url()).await;
    let token = c.open(&rt(name)).await;
    (c, token)
}

async fn open_as(
    node: &hyperty::node::NodeHandle,
    runtime: &str,
    token: &str,
) -> (WsClient, Value) {
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(json!({"type": "open", "from": runtime, "to": "mn:/session", "body": {"idToken": token}}))
        .await;
    (c, r)
}

/// Everything the node logs at any level, for the whole test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("hyperty=trace,hyperty_actors=trace")
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .try_init()
            .expect("the only subscriber of this binary");
        logs
    })
    .clone()
}

#[actix::test]
async fn subscribing_never_grants_sending_rights() {
    let node = start_node(D, |c| c.session.grace_period_ms = 100);
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let unheld = format!("hyperty://{D}/unheld");
    let foreign = "hyperty://other.test/h1".to_owned();
    // subscribing to, or naming as source, an unheld address of any domain
    for target in [&unheld, &foreign] {
        let r = a
            .request(json!({"type": "subscribe", "from": rt("a"), "to": sm(),
                "body": {"resources": [target], "source": target}}))
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
        let r = a
            .request(json!({"type": "update", "from": target, "to": rt("b")}))
            .await;
        assert_eq!(r["body"]["code"], 403, "{target}: {r}");
    }
    assert!(b.recv(Duration::from_millis(50)).await.is_none());
    // ...but it is routable to the subscriber
    b.send(json!({"id": 5, "type": "update", "from": rt("b"), "to": unheld}))
        .await;
    assert_eq!(a.expect().await["id"], 5);

    // a victim's address after its grace period: neither /sm form takes it
    let (mut v, _) = client(&node, "victim").await;
    let hv = v.allocate(&rt("victim"), D, 1).await.remove(0);
    v.drop_socket().await;
    assert!(eventually(TIMEOUT, || async { health(&node).await["sessions"] == 2 }).await);
    let r = a
        .request(json!({"type": "subscribe", "from": rt("a"), "to": sm(),
            "body": {"resources": [hv], "source": format!("{}/address-allocation", rt("a"))}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": alloc(), "body": {"value": {"reclaim": [hv]}}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let r = a
        .request(json!({"type": "update", "from": hv, "to": rt("b")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    // the allocation form only counts with the session's own runtime URL as source
    let local = format!("hyperty://{D}/local-1");
    let r = a
        .request(json!({"type": "subscribe", "from": rt("a"), "to": sm(),
            "body": {"resources": [local], "source": format!("{}/address-allocation", rt("b"))}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let r = a
        .request(json!({"type": "update", "from": local, "to": rt("b")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    assert!(b.recv(Duration::from_millis(50)).await.is_none());
}

#[actix::test]
async fn open_needs_a_runtime_url_with_a_path_in_the_nodes_domain() {
    let node = start_node(D, |_| {});
    for (from, code) in [
        (format!("runtime://{D}"), 400),
        (format!("runtime://{D}/"), 400),
        (format!("hyperty-runtime://{D}/"), 400),
        ("runtime://other.test/rt".to_owned(), 403),
        (format!("runtime://{D}.evil/rt"), 403),
    ] {
        let mut c = WsClient::connect(&node.ws_url()).await;
        let r = c
            .request(json!({"type": "open", "from": from, "to": "mn:/session"}))
            .await;
        assert_eq!(r["body"]["code"], code, "{from}: {r}");
        // and nothing can be sent afterwards
        let r = c
            .request(json!({"type": "update", "from": from, "to": rt("x")}))
            .await;
        assert_eq!(r["body"]["code"], 403, "{from}");
    }
    // nor can a runtime URL under another session's one be opened
    let (mut a, _) = client(&node, "a").await;
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(json!({"type": "open", "from": format!("{}/inner", rt("a")), "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let (mut b, _) = client(&node, "b").await;
    b.send(json!({"id": 3, "type": "update", "from": rt("b"), "to": format!("{}/inner", rt("a"))}))
        .await;
    assert_eq!(a.expect().await["id"], 3);
}

#[actix::test]
async fn reopen_on_a_connection_with_a_session_is_refused_and_leaks_nothing() {
    let node = start_node(D, |c| c.session.grace_period_ms = 60_000);
    let (a, token_a) = client(&node, "a").await;
    a.drop_socket().await;
    let (mut c, token_c) = client(&node, "c").await;
    assert!(eventually(TIMEOUT, || async { health(&node).await["live"] == 1 }).await);
    for token in [&token_a, &token_c] {
        let r = c
            .request(json!({"type": "re-open", "from": rt("a"), "to": "mn:/session", "body": {"runtimeToken": token}}))
            .await;
        assert_eq!(r["body"]["code"], 400, "{r}");
    }
    let r = c
        .request(json!({"type": "open", "from": rt("other"), "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 400);
    // C still is C, and A is still A's to resume
    let (mut b, _) = client(&node, "b").await;
    b.send(json!({"id": 7, "type": "update", "from": rt("b"), "to": rt("c")}))
        .await;
    assert_eq!(c.expect().await["id"], 7);
    let mut a2 = WsClient::connect(&node.ws_url()).await;
    let r = a2
        .request(json!({"type": "re-open", "from": rt("a"), "to": "mn:/session", "body": {"runtimeToken": token_a}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    // closing frees exactly what was opened
    for (mut s, name) in [(c, "c"), (a2, "a"), (b, "b")] {
        let r = s
            .request(json!({"type": "close", "from": rt(name), "to": "mn:/session"}))
            .await;
        assert_eq!(r["body"]["code"], 200);
    }
    assert!(eventually(TIMEOUT, || async { health(&node).await["sessions"] == 0 }).await);
}

#[actix::test]
async fn client_asserted_identities_never_reach_the_recipient() {
    // anonymous sessions: no assertedIdentity at all
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let forged = format!("user://{D}/mallory");
    for frame in [
        json!({"id": 1, "type": "update", "from": rt("a"), "to": rt("b"), "body": {"assertedIdentity": forged, "value": 1}})
            .to_string(),
        format!(
            r#"{{"id":2,"type":"update","from":"{}","to":"{}","body":{{"value":1,"\u0061ssertedIdentity":"{forged}","assertedIdentity":"x"}}}}"#,
            rt("a"),
            rt("b")
        ),
    ] {
        a.send_text(&frame).await;
        let got = b.recv_text(TIMEOUT).await.unwrap();
        assert!(!got.contains("mallory") && !got.contains("\\u0061"), "{got}");
        let v: Value = serde_json::from_str(&got).unwrap();
        assert!(v["body"].get("assertedIdentity").is_none(), "{got}");
        assert_eq!(v["body"]["value"], 1);
    }
    // authenticated: only the node's stamp remains
    let node = start_node(D, |c| c.auth.mode = AuthMode::Required);
    let alice = user_token(&node, "alice").await;
    let bob = user_token(&node, "bob").await;
    let (mut a, r) = open_as(&node, &rt("a"), &alice).await;
    assert_eq!(r["body"]["code"], 200);
    let (mut b, r) = open_as(&node, &rt("b"), &bob).await;
    assert_eq!(r["body"]["code"], 200);
    a.send(
        json!({"id": 3, "type": "update", "from": rt("a"), "to": rt("b"),
        "body": {"assertedIdentity": forged, "value": 1}}),
    )
    .await;
    let got = b.recv_text(TIMEOUT).await.unwrap();
    assert_eq!(got.matches("assertedIdentity").count(), 1, "{got}");
    assert!(!got.contains("mallory"), "{got}");
    let v: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["body"]["assertedIdentity"], format!("user://{D}/alice"));
}

#[actix::test]
async fn dot_segments_are_refused() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    for (from, to) in [
        (format!("{}/../b", rt("a")), rt("b")),
        (format!("{}/%2e%2e/b", rt("a")), rt("b")),
        (rt("a"), format!("{}/x/../../b", rt("a"))),
        (rt("a"), format!("hyperty://{D}/./x")),
    ] {
        let r = a
            .request(json!({"type": "update", "from": from, "to": to}))
            .await;
        assert_eq!(r["body"]["code"], 400, "{from} → {to}: {r}");
    }
    let r = a
        .request(json!({"type": "subscribe", "from": rt("a"), "to": sm(), "body": {"resources": [format!("{}/..", rt("b"))]}}))
        .await;
    assert_eq!(r["body"]["code"], 400);
    let mut c = WsClient::connect(&node.ws_url()).await;
    let r = c
        .request(json!({"type": "open", "from": format!("{}/..", rt("b")), "to": "mn:/session"}))
        .await;
    assert_eq!(r["body"]["code"], 400);
    assert!(b.recv(Duration::from_millis(50)).await.is_none());
}

#[actix::test]
async fn runtime_tokens_are_bound_to_their_identity_and_never_logged() {
    let logs = captured_logs();
    let node = start_node(D, |c| {
        c.auth.mode = AuthMode::Required;
        c.session.grace_period_ms = 60_000;
    });
    let alice = user_token(&node, "alice").await;
    let mallory = user_token(&node, "mallory").await;
    let (mut a, r) = open_as(&node, &rt("a"), &alice).await;
    assert_eq!(r["body"]["code"], 200);
    let token = r["body"]["runtimeToken"].as_str().unwrap().to_owned();
    a.allocate(&rt("a"), D, 2).await;
    a.subscribe(&rt("a"), D, &[&format!("comm://{D}/x/changes")])
        .await;
    a.drop_socket().await;
    assert!(eventually(TIMEOUT, || async { health(&node).await["live"] == 0 }).await);
    // the token alone, or with another identity's credentials, resumes nothing
    for (from, body) in [
        (rt("a"), json!({"runtimeToken": token})),
        (rt("a"), json!({"runtimeToken": token, "idToken": mallory})),
        (format!("{}/{token}", rt("a")), json!({"idToken": mallory})),
    ] {
        let mut m = WsClient::connect(&node.ws_url()).await;
        let r = m
            .request(json!({"type": "re-open", "from": from, "to": "mn:/session", "body": body}))
            .await;
        assert_eq!(r["body"]["code"], 401, "{body}: {r}");
    }
    let mut a2 = WsClient::connect(&node.ws_url()).await;
    let r = a2
        .request(
            json!({"type": "re-open", "from": rt("a"), "to": "mn:/session",
            "body": {"runtimeToken": token, "idToken": user_token_again(&node, "alice").await}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    a2.request(json!({"type": "close", "from": rt("a"), "to": "mn:/session"}))
        .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("node.open"), "the node's spans are captured");
    assert!(!text.contains(&token), "the runtime token was logged");
}

/// A fresh ID token of an already registered `user`.
async fn user_token_again(node: &hyperty::node::NodeHandle, user: &str) -> String {
    use hyperty::identity::{Login, Secret};
    node.state()
        .idp()
        .send(Login {
            username: user.to_owned(),
            password: Secret::new("correct horse battery"),
            device: None,
            source: None,
        })
        .await
        .unwrap()
        .unwrap()
        .token
        .expose()
        .to_owned()
}

#[actix::test]
async fn expired_sessions_are_closed_with_401_unless_renewed() {
    let node = start_node(D, |c| {
        c.auth.mode = AuthMode::Required;
        c.identity.id_token_lifetime_secs = 2;
        c.auth.expiry_grace_ms = 300;
    });
    let t_a = user_token(&node, "ann").await;
    let t_b = user_token(&node, "ben").await;
    let (mut a, r) = open_as(&node, &rt("a"), &t_a).await;
    assert_eq!(r["body"]["code"], 200);
    let (mut b, r) = open_as(&node, &rt("b"), &t_b).await;
    assert_eq!(r["body"]["code"], 200);
    // renewing with someone else's token, or garbage, is refused
    let r = b
        .request(json!({"type": "update", "from": rt("b"), "to": "mn:/session", "body": {"idToken": t_a}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let r = b
        .request(json!({"type": "update", "from": rt("b"), "to": "mn:/session", "body": {"idToken": "x.y.z"}}))
        .await;
    assert_eq!(r["body"]["code"], 401, "{r}");
    // B renews with a later token of its own
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = user_token_again(&node, "ben").await;
    let r = b
        .request(json!({"type": "update", "from": rt("b"), "to": "mn:/session", "body": {"idToken": fresh}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    // A does not: a close with 401, and its socket closes
    let close = a.expect().await;
    assert_eq!(close["type"], "close", "{close}");
    assert_eq!(close["body"]["code"], 401);
    assert!(a.recv(TIMEOUT).await.is_none());
    assert!(
        a.closed.as_deref().unwrap_or_default().contains("401"),
        "{:?}",
        a.closed
    );
    // B lives on past A's end
    b.send(json!({"id": 9, "type": "update", "from": rt("b"), "to": format!("{}/self", rt("b"))}))
        .await;
    assert_eq!(b.expect().await["id"], 9);
}

#[actix::test]
async fn session_events_are_only_for_policy_managers() {
    let node = start_node(D, |c| c.policy.managers = vec![format!("user://{D}/ops")]);
    let events = format!("domain://msg-node.{D}/session-events");
    let (mut anon, _) = client(&node, "anon").await;
    let r = anon.subscribe(&rt("anon"), D, &[&events]).await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let eve = user_token(&node, "eve").await;
    let (mut e, _) = open_as(&node, &rt("eve"), &eve).await;
    let r = e.subscribe(&rt("eve"), D, &[&events]).await;
    assert_eq!(r["body"]["code"], 403);
    let ops = user_token(&node, "ops").await;
    let (mut o, _) = open_as(&node, &rt("ops"), &ops).await;
    let r = o.subscribe(&rt("ops"), D, &[&events]).await;
    assert_eq!(r["body"]["code"], 200);
    let (_c, _) = client(&node, "newcomer").await;
    assert_eq!(o.expect().await["body"]["value"]["runtime"], rt("newcomer"));
    assert!(anon.recv(Duration::from_millis(50)).await.is_none());
    assert!(e.recv(Duration::from_millis(50)).await.is_none());
}

#[actix::test]
async fn stub_urls_belong_to_the_session_that_speaks_through_them() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let stub = format!("hyperty-runtime://{D}/protostub/1");
    // the reference protostub allocates from its own URL: bound at first use
    let r = a
        .request(json!({"type": "create", "from": format!("{stub}/registry"), "to": alloc(), "body": {"value": {"number": 1}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["to"], format!("{stub}/registry"));
    // it is A's now: routed to A, and nobody else may speak from it
    b.send(json!({"id": 4, "type": "update", "from": rt("b"), "to": format!("{stub}/x")}))
        .await;
    assert_eq!(a.expect().await["id"], 4);
    for from in [stub.clone(), format!("{stub}/y")] {
        let r = b
            .request(json!({"type": "update", "from": from, "to": rt("a")}))
            .await;
        assert_eq!(r["body"]["code"], 403, "{from}");
    }
    // another domain's stub URL is nobody's
    let r = b
        .request(json!({"type": "update", "from": "hyperty-runtime://other.test/protostub/1", "to": rt("a")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    // announced at open
    let mut c = WsClient::connect(&node.ws_url()).await;
    let announced = format!("hyperty-runtime://{D}/protostub/9");
    let r = c
        .request(json!({"type": "open", "from": rt("c"), "to": "mn:/session", "body": {"stubURL": announced}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    b.send(json!({"id": 5, "type": "update", "from": rt("b"), "to": announced}))
        .await;
    assert_eq!(c.expect().await["id"], 5);
    let mut d = WsClient::connect(&node.ws_url()).await;
    let r = d
        .request(json!({"type": "open", "from": rt("d"), "to": "mn:/session", "body": {"stubURL": stub}}))
        .await;
    assert_eq!(
        r["body"]["code"], 403,
        "a held stub URL cannot be announced"
    );
    // it lives as long as the session
    a.request(json!({"type": "close", "from": rt("a"), "to": "mn:/session"}))
        .await;
    b.send(json!({"id": 8, "type": "update", "from": format!("{stub}/registry"), "to": rt("c")}))
        .await;
    assert_eq!(
        c.expect().await["from"],
        format!("{stub}/registry"),
        "free again"
    );
}

#[actix::test]
async fn a_new_open_replaces_a_session_of_the_same_identity_only() {
    let node = start_node(D, |c| c.auth.mode = AuthMode::Required);
    let alice = user_token(&node, "alice").await;
    let bob = user_token(&node, "bob").await;
    let (mut old, r) = open_as(&node, &rt("x"), &alice).await;
    assert_eq!(r["body"]["code"], 200);
    let h = old.allocate(&rt("x"), D, 1).await.remove(0);
    // another identity cannot take the runtime URL
    let (_, r) = open_as(&node, &rt("x"), &bob).await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    // the same identity, reconnecting while the old socket is half-open, can
    let (mut new, r) = open_as(&node, &rt("x"), &user_token_again(&node, "alice").await).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert!(old.recv(TIMEOUT).await.is_none(), "the old socket closes");
    // and re-claims the address it held
    let r = new
        .request(json!({"type": "create", "from": rt("x"), "to": alloc(), "body": {"value": {"reclaim": [h]}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let (mut b, _) = open_as(&node, &rt("b"), &bob).await;
    b.send(json!({"id": 6, "type": "update", "from": rt("b"), "to": h}))
        .await;
    assert_eq!(new.expect().await["id"], 6);
    let r = b
        .request(json!({"type": "create", "from": rt("b"), "to": alloc(), "body": {"value": {"reclaim": [h]}}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
}

/// A runtime restarted while its dropped session is in its grace period opens
/// afresh (it lost its token): the new session takes over what the old one had
/// buffered, its runtime URL is never unrouted (no 404 for frames to it), and the
/// user's session count passes over (a cap of one session still lets it in).
#[actix::test]
async fn a_replacing_open_takes_over_the_old_sessions_buffer_and_count() {
    let node = start_node(D, |c| {
        c.auth.mode = AuthMode::Required;
        c.session.grace_period_ms = 60_000;
        c.limits.max_sessions_per_user = 1;
    });
    let alice = user_token(&node, "alice").await;
    let bob = user_token(&node, "bob").await;
    let (old, r) = open_as(&node, &rt("x"), &alice).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let (mut b, r) = open_as(&node, &rt("b"), &bob).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    old.drop_socket().await;
    assert!(eventually(TIMEOUT, || async { health(&node).await["live"] == 1 }).await);
    // frames sent while alice's runtime is away are buffered, never refused
    for i in 1..=3 {
        b.send(
            json!({"id": i, "type": "update", "from": rt("b"), "to": format!("{}/inbox", rt("x"))}),
        )
        .await;
    }
    let (mut new, r) = open_as(&node, &rt("x"), &user_token_again(&node, "alice").await).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let m = new.expect().await;
        if m["type"] == "update" {
            ids.push(m["id"].as_u64().unwrap());
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "the buffered frames reach the new session");
    // the first frame b hears is the answer to its next request: no refusal came
    b.send(json!({"id": 9, "type": "ping", "from": rt("b"), "to": "mn:/session"}))
        .await;
    let r = b.expect().await;
    assert_eq!(
        (r["id"].clone(), r["body"]["code"].clone()),
        (json!(9), json!(200)),
        "{r}"
    );
    // the count passed over: alice holds one session, so a second runtime is refused
    let (_, r) = open_as(&node, &rt("y"), &user_token_again(&node, "alice").await).await;
    assert_eq!(r["body"]["code"], 429, "{r}");
}

#[actix::test]
async fn string_ids_are_answered_as_they_came_and_errors_carry_id_from_and_to() {
    let node = start_node(D, |_| {});
    let mut a = WsClient::connect(&node.ws_url()).await;
    let r = a
        .request(json!({"id": "7", "type": "open", "from": rt("a"), "to": "mn:/session"}))
        .await;
    assert_eq!(r["id"], "7");
    assert_eq!(r["body"]["code"], 200);
    let r = a
        .request(json!({"id": "al-1", "type": "create", "from": rt("a"), "to": alloc(), "body": {"value": {}}}))
        .await;
    assert_eq!(
        (r["id"].clone(), r["body"]["code"].clone()),
        (json!("al-1"), json!(200))
    );
    let (mut b, _) = client(&node, "b").await;
    let frame = json!({"id": "x9", "type": "read", "from": rt("a"), "to": rt("b")}).to_string();
    a.send_text(&frame).await;
    assert_eq!(b.recv_text(TIMEOUT).await.unwrap(), frame);
    b.send(json!({"id": "x9", "type": "response", "from": rt("b"), "to": rt("a"), "body": {"code": 200}}))
        .await;
    assert_eq!(a.expect().await["id"], "x9");
    // errors: numbers and strings, id/from/to whenever readable
    let r = a
        .request(json!({"id": "8", "type": "read", "from": rt("a"), "to": format!("hyperty://{D}/nobody")}))
        .await;
    assert_eq!(
        (
            r["body"]["code"].clone(),
            r["from"].clone(),
            r["to"].clone()
        ),
        (
            json!(404),
            json!(format!("hyperty://{D}/nobody")),
            json!(rt("a"))
        )
    );
    for (frame, id) in [
        (
            format!(
                r#"{{"id":"s1","type":5,"from":"{}","to":"{}"}}"#,
                rt("a"),
                rt("b")
            ),
            json!("s1"),
        ),
        (
            format!(
                r#"{{"id":0,"type":"read","from":"{}","to":"{}"}}"#,
                rt("a"),
                rt("b")
            ),
            json!(0),
        ),
        (
            format!(
                r#"{{"id":"s2","type":"read","from":"{}","to":"{}/../x"}}"#,
                rt("a"),
                rt("b")
            ),
            json!("s2"),
        ),
    ] {
        a.send_text(&frame).await;
        let r = a.expect().await;
        assert_eq!(r["body"]["code"], 400, "{frame}: {r}");
        assert_eq!(r["id"], id, "{frame}: {r}");
        assert_eq!(r["to"], rt("a"), "{frame}: {r}");
    }
    a.send_text(&format!(
        r#"{{"id":"s3","type":7,"from":"{}","to":"{}"}}"#,
        rt("a"),
        rt("b")
    ))
    .await;
    assert_eq!(a.expect().await["from"], rt("b"));
}

#[actix::test]
async fn object_schemes_are_open_unless_reserved_or_restricted() {
    let node = start_node(D, |_| {});
    let (mut a, _) = client(&node, "a").await;
    let (mut b, _) = client(&node, "b").await;
    let r = a
        .request(json!({"type": "create", "from": rt("a"), "to": alloc(), "body": {"scheme": "object", "value": {"number": 2}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let obj = r["body"]["value"]["allocated"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(obj.starts_with(&format!("object://{D}/")));
    a.send(json!({"id": 3, "type": "update", "from": obj, "to": rt("b")}))
        .await;
    assert_eq!(b.expect().await["id"], 3);
    for scheme in [
        "runtime",
        "hyperty-runtime",
        "domain",
        "user",
        "mn",
        "http",
        "Bad",
    ] {
        let r = a
            .request(json!({"type": "create", "from": rt("a"), "to": alloc(), "body": {"scheme": scheme}}))
            .await;
        assert_eq!(r["body"]["code"], 400, "{scheme}: {r}");
    }
    let node = start_node(D, |c| c.allocation.schemes = vec!["comm".into()]);
    let (mut a, _) = client(&node, "a").await;
    let r = a
        .request(
            json!({"type": "create", "from": rt("a"), "to": alloc(), "body": {"scheme": "object"}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 400);
    let r = a
        .request(
            json!({"type": "create", "from": rt("a"), "to": alloc(), "body": {"scheme": "comm"}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
    // per-session caps sized for real runtimes, still bounded
    let c = hyperty::config::NodeConfig::default();
    assert_eq!(c.allocation.max_per_session, 100_000);
    assert_eq!(c.subscriptions.max_per_session, 100_000);
}

fn node_on(listener: TcpListener, data: &std::path::Path) -> hyperty::node::NodeHandle {
    let mut cfg = hyperty::config::NodeConfig::default();
    cfg.node.domain = D.to_owned();
    cfg.node.workers = 1;
    cfg.auth.mode = AuthMode::Optional;
    cfg.identity.data_dir = None;
    cfg.node.data_dir = Some(data.to_owned());
    hyperty::node::start(listener, cfg).unwrap()
}

async fn live(rt: &RuntimeHandle) -> bool {
    rt.stubs()
        .await
        .iter()
        .any(|s| s.domain.is_none() && s.status == StubStatus::Live)
}

#[actix::test]
async fn after_a_restart_only_the_holder_reclaims_its_addresses() {
    let data = std::env::temp_dir().join(format!("hyperty-rights-{}", uuid::Uuid::new_v4()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap();
    let node = node_on(listener, &data);
    let a = Runtime::start(RuntimeConfig::new(D)).unwrap();
    a.attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    let wa = a.spawn_hyperty(worker(D)).await.unwrap();
    node.stop().await;
    assert!(eventually(TIMEOUT, || async { !live(&a).await }).await);

    // the same records, on another port the bridge does not know: an intruder
    let other = node_on(TcpListener::bind("127.0.0.1:0").unwrap(), &data);
    let (mut x, _) = client(&other, "intruder").await;
    let r = x
        .request(json!({"type": "create", "from": rt("intruder"), "to": alloc(), "body": {"value": {"reclaim": [wa.as_str()]}}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let r = x
        .request(json!({"type": "subscribe", "from": rt("intruder"), "to": sm(),
            "body": {"resources": [wa.as_str()], "source": format!("{}/address-allocation", rt("intruder"))}}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    let r = x
        .request(json!({"type": "update", "from": wa.as_str(), "to": rt("intruder")}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    other.stop().await;

    // the node back on its port: the bridge re-claims and keeps working
    let node = node_on(TcpListener::bind(port).unwrap(), &data);
    assert!(eventually(TIMEOUT, || async { live(&a).await }).await);
    let (mut y, _) = client(&node, "y").await;
    let mut answered = false;
    for _ in 0..100 {
        let r = y
            .request(json!({"type": "execute", "from": rt("y"), "to": wa.as_str(), "body": {"value": {}}}))
            .await;
        if r["body"]["code"] == 200 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the re-claimed hyperty answers");
    let r = y
        .request(json!({"type": "create", "from": rt("y"), "to": alloc(), "body": {"value": {"reclaim": [wa.as_str()]}}}))
        .await;
    assert_eq!(r["body"]["code"], 403);
    node.stop().await;
    std::fs::remove_dir_all(&data).ok();
}
