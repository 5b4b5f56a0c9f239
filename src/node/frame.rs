//! The node's edge parser: only what routing needs.
//!
//! [`Header::parse`] reads `id`, `type`, `from` and `to` of a wire frame, checks
//! them exactly as [`Message::parse`](hyperty_actors::message::Message::parse) would
//! (positive integer id, non-empty type, valid addresses, non-empty `to`, `body` an
//! object when present) and skips over the body without building it. The frame text
//! itself is what gets forwarded, unchanged (design.md §6).

use std::borrow::Cow;

use hyperty_actors::address::Address;
use hyperty_actors::message::{MessageType, ParseError, MAX_MESSAGE_ID};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

/// `to` of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToRef<'a> {
    /// One recipient.
    One(Cow<'a, str>),
    /// Several recipients.
    Many(Vec<Cow<'a, str>>),
}

impl ToRef<'_> {
    /// All recipients.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            ToRef::One(a) => (Some(a.as_ref()), None),
            ToRef::Many(v) => (None, Some(v.iter().map(|c| c.as_ref()))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The first recipient.
    pub fn first(&self) -> &str {
        match self {
            ToRef::One(a) => a,
            ToRef::Many(v) => v.first().map(|c| c.as_ref()).unwrap_or_default(),
        }
    }
}

/// The routing header of a frame, borrowed from its text where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// Correlation id.
    pub id: u64,
    /// `type`.
    pub kind: MessageType,
    /// Sender.
    pub from: Cow<'a, str>,
    /// Recipient(s).
    pub to: ToRef<'a>,
    /// Byte range of the `body` object in the frame text, if there is one.
    pub body: Option<(usize, usize)>,
}

/// What could be read of a frame that failed validation, to address the 400.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    /// The id, if it was a valid one.
    pub id: Option<u64>,
    /// The sender, if it was a string.
    pub from: Option<String>,
}

fn wrong(field: &str, expected: &'static str) -> ParseError {
    ParseError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

fn str_of<'a>(field: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, ParseError> {
    <Cow<'a, str>>::deserialize(raw).map_err(|_| wrong(field, "a string"))
}

fn addr<'a>(field: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, ParseError> {
    let s = str_of(field, raw)?;
    Address::check(&s).map_err(|error| ParseError::Address {
        field: field.to_owned(),
        error,
    })?;
    Ok(s)
}

fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

impl<'a> Header<'a> {
    /// Parses and validates the header of `text`. On error, returns what could be read
    /// so the error response can still be addressed.
    pub fn parse(text: &'a str) -> Result<Header<'a>, (ParseError, Partial)> {
        if !text.trim_start().starts_with('{') {
            let err = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => ParseError::NotAnObject,
                Err(e) => ParseError::Json(e.to_string()),
            };
            return Err((err, Partial::default()));
        }
        let raw: RawHeader<'a> = serde_json::from_str(text)
            .map_err(|e| (ParseError::Json(e.to_string()), Partial::default()))?;
        let mut partial = Partial::default();
        let fail = |e: ParseError, p: &Partial| Err((e, p.clone()));

        let id = match present(raw.id) {
            None => return fail(ParseError::Missing("id"), &partial),
            Some(r) => match serde_json::from_str::<u64>(r.get()) {
                Ok(i) if i > 0 && i <= MAX_MESSAGE_ID => i,
                Ok(_) => return fail(ParseError::InvalidId, &partial),
                Err(_) if serde_json::from_str::<f64>(r.get()).is_ok() => {
                    return fail(ParseError::InvalidId, &partial)
                }
                Err(_) => return fail(wrong("id", "a positive integer"), &partial),
            },
        };
        partial.id = Some(id);
        if let Some(r) = present(raw.from) {
            partial.from = <Cow<'_, str>>::deserialize(r).ok().map(Cow::into_owned);
        }
        let kind = match present(raw.kind) {
            None => return fail(ParseError::Missing("type"), &partial),
            Some(r) => match str_of("type", r) {
                Ok(s) if s.is_empty() => {
                    return fail(wrong("type", "a non-empty string"), &partial)
                }
                Ok(s) => MessageType::from_wire(&s),
                Err(e) => return fail(e, &partial),
            },
        };
        let from = match present(raw.from) {
            None => return fail(ParseError::Missing("from"), &partial),
            Some(r) => match addr("from", r) {
                Ok(a) => a,
                Err(e) => return fail(e, &partial),
            },
        };
        let to = match present(raw.to) {
            None => return fail(ParseError::Missing("to"), &partial),
            Some(r) if r.get().starts_with('[') => {
                let items: Vec<&'a RawValue> = match Vec::deserialize(r) {
                    Ok(v) => v,
                    Err(_) => {
                        return fail(wrong("to", "a string or an array of strings"), &partial)
                    }
                };
                if items.is_empty() {
                    return fail(ParseError::EmptyTo, &partial);
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match addr(&format!("to[{i}]"), item) {
                        Ok(a) => out.push(a),
                        Err(e) => return fail(e, &partial),
                    }
                }
                ToRef::Many(out)
            }
            Some(r) => match addr("to", r) {
                Ok(a) => ToRef::One(a),
                Err(e) => return fail(e, &partial),
            },
        };
        let mut body = None;
        if let Some(b) = present(raw.body) {
            if !b.get().starts_with('{') {
                return fail(wrong("body", "an object"), &partial);
            }
            // the raw value borrows from `text`: its offset is a pointer difference
            let start = b.get().as_ptr() as usize - text.as_ptr() as usize;
            body = Some((start, start + b.get().len()));
        }
        Ok(Header {
            id,
            kind,
            from,
            to,
            body,
        })
    }
}

/// `text` with `"assertedIdentity": <identity>` added as the **last** field of its
/// body (created if absent), so it wins over any value the sender put there itself:
/// JSON readers keep the last of duplicate keys. `identity_json` must be a JSON
/// value (e.g. a quoted string).
pub fn with_asserted_identity(
    text: &str,
    body: Option<(usize, usize)>,
    identity_json: &str,
) -> String {
    let mut out = String::with_capacity(text.len() + identity_json.len() + 32);
    match body {
        Some((start, end)) => {
            let inner_empty = text[start + 1..end - 1].trim().is_empty();
            out.push_str(&text[..end - 1]);
            if !inner_empty {
                out.push(',');
            }
            out.push_str("\"assertedIdentity\":");
            out.push_str(identity_json);
            out.push_str(&text[end - 1..]);
        }
        None => {
            let close = text.trim_end().len() - 1;
            out.push_str(&text[..close]);
            out.push_str(",\"body\":{\"assertedIdentity\":");
            out.push_str(identity_json);
            out.push('}');
            out.push_str(&text[close..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperty_actors::message::Message;
    use proptest::prelude::*;

    #[test]
    fn reads_the_routing_fields() {
        let h = Header::parse(
            r#"{"body":{"value":{"deep":[1,2,{"x":"y"}]}},"to":"hyperty://a.org/2","id":5,"type":"update","from":"hyperty://a.org/1"}"#,
        )
        .unwrap();
        assert_eq!(h.id, 5);
        assert_eq!(h.kind, MessageType::Update);
        assert_eq!(h.from, "hyperty://a.org/1");
        assert_eq!(h.to, ToRef::One("hyperty://a.org/2".into()));
        let h = Header::parse(
            r#"{"id":5,"type":"update","from":"hyperty://a.org/1","to":["hyperty://a.org/2","comm://a.org/x/changes"]}"#,
        )
        .unwrap();
        assert_eq!(
            h.to.iter().collect::<Vec<_>>(),
            ["hyperty://a.org/2", "comm://a.org/x/changes"]
        );
    }

    #[test]
    fn asserted_identity_is_the_last_body_field() {
        let id = "\"user://a/alice\"";
        for (frame, expect_value) in [
            (
                r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{"value":1}}"#,
                Some(1),
            ),
            (
                r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{ }}"#,
                None,
            ),
            (
                r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2"}  "#,
                None,
            ),
            (
                r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{"assertedIdentity":"user://a/mallory","value":1}}"#,
                Some(1),
            ),
        ] {
            let h = Header::parse(frame).unwrap();
            let out = with_asserted_identity(frame, h.body, id);
            let m = Message::parse(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            assert_eq!(m.body.extra["assertedIdentity"], "user://a/alice", "{out}");
            assert_eq!(m.body.value.as_ref().and_then(|v| v.as_i64()), expect_value);
        }
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let h = Header::parse(r#"{"id":1,"type":"upd\u0061te","from":"hyperty://a.org/\u0031","to":"hyperty://a.org/2"}"#).unwrap();
        assert_eq!(h.kind, MessageType::Update);
        assert_eq!(h.from, "hyperty://a.org/1");
    }

    #[test]
    fn errors_match_the_full_parser_and_keep_partial_info() {
        let cases = [
            r#"{"type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":0,"type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":"1","type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":1.5,"type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":1,"from":"hyperty://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":1,"type":7,"from":"hyperty://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":1,"type":"read","to":"hyperty://a/2"}"#,
            r#"{"id":1,"type":"read","from":"ftp://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":1,"type":"read","from":"hyperty://a/1","to":[]}"#,
            r#"{"id":1,"type":"read","from":"hyperty://a/1","to":["hyperty://a/2",3]}"#,
            r#"{"id":1,"type":"read","from":"hyperty://a/1","to":"hyperty://a/2","body":[]}"#,
            r#"{"id":1,"type":"read","from":"hyperty://a/1","to":{"a":1}}"#,
            r#"[1,2]"#,
            r#"{"id":1"#,
        ];
        for c in cases {
            let (e, _) = Header::parse(c).unwrap_err();
            let full = Message::parse(c).unwrap_err();
            assert_eq!(e.field(), full.field(), "{c}: {e} vs {full}");
        }
        let (_, p) = Header::parse(r#"{"id":9,"type":"read","from":"hyperty://a/1","to":"nope"}"#)
            .unwrap_err();
        assert_eq!(p.id, Some(9));
        assert_eq!(p.from.as_deref(), Some("hyperty://a/1"));
    }

    proptest! {
        #[test]
        fn never_panics_and_agrees_with_the_full_parser(s in "\\PC{0,120}") {
            let a = Header::parse(&s).is_ok();
            let b = Message::parse(&s).is_ok();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn agrees_on_structured_input(id in prop_oneof![Just("1".to_owned()), Just("0".to_owned()), "[0-9]{1,3}", Just("\"x\"".to_owned())],
                                     kind in prop_oneof![Just("\"read\""), Just("3"), Just("\"\"")],
                                     to in prop_oneof![Just("\"hyperty://a/2\""), Just("[]"), Just("[\"hyperty://a/2\"]"), Just("\"x\"")],
                                     body in prop_oneof![Just(""), Just(",\"body\":{}"), Just(",\"body\":1"), Just(",\"body\":null")]) {
            let s = format!(r#"{{"id":{id},"type":{kind},"from":"hyperty://a/1","to":{to}{body}}}"#);
            prop_assert_eq!(Header::parse(&s).is_ok(), Message::parse(&s).is_ok(), "{}", s);
        }
    }
}
