//! Federation over real nodes: each domain its own node on 127.0.0.1:0, linked
//! node to node over WebSocket, mutually authenticated with each domain's keys
//! fetched over HTTP (discovery through `[federation] resolve`).

mod common;

use std::time::Duration;

use common::*;
use hyperty::bridge::BridgeConfig;
use hyperty::federation::LinkState;
use hyperty::identity::{IdmConfig, IssuePeerToken, LoginUser, Secret, ValidateAssertion};
use hyperty::node::NodeHandle;
use hyperty::prelude::*;
use serde_json::{json, Value};

const A: &str = "alpha.test";
const B: &str = "beta.test";
const C: &str = "gamma.test";

fn rt(domain: &str, name: &str) -> String {
    format!("runtime://{domain}/{name}")
}

async fn client(node: &NodeHandle, domain: &str, name: &str) -> WsClient {
    let mut c = WsClient::connect(&node.ws_url()).await;
    c.open(&rt(domain, name)).await;
    c
}

fn live(node: &NodeHandle, peer: &str) -> bool {
    node.state()
        .federation()
        .and_then(|f| f.link_info(peer))
        .is_some_and(|i| i.state == LinkState::Live)
}

#[actix::test]
async fn a_request_crosses_to_another_domain_and_its_answer_comes_back() {
    let nodes = start_domains(&[A, B], |_, cfg| cfg.federation.delivery_timeout_ms = 1_000);
    let (na, nb) = (&nodes[0], &nodes[1]);
    let mut alice = client(na, A, "alice").await;
    let mut bob = client(nb, B, "bob").await;

    // found by discovery: alpha's node asks beta's /.well-known/hyperty/node
    let req = json!({"id": 7, "type": "execute", "from": rt(A, "alice"), "to": rt(B, "bob"),
        "body": {"method": "hello", "params": []}});
    alice.send(req).await;
    let got = bob.expect().await;
    assert_eq!(got["from"], rt(A, "alice"));
    assert_eq!(got["body"]["method"], "hello");
    bob.send(
        json!({"id": 7, "type": "response", "from": rt(B, "bob"), "to": rt(A, "alice"),
        "body": {"code": 200, "value": "hi"}}),
    )
    .await;
    let answer = alice.expect().await;
    assert_eq!(
        (answer["id"].clone(), answer["body"]["value"].clone()),
        (json!(7), json!("hi"))
    );
    assert!(live(na, B) && live(nb, A));

    // an address of a domain nobody serves: 504 naming it, once discovery gave up
    let r = alice
        .request(json!({"type": "read", "from": rt(A, "alice"), "to": "hyperty://nowhere.test/x"}))
        .await;
    assert_eq!(r["body"]["code"], 504, "{r}");
    assert!(r["body"]["description"]
        .as_str()
        .unwrap()
        .contains("nowhere.test"));

    let h = health(na).await;
    assert_eq!(h["peers"][0][0], B, "{h}");
}

#[actix::test]
async fn configured_peers_dialling_each_other_at_once_keep_one_link() {
    let listeners: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let url = |i: usize| format!("ws://{}/federation", listeners[i].local_addr().unwrap());
    let peers = [(A, B, url(1)), (B, A, url(0))];
    let nodes: Vec<NodeHandle> = peers
        .iter()
        .zip(listeners.iter().map(|l| l.try_clone().unwrap()))
        .map(|((own, peer, url), l)| {
            let mut cfg = node_config(own);
            cfg.federation.discovery = false;
            cfg.federation.connect_at_start = true;
            cfg.peers = vec![hyperty::config::PeerEntry {
                domain: (*peer).to_owned(),
                url: url.clone(),
                jwks: None,
            }];
            hyperty::node::start(l, cfg).unwrap()
        })
        .collect();
    let (na, nb) = (&nodes[0], &nodes[1]);
    assert!(eventually(TIMEOUT, || async { live(na, B) && live(nb, A) }).await);
    let info = |n: &NodeHandle, p| n.state().federation().unwrap().link_info(p).unwrap();
    // the lower domain name's dial is the link both keep
    assert!(info(na, B).dialled, "{:?}", info(na, B));
    assert!(!info(nb, A).dialled, "{:?}", info(nb, A));
    let mut alice = client(na, A, "alice").await;
    let mut bob = client(nb, B, "bob").await;
    alice
        .send(json!({"id": 1, "type": "update", "from": rt(A, "alice"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(bob.expect().await["from"], rt(A, "alice"));
    bob.send(json!({"id": 2, "type": "update", "from": rt(B, "bob"), "to": rt(A, "alice")}))
        .await;
    assert_eq!(alice.expect().await["from"], rt(B, "bob"));
    assert!(
        info(na, B).dialled && !info(nb, A).dialled,
        "still the same link"
    );
}

/// A raw WebSocket to `node`'s federation endpoint with `token`; the HTTP status of
/// a refusal, or the socket.
async fn dial_as_peer(
    node: &NodeHandle,
    token: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    (u16, String),
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/federation", node.local_addr())
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            assert!(resp.headers().contains_key("hyperty-peer-token"));
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err((
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("{e}"),
    }
}

async fn peer_token(issuer: &NodeHandle, for_domain: &str) -> String {
    issuer
        .state()
        .idp()
        .send(IssuePeerToken {
            peer: for_domain.to_owned(),
            lifetime_secs: 60,
        })
        .await
        .unwrap()
        .unwrap()
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("no error");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[actix::test]
async fn peers_prove_their_domain_and_may_send_only_for_it() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    // gamma is known to nobody: beta has discovery off and lists only alpha
    let nodes = start_domains(&[A, B, C], |d, cfg| {
        if d == B {
            cfg.federation.discovery = false;
            cfg.peers = vec![hyperty::config::PeerEntry {
                domain: A.to_owned(),
                url: format!("ws://{}/federation", cfg.federation.resolve[A]),
                jwks: None,
            }];
        }
    });
    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);

    // no token, a malformed one, one for another node, one of an unknown domain
    let (code, body) = dial_as_peer(nb, None).await.err().unwrap();
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        dial_as_peer(nb, Some("not.a.token")).await.err().unwrap().0,
        401
    );
    let for_gamma = peer_token(na, C).await;
    let (code, body) = dial_as_peer(nb, Some(&for_gamma)).await.err().unwrap();
    assert_eq!(code, 401, "a token for another audience: {body}");
    let from_gamma = peer_token(nc, B).await;
    let (code, body) = dial_as_peer(nb, Some(&from_gamma)).await.err().unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("unknown domain gamma.test"), "{body}");

    // alpha's real token (beta checks it with alpha's keys over HTTP)
    let mut ws = dial_as_peer(nb, Some(&peer_token(na, B).await))
        .await
        .expect("accepted");
    let mut bob = client(nb, B, "bob").await;
    // a foreign from, a recipient outside beta, a malformed frame: refused, link up
    for (frame, code, says) in [
        (
            json!({"id": 1, "type": "read", "from": "hyperty://gamma.test/x", "to": rt(B, "bob")}),
            403,
            "not of the peer's domain",
        ),
        (
            json!({"id": 2, "type": "read", "from": rt(A, "a"), "to": "hyperty://gamma.test/y"}),
            403,
            "not an address of beta.test",
        ),
        (
            json!({"id": 3, "type": "read", "from": rt(A, "a"), "to": format!("domain://msg-node.{B}/address-allocation")}),
            403,
            "not open to peers",
        ),
        (
            json!({"id": 4, "type": "read", "from": rt(A, "a")}),
            400,
            "to",
        ),
    ] {
        ws.send(Ws::Text(frame.to_string().into())).await.unwrap();
        let r = next_json(&mut ws).await;
        assert_eq!(r["body"]["code"], code, "{r}");
        assert!(
            r["body"]["description"].as_str().unwrap().contains(says),
            "{r}"
        );
    }
    // and a well-formed frame from alpha reaches bob
    ws.send(Ws::Text(
        json!({"id": 5, "type": "update", "from": rt(A, "a"), "to": rt(B, "bob")})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(bob.expect().await["id"], 5);
    let s = health(nb).await["stats"].clone();
    assert!(s["forbidden"].as_u64().unwrap() >= 3, "{s}");
}

#[actix::test]
async fn a_flooding_peer_is_rate_limited_like_a_session() {
    let nodes = start_domains(&[A, B], |d, cfg| {
        if d == B {
            cfg.limits.messages_per_second = 5;
            cfg.limits.burst = 5;
        }
    });
    let (na, nb) = (&nodes[0], &nodes[1]);
    let mut alice = client(na, A, "alice").await;
    let _bob = client(nb, B, "bob").await;
    for i in 0..40u64 {
        alice
            .send(
                json!({"id": 100 + i, "type": "read", "from": rt(A, "alice"), "to": rt(B, "bob")}),
            )
            .await;
    }
    let r = alice.recv_matching(|v| v["body"]["code"] == 429).await;
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{r}"
    );
    assert!(health(nb).await["stats"]["rate_limited"].as_u64().unwrap() > 0);
    assert!(live(na, B), "the link stays up");
}

#[actix::test]
async fn an_observer_in_one_domain_follows_an_object_reported_in_another() {
    let nodes = start_domains(&[A, B], |_, _| {});
    let (na, nb) = (&nodes[0], &nodes[1]);
    let mut reporter = client(nb, B, "rep").await;
    let r = reporter
        .request(json!({"type": "create", "from": rt(B, "rep"),
            "to": format!("domain://msg-node.{B}/address-allocation"),
            "body": {"scheme": "comm", "value": {"number": 1}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let object = r["body"]["value"]["allocated"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let changes = format!("{object}/changes");

    // the observer in alpha subscribes at beta's node: the subscription is held there
    let mut observer = client(na, A, "obs").await;
    let r = observer.subscribe(&rt(A, "obs"), B, &[&changes]).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["from"], format!("domain://msg-node.{B}/sm"));
    for v in 1..=3 {
        reporter
            .send(
                json!({"id": 10 + v, "type": "update", "from": object, "to": changes,
                "body": {"version": v, "attribute": "x", "value": v}}),
            )
            .await;
        let got = observer.expect().await;
        assert_eq!(
            (got["to"].clone(), got["body"]["version"].clone()),
            (json!(changes), json!(v))
        );
    }
    // a peer may subscribe only to its host's resources
    let r = observer
        .subscribe(&rt(A, "obs"), B, &["comm://gamma.test/o/changes"])
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    // unsubscribed: nothing more arrives
    let r = observer
        .request(json!({"type": "unsubscribe", "from": rt(A, "obs"),
            "to": format!("domain://msg-node.{B}/sm"), "body": {"resources": [changes]}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    reporter
        .send(json!({"id": 99, "type": "update", "from": object, "to": changes, "body": {"version": 4}}))
        .await;
    assert!(observer.recv(Duration::from_millis(200)).await.is_none());
}

#[actix::test]
async fn registry_queries_reach_the_other_domain() {
    let nodes = start_domains(&[A, B], |_, _| {});
    let (na, nb) = (&nodes[0], &nodes[1]);
    let mut bob = client(nb, B, "bob").await;
    let hb = bob.allocate(&rt(B, "bob"), B, 1).await.remove(0);
    let registry_b = format!("domain://registry.{B}");
    let user = format!("user://{B}/bob");
    let r = bob
        .request(json!({"type": "create", "from": format!("{}/registry/", rt(B, "bob")), "to": registry_b,
            "body": {"value": {"user": user, "descriptor": "hyperty-catalogue://catalogue.beta.test/.well-known/hyperty/Chat",
                "url": hb, "expires": 3600, "resources": ["chat"], "dataSchemes": ["comm"],
                "runtime": rt(B, "bob"), "status": "live"}}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");

    let mut alice = client(na, A, "alice").await;
    let r = alice
        .request(json!({"type": "read", "from": rt(A, "alice"), "to": registry_b, "body": {"resource": user}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["from"], registry_b);
    assert_eq!(r["body"]["value"][&hb]["status"], "live", "{r}");
    // reads only: a peer cannot write another domain's registry
    let r = alice
        .request(
            json!({"type": "create", "from": rt(A, "alice"), "to": registry_b,
            "body": {"value": {"user": user, "url": hb}}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
}

#[actix::test]
async fn node_policies_decide_per_peer_domain_user_and_type() {
    let dir = std::env::temp_dir().join(format!("hyperty-fed-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policies.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[policies]]
id = "edge"
combining = "deny-overrides"
  [[policies.rules]]
  id = "no-deletes-from-alpha"
  effect = "deny"
  target = {{ types = ["delete"], domains = ["{A}"] }}
  [[policies.rules]]
  id = "not-mallory"
  effect = "deny"
  target = {{ users = ["user://{A}/mallory"] }}
  [[policies.rules]]
  id = "nothing-from-gamma"
  effect = "deny"
  target = {{ domains = ["{C}"] }}
"#
        ),
    )
    .unwrap();
    let nodes = start_domains(&[A, B, C], |d, cfg| {
        if d == B {
            cfg.policy.file = Some(file.clone());
        }
    });
    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut bob = client(nb, B, "bob").await;
    let mut anon = client(na, A, "anon").await;

    let r = anon
        .request(json!({"type": "delete", "from": rt(A, "anon"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    assert_eq!(r["body"]["description"], "Blocked by policy");
    anon.send(json!({"id": 3, "type": "update", "from": rt(A, "anon"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(bob.expect().await["id"], 3, "other types pass");

    // per user: alpha's node vouches for its users, beta decides on them
    let open = |node: &NodeHandle, who: &'static str| {
        let (url, node) = (node.ws_url(), node.state().clone());
        async move {
            let token = {
                use hyperty::identity::{Login, Profile, RegisterUser};
                let pw = Secret::new("correct horse battery");
                node.idp()
                    .send(RegisterUser {
                        username: who.into(),
                        password: pw.clone(),
                        profile: Profile::default(),
                    })
                    .await
                    .unwrap()
                    .unwrap();
                let t = node
                    .idp()
                    .send(Login {
                        username: who.into(),
                        password: pw,
                        device: None,
                        source: None,
                    })
                    .await
                    .unwrap()
                    .unwrap();
                t.token.expose().to_owned()
            };
            let mut c = WsClient::connect(&url).await;
            let r = c
                .request(json!({"type": "open", "from": rt(A, who), "to": "mn:/session", "body": {"idToken": token}}))
                .await;
            assert_eq!(r["body"]["code"], 200, "{r}");
            c
        }
    };
    let mut mallory = open(na, "mallory").await;
    let mut carol = open(na, "carol").await;
    let r = mallory
        .request(json!({"type": "update", "from": rt(A, "mallory"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    carol
        .send(json!({"id": 4, "type": "update", "from": rt(A, "carol"), "to": rt(B, "bob")}))
        .await;
    let got = bob.expect().await;
    assert_eq!(got["id"], 4);
    assert_eq!(got["body"]["assertedIdentity"], format!("user://{A}/carol"));

    // per domain: gamma may send nothing
    let mut gil = client(nc, C, "gil").await;
    let r = gil
        .request(json!({"type": "update", "from": rt(C, "gil"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(r["body"]["code"], 403, "{r}");
    assert!(bob.recv(Duration::from_millis(100)).await.is_none());
}

#[actix::test]
async fn a_lost_peer_answers_504_and_its_link_comes_back() {
    let nodes = start_domains(&[A, B], |_, cfg| {
        cfg.federation.delivery_timeout_ms = 300;
        cfg.federation.reconnect_max_ms = 200;
    });
    let (na, nb) = (&nodes[0], &nodes[1]);
    let b_addr = nb.local_addr();
    let mut alice = client(na, A, "alice").await;
    let mut bob = client(nb, B, "bob").await;
    alice
        .send(json!({"id": 1, "type": "update", "from": rt(A, "alice"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(bob.expect().await["id"], 1);
    assert!(live(na, B));

    nb.stop().await;
    drop(bob);
    assert!(eventually(TIMEOUT, || async { !live(na, B) }).await);
    let r = alice
        .request(json!({"type": "read", "from": rt(A, "alice"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(r["body"]["code"], 504, "{r}");
    assert_eq!(r["from"], rt(B, "bob"));
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("domain unreachable: beta.test"),
        "{r}"
    );

    // beta's node restarts on its address: the link comes back by itself
    let mut cfg = node_config(B);
    cfg.federation.resolve = na.state().config().federation.resolve.clone();
    let nb = hyperty::node::start(std::net::TcpListener::bind(b_addr).unwrap(), cfg).unwrap();
    let mut bob = client(&nb, B, "bob").await;
    // frames sent while the link is down wait for it
    alice
        .send(json!({"id": 2, "type": "update", "from": rt(A, "alice"), "to": rt(B, "bob")}))
        .await;
    assert_eq!(bob.expect().await["id"], 2);
    assert!(eventually(TIMEOUT, || async { live(na, B) }).await);
    let opened = na
        .state()
        .federation()
        .unwrap()
        .link_info(B)
        .unwrap()
        .opened;
    assert!(opened >= 2, "a new connection: {opened}");
}

/// A runtime of `domain` attached to `node`.
async fn runtime(node: &NodeHandle, domain: &str, idm: Option<IdmConfig>) -> RuntimeHandle {
    let mut cfg = RuntimeConfig::new(domain);
    cfg.identity = idm;
    let rt = Runtime::start(cfg).unwrap();
    rt.attach_node(BridgeConfig::new(node.ws_url()))
        .await
        .unwrap();
    rt
}

#[actix::test]
async fn a_webinos_event_reaches_three_domains_once_each_with_bcc_narrowed() {
    let nodes = start_domains(&[A, B, C], |_, _| {});
    let ra = runtime(&nodes[0], A, None).await;
    let rb = runtime(&nodes[1], B, None).await;
    let rb2 = runtime(&nodes[1], B, None).await;
    let rc = runtime(&nodes[2], C, None).await;
    let alice = party(&ra, A).await;
    let mut bob = party(&rb, B).await;
    let mut carol = party(&rb2, B).await;
    let mut dave = party(&rc, C).await;

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
    assert_eq!(b.event.id(), id, "same id across domains");
    assert!(
        b.event.addressing().bcc().is_empty(),
        "beta never sees gamma's bcc"
    );
    let c = carol.inbox.recv(TIMEOUT).await.expect("carol got it");
    assert!(c.event.addressing().bcc().is_empty());
    let d = dave.inbox.recv(TIMEOUT).await.expect("dave got it");
    assert_eq!(d.event.addressing().bcc(), std::slice::from_ref(&dave.addr));
    assert_eq!(d.event.payload(), Some("lunch?"));

    let mut delivered = false;
    while let Some(r) = reports.recv(TIMEOUT).await {
        if let ReportKind::Delivery { recipient, .. } = &r.kind {
            assert_eq!(recipient, &bob.addr);
            delivered = true;
            break;
        }
    }
    assert!(
        delivered,
        "bob's delivery notification came back across the link"
    );
    assert!(bob.inbox.recv(Duration::from_millis(50)).await.is_none());
    assert!(dave.inbox.recv(Duration::from_millis(10)).await.is_none());
}

#[actix::test]
async fn an_assertion_from_alpha_is_validated_in_beta_with_keys_fetched_over_http() {
    let nodes = start_domains(&[A, B], |_, _| {});
    let (na, nb) = (&nodes[0], &nodes[1]);
    let _ = user_token(na, "alice").await;
    let idm = |trusted: &NodeHandle| {
        let mut cfg = IdmConfig {
            discover_unlisted_idps: false,
            ..IdmConfig::default()
        };
        cfg.idp_endpoints.insert(A.to_owned(), trusted.http_url());
        cfg
    };
    let ra = runtime(na, A, Some(idm(na))).await;
    let rb = runtime(nb, B, Some(idm(na))).await;
    ra.idm()
        .unwrap()
        .addr()
        .send(LoginUser {
            idp: A.into(),
            username: "alice".into(),
            password: Secret::new("correct horse battery"),
            device_token: None,
        })
        .await
        .unwrap()
        .unwrap();
    let h = ra
        .spawn_hyperty(worker(A).with_user(format!("user://{A}/alice").parse().unwrap()))
        .await
        .unwrap();
    let w = rb.spawn_hyperty(worker(B)).await.unwrap();
    // alice's request crosses alpha's node, the link, beta's node; the worker echoes
    let r = ra
        .bus()
        .post(request(h.address(), w.address(), json!({"q": 1})))
        .await
        .unwrap();
    assert_eq!(r.code(), Some(ResponseCode::Ok), "{}", r.to_json());
    let identity = r.body.value.unwrap()["body"]["identity"].clone();
    assert_eq!(
        identity["userProfile"]["userURL"],
        format!("user://{A}/alice")
    );
    let v = rb
        .idm()
        .unwrap()
        .addr()
        .send(ValidateAssertion {
            assertion: identity["assertion"].as_str().unwrap().to_owned(),
            idp: Some(A.into()),
            audience: None,
        })
        .await
        .unwrap()
        .expect("valid with alpha's keys");
    assert_eq!(v.user.as_str(), format!("user://{A}/alice"));
    assert_eq!(v.hyperty.as_ref(), Some(&h));
}

#[actix::test]
async fn made_up_domains_never_crowd_out_real_peers() {
    // Alpha knows beta from [[peers]] and may hold one discovered link; every
    // x<n>.test resolves to alpha's own node, whose document names alpha: no node
    // of x<n>.test runs there.
    let listeners: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addr = |i: usize| listeners[i].local_addr().unwrap().to_string();
    let made_up: Vec<String> = (0..5).map(|i| format!("x{i}.test")).collect();
    let mut ca = node_config(A);
    ca.federation.max_peers = 1;
    ca.federation.retire_after_ms = 200;
    ca.federation.delivery_timeout_ms = 200;
    for d in &made_up {
        ca.federation.resolve.insert(d.clone(), addr(0));
    }
    // a discovered domain whose node is down: nothing listens there
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap().to_string();
    drop(closed);
    ca.federation.resolve.insert("down.test".to_owned(), down);
    ca.peers = vec![hyperty::config::PeerEntry {
        domain: B.to_owned(),
        url: format!("ws://{}/federation", addr(1)),
        jwks: None,
    }];
    let mut cb = node_config(B);
    cb.federation.resolve.insert(A.to_owned(), addr(0));
    let mut ls = listeners.into_iter();
    let na = hyperty::node::start(ls.next().unwrap(), ca).unwrap();
    let nb = hyperty::node::start(ls.next().unwrap(), cb).unwrap();
    let mut alice = client(&na, A, "alice").await;
    let mut bob = client(&nb, B, "bob").await;
    let links = |n: &NodeHandle| n.state().federation().unwrap().links();

    // each made-up domain is refused, and its link gives its place back
    for d in &made_up {
        let r = alice
            .request(
                json!({"type": "read", "from": rt(A, "alice"), "to": format!("hyperty://{d}/h")}),
            )
            .await;
        assert_eq!(r["body"]["code"], 504, "{r}");
        let why = r["body"]["description"].as_str().unwrap();
        assert!(
            why.contains(d.as_str()) && why.contains("names another domain"),
            "{r}"
        );
        assert!(
            eventually(TIMEOUT, || async { links(&na).iter().all(|(l, _)| l == B) }).await,
            "{:?}",
            links(&na)
        );
    }
    // asked again soon, it is refused without another discovery
    let r = alice
        .request(json!({"type": "read", "from": rt(A, "alice"), "to": "hyperty://x0.test/h"}))
        .await;
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("no node was found there recently"),
        "{r}"
    );

    // a discovered peer that is down holds the one discovered place while a
    // request waits for it...
    alice
        .send(json!({"id": 20, "type": "read", "from": rt(A, "alice"), "to": "hyperty://down.test/h"}))
        .await;
    assert!(
        eventually(TIMEOUT, || async {
            links(&na).iter().any(|(d, _)| d == "down.test")
        })
        .await
    );
    // ...so another discovered domain finds no place, but the configured peer does
    let r = alice
        .request(json!({"type": "read", "from": rt(A, "alice"), "to": "hyperty://other.test/h"}))
        .await;
    assert_eq!(r["body"]["code"], 503, "{r}");
    assert!(
        r["body"]["description"]
            .as_str()
            .unwrap()
            .contains("other.test"),
        "{r}"
    );
    alice
        .send(json!({"id": 9, "type": "update", "from": rt(A, "alice"), "to": rt(B, "bob")}))
        .await;
    let got = bob.expect().await;
    assert_eq!(got["id"], 9, "{got}");
    assert!(live(&na, B));
    // the waiting request gets 504, then the down peer's link retires
    let r = alice.expect().await;
    assert_eq!(
        (r["id"].clone(), r["body"]["code"].clone()),
        (json!(20), json!(504)),
        "{r}"
    );
    assert!(
        eventually(TIMEOUT, || async {
            links(&na).iter().all(|(d, _)| d != "down.test")
        })
        .await,
        "{:?}",
        links(&na)
    );
}

/// The next change of `h` (subscription notices skipped).
async fn next_version(h: &mut Observer) -> u64 {
    loop {
        match tokio::time::timeout(TIMEOUT, h.next()).await {
            Ok(Some(SyncEvent::Changed(c))) => return c.version,
            Ok(Some(_)) => continue,
            other => panic!("no change in time: {other:?}"),
        }
    }
}

/// Asserts that session `c` of `node`'s domain was sent nothing `unexpected`
/// before the node's answer to one more request of its.
async fn heard_nothing(
    c: &mut WsClient,
    domain: &str,
    name: &str,
    unexpected: impl Fn(&Value) -> bool,
) {
    let r = c
        .request(json!({"type": "unsubscribe", "from": rt(domain, name),
            "to": format!("domain://msg-node.{domain}/sm"),
            "body": {"resources": [format!("{}/nothing", rt(domain, name))]}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    while let Some(f) = c.recv(Duration::ZERO).await {
        assert!(!unexpected(&f), "{name} heard {f}");
    }
}

/// Subscription admission holds across domains: of the sessions of beta that
/// subscribe to an object reported in alpha, only those its reporter accepted
/// hear it — however they subscribed (at alpha's node through their own, or at
/// their own) — and one that leaves hears nothing more, even if it keeps its
/// node subscription.
#[actix::test]
async fn only_admitted_observers_in_another_domain_hear_an_object() {
    let (nodes, rts) = federated(
        vec![RuntimeConfig::new(A), RuntimeConfig::new(B)],
        |_, _| {},
    )
    .await;
    let nb = &nodes[1];
    let (alice, _) = inbox_hyperty(&rts[0], A, None).await;
    let (bob, _) = inbox_hyperty(&rts[1], B, None).await;
    let reporter = alice
        .syncher()
        .create(ObjectSpec::new("room", "comm").with_data(json!({"n": 0})))
        .await
        .unwrap();
    let url = reporter.url().clone();
    let channels = [format!("{url}/changes"), format!("{url}/children/")];
    let heard = |f: &Value| f["from"] == url.as_str();

    // eve, in beta, subscribes at alpha's node and at her own, and is never accepted
    let mut eve = client(nb, B, "eve").await;
    for domain in [A, B] {
        let r = eve
            .subscribe(&rt(B, "eve"), domain, &[&channels[0], &channels[1]])
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
    }
    // carol, a runtime-core observer in beta, subscribes and is accepted
    let mut carol = client(nb, B, "carol").await;
    let carol_h = format!("hyperty://{B}/carol-{}", uuid::Uuid::new_v4());
    let r = carol
        .request(json!({"type": "subscribe", "from": rt(B, "carol"), "to": format!("domain://msg-node.{B}/sm"),
            "body": {"resources": [carol_h], "source": format!("{}/address-allocation", rt(B, "carol"))}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let carol_sm = format!("{}/sm", rt(B, "carol"));
    let r = carol
        .request(
            json!({"type": "subscribe", "from": carol_sm, "to": format!("domain://msg-node.{A}/sm"),
            "body": {"resources": channels, "source": carol_h}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let r = carol
        .request(
            json!({"type": "subscribe", "from": carol_sm, "to": format!("{url}/subscription"),
            "body": {"subscriber": carol_h}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    // bob, our observer in beta
    let mut obs = bob.syncher().subscribe(&url).await.unwrap();

    for n in 1..=3 {
        reporter.set("n", n).await.unwrap();
    }
    for v in 1..=3 {
        assert_eq!(next_version(&mut obs).await, v);
    }
    for v in 1..=3 {
        let f = carol
            .recv_matching(|f| f["to"] == channels[0] && f["type"] == "update")
            .await;
        assert_eq!(f["body"]["version"], v, "{f}");
    }
    // bob's runtime and eve share beta's node and the link's frames: by now eve
    // was sent whatever she would be sent
    heard_nothing(&mut eve, B, "eve", heard).await;

    // carol leaves at the reporter, but keeps her node subscriptions
    let r = carol
        .request(
            json!({"type": "unsubscribe", "from": carol_sm, "to": format!("{url}/subscription"),
            "body": {"source": carol_h}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    heard_nothing(&mut carol, B, "carol", heard).await;
    reporter.set("n", 4).await.unwrap();
    assert_eq!(next_version(&mut obs).await, 4);
    heard_nothing(&mut carol, B, "carol", heard).await;
    heard_nothing(&mut eve, B, "eve", heard).await;
    for rt in &rts {
        rt.shutdown().await;
    }
    stop_all(&nodes).await;
}
