//! Bound senders: a hyperty of `evil.example` tries every way to act as a hyperty
//! of `a.example` bound to alice — forged `from` and `body.source`, dot segments,
//! listeners on the victim's address, removing the victim's listener, asking the
//! identity module for the victim's assertion, answering requests sent to the
//! victim (local and remote) — through a real runtime with an identity provider
//! on HTTP and a second runtime of another domain, each on its own federated node. Each attempt is refused (403),
//! nothing reaches the victim's peers, and alice's assertion never leaves with a
//! message of the attacker.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use common::*;
use hyperty::identity::{
    self, IdentityProvider, IdmConfig, IdpConfig, KdfParams, LoginUser, ManualClock, Secret,
};
use hyperty::prelude::*;
use hyperty_actors::routes::ListenerId;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

type Inbox = Arc<Mutex<Vec<Message>>>;

/// Records everything it is delivered and answers requests with 200.
struct Recorder {
    ctx: HypertyContext,
    inbox: Inbox,
}
impl Actor for Recorder {
    type Context = Context<Self>;
}
impl Handler<Deliver> for Recorder {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        if m.kind.expects_response() {
            self.ctx.reply(&m, ResponseCode::Ok, Value::Null);
        }
        self.inbox.lock().unwrap().push(m);
    }
}

/// The attacker: runs the attack named in a request's `value.attack` with its own
/// context and answers with what its bus said.
struct Evil {
    ctx: HypertyContext,
    inbox: Inbox,
    spy: Recipient<Deliver>,
}
impl Actor for Evil {
    type Context = Context<Self>;
}

fn code_of(r: &Result<Message, BusError>) -> u16 {
    match r {
        Ok(m) => m.code().map_or(0, ResponseCode::as_u16),
        Err(e) => e.response_code().as_u16(),
    }
}

impl Handler<Deliver> for Evil {
    type Result = ();
    fn handle(&mut self, Deliver(cmd): Deliver, _: &mut Context<Self>) {
        if !cmd.kind.expects_response() {
            self.inbox.lock().unwrap().push(cmd);
            return;
        }
        if cmd.is_response() {
            self.inbox.lock().unwrap().push(cmd);
            return;
        }
        let v = cmd.body.value.clone().unwrap_or_default();
        let arg = |k: &str| -> Address { v[k].as_str().unwrap_or_default().parse().unwrap() };
        let requester: Option<Address> = v["requester"].as_str().map(|s| s.parse().unwrap());
        let ctx = self.ctx.clone();
        let spy = self.spy.clone();
        let me = ctx.url().address().clone();
        let attack = v["attack"].as_str().unwrap_or_default().to_owned();
        let (victim, peer) = (arg("victim"), arg("peer"));
        let idm: Option<Address> = v["idm"].as_str().map(|s| s.parse().unwrap());
        let id = v["id"].as_u64().unwrap_or(0);
        actix::spawn(async move {
            let bus = ctx.bus();
            let out: Value = match attack.as_str() {
                "post-as-victim" => {
                    let r = bus.post(request(&victim, &peer, json!({}))).await;
                    json!({"code": code_of(&r)})
                }
                "send-as-victim" => {
                    bus.send(Message::new(
                        MessageType::Update,
                        victim.clone(),
                        peer.clone(),
                    ));
                    bus.send(request(&victim, &peer, json!({})).with_id(id));
                    json!({})
                }
                "source-is-victim" => {
                    let mut m = request(&me, &peer, json!({}));
                    m.body.source = Some(victim.clone());
                    json!({"code": code_of(&bus.post(m).await)})
                }
                "dot-segments" => {
                    let rest = victim.as_str().rsplit('/').next().unwrap_or_default();
                    match format!("{me}/../{rest}").parse::<Address>() {
                        Ok(sneaky) => {
                            let r = bus.post(request(&sneaky, &peer, json!({}))).await;
                            json!({"code": code_of(&r)})
                        }
                        Err(_) => json!({"code": "unparsable"}),
                    }
                }
                "listen-on-victim" => {
                    let r = ctx.add_listener(victim.clone(), spy.clone()).await;
                    let r2 = bus.add_listener(victim.join("status").unwrap(), spy).await;
                    json!({"codes": [
                        r.err().map(|e| e.response_code().as_u16()),
                        r2.err().map(|e| e.response_code().as_u16()),
                    ]})
                }
                "remove-victim-listener" => {
                    let mut removed = 0;
                    for i in 0..64 {
                        if bus.remove_listener(victim.clone(), ListenerId(i)).await {
                            removed += 1;
                        }
                    }
                    json!({"removed": removed})
                }
                "assertion-for-victim" => {
                    let idm = idm.unwrap();
                    let mut out = Vec::new();
                    for (from, method) in [
                        (&victim, "generateAssertion"),
                        (&victim, "getIdentity"),
                        (&me, "generateAssertion"),
                        (&me, "getIdentity"),
                    ] {
                        let mut m = Message::new(MessageType::Execute, from.clone(), idm.clone());
                        m.body.extra.insert("method".into(), json!(method));
                        m.body
                            .extra
                            .insert("params".into(), json!({"hyperty": victim.to_string()}));
                        let r = bus.post(m).await;
                        out.push(json!({"code": code_of(&r), "body": r.ok().map(|m| m.to_json())}));
                    }
                    json!(out)
                }
                "answer-for-victim" => {
                    // a response from its own address to a request sent to the victim
                    let requester = requester.clone().unwrap();
                    let forged = Message::new(MessageType::Response, me.clone(), requester.clone())
                        .with_id(id);
                    let mut forged = forged;
                    forged.body.code = Some(ResponseCode::Ok);
                    forged.body.value = Some(json!("forged"));
                    bus.send(forged.clone());
                    let mut progress = forged;
                    progress.body.code = Some(ResponseCode::Provisional);
                    bus.send(progress);
                    // and one from the victim's address
                    let mut as_victim =
                        Message::new(MessageType::Response, victim.clone(), requester).with_id(id);
                    as_victim.body.code = Some(ResponseCode::Ok);
                    bus.send(as_victim);
                    json!({})
                }
                "own-object" => {
                    // the control: what it holds, it may use
                    let objs = ctx.allocate("comm", 1).await.unwrap();
                    let obj = objs[0].clone();
                    let listen = ctx.add_listener(obj.join("changes").unwrap(), spy).await;
                    let mut m = Message::new(MessageType::Create, obj.clone(), peer.clone())
                        .with_value(json!("from my object"));
                    m.body.source = Some(me.clone());
                    let sent = bus.post(m).await;
                    json!({"object": obj.to_string(), "listen": listen.is_ok(), "code": code_of(&sent)})
                }
                "own-message" => {
                    let r = bus.post(request(&me, &peer, json!({}))).await;
                    json!({"code": code_of(&r)})
                }
                other => json!({"unknown": other}),
            };
            ctx.reply(&cmd, ResponseCode::Ok, out);
        });
    }
}

/// An identity provider for `a.example` on 127.0.0.1:0 with alice registered.
async fn provider(clock: &ManualClock) -> (String, actix_web::dev::ServerHandle) {
    let cfg = IdpConfig {
        data_dir: None,
        kdf: KdfParams::fast_insecure(),
        ..IdpConfig::default()
    };
    let idp = IdentityProvider::with_clock("a.example", cfg, Arc::new(clock.clone())).unwrap();
    let addr = idp.start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(addr.clone()))
            .configure(identity::configure)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let mut resp = awc::Client::default()
        .post(format!("{base}/idp/users"))
        .send_json(&json!({"username": "alice", "password": PASSWORD}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.body().await);
    (base, handle)
}

async fn attack(rt: &RuntimeHandle, evil: &HypertyUrl, value: Value) -> Value {
    let me = rt.url().component("test");
    let r = rt
        .bus()
        .post(request(&me, evil.address(), value.clone()))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", value["attack"]));
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{r:?}");
    r.body.value.unwrap_or_default()
}

fn carries_alice(m: &Message) -> bool {
    m.to_json().contains("alice")
}

#[actix::test]
async fn a_hyperty_cannot_act_as_another() {
    let clock = ManualClock::starting_now();
    let (base, server) = provider(&clock).await;

    // runtime A (a.example) hosts the victim, bound to alice, and the attacker
    let mut cfg = RuntimeConfig::new("a.example");
    // the forged answers are proven absent by timeouts: keep them short
    cfg.bus.request_timeout = Duration::from_secs(2);
    let mut idm = IdmConfig {
        discover_unlisted_idps: false,
        ..IdmConfig::default()
    };
    idm.idp_endpoints.insert("a.example".into(), base);
    cfg.identity = Some(idm);
    let cfg_a = cfg;

    // runtime B (b.example) holds the victim's peer; short timeout for the
    // requests a forged answer must not complete. Each domain has its own node.
    let mut cfg = RuntimeConfig::new("b.example");
    cfg.bus.request_timeout = Duration::from_secs(2);
    let (nodes, rts) = federated(vec![cfg_a, cfg], |_, _| {}).await;
    let (a, b) = (&rts[0], &rts[1]);
    a.idm()
        .unwrap()
        .addr()
        .send(LoginUser {
            idp: "a.example".into(),
            username: "alice".into(),
            password: Secret::new(PASSWORD),
            device_token: None,
        })
        .await
        .unwrap()
        .unwrap();

    let peer_inbox: Inbox = Arc::default();
    let pi = peer_inbox.clone();
    let peer = b
        .spawn_hyperty(HypertySpec::new("peer", "b.example", move |ctx| Recorder {
            ctx,
            inbox: pi.clone(),
        }))
        .await
        .unwrap();
    let victim = a
        .spawn_hyperty(worker("a.example").with_user("user://a.example/alice".parse().unwrap()))
        .await
        .unwrap();
    let evil_inbox: Inbox = Arc::default();
    let (spy, mut spied) = Probe::start();
    let ei = evil_inbox.clone();
    let evil = a
        .spawn_hyperty(HypertySpec::new("evil", "evil.example", move |ctx| Evil {
            ctx,
            inbox: ei.clone(),
            spy: spy.clone(),
        }))
        .await
        .unwrap();
    let base = json!({"victim": victim.to_string(), "peer": peer.to_string(),
                      "idm": a.idm().unwrap().address().to_string()});
    let with = |k: &str, v: Value| {
        let mut x = base.clone();
        x[k] = v;
        x
    };

    // control: the victim's own message reaches the peer with alice's assertion
    let r = a
        .bus()
        .post(request(victim.address(), peer.address(), json!({})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok));
    assert!(
        eventually(TIMEOUT, || async {
            peer_inbox.lock().unwrap().iter().any(carries_alice)
        })
        .await,
        "the interceptor attaches alice's identity to her hyperty's messages"
    );
    peer_inbox.lock().unwrap().clear();
    let rejected_before = a.bus().stats().rejected;

    // 1. post and send with a forged `from`
    let out = attack(a, &evil, with("attack", json!("post-as-victim"))).await;
    assert_eq!(out["code"], 403, "{out}");
    let out = attack(a, &evil, with("attack", json!("send-as-victim")).tap_id(77)).await;
    assert_eq!(out, json!({}));
    // the forged request is answered 403 at the attacker's own address
    assert!(
        eventually(TIMEOUT, || async {
            evil_inbox
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.id == 77 && m.code() == Some(ResponseCode::Forbidden))
        })
        .await,
        "the attacker hears 403"
    );
    // 2. `body.source` naming the victim, and dot segments
    let out = attack(a, &evil, with("attack", json!("source-is-victim"))).await;
    assert_eq!(out["code"], 403, "{out}");
    let out = attack(a, &evil, with("attack", json!("dot-segments"))).await;
    assert!(out["code"] == 403 || out["code"] == "unparsable", "{out}");

    // 3. listeners on the victim's addresses, and removing the victim's
    let out = attack(a, &evil, with("attack", json!("listen-on-victim"))).await;
    assert_eq!(out["codes"], json!([403, 403]), "{out}");
    let out = attack(a, &evil, with("attack", json!("remove-victim-listener"))).await;
    assert_eq!(out["removed"], 0, "{out}");
    let me = a.url().component("test");
    let r = a
        .bus()
        .post(request(&me, victim.address(), json!({})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "the victim still listens");
    assert!(
        spied.drain().is_empty(),
        "the attacker saw nothing of the victim's"
    );

    // 4. the identity module: no assertion for the victim, none for itself
    let out = attack(a, &evil, with("attack", json!("assertion-for-victim"))).await;
    let codes: Vec<u64> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![403, 403, 404, 404], "{out}");
    assert!(!out.to_string().contains("alice"), "{out}");

    // 5. answering a request that was sent to the victim: a local one...
    let ask = request(&me, victim.address(), action("silent")).with_id(4242);
    let pending = a.bus().post(ask);
    let out = attack(
        a,
        &evil,
        with("attack", json!("answer-for-victim"))
            .tap_id(4242)
            .tap("requester", json!(me.to_string())),
    )
    .await;
    assert_eq!(out, json!({}));
    let r = pending.await;
    assert_eq!(
        r.unwrap_err(),
        BusError::Timeout,
        "no forged answer completed it"
    );

    // ...and one that came from the peer's runtime in the other domain
    let far = b.url().component("asker");
    let ask = request(&far, victim.address(), action("silent")).with_id(5151);
    let delivered = a.bus().stats().delivered;
    let pending = b.bus().post(ask);
    // the request has reached the victim before the attacker answers
    assert!(
        eventually(TIMEOUT, || async { a.bus().stats().delivered > delivered }).await,
        "delivered"
    );
    let out = attack(
        a,
        &evil,
        with("attack", json!("answer-for-victim"))
            .tap_id(5151)
            .tap("requester", json!(far.to_string())),
    )
    .await;
    assert_eq!(out, json!({}));
    let r = pending.await;
    assert_eq!(
        r.unwrap_err(),
        BusError::Timeout,
        "no forged answer crossed the domains"
    );

    // control: what it holds, it may use — and its messages carry no assertion
    let out = attack(a, &evil, with("attack", json!("own-message"))).await;
    assert_eq!(out["code"], 200, "{out}");
    let out = attack(a, &evil, with("attack", json!("own-object"))).await;
    assert_eq!(
        (out["listen"].as_bool(), out["code"].as_u64()),
        (Some(true), Some(200)),
        "{out}"
    );

    // nothing from the victim's address reached the peer, and nothing carried alice
    let seen = peer_inbox.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the control messages arrived");
    for m in &seen {
        assert_ne!(
            m.from.as_str(),
            victim.as_str(),
            "forged sender delivered: {m:?}"
        );
        assert!(
            !carries_alice(m),
            "alice's identity leaked: {}",
            m.to_json()
        );
    }
    assert_eq!(
        seen.len(),
        2,
        "only the attacker's own two messages arrived: {seen:?}"
    );
    assert!(a.bus().stats().rejected > rejected_before);

    a.shutdown().await;
    b.shutdown().await;
    stop_all(&nodes).await;
    server.stop(true).await;
}

/// Small builders for the attack values.
trait Tap {
    fn tap(self, k: &str, v: Value) -> Self;
    fn tap_id(self, id: u64) -> Self;
}
impl Tap for Value {
    fn tap(mut self, k: &str, v: Value) -> Value {
        self[k] = v;
        self
    }
    fn tap_id(self, id: u64) -> Value {
        self.tap("id", json!(id))
    }
}
