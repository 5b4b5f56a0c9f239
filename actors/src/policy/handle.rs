//! The shared read side of a PDP: the current compiled snapshot, the assertion
//! verifier and the clock, read synchronously by every enforcement point.
//!
//! The [`Pdp`](super::Pdp) actor is the only writer of the snapshot: it publishes a
//! new [`CompiledPolicies`] with an atomic pointer swap, so the very next message
//! any enforcement point sees is judged by it. Readers never wait on the actor.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::json;
use tracing::debug;

use super::clock::Clock;
use super::compiled::{domain_of, CompiledPolicies, Decision, DecisionEffect, PolicyRequest};
use super::judge::judge;
use super::verify::{AssertionVerifier, RefuseAll, VerifiedIdentity};
use crate::bus::Direction;
use crate::error::Rejection;
use crate::message::Message;

type VerifierSlot = Box<dyn AssertionVerifier>;

struct Shared {
    snapshot: ArcSwap<CompiledPolicies>,
    verifier: ArcSwap<VerifierSlot>,
    clock: Arc<dyn Clock>,
}

/// Handle to a PDP's current policies. Cheap to clone; every clone sees each new
/// snapshot the moment the PDP publishes it.
///
/// This is what a messaging node holds to decide on its routing path:
///
/// ```
/// use hyperty_actors::policy::{DecisionEffect, Pdp, PolicyRequest, PolicySet};
///
/// # #[actix::main] async fn main() {
/// let pdp = Pdp::new(Default::default()).unwrap().start();
/// let set = PolicySet::from_json(r#"{"id": "node", "rules": [
///     {"id": "r", "effect": "deny", "target": {"types": ["delete"]}}]}"#).unwrap();
/// pdp.add_policies(vec![set]).await.unwrap();
///
/// let policies = pdp.policies().clone(); // keep this on the hot path
/// let d = policies.decide(&PolicyRequest::new("delete", "hyperty://a.org/1", "hyperty://b.org/2"));
/// assert_eq!(d.effect, DecisionEffect::Deny);
/// // not applicable falls back to the configured default behaviour
/// let d = policies.decide(&PolicyRequest::new("read", "hyperty://a.org/1", "hyperty://b.org/2"));
/// assert!(d.permits(policies.snapshot().default_behaviour()));
/// # }
/// ```
#[derive(Clone)]
pub struct PolicyHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.snapshot.load();
        f.debug_struct("PolicyHandle")
            .field("sets", &s.policy_ids().count())
            .field("rules", &s.rule_count())
            .finish_non_exhaustive()
    }
}

/// What an enforcement point did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// The deciding decision (a deny, else the first recipient's).
    pub decision: Decision,
    /// `Ok`: deliver the (possibly rewritten) message; `Err`: block it.
    pub result: Result<(), Rejection>,
}

impl PolicyHandle {
    pub(crate) fn new(snapshot: Arc<CompiledPolicies>, clock: Arc<dyn Clock>) -> PolicyHandle {
        PolicyHandle {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::new(snapshot),
                verifier: ArcSwap::from_pointee(Box::new(RefuseAll) as VerifierSlot),
                clock,
            }),
        }
    }

    /// Publishes a new snapshot (the PDP only).
    pub(crate) fn publish(&self, snapshot: Arc<CompiledPolicies>) {
        self.shared.snapshot.store(snapshot);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<CompiledPolicies> {
        self.shared.snapshot.load_full()
    }

    /// True if the current snapshot holds no rule (every decision is then
    /// "not applicable" and callers may skip building a request).
    pub fn is_empty(&self) -> bool {
        self.shared.snapshot.load().rule_count() == 0
    }

    /// Decides with the current snapshot (see [`CompiledPolicies::decide`]).
    pub fn decide(&self, request: &PolicyRequest<'_>) -> Decision {
        self.shared.snapshot.load().decide(request)
    }

    /// Installs the assertion verifier (e.g. the identity module's); until then
    /// every assertion is refused.
    pub fn set_verifier(&self, verifier: impl AssertionVerifier) {
        self.shared
            .verifier
            .store(Arc::new(Box::new(verifier) as VerifierSlot));
    }

    /// Verifies `identity` carried by a sender of `sender_domain` with the
    /// installed verifier.
    pub fn verify(
        &self,
        identity: &serde_json::Value,
        sender_domain: &str,
    ) -> Result<VerifiedIdentity, String> {
        self.shared.verifier.load().verify(identity, sender_domain)
    }

    /// The clock conditions are read on.
    pub fn clock(&self) -> &dyn Clock {
        &*self.shared.clock
    }

    /// A new handle with the same snapshot and verifier, reading `clock`.
    pub(crate) fn with_clock(&self, clock: Arc<dyn Clock>) -> PolicyHandle {
        PolicyHandle {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::new(self.snapshot()),
                verifier: ArcSwap::new(self.shared.verifier.load_full()),
                clock,
            }),
        }
    }

    /// Enforces the current policies on `msg`, as the runtime's PEP does: decides
    /// for every recipient, fulfils obligations, falls back to the default
    /// behaviour when nothing applies, and sets `body.auth` (true on an explicit
    /// permit for every recipient, false otherwise). `direction` is `None` where
    /// the notion does not apply.
    pub fn enforce(&self, msg: &mut Message, direction: Option<Direction>) -> Enforcement {
        let snap = self.shared.snapshot.load();
        let verified = if snap.needs_identity() {
            msg.body.identity.as_ref().and_then(|id| {
                self.verify(id, domain_of(msg.from.as_str()))
                    .map_err(|why| debug!(from = %msg.from, %why, "identity not verified"))
                    .ok()
            })
        } else {
            None
        };
        let now = if snap.needs_time() {
            self.shared.clock.now_ms()
        } else {
            0
        };
        let (user, asserted) = match &verified {
            Some(v) => (Some(v.user.as_str()), true),
            None => (None, false),
        };
        let mut explicit = true;
        let mut attach = false;
        let mut strip = false;
        let mut first: Option<Decision> = None;
        let asserted_domain = verified.as_ref().map(|v| v.domain.as_str());
        for to in msg.to.iter() {
            let mut req = PolicyRequest::new(msg.kind.as_str(), msg.from.as_str(), to.as_str())
                .with_identity(user, asserted)
                .at(now);
            req.direction = direction;
            let v = judge(&snap, &req, asserted_domain);
            if !v.permit {
                let d = v.decision;
                debug!(
                    id = msg.id, kind = %msg.kind, from = %msg.from, %to,
                    policy = ?d.policy, rule = ?d.rule, effect = ?d.effect,
                    "blocked by policy"
                );
                return Enforcement {
                    decision: d,
                    result: Err(Rejection::blocked_by_policy()),
                };
            }
            explicit &= v.explicit;
            attach |= v.attach_identity;
            strip |= v.strip_identity;
            if first.is_none() {
                first = Some(v.decision);
            }
        }
        if snap.attaches_identity() {
            msg.body.extra.remove("assertedIdentity");
        }
        if let (true, Some(v)) = (attach, &verified) {
            msg.body.extra.insert(
                "assertedIdentity".to_owned(),
                json!({"userURL": v.user, "domain": v.domain}),
            );
        }
        if strip {
            msg.body.identity = None;
        }
        msg.body.auth = Some(explicit);
        Enforcement {
            decision: first.unwrap_or_else(|| Decision {
                effect: DecisionEffect::NotApplicable,
                policy: None,
                rule: None,
                obligations: Arc::from(Vec::new()),
            }),
            result: Ok(()),
        }
    }
}
