//! Event ids, exactly as seed 004 defines them.
//!
//! An event id is the lowercase hexadecimal SHA-256 digest of a canonical string:
//!
//! ```text
//! addressing sensitive:   type|source|to-1,to-2,…,to-n|in-response-to|generation-ts|expiry-ts|payload
//! addressing insensitive: type|in-response-to|generation-ts|expiry-ts|payload
//! ```
//!
//! * the `to` entries form a set: duplicates are removed, then they are sorted by
//!   Unicode code point (Rust's `str` order *is* code-point order; JavaScript's and
//!   Java's UTF-16 order is not), and only then escaped;
//! * `source` and every `to` entry are escaped: `\` → `\\`, then `|` → `\|`, then
//!   `,` → `\,` (the seed's garbled rule, read as in webinos-decisions.md §3);
//! * absent fields are the empty string; timestamps are base-10 milliseconds since
//!   the Unix epoch (`0` is not absent);
//! * the string is hashed as UTF-8.
//!
//! [`event_id`] hashes whatever strings it is given: address syntax is the
//! dispatcher's business, not part of the id rule. The canonical string is fed to
//! the hasher piece by piece, without building it.
//!
//! ```
//! use hyperty_actors::events::id::{canonical_string, event_id, IdFields};
//!
//! let fields = IdFields {
//!     event_type: "chat",
//!     source: "a|b",
//!     to: &["z", "y,1", "z"],
//!     in_response_to: None,
//!     generation_timestamp: Some(0),
//!     expiry_timestamp: None,
//!     payload: Some("hi"),
//!     addressing_sensitive: true,
//! };
//! assert_eq!(canonical_string(&fields), r"chat|a\|b|y\,1,z||0||hi");
//! assert_eq!(event_id(&fields).to_string().len(), 64);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// An event id: a SHA-256 digest, shown as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId([u8; 32]);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl EventId {
    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An id from a raw digest.
    pub fn from_bytes(bytes: [u8; 32]) -> EventId {
        EventId(bytes)
    }

    /// Parses 64 *lowercase* hexadecimal digits (the only spelling the spec allows).
    pub fn from_hex(s: &str) -> Option<EventId> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(EventId(out))
    }

    /// The 64 hexadecimal digits, without allocating.
    pub fn hex(&self) -> HexId {
        let mut buf = [0u8; 64];
        for (i, byte) in self.0.iter().enumerate() {
            buf[2 * i] = HEX[(byte >> 4) as usize];
            buf[2 * i + 1] = HEX[(byte & 0x0f) as usize];
        }
        HexId(buf)
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The hexadecimal spelling of an [`EventId`], on the stack.
#[derive(Clone, Copy)]
pub struct HexId([u8; 64]);

impl HexId {
    /// The digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.hex().as_str())
    }
}

/// `s` is not 64 lowercase hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is 64 lowercase hexadecimal digits")]
pub struct BadEventId;

impl FromStr for EventId {
    type Err = BadEventId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventId::from_hex(s).ok_or(BadEventId)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex().as_str())
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        EventId::from_hex(&s).ok_or_else(|| serde::de::Error::custom(BadEventId))
    }
}

/// The fields an event id depends on, as plain strings.
#[derive(Debug, Clone, Copy)]
pub struct IdFields<'a> {
    /// The Type attribute.
    pub event_type: &'a str,
    /// The source address string (used only when addressing sensitive).
    pub source: &'a str,
    /// The `to` address strings, in any order, possibly repeated (used only when
    /// addressing sensitive).
    pub to: &'a [&'a str],
    /// The id the event responds to (its hex spelling), if any.
    pub in_response_to: Option<&'a str>,
    /// Generation timestamp, ms since the epoch.
    pub generation_timestamp: Option<u64>,
    /// Expiry timestamp, ms since the epoch.
    pub expiry_timestamp: Option<u64>,
    /// Payload.
    pub payload: Option<&'a str>,
    /// The Addressing sensitive attribute.
    pub addressing_sensitive: bool,
}

/// Escapes an address string for the canonical form: each `\`, `|` and `,` gets a
/// `\` in front (the same as the three ordered substitutions of the spec).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '\\' | '|' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    Cow::Owned(out)
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'\\' | b'|' | b',')
}

/// Where canonical bytes go: a hasher or a buffer.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn put_escaped(sink: &mut impl Sink, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if needs_escape(b) {
            sink.put(&bytes[start..i]);
            sink.put(&[b'\\', b]);
            start = i + 1;
        }
    }
    sink.put(&bytes[start..]);
}

fn put_decimal(sink: &mut impl Sink, n: Option<u64>) {
    let Some(mut n) = n else { return };
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    sink.put(&buf[i..]);
}

fn write_canonical(sink: &mut impl Sink, f: &IdFields<'_>) {
    sink.put(f.event_type.as_bytes());
    sink.put(b"|");
    if f.addressing_sensitive {
        put_escaped(sink, f.source);
        sink.put(b"|");
        let mut to: Vec<&str> = f.to.to_vec();
        to.sort_unstable();
        to.dedup();
        for (i, t) in to.iter().enumerate() {
            if i > 0 {
                sink.put(b",");
            }
            put_escaped(sink, t);
        }
        sink.put(b"|");
    }
    sink.put(f.in_response_to.unwrap_or_default().as_bytes());
    sink.put(b"|");
    put_decimal(sink, f.generation_timestamp);
    sink.put(b"|");
    put_decimal(sink, f.expiry_timestamp);
    sink.put(b"|");
    sink.put(f.payload.unwrap_or_default().as_bytes());
}

/// The canonical string that is hashed into the id.
pub fn canonical_string(fields: &IdFields<'_>) -> String {
    let mut buf = Vec::with_capacity(128);
    write_canonical(&mut buf, fields);
    // Every piece written is a `&str` or ASCII, so the buffer is valid UTF-8.
    String::from_utf8(buf).unwrap_or_default()
}

/// The event id of `fields`.
pub fn event_id(fields: &IdFields<'_>) -> EventId {
    let mut h = Sha256::new();
    write_canonical(&mut h, fields);
    EventId(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(to: &'a [&'a str]) -> IdFields<'a> {
        IdFields {
            event_type: "t",
            source: "s",
            to,
            in_response_to: None,
            generation_timestamp: None,
            expiry_timestamp: None,
            payload: None,
            addressing_sensitive: true,
        }
    }

    #[test]
    fn escaping_prefixes_each_special_character_once() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape(r"a\b|c,d"), r"a\\b\|c\,d");
        assert_eq!(escape(r"\|"), r"\\\|");
        // the ordered substitutions of the spec give the same result
        let ordered = r"x\|,"
            .replace('\\', r"\\")
            .replace('|', r"\|")
            .replace(',', r"\,");
        assert_eq!(escape(r"x\|,"), ordered);
    }

    #[test]
    fn to_is_deduplicated_and_sorted_by_code_point_before_escaping() {
        // U+1F600 (astral) sorts after U+FF01 by code point, before it in UTF-16
        let to = ["\u{1F600}", "\u{FF01}", "b", "a,", "a", "b"];
        assert_eq!(
            canonical_string(&fields(&to)),
            "t|s|a,a\\,,b,\u{FF01},\u{1F600}||||"
        );
    }

    #[test]
    fn absent_fields_are_empty_and_zero_is_not_absent() {
        let mut f = fields(&[]);
        f.addressing_sensitive = false;
        assert_eq!(canonical_string(&f), "t||||");
        f.generation_timestamp = Some(0);
        f.expiry_timestamp = Some(u64::MAX);
        f.payload = Some("");
        assert_eq!(canonical_string(&f), "t||0|18446744073709551615|");
    }

    #[test]
    fn hex_round_trips_and_rejects_uppercase() {
        let id = event_id(&fields(&["x"]));
        let hex = id.to_string();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(EventId::from_hex(&hex), Some(id));
        assert_eq!(EventId::from_hex(&hex.to_uppercase()), None);
        assert_eq!(EventId::from_hex(&hex[1..]), None);
        assert_eq!(EventId::from_hex(&format!("{}g", &hex[1..])), None);
    }

    #[test]
    fn streaming_hash_equals_hash_of_the_canonical_string() {
        let f = IdFields {
            event_type: "chatMessage",
            source: r"hyperty://a.org/\x|y",
            to: &["hyperty://b.org/2", "hyperty://b.org/1,1"],
            in_response_to: Some("ab"),
            generation_timestamp: Some(1_700_000_000_123),
            expiry_timestamp: Some(1),
            payload: Some("é|,\\"),
            addressing_sensitive: true,
        };
        let whole: [u8; 32] = Sha256::digest(canonical_string(&f).as_bytes()).into();
        assert_eq!(event_id(&f), EventId::from_bytes(whole));
    }
}
