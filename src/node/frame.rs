//! The node's edge parser: only what routing needs.
//!
//! [`Header::parse`] reads `id`, `type`, `from` and `to` of a wire frame, checks
//! them exactly as [`Message::parse`](hyperty_actors::message::Message::parse) would
//! (positive integer id, non-empty type, valid addresses, non-empty `to`, `body` an
//! object when present) and skips over the body without building it. Unlike the
//! full parser it also takes string ids (`"id":"7"`, see [`FrameId`]), which reTHINK
//! clients send and expect back unchanged. The frame text itself is what gets
//! forwarded (design.md §6); [`stamped`] only rewrites it to remove a client-supplied
//! `body.assertedIdentity` and add the node's own.

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

/// The header as the common frame has it: every field present and of the expected
/// JSON type, read in one pass with the strings borrowed. Anything else fails to
/// deserialize and [`Header::parse`] reads the frame again the careful way, which
/// says exactly what is wrong.
#[derive(Deserialize)]
struct TypedHeader<'a> {
    #[serde(borrow)]
    id: TypedId<'a>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    to: TypedTo<'a>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

/// A JSON integer or string id, as it came.
struct TypedId<'a>(FrameId<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for TypedId<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = TypedId<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(TypedId(FrameId::Num(n)))
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(TypedId(FrameId::Text(Cow::Borrowed(s))))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(TypedId(FrameId::Text(Cow::Owned(s.to_owned()))))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `to`: one address or an array of them.
struct TypedTo<'a>(ToRef<'a>);

/// A string borrowed from the frame where it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for TypedTo<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = TypedTo<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(TypedTo(ToRef::One(Cow::Borrowed(s))))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(TypedTo(ToRef::One(Cow::Owned(s.to_owned()))))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(t)) = seq.next_element()? {
                    out.push(t);
                }
                Ok(TypedTo(ToRef::Many(out)))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Longest string `id` accepted, in bytes.
pub const MAX_TEXT_ID_LEN: usize = 256;

/// The correlation id of a frame as it came: a positive integer, or a string
/// (`"id":"7"`, as some reTHINK clients send). A response carries it back as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameId<'a> {
    /// A positive integer (at most 2^53-1).
    Num(u64),
    /// A non-empty string of at most [`MAX_TEXT_ID_LEN`] bytes.
    Text(Cow<'a, str>),
}

impl FrameId<'_> {
    /// Whether the id is one a frame may carry: an integer in 1..=2^53-1, or a
    /// non-empty string of at most [`MAX_TEXT_ID_LEN`] bytes.
    fn in_range(&self) -> bool {
        match self {
            FrameId::Num(n) => (1..=MAX_MESSAGE_ID).contains(n),
            FrameId::Text(s) => !s.is_empty() && s.len() <= MAX_TEXT_ID_LEN,
        }
    }

    /// The same id, owning its text.
    pub fn into_owned(self) -> FrameId<'static> {
        match self {
            FrameId::Num(n) => FrameId::Num(n),
            FrameId::Text(t) => FrameId::Text(Cow::Owned(t.into_owned())),
        }
    }

    /// The id as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FrameId::Num(n) => serde_json::Value::from(*n),
            FrameId::Text(t) => serde_json::Value::String(t.to_string()),
        }
    }
}

impl std::fmt::Display for FrameId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameId::Num(n) => write!(f, "{n}"),
            FrameId::Text(t) => write!(f, "{t:?}"),
        }
    }
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
    pub id: FrameId<'a>,
    /// `type`.
    pub kind: MessageType,
    /// Sender.
    pub from: Cow<'a, str>,
    /// Recipient(s).
    pub to: ToRef<'a>,
    /// Byte range of the `body` object in the frame text, if there is one.
    pub body: Option<(usize, usize)>,
}

/// What could be read of a frame that failed validation, to address the 400: every
/// error frame carries the `id`, and answers from the `to` to the `from` of what it
/// refuses, as far as they were readable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    /// The id as it came, if it was a number or a short string (even an invalid one).
    pub id: Option<serde_json::Value>,
    /// The sender, if it was a string.
    pub from: Option<String>,
    /// The (first) recipient, if it was a valid address.
    pub to: Option<String>,
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

/// Whatever can be read of the id, sender and recipient, valid or not.
fn partial_of(raw: &RawHeader<'_>) -> Partial {
    let id = present(raw.id).and_then(|r| {
        let v: serde_json::Value = serde_json::from_str(r.get()).ok()?;
        match &v {
            serde_json::Value::Number(_) => Some(v),
            serde_json::Value::String(s) if s.len() <= MAX_TEXT_ID_LEN => Some(v),
            _ => None,
        }
    });
    let from = present(raw.from)
        .and_then(|r| <Cow<'_, str>>::deserialize(r).ok())
        .map(Cow::into_owned);
    let to = present(raw.to).and_then(|r| {
        let first = if r.get().starts_with('[') {
            <Vec<&RawValue>>::deserialize(r).ok()?.into_iter().next()?
        } else {
            r
        };
        let s = <Cow<'_, str>>::deserialize(first).ok()?;
        Address::check(&s).ok()?;
        Some(s.into_owned())
    });
    Partial { id, from, to }
}

/// `body.ack` as the acknowledgement flag reads it.
#[derive(Deserialize)]
struct AckFlag {
    #[serde(default)]
    ack: Option<bool>,
}

impl<'a> Header<'a> {
    /// Whether the frame asks the node for a delivery acknowledgement:
    /// `"body": {"ack": true, …}` in `text`, the frame this header was parsed from
    /// (see docs/transports.md). Costs a substring search unless the body names `ack`.
    pub fn ack_requested(&self, text: &str) -> bool {
        let Some(body) = self.body.and_then(|(start, end)| text.get(start..end)) else {
            return false;
        };
        body.contains("\"ack\"")
            && serde_json::from_str::<AckFlag>(body).is_ok_and(|f| f.ack == Some(true))
    }

    /// Parses and validates the header of `text`. On error, returns what could be read
    /// so the error response can still be addressed.
    pub fn parse(text: &'a str) -> Result<Header<'a>, (ParseError, Box<Partial>)> {
        match Self::parse_typed(text) {
            Some(h) => Ok(h),
            None => Self::parse_careful(text),
        }
    }

    /// Reads the header field by field, so that a frame that is not well-formed
    /// gets the exact error and whatever could be read of it.
    fn parse_careful(text: &'a str) -> Result<Header<'a>, (ParseError, Box<Partial>)> {
        if !text.trim_start().starts_with('{') {
            let err = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => ParseError::NotAnObject,
                Err(e) => ParseError::Json(e.to_string()),
            };
            return Err((err, Box::default()));
        }
        let raw: RawHeader<'a> = serde_json::from_str(text)
            .map_err(|e| (ParseError::Json(e.to_string()), Box::default()))?;
        match Self::validate(text, &raw) {
            Ok(h) => Ok(h),
            Err(e) => Err((e, Box::new(partial_of(&raw)))),
        }
    }

    /// The one-pass read of a well-formed frame (see [`TypedHeader`]); `None` for
    /// anything the careful read must look at.
    fn parse_typed(text: &'a str) -> Option<Header<'a>> {
        let t: TypedHeader<'a> = serde_json::from_str(text).ok()?;
        let id_ok = t.id.0.in_range();
        let to_ok = match &t.to.0 {
            ToRef::One(a) => Address::check(a).is_ok(),
            ToRef::Many(v) => !v.is_empty() && v.iter().all(|a| Address::check(a).is_ok()),
        };
        let body_ok = t.body.is_none_or(|b| b.get().starts_with('{'));
        if !(id_ok && to_ok && body_ok && !t.kind.is_empty() && Address::check(&t.from).is_ok()) {
            return None;
        }
        Some(Header {
            id: t.id.0,
            kind: MessageType::from_wire(&t.kind),
            from: t.from,
            to: t.to.0,
            body: t.body.map(|b| body_range(text, b)),
        })
    }

    fn validate(text: &'a str, raw: &RawHeader<'a>) -> Result<Header<'a>, ParseError> {
        let id = match present(raw.id) {
            None => return Err(ParseError::Missing("id")),
            Some(r) if r.get().starts_with('"') => match FrameId::Text(str_of("id", r)?) {
                id if id.in_range() => id,
                _ => return Err(wrong("id", "a positive integer or a short string")),
            },
            Some(r) => match serde_json::from_str::<u64>(r.get()).map(FrameId::Num) {
                Ok(id) if id.in_range() => id,
                Ok(_) => return Err(ParseError::InvalidId),
                Err(_) if serde_json::from_str::<f64>(r.get()).is_ok() => {
                    return Err(ParseError::InvalidId)
                }
                Err(_) => return Err(wrong("id", "a positive integer")),
            },
        };
        let kind = match present(raw.kind) {
            None => return Err(ParseError::Missing("type")),
            Some(r) => match str_of("type", r)? {
                s if s.is_empty() => return Err(wrong("type", "a non-empty string")),
                s => MessageType::from_wire(&s),
            },
        };
        let from = match present(raw.from) {
            None => return Err(ParseError::Missing("from")),
            Some(r) => addr("from", r)?,
        };
        let to = match present(raw.to) {
            None => return Err(ParseError::Missing("to")),
            Some(r) if r.get().starts_with('[') => {
                let items: Vec<&'a RawValue> = Vec::deserialize(r)
                    .map_err(|_| wrong("to", "a string or an array of strings"))?;
                if items.is_empty() {
                    return Err(ParseError::EmptyTo);
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    out.push(addr(&format!("to[{i}]"), item)?);
                }
                ToRef::Many(out)
            }
            Some(r) => ToRef::One(addr("to", r)?),
        };
        let mut body = None;
        if let Some(b) = present(raw.body) {
            if !b.get().starts_with('{') {
                return Err(wrong("body", "an object"));
            }
            body = Some(body_range(text, b));
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

/// The byte range of `body` in `text`, which it borrows from.
fn body_range(text: &str, body: &RawValue) -> (usize, usize) {
    // the raw value borrows from `text`: its offset is a pointer difference
    let start = body.get().as_ptr() as usize - text.as_ptr() as usize;
    (start, start + body.get().len())
}

impl Header<'_> {
    /// `from` as it may be logged: a `re-open` may carry the runtime token as the
    /// last segment of `from` (Vert.x style), which is cut off.
    pub fn loggable_from(&self) -> &str {
        match self.kind {
            MessageType::ReOpen => self.from.rsplit_once('/').map_or("", |(rt, _)| rt),
            _ => &self.from,
        }
    }
}

/// The name of the body field carrying the sender's identity, as the node vouches
/// for it.
pub const ASSERTED_IDENTITY: &str = "assertedIdentity";

/// Finds [`ASSERTED_IDENTITY`] in a frame (every routed frame is searched once).
fn identity_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(ASSERTED_IDENTITY))
}

/// True if `text` holds `"ack"` anywhere: only such frames can ask for an
/// acknowledgement, so only they are parsed for it.
pub fn may_ask_for_ack(text: &str) -> bool {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER
        .get_or_init(|| memchr::memmem::Finder::new("\"ack\""))
        .find(text.as_bytes())
        .is_some()
}

/// The `body.assertedIdentity` string of `text` (whose `body` spans `body`), if it
/// has exactly one.
pub fn asserted_identity(text: &str, body: Option<(usize, usize)>) -> Option<String> {
    let (start, end) = body?;
    let inner = text.get(start..end)?;
    if !inner.contains(ASSERTED_IDENTITY) {
        return None;
    }
    let entries = serde_json::from_str::<Entries<'_>>(inner).ok()?;
    let mut found = entries.0.iter().filter(|(k, _)| k == ASSERTED_IDENTITY);
    let (_, v) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    serde_json::from_str::<String>(v.get()).ok()
}

/// The top-level entries of a JSON object, in order, duplicates kept.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The frame to forward for `text` (whose `body` spans `body`): every
/// `body.assertedIdentity` the client put there removed, and the session's
/// `identity_json` (a JSON value, e.g. a quoted string) added as the last body
/// field when there is one. `None`: forward `text` unchanged (the common case, found
/// without parsing the body).
pub fn stamped(
    text: &str,
    body: Option<(usize, usize)>,
    identity_json: Option<&str>,
) -> Option<String> {
    let Some((start, end)) = body else {
        let identity = identity_json?;
        let close = text.trim_end().len() - 1;
        let mut out = String::with_capacity(text.len() + identity.len() + 32);
        out.push_str(&text[..close]);
        out.push_str(",\"body\":{\"");
        out.push_str(ASSERTED_IDENTITY);
        out.push_str("\":");
        out.push_str(identity);
        out.push('}');
        out.push_str(&text[close..]);
        return Some(out);
    };
    let inner = &text[start + 1..end - 1];
    // a key could hide behind escapes: only a body without both is certainly clean
    let suspect = memchr::memchr(b'\\', inner.as_bytes()).is_some()
        || identity_finder().find(inner.as_bytes()).is_some();
    let kept: Option<Vec<(String, &RawValue)>> = suspect
        .then(|| serde_json::from_str::<Entries<'_>>(&text[start..end]).ok())
        .flatten()
        .filter(|e| e.0.iter().any(|(k, _)| k == ASSERTED_IDENTITY))
        .map(|e| {
            e.0.into_iter()
                .filter(|(k, _)| k != ASSERTED_IDENTITY)
                .collect()
        });
    if kept.is_none() && identity_json.is_none() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + identity_json.map_or(0, str::len) + 32);
    out.push_str(&text[..start]);
    out.push('{');
    let mut empty = match &kept {
        Some(entries) => {
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                out.push_str(v.get());
            }
            entries.is_empty()
        }
        None => {
            out.push_str(inner);
            inner.trim().is_empty()
        }
    };
    if let Some(identity) = identity_json {
        if !std::mem::take(&mut empty) {
            out.push(',');
        }
        out.push('"');
        out.push_str(ASSERTED_IDENTITY);
        out.push_str("\":");
        out.push_str(identity);
    }
    out.push('}');
    out.push_str(&text[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperty_actors::message::Message;
    use proptest::prelude::*;

    #[test]
    fn reads_the_asserted_identity() {
        let t = r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://b/2","body":{"x":1,"assertedIdentity":"user://a/alice"}}"#;
        let h = Header::parse(t).unwrap();
        assert_eq!(
            asserted_identity(t, h.body).as_deref(),
            Some("user://a/alice")
        );
        let t = r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://b/2","body":{"assertedIdentity":"x","assertedIdentity":"y"}}"#;
        let h = Header::parse(t).unwrap();
        assert_eq!(asserted_identity(t, h.body), None, "ambiguous");
        let t = r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://b/2"}"#;
        assert_eq!(asserted_identity(t, Header::parse(t).unwrap().body), None);
    }

    #[test]
    fn reads_the_routing_fields() {
        let h = Header::parse(
            r#"{"body":{"value":{"deep":[1,2,{"x":"y"}]}},"to":"hyperty://a.org/2","id":5,"type":"update","from":"hyperty://a.org/1"}"#,
        )
        .unwrap();
        assert_eq!(h.id, FrameId::Num(5));
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
            let out = stamped(frame, h.body, Some(id)).unwrap();
            let m = Message::parse(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            assert_eq!(m.body.extra["assertedIdentity"], "user://a/alice", "{out}");
            assert_eq!(out.matches("assertedIdentity").count(), 1, "{out}");
            assert_eq!(m.body.value.as_ref().and_then(|v| v.as_i64()), expect_value);
        }
    }

    #[test]
    fn client_asserted_identities_are_stripped() {
        for frame in [
            r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{"assertedIdentity":"user://a/mallory","value":1}}"#,
            r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{"value":1,"assertedIdentity":"x","assertedIdentity":{"n":1}}}"#,
            r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{"value":1,"\u0061ssertedIdentity":"user://a/mallory"}}"#,
        ] {
            let h = Header::parse(frame).unwrap();
            let out = stamped(frame, h.body, None).expect("rewritten");
            let m = Message::parse(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            assert!(m.body.extra.get("assertedIdentity").is_none(), "{out}");
            assert_eq!(m.body.value.as_ref().and_then(|v| v.as_i64()), Some(1));
        }
        // clean frames are forwarded as they are
        let clean = r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{"value":{"q":"a\"b"}}}"#;
        let h = Header::parse(clean).unwrap();
        assert_eq!(stamped(clean, h.body, None), None);
        // a nested assertedIdentity is the application's own business
        let nested = r#"{"id":1,"type":"update","from":"hyperty://a/1","to":"hyperty://a/2","body":{"value":{"assertedIdentity":"x"}}}"#;
        let h = Header::parse(nested).unwrap();
        assert_eq!(stamped(nested, h.body, None), None);
    }

    #[test]
    fn string_ids_are_read_and_partials_carry_id_from_and_to() {
        let h = Header::parse(
            r#"{"id":"7","type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#,
        )
        .unwrap();
        assert_eq!(h.id, FrameId::Text("7".into()));
        assert_eq!(h.id.to_json(), serde_json::json!("7"));
        for bad in [
            r#"{"id":"","type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#,
            r#"{"id":{"x":1},"type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#,
        ] {
            assert!(Header::parse(bad).is_err(), "{bad}");
        }
        let (_, p) =
            Header::parse(r#"{"id":"x9","type":7,"from":"hyperty://a/1","to":["hyperty://a/2"]}"#)
                .unwrap_err();
        assert_eq!(p.id, Some(serde_json::json!("x9")));
        assert_eq!(p.from.as_deref(), Some("hyperty://a/1"));
        assert_eq!(p.to.as_deref(), Some("hyperty://a/2"));
        let (_, p) =
            Header::parse(r#"{"id":0,"type":"read","from":"hyperty://a/1","to":"hyperty://a/2"}"#)
                .unwrap_err();
        assert_eq!(p.id, Some(serde_json::json!(0)));
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
        assert_eq!(p.id, Some(serde_json::json!(9)));
        assert_eq!(p.from.as_deref(), Some("hyperty://a/1"));
    }

    proptest! {
        #[test]
        fn never_panics_and_agrees_with_the_full_parser(s in "\\PC{0,120}") {
            let a = Header::parse(&s);
            let b = Message::parse(&s).is_ok();
            // string ids are the node's extension; everything else agrees
            let text_id = matches!(&a, Ok(h) if matches!(h.id, FrameId::Text(_)));
            prop_assert!(text_id || a.is_ok() == b);
        }

        #[test]
        fn the_one_pass_read_agrees_with_the_careful_one(
            id in prop_oneof![Just("7"), Just("0"), Just("-1"), Just("1.5"), Just("9007199254740992"), Just("\"7\""), Just("\"\""), Just("\"a\\u0041\""), Just("null"), Just("[1]")],
            kind in prop_oneof![Just("\"update\""), Just("\"\""), Just("3"), Just("\"x\\ty\"")],
            from in prop_oneof![Just("\"hyperty://a/1\""), Just("\"hyperty://a/1\\/x\""), Just("\"bad\""), Just("null")],
            to in prop_oneof![Just("\"hyperty://a/2\""), Just("[]"), Just("[\"hyperty://a/2\",\"comm://a/x\"]"), Just("[\"hyperty://a/2\",3]"), Just("\"x\""), Just("{}")],
            body in prop_oneof![Just(""), Just(",\"body\":{\"v\":[1,{}]}"), Just(",\"body\":1"), Just(",\"body\":null"), Just(",\"body\":{\"a\":1,\"a\":2}")],
            extra in prop_oneof![Just(""), Just(",\"x\":{\"y\":[null]}"), Just(",\"id\":8")],
        ) {
            let s = format!(r#"{{"id":{id},"type":{kind},"from":{from},"to":{to}{body}{extra}}}"#);
            let careful = Header::parse_careful(&s);
            match Header::parse_typed(&s) {
                Some(h) => prop_assert_eq!(Ok(h), careful, "{}", s),
                // only frames the careful read refuses, or with escapes, take it
                None => prop_assert!(careful.is_err() || s.contains('\\'), "{}", s),
            }
        }

        #[test]
        fn agrees_on_structured_input(id in prop_oneof![Just("1".to_owned()), Just("0".to_owned()), "[0-9]{1,3}", Just("\"x\"".to_owned())],
                                     kind in prop_oneof![Just("\"read\""), Just("3"), Just("\"\"")],
                                     to in prop_oneof![Just("\"hyperty://a/2\""), Just("[]"), Just("[\"hyperty://a/2\"]"), Just("\"x\"")],
                                     body in prop_oneof![Just(""), Just(",\"body\":{}"), Just(",\"body\":1"), Just(",\"body\":null")]) {
            let s = format!(r#"{{"id":{id},"type":{kind},"from":"hyperty://a/1","to":{to}{body}}}"#);
            let h = Header::parse(&s);
            let text_id = matches!(&h, Ok(h) if matches!(h.id, FrameId::Text(_)));
            prop_assert!(text_id || h.is_ok() == Message::parse(&s).is_ok(), "{}", s);
        }
    }
}
