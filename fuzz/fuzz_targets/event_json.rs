//! Event JSON (`RawEvent::parse`, `Event::from_raw`): never panics; the id of
//! the content is stable; a valid event serialises to JSON that parses back to
//! the same event with the same id; ids survive their hex spelling.
#![no_main]

use hyperty_actors::events::{Event, EventId, RawEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = RawEvent::parse(text) else {
        return;
    };
    let id = raw.compute_id();
    assert_eq!(raw.compute_id(), id, "the id of {text} is not stable");
    let _ = raw.reference_id();
    let Ok(event) = Event::from_raw(&raw) else {
        return;
    };
    assert_eq!(raw.check().ok(), Some(event.id()));
    let wire = event.to_json();
    let again = match Event::from_json(&wire) {
        Ok(e) => e,
        Err(e) => panic!("{wire} (from {text}) does not parse back: {e}"),
    };
    assert_eq!(again, event, "the round trip changed {text}");
    assert_eq!(again.id(), event.id());
    let reparsed = RawEvent::parse(&wire).map(|r| r.compute_id());
    assert_eq!(reparsed.ok(), Some(event.id()));
    let hex = event.id().hex();
    assert_eq!(EventId::from_hex(hex.as_str()), Some(event.id()));
});
