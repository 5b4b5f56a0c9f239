//! The domain registry behind a real actix-web server: create through reTHINK
//! messages, read over HTTP, keep-alive, 404, 408, expiry and status notifications.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::ServerHandle, web, App, HttpServer};
use common::enc;
use hyperty::domain_registry::{
    configure, Caller, DomainRegistry, DomainRegistryConfig, HttpReads, ManualClock,
    RegistryNotification, RegistryRequest, RuntimeDisconnected, RuntimeReconnected, Sweep,
};
use hyperty::prelude::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const REGISTRY: &str = "domain://registry.example.com";
const ALICE: &str = "user://idp.example.org/alice";
const RT: &str = "runtime://example.com/rt-1";
const WAIT: Duration = Duration::from_secs(5);

/// Stands in for the node: forwards every notification to a channel.
struct Notifications(mpsc::UnboundedSender<Message>);

impl Actor for Notifications {
    type Context = Context<Self>;
}

impl Handler<RegistryNotification> for Notifications {
    type Result = ();
    fn handle(&mut self, RegistryNotification(m): RegistryNotification, _: &mut Context<Self>) {
        let _ = self.0.send(m);
    }
}

struct Node {
    registry: Addr<DomainRegistry>,
    clock: ManualClock,
    notes: mpsc::UnboundedReceiver<Message>,
    http: SocketAddr,
    server: ServerHandle,
    client: awc::Client,
    next_id: u64,
}

async fn start() -> Node {
    let clock = ManualClock::starting_now();
    let (tx, notes) = mpsc::unbounded_channel();
    let registry = DomainRegistry::new(
        "example.com",
        DomainRegistryConfig::default(),
        Notifications(tx).start().recipient(),
        Arc::new(clock.clone()),
    )
    .expect("valid registry")
    .start();
    let data = web::Data::new(registry.clone());
    let reads = web::Data::new(HttpReads::Public);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(reads.clone())
            .configure(configure)
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("bind");
    let http = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Node {
        registry,
        clock,
        notes,
        http,
        server: handle,
        client: awc::Client::default(),
        next_id: 0,
    }
}

fn hyperty(n: u32, runtime: &str, resources: &[&str], expires: u64) -> Value {
    json!({"value": {
        "url": format!("hyperty://example.com/h{n}"), "user": ALICE,
        "descriptor": "hyperty-catalogue://catalogue.example.com/.well-known/hyperty/Chat",
        "expires": expires, "resources": resources, "dataSchemes": ["comm"],
        "runtime": runtime, "status": "live", "guid": "user-guid://alice",
    }, "policy": "policy"})
}

impl Node {
    async fn send(&mut self, kind: MessageType, body: Value) -> Message {
        self.next_id += 1;
        let mut req = Message::new(
            kind,
            "runtime://example.com/rt-1/registry"
                .parse()
                .expect("address"),
            REGISTRY.parse::<Address>().expect("address"),
        )
        .with_id(self.next_id);
        req.body = Body::from_map(body.as_object().cloned().expect("object")).expect("body");
        let resp = self
            .registry
            .send(RegistryRequest {
                msg: req,
                // the session of runtime rt-1, holding the hyperties it registers
                caller: Caller {
                    identity: None,
                    runtime: Some(RT.into()),
                    owns: Arc::new(|url: &str| {
                        url.starts_with("hyperty://example.com/")
                            || url.starts_with("comm://example.com/")
                    }),
                },
            })
            .await
            .expect("registry alive");
        assert_eq!(resp.id, self.next_id);
        resp
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("http://{}{path}", self.http);
        let mut resp = self
            .client
            .get(&url)
            .timeout(WAIT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{url}"
        );
        let body = resp.body().await.expect("body");
        (status, serde_json::from_slice(&body).expect("JSON body"))
    }

    async fn note(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.notes.recv())
            .await
            .expect("a notification in time")
            .expect("notifications alive")
    }

    async fn expect_note(&mut self, url: &str, status: &str) {
        let n = self.note().await;
        assert_eq!(n.kind, MessageType::Update);
        assert_eq!(n.from.as_str(), REGISTRY);
        assert_eq!(n.to.first().as_str(), format!("{url}/registration"));
        assert_eq!(n.body.value, Some(json!(status)));
        assert_eq!(n.body.extra.get("attribute"), Some(&json!("status")));
        assert!(n.id > 0);
    }
}

#[actix::test]
async fn created_entries_are_readable_over_http() {
    let mut node = start().await;
    let created = node
        .send(MessageType::Create, hyperty(1, RT, &["chat"], 3600))
        .await;
    assert_eq!(created.code(), Some(ResponseCode::Ok));
    assert_eq!(created.from.as_str(), REGISTRY);
    node.send(
        MessageType::Create,
        hyperty(2, RT, &["chat", "audio"], 3600),
    )
    .await;
    node.send(
        MessageType::Create,
        json!({"value": {"url": "comm://example.com/room-1", "name": "room",
            "schema": "hyperty-catalogue://catalogue.example.com/.well-known/dataschema/Communication",
            "reporter": "hyperty://example.com/h1", "runtime": RT, "expires": 3600}}),
    )
    .await;

    let (code, all) = node
        .get(&format!("/registry/hyperty/user/{}", enc(ALICE)))
        .await;
    assert_eq!(code, 200);
    let all = all.as_object().expect("an object keyed by hyperty URL");
    assert_eq!(all.len(), 2);
    assert_eq!(all["hyperty://example.com/h1"]["userID"], ALICE);
    assert_eq!(all["hyperty://example.com/h1"]["status"], "live");

    let (code, audio) = node
        .get(&format!(
            "/registry/hyperty/user/{}?resources=audio&dataSchemes=comm",
            enc(ALICE)
        ))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        audio
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["hyperty://example.com/h2".to_owned()])
    );

    let (code, one) = node
        .get(&format!(
            "/registry/hyperty/url/{}",
            enc("hyperty://example.com/h1")
        ))
        .await;
    assert_eq!(code, 200);
    assert_eq!(one["hypertyID"], "hyperty://example.com/h1");
    assert_eq!(one["expires"], 3600);

    let (code, obj) = node
        .get(&format!(
            "/registry/dataobject/url/{}",
            enc("comm://example.com/room-1")
        ))
        .await;
    assert_eq!(code, 200);
    assert_eq!(obj["name"], "room");
    assert_eq!(obj["reporter"], "hyperty://example.com/h1");

    let (code, named) = node.get("/registry/dataobject/name/room").await;
    assert_eq!(code, 200);
    assert!(named["comm://example.com/room-1"].is_object());
    let (code, reported) = node
        .get(&format!(
            "/registry/dataobject/reporter/{}",
            enc("hyperty://example.com/h1")
        ))
        .await;
    assert_eq!(code, 200);
    assert!(reported["comm://example.com/room-1"].is_object());
    let (code, by_guid) = node
        .get(&format!(
            "/registry/hyperty/guid/{}",
            enc("user-guid://alice")
        ))
        .await;
    assert_eq!((code, by_guid.as_object().map(|o| o.len())), (200, Some(2)));
    let (code, by_email) = node
        .get(&format!(
            "/registry/hyperty/email/{}",
            enc("alice@idp.example.org")
        ))
        .await;
    assert_eq!(
        (code, by_email.as_object().map(|o| o.len())),
        (200, Some(2))
    );

    let (code, stats) = node.get("/registry").await;
    assert_eq!(code, 200);
    assert_eq!(stats["entries"], 3);
    assert_eq!(stats["hyperties"], 2);
    assert_eq!(stats["users"], 1);
    node.server.stop(true).await;
}

#[actix::test]
async fn unknown_entries_are_404_over_http_and_on_the_wire() {
    let mut node = start().await;
    for path in [
        format!(
            "/registry/hyperty/user/{}",
            enc("user://idp.example.org/nobody")
        ),
        format!(
            "/registry/hyperty/url/{}",
            enc("hyperty://example.com/none")
        ),
        format!(
            "/registry/dataobject/url/{}",
            enc("comm://example.com/none")
        ),
        "/registry/dataobject/name/none".to_owned(),
    ] {
        let (code, body) = node.get(&path).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(
            body,
            json!({"code": 404, "description": "Not Found"}),
            "{path}"
        );
    }
    // a hyperty URL is not a data object, and the reverse
    node.send(MessageType::Create, hyperty(1, RT, &["chat"], 60))
        .await;
    let (code, _) = node
        .get(&format!(
            "/registry/dataobject/url/{}",
            enc("hyperty://example.com/h1")
        ))
        .await;
    assert_eq!(code, 404);
    let resp = node
        .send(
            MessageType::Read,
            json!({"resource": "hyperty://example.com/none"}),
        )
        .await;
    assert_eq!(resp.code(), Some(ResponseCode::NotFound));
    assert_eq!(resp.body.description_text(), Some("Not Found"));
    node.server.stop(true).await;
}

#[actix::test]
async fn a_disconnected_runtime_makes_reads_408_until_it_returns() {
    let mut node = start().await;
    node.send(MessageType::Create, hyperty(1, RT, &["chat"], 3600))
        .await;
    node.expect_note("hyperty://example.com/h1", "live").await;

    let changed = node
        .registry
        .send(RuntimeDisconnected {
            runtime: RT.to_owned(),
        })
        .await
        .expect("alive");
    assert_eq!(changed, 1);
    node.expect_note("hyperty://example.com/h1", "disconnected")
        .await;

    let user_path = format!("/registry/hyperty/user/{}", enc(ALICE));
    let (code, body) = node.get(&user_path).await;
    assert_eq!(code, 408);
    assert_eq!(body["code"], 408);
    assert_eq!(body["description"], "Temporarily Unavailable");
    assert_eq!(
        body["value"]["hyperty://example.com/h1"]["status"],
        "disconnected"
    );
    let resp = node
        .send(MessageType::Read, json!({"resource": ALICE}))
        .await;
    assert_eq!(resp.code(), Some(ResponseCode::RequestTimeout));
    assert_eq!(
        resp.body.description_text(),
        Some("Temporarily Unavailable")
    );
    assert!(resp.body.value.expect("matches")["hyperty://example.com/h1"].is_object());

    node.registry
        .send(RuntimeReconnected {
            runtime: RT.to_owned(),
        })
        .await
        .expect("alive");
    node.expect_note("hyperty://example.com/h1", "live").await;
    let (code, _) = node.get(&user_path).await;
    assert_eq!(code, 200);
    node.server.stop(true).await;
}

#[actix::test]
async fn keep_alives_hold_an_entry_and_expiry_removes_it_with_a_notification() {
    let mut node = start().await;
    node.send(MessageType::Create, hyperty(1, RT, &["chat"], 30))
        .await;
    node.expect_note("hyperty://example.com/h1", "live").await;
    let url_path = format!("/registry/hyperty/url/{}", enc("hyperty://example.com/h1"));

    // runtime-core's keep-alive, twice, each before the lifetime runs out
    for _ in 0..2 {
        node.clock.advance(Duration::from_secs(20));
        let resp = node
            .send(
                MessageType::Update,
                json!({"resource": "hyperty://example.com/h1",
                       "value": {"status": "live"}, "method": "refresh"}),
            )
            .await;
        assert_eq!(resp.code(), Some(ResponseCode::Ok));
        assert_eq!(
            resp.body.value,
            Some(json!({"statusChanged": false, "status": "live", "message": "Keep alive"}))
        );
        assert_eq!(node.registry.send(Sweep).await.expect("alive"), 0);
    }
    let (code, _) = node.get(&url_path).await;
    assert_eq!(code, 200, "40 s after a 30 s registration, kept alive");

    node.clock.advance(Duration::from_secs(30));
    assert_eq!(node.registry.send(Sweep).await.expect("alive"), 1);
    node.expect_note("hyperty://example.com/h1", "disconnected")
        .await;
    let (code, _) = node.get(&url_path).await;
    assert_eq!(code, 404);
    let resp = node
        .send(
            MessageType::Update,
            json!({"resource": "hyperty://example.com/h1"}),
        )
        .await;
    assert_eq!(
        resp.code(),
        Some(ResponseCode::NotFound),
        "a keep-alive after expiry is 404, so the runtime registers again"
    );
    node.server.stop(true).await;
}

#[actix::test]
async fn status_updates_and_unregister_notify_registration_subscribers() {
    let mut node = start().await;
    node.send(MessageType::Create, hyperty(1, RT, &["chat"], 3600))
        .await;
    node.expect_note("hyperty://example.com/h1", "live").await;
    // the spec's unregister form
    let resp = node
        .send(
            MessageType::Update,
            json!({"resource": "/hyperty/hyperty://example.com/h1",
                   "value": "disconnected", "attribute": "status"}),
        )
        .await;
    assert_eq!(resp.code(), Some(ResponseCode::Ok));
    node.expect_note("hyperty://example.com/h1", "disconnected")
        .await;
    // runtime-core's resume
    node.send(
        MessageType::Update,
        json!({"resource": "hyperty://example.com/h1",
               "value": {"status": "live", "user": ALICE}}),
    )
    .await;
    node.expect_note("hyperty://example.com/h1", "live").await;
    // delete
    let resp = node
        .send(
            MessageType::Delete,
            json!({"value": {"user": ALICE, "url": "hyperty://example.com/h1"}}),
        )
        .await;
    assert_eq!(resp.code(), Some(ResponseCode::Ok));
    node.expect_note("hyperty://example.com/h1", "disconnected")
        .await;
    node.server.stop(true).await;
}
