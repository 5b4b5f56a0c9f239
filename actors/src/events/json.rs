//! The JSON form of an event, on the wire and for tools.
//!
//! ```json
//! {"type":"chat","source":"hyperty://a.org/1","to":["hyperty://b.org/2"],"cc":[],"bcc":[],
//!  "inResponseTo":null,"generationTimestamp":1700000000000,"expiryTimestamp":null,
//!  "deliveryNotificationWanted":false,"addressingSensitive":true,
//!  "forwarding":{"source":"…","to":["…"],"cc":[],"bcc":[],"timestamp":null},
//!  "payload":"hi","id":"<64 hex digits>"}
//! ```
//!
//! Absent optional fields are `null` or missing; `cc`, `bcc` and `forwarding` may
//! be missing; `type`, `source`, `to` and `addressingSensitive` are required;
//! `deliveryNotificationWanted` defaults to `false`. `id` is optional: when present,
//! the receiver recomputes the id and treats a mismatch as invalid (decision 6).
//! Unknown members are ignored.
//!
//! Two levels of parsing:
//!
//! * [`RawEvent`] keeps entities as plain strings and checks only the event-model
//!   rules the id depends on (type syntax, a non-empty `to`, id formats, the id
//!   match). It is what the `hyperty event-id` tool uses ([`event_id_lines`]).
//! * [`Event::from_raw`] / [`Event::from_json`] also require every entity to be a
//!   valid [`Address`]: that is what the dispatcher accepts.
//!
//! ```
//! use hyperty_actors::events::json::event_id_lines;
//!
//! let input = concat!(
//!     r#"{"type":"t","source":"s","to":["x"],"addressingSensitive":false}"#, "\n",
//!     r#"{"type":"1t","source":"s","to":["x"],"addressingSensitive":true}"#, "\n",
//! );
//! let mut out = Vec::new();
//! event_id_lines(input.as_bytes(), &mut out).unwrap();
//! let out = String::from_utf8(out).unwrap();
//! let lines: Vec<&str> = out.lines().collect();
//! assert_eq!(lines[0].len(), 64);
//! assert!(lines[1].starts_with("invalid: "));
//! ```

use std::io::{self, BufRead, Read, Write};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::address::Address;
use crate::events::error::EventParseError;
use crate::events::id::{event_id, EventId, IdFields};
use crate::events::model::{
    is_valid_type, Addressing, Event, EventType, Forwarding, MAX_PAYLOAD_LEN, MAX_RECIPIENTS,
    MAX_TYPE_LEN,
};

/// Longest input line [`event_id_lines`] reads, in bytes.
pub const MAX_LINE_LEN: usize = 4 << 20;

/// An event as received, entities as plain strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `type`.
    pub event_type: String,
    /// `source`.
    pub source: String,
    /// `to`.
    pub to: Vec<String>,
    /// `cc`.
    pub cc: Vec<String>,
    /// `bcc`.
    pub bcc: Vec<String>,
    /// `inResponseTo` (an id).
    pub in_response_to: Option<String>,
    /// `generationTimestamp`.
    pub generation_timestamp: Option<u64>,
    /// `expiryTimestamp`.
    pub expiry_timestamp: Option<u64>,
    /// `deliveryNotificationWanted`.
    pub delivery_notification_wanted: bool,
    /// `addressingSensitive`.
    pub addressing_sensitive: bool,
    /// `forwarding`.
    pub forwarding: Option<RawForwarding>,
    /// `payload`.
    pub payload: Option<String>,
    /// `id`, if transmitted.
    pub id: Option<String>,
}

/// A forwarding as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawForwarding {
    /// `forwarding.source`.
    pub source: String,
    /// `forwarding.to`.
    pub to: Vec<String>,
    /// `forwarding.cc`.
    pub cc: Vec<String>,
    /// `forwarding.bcc`.
    pub bcc: Vec<String>,
    /// `forwarding.timestamp`.
    pub timestamp: Option<u64>,
}

fn wrong(field: &str, expected: &'static str) -> EventParseError {
    EventParseError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

fn take(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    map.remove(key).filter(|v| !v.is_null())
}

fn string(field: &str, v: Value) -> Result<String, EventParseError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(wrong(field, "a string")),
    }
}

fn opt_string(
    map: &mut Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, EventParseError> {
    take(map, key).map(|v| string(field, v)).transpose()
}

fn list(
    map: &mut Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Vec<String>, EventParseError> {
    match take(map, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > MAX_RECIPIENTS {
                return Err(EventParseError::TooManyRecipients(items.len()));
            }
            items
                .into_iter()
                .map(|i| string(field, i))
                .collect::<Result<_, _>>()
        }
        Some(_) => Err(wrong(field, "an array of strings")),
    }
}

fn timestamp(
    map: &mut Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<u64>, EventParseError> {
    match take(map, key) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong(field, "a non-negative integer (ms since the epoch)")),
        Some(_) => Err(wrong(field, "a non-negative integer (ms since the epoch)")),
    }
}

fn boolean(
    map: &mut Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<bool>, EventParseError> {
    match take(map, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(wrong(field, "a boolean")),
    }
}

impl RawEvent {
    /// Parses JSON text.
    pub fn parse(text: &str) -> Result<RawEvent, EventParseError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| EventParseError::Json(e.to_string()))?;
        RawEvent::from_value(v)
    }

    /// Reads a parsed JSON value.
    pub fn from_value(v: Value) -> Result<RawEvent, EventParseError> {
        let Value::Object(mut m) = v else {
            return Err(EventParseError::NotAnObject);
        };
        let event_type = take(&mut m, "type")
            .ok_or(EventParseError::Missing("type"))
            .and_then(|v| string("type", v))?;
        let source = take(&mut m, "source")
            .ok_or(EventParseError::Missing("source"))
            .and_then(|v| string("source", v))?;
        let to = match m.get("to") {
            None | Some(Value::Null) => return Err(EventParseError::Missing("to")),
            Some(_) => list(&mut m, "to", "to")?,
        };
        let cc = list(&mut m, "cc", "cc")?;
        let bcc = list(&mut m, "bcc", "bcc")?;
        let in_response_to = opt_string(&mut m, "inResponseTo", "inResponseTo")?;
        let generation_timestamp = timestamp(&mut m, "generationTimestamp", "generationTimestamp")?;
        let expiry_timestamp = timestamp(&mut m, "expiryTimestamp", "expiryTimestamp")?;
        let delivery_notification_wanted = boolean(
            &mut m,
            "deliveryNotificationWanted",
            "deliveryNotificationWanted",
        )?
        .unwrap_or(false);
        let addressing_sensitive = boolean(&mut m, "addressingSensitive", "addressingSensitive")?
            .ok_or(EventParseError::Missing("addressingSensitive"))?;
        let forwarding = match take(&mut m, "forwarding") {
            None => None,
            Some(Value::Object(mut f)) => Some(RawForwarding {
                source: take(&mut f, "source")
                    .ok_or(EventParseError::Missing("forwarding.source"))
                    .and_then(|v| string("forwarding.source", v))?,
                to: list(&mut f, "to", "forwarding.to")?,
                cc: list(&mut f, "cc", "forwarding.cc")?,
                bcc: list(&mut f, "bcc", "forwarding.bcc")?,
                timestamp: timestamp(&mut f, "timestamp", "forwarding.timestamp")?,
            }),
            Some(_) => return Err(wrong("forwarding", "an object")),
        };
        let payload = opt_string(&mut m, "payload", "payload")?;
        let id = opt_string(&mut m, "id", "id")?;
        Ok(RawEvent {
            event_type,
            source,
            to,
            cc,
            bcc,
            in_response_to,
            generation_timestamp,
            expiry_timestamp,
            delivery_notification_wanted,
            addressing_sensitive,
            forwarding,
            payload,
            id,
        })
    }

    /// The id of the content as received (whatever the strings are).
    pub fn compute_id(&self) -> EventId {
        let to: Vec<&str> = self.to.iter().map(String::as_str).collect();
        event_id(&IdFields {
            event_type: &self.event_type,
            source: &self.source,
            to: &to,
            in_response_to: self.in_response_to.as_deref(),
            generation_timestamp: self.generation_timestamp,
            expiry_timestamp: self.expiry_timestamp,
            payload: self.payload.as_deref(),
            addressing_sensitive: self.addressing_sensitive,
        })
    }

    /// The id a delivery notification about this (possibly invalid) event refers
    /// to: the transmitted id if it is well formed, else the recomputed one.
    pub fn reference_id(&self) -> EventId {
        self.id
            .as_deref()
            .and_then(EventId::from_hex)
            .unwrap_or_else(|| self.compute_id())
    }

    /// Checks the event-model rules that do not involve address syntax and
    /// returns the id: type syntax, non-empty `to` (and `forwarding.to`), limits,
    /// id formats, and that a transmitted id matches the content.
    pub fn check(&self) -> Result<EventId, EventParseError> {
        if self.event_type.len() > MAX_TYPE_LEN || !is_valid_type(&self.event_type) {
            return Err(EventParseError::BadType(
                self.event_type.chars().take(64).collect(),
            ));
        }
        if self.to.is_empty() {
            return Err(EventParseError::EmptyTo("to"));
        }
        let n = self.to.len() + self.cc.len() + self.bcc.len();
        if n > MAX_RECIPIENTS {
            return Err(EventParseError::TooManyRecipients(n));
        }
        if let Some(f) = &self.forwarding {
            if f.to.is_empty() {
                return Err(EventParseError::EmptyTo("forwarding.to"));
            }
            let n = f.to.len() + f.cc.len() + f.bcc.len();
            if n > MAX_RECIPIENTS {
                return Err(EventParseError::TooManyRecipients(n));
            }
        }
        if let Some(p) = &self.payload {
            if p.len() > MAX_PAYLOAD_LEN {
                return Err(EventParseError::PayloadTooLarge(p.len()));
            }
        }
        if let Some(irt) = &self.in_response_to {
            EventId::from_hex(irt).ok_or(EventParseError::BadId("inResponseTo"))?;
        }
        let computed = self.compute_id();
        if let Some(claimed) = &self.id {
            let claimed_id = EventId::from_hex(claimed).ok_or(EventParseError::BadId("id"))?;
            if claimed_id != computed {
                return Err(EventParseError::IdMismatch {
                    claimed: claimed.clone(),
                    computed: computed.to_string(),
                });
            }
        }
        Ok(computed)
    }
}

fn addresses(field: &str, items: &[String]) -> Result<Vec<Address>, EventParseError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Address::parse(s).map_err(|error| EventParseError::Address {
                field: format!("{field}[{i}]"),
                error,
            })
        })
        .collect()
}

fn address(field: &str, s: &str) -> Result<Address, EventParseError> {
    Address::parse(s).map_err(|error| EventParseError::Address {
        field: field.to_owned(),
        error,
    })
}

impl Event {
    /// Validates a raw event into an event: the checks of [`RawEvent::check`] plus
    /// address syntax for every entity, then normalisation.
    pub fn from_raw(raw: &RawEvent) -> Result<Event, EventParseError> {
        let id = raw.check()?;
        let event_type = EventType::new(&raw.event_type)?;
        let addressing = Addressing::from_parts(
            address("source", &raw.source)?,
            addresses("to", &raw.to)?,
            addresses("cc", &raw.cc)?,
            addresses("bcc", &raw.bcc)?,
        );
        let forwarding = match &raw.forwarding {
            None => None,
            Some(f) => {
                let mut a = Addressing::from_parts(
                    address("forwarding.source", &f.source)?,
                    addresses("forwarding.to", &f.to)?,
                    addresses("forwarding.cc", &f.cc)?,
                    addresses("forwarding.bcc", &f.bcc)?,
                );
                a.normalise();
                a.check("forwarding.to")?;
                Some(Forwarding::from_checked(a, f.timestamp))
            }
        };
        let in_response_to = match &raw.in_response_to {
            None => None,
            Some(s) => Some(EventId::from_hex(s).ok_or(EventParseError::BadId("inResponseTo"))?),
        };
        Event::from_parts(
            event_type,
            addressing,
            in_response_to,
            raw.generation_timestamp,
            raw.expiry_timestamp,
            raw.delivery_notification_wanted,
            raw.addressing_sensitive,
            forwarding,
            raw.payload.clone(),
            Some(id),
        )
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<Event, EventParseError> {
        Event::from_raw(&RawEvent::parse(text)?)
    }

    /// Reads the JSON form from a parsed value.
    pub fn from_value(v: Value) -> Result<Event, EventParseError> {
        Event::from_raw(&RawEvent::from_value(v)?)
    }

    /// The JSON form (with `id`).
    pub fn to_json(&self) -> String {
        // Serialising strings, numbers and booleans cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON form as a value (with `id`).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

struct AddressingJson<'a>(&'a Addressing, Option<Option<u64>>);

impl Serialize for AddressingJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("source", self.0.source())?;
        m.serialize_entry("to", self.0.to())?;
        m.serialize_entry("cc", self.0.cc())?;
        m.serialize_entry("bcc", self.0.bcc())?;
        if let Some(ts) = self.1 {
            m.serialize_entry("timestamp", &ts)?;
        }
        m.end()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.event_type().as_str())?;
        m.serialize_entry("source", self.source())?;
        m.serialize_entry("to", self.addressing().to())?;
        m.serialize_entry("cc", self.addressing().cc())?;
        m.serialize_entry("bcc", self.addressing().bcc())?;
        m.serialize_entry("inResponseTo", &self.in_response_to())?;
        m.serialize_entry("generationTimestamp", &self.generation_timestamp())?;
        m.serialize_entry("expiryTimestamp", &self.expiry_timestamp())?;
        m.serialize_entry(
            "deliveryNotificationWanted",
            &self.delivery_notification_wanted(),
        )?;
        m.serialize_entry("addressingSensitive", &self.addressing_sensitive())?;
        match self.forwarding() {
            Some(f) => m.serialize_entry(
                "forwarding",
                &AddressingJson(f.addressing(), Some(f.timestamp())),
            )?,
            None => m.serialize_entry("forwarding", &Value::Null)?,
        }
        m.serialize_entry("payload", &self.payload())?;
        m.serialize_entry("id", &self.id())?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Event::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The `hyperty event-id` tool: reads events in their JSON form, one per line, and
/// writes for each line its id, or `invalid: <reason>`, one per line (so output
/// line *n* answers input line *n*; a blank line answers `invalid: empty line`).
///
/// A trailing `\r` is ignored; lines that are not UTF-8 or are longer than
/// [`MAX_LINE_LEN`] bytes are reported invalid and skipped. Address syntax is not
/// checked: the id rule hashes whatever strings it is given.
pub fn event_id_lines<R: BufRead, W: Write>(mut input: R, mut output: W) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = Read::take(&mut input, MAX_LINE_LEN as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE_LEN {
            input.skip_until(b'\n')?;
            writeln!(output, "invalid: line longer than {MAX_LINE_LEN} bytes")?;
            continue;
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let answer = match std::str::from_utf8(&buf) {
            Err(_) => "invalid: line is not UTF-8".to_owned(),
            Ok(line) if line.trim().is_empty() => "invalid: empty line".to_owned(),
            Ok(line) => match RawEvent::parse(line).and_then(|r| r.check()) {
                Ok(id) => id.to_string(),
                Err(e) => format!("invalid: {e}"),
            },
        };
        writeln!(output, "{answer}")?;
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_through_json() {
        let a = |s: &str| -> Address { s.parse().unwrap() };
        let ev = Event::builder("chat", a("hyperty://a.org/1"))
            .to(a("hyperty://b.org/2"))
            .cc(a("hyperty://c.org/3"))
            .bcc(a("hyperty://d.org/4"))
            .payload("x|y,z\\")
            .generated_at(5)
            .expires_at(0)
            .build()
            .unwrap();
        let text = ev.to_json();
        let back = Event::from_json(&text).unwrap();
        assert_eq!(back, ev);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["generationTimestamp"], json!(5));
        assert_eq!(v["expiryTimestamp"], json!(0));
        assert_eq!(v["inResponseTo"], Value::Null);
        assert_eq!(v["id"], json!(ev.id().to_string()));
    }

    #[test]
    fn field_errors_name_the_field() {
        let base = json!({"type":"t","source":"hyperty://a/1","to":["hyperty://a/2"],"addressingSensitive":true});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            Event::from_value(b).unwrap_err().to_string()
        };
        assert!(with("type", json!("9")).contains("type"));
        assert!(with("to", json!([])).contains("'to'"));
        assert!(with("to", json!(["nope"])).contains("to[0]"));
        assert!(with("cc", json!("x")).contains("cc"));
        assert!(with("generationTimestamp", json!(-1)).contains("generationTimestamp"));
        assert!(with("generationTimestamp", json!(1.5)).contains("generationTimestamp"));
        assert!(with("inResponseTo", json!("ABC")).contains("inResponseTo"));
        assert!(with("addressingSensitive", json!("yes")).contains("addressingSensitive"));
        assert!(
            with("forwarding", json!({"source":"hyperty://a/3","to":[]})).contains("forwarding.to")
        );
        assert!(with("id", json!("0".repeat(64))).contains("mismatch"));
        assert!(with("payload", json!(3)).contains("payload"));
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove("addressingSensitive");
        assert!(Event::from_value(b)
            .unwrap_err()
            .to_string()
            .contains("addressingSensitive"));
        assert_eq!(
            Event::from_json("[1]").unwrap_err(),
            EventParseError::NotAnObject
        );
        assert!(matches!(
            Event::from_json("{"),
            Err(EventParseError::Json(_))
        ));
    }

    #[test]
    fn raw_events_accept_any_strings() {
        let raw = RawEvent::parse(
            r#"{"type":"t","source":"not an address","to":["A","A"],"addressingSensitive":true}"#,
        )
        .unwrap();
        assert!(raw.check().is_ok());
        assert!(Event::from_raw(&raw).is_err());
    }
}
