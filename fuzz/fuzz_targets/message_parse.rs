//! `Message::parse`, the one place untrusted JSON becomes a reTHINK message: it
//! never panics, and what it accepts serialises to wire text that parses back to
//! the same message (and to the same text).
#![no_main]

use hyperty_actors::message::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = Message::parse(text) else {
        return;
    };
    let wire = msg.to_json();
    let again = match Message::parse(&wire) {
        Ok(m) => m,
        Err(e) => panic!("{wire} (from {text}) does not parse back: {e}"),
    };
    assert_eq!(again, msg, "the round trip changed {text}");
    assert_eq!(again.to_json(), wire);
});
