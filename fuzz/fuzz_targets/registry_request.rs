//! Registry requests (`create`/`read`/`update`/`delete` to `domain://registry.<D>`),
//! through the registry actor's request path (parse → logic → table). The input
//! is a series of frames, one per line, each sent by one of three callers (two
//! identities and an anonymous runtime, chosen by the line's first byte). Every
//! request gets a well-formed answer with a documented code; writes by one
//! caller never change an entry another caller holds; the table stays bounded.
#![no_main]

use std::sync::Arc;

use actix::prelude::{Actor, Context, Handler};
use hyperty::domain_registry::{
    Caller, DomainRegistry, DomainRegistryConfig, GetByUrl, GetStats, ManualClock,
    RegistryNotification, RegistryRequest,
};
use hyperty_actors::message::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const D: &str = "fuzz.test";
const MAX_ENTRIES: usize = 16;
const PER_CALLER: usize = 4;

struct Sink;

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<RegistryNotification> for Sink {
    type Result = ();
    fn handle(&mut self, _: RegistryNotification, _: &mut Context<Self>) {}
}

/// Caller `n`: alice and bob own the URLs with `/a` and `/b` after the domain,
/// the anonymous runtime those with `/c`.
fn caller(n: u8) -> (Caller, &'static str) {
    let (identity, runtime, mark) = match n % 3 {
        0 => (Some("user://fuzz.test/alice"), "runtime://fuzz.test/a", "a"),
        1 => (Some("user://fuzz.test/bob"), "runtime://fuzz.test/b", "b"),
        _ => (None, "runtime://fuzz.test/c", "c"),
    };
    let prefix = format!("://{D}/{mark}");
    let caller = Caller {
        identity: identity.map(Arc::from),
        runtime: Some(Arc::from(runtime)),
        owns: Arc::new(move |url: &str| url.contains(&prefix)),
    };
    (caller, runtime)
}

async fn run(data: &[u8]) {
    let config = DomainRegistryConfig {
        max_entries: MAX_ENTRIES,
        max_entries_per_user: PER_CALLER,
        ..DomainRegistryConfig::default()
    };
    let clock = ManualClock::starting_now();
    let registry = match DomainRegistry::new(D, config, Sink.start().recipient(), Arc::new(clock)) {
        Ok(r) => r.start(),
        Err(e) => panic!("the fuzz registry does not start: {e}"),
    };
    for (i, line) in data.split(|&b| b == b'\n').take(64).enumerate() {
        let Some((&who, frame)) = line.split_first() else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(frame) else {
            continue;
        };
        let Ok(mut msg) = Message::parse(text) else {
            continue;
        };
        let (caller, runtime) = caller(who);
        msg.id = i as u64 + 1;
        if let Ok(from) = format!("{runtime}/registry").parse() {
            msg.from = from;
        }
        // the entry the request may touch, as it was before
        let target = [msg
            .body
            .value
            .as_ref()
            .and_then(|v| v.get("url"))
            .and_then(Value::as_str)]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .chain(
            msg.body
                .resource
                .as_ref()
                .and_then(|r| r.iter().next().cloned()),
        )
        .next();
        let before = match &target {
            Some(url) => registry
                .send(GetByUrl { url: url.clone() })
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let owns = caller.owns.clone();
        let resp = match registry
            .send(RegistryRequest {
                msg: msg.clone(),
                caller,
            })
            .await
        {
            Ok(r) => r,
            Err(e) => panic!("the registry is gone: {e}"),
        };
        assert_eq!(resp.id, msg.id);
        assert_eq!(resp.kind, MessageType::Response);
        assert_eq!(resp.to.first(), &msg.from);
        let code = resp.code().map(|c| c.as_u16());
        assert!(
            matches!(code, Some(200 | 400 | 403 | 404 | 408 | 429)),
            "{text} answered {code:?}"
        );
        if code != Some(200) {
            assert!(resp.body.description.is_some(), "{resp}");
        }
        if let (Some(url), Some(old)) = (&target, &before) {
            if !owns(url)
                && matches!(
                    msg.kind,
                    MessageType::Create | MessageType::Update | MessageType::Delete
                )
            {
                let after = registry
                    .send(GetByUrl { url: url.clone() })
                    .await
                    .ok()
                    .and_then(Result::ok);
                assert_eq!(
                    after.as_ref(),
                    Some(old),
                    "{text} changed an entry its caller does not own"
                );
            }
        }
        let stats = match registry.send(GetStats).await {
            Ok(s) => s,
            Err(e) => panic!("the registry is gone: {e}"),
        };
        assert!(stats.entries <= MAX_ENTRIES);
    }
}

fuzz_target!(|data: &[u8]| {
    // a system per input: its actors (and their timers) end with it
    actix_rt::System::new().block_on(async {
        run(data).await;
        actix_rt::task::yield_now().await;
    });
});
