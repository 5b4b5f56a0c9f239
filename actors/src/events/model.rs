//! The event object of seed 004 and the rules it must satisfy.
//!
//! An [`Event`] is immutable once built: its id is computed at construction and
//! cached. Addressing ([`Addressing`]: source + `to`/`cc`/`bcc`) is normalised when
//! an event is built or parsed: each set is deduplicated, `cc` loses the entries of
//! `to`, `bcc` loses the entries of `to ∪ cc`, and `to` must not be empty
//! (webinos-decisions.md §4.3–4.4).
//!
//! Applications build events with [`Event::builder`] (the spec's
//! `createWebinosEvent`), which refuses the types the dispatcher reserves for itself
//! (`deliveryNotification`, `JSONRPC20Request`, `JSONRPC20Response`).
//!
//! ```
//! use hyperty_actors::events::model::{Addressing, Event};
//!
//! let a = |s: &str| s.parse::<hyperty_actors::address::Address>().unwrap();
//! let ev = Event::builder("chatMessage", a("hyperty://a.org/alice"))
//!     .to(a("hyperty://b.org/bob"))
//!     .cc(a("hyperty://b.org/bob")) // already in `to`: dropped
//!     .bcc(a("hyperty://c.org/carol"))
//!     .payload("Hello!")
//!     .build()
//!     .unwrap();
//! assert!(ev.addressing().cc().is_empty());
//! assert_eq!(ev.addressing().bcc().len(), 1);
//! assert!(Event::builder("deliveryNotification", a("hyperty://a.org/alice"))
//!     .to(a("hyperty://b.org/bob"))
//!     .build()
//!     .is_err());
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::address::Address;
use crate::events::error::{EventError, EventParseError};
use crate::events::id::{event_id, EventId, IdFields};

/// Type of delivery notification events (handled by the dispatcher only).
pub const DELIVERY_NOTIFICATION: &str = "deliveryNotification";
/// Type of RPC request events (handled by the dispatcher only).
pub const RPC_REQUEST: &str = "JSONRPC20Request";
/// Type of RPC response events (handled by the dispatcher only).
pub const RPC_RESPONSE: &str = "JSONRPC20Response";
/// The types applications may neither create nor receive.
pub const RESERVED_TYPES: [&str; 3] = [DELIVERY_NOTIFICATION, RPC_REQUEST, RPC_RESPONSE];

/// Most recipients (`to` + `cc` + `bcc`) of one event or forwarding.
pub const MAX_RECIPIENTS: usize = 1024;
/// Largest payload, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;
/// Longest type, in bytes.
pub const MAX_TYPE_LEN: usize = 256;

/// True if `s` matches `[_a-zA-Z][_a-zA-Z0-9]*`.
pub fn is_valid_type(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

/// A validated event type.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Validates `s` against `[_a-zA-Z][_a-zA-Z0-9]*` (at most [`MAX_TYPE_LEN`] bytes).
    pub fn new(s: &str) -> Result<EventType, EventParseError> {
        if s.len() > MAX_TYPE_LEN || !is_valid_type(s) {
            return Err(EventParseError::BadType(s.chars().take(64).collect()));
        }
        Ok(EventType(Arc::from(s)))
    }

    /// The type string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the dispatcher's own types.
    pub fn is_reserved(&self) -> bool {
        RESERVED_TYPES.contains(&self.as_str())
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// How a recipient is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Primary recipient.
    To,
    /// Secondary recipient.
    Cc,
    /// Blind-carbon-copy recipient.
    Bcc,
}

/// A source and three recipient sets (the spec's `WebinosEventAddressing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    source: Address,
    to: Vec<Address>,
    cc: Vec<Address>,
    bcc: Vec<Address>,
}

impl Addressing {
    /// Addressing from `source` with no recipients yet.
    pub fn new(source: Address) -> Addressing {
        Addressing {
            source,
            to: Vec::new(),
            cc: Vec::new(),
            bcc: Vec::new(),
        }
    }

    /// Adds a primary recipient.
    pub fn with_to(mut self, a: Address) -> Self {
        self.to.push(a);
        self
    }

    /// Adds a secondary recipient.
    pub fn with_cc(mut self, a: Address) -> Self {
        self.cc.push(a);
        self
    }

    /// Adds a blind-carbon-copy recipient.
    pub fn with_bcc(mut self, a: Address) -> Self {
        self.bcc.push(a);
        self
    }

    /// Adds several primary recipients.
    pub fn with_to_all(mut self, a: impl IntoIterator<Item = Address>) -> Self {
        self.to.extend(a);
        self
    }

    /// The source.
    pub fn source(&self) -> &Address {
        &self.source
    }

    /// Primary recipients.
    pub fn to(&self) -> &[Address] {
        &self.to
    }

    /// Secondary recipients.
    pub fn cc(&self) -> &[Address] {
        &self.cc
    }

    /// Blind-carbon-copy recipients.
    pub fn bcc(&self) -> &[Address] {
        &self.bcc
    }

    /// Every recipient with its role, `to` first.
    pub fn recipients(&self) -> impl Iterator<Item = (&Address, Role)> + '_ {
        self.to
            .iter()
            .map(|a| (a, Role::To))
            .chain(self.cc.iter().map(|a| (a, Role::Cc)))
            .chain(self.bcc.iter().map(|a| (a, Role::Bcc)))
    }

    /// How `a` is addressed, if it is.
    pub fn role_of(&self, a: &str) -> Option<Role> {
        self.recipients()
            .find(|(r, _)| r.as_str() == a)
            .map(|(_, role)| role)
    }

    /// Number of recipients.
    pub fn len(&self) -> usize {
        self.to.len() + self.cc.len() + self.bcc.len()
    }

    /// True if there are no recipients.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deduplicates the sets, removes `to` from `cc` and `to ∪ cc` from `bcc`.
    pub(crate) fn normalise(&mut self) {
        let mut seen: HashSet<Address> = HashSet::with_capacity(self.len());
        self.to.retain(|a| seen.insert(a.clone()));
        self.cc.retain(|a| seen.insert(a.clone()));
        self.bcc.retain(|a| seen.insert(a.clone()));
    }

    /// Checks the limits and that there is a primary recipient.
    pub(crate) fn check(&self, field: &'static str) -> Result<(), EventParseError> {
        if self.to.is_empty() {
            return Err(EventParseError::EmptyTo(field));
        }
        if self.len() > MAX_RECIPIENTS {
            return Err(EventParseError::TooManyRecipients(self.len()));
        }
        Ok(())
    }

    /// The same addressing with `bcc` replaced.
    pub(crate) fn replace_bcc(&self, bcc: Vec<Address>) -> Addressing {
        Addressing {
            source: self.source.clone(),
            to: self.to.clone(),
            cc: self.cc.clone(),
            bcc,
        }
    }

    pub(crate) fn from_parts(
        source: Address,
        to: Vec<Address>,
        cc: Vec<Address>,
        bcc: Vec<Address>,
    ) -> Addressing {
        Addressing {
            source,
            to,
            cc,
            bcc,
        }
    }
}

/// Addressing of the last forwarding, with its optional timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    addressing: Addressing,
    timestamp: Option<u64>,
}

impl Forwarding {
    /// A forwarding with `addressing` (its source is the forwarder).
    pub fn new(addressing: Addressing, timestamp: Option<u64>) -> Result<Forwarding, EventError> {
        let mut addressing = addressing;
        addressing.normalise();
        addressing.check("forwarding.to")?;
        Ok(Forwarding {
            addressing,
            timestamp,
        })
    }

    pub(crate) fn from_checked(addressing: Addressing, timestamp: Option<u64>) -> Forwarding {
        Forwarding {
            addressing,
            timestamp,
        }
    }

    /// The forwarder and the forwarding destinations.
    pub fn addressing(&self) -> &Addressing {
        &self.addressing
    }

    /// When the event was forwarded (ms), if stamped.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }
}

/// A webinos event. Cheap to share behind an `Arc`; immutable except for the
/// attributes the id does not depend on, which only the dispatcher changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    event_type: EventType,
    addressing: Addressing,
    in_response_to: Option<EventId>,
    generation_timestamp: Option<u64>,
    expiry_timestamp: Option<u64>,
    delivery_notification_wanted: bool,
    addressing_sensitive: bool,
    forwarding: Option<Forwarding>,
    payload: Option<String>,
    id: EventId,
}

impl Event {
    /// Starts building an event of `event_type` from `source` (the spec's
    /// `createWebinosEvent`). Defaults: addressing sensitive, no timestamps, no
    /// payload, no delivery notifications.
    pub fn builder(event_type: impl Into<String>, source: Address) -> EventBuilder {
        EventBuilder {
            event_type: event_type.into(),
            addressing: Addressing::new(source),
            in_response_to: None,
            generation_timestamp: None,
            expiry_timestamp: None,
            delivery_notification_wanted: false,
            addressing_sensitive: true,
            payload: None,
        }
    }

    /// The id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The type.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// Source and original destinations.
    pub fn addressing(&self) -> &Addressing {
        &self.addressing
    }

    /// The original source.
    pub fn source(&self) -> &Address {
        &self.addressing.source
    }

    /// The id of the event this one responds to.
    pub fn in_response_to(&self) -> Option<EventId> {
        self.in_response_to
    }

    /// Generation timestamp (ms since the epoch).
    pub fn generation_timestamp(&self) -> Option<u64> {
        self.generation_timestamp
    }

    /// Expiry timestamp (ms since the epoch).
    pub fn expiry_timestamp(&self) -> Option<u64> {
        self.expiry_timestamp
    }

    /// Whether the sender wants delivery notifications.
    pub fn delivery_notification_wanted(&self) -> bool {
        self.delivery_notification_wanted
    }

    /// Whether the id depends on source and `to`.
    pub fn addressing_sensitive(&self) -> bool {
        self.addressing_sensitive
    }

    /// The last forwarding, if the event was forwarded.
    pub fn forwarding(&self) -> Option<&Forwarding> {
        self.forwarding.as_ref()
    }

    /// The payload.
    pub fn payload(&self) -> Option<&str> {
        self.payload.as_deref()
    }

    /// The entity that last sent the event: the forwarder, or else the source.
    pub fn sender(&self) -> &Address {
        match &self.forwarding {
            Some(f) => &f.addressing.source,
            None => &self.addressing.source,
        }
    }

    /// The destinations the event is travelling to now: the forwarding
    /// destinations, or else the original ones.
    pub fn destinations(&self) -> &Addressing {
        match &self.forwarding {
            Some(f) => &f.addressing,
            None => &self.addressing,
        }
    }

    /// True if `a` is a primary recipient of the current destinations.
    pub fn is_primary(&self, a: &str) -> bool {
        self.destinations().to.iter().any(|t| t.as_str() == a)
    }

    /// True past the expiry timestamp ("past which": `now > expiry`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expiry_timestamp.is_some_and(|e| now_ms > e)
    }

    /// True for a type reserved to the dispatcher.
    pub fn is_reserved(&self) -> bool {
        self.event_type.is_reserved()
    }

    /// Recomputes the id from the content.
    pub fn compute_id(&self) -> EventId {
        compute(
            &self.event_type,
            &self.addressing,
            self.in_response_to,
            self.generation_timestamp,
            self.expiry_timestamp,
            self.payload.as_deref(),
            self.addressing_sensitive,
        )
    }

    /// A copy with the delivery-notification flag set (the id does not change).
    pub(crate) fn with_dnw(&self, wanted: bool) -> Event {
        let mut e = self.clone();
        e.delivery_notification_wanted = wanted;
        e
    }

    /// A copy with `bcc` (of the original or the forwarding destinations) replaced.
    pub(crate) fn with_bcc(
        &self,
        original: Vec<Address>,
        forwarding: Option<Vec<Address>>,
    ) -> Event {
        let mut e = self.clone();
        e.addressing = self.addressing.replace_bcc(original);
        if let (Some(f), Some(bcc)) = (&self.forwarding, forwarding) {
            e.forwarding = Some(Forwarding {
                addressing: f.addressing.replace_bcc(bcc),
                timestamp: f.timestamp,
            });
        }
        e
    }

    /// The same event forwarded with new addressing; the id does not change.
    pub(crate) fn forwarded(&self, forwarding: Forwarding) -> Event {
        let mut e = self.clone();
        e.forwarding = Some(forwarding);
        e
    }

    /// The same event re-sourced to `source` → `to` with empty `cc`/`bcc` and no
    /// forwarding (the pub/sub rule for addressing-insensitive events). The id is
    /// recomputed; for an insensitive event it is unchanged.
    pub(crate) fn resourced(&self, source: Address, to: Address) -> Event {
        let mut e = self.clone();
        e.addressing = Addressing::from_parts(source, vec![to], Vec::new(), Vec::new());
        e.forwarding = None;
        e.id = e.compute_id();
        e
    }

    /// Builds an event from checked parts (the JSON parser and the builder). A
    /// caller that already hashed these parts passes `known_id` (the id depends only
    /// on the type, source, the deduplicated sorted `to`, timestamps, payload and
    /// sensitivity, none of which normalisation changes).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        event_type: EventType,
        mut addressing: Addressing,
        in_response_to: Option<EventId>,
        generation_timestamp: Option<u64>,
        expiry_timestamp: Option<u64>,
        delivery_notification_wanted: bool,
        addressing_sensitive: bool,
        forwarding: Option<Forwarding>,
        payload: Option<String>,
        known_id: Option<EventId>,
    ) -> Result<Event, EventParseError> {
        addressing.normalise();
        addressing.check("to")?;
        if let Some(p) = &payload {
            if p.len() > MAX_PAYLOAD_LEN {
                return Err(EventParseError::PayloadTooLarge(p.len()));
            }
        }
        let id = known_id.unwrap_or_else(|| {
            compute(
                &event_type,
                &addressing,
                in_response_to,
                generation_timestamp,
                expiry_timestamp,
                payload.as_deref(),
                addressing_sensitive,
            )
        });
        Ok(Event {
            event_type,
            addressing,
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
}

fn compute(
    event_type: &EventType,
    addressing: &Addressing,
    in_response_to: Option<EventId>,
    generation_timestamp: Option<u64>,
    expiry_timestamp: Option<u64>,
    payload: Option<&str>,
    addressing_sensitive: bool,
) -> EventId {
    let to: Vec<&str> = if addressing_sensitive {
        addressing.to.iter().map(Address::as_str).collect()
    } else {
        Vec::new()
    };
    let irt = in_response_to.map(|i| i.hex());
    event_id(&IdFields {
        event_type: event_type.as_str(),
        source: addressing.source.as_str(),
        to: &to,
        in_response_to: irt.as_ref().map(|h| h.as_str()),
        generation_timestamp,
        expiry_timestamp,
        payload,
        addressing_sensitive,
    })
}

/// Builds an [`Event`]; see [`Event::builder`].
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event_type: String,
    addressing: Addressing,
    in_response_to: Option<EventId>,
    generation_timestamp: Option<u64>,
    expiry_timestamp: Option<u64>,
    delivery_notification_wanted: bool,
    addressing_sensitive: bool,
    payload: Option<String>,
}

impl EventBuilder {
    /// Adds a primary recipient.
    pub fn to(mut self, a: Address) -> Self {
        self.addressing.to.push(a);
        self
    }

    /// Adds several primary recipients.
    pub fn to_all(mut self, a: impl IntoIterator<Item = Address>) -> Self {
        self.addressing.to.extend(a);
        self
    }

    /// Adds a secondary recipient.
    pub fn cc(mut self, a: Address) -> Self {
        self.addressing.cc.push(a);
        self
    }

    /// Adds a blind-carbon-copy recipient.
    pub fn bcc(mut self, a: Address) -> Self {
        self.addressing.bcc.push(a);
        self
    }

    /// Replaces the whole addressing (source included).
    pub fn addressing(mut self, addressing: Addressing) -> Self {
        self.addressing = addressing;
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, p: impl Into<String>) -> Self {
        self.payload = Some(p.into());
        self
    }

    /// Marks the event as a response to `event`.
    pub fn in_response_to(mut self, event: &Event) -> Self {
        self.in_response_to = Some(event.id());
        self
    }

    /// Marks the event as a response to the event with id `id`.
    pub fn in_response_to_id(mut self, id: EventId) -> Self {
        self.in_response_to = Some(id);
        self
    }

    /// Sets the generation timestamp (the spec's `withTimeStamp`).
    pub fn generated_at(mut self, ms: u64) -> Self {
        self.generation_timestamp = Some(ms);
        self
    }

    /// Sets the expiry timestamp.
    pub fn expires_at(mut self, ms: u64) -> Self {
        self.expiry_timestamp = Some(ms);
        self
    }

    /// Sets Addressing sensitive (default `true`).
    pub fn addressing_sensitive(mut self, yes: bool) -> Self {
        self.addressing_sensitive = yes;
        self
    }

    /// Sets Delivery notification wanted. The dispatcher derives it from the
    /// callbacks given at dispatch time anyway (decision 18).
    pub fn delivery_notification_wanted(mut self, yes: bool) -> Self {
        self.delivery_notification_wanted = yes;
        self
    }

    /// Builds the event, refusing reserved types (`INVALID_ARGUMENT_ERROR`).
    pub fn build(self) -> Result<Event, EventError> {
        if RESERVED_TYPES.contains(&self.event_type.as_str()) {
            return Err(EventError::InvalidArgument(format!(
                "type {:?} is reserved to the event dispatcher",
                self.event_type
            )));
        }
        Ok(self.build_any()?)
    }

    /// Builds the event, reserved types included (the dispatcher's own events).
    pub(crate) fn build_any(self) -> Result<Event, EventParseError> {
        let event_type = EventType::new(&self.event_type)?;
        Event::from_parts(
            event_type,
            self.addressing,
            self.in_response_to,
            self.generation_timestamp,
            self.expiry_timestamp,
            self.delivery_notification_wanted,
            self.addressing_sensitive,
            None,
            self.payload,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn type_rule() {
        for ok in ["a", "_", "A_9", "deliveryNotification", "_x1"] {
            assert!(is_valid_type(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", "a.b", "\u{1F600}"] {
            assert!(!is_valid_type(bad), "{bad}");
        }
        assert!(EventType::new(&"a".repeat(MAX_TYPE_LEN + 1)).is_err());
    }

    #[test]
    fn normalisation() {
        let (x, y, z) = (a("hyperty://a/x"), a("hyperty://a/y"), a("hyperty://a/z"));
        let ev = Event::builder("t", x.clone())
            .to(x.clone())
            .to(x.clone())
            .cc(x.clone())
            .cc(y.clone())
            .cc(y.clone())
            .bcc(y.clone())
            .bcc(z.clone())
            .bcc(x.clone())
            .build()
            .unwrap();
        assert_eq!(ev.addressing().to(), std::slice::from_ref(&x));
        assert_eq!(ev.addressing().cc(), std::slice::from_ref(&y));
        assert_eq!(ev.addressing().bcc(), std::slice::from_ref(&z));
        assert_eq!(ev.addressing().role_of(z.as_str()), Some(Role::Bcc));
        assert_eq!(ev.compute_id(), ev.id());
    }

    #[test]
    fn empty_to_and_reserved_types_are_invalid_arguments() {
        let e = Event::builder("t", a("hyperty://a/x"))
            .cc(a("hyperty://a/y"))
            .build()
            .unwrap_err();
        assert_eq!(e.code(), 1);
        for t in RESERVED_TYPES {
            let e = Event::builder(t, a("hyperty://a/x"))
                .to(a("hyperty://a/y"))
                .build()
                .unwrap_err();
            assert_eq!(e.code(), 1);
        }
        assert!(Event::builder("bad type", a("hyperty://a/x"))
            .to(a("hyperty://a/y"))
            .build()
            .is_err());
        assert!(Forwarding::new(Addressing::new(a("hyperty://a/x")), None).is_err());
    }

    #[test]
    fn bcc_forwarding_and_dnw_do_not_change_the_id() {
        let ev = Event::builder("t", a("hyperty://a/x"))
            .to(a("hyperty://a/y"))
            .bcc(a("hyperty://a/z"))
            .payload("p")
            .build()
            .unwrap();
        let f = Forwarding::new(
            Addressing::new(a("hyperty://a/y")).with_to(a("hyperty://a/w")),
            Some(3),
        )
        .unwrap();
        let fw = ev
            .forwarded(f)
            .with_dnw(true)
            .with_bcc(Vec::new(), Some(Vec::new()));
        assert_eq!(fw.id(), ev.id());
        assert_eq!(fw.compute_id(), ev.id());
        assert_eq!(fw.sender().as_str(), "hyperty://a/y");
        assert!(fw.is_primary("hyperty://a/w"));
        assert!(!fw.is_primary("hyperty://a/y"));
    }

    #[test]
    fn resourcing_keeps_the_id_only_when_insensitive() {
        let base = Event::builder("t", a("hyperty://a/x"))
            .to(a("hyperty://a/y"))
            .payload("p");
        let sensitive = base.clone().build().unwrap();
        let insensitive = base.addressing_sensitive(false).build().unwrap();
        let (n, s) = (a("hyperty://a/node"), a("hyperty://a/sub"));
        assert_eq!(
            insensitive.resourced(n.clone(), s.clone()).id(),
            insensitive.id()
        );
        assert_ne!(sensitive.resourced(n, s).id(), sensitive.id());
    }

    #[test]
    fn expiry_is_strictly_after() {
        let ev = Event::builder("t", a("hyperty://a/x"))
            .to(a("hyperty://a/y"))
            .expires_at(100)
            .build()
            .unwrap();
        assert!(!ev.is_expired(100));
        assert!(ev.is_expired(101));
    }
}
