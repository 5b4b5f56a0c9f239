//! The one decision-and-obligations function every enforcement point calls: the
//! runtime's [`Pep`](super::Pep) (through [`PolicyHandle::enforce`](super::PolicyHandle::enforce))
//! and the messaging node's, so one policy file decides the same on both.
//!
//! [`judge`] takes a compiled snapshot, one request (type, from, to, the sender's
//! verified identity, direction, time) and the domain of the verified identity,
//! and answers a [`Verdict`]: permit or deny, and the obligations to carry out.
//! It applies:
//!
//! * the snapshot's own default behaviour when no rule applies (the PDP's
//!   configuration — never a separate setting);
//! * `require-assertion`, honouring its `domain` pattern and `sender_domain`
//!   (fails closed without a verified identity);
//! * `audit`: a `tracing` event at target `audit`;
//! * `attach-identity` / `strip-identity`, reported for the caller to apply.
//!
//! ```
//! use hyperty_actors::policy::{judge, CompileOptions, CompiledPolicies, PolicySet, PolicyRequest};
//!
//! let set = PolicySet::from_json(r#"{"id": "p", "rules": [
//!   {"id": "partners", "effect": "permit", "target": {"domains": ["b.org"]},
//!    "obligations": [{"kind": "require-assertion", "domain": "idp.b.org"}]}]}"#).unwrap();
//! let snap = CompiledPolicies::compile(&[set], &CompileOptions::default()).unwrap();
//! let req = PolicyRequest::new("update", "hyperty://b.org/1", "hyperty://a.org/2")
//!     .with_identity(Some("user://idp.b.org/bob"), true);
//! assert!(judge(&snap, &req, Some("idp.b.org")).permit);
//! // an identity of another provider does not meet the obligation
//! assert!(!judge(&snap, &req, Some("elsewhere.org")).permit);
//! ```

use tracing::info;

use super::compiled::{
    domain_pattern_matches, CompiledPolicies, Decision, DecisionEffect, PolicyRequest,
};
use super::model::{Effect, Obligation};

/// What an enforcement point must do with one message for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The decision the policies gave.
    pub decision: Decision,
    /// Deliver it (false: refuse with 403 "Blocked by policy").
    pub permit: bool,
    /// A rule permitted it (false: the default behaviour did).
    pub explicit: bool,
    /// Attach the verified identity (`body.assertedIdentity`).
    pub attach_identity: bool,
    /// Strip the sender's identity (`body.identity`, and no `assertedIdentity`).
    pub strip_identity: bool,
}

/// Decides `req` on `snapshot` and works out its obligations (see the module
/// docs). `asserted_domain` is the domain of the sender's verified identity, if
/// it has one.
pub fn judge(
    snapshot: &CompiledPolicies,
    req: &PolicyRequest<'_>,
    asserted_domain: Option<&str>,
) -> Verdict {
    let decision = snapshot.decide(req);
    let mut v = Verdict {
        permit: false,
        explicit: decision.effect == DecisionEffect::Permit,
        attach_identity: false,
        strip_identity: false,
        decision,
    };
    let d = &v.decision;
    for o in d.obligations.iter() {
        if let Obligation::Audit { note } = o {
            info!(
                target: "audit",
                policy = ?d.policy, rule = ?d.rule, effect = ?d.effect,
                kind = req.kind, from = req.from, to = req.to, note = ?note,
                "policy decision"
            );
        }
    }
    v.permit = match d.effect {
        DecisionEffect::Deny => false,
        DecisionEffect::NotApplicable => snapshot.default_behaviour() == Effect::Permit,
        DecisionEffect::Permit => {
            let mut met = true;
            for o in d.obligations.iter() {
                match o {
                    Obligation::RequireAssertion {
                        domain,
                        sender_domain,
                    } => {
                        met &= asserted_domain.is_some_and(|ad| {
                            domain
                                .as_deref()
                                .is_none_or(|p| domain_pattern_matches(p, ad))
                                && (!sender_domain || ad == req.from_domain)
                        });
                    }
                    Obligation::AttachIdentity => v.attach_identity = true,
                    Obligation::StripIdentity => v.strip_identity = true,
                    Obligation::Audit { .. } => {}
                }
            }
            met
        }
    };
    v
}
