//! Event listeners (the spec's `addWebinosEventListener`).
//!
//! A listener belongs to an owner (see [`entities`](crate::events::entities)) and
//! filters by type, source and destination, each optional:
//!
//! * `event_type`: exactly this type;
//! * `source`: the original source *or* the last forwarder is this entity;
//! * `destination`: the local recipient entity is this one (it must be owned by the
//!   listener's owner); without it, the listener hears every entity of its owner,
//!   once per recipient entity (decision 15).
//!
//! Matching listeners get an [`IncomingEvent`] through their `Recipient`, with
//! `try_send`: a full mailbox loses that copy (counted), a stopped listener is
//! removed. [`EventInbox`] is a ready-made listener that turns deliveries into an
//! async receiver.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use tokio::sync::mpsc;

use crate::address::Address;
use crate::events::model::Event;

/// Default bound of listener registrations per runtime.
pub const DEFAULT_MAX_EVENT_LISTENERS: usize = 100_000;
/// Mailbox capacity of an [`EventInbox`] (it only moves events to a channel).
pub const INBOX_MAILBOX_CAPACITY: usize = 65_536;

/// Identifies a listener registration (the spec's listener id string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventListenerId(pub u64);

impl fmt::Display for EventListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener-{}", self.0)
    }
}

/// What a listener wants to hear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerFilter {
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only events from this source (original source or last forwarder).
    pub source: Option<Address>,
    /// Only events delivered to this local entity.
    pub destination: Option<Address>,
}

impl ListenerFilter {
    /// Everything addressed to the owner's entities.
    pub fn any() -> ListenerFilter {
        ListenerFilter::default()
    }

    /// Only this type.
    pub fn event_type(mut self, t: impl Into<String>) -> Self {
        self.event_type = Some(t.into());
        self
    }

    /// Only from this source.
    pub fn source(mut self, s: Address) -> Self {
        self.source = Some(s);
        self
    }

    /// Only to this destination.
    pub fn destination(mut self, d: Address) -> Self {
        self.destination = Some(d);
        self
    }

    fn matches(&self, event: &Event, recipient: &Address) -> bool {
        self.event_type
            .as_deref()
            .is_none_or(|t| t == event.event_type().as_str())
            && self
                .source
                .as_ref()
                .is_none_or(|s| s == event.source() || s == event.sender())
            && self.destination.as_ref().is_none_or(|d| d == recipient)
    }
}

/// An event delivered to a listener: the recipient's own copy (its `bcc` holds
/// only entities of the recipient's owner).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct IncomingEvent {
    /// The event.
    pub event: Arc<Event>,
    /// The local entity it was delivered to.
    pub recipient: Address,
    /// The event it responds to, as held by the recipient.
    pub in_response_to: Option<Arc<Event>>,
    /// The listener registration that matched.
    pub listener: EventListenerId,
}

struct Entry {
    id: EventListenerId,
    filter: ListenerFilter,
    recipient: Recipient<IncomingEvent>,
}

/// Owner → listeners.
#[derive(Default)]
pub(crate) struct ListenerRegistry {
    by_owner: HashMap<Address, Vec<Entry>>,
    count: usize,
    next: u64,
}

impl fmt::Debug for ListenerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerRegistry")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Outcome of firing listeners for one copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fired {
    pub(crate) delivered: usize,
    pub(crate) overflowed: usize,
}

impl ListenerRegistry {
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn add(
        &mut self,
        owner: Address,
        filter: ListenerFilter,
        recipient: Recipient<IncomingEvent>,
    ) -> EventListenerId {
        self.next += 1;
        let id = EventListenerId(self.next);
        self.by_owner.entry(owner).or_default().push(Entry {
            id,
            filter,
            recipient,
        });
        self.count += 1;
        id
    }

    pub(crate) fn remove(&mut self, owner: &Address, id: EventListenerId) -> bool {
        let Some(list) = self.by_owner.get_mut(owner) else {
            return false;
        };
        let before = list.len();
        list.retain(|e| e.id != id);
        let removed = list.len() < before;
        if list.is_empty() {
            self.by_owner.remove(owner);
        }
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Hands `copy` to every listener of `owner` matching it for `recipient`.
    pub(crate) fn fire(
        &mut self,
        owner: &Address,
        recipient: &Address,
        copy: &Arc<Event>,
        in_response_to: &Option<Arc<Event>>,
    ) -> Fired {
        self.fire_to(owner, None, recipient, copy, in_response_to)
    }

    /// [`fire`](Self::fire) limited to the listener `only` when given.
    pub(crate) fn fire_to(
        &mut self,
        owner: &Address,
        only: Option<EventListenerId>,
        recipient: &Address,
        copy: &Arc<Event>,
        in_response_to: &Option<Arc<Event>>,
    ) -> Fired {
        let mut fired = Fired::default();
        let Some(list) = self.by_owner.get_mut(owner) else {
            return fired;
        };
        let mut dead = 0;
        list.retain(|e| {
            if only.is_some_and(|o| o != e.id) || !e.filter.matches(copy, recipient) {
                return true;
            }
            let msg = IncomingEvent {
                event: copy.clone(),
                recipient: recipient.clone(),
                in_response_to: in_response_to.clone(),
                listener: e.id,
            };
            match e.recipient.try_send(msg) {
                Ok(()) => {
                    fired.delivered += 1;
                    true
                }
                Err(SendError::Full(_)) => {
                    fired.overflowed += 1;
                    true
                }
                Err(SendError::Closed(_)) => {
                    dead += 1;
                    false
                }
            }
        });
        if list.is_empty() {
            self.by_owner.remove(owner);
        }
        self.count -= dead;
        fired
    }
}

/// A listener actor that forwards every [`IncomingEvent`] to an async receiver.
#[derive(Debug)]
pub struct EventInbox {
    tx: mpsc::UnboundedSender<IncomingEvent>,
}

/// The receiving end of an [`EventInbox`].
#[derive(Debug)]
pub struct InboxReceiver {
    rx: mpsc::UnboundedReceiver<IncomingEvent>,
}

impl EventInbox {
    /// Starts an inbox on the current arbiter.
    pub fn start() -> (Recipient<IncomingEvent>, InboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox = EventInbox::create(|ctx| {
            ctx.set_mailbox_capacity(INBOX_MAILBOX_CAPACITY);
            EventInbox { tx }
        });
        (inbox.recipient(), InboxReceiver { rx })
    }
}

impl Actor for EventInbox {
    type Context = Context<Self>;
}

impl Handler<IncomingEvent> for EventInbox {
    type Result = ();
    fn handle(&mut self, m: IncomingEvent, _: &mut Context<Self>) {
        let _ = self.tx.send(m);
    }
}

impl InboxReceiver {
    /// The next event, or `None` if none arrives within `within`.
    pub async fn recv(&mut self, within: Duration) -> Option<IncomingEvent> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Events already received, without waiting.
    pub fn drain(&mut self) -> Vec<IncomingEvent> {
        let mut v = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            v.push(m);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn filters() {
        let ev = Event::builder("chat", a("hyperty://a/src"))
            .to(a("hyperty://a/dst"))
            .build()
            .unwrap();
        let dst = a("hyperty://a/dst");
        assert!(ListenerFilter::any().matches(&ev, &dst));
        assert!(ListenerFilter::any().event_type("chat").matches(&ev, &dst));
        assert!(!ListenerFilter::any().event_type("other").matches(&ev, &dst));
        assert!(ListenerFilter::any()
            .source(a("hyperty://a/src"))
            .matches(&ev, &dst));
        assert!(!ListenerFilter::any()
            .source(a("hyperty://a/x"))
            .matches(&ev, &dst));
        assert!(ListenerFilter::any()
            .destination(dst.clone())
            .matches(&ev, &dst));
        assert!(!ListenerFilter::any()
            .destination(a("hyperty://a/x"))
            .matches(&ev, &dst));
    }

    #[actix::test]
    async fn fire_counts_and_removes_by_id() {
        let mut reg = ListenerRegistry::default();
        let owner = a("hyperty://a/o");
        let (live, mut rx) = EventInbox::start();
        let (dead, dead_rx) = EventInbox::start();
        drop(dead_rx);
        reg.add(owner.clone(), ListenerFilter::any(), live);
        let dead_id = reg.add(owner.clone(), ListenerFilter::any(), dead);
        assert_eq!(reg.len(), 2);
        let ev = Arc::new(
            Event::builder("t", a("hyperty://a/s"))
                .to(owner.clone())
                .build()
                .unwrap(),
        );
        let fired = reg.fire(&owner, &owner, &ev, &None);
        assert_eq!(fired.delivered, 2);
        let got = rx.recv(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.recipient, owner);
        assert!(reg.remove(&owner, dead_id));
        assert!(!reg.remove(&owner, dead_id));
        assert_eq!(reg.len(), 1);
    }
}
