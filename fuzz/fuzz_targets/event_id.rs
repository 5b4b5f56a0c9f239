//! The event-id rule (`event_id`, `canonical_string`): the id is the SHA-256 of
//! the canonical string; it does not depend on the order or repetition of `to`,
//! nor on `source`/`to` when the event is not addressing sensitive; its hex
//! spelling reads back to the same id.
#![no_main]

use arbitrary::Arbitrary;
use hyperty_actors::events::id::{canonical_string, escape, event_id, EventId, IdFields};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

#[derive(Debug, Arbitrary)]
struct Input {
    event_type: String,
    source: String,
    to: Vec<String>,
    in_response_to: Option<String>,
    generation_timestamp: Option<u64>,
    expiry_timestamp: Option<u64>,
    payload: Option<String>,
    addressing_sensitive: bool,
    other_source: String,
}

fuzz_target!(|input: Input| {
    let to: Vec<&str> = input.to.iter().map(String::as_str).collect();
    let fields = IdFields {
        event_type: &input.event_type,
        source: &input.source,
        to: &to,
        in_response_to: input.in_response_to.as_deref(),
        generation_timestamp: input.generation_timestamp,
        expiry_timestamp: input.expiry_timestamp,
        payload: input.payload.as_deref(),
        addressing_sensitive: input.addressing_sensitive,
    };
    let id = event_id(&fields);
    assert_eq!(event_id(&fields), id);
    let digest: [u8; 32] = Sha256::digest(canonical_string(&fields).as_bytes()).into();
    assert_eq!(id.as_bytes(), &digest);
    assert_eq!(EventId::from_hex(id.hex().as_str()), Some(id));

    // `to` is a set
    let mut shuffled: Vec<&str> = to.iter().rev().copied().collect();
    shuffled.extend(to.first());
    assert_eq!(
        event_id(&IdFields {
            to: &shuffled,
            ..fields
        }),
        id
    );

    if !input.addressing_sensitive {
        let moved = IdFields {
            source: &input.other_source,
            to: &[],
            ..fields
        };
        assert_eq!(event_id(&moved), id);
    }

    // escaping is reversible
    for s in std::iter::once(&input.source).chain(&input.to) {
        let escaped = escape(s);
        let mut back = String::with_capacity(s.len());
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                let next = chars.next();
                assert!(matches!(next, Some('\\' | '|' | ',')), "{escaped:?}");
                back.extend(next);
            } else {
                assert!(!matches!(c, '|' | ','), "unescaped {c:?} in {escaped:?}");
                back.push(c);
            }
        }
        assert_eq!(&back, s);
    }
});
