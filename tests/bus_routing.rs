//! The message bus: correlation, timeouts, provisional responses, listeners,
//! interceptors, 404/429, recipient lists, runtime isolation and stub routing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use hyperty::prelude::*;
use hyperty_actors::error::Rejection;
use serde_json::json;

fn config(domain: &str) -> RuntimeConfig {
    RuntimeConfig::new(domain)
}

#[actix::test]
async fn requests_are_correlated_to_their_responses() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let me = rt.url().component("app");
    let posts = (0..50).map(|i| rt.bus().post(request(&me, &w, json!({"n": i}))));
    let responses = join_all(posts).await;
    for (i, r) in responses.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.code(), Some(ResponseCode::Ok));
        assert_eq!(r.body.value.unwrap()["body"]["value"]["n"], json!(i));
    }
    assert!(rt.bus().stats().responses >= 50);
}

#[actix::test]
async fn a_request_without_answer_times_out_with_408() {
    let mut cfg = config("a.org");
    cfg.bus.request_timeout = Duration::from_millis(150);
    let rt = Runtime::start(cfg).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let me = rt.url().component("app");
    let req = request(&me, &w, action("silent")).with_id(77);
    let err = rt.bus().post(req.clone()).await.unwrap_err();
    assert_eq!(err, BusError::Timeout);
    assert_eq!(err.response_code(), ResponseCode::RequestTimeout);
    let resp = hyperty_actors::error::error_response(&req, &err);
    assert_eq!(resp.id, 77);
    assert_eq!(resp.body.description_text(), Some("Response timeout!"));
    assert_eq!(rt.bus().stats().timeouts, 1);
}

#[actix::test]
async fn provisional_responses_keep_the_request_open() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let me = rt.url().component("app");
    let progress = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = progress.clone();
    let r = rt
        .bus()
        .post_with_progress(request(&me, &w, action("progress")), move |m| {
            seen.lock().unwrap().push(m.code())
        })
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    assert_eq!(r.body.value, Some(json!("done")));
    assert_eq!(
        *progress.lock().unwrap(),
        vec![Some(ResponseCode::Provisional)]
    );
    // plain post skips the 100 and still gets the 200
    let r = rt
        .bus()
        .post(request(&me, &w, action("progress")))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
}

#[actix::test]
async fn listeners_are_added_and_removed_by_exact_address() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let (rec, mut probe) = Probe::start();
    let obj = addr("comm://a.org/obj-1/changes");
    let id = rt.bus().add_listener(obj.clone(), rec, None).await.unwrap();
    assert!(rt.bus().has_listener(obj.as_str()));
    let from = addr("comm://a.org/obj-1");
    rt.bus()
        .send(Message::new(MessageType::Update, from.clone(), obj.clone()).with_value(json!(1)));
    assert_eq!(
        probe.recv(TIMEOUT).await.unwrap().body.value,
        Some(json!(1))
    );
    // a near miss does not match
    rt.bus().send(Message::new(
        MessageType::Update,
        from.clone(),
        addr("comm://a.org/obj-1/changes/x"),
    ));
    assert!(rt.bus().remove_listener(obj.clone(), id).await);
    assert!(!rt.bus().has_listener(obj.as_str()));
    rt.bus().send(Message::new(MessageType::Update, from, obj));
    assert!(probe.recv(Duration::from_millis(50)).await.is_none());
    // both updates had nowhere to go: dropped and counted, no 404 for notifications
    assert_eq!(rt.bus().stats().dropped, 2);
}

struct DenyDeletes;
impl Interceptor for DenyDeletes {
    fn name(&self) -> &str {
        "deny-deletes"
    }
    fn intercept(&self, msg: &mut Message, _: Direction) -> Result<(), Rejection> {
        if msg.kind == MessageType::Delete {
            return Err(Rejection::blocked_by_policy());
        }
        msg.body.auth = Some(true);
        Ok(())
    }
}

#[actix::test]
async fn interceptors_rewrite_or_reject_with_403() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    rt.bus()
        .add_interceptor(Arc::new(DenyDeletes))
        .await
        .unwrap();
    // the same name twice is refused
    assert!(rt
        .bus()
        .add_interceptor(Arc::new(DenyDeletes))
        .await
        .is_err());
    let me = rt.url().component("app");

    // rewrite: the PEP stamped auth=true, the worker saw it
    let r = rt.bus().post(request(&me, &w, json!({}))).await.unwrap();
    assert_eq!(r.body.value.unwrap()["body"]["auth"], json!(true));

    // reject: the poster gets 403 "Blocked by policy", the worker sees nothing
    let del = Message::new(MessageType::Delete, me.clone(), w.address().clone());
    match rt.bus().post(del).await {
        Err(BusError::Rejected(r)) => {
            assert_eq!(r.code, ResponseCode::Forbidden);
            assert_eq!(r.description, "Blocked by policy");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    // a fire-and-forget request gets its 403 as a response message on its listener
    let (rec, mut probe) = Probe::start();
    let sender = addr("hyperty://a.org/sender");
    rt.bus()
        .add_listener(sender.clone(), rec, None)
        .await
        .unwrap();
    let id = rt.bus().send(Message::new(
        MessageType::Delete,
        sender.clone(),
        w.address().clone(),
    ));
    let resp = probe.recv(TIMEOUT).await.unwrap();
    assert_eq!((resp.id, resp.kind.clone()), (id, MessageType::Response));
    assert_eq!(resp.code(), Some(ResponseCode::Forbidden));
    assert_eq!(resp.body.description_text(), Some("Blocked by policy"));
    assert_eq!(rt.bus().stats().rejected, 2);

    assert!(rt.bus().remove_interceptor("deny-deletes").await);
    let del = Message::new(MessageType::Delete, me, w.address().clone());
    assert_eq!(
        rt.bus().post(del).await.unwrap().code(),
        Some(ResponseCode::Ok)
    );
}

#[actix::test]
async fn unknown_destinations_get_404() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let me = rt.url().component("app");
    let nobody = addr("hyperty://a.org/nobody");
    assert_eq!(
        rt.bus()
            .post(request(&me, &nobody, json!({})))
            .await
            .unwrap_err(),
        BusError::NoRoute(nobody.to_string())
    );
    // a fire-and-forget request gets a 404 response on its own listener
    let (rec, mut probe) = Probe::start();
    let sender = addr("hyperty://a.org/sender");
    rt.bus()
        .add_listener(sender.clone(), rec, None)
        .await
        .unwrap();
    rt.bus().send(request(&sender, &nobody, json!({})));
    let r = probe.recv(TIMEOUT).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
    assert_eq!(r.from, nobody);
    assert_eq!(rt.bus().stats().not_found, 2);
}

#[actix::test]
async fn recipient_lists_reach_every_recipient() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let (r1, mut p1) = Probe::start();
    let (r2, mut p2) = Probe::start();
    let (a, b) = (addr("hyperty://a.org/1"), addr("hyperty://a.org/2"));
    rt.bus().add_listener(a.clone(), r1, None).await.unwrap();
    rt.bus().add_listener(b.clone(), r2, None).await.unwrap();
    let to = To::many(vec![a.clone(), b.clone()]).unwrap();
    rt.bus().send(Message::new(
        MessageType::Update,
        rt.url().component("app"),
        to.clone(),
    ));
    assert_eq!(p1.recv(TIMEOUT).await.unwrap().to, to);
    assert_eq!(p2.recv(TIMEOUT).await.unwrap().to, to);
}

#[actix::test]
async fn a_full_mailbox_answers_429_and_loses_nothing_it_accepted() {
    let mut cfg = config("a.org");
    cfg.sandbox.mailbox_capacity = 4;
    let rt = Runtime::start(cfg).unwrap();
    let (spec, gate) = gated_worker("a.org");
    let w = rt.spawn_hyperty(spec).await.unwrap();
    let me = rt.url().component("app");
    let posts: Vec<_> = (0..20)
        .map(|i| rt.bus().post(request(&me, &w, json!({"n": i}))))
        .collect();
    gate.send(()).unwrap();
    let results = join_all(posts).await;
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok(m) if m.code() == Some(ResponseCode::Ok)))
        .count();
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(BusError::Busy(_))))
        .count();
    assert_eq!(ok + busy, 20, "{results:?}");
    assert!(busy > 0 && ok >= 4, "ok={ok} busy={busy}");
    assert_eq!(rt.bus().stats().busy as usize, busy);
    assert_eq!(
        BusError::Busy("x".into()).response_code(),
        ResponseCode::TooManyRequests
    );
}

#[actix::test]
async fn two_runtimes_in_one_process_do_not_share_listeners() {
    let a = Runtime::start(config("a.org")).unwrap();
    let b = Runtime::start(config("a.org")).unwrap();
    let wa = a.spawn_hyperty(worker("a.org")).await.unwrap();
    assert!(a.bus().has_listener(wa.as_str()));
    assert!(!b.bus().has_listener(wa.as_str()));
    let me = b.url().component("app");
    assert!(matches!(
        b.bus().post(request(&me, &wa, json!({}))).await,
        Err(BusError::NoRoute(_))
    ));
    assert_eq!(a.hyperties().await.len(), 1);
    assert!(b.hyperties().await.is_empty());
}

#[actix::test]
async fn requests_cross_domains_and_responses_come_back() {
    // c.org resolves to a port nothing listens on: no node serves it
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (nodes, rts) = federated(vec![config("a.org"), config("b.org")], |_, cfg| {
        cfg.federation.resolve.insert("c.org".into(), dead.clone());
        cfg.federation.delivery_timeout_ms = 300;
    })
    .await;
    let (a, b) = (&rts[0], &rts[1]);
    let wb = b.spawn_hyperty(worker("b.org")).await.unwrap();
    let wa = a.spawn_hyperty(worker("a.org")).await.unwrap();
    // a hyperty of A asks a hyperty of B, exactly as if it were local
    let r = a
        .bus()
        .post(request(&wa, &wb, json!({"q": 1})))
        .await
        .unwrap();
    assert_eq!(r.from, *wb.address());
    assert_eq!(r.body.value.unwrap()["body"]["value"]["q"], json!(1));
    // an unknown hyperty of B: B's domain answers 404 back across the link
    let ghost = addr("hyperty://b.org/ghost");
    let r = a.bus().post(request(&wa, &ghost, json!({}))).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
    // runtime-internal addresses never leave the runtime
    let internal = a.url().component("nothing-here");
    assert!(matches!(
        a.bus().post(request(&wa, &internal, json!({}))).await,
        Err(BusError::NoRoute(_))
    ));
    // a domain nobody serves: refused, naming the domain
    let far = addr("hyperty://c.org/1");
    let r = a.bus().post(request(&wa, &far, json!({}))).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::GatewayTimeout), "{r:?}");
    assert!(r.to_json().contains("c.org"), "{r:?}");
    a.shutdown().await;
    b.shutdown().await;
    stop_all(&nodes).await;
}

#[actix::test]
async fn a_message_from_a_stub_never_bounces_back_into_it() {
    let a = Runtime::start(config("a.org")).unwrap();
    let b = Runtime::start(config("b.org")).unwrap();
    let (_sa, _sb) = link(&a, None, &b, None).await;
    // both runtimes use each other as default route: a message for a hyperty neither
    // has must end (404) instead of ping-ponging between them
    let (rec, mut probe) = Probe::start();
    let sender = addr("hyperty://a.org/sender");
    a.bus()
        .add_listener(sender.clone(), rec, None)
        .await
        .unwrap();
    a.bus()
        .send(request(&sender, &addr("hyperty://z.org/none"), json!({})));
    let r = probe.recv(TIMEOUT).await.unwrap();
    assert_eq!(r.code(), Some(ResponseCode::NotFound));
    assert!(probe.recv(Duration::from_millis(50)).await.is_none());
}

#[actix::test]
async fn shutdown_fails_pending_requests() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let me = rt.url().component("app");
    let pending = rt.bus().post(request(&me, &w, action("silent")));
    rt.shutdown().await;
    assert_eq!(pending.await.unwrap_err(), BusError::Shutdown);
    assert_eq!(
        rt.bus()
            .post(request(&me, &w, json!({})))
            .await
            .unwrap_err(),
        BusError::Shutdown
    );
}

#[actix::test]
async fn the_bus_actor_accepts_plain_actor_messages() {
    use hyperty_actors::bus::{GetStats, Post, SendMessage};
    let rt = Runtime::start(config("a.org")).unwrap();
    let w = rt.spawn_hyperty(worker("a.org")).await.unwrap();
    let me = rt.url().component("app");
    let r = rt
        .bus()
        .actor()
        .send(Post(request(&me, &w, json!({}))))
        .await
        .unwrap();
    assert_eq!(r.unwrap().code(), Some(ResponseCode::Ok));
    let id = rt
        .bus()
        .actor()
        .send(SendMessage(Message::new(
            MessageType::Update,
            me,
            w.into_address(),
        )))
        .await
        .unwrap();
    assert!(id > 0);
    assert!(rt.bus().actor().send(GetStats).await.unwrap().delivered >= 2);
}

#[actix::test]
async fn a_recipient_list_crosses_to_another_domain_once() {
    let (nodes, rts) = federated(vec![config("a.org"), config("b.org")], |_, _| {}).await;
    let (a, b) = (&rts[0], &rts[1]);
    let (h1, mut p1) = inbox_hyperty(b, "b.org", None).await;
    let (h2, mut p2) = inbox_hyperty(b, "b.org", None).await;
    let (h3, mut p3) = inbox_hyperty(a, "a.org", None).await;
    let src = a.spawn_hyperty(worker("a.org")).await.unwrap();
    let [b1, b2, a3] = [h1, h2, h3].map(|h| h.url().address().clone());
    let before = a.bus().stats().delivered;
    let to = To::many(vec![b1.clone(), a3.clone(), b2.clone()]).unwrap();
    a.bus()
        .send(Message::new(MessageType::Update, src.address().clone(), to));
    // the bridge carried one message, narrowed to the recipients of the other domain
    let m1 = next_message(&mut p1, TIMEOUT).await.unwrap();
    assert_eq!(m1.to, To::many(vec![b1.clone(), b2.clone()]).unwrap());
    assert_eq!(next_message(&mut p2, TIMEOUT).await.unwrap().to, m1.to);
    assert!(next_message(&mut p3, TIMEOUT).await.is_some());
    assert_eq!(
        a.bus().stats().delivered - before,
        2,
        "one local delivery + one hand-off to the node"
    );
    assert!(next_message(&mut p1, Duration::from_millis(30))
        .await
        .is_none());
    a.shutdown().await;
    b.shutdown().await;
    stop_all(&nodes).await;
}

#[actix::test]
async fn a_hand_built_empty_recipient_list_is_refused_not_a_panic() {
    let rt = Runtime::start(config("a.org")).unwrap();
    let me = rt.url().component("app");
    let msg = Message {
        id: 0,
        kind: MessageType::Read,
        from: me,
        to: To::Many(vec![]),
        body: Body::default(),
    };
    rt.bus().send(msg.clone());
    assert!(matches!(
        rt.bus().post(msg).await,
        Err(BusError::Invalid(_)) | Err(BusError::Shutdown)
    ));
}

/// `send_to_stub` goes past a local listener on `to` to the protocol stub (a
/// reporter publishing on `<obj>/children/`, where it also listens for what
/// remote senders write there); `send` prefers the local listener.
#[actix::test]
async fn send_to_stub_passes_local_listeners() {
    let a = Runtime::start(config("a.org")).unwrap();
    let b = Runtime::start(config("b.org")).unwrap();
    let (_sa, _sb) = link(&a, None, &b, None).await;
    let channel = addr("comm://b.org/obj/children/");
    let (ra, mut pa) = Probe::start();
    let (rb, mut pb) = Probe::start();
    a.bus()
        .add_listener(channel.clone(), ra, None)
        .await
        .unwrap();
    b.bus()
        .add_listener(channel.clone(), rb, None)
        .await
        .unwrap();
    let from = addr("comm://b.org/obj");
    let published =
        Message::new(MessageType::Event, from.clone(), channel.clone()).with_value(json!("out"));
    a.bus().send_to_stub(published);
    a.bus()
        .send(Message::new(MessageType::Event, from, channel).with_value(json!("local")));
    let far = pb.recv(TIMEOUT).await.unwrap();
    assert_eq!(far.body.value, Some(json!("out")));
    let near = pa.recv(TIMEOUT).await.unwrap();
    assert_eq!(
        near.body.value,
        Some(json!("local")),
        "the local listener got only the local one"
    );
    a.shutdown().await;
    b.shutdown().await;
}
