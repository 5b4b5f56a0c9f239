use std::sync::{Arc, Mutex};

use super::*;

/// Records what the code asked for.
#[derive(Clone, Default)]
struct Recorder {
    posted: Arc<Mutex<Vec<Message>>>,
    statuses: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Option<String>>>,
    sent: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Option<JsEvents>>>,
}

impl JsHost for Recorder {
    fn post(&self, msg: Message) -> Result<(), String> {
        self.posted.lock().unwrap().push(msg);
        Ok(())
    }
    fn status(&self, status: &str, _: Option<&str>) {
        self.statuses.lock().unwrap().push(status.to_owned());
    }
    fn ws_open(&self, events: JsEvents) -> Result<(), String> {
        *self.events.lock().unwrap() = Some(events);
        Ok(())
    }
    fn ws_send(&self, text: String) -> Result<(), String> {
        self.sent.lock().unwrap().push(text);
        Ok(())
    }
    fn ws_close(&self) {}
    fn failed(&self, reason: &str) {
        *self.failed.lock().unwrap() = Some(reason.to_owned());
    }
}

fn limits() -> JsLimits {
    JsLimits {
        memory_bytes: 4 << 20,
        cpu_per_call: Duration::from_millis(200),
        ..JsLimits::default()
    }
}

fn start(kind: JsKind, code: &str, rec: &Recorder) -> Result<JsSandbox, JsError> {
    JsSandbox::start(
        "t",
        kind,
        "hyperty://a.org/js",
        code.to_owned(),
        serde_json::json!({"url": "ws://127.0.0.1:1/ws"}),
        Box::new(rec.clone()),
        limits(),
    )
}

/// Waits (bounded) until `f` holds.
fn until(f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

const REQUEST: &str =
    r#"{"id":7,"type":"read","from":"hyperty://a.org/me","to":"hyperty://a.org/js"}"#;

#[test]
fn messages_timers_and_replies_go_through_the_message_api_only() {
    let rec = Recorder::default();
    let code = r#"
        var powers = [typeof os, typeof std, typeof require, typeof fetch, typeof XMLHttpRequest,
                      typeof WebSocket, typeof stub].join(",");
        bus.listen(function (m) {
            setTimeout(function () { bus.reply(m, 200, {echo: m.id, powers: powers, me: hyperty.url}); }, 1);
        });
    "#;
    let sb = start(JsKind::Hyperty, code, &rec).unwrap();
    sb.events().send(JsEvent::Message(REQUEST.into())).unwrap();
    assert!(until(|| !rec.posted.lock().unwrap().is_empty()));
    let reply = rec.posted.lock().unwrap()[0].clone();
    assert_eq!(reply.id, 7);
    assert_eq!(reply.to.first().as_str(), "hyperty://a.org/me");
    assert_eq!(
        reply.body.value,
        Some(serde_json::json!({"echo": 7, "me": "hyperty://a.org/js",
            "powers": "undefined,undefined,undefined,undefined,undefined,undefined,undefined"}))
    );
    assert!(rec.failed.lock().unwrap().is_none());
}

#[test]
fn an_infinite_loop_while_loading_is_refused() {
    let rec = Recorder::default();
    let err = start(JsKind::Hyperty, "for (;;) {}", &rec).unwrap_err();
    assert!(matches!(err, JsError::Load(_)), "{err}");
    let err = start(JsKind::Hyperty, "this is not javascript", &rec).unwrap_err();
    assert!(matches!(err, JsError::Load(_)), "{err}");
}

#[test]
fn an_infinite_loop_in_a_handler_stops_only_that_sandbox() {
    let spinning = Recorder::default();
    let sb = start(
        JsKind::Hyperty,
        "bus.listen(function () { while (true) {} });",
        &spinning,
    )
    .unwrap();
    let healthy = Recorder::default();
    let other = start(
        JsKind::Hyperty,
        "bus.listen(function (m) { bus.reply(m, 200); });",
        &healthy,
    )
    .unwrap();
    sb.events().send(JsEvent::Message(REQUEST.into())).unwrap();
    assert!(until(|| spinning.failed.lock().unwrap().is_some()));
    assert!(until(
        || sb.events().send(JsEvent::Connect) == Err(JsError::Stopped)
    ));
    other
        .events()
        .send(JsEvent::Message(REQUEST.into()))
        .unwrap();
    assert!(until(|| healthy.posted.lock().unwrap().len() == 1));
    assert!(healthy.failed.lock().unwrap().is_none());
}

#[test]
fn a_memory_bomb_and_an_exception_end_the_sandbox() {
    let bomb = Recorder::default();
    let sb = start(
        JsKind::Hyperty,
        "bus.listen(function () { var a = []; for (;;) a.push(new Array(100000).fill(1)); });",
        &bomb,
    )
    .unwrap();
    sb.events().send(JsEvent::Message(REQUEST.into())).unwrap();
    assert!(until(|| bomb.failed.lock().unwrap().is_some()));

    let thrower = Recorder::default();
    let sb = start(
        JsKind::Hyperty,
        "bus.listen(function () { throw new Error('boom'); });",
        &thrower,
    )
    .unwrap();
    sb.events().send(JsEvent::Message(REQUEST.into())).unwrap();
    assert!(until(|| thrower.failed.lock().unwrap().is_some()));
    assert!(thrower
        .failed
        .lock()
        .unwrap()
        .as_deref()
        .unwrap()
        .contains("boom"));
}

#[test]
fn a_bad_message_throws_into_the_code_which_may_catch_it() {
    let rec = Recorder::default();
    let code = r#"
        bus.listen(function (m) {
            try { bus.post({type: "nonsense"}); } catch (e) { bus.reply(m, 400, String(e.message)); }
        });
    "#;
    let sb = start(JsKind::Hyperty, code, &rec).unwrap();
    sb.events().send(JsEvent::Message(REQUEST.into())).unwrap();
    assert!(until(|| rec.posted.lock().unwrap().len() == 1));
    let r = rec.posted.lock().unwrap()[0].clone();
    assert!(r
        .body
        .value
        .unwrap()
        .as_str()
        .unwrap()
        .contains("bad message"));
}

#[test]
fn a_stub_connects_only_through_its_host_and_reports_status() {
    let rec = Recorder::default();
    let code = r#"
        stub.onconnect(function () {
            var ws = stub.connect();
            ws.onopen = function () { stub.report("live"); ws.send("hello " + stub.configuration.url); };
            ws.onmessage = function (e) { bus.post(JSON.parse(e.data)); };
        });
        bus.listen(function (m) { }); 
    "#;
    let sb = JsSandbox::start(
        "s",
        JsKind::Stub,
        "hyperty-runtime://a.org/rt/protostub/1",
        code.into(),
        serde_json::json!({"url": "ws://127.0.0.1:1/ws"}),
        Box::new(rec.clone()),
        limits(),
    )
    .unwrap();
    sb.events().send(JsEvent::Connect).unwrap();
    assert!(until(|| rec.events.lock().unwrap().is_some()));
    let socket = rec.events.lock().unwrap().clone().unwrap();
    socket.send(JsEvent::WsOpen).unwrap();
    assert!(until(|| rec.statuses.lock().unwrap().as_slice() == ["live"]));
    assert_eq!(
        rec.sent.lock().unwrap().as_slice(),
        ["hello ws://127.0.0.1:1/ws"]
    );
    socket.send(JsEvent::WsMessage(REQUEST.into())).unwrap();
    assert!(until(|| rec.posted.lock().unwrap().len() == 1));
    drop(sb);
    assert!(until(
        || socket.send(JsEvent::WsOpen) == Err(JsError::Stopped)
    ));
}
