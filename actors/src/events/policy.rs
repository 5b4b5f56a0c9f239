//! The dispatcher's policy-enforcement hook.
//!
//! Before routing, the dispatcher asks every installed [`EventPolicy`] about each
//! event/recipient combination (seed 004, "policy enforcement"). The default is to
//! allow; the identity-and-policy component plugs its PDP in here (and the bus
//! interceptors, the PEPs, still see every message the dispatcher exchanges with
//! other runtimes). A pub/sub provider installs one to admit only authorised
//! publishers to its nodes.
//!
//! * events from a **local** source: every recipient is checked first; one denial
//!   refuses the whole dispatch with `PERMISSION_DENIED_ERROR` and nothing is sent
//!   (decision 11);
//! * events from a **remote** source: checked once per local recipient; a denial
//!   affects that recipient only and is answered with a `refused` delivery
//!   notification (if wanted, to primary recipients).
//!
//! Policies run synchronously on the dispatcher's thread; state they consult is
//! owned by an actor and shared with them (as for bus interceptors).
//!
//! ```
//! use hyperty_actors::events::policy::{EventPolicy, PolicyDecision, PolicyRequest};
//!
//! /// No events of type "spam", to anyone.
//! struct NoSpam;
//! impl EventPolicy for NoSpam {
//!     fn name(&self) -> &str { "no-spam" }
//!     fn check(&self, req: &PolicyRequest<'_>) -> PolicyDecision {
//!         if req.event.event_type().as_str() == "spam" {
//!             PolicyDecision::Deny("spam is not welcome".into())
//!         } else {
//!             PolicyDecision::Allow
//!         }
//!     }
//! }
//! ```

use std::fmt;

use crate::address::Address;
use crate::events::model::Event;

/// Default bound of installed policies.
pub const MAX_EVENT_POLICIES: usize = 32;

/// Where an event/recipient combination is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventDirection {
    /// Local source, local recipient.
    Local,
    /// Local source, recipient on another runtime (through a protocol stub).
    Outgoing,
    /// Remote source, local recipient.
    Incoming,
}

/// One question to a policy.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    /// The event.
    pub event: &'a Event,
    /// Who sends it now (last forwarder, else source).
    pub sender: &'a Address,
    /// The recipient.
    pub recipient: &'a Address,
    /// Local, outgoing or incoming.
    pub direction: EventDirection,
    /// For outgoing events, the protocol stub that will carry it.
    pub via: Option<&'a Address>,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    /// Go ahead.
    Allow,
    /// Refuse, with a reason.
    Deny(String),
}

/// A policy decision point consulted by the dispatcher.
pub trait EventPolicy: Send + Sync + 'static {
    /// A unique name (used to remove it).
    fn name(&self) -> &str;
    /// Decides one event/recipient combination.
    fn check(&self, request: &PolicyRequest<'_>) -> PolicyDecision;
}

impl fmt::Debug for dyn EventPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventPolicy({})", self.name())
    }
}

/// Allows everything (the default when no policy is installed).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl EventPolicy for AllowAll {
    fn name(&self) -> &str {
        "allow-all"
    }
    fn check(&self, _: &PolicyRequest<'_>) -> PolicyDecision {
        PolicyDecision::Allow
    }
}

/// Runs a chain of policies: the first denial wins.
pub(crate) fn decide(
    policies: &[std::sync::Arc<dyn EventPolicy>],
    request: &PolicyRequest<'_>,
) -> PolicyDecision {
    for p in policies {
        if let PolicyDecision::Deny(why) = p.check(request) {
            tracing::debug!(policy = p.name(), recipient = %request.recipient, reason = %why, "event refused by policy");
            return PolicyDecision::Deny(why);
        }
    }
    PolicyDecision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct DenyTo(&'static str);
    impl EventPolicy for DenyTo {
        fn name(&self) -> &str {
            "deny-to"
        }
        fn check(&self, r: &PolicyRequest<'_>) -> PolicyDecision {
            if r.recipient.as_str() == self.0 {
                PolicyDecision::Deny("no".into())
            } else {
                PolicyDecision::Allow
            }
        }
    }

    #[test]
    fn first_denial_wins() {
        let s: Address = "hyperty://a/s".parse().unwrap();
        let r: Address = "hyperty://a/r".parse().unwrap();
        let ev = Event::builder("t", s.clone())
            .to(r.clone())
            .build()
            .unwrap();
        let req = PolicyRequest {
            event: &ev,
            sender: &s,
            recipient: &r,
            direction: EventDirection::Local,
            via: None,
        };
        let chain: Vec<Arc<dyn EventPolicy>> =
            vec![Arc::new(AllowAll), Arc::new(DenyTo("hyperty://a/r"))];
        assert_eq!(decide(&chain, &req), PolicyDecision::Deny("no".into()));
        assert_eq!(decide(&chain[..1], &req), PolicyDecision::Allow);
    }
}
