//! The identity provider's request bodies, over both of its faces: the HTTP
//! routes of `identity::configure` (`POST /idp/users`, `/idp/login`,
//! `/idp/devices`, `/idp/devices/token`, `/idp/assertions`) and the reTHINK
//! `execute {method, params}` messages to `domain-idp://<D>`. Whatever the body,
//! the provider answers (never panics or hangs) with a documented status, and
//! every error is `{code, description}` with the code of the status.
#![no_main]

use actix_web::{test, web, App};
use hyperty::identity::{self, IdentityProvider, IdpConfig, IdpRequest, KdfParams};
use hyperty_actors::message::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const D: &str = "fuzz.test";
const ROUTES: [&str; 5] = [
    "/idp/users",
    "/idp/login",
    "/idp/devices",
    "/idp/devices/token",
    "/idp/assertions",
];
const METHODS: [&str; 8] = [
    "login",
    "registerUser",
    "generateAssertion",
    "validateAssertion",
    "registerDevice",
    "deviceToken",
    "getLoginEndpoint",
    "getJwks",
];

fn provider() -> actix::Addr<IdentityProvider> {
    let config = IdpConfig {
        kdf: KdfParams::fast_insecure(),
        max_users: 8,
        max_devices: 8,
        ..IdpConfig::default()
    };
    match IdentityProvider::new(D, config) {
        Ok(idp) => actix::Actor::start(idp),
        Err(e) => panic!("the fuzz provider does not start: {e}"),
    }
}

fn check_error_body(status: u16, body: &[u8]) {
    if status < 400 {
        return;
    }
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    assert_eq!(v["code"], json!(status), "{v}");
    assert!(v["description"].is_string(), "{v}");
}

async fn http(selector: u8, body: Vec<u8>) {
    let idp = provider();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(idp))
            .configure(identity::configure),
    )
    .await;
    let route = ROUTES[usize::from(selector >> 1) % ROUTES.len()];
    let mut req = test::TestRequest::post()
        .uri(route)
        .insert_header(("content-type", "application/json"));
    if selector & 1 == 1 {
        req = req.insert_header(("authorization", "Bearer not-a-token"));
    }
    let resp = test::call_service(&app, req.set_payload(body).to_request()).await;
    let status = resp.status().as_u16();
    assert!(
        matches!(status, 200 | 201 | 400 | 401 | 404 | 409 | 413 | 429),
        "{route} answered {status}"
    );
    let bytes = test::read_body(resp).await;
    check_error_body(status, &bytes);
}

async fn wire(selector: u8, params: &str) {
    let Ok(params) = serde_json::from_str::<Value>(params) else {
        return;
    };
    let method = METHODS[usize::from(selector >> 1) % METHODS.len()];
    let req = Message::from_value(json!({
        "id": 7, "type": "execute", "from": format!("runtime://{D}/rt/idm"),
        "to": format!("domain-idp://{D}"),
        "body": {"method": method, "params": params},
    }));
    let Ok(req) = req else {
        return;
    };
    let resp = match provider().send(IdpRequest(req)).await {
        Ok(r) => r,
        Err(e) => panic!("the provider is gone: {e}"),
    };
    assert_eq!(resp.id, 7);
    assert_eq!(resp.kind, MessageType::Response);
    let code = resp.code().map(|c| c.as_u16());
    assert!(
        matches!(code, Some(200 | 400 | 401 | 404 | 409 | 429 | 500 | 501)),
        "{method} answered {code:?}"
    );
    if code != Some(200) {
        assert!(resp.body.description.is_some(), "{resp}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // a system per input: its actors (and their timers) end with it
    actix_rt::System::new().block_on(async move {
        if selector & 0x80 == 0 {
            http(selector, body.to_vec()).await;
        } else if let Ok(params) = std::str::from_utf8(body) {
            wire(selector & 0x7f, params).await;
        }
        // let every actor start before the system ends (an actor dropped
        // unstarted would start its timers outside the runtime)
        actix_rt::task::yield_now().await;
    });
});
