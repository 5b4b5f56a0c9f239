//! The reTHINK message model (rethink-wire.md §1) as typed Rust values.
//!
//! A [`Message`] has a positive integer `id`, a [`MessageType`], a `from`
//! [`Address`], a `to` ([`To`]: one address or a list) and a [`Body`] whose common
//! fields are typed while unknown fields are kept in [`Body::extra`], so
//! serialising a parsed message gives the same JSON back.
//!
//! [`Message::parse`] is the one entry point for wire text: it returns a
//! [`ParseError`] naming the offending field, which maps to a 400 response.
//!
//! ```
//! use hyperty_actors::message::{Message, MessageType, ResponseCode};
//!
//! let req = Message::parse(
//!     r#"{"id":7,"type":"read","from":"hyperty://a.org/1","to":"hyperty://a.org/2"}"#,
//! ).unwrap();
//! assert_eq!(req.kind, MessageType::Read);
//!
//! let resp = req.reply(ResponseCode::Ok);
//! assert_eq!(resp.id, 7);
//! assert_eq!(resp.from.as_str(), "hyperty://a.org/2");
//! assert_eq!(resp.to.first().as_str(), "hyperty://a.org/1");
//!
//! let err = Message::parse(r#"{"id":0,"type":"read","from":"hyperty://a.org/1","to":"hyperty://a.org/2"}"#)
//!     .unwrap_err();
//! assert_eq!(err.field(), Some("id"));
//! ```

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::address::{Address, AddressError};

/// Message correlation id. Positive on the wire; `0` inside the runtime means
/// "not yet assigned" (the bus assigns one).
pub type MessageId = u64;

/// Largest id accepted: JavaScript peers must be able to echo it exactly.
pub const MAX_MESSAGE_ID: u64 = (1 << 53) - 1;

/// The `type` of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `create`
    Create,
    /// `read`
    Read,
    /// `update`
    Update,
    /// `delete`
    Delete,
    /// `subscribe`
    Subscribe,
    /// `unsubscribe`
    Unsubscribe,
    /// `response`
    Response,
    /// `forward`
    Forward,
    /// `execute`
    Execute,
    /// `open` (session)
    Open,
    /// `re-open` (session)
    ReOpen,
    /// `close` (session)
    Close,
    /// `ping`
    Ping,
    /// `pong`
    Pong,
    /// `event`
    Event,
    /// `handshake`
    Handshake,
    /// Any other type; messaging nodes route any type (kept verbatim).
    Other(Box<str>),
}

impl MessageType {
    /// Every named type, in declaration order (everything but [`MessageType::Other`]).
    pub const KNOWN: [MessageType; 16] = [
        MessageType::Create,
        MessageType::Read,
        MessageType::Update,
        MessageType::Delete,
        MessageType::Subscribe,
        MessageType::Unsubscribe,
        MessageType::Response,
        MessageType::Forward,
        MessageType::Execute,
        MessageType::Open,
        MessageType::ReOpen,
        MessageType::Close,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::Event,
        MessageType::Handshake,
    ];

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            MessageType::Create => "create",
            MessageType::Read => "read",
            MessageType::Update => "update",
            MessageType::Delete => "delete",
            MessageType::Subscribe => "subscribe",
            MessageType::Unsubscribe => "unsubscribe",
            MessageType::Response => "response",
            MessageType::Forward => "forward",
            MessageType::Execute => "execute",
            MessageType::Open => "open",
            MessageType::ReOpen => "re-open",
            MessageType::Close => "close",
            MessageType::Ping => "ping",
            MessageType::Pong => "pong",
            MessageType::Event => "event",
            MessageType::Handshake => "handshake",
            MessageType::Other(s) => s,
        }
    }

    /// Parses a wire spelling; unknown spellings become [`MessageType::Other`].
    pub fn from_wire(s: &str) -> MessageType {
        match s {
            "create" => MessageType::Create,
            "read" => MessageType::Read,
            "update" => MessageType::Update,
            "delete" => MessageType::Delete,
            "subscribe" => MessageType::Subscribe,
            "unsubscribe" => MessageType::Unsubscribe,
            "response" => MessageType::Response,
            "forward" => MessageType::Forward,
            "execute" => MessageType::Execute,
            "open" => MessageType::Open,
            "re-open" => MessageType::ReOpen,
            "close" => MessageType::Close,
            "ping" => MessageType::Ping,
            "pong" => MessageType::Pong,
            "event" => MessageType::Event,
            "handshake" => MessageType::Handshake,
            other => MessageType::Other(other.into()),
        }
    }

    /// True for types whose sender expects a response: a routing failure of such a
    /// message is answered with an error response, while notifications (`update`,
    /// `event`, `pong`) and responses are dropped and counted.
    pub fn expects_response(&self) -> bool {
        !matches!(
            self,
            MessageType::Response | MessageType::Update | MessageType::Event | MessageType::Pong
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Response codes (rethink-wire.md §1 "Codes that occur").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    /// 100: provisional; the request stays open.
    Provisional,
    /// 200
    Ok,
    /// 400
    BadRequest,
    /// 401
    Unauthorized,
    /// 403
    Forbidden,
    /// 404
    NotFound,
    /// 408: response timeout, or every registry match disconnected.
    RequestTimeout,
    /// 429: rate limit or full queue.
    TooManyRequests,
    /// 500
    InternalError,
    /// 503: the node cannot take this now (e.g. no room for another peer link).
    ServiceUnavailable,
    /// 504: a back end (e.g. the domain registry) was unreachable.
    GatewayTimeout,
    /// Any other numeric code.
    Other(u16),
    /// The legacy string `"error"` that the Node.js reference node puts in `code`.
    LegacyError,
}

impl ResponseCode {
    /// Maps a numeric code.
    pub fn from_u16(code: u16) -> ResponseCode {
        match code {
            100 => ResponseCode::Provisional,
            200 => ResponseCode::Ok,
            400 => ResponseCode::BadRequest,
            401 => ResponseCode::Unauthorized,
            403 => ResponseCode::Forbidden,
            404 => ResponseCode::NotFound,
            408 => ResponseCode::RequestTimeout,
            429 => ResponseCode::TooManyRequests,
            500 => ResponseCode::InternalError,
            503 => ResponseCode::ServiceUnavailable,
            504 => ResponseCode::GatewayTimeout,
            other => ResponseCode::Other(other),
        }
    }

    /// The numeric code (`500` for the legacy `"error"`).
    pub fn as_u16(self) -> u16 {
        match self {
            ResponseCode::Provisional => 100,
            ResponseCode::Ok => 200,
            ResponseCode::BadRequest => 400,
            ResponseCode::Unauthorized => 401,
            ResponseCode::Forbidden => 403,
            ResponseCode::NotFound => 404,
            ResponseCode::RequestTimeout => 408,
            ResponseCode::TooManyRequests => 429,
            ResponseCode::InternalError | ResponseCode::LegacyError => 500,
            ResponseCode::ServiceUnavailable => 503,
            ResponseCode::GatewayTimeout => 504,
            ResponseCode::Other(c) => c,
        }
    }

    /// Codes below 200 keep a request open.
    pub fn is_provisional(self) -> bool {
        self.as_u16() < 200
    }

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.as_u16())
    }
}

impl Serialize for ResponseCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ResponseCode::LegacyError => s.serialize_str("error"),
            c => s.serialize_u16(c.as_u16()),
        }
    }
}

/// `to`: one address or a non-empty list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// A single recipient (the common case).
    One(Address),
    /// Several recipients; each gets the message.
    Many(Vec<Address>),
}

impl To {
    /// The first recipient.
    ///
    /// # Panics
    /// Never for a parsed message; a hand-built `To::Many(vec![])` is the only way to
    /// get an empty list, and [`To::many`] refuses it.
    pub fn first(&self) -> &Address {
        match self {
            To::One(a) => a,
            To::Many(v) => &v[0],
        }
    }

    /// A list of recipients; `None` if it is empty.
    pub fn many(list: Vec<Address>) -> Option<To> {
        (!list.is_empty()).then_some(To::Many(list))
    }

    /// All recipients.
    pub fn iter(&self) -> std::slice::Iter<'_, Address> {
        match self {
            To::One(a) => std::slice::from_ref(a).iter(),
            To::Many(v) => v.iter(),
        }
    }

    /// True if `addr` is one of the recipients.
    pub fn contains(&self, addr: &str) -> bool {
        self.iter().any(|a| a.as_str() == addr)
    }
}

impl From<Address> for To {
    fn from(a: Address) -> To {
        To::One(a)
    }
}

impl Serialize for To {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            To::One(a) => a.serialize(s),
            To::Many(v) => v.serialize(s),
        }
    }
}

/// A body field that is one string or a list (e.g. `resource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrMany {
    /// `"x"`
    One(String),
    /// `["x","y"]`
    Many(Vec<String>),
}

impl OneOrMany {
    /// All values.
    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s).iter(),
            OneOrMany::Many(v) => v.iter(),
        }
    }
}

impl Serialize for OneOrMany {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OneOrMany::One(v) => v.serialize(s),
            OneOrMany::Many(v) => v.serialize(s),
        }
    }
}

/// A possibly nested list of strings (`childrenResources` arrives as `[..]` or `[[..]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NestedList {
    /// A leaf.
    Item(String),
    /// A list of items or lists.
    List(Vec<NestedList>),
}

impl NestedList {
    /// All leaves, depth first.
    pub fn flatten(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            NestedList::Item(s) => out.push(s),
            NestedList::List(v) => v.iter().for_each(|n| n.collect(out)),
        }
    }

    /// A flat list.
    pub fn from_items<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> NestedList {
        NestedList::List(
            items
                .into_iter()
                .map(|s| NestedList::Item(s.into()))
                .collect(),
        )
    }
}

impl Serialize for NestedList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NestedList::Item(v) => v.serialize(s),
            NestedList::List(v) => v.serialize(s),
        }
    }
}

/// The message body: common fields typed, anything else preserved in `extra`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    /// `code` (responses).
    pub code: Option<ResponseCode>,
    /// `description` (responses).
    pub description: Option<String>,
    /// `desc`: the older spelling of `description`; the Node.js node sends objects here.
    pub desc: Option<Value>,
    /// `value`: the payload of create/update/response.
    pub value: Option<Value>,
    /// `resource`: one URL or a list.
    pub resource: Option<OneOrMany>,
    /// `resources` (subscribe/unsubscribe).
    pub resources: Option<Vec<String>>,
    /// `childrenResources`, possibly nested.
    pub children_resources: Option<NestedList>,
    /// `via`: the protocol stub a message went through (loop prevention).
    pub via: Option<Address>,
    /// `source`: the original creator of the message.
    pub source: Option<Address>,
    /// `identity`: the sender's asserted identity, added by the identity module.
    pub identity: Option<Value>,
    /// `auth`: set by a policy enforcement point.
    pub auth: Option<bool>,
    /// Every other field, kept verbatim.
    pub extra: Map<String, Value>,
}

impl Body {
    /// A body carrying only a response code.
    pub fn with_code(code: ResponseCode) -> Body {
        Body {
            code: Some(code),
            ..Body::default()
        }
    }

    /// The human-readable description, from `description` or a string `desc`.
    pub fn description_text(&self) -> Option<&str> {
        self.description
            .as_deref()
            .or_else(|| self.desc.as_ref().and_then(Value::as_str))
    }

    /// True if no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Body::default()
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.code {
            m.serialize_entry("code", v)?;
        }
        if let Some(v) = &self.description {
            m.serialize_entry("description", v)?;
        }
        if let Some(v) = &self.desc {
            m.serialize_entry("desc", v)?;
        }
        if let Some(v) = &self.value {
            m.serialize_entry("value", v)?;
        }
        if let Some(v) = &self.resource {
            m.serialize_entry("resource", v)?;
        }
        if let Some(v) = &self.resources {
            m.serialize_entry("resources", v)?;
        }
        if let Some(v) = &self.children_resources {
            m.serialize_entry("childrenResources", v)?;
        }
        if let Some(v) = &self.via {
            m.serialize_entry("via", v)?;
        }
        if let Some(v) = &self.source {
            m.serialize_entry("source", v)?;
        }
        if let Some(v) = &self.identity {
            m.serialize_entry("identity", v)?;
        }
        if let Some(v) = &self.auth {
            m.serialize_entry("auth", v)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A reTHINK message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Correlation id; a response copies it.
    pub id: MessageId,
    /// `type`.
    pub kind: MessageType,
    /// Sender.
    pub from: Address,
    /// Recipient(s).
    pub to: To,
    /// Body (serialised as `{}` when empty).
    pub body: Body,
}

/// Why wire text is not a valid message. Every variant maps to a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("message must be a JSON object")]
    NotAnObject,
    /// A required field is absent or null.
    #[error("missing field '{0}'")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("field '{field}' must be {expected}")]
    WrongType {
        /// Field path, e.g. `body.code`.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `id` is zero, negative, fractional or too large.
    #[error("field 'id' must be a positive integer (at most 2^53-1)")]
    InvalidId,
    /// `to` is an empty list.
    #[error("field 'to' must not be empty")]
    EmptyTo,
    /// An address field is not a valid address.
    #[error("field '{field}' is not a valid address: {error}")]
    Address {
        /// Field path.
        field: String,
        /// What is wrong with it.
        error: AddressError,
    },
}

impl ParseError {
    /// The offending field, if the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ParseError::Json(_) | ParseError::NotAnObject => None,
            ParseError::Missing(f) => Some(f),
            ParseError::WrongType { field, .. } | ParseError::Address { field, .. } => Some(field),
            ParseError::InvalidId => Some("id"),
            ParseError::EmptyTo => Some("to"),
        }
    }
}

fn wrong(field: &str, expected: &'static str) -> ParseError {
    ParseError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

fn address(field: &str, v: Value) -> Result<Address, ParseError> {
    match v {
        Value::String(s) => Address::try_from(s).map_err(|error| ParseError::Address {
            field: field.to_owned(),
            error,
        }),
        _ => Err(wrong(field, "a string")),
    }
}

fn string(field: &str, v: Value) -> Result<String, ParseError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(wrong(field, "a string")),
    }
}

fn string_list(field: &str, v: Value) -> Result<Vec<String>, ParseError> {
    match v {
        Value::Array(items) => items.into_iter().map(|i| string(field, i)).collect(),
        _ => Err(wrong(field, "an array of strings")),
    }
}

fn nested(field: &str, v: Value) -> Result<NestedList, ParseError> {
    match v {
        Value::String(s) => Ok(NestedList::Item(s)),
        Value::Array(items) => items
            .into_iter()
            .map(|i| nested(field, i))
            .collect::<Result<_, _>>()
            .map(NestedList::List),
        _ => Err(wrong(field, "a string or a (nested) array of strings")),
    }
}

/// Takes a field out of `map`, treating `null` as absent.
fn take(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    map.remove(key).filter(|v| !v.is_null())
}

impl Body {
    /// Builds a body from a JSON object; `field` prefixes error paths.
    pub fn from_map(mut map: Map<String, Value>) -> Result<Body, ParseError> {
        let code = match take(&mut map, "code") {
            None => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .filter(|c| (100..1000).contains(c))
                    .map(ResponseCode::from_u16)
                    .ok_or_else(|| wrong("body.code", "an integer 100..999 or \"error\""))?,
            ),
            Some(Value::String(s)) if s == "error" => Some(ResponseCode::LegacyError),
            Some(_) => return Err(wrong("body.code", "an integer 100..999 or \"error\"")),
        };
        let description = take(&mut map, "description")
            .map(|v| string("body.description", v))
            .transpose()?;
        let desc = take(&mut map, "desc");
        let value = map.remove("value");
        let resource = match take(&mut map, "resource") {
            None => None,
            Some(Value::String(s)) => Some(OneOrMany::One(s)),
            Some(v @ Value::Array(_)) => Some(OneOrMany::Many(string_list("body.resource", v)?)),
            Some(_) => return Err(wrong("body.resource", "a string or an array of strings")),
        };
        let resources = take(&mut map, "resources")
            .map(|v| string_list("body.resources", v))
            .transpose()?;
        let children_resources = take(&mut map, "childrenResources")
            .map(|v| nested("body.childrenResources", v))
            .transpose()?;
        let via = take(&mut map, "via")
            .map(|v| address("body.via", v))
            .transpose()?;
        let source = take(&mut map, "source")
            .map(|v| address("body.source", v))
            .transpose()?;
        let identity = take(&mut map, "identity");
        let auth = match take(&mut map, "auth") {
            None => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => return Err(wrong("body.auth", "a boolean")),
        };
        Ok(Body {
            code,
            description,
            desc,
            value,
            resource,
            resources,
            children_resources,
            via,
            source,
            identity,
            auth,
            extra: map,
        })
    }
}

impl Message {
    /// A new message with an unassigned id (`0`) and an empty body.
    pub fn new(kind: MessageType, from: Address, to: impl Into<To>) -> Message {
        Message {
            id: 0,
            kind,
            from,
            to: to.into(),
            body: Body::default(),
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: MessageId) -> Message {
        self.id = id;
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Body) -> Message {
        self.body = body;
        self
    }

    /// Sets `body.value`.
    pub fn with_value(mut self, value: Value) -> Message {
        self.body.value = Some(value);
        self
    }

    /// Parses wire text. The one place untrusted JSON becomes a message.
    pub fn parse(text: &str) -> Result<Message, ParseError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
        Message::from_value(v)
    }

    /// Builds a message from an already-parsed JSON value.
    pub fn from_value(v: Value) -> Result<Message, ParseError> {
        let Value::Object(mut map) = v else {
            return Err(ParseError::NotAnObject);
        };
        let id = match take(&mut map, "id") {
            None => return Err(ParseError::Missing("id")),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|&i| i > 0 && i <= MAX_MESSAGE_ID)
                .ok_or(ParseError::InvalidId)?,
            Some(_) => return Err(wrong("id", "a positive integer")),
        };
        let kind = match take(&mut map, "type") {
            None => return Err(ParseError::Missing("type")),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(wrong("type", "a non-empty string"))
            }
            Some(Value::String(s)) => MessageType::from_wire(&s),
            Some(_) => return Err(wrong("type", "a string")),
        };
        let from = address(
            "from",
            take(&mut map, "from").ok_or(ParseError::Missing("from"))?,
        )?;
        let to = match take(&mut map, "to").ok_or(ParseError::Missing("to"))? {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(ParseError::EmptyTo);
                }
                To::Many(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| address(&format!("to[{i}]"), v))
                        .collect::<Result<_, _>>()?,
                )
            }
            v => To::One(address("to", v)?),
        };
        let body = match take(&mut map, "body") {
            None => Body::default(),
            Some(Value::Object(b)) => Body::from_map(b)?,
            Some(_) => return Err(wrong("body", "an object")),
        };
        Ok(Message {
            id,
            kind,
            from,
            to,
            body,
        })
    }

    /// Serialises to wire text.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and `Value`s cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// True for `type: response`.
    pub fn is_response(&self) -> bool {
        self.kind == MessageType::Response
    }

    /// `body.code`, if any.
    pub fn code(&self) -> Option<ResponseCode> {
        self.body.code
    }

    /// A response to this message: same id, `from` = the (first) recipient,
    /// `to` = the sender.
    pub fn reply(&self, code: ResponseCode) -> Message {
        self.reply_from(self.to.first().clone(), code)
    }

    /// A response sent by `responder` (one of the recipients of a multi-recipient message).
    pub fn reply_from(&self, responder: Address, code: ResponseCode) -> Message {
        Message {
            id: self.id,
            kind: MessageType::Response,
            from: responder,
            to: To::One(self.from.clone()),
            body: Body::with_code(code),
        }
    }

    /// A response carrying `value`.
    pub fn reply_value(&self, code: ResponseCode, value: Value) -> Message {
        self.reply(code).with_value(value)
    }

    /// An error response with a `description`.
    pub fn reply_error(&self, code: ResponseCode, description: impl Into<String>) -> Message {
        let mut r = self.reply(code);
        r.body.description = Some(description.into());
        r
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("type", self.kind.as_str())?;
        m.serialize_entry("from", &self.from)?;
        m.serialize_entry("to", &self.to)?;
        m.serialize_entry("body", &self.body)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Message::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} {} -> {}",
            self.kind,
            self.id,
            self.from,
            self.to.first()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"id": 1, "type": "create", "from": "hyperty://a.org/1", "to": "hyperty://a.org/2"})
    }

    fn with(key: &str, v: Value) -> Value {
        let mut b = base();
        b[key] = v;
        b
    }

    fn without(key: &str) -> Value {
        let mut b = base();
        b.as_object_mut().unwrap().remove(key);
        b
    }

    #[test]
    fn every_type_round_trips() {
        let known = MessageType::KNOWN.map(|k| k.as_str().to_owned());
        for t in known.iter().map(String::as_str).chain(["custom-thing"]) {
            let m = Message::from_value(with("type", json!(t))).unwrap();
            assert_eq!(m.kind.as_str(), t);
            if t != "custom-thing" {
                assert!(!matches!(m.kind, MessageType::Other(_)), "{t}");
            }
            let back = Message::parse(&m.to_json()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn full_body_round_trips_and_keeps_unknown_fields() {
        let v = json!({
            "id": 42, "type": "response", "from": "domain://msg-node.a.org/address-allocation",
            "to": ["runtime://a.org/1/registry", "hyperty://a.org/9"],
            "body": {
                "code": 200, "description": "fine", "desc": {}, "value": {"allocated": ["hyperty://a.org/x"], "n": 6e78},
                "resource": ["k1"], "resources": ["comm://a.org/o/changes"],
                "childrenResources": [["hyperty://a.org/x"], "hyperty://a.org/y"],
                "via": "hyperty-runtime://a.org/protostub/1", "source": "hyperty://a.org/3",
                "identity": {"userProfile": {"username": "alice"}}, "auth": true,
                "runtimeToken": "t-1", "mutual": false
            }
        });
        let m = Message::from_value(v.clone()).unwrap();
        assert_eq!(m.body.code, Some(ResponseCode::Ok));
        assert_eq!(m.body.extra.get("runtimeToken"), Some(&json!("t-1")));
        assert_eq!(
            m.body.children_resources.as_ref().unwrap().flatten(),
            vec!["hyperty://a.org/x", "hyperty://a.org/y"]
        );
        let out: Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(out, v);
    }

    #[test]
    fn legacy_error_code_round_trips() {
        let m = Message::from_value(with("body", json!({"code": "error", "desc": {}}))).unwrap();
        assert_eq!(m.code(), Some(ResponseCode::LegacyError));
        let out: Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(out["body"]["code"], json!("error"));
    }

    #[test]
    fn missing_fields_are_named() {
        for f in ["id", "type", "from", "to"] {
            let e = Message::from_value(without(f)).unwrap_err();
            assert_eq!(
                e,
                ParseError::Missing(match f {
                    "id" => "id",
                    "type" => "type",
                    "from" => "from",
                    _ => "to",
                })
            );
            assert_eq!(e.field(), Some(f));
        }
        // null counts as missing
        assert_eq!(
            Message::from_value(with("from", Value::Null)).unwrap_err(),
            ParseError::Missing("from")
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let cases = [
            (with("id", json!("7")), "id"),
            (with("type", json!(3)), "type"),
            (with("type", json!("")), "type"),
            (with("from", json!(1)), "from"),
            (with("to", json!({"a": 1})), "to"),
            (with("to", json!(["hyperty://a.org/2", 5])), "to[1]"),
            (with("body", json!([])), "body"),
            (with("body", json!({"code": "ok"})), "body.code"),
            (with("body", json!({"code": 42})), "body.code"),
            (with("body", json!({"auth": "yes"})), "body.auth"),
            (with("body", json!({"resources": "x"})), "body.resources"),
            (with("body", json!({"resource": 3})), "body.resource"),
            (
                with("body", json!({"childrenResources": [1]})),
                "body.childrenResources",
            ),
            (with("body", json!({"description": 1})), "body.description"),
            (with("body", json!({"via": "nowhere"})), "body.via"),
            (with("body", json!({"source": "ftp://x/y"})), "body.source"),
        ];
        for (v, field) in cases {
            let e = Message::from_value(v.clone()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{v} gave {e}");
        }
    }

    #[test]
    fn bad_ids() {
        for id in [json!(0), json!(-1), json!(1.5), json!(9007199254740992u64)] {
            assert_eq!(
                Message::from_value(with("id", id)).unwrap_err(),
                ParseError::InvalidId
            );
        }
        assert!(Message::from_value(with("id", json!(9007199254740991u64))).is_ok());
    }

    #[test]
    fn bad_addresses_and_empty_to() {
        assert_eq!(
            Message::from_value(with("to", json!([]))).unwrap_err(),
            ParseError::EmptyTo
        );
        let e = Message::from_value(with("to", json!("gopher://a.org/x"))).unwrap_err();
        assert!(matches!(
            e,
            ParseError::Address { ref field, error: AddressError::UnknownScheme(_) } if field == "to"
        ));
        let e = Message::from_value(with("from", json!(""))).unwrap_err();
        assert!(matches!(
            e,
            ParseError::Address {
                error: AddressError::Empty,
                ..
            }
        ));
    }

    #[test]
    fn not_json_or_not_object() {
        assert!(matches!(Message::parse("{"), Err(ParseError::Json(_))));
        assert_eq!(Message::parse("[1]"), Err(ParseError::NotAnObject));
        assert_eq!(Message::parse("null"), Err(ParseError::NotAnObject));
    }

    #[test]
    fn missing_body_serialises_as_empty_object() {
        let m = Message::from_value(base()).unwrap();
        assert!(m.body.is_empty());
        assert!(m.to_json().ends_with("\"body\":{}}"));
    }

    #[test]
    fn reply_rules() {
        let m = Message::from_value(with(
            "to",
            json!(["hyperty://a.org/2", "hyperty://a.org/3"]),
        ))
        .unwrap();
        let r = m.reply_error(ResponseCode::NotFound, "gone");
        assert_eq!(r.id, 1);
        assert_eq!(r.kind, MessageType::Response);
        assert_eq!(r.from.as_str(), "hyperty://a.org/2");
        assert_eq!(r.to, To::One(m.from.clone()));
        assert_eq!(r.body.description_text(), Some("gone"));
        let r3 = m.reply_from("hyperty://a.org/3".parse().unwrap(), ResponseCode::Ok);
        assert_eq!(r3.from.as_str(), "hyperty://a.org/3");
    }

    #[test]
    fn response_codes() {
        for c in [100u16, 200, 400, 401, 403, 404, 408, 429, 500, 504, 302] {
            assert_eq!(ResponseCode::from_u16(c).as_u16(), c);
        }
        assert!(ResponseCode::Provisional.is_provisional());
        assert!(!ResponseCode::Ok.is_provisional());
        assert!(ResponseCode::Ok.is_success());
        assert!(!ResponseCode::NotFound.is_success());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-z:/.0-9-]{0,24}".prop_map(Value::String),
            prop_oneof![
                Just("hyperty://a.org/1"),
                Just("mn:/session"),
                Just("comm://a.org/x/changes"),
                Just("create"),
                Just("response"),
                Just("error"),
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("id".to_owned()),
                        Just("type".to_owned()),
                        Just("from".to_owned()),
                        Just("to".to_owned()),
                        Just("body".to_owned()),
                        Just("code".to_owned()),
                        Just("resource".to_owned()),
                        Just("childrenResources".to_owned()),
                        Just("via".to_owned()),
                        "[a-z]{1,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_json(v in arb_json()) {
            let text = v.to_string();
            if let Ok(m) = Message::parse(&text) {
                // whatever parses re-serialises to something that parses to the same message
                prop_assert_eq!(Message::parse(&m.to_json()).unwrap(), m);
            }
        }

        #[test]
        fn parser_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
            let _ = Message::parse(&s);
        }

        #[test]
        fn valid_messages_round_trip(id in 1u64..=MAX_MESSAGE_ID, n in 0usize..4, value in arb_json()) {
            let to: Vec<Value> = (0..=n).map(|i| json!(format!("hyperty://a.org/{i}"))).collect();
            let v = json!({"id": id, "type": "update", "from": "comm://a.org/o", "to": to,
                           "body": {"value": value, "x-extra": [1, 2]}});
            let m = Message::from_value(v.clone()).unwrap();
            let out: Value = serde_json::from_str(&m.to_json()).unwrap();
            // `value: null` is kept, everything else verbatim
            prop_assert_eq!(out, v);
        }
    }
}
