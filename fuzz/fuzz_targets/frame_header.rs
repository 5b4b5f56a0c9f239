//! The node's frame-header parser (`Header::parse`) reads only `id`, `type`,
//! `from`, `to` and the body's byte range. It never panics; whenever the full
//! parser accepts the same text both agree on those fields; the body range
//! points at a JSON object; and splicing the asserted identity into the frame
//! keeps it a valid message whose `assertedIdentity` is the node's value.
#![no_main]

use hyperty::node::frame::{with_asserted_identity, Header};
use hyperty_actors::message::{Message, To};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const IDENTITY: &str = "user://fuzz.test/alice";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(h) = Header::parse(text) else {
        return;
    };
    if let Some((start, end)) = h.body {
        let body = text
            .get(start..end)
            .unwrap_or_else(|| panic!("body range {start}..{end} is not a slice of {text}"));
        assert!(
            serde_json::from_str::<Map<String, Value>>(body).is_ok(),
            "body range {start}..{end} of {text} is not an object"
        );
    }
    let Ok(m) = Message::parse(text) else {
        return;
    };
    assert_eq!(h.id, m.id);
    assert_eq!(h.kind, m.kind);
    assert_eq!(h.from, m.from.as_str());
    let to: Vec<&str> = h.to.iter().collect();
    let full_to: Vec<&str> = match &m.to {
        To::One(a) => vec![a.as_str()],
        To::Many(v) => v.iter().map(|a| a.as_str()).collect(),
    };
    assert_eq!(to, full_to);

    let stamped = with_asserted_identity(text, h.body, &json!(IDENTITY).to_string());
    let s = match Message::parse(&stamped) {
        Ok(s) => s,
        Err(e) => panic!("stamping {text} gave {stamped}, which does not parse: {e}"),
    };
    assert_eq!(s.id, m.id);
    assert_eq!(s.from, m.from);
    assert_eq!(s.body.extra.get("assertedIdentity"), Some(&json!(IDENTITY)));
});
