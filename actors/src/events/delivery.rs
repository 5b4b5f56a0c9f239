//! Delivery notifications and the dispatch callbacks.
//!
//! # The protocol
//!
//! A `deliveryNotification` event tells the sender what happened to its event at
//! one recipient. The dispatcher generates and consumes them itself: applications
//! can neither create nor receive them. Rules (seed 004 + decisions 7, 8, 17):
//!
//! * one is generated only if the event has Delivery notification wanted **and**
//!   the recipient is a primary recipient of the current destinations (the
//!   forwarding `to` if forwarded, else the original `to`) — never otherwise;
//! * it goes to the last forwarder, else the source; `inResponseTo` is the event;
//!   Delivery notification wanted is false, Addressing sensitive true, no forwarding;
//! * its source is the recipient, except for `badDestination`, whose source is the
//!   reporting runtime's dispatcher (`<runtime>/events`) and whose `cc` lists the
//!   unknown recipients (our extension, allowed since only `to` is constrained);
//! * payload: one of [`DeliveryStatus`].
//!
//! # Callbacks
//!
//! A sender that dispatches with [`EventCallbacks`] gets [`EventReport`]s: the
//! spec's `onSending`, `onCaching`, `onDelivery`, `onTimeout` and `onError`, the
//! latter with a [`DeliveryError`] code. Delivery notification wanted is derived
//! from them: true iff `on_delivery` or `on_error` is wanted (decision 18). A
//! `duplicate` notification is reported through `on_delivery` (decision 17); each
//! recipient gets at most one `on_delivery`/`on_error` per dispatch.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::address::Address;
use crate::events::error::EventParseError;
use crate::events::id::EventId;
use crate::events::model::{Addressing, Event, DELIVERY_NOTIFICATION};

/// The payload of a delivery notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// `ok`: delivered.
    Ok,
    /// `duplicate`: an event with the same id was already delivered to the recipient.
    Duplicate,
    /// `invalid`: the recipient got an invalid event.
    Invalid,
    /// `badDestination`: the recipient is unknown or unreachable.
    BadDestination,
    /// `expired`: the event expired before delivery.
    Expired,
    /// `refused`: policy did not allow the delivery.
    Refused,
    /// `noReference`: the recipient does not hold the event responded to.
    NoReference,
}

impl DeliveryStatus {
    /// The payload string.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Ok => "ok",
            DeliveryStatus::Duplicate => "duplicate",
            DeliveryStatus::Invalid => "invalid",
            DeliveryStatus::BadDestination => "badDestination",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::Refused => "refused",
            DeliveryStatus::NoReference => "noReference",
        }
    }

    /// Parses a payload string.
    pub fn from_payload(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "ok" => DeliveryStatus::Ok,
            "duplicate" => DeliveryStatus::Duplicate,
            "invalid" => DeliveryStatus::Invalid,
            "badDestination" => DeliveryStatus::BadDestination,
            "expired" => DeliveryStatus::Expired,
            "refused" => DeliveryStatus::Refused,
            "noReference" => DeliveryStatus::NoReference,
            _ => return None,
        })
    }

    /// The `onError` code for an error status; `None` for `ok` and `duplicate`
    /// (both reported through `onDelivery`).
    pub fn error_code(self) -> Option<DeliveryErrorCode> {
        match self {
            DeliveryStatus::Ok | DeliveryStatus::Duplicate => None,
            DeliveryStatus::Invalid => Some(DeliveryErrorCode::Invalid),
            DeliveryStatus::BadDestination => Some(DeliveryErrorCode::BadDestination),
            DeliveryStatus::Expired => Some(DeliveryErrorCode::Expired),
            DeliveryStatus::Refused => Some(DeliveryErrorCode::Refused),
            DeliveryStatus::NoReference => Some(DeliveryErrorCode::NoReference),
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `WebinosEventDeliveryError` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryErrorCode {
    /// `UNKNOWN_ERR = 0`
    Unknown = 0,
    /// `INVALID = 1`
    Invalid = 1,
    /// `BAD_DESTINATION = 2`
    BadDestination = 2,
    /// `EXPIRED = 3`
    Expired = 3,
    /// `REFUSED = 4`
    Refused = 4,
    /// `NO_REFERENCE = 5`
    NoReference = 5,
}

impl DeliveryErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// An error reported through `onError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// The code.
    pub code: DeliveryErrorCode,
    /// A human-readable message.
    pub message: String,
}

impl DeliveryError {
    /// An error with a code and message.
    pub fn new(code: DeliveryErrorCode, message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

/// Which callback fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportKind {
    /// `onSending(event, recipient)`: handed to the recipient or the next hop.
    Sending {
        /// The recipient.
        recipient: Address,
    },
    /// `onCaching(event)`: stored in the Local Event Cache for later transmission.
    Caching,
    /// `onDelivery(event, recipient)`: delivered (`duplicate`: it already had it).
    Delivery {
        /// The recipient.
        recipient: Address,
        /// True when the recipient reported `duplicate`.
        duplicate: bool,
    },
    /// `onTimeout(event, recipient)`: no response within the reference timeout.
    Timeout {
        /// The primary recipient that did not respond.
        recipient: Address,
    },
    /// `onError(event, recipient, error)`.
    Error {
        /// The recipient.
        recipient: Address,
        /// What went wrong.
        error: DeliveryError,
    },
}

/// One callback invocation.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct EventReport {
    /// The event as dispatched.
    pub event: Arc<Event>,
    /// The callback.
    pub kind: ReportKind,
}

/// Which callbacks a dispatch has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallbackSet {
    /// `onSending`.
    pub on_sending: bool,
    /// `onCaching`.
    pub on_caching: bool,
    /// `onDelivery`.
    pub on_delivery: bool,
    /// `onTimeout`.
    pub on_timeout: bool,
    /// `onError`.
    pub on_error: bool,
}

impl CallbackSet {
    /// All five.
    pub fn all() -> CallbackSet {
        CallbackSet {
            on_sending: true,
            on_caching: true,
            on_delivery: true,
            on_timeout: true,
            on_error: true,
        }
    }

    /// Only `onDelivery` and `onError`.
    pub fn delivery() -> CallbackSet {
        CallbackSet {
            on_delivery: true,
            on_error: true,
            ..CallbackSet::default()
        }
    }

    /// True if this kind of report is wanted.
    pub fn wants(&self, kind: &ReportKind) -> bool {
        match kind {
            ReportKind::Sending { .. } => self.on_sending,
            ReportKind::Caching => self.on_caching,
            ReportKind::Delivery { .. } => self.on_delivery,
            ReportKind::Timeout { .. } => self.on_timeout,
            ReportKind::Error { .. } => self.on_error,
        }
    }
}

/// Where reports go.
#[derive(Clone)]
pub(crate) enum ReportSink {
    /// An actor (`try_send`: a full mailbox loses the report, a warning is logged).
    Actor(Recipient<EventReport>),
    /// A channel (never full; drained by the application).
    Channel(mpsc::UnboundedSender<EventReport>),
}

/// The callbacks of one dispatch: which ones, and where reports go.
#[derive(Clone)]
pub struct EventCallbacks {
    pub(crate) sink: ReportSink,
    pub(crate) wanted: CallbackSet,
}

impl fmt::Debug for EventCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventCallbacks")
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

impl EventCallbacks {
    /// Reports of the `wanted` kinds go to the actor `sink`.
    pub fn new(sink: Recipient<EventReport>, wanted: CallbackSet) -> EventCallbacks {
        EventCallbacks {
            sink: ReportSink::Actor(sink),
            wanted,
        }
    }

    /// Callbacks whose reports arrive on an async receiver.
    pub fn channel(wanted: CallbackSet) -> (EventCallbacks, ReportReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            EventCallbacks {
                sink: ReportSink::Channel(tx),
                wanted,
            },
            ReportReceiver { rx },
        )
    }

    /// Which callbacks are set.
    pub fn wanted(&self) -> CallbackSet {
        self.wanted
    }

    /// Delivery notification wanted, as derived from the callbacks (decision 18).
    pub fn wants_notifications(&self) -> bool {
        self.wanted.on_delivery || self.wanted.on_error
    }

    pub(crate) fn report(&self, event: &Arc<Event>, kind: ReportKind) {
        if !self.wanted.wants(&kind) {
            return;
        }
        let report = EventReport {
            event: event.clone(),
            kind,
        };
        match &self.sink {
            ReportSink::Actor(r) => {
                if r.try_send(report).is_err() {
                    tracing::warn!(id = %event.id(), "a dispatch report was lost (sink full or gone)");
                }
            }
            // the application may have dropped the receiver: nobody to tell
            ReportSink::Channel(tx) => {
                let _ = tx.send(report);
            }
        }
    }
}

/// The receiving end of [`EventCallbacks::channel`].
#[derive(Debug)]
pub struct ReportReceiver {
    rx: mpsc::UnboundedReceiver<EventReport>,
}

impl ReportReceiver {
    /// The next report, or `None` if none arrives within `within`.
    pub async fn recv(&mut self, within: Duration) -> Option<EventReport> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next report matching `pred` within `within` (others are skipped).
    pub async fn recv_matching(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&ReportKind) -> bool,
    ) -> Option<EventReport> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self.recv(left).await?;
            if pred(&r.kind) {
                return Some(r);
            }
        }
    }

    /// Reports already received, without waiting.
    pub fn drain(&mut self) -> Vec<EventReport> {
        let mut v = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            v.push(m);
        }
        v
    }
}

/// Builds the delivery notification `reporter` sends about `event`.
pub(crate) fn notification(
    reporter: Address,
    event: &Event,
    status: DeliveryStatus,
    cc: Vec<Address>,
) -> Result<Event, EventParseError> {
    notification_about(reporter, event.sender().clone(), event.id(), status, cc)
}

/// Builds a delivery notification from `reporter` to `notified` about the event
/// with id `about`.
pub(crate) fn notification_about(
    reporter: Address,
    notified: Address,
    about: EventId,
    status: DeliveryStatus,
    cc: Vec<Address>,
) -> Result<Event, EventParseError> {
    let mut addressing = Addressing::new(reporter.clone()).with_to(notified);
    for c in cc {
        addressing = addressing.with_cc(c);
    }
    Event::builder(DELIVERY_NOTIFICATION, reporter)
        .addressing(addressing)
        .in_response_to_id(about)
        .payload(status.as_str())
        .addressing_sensitive(true)
        .delivery_notification_wanted(false)
        .build_any()
}

/// Checks the delivery-notification rules and returns the status.
pub(crate) fn check_notification(ev: &Event) -> Result<DeliveryStatus, EventParseError> {
    let bad =
        |why: &str| EventParseError::Protocol(format!("invalid delivery notification: {why}"));
    if ev.addressing().to().len() != 1 {
        return Err(bad("'to' must hold exactly the notified entity"));
    }
    if ev.in_response_to().is_none() {
        return Err(bad("'inResponseTo' is required"));
    }
    if ev.delivery_notification_wanted() {
        return Err(bad("'deliveryNotificationWanted' must be false"));
    }
    if !ev.addressing_sensitive() {
        return Err(bad("'addressingSensitive' must be true"));
    }
    if ev.forwarding().is_some() {
        return Err(bad("it cannot be forwarded"));
    }
    ev.payload()
        .and_then(DeliveryStatus::from_payload)
        .ok_or_else(|| bad("unknown status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn statuses_round_trip_and_map_to_codes() {
        for s in [
            DeliveryStatus::Ok,
            DeliveryStatus::Duplicate,
            DeliveryStatus::Invalid,
            DeliveryStatus::BadDestination,
            DeliveryStatus::Expired,
            DeliveryStatus::Refused,
            DeliveryStatus::NoReference,
        ] {
            assert_eq!(DeliveryStatus::from_payload(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::from_payload("cached"), None);
        assert_eq!(DeliveryStatus::Ok.error_code(), None);
        assert_eq!(DeliveryStatus::Duplicate.error_code(), None);
        assert_eq!(DeliveryStatus::Expired.error_code().unwrap().code(), 3);
        assert_eq!(DeliveryStatus::NoReference.error_code().unwrap().code(), 5);
        assert_eq!(DeliveryErrorCode::Unknown.code(), 0);
    }

    #[test]
    fn a_notification_follows_the_rules() {
        let ev = Event::builder("t", a("hyperty://a/src"))
            .to(a("hyperty://b/r"))
            .build()
            .unwrap();
        let dn = notification(a("hyperty://b/r"), &ev, DeliveryStatus::Ok, vec![]).unwrap();
        assert_eq!(dn.addressing().to(), &[a("hyperty://a/src")]);
        assert_eq!(dn.source(), &a("hyperty://b/r"));
        assert_eq!(dn.in_response_to(), Some(ev.id()));
        assert_eq!(check_notification(&dn), Ok(DeliveryStatus::Ok));
        let bad = Event::builder(DELIVERY_NOTIFICATION, a("hyperty://b/r"))
            .to(a("hyperty://a/src"))
            .payload("ok")
            .build_any()
            .unwrap();
        assert!(check_notification(&bad).is_err(), "no inResponseTo");
        let bad = Event::builder(DELIVERY_NOTIFICATION, a("hyperty://b/r"))
            .to(a("hyperty://a/src"))
            .in_response_to(&ev)
            .payload("great")
            .build_any()
            .unwrap();
        assert!(check_notification(&bad).is_err(), "unknown status");
    }

    #[test]
    fn callback_sets() {
        assert!(CallbackSet::all().wants(&ReportKind::Caching));
        assert!(!CallbackSet::delivery().wants(&ReportKind::Caching));
        assert!(CallbackSet::delivery().wants(&ReportKind::Error {
            recipient: a("hyperty://a/x"),
            error: DeliveryError::new(DeliveryErrorCode::Unknown, "x"),
        }));
    }
}
