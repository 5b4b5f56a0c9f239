//! The domain registry embedded in the node, reached over the node's WebSocket and
//! HTTP: create/read/keep-alive/404/408 and status notifications to /sm subscribers.

mod common;

use common::*;
use serde_json::json;

const D: &str = "reg.test";

fn rt(name: &str) -> String {
    format!("runtime://{D}/{name}")
}

#[actix::test]
async fn registry_over_the_wire() {
    let node = start_node(D, |_| {});
    let registry = format!("domain://registry.{D}");
    let mut a = WsClient::connect(&node.ws_url()).await;
    a.open(&rt("a")).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let user = format!("user://{D}/alice");

    // a watcher subscribes to the status channel of A's hyperty
    let mut w = WsClient::connect(&node.ws_url()).await;
    w.open(&rt("w")).await;
    let registration = format!("{ha}/registration");
    assert_eq!(
        w.subscribe(&rt("w"), D, &[&registration]).await["body"]["code"],
        200
    );

    let r = a
        .request(json!({"type": "create", "from": format!("{}/registry/", rt("a")), "to": registry,
            "body": {"value": {"user": user, "descriptor": "hyperty-catalogue://catalogue.reg.test/.well-known/hyperty/Chat",
                "url": ha, "expires": 3600, "resources": ["chat"], "dataSchemes": ["comm"],
                "runtime": rt("a"), "status": "live"}, "policy": "policy"}}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    assert_eq!(r["from"], registry);
    let n = w.expect().await;
    assert_eq!(
        (n["type"].clone(), n["from"].clone(), n["to"].clone()),
        (json!("update"), json!(registry), json!(registration))
    );
    assert_eq!(n["body"]["value"], "live");

    // read by user: an object, not a string
    let r = a
        .request(
            json!({"type": "read", "from": rt("a"), "to": registry, "body": {"resource": user}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 200);
    assert!(r["body"]["value"].is_object());
    assert_eq!(r["body"]["value"][&ha]["status"], "live");
    // with criteria
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": registry,
            "body": {"resource": user, "criteria": {"resources": ["chat"], "dataSchemes": ["comm"]}}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": registry,
            "body": {"resource": user, "criteria": {"resources": ["video"]}}}))
        .await;
    assert_eq!(r["body"]["code"], 404);
    // by hyperty URL, keep-alive, unknown
    let r = a
        .request(json!({"type": "read", "from": rt("a"), "to": registry, "body": {"resource": ha}}))
        .await;
    assert_eq!(r["body"]["value"]["runtime"], rt("a"));
    let r = a
        .request(json!({"type": "update", "from": rt("a"), "to": registry, "body": {"resource": ha, "value": {"status": "live"}, "method": "refresh"}}))
        .await;
    assert_eq!(r["body"]["code"], 200);
    let r = a.request(json!({"type": "read", "from": rt("a"), "to": format!("{registry}/"), "body": {"resource": format!("hyperty://{D}/nobody")}})).await;
    assert_eq!(r["body"]["code"], 404);
    // bad request names the field
    let r = a.request(json!({"type": "create", "from": rt("a"), "to": registry, "body": {"value": {"url": ha}}})).await;
    assert_eq!(r["body"]["code"], 400);

    // readable over HTTP too
    let body = http_get(&format!(
        "{}/registry/hyperty/url/{}",
        node.http_url(),
        enc(&ha)
    ))
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "live", "{v}");

    // A's runtime drops: its entries become disconnected, readers get 408
    a.drop_socket().await;
    let n = w.expect().await;
    assert_eq!(n["body"]["value"], "disconnected");
    let r = w
        .request(
            json!({"type": "read", "from": rt("w"), "to": registry, "body": {"resource": user}}),
        )
        .await;
    assert_eq!(r["body"]["code"], 408);
    assert_eq!(r["body"]["description"], "Temporarily Unavailable");
}

// ---- who may write, and who may read over HTTP ----

fn required(c: &mut hyperty::config::NodeConfig) {
    c.auth.mode = hyperty::config::AuthMode::Required;
}

/// A session of runtime `name`, authenticated with `token` (anonymous if `None`).
async fn session(node: &hyperty::node::NodeHandle, name: &str, token: Option<&str>) -> WsClient {
    let mut c = WsClient::connect(&node.ws_url()).await;
    let body = token.map_or(json!({}), |t| json!({ "idToken": t }));
    let r = c
        .request(json!({"type": "open", "from": rt(name), "to": "mn:/session", "body": body}))
        .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    c
}

fn hyperty_entry(url: &str, user: &str, runtime: &str) -> serde_json::Value {
    json!({"value": {"user": user, "url": url, "runtime": runtime, "status": "live",
        "descriptor": "hyperty-catalogue://catalogue.reg.test/.well-known/hyperty/Chat",
        "expires": 3600, "resources": ["chat"], "dataSchemes": ["comm"]}})
}

async fn registry_call(
    c: &mut WsClient,
    from: &str,
    kind: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    c.request(
        json!({"type": kind, "from": from, "to": format!("domain://registry.{D}"), "body": body}),
    )
    .await
}

/// Asserts a 403 whose description is there.
fn forbidden(r: &serde_json::Value) {
    assert_eq!(r["body"]["code"], 403, "{r}");
    assert!(
        r["body"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{r}"
    );
}

#[actix::test]
async fn another_session_cannot_overwrite_update_or_delete_alices_entry() {
    let node = start_node(D, required);
    let alice_token = user_token(&node, "alice").await;
    let bob_token = user_token(&node, "bob").await;
    let alice = format!("user://{D}/alice");
    let bob = format!("user://{D}/bob");

    let mut a = session(&node, "alice-rt", Some(&alice_token)).await;
    let ha = a.allocate(&rt("alice-rt"), D, 1).await.remove(0);
    let r = registry_call(
        &mut a,
        &rt("alice-rt"),
        "create",
        hyperty_entry(&ha, &alice, &rt("alice-rt")),
    )
    .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let read = json!({"resource": ha});
    let before = registry_call(&mut a, &rt("alice-rt"), "read", read.clone()).await;
    assert_eq!(before["body"]["code"], 200, "{before}");

    let mut b = session(&node, "bob-rt", Some(&bob_token)).await;
    let attempts = [
        ("create", hyperty_entry(&ha, &bob, &rt("bob-rt"))),
        ("create", hyperty_entry(&ha, &alice, &rt("bob-rt"))),
        (
            "update",
            json!({"resource": ha, "value": {"status": "disconnected", "user": bob}}),
        ),
        ("update", json!({"resource": ha, "method": "refresh"})),
        (
            "update",
            json!({"resource": ha, "value": "disconnected", "attribute": "status"}),
        ),
        ("delete", json!({"resource": ha})),
        ("delete", json!({"value": {"user": alice, "url": ha}})),
    ];
    for (kind, body) in attempts.iter().cloned() {
        forbidden(&registry_call(&mut b, &rt("bob-rt"), kind, body).await);
    }
    // reads stay open: bob discovers alice's hyperty, unchanged
    let after = registry_call(&mut b, &rt("bob-rt"), "read", read.clone()).await;
    assert_eq!(after["body"]["value"], before["body"]["value"]);
    let by_user = registry_call(&mut b, &rt("bob-rt"), "read", json!({"resource": alice})).await;
    assert_eq!(by_user["body"]["value"][&ha], before["body"]["value"]);

    // alice herself may update and delete it
    let r = registry_call(
        &mut a,
        &rt("alice-rt"),
        "update",
        json!({"resource": ha, "method": "refresh"}),
    )
    .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let r = registry_call(&mut a, &rt("alice-rt"), "delete", json!({"resource": ha})).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
}

#[actix::test]
async fn an_anonymous_session_cannot_touch_entries_of_others() {
    // auth optional: both are anonymous; entries are held by their runtimes
    let node = start_node(D, |_| {});
    let mut a = session(&node, "a", None).await;
    let ha = a.allocate(&rt("a"), D, 1).await.remove(0);
    let user = format!("user://{D}/alice");
    let r = registry_call(
        &mut a,
        &rt("a"),
        "create",
        hyperty_entry(&ha, &user, &rt("a")),
    )
    .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let before = registry_call(&mut a, &rt("a"), "read", json!({"resource": ha})).await;

    let mut m = session(&node, "mallory", None).await;
    forbidden(
        &registry_call(
            &mut m,
            &rt("mallory"),
            "create",
            hyperty_entry(&ha, &user, &rt("mallory")),
        )
        .await,
    );
    forbidden(
        &registry_call(
            &mut m,
            &rt("mallory"),
            "update",
            json!({"resource": ha, "value": {"status": "disconnected"}}),
        )
        .await,
    );
    forbidden(&registry_call(&mut m, &rt("mallory"), "delete", json!({"resource": ha})).await);
    let after = registry_call(&mut m, &rt("mallory"), "read", json!({"resource": ha})).await;
    assert_eq!(after["body"]["value"], before["body"]["value"]);
}

#[actix::test]
async fn entries_only_for_addresses_the_session_owns_and_under_its_own_user() {
    let node = start_node(D, required);
    let alice_token = user_token(&node, "alice").await;
    let bob_token = user_token(&node, "bob").await;
    let alice = format!("user://{D}/alice");
    let bob = format!("user://{D}/bob");
    let mut a = session(&node, "alice-rt", Some(&alice_token)).await;
    let ha = a.allocate(&rt("alice-rt"), D, 1).await.remove(0);
    let mut b = session(&node, "bob-rt", Some(&bob_token)).await;
    let hb = b.allocate(&rt("bob-rt"), D, 1).await.remove(0);

    // bob registers alice's address (not registered yet), or one nobody holds
    forbidden(
        &registry_call(
            &mut b,
            &rt("bob-rt"),
            "create",
            hyperty_entry(&ha, &bob, &rt("bob-rt")),
        )
        .await,
    );
    let nobodys = format!("hyperty://{D}/nobody-holds-this");
    forbidden(
        &registry_call(
            &mut b,
            &rt("bob-rt"),
            "create",
            hyperty_entry(&nobodys, &bob, &rt("bob-rt")),
        )
        .await,
    );
    // bob registers his own address for alice
    forbidden(
        &registry_call(
            &mut b,
            &rt("bob-rt"),
            "create",
            hyperty_entry(&hb, &alice, &rt("bob-rt")),
        )
        .await,
    );
    // a data object reported by alice's hyperty
    let r = b
        .request(json!({"type": "create", "from": rt("bob-rt"),
            "to": format!("domain://msg-node.{D}/address-allocation"),
            "body": {"scheme": "comm", "value": {"number": 1}}}))
        .await;
    let objects: Vec<String> = serde_json::from_value(r["body"]["value"]["allocated"].clone())
        .unwrap_or_else(|e| panic!("{e}: {r}"));
    let room = json!({"value": {"url": objects[0], "name": "room", "reporter": ha,
        "schema": "hyperty-catalogue://catalogue.reg.test/.well-known/dataschema/Communication"}});
    forbidden(&registry_call(&mut b, &rt("bob-rt"), "create", room).await);
    // nothing of it was registered
    for url in [&ha, &nobodys, &hb, &objects[0]] {
        let r = registry_call(&mut b, &rt("bob-rt"), "read", json!({"resource": url})).await;
        assert_eq!(r["body"]["code"], 404, "{url}: {r}");
    }
    // what bob may do: his address, his user, his reporter
    let r = registry_call(
        &mut b,
        &rt("bob-rt"),
        "create",
        hyperty_entry(&hb, &bob, &rt("bob-rt")),
    )
    .await;
    assert_eq!(r["body"]["code"], 200, "{r}");
    let room = json!({"value": {"url": objects[0], "name": "room", "reporter": hb,
        "schema": "hyperty-catalogue://catalogue.reg.test/.well-known/dataschema/Communication"}});
    let r = registry_call(&mut b, &rt("bob-rt"), "create", room).await;
    assert_eq!(r["body"]["code"], 200, "{r}");
}

#[actix::test]
async fn the_cap_counts_per_identity_whatever_users_the_entries_name() {
    let node = start_node(D, |c| {
        required(c);
        c.registry.max_entries_per_user = 2;
    });
    let token = user_token(&node, "alice").await;
    let alice = format!("user://{D}/alice");
    let mut a = session(&node, "alice-rt", Some(&token)).await;
    let urls = a.allocate(&rt("alice-rt"), D, 3).await;
    for url in &urls[..2] {
        let r = registry_call(
            &mut a,
            &rt("alice-rt"),
            "create",
            hyperty_entry(url, &alice, &rt("alice-rt")),
        )
        .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
    }
    // naming another user does not open a new allowance
    let r = registry_call(
        &mut a,
        &rt("alice-rt"),
        "create",
        hyperty_entry(&urls[2], &format!("user://{D}/other"), &rt("alice-rt")),
    )
    .await;
    forbidden(&r);
    let r = registry_call(
        &mut a,
        &rt("alice-rt"),
        "create",
        hyperty_entry(&urls[2], &alice, &rt("alice-rt")),
    )
    .await;
    assert_eq!(r["body"]["code"], 429, "{r}");

    // an anonymous runtime naming a different user each time is one caller too
    let node = start_node(D, |c| c.registry.max_entries_per_user = 2);
    let mut m = session(&node, "m", None).await;
    let urls = m.allocate(&rt("m"), D, 3).await;
    let codes: Vec<_> = {
        let mut codes = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let r = registry_call(
                &mut m,
                &rt("m"),
                "create",
                hyperty_entry(url, &format!("user://{D}/u{i}"), &rt("m")),
            )
            .await;
            codes.push(r["body"]["code"].clone());
        }
        codes
    };
    assert_eq!(codes, vec![json!(200), json!(200), json!(429)]);
}

#[actix::test]
async fn http_reads_need_a_token_when_auth_is_required() {
    let node = start_node(D, required);
    let token = user_token(&node, "alice").await;
    let alice = format!("user://{D}/alice");
    let mut a = session(&node, "alice-rt", Some(&token)).await;
    let ha = a.allocate(&rt("alice-rt"), D, 1).await.remove(0);
    let r = registry_call(
        &mut a,
        &rt("alice-rt"),
        "create",
        hyperty_entry(&ha, &alice, &rt("alice-rt")),
    )
    .await;
    assert_eq!(r["body"]["code"], 200, "{r}");

    let base = format!("{}/registry", node.http_url());
    let by_user = format!(
        "{base}/hyperty/user/{}",
        alice.replace(':', "%3A").replace('/', "%2F")
    );
    for url in [base.clone(), by_user.clone()] {
        let (status, body) = http_get_json(&url, None).await;
        assert_eq!(status, 401, "{url}: {body}");
        assert_eq!(body["code"], 401);
        assert!(
            body["description"]
                .as_str()
                .is_some_and(|d| d.contains("Bearer")),
            "{body}"
        );
        let (status, body) = http_get_json(&url, Some("not.a.token")).await;
        assert_eq!(status, 401, "{url}: {body}");
        assert!(
            body.get(&ha).is_none() && body.get("entries").is_none(),
            "{body}"
        );
    }
    let (status, body) = http_get_json(&by_user, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[&ha]["status"], "live");
    let (status, body) = http_get_json(&base, Some(&token)).await;
    assert_eq!((status, body["entries"].clone()), (200, json!(1)));

    // public_reads opens them
    let open = start_node(D, |c| {
        required(c);
        c.registry.public_reads = true;
    });
    let (status, body) = http_get_json(&format!("{}/registry", open.http_url()), None).await;
    assert_eq!((status, body["entries"].clone()), (200, json!(0)), "{body}");
}
