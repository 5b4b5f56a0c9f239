//! JSON-RPC 2.0 over events: calls, notifications, batches, error codes, delivery
//! failures and timeouts, locally and across runtimes.

mod events_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events_support::*;
use hyperty::prelude::*;
use serde_json::{json, Value};

fn calculator(seen: Arc<AtomicUsize>) -> RpcMethods {
    let logged = seen.clone();
    RpcMethods::new()
        .method("add", |c| {
            let p = c
                .params
                .as_ref()
                .and_then(Value::as_array)
                .ok_or_else(|| RpcError::invalid_params("[a, b] expected"))?;
            Ok(json!(p.iter().filter_map(Value::as_i64).sum::<i64>()))
        })
        .method("whoami", |c| {
            Ok(json!({"caller": c.caller, "local": c.caller_is_local}))
        })
        .method("log", move |_| {
            logged.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        })
}

struct Setup {
    a: RuntimeHandle,
    b: RuntimeHandle,
    ab: Side,
    ba: Side,
    client: Entity,
    server: Entity,
    logged: Arc<AtomicUsize>,
}

/// Serves the calculator at `server`; the count of calls it logged.
async fn serve_calculator(server: &Entity) -> Arc<AtomicUsize> {
    let logged = Arc::new(AtomicUsize::new(0));
    server
        .ep
        .serve_rpc(
            server.addr.clone(),
            calculator(logged.clone()).start_handler(),
        )
        .await
        .unwrap();
    logged
}

async fn setup() -> Setup {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let b = start("b.org", &clock);
    // recording stubs: these tests read the request and response events on the wire
    let (ab, ba) = link(&a, Some("a.org"), &b, Some("b.org")).await;
    let client = entity(&a, "hyperty://a.org/client").await;
    let server = entity(&b, "hyperty://b.org/calc").await;
    let logged = serve_calculator(&server).await;
    Setup {
        a,
        b,
        ab,
        ba,
        client,
        server,
        logged,
    }
}

#[actix::test]
async fn a_call_across_runtimes_returns_its_result() {
    let mut s = setup().await;
    let r = s
        .client
        .ep
        .call(
            s.client.addr.clone(),
            s.server.addr.clone(),
            "add",
            Some(json!([2, 3])),
        )
        .await
        .unwrap();
    assert_eq!(r, json!(5));
    let me = s
        .client
        .ep
        .call(s.client.addr.clone(), s.server.addr.clone(), "whoami", None)
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({"caller": "hyperty://a.org/client", "local": false})
    );
    // one request event out, one response event back, shaped per the spec
    let requests = s.ab.events_of_type("JSONRPC20Request");
    let responses = s.ba.events_of_type("JSONRPC20Response");
    assert_eq!((requests.len(), responses.len()), (2, 2));
    let req = requests[0].body.value.as_ref().unwrap();
    let resp = responses[0].body.value.as_ref().unwrap();
    assert_eq!(req["addressingSensitive"], json!(true));
    assert_eq!(req["inResponseTo"], Value::Null);
    let payload: Value = serde_json::from_str(req["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["jsonrpc"], json!("2.0"));
    assert_eq!(payload["method"], json!("add"));
    assert_eq!(resp["to"], json!(["hyperty://a.org/client"]));
    assert_eq!(resp["inResponseTo"], req["id"]);
    assert_eq!(resp["source"], json!("hyperty://b.org/calc"));
    // RPC events never reach application listeners
    assert!(s.server.inbox.recv(QUIET).await.is_none());
    assert!(s.client.inbox.drain().is_empty());
}

#[actix::test]
async fn a_call_across_domains_through_their_nodes_returns_its_result() {
    let clock = ManualClock::new(T0);
    let (nodes, rts) = federated(&["a.org", "b.org"], &clock).await;
    let (a, b) = (&rts[0], &rts[1]);
    let client = hyperty_entity(a).await;
    let server = hyperty_entity(b).await;
    let logged = serve_calculator(&server).await;
    let r = client
        .ep
        .call(
            client.addr.clone(),
            server.addr.clone(),
            "add",
            Some(json!([2, 3])),
        )
        .await
        .unwrap();
    assert_eq!(r, json!(5));
    let me = client
        .ep
        .call(client.addr.clone(), server.addr.clone(), "whoami", None)
        .await
        .unwrap();
    assert_eq!(me, json!({"caller": client.addr.as_str(), "local": false}));
    // a notification is executed across the domains too
    client
        .ep
        .notify(client.addr.clone(), server.addr.clone(), "log", None)
        .await
        .unwrap();
    assert!(eventually_count(&logged, 1).await);
    a.shutdown().await;
    b.shutdown().await;
    stop_all(&nodes).await;
}

#[actix::test]
async fn a_local_call_knows_its_caller_is_local() {
    let clock = ManualClock::new(T0);
    let rt = start("a.org", &clock);
    let client = entity(&rt, "hyperty://a.org/client").await;
    let server = entity(&rt, "hyperty://a.org/calc").await;
    let handler = calculator(Arc::new(AtomicUsize::new(0))).start_handler();
    server
        .ep
        .serve_rpc(server.addr.clone(), handler.clone())
        .await
        .unwrap();
    // only the owner of an entity may serve on it
    assert_eq!(
        client
            .ep
            .serve_rpc(server.addr.clone(), handler)
            .await
            .unwrap_err()
            .code(),
        2
    );
    let me = client
        .ep
        .call(client.addr.clone(), server.addr.clone(), "whoami", None)
        .await
        .unwrap();
    assert_eq!(me["local"], json!(true));
    // calling from an entity one does not own
    let err = server
        .ep
        .call(client.addr.clone(), server.addr.clone(), "whoami", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcCallError::Event(ref e) if e.code() == 2),
        "{err:?}"
    );
}

#[actix::test]
async fn a_notification_is_executed_and_never_answered() {
    let s = setup().await;
    s.client
        .ep
        .notify(
            s.client.addr.clone(),
            s.server.addr.clone(),
            "log",
            Some(json!({"line": "x"})),
        )
        .await
        .unwrap();
    let st = stats_until(&s.b, |st| st.rpc_served == 1).await;
    assert_eq!(st.rpc_served, 1);
    assert!(eventually_count(&s.logged, 1).await);
    let req = &s.ab.events_of_type("JSONRPC20Request")[0];
    let payload: Value = serde_json::from_str(
        req.body.value.as_ref().unwrap()["payload"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        payload.get("id").is_none(),
        "a notification has no id member"
    );
    // give a wrong answer every chance to show up
    s.a.events().tick().await;
    s.b.events().tick().await;
    assert!(s.ba.events_of_type("JSONRPC20Response").is_empty());
}

async fn eventually_count(n: &AtomicUsize, want: usize) -> bool {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if n.load(Ordering::SeqCst) == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

#[actix::test]
async fn a_batch_gets_one_response_event_without_the_notifications() {
    let s = setup().await;
    let answers = s
        .client
        .ep
        .batch(
            s.client.addr.clone(),
            s.server.addr.clone(),
            vec![
                RpcRequest::call("add", Some(json!([1, 2])), json!(1)),
                RpcRequest::notification("log", None),
                RpcRequest::call("nope", None, json!("x")),
                RpcRequest::call("add", Some(json!({"a": 1})), json!(3)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert_eq!(
        answers[0],
        RpcResponse::result(RpcId::Number(1.into()), json!(3))
    );
    assert_eq!(answers[1].id, RpcId::String("x".into()));
    assert_eq!(answers[1].outcome.as_ref().unwrap_err().code, -32601);
    assert_eq!(answers[2].outcome.as_ref().unwrap_err().code, -32602);
    assert!(eventually_count(&s.logged, 1).await);
    let responses = s.ba.events_of_type("JSONRPC20Response");
    assert_eq!(responses.len(), 1);
    let payload: Value = serde_json::from_str(
        responses[0].body.value.as_ref().unwrap()["payload"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload.as_array().map(Vec::len), Some(3));

    // a batch of notifications only: nothing comes back
    let none = s
        .client
        .ep
        .batch(
            s.client.addr.clone(),
            s.server.addr.clone(),
            vec![
                RpcRequest::notification("log", None),
                RpcRequest::notification("log", None),
            ],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(eventually_count(&s.logged, 3).await);
    assert_eq!(
        stats_until(&s.b, |st| st.rpc_served == 2).await.rpc_served,
        2
    );
    assert_eq!(s.ba.events_of_type("JSONRPC20Response").len(), 1);
}

#[actix::test]
async fn malformed_members_of_a_batch_get_invalid_request() {
    let s = setup().await;
    let stub_in_b = s.ba.stub.url.clone();
    let payload = r#"[{"jsonrpc":"2.0","method":"add","params":[4,4],"id":"ok"},{"foo":"bar"},{"jsonrpc":"2.0","method":1,"id":9}]"#;
    // a request from A that the API would not produce: crafted in its JSON form
    let value = json!({
        "type": "JSONRPC20Request", "source": s.client.addr, "to": [s.server.addr],
        "addressingSensitive": true, "generationTimestamp": T0, "payload": payload
    });
    inject_event(
        &s.b,
        &stub_in_b,
        "hyperty-runtime://a.org/rt",
        &["hyperty://b.org/calc"],
        value,
    );
    let st = stats_until(&s.b, |st| st.rpc_served == 1).await;
    assert_eq!(st.rpc_served, 1);
    // the answer went back to A, where nobody waits for it: dropped there
    let sent = stats_until(&s.a, |st| st.no_reference == 1).await;
    assert_eq!(sent.no_reference, 1);
    let responses = s.ba.events_of_type("JSONRPC20Response");
    assert_eq!(responses.len(), 1);
    let answers: Value = serde_json::from_str(
        responses[0].body.value.as_ref().unwrap()["payload"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(answers[0]["result"], json!(8));
    assert_eq!(answers[1]["error"]["code"], json!(-32600));
    assert_eq!(answers[1]["id"], Value::Null);
    assert_eq!(answers[2]["error"]["code"], json!(-32600));
    assert_eq!(answers[2]["id"], json!(9));
}

#[actix::test]
async fn unknown_methods_and_entities_without_handlers_get_method_not_found() {
    let s = setup().await;
    let err = s
        .client
        .ep
        .call(s.client.addr.clone(), s.server.addr.clone(), "divide", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcCallError::Rpc(ref e) if e.code == -32601),
        "{err:?}"
    );
    let plain = entity(&s.b, "hyperty://b.org/plain").await;
    let err = s
        .client
        .ep
        .call(s.client.addr.clone(), plain.addr.clone(), "anything", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcCallError::Rpc(ref e) if e.code == -32601),
        "{err:?}"
    );
}

/// A handler that stops when asked to, so later calls find it gone.
struct Fragile;
impl Actor for Fragile {
    type Context = Context<Self>;
}
impl Handler<RpcCall> for Fragile {
    type Result = Result<Value, RpcError>;
    fn handle(&mut self, _: RpcCall, ctx: &mut Context<Self>) -> Self::Result {
        ctx.stop();
        Err(RpcError::new(-32000, "stopping"))
    }
}

#[actix::test]
async fn a_handler_that_is_gone_yields_internal_error() {
    let s = setup().await;
    let fragile = entity(&s.b, "hyperty://b.org/fragile").await;
    fragile
        .ep
        .serve_rpc(fragile.addr.clone(), Fragile.start().recipient())
        .await
        .unwrap();
    let first = s
        .client
        .ep
        .call(s.client.addr.clone(), fragile.addr.clone(), "x", None)
        .await
        .unwrap_err();
    assert!(
        matches!(first, RpcCallError::Rpc(ref e) if e.code == -32000),
        "{first:?}"
    );
    let second = s
        .client
        .ep
        .call(s.client.addr.clone(), fragile.addr.clone(), "x", None)
        .await
        .unwrap_err();
    assert!(
        matches!(second, RpcCallError::Rpc(ref e) if e.code == -32603),
        "{second:?}"
    );
}

#[actix::test]
async fn a_call_to_nobody_fails_with_bad_destination() {
    let s = setup().await;
    let err = s
        .client
        .ep
        .call(
            s.client.addr.clone(),
            addr("hyperty://b.org/nobody"),
            "add",
            Some(json!([1])),
        )
        .await
        .unwrap_err();
    match err {
        RpcCallError::Delivery(e) => assert_eq!(e.code, DeliveryErrorCode::BadDestination),
        other => panic!("{other:?}"),
    }
}

#[actix::test]
async fn a_call_without_answer_times_out_on_the_clock() {
    let clock = ManualClock::new(T0);
    let a = start("a.org", &clock);
    let client = entity(&a, "hyperty://a.org/client").await;
    let ep = client.ep.clone();
    let from = client.addr.clone();
    // nobody serves c.org: the request waits in the cache
    let call = actix::spawn(async move {
        ep.call(from, addr("hyperty://c.org/far"), "add", None)
            .await
    });
    assert!(stats_until(&a, |st| st.cached == 1).await.cached == 1);
    clock.advance(Duration::from_secs(14));
    a.events().tick().await;
    assert!(!call.is_finished());
    clock.advance(Duration::from_secs(2));
    a.events().tick().await;
    let r = tokio::time::timeout(TIMEOUT, call).await.unwrap().unwrap();
    assert_eq!(r.unwrap_err(), RpcCallError::Timeout);
}
