//! Event ids: vectors derived from the spec text (canonical strings written out by
//! hand, digests computed independently), and the `event-id` line tool.

use hyperty::prelude::*;
use serde_json::json;

fn fields<'a>(
    event_type: &'a str,
    source: &'a str,
    to: &'a [&'a str],
    payload: Option<&'a str>,
    sensitive: bool,
) -> IdFields<'a> {
    IdFields {
        event_type,
        source,
        to,
        in_response_to: None,
        generation_timestamp: None,
        expiry_timestamp: None,
        payload,
        addressing_sensitive: sensitive,
    }
}

fn canonical(f: &IdFields<'_>) -> String {
    hyperty_actors::events::id::canonical_string(f)
}

#[test]
fn a_simple_sensitive_event() {
    let mut f = fields(
        "chatMessage",
        "hyperty://a.org/alice",
        &["hyperty://b.org/bob"],
        Some("Hello!"),
        true,
    );
    f.generation_timestamp = Some(1_700_000_000_000);
    assert_eq!(
        canonical(&f),
        "chatMessage|hyperty://a.org/alice|hyperty://b.org/bob||1700000000000||Hello!"
    );
    assert_eq!(
        event_id(&f).to_string(),
        "c75848b60dc10156862a848d3a6fea0ce757b6bf57f788bdf61883815acd0820"
    );
}

#[test]
fn the_insensitive_form_ignores_source_and_to() {
    let mut f = fields(
        "chatMessage",
        "hyperty://a.org/alice",
        &["hyperty://b.org/bob"],
        Some("Hello!"),
        false,
    );
    f.generation_timestamp = Some(1_700_000_000_000);
    assert_eq!(canonical(&f), "chatMessage||1700000000000||Hello!");
    let id = event_id(&f);
    assert_eq!(
        id.to_string(),
        "117638c425f5bb702186bf3dfc855dc2ca44e7d111646233dd9cbaed2f314f63"
    );
    f.source = "hyperty://z.org/other";
    f.to = &["hyperty://z.org/1", "hyperty://z.org/2"];
    assert_eq!(event_id(&f), id);
}

#[test]
fn backslash_bar_and_comma_are_escaped_in_source_and_to_only() {
    let f = fields(
        "t",
        r"hyperty://a.org/a\b|c,d",
        &[
            "hyperty://b.org/x,y",
            "hyperty://b.org/p|q",
            r"hyperty://b.org/back\slash",
        ],
        Some(r"p|a,y\load"),
        true,
    );
    // `to` is sorted before escaping: "back\slash" < "p|q" < "x,y"
    assert_eq!(
        canonical(&f),
        r"t|hyperty://a.org/a\\b\|c\,d|hyperty://b.org/back\\slash,hyperty://b.org/p\|q,hyperty://b.org/x\,y||||p|a,y\load"
    );
    assert_eq!(
        event_id(&f).to_string(),
        "ce1f32d1b0161ffd95ced9696466ee887051bb6af857a790c7c61fc113772016"
    );
}

#[test]
fn to_is_sorted_by_code_point_not_utf16() {
    // U+1F600 is a surrogate pair (D83D DE00) in UTF-16 and sorts before U+E000
    // and U+FF5E there; by code point it sorts last.
    let f = fields(
        "t",
        "hyperty://a.org/s",
        &[
            "hyperty://b.org/\u{1F600}",
            "hyperty://b.org/\u{FF5E}",
            "hyperty://b.org/\u{E000}",
        ],
        None,
        true,
    );
    assert_eq!(
        canonical(&f),
        "t|hyperty://a.org/s|hyperty://b.org/\u{E000},hyperty://b.org/\u{FF5E},hyperty://b.org/\u{1F600}||||"
    );
    let id = event_id(&f).to_string();
    assert_eq!(
        id,
        "2c21a1f1411b4671d5068e930f368e846383c72b7876d199398d1e57d57ad7d8"
    );
    // what a UTF-16-ordering implementation would compute instead
    assert_ne!(
        id,
        "16bc9da9a0ad579e370490af797fb6351f7b17e862aded96285879d0d8f1997e"
    );
}

#[test]
fn absent_fields_are_empty_strings_and_zero_is_a_value() {
    let base = fields("t", "hyperty://a.org/s", &["hyperty://b.org/r"], None, true);
    assert_eq!(
        canonical(&base),
        "t|hyperty://a.org/s|hyperty://b.org/r||||"
    );
    assert_eq!(
        event_id(&base).to_string(),
        "81f711ee4eb90dcb3fb6711a694ac7f5b5013d05a05c90da4780fa04d5f99e92"
    );
    // an empty payload hashes like an absent one
    let mut empty = base;
    empty.payload = Some("");
    assert_eq!(event_id(&empty), event_id(&base));
    // timestamp 0 is not absent
    let mut zero = empty;
    zero.generation_timestamp = Some(0);
    zero.expiry_timestamp = Some(0);
    assert_eq!(
        canonical(&zero),
        "t|hyperty://a.org/s|hyperty://b.org/r||0|0|"
    );
    assert_eq!(
        event_id(&zero).to_string(),
        "339229da2bcc09761c90e6727adcb3775f3bf6047c1900b9413751424598d342"
    );
}

#[test]
fn in_response_to_and_both_timestamps() {
    let irt = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
    let f = IdFields {
        event_type: "reply",
        source: "hyperty://b.org/r",
        to: &["hyperty://a.org/s"],
        in_response_to: Some(irt),
        generation_timestamp: Some(1),
        expiry_timestamp: Some(2),
        payload: Some("ok"),
        addressing_sensitive: true,
    };
    assert_eq!(
        canonical(&f),
        format!("reply|hyperty://b.org/r|hyperty://a.org/s|{irt}|1|2|ok")
    );
    assert_eq!(
        event_id(&f).to_string(),
        "ca0a950cb20cbde7a1dee10cffcc71370840057b837470862112fd852e072f27"
    );
}

#[test]
fn to_is_a_set() {
    let f = fields(
        "t",
        "hyperty://a.org/s",
        &[
            "hyperty://b.org/2",
            "hyperty://b.org/1",
            "hyperty://b.org/2",
        ],
        None,
        true,
    );
    assert_eq!(
        canonical(&f),
        "t|hyperty://a.org/s|hyperty://b.org/1,hyperty://b.org/2||||"
    );
    assert_eq!(
        event_id(&f).to_string(),
        "4c010544e67d65219018f12b92ff08257b44579f7e8b71603ec5895f35f89ee3"
    );
    let g = fields(
        "t",
        "hyperty://a.org/s",
        &["hyperty://b.org/1", "hyperty://b.org/2"],
        None,
        true,
    );
    assert_eq!(event_id(&g), event_id(&f));
}

#[test]
fn the_string_is_hashed_as_utf8() {
    let f = fields(
        "t",
        "hyperty://a.org/s",
        &["hyperty://b.org/r"],
        Some("h\u{e9}llo \u{1D11E}"),
        true,
    );
    assert_eq!(
        event_id(&f).to_string(),
        "c3f3aff9940370c969f30edc5550543c05607fc4d501c23dcfe64cff0669d901"
    );
}

#[test]
fn the_id_function_accepts_any_strings_even_an_empty_to() {
    let f = fields("t", "s", &[], None, true);
    assert_eq!(canonical(&f), "t|s|||||");
    assert_eq!(
        event_id(&f).to_string(),
        "d8fe833b69419ab86a84b326573124213391a8b87b402dc06066edf5f63e8c92"
    );
}

#[test]
fn events_built_through_the_api_have_the_vector_ids() {
    let a = |s: &str| -> Address { s.parse().unwrap() };
    let ev = Event::builder("chatMessage", a("hyperty://a.org/alice"))
        .to(a("hyperty://b.org/bob"))
        .cc(a("hyperty://c.org/carol")) // cc and bcc do not enter the id
        .bcc(a("hyperty://d.org/dave"))
        .generated_at(1_700_000_000_000)
        .payload("Hello!")
        .build()
        .unwrap();
    assert_eq!(
        ev.id().to_string(),
        "c75848b60dc10156862a848d3a6fea0ce757b6bf57f788bdf61883815acd0820"
    );
    let astral = Event::builder("t", a("hyperty://a.org/s"))
        .to(a("hyperty://b.org/\u{1F600}"))
        .to(a("hyperty://b.org/\u{FF5E}"))
        .to(a("hyperty://b.org/\u{E000}"))
        .build()
        .unwrap();
    assert_eq!(
        astral.id().to_string(),
        "2c21a1f1411b4671d5068e930f368e846383c72b7876d199398d1e57d57ad7d8"
    );
    // the JSON form carries the id and parses back to the same event
    let back = Event::from_json(&ev.to_json()).unwrap();
    assert_eq!(back.id(), ev.id());
}

fn run_lines(input: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    event_id_lines(input, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn event_id_lines_answers_every_line_in_order() {
    let good = json!({
        "type": "chatMessage", "source": "hyperty://a.org/alice", "to": ["hyperty://b.org/bob"],
        "cc": null, "bcc": [], "inResponseTo": null, "generationTimestamp": 1_700_000_000_000u64,
        "expiryTimestamp": null, "deliveryNotificationWanted": true, "addressingSensitive": true,
        "forwarding": null, "payload": "Hello!"
    });
    let mut with_id = good.clone();
    with_id["id"] = json!("c75848b60dc10156862a848d3a6fea0ce757b6bf57f788bdf61883815acd0820");
    let mut wrong_id = good.clone();
    wrong_id["id"] = json!("0".repeat(64));
    let mut upper_id = good.clone();
    upper_id["id"] = json!("C75848B60DC10156862A848D3A6FEA0CE757B6BF57F788BDF61883815ACD0820");
    let mut bad_type = good.clone();
    bad_type["type"] = json!("chat-message");
    let mut empty_to = good.clone();
    empty_to["to"] = json!([]);
    let mut no_sensitivity = good.clone();
    no_sensitivity
        .as_object_mut()
        .unwrap()
        .remove("addressingSensitive");
    let mut bad_irt = good.clone();
    bad_irt["inResponseTo"] = json!("xyz");
    let mut forwarded = good.clone();
    forwarded["forwarding"] =
        json!({"source": "hyperty://b.org/bob", "to": ["hyperty://c.org/c"], "timestamp": 5});
    let mut not_addresses = good.clone(); // the tool does not check address syntax
    not_addresses["source"] = json!("A");
    not_addresses["to"] = json!(["I", "B", "B"]);

    let mut input = String::new();
    for v in [
        &good,
        &with_id,
        &wrong_id,
        &upper_id,
        &bad_type,
        &empty_to,
        &no_sensitivity,
        &bad_irt,
        &forwarded,
        &not_addresses,
    ] {
        input.push_str(&v.to_string());
        input.push('\n');
    }
    input.push_str("not json\n");
    input.push_str("   \n");
    input.push_str("[1,2]\r\n");
    input.push_str(&good.to_string()); // last line without a newline
    let out = run_lines(input.as_bytes());
    let id = "c75848b60dc10156862a848d3a6fea0ce757b6bf57f788bdf61883815acd0820";
    assert_eq!(out.len(), 14, "{out:#?}");
    assert_eq!(out[0], id);
    assert_eq!(out[1], id);
    assert!(out[2].starts_with("invalid: id mismatch"), "{}", out[2]);
    assert!(out[3].starts_with("invalid: field 'id'"), "{}", out[3]);
    assert!(out[4].starts_with("invalid: field 'type'"), "{}", out[4]);
    assert!(out[5].starts_with("invalid: field 'to'"), "{}", out[5]);
    assert_eq!(out[6], "invalid: missing field 'addressingSensitive'");
    assert!(
        out[7].starts_with("invalid: field 'inResponseTo'"),
        "{}",
        out[7]
    );
    assert_eq!(out[8], id, "forwarding does not change the id");
    assert_eq!(
        out[9],
        event_id(
            &fields("chatMessage", "A", &["B", "I"], Some("Hello!"), true)
                .with_gen(1_700_000_000_000)
        )
        .to_string()
    );
    assert!(
        out[10].starts_with("invalid: malformed JSON"),
        "{}",
        out[10]
    );
    assert_eq!(out[11], "invalid: empty line");
    assert_eq!(out[12], "invalid: an event must be a JSON object");
    assert_eq!(out[13], id);
}

trait WithGen {
    fn with_gen(self, ms: u64) -> Self;
}
impl WithGen for IdFields<'_> {
    fn with_gen(mut self, ms: u64) -> Self {
        self.generation_timestamp = Some(ms);
        self
    }
}

#[test]
fn event_id_lines_survives_hostile_input() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\xff\xfe not utf-8\n");
    let long = vec![b'x'; hyperty_actors::events::json::MAX_LINE_LEN + 10];
    input.extend_from_slice(&long);
    input.push(b'\n');
    input.extend_from_slice(br#"{"type":"t","source":"s","to":["x"],"addressingSensitive":false}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"type":"t","source":"s","to":["x"],"addressingSensitive":false,"generationTimestamp":-1}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"type":"t","source":"s","to":"x","addressingSensitive":false}"#);
    input.push(b'\n');
    let out = run_lines(&input);
    assert_eq!(out.len(), 5, "{out:#?}");
    assert_eq!(out[0], "invalid: line is not UTF-8");
    assert!(
        out[1].starts_with("invalid: line longer than"),
        "{}",
        out[1]
    );
    assert_eq!(
        out[2],
        event_id(&fields("t", "s", &["x"], None, false)).to_string()
    );
    assert!(
        out[3].starts_with("invalid: field 'generationTimestamp'"),
        "{}",
        out[3]
    );
    assert!(out[4].starts_with("invalid: field 'to'"), "{}", out[4]);
    // empty input: empty output
    assert!(run_lines(b"").is_empty());
}
