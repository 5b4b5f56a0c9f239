//! Policy: the language, the Policy Decision Point (PDP) and the Policy
//! Enforcement Point (PEP) of a runtime bus (threat T2, "policy subversion").
//!
//! | part | what it is for |
//! |---|---|
//! | [`model`] | the policy language: [`PolicyFile`], [`PolicySet`], [`Rule`], [`Target`], [`Conditions`], [`Obligation`]; JSON and TOML parse to the same tree |
//! | [`compiled`] | [`CompiledPolicies`]: validated, indexed rules and [`CompiledPolicies::decide`], the allocation-free decision function |
//! | [`Pdp`] | the actor that owns the sets: [`AddPolicies`], [`RemovePolicies`], [`ListPolicies`], [`Authorise`], [`SetVerifier`], and reTHINK `create`/`delete`/`read` at `<runtime>/pep` |
//! | [`PolicyHandle`] | the PDP's published snapshot, read synchronously by enforcement points (and by the messaging node) |
//! | [`judge`] | the one decision-and-obligations function the runtime's PEP and the node's share |
//! | [`Pep`] | the bus interceptor: deny → 403 `"Blocked by policy"`, permit → `body.auth = true`, not applicable → default behaviour with `body.auth = false` |
//! | [`AssertionVerifier`] | the hook the identity module implements to verify `body.identity` |
//! | [`Clock`] | the time conditions are read on: the runtime's or node's one clock ([`ManualClock`] in tests) |
//!
//! # The language
//!
//! A file holds policy sets; each set holds rules, combined by its `combining`
//! algorithm, and may have a `default` effect for when none of its rules applies.
//! Sets combine with the PDP's algorithm (or the file's `combining`). A rule
//! applies when every field of its `target` matches and every condition holds.
//!
//! ```
//! use hyperty_actors::policy::{PolicyFile, CompiledPolicies, CompileOptions, PolicyRequest, DecisionEffect};
//!
//! let toml = r#"
//! combining = "deny-overrides"          # across sets
//!
//! [[policies]]
//! id = "corporate"
//! combining = "first-applicable"        # within the set: deny-overrides | permit-overrides | first-applicable
//! default = "permit"                    # when no rule of the set applies (absent: not applicable)
//!
//!   [[policies.rules]]
//!   id = "no-strangers-at-night"
//!   effect = "deny"
//!   target = { directions = ["incoming"], domains = ["*"] }
//!   conditions = { time_of_day = { from = "22:00", to = "06:00" }, asserted = false }
//!
//!   [[policies.rules]]
//!   id = "partners-with-identity"
//!   effect = "permit"
//!   target = { domains = ["partner.org", "*.partner.org"], types = ["create", "update"] }
//!   obligations = [{ kind = "require-assertion", domain = "*partner.org" }, { kind = "attach-identity" }]
//!
//!   [[policies.rules]]
//!   id = "chat-objects-from-staff"
//!   effect = "permit"
//!   target = { data_schemes = ["comm"], users = ["user://corp.com/*"] }
//!
//!   [[policies.rules]]
//!   id = "throttle"
//!   effect = "deny"
//!   target = { from = ["hyperty://corp.com/*"], to = ["re:hyperty://[a-z.]+/bulk-.*"] }
//!   conditions = { rate = { max = 100, window_ms = 1000 }, weekdays = ["sat", "sun"] }
//!
//! [[policies]]
//! id = "blocklist"
//!
//!   [[policies.rules]]
//!   id = "evil"
//!   effect = "deny"
//!   target = { from = ["hyperty://evil.org/*"], schemes = ["hyperty"] }
//!   obligations = [{ kind = "audit", note = "known bad domain" }]
//! "#;
//!
//! let json = r#"{
//!   "combining": "deny-overrides",
//!   "policies": [
//!     {"id": "corporate", "combining": "first-applicable", "default": "permit", "rules": [
//!       {"id": "no-strangers-at-night", "effect": "deny",
//!        "target": {"directions": ["incoming"], "domains": ["*"]},
//!        "conditions": {"time_of_day": {"from": "22:00", "to": "06:00"}, "asserted": false}},
//!       {"id": "partners-with-identity", "effect": "permit",
//!        "target": {"domains": ["partner.org", "*.partner.org"], "types": ["create", "update"]},
//!        "obligations": [{"kind": "require-assertion", "domain": "*partner.org"}, {"kind": "attach-identity"}]},
//!       {"id": "chat-objects-from-staff", "effect": "permit",
//!        "target": {"data_schemes": ["comm"], "users": ["user://corp.com/*"]}},
//!       {"id": "throttle", "effect": "deny",
//!        "target": {"from": ["hyperty://corp.com/*"], "to": ["re:hyperty://[a-z.]+/bulk-.*"]},
//!        "conditions": {"rate": {"max": 100, "window_ms": 1000}, "weekdays": ["sat", "sun"]}}
//!     ]},
//!     {"id": "blocklist", "rules": [
//!       {"id": "evil", "effect": "deny",
//!        "target": {"from": ["hyperty://evil.org/*"], "schemes": ["hyperty"]},
//!        "obligations": [{"kind": "audit", "note": "known bad domain"}]}
//!     ]}
//!   ]
//! }"#;
//!
//! let file = PolicyFile::from_toml(toml).unwrap();
//! assert_eq!(file, PolicyFile::from_json(json).unwrap());
//!
//! let options = CompileOptions { combining: file.combining.unwrap_or_default(), ..Default::default() };
//! let policies = CompiledPolicies::compile(&file.policies, &options).unwrap();
//! // "corporate" permits by default, but "blocklist" denies and deny overrides:
//! let d = policies.decide(&PolicyRequest::new("read", "hyperty://evil.org/1", "hyperty://corp.com/2"));
//! assert_eq!((d.effect, d.rule.as_deref()), (DecisionEffect::Deny, Some("evil")));
//! ```
//!
//! **Targets** (all optional, AND between fields, OR within one): `types`
//! (message types), `from` / `to` (address patterns), `schemes` (the sender's
//! scheme), `domains` / `to_domains` (domain patterns of sender / recipient),
//! `users` (patterns of the sender's *verified* user URL), `data_schemes` (the
//! scheme of the data object addressed, or sending), `directions` (`local`,
//! `outgoing`, `incoming`). Patterns are `*`, `prefix*`, `*suffix`, exact, or
//! `re:<regex>` (anchored: the whole string must match; compiled once).
//!
//! **Conditions**: `time_of_day = {from, to}` (`HH:MM[:SS]`, wraps midnight),
//! `weekdays`, `utc_offset_minutes` (for both), `asserted` (the sender's identity
//! assertion was verified, or not), `rate = {max, window_ms}` (holds for a sender's
//! messages beyond `max` per window: use it in deny rules; counters per sender and
//! rule, bounded by [`PolicyLimits::max_rate_entries`]).
//!
//! **Obligations** (`kind`): `require-assertion` (`domain`, `sender_domain`; fails
//! closed), `attach-identity`, `strip-identity`, `audit` (`note`). See [`Obligation`].
//!
//! # Installing it
//!
//! A runtime started with a `policy` configuration gets a PDP listening at
//! `<runtime>/pep` and its PEP registered through the registry ([`install`]). A
//! messaging node holds a [`PdpHandle`] and decides on its routing path with
//! [`PolicyHandle::decide`] and a [`PolicyRequest`] borrowed from the frame.
//!
//! The PEP judges every message, responses and the runtime's own traffic included
//! (an unsolicited `response` would otherwise be a way around it). With
//! `default_behaviour = "deny"`, permit what must flow explicitly, e.g. responses
//! (`types = ["response"]`) and the runtime's components
//! (`from = ["hyperty-runtime://<domain>/<runtime>/*"]`).
//!
//! # Why hyperties cannot bypass the PEP
//!
//! A hyperty is built from a [`HypertyContext`](crate::hyperty::HypertyContext):
//! its own address, its runtime's URL and a [`BoundBus`](crate::bus::BoundBus)
//! handle. None of them can name another actor: every message goes through
//! `BoundBus::post`/`send` and the interceptor chain. The registry's [`Resolve`](crate::registry::Resolve)
//! answers a [`Route`](crate::registry::Route) made of addresses, never a
//! recipient. The PEP is sealed: it cannot be removed through a bus handle and it
//! runs after every other interceptor.
//!
//! A route cannot be turned into a recipient:
//!
//! ```compile_fail,E0308
//! use hyperty_actors::prelude::*;
//! fn leak(route: Route) -> Recipient<Deliver> {
//!     match route {
//!         Route::Stub(stub) => stub,
//!         _ => unreachable!(),
//!     }
//! }
//! ```
//!
//! A bus handle does not give out its listeners or the stub table:
//!
//! ```compile_fail,E0616
//! use hyperty_actors::prelude::*;
//! fn leak(bus: &Bus) {
//!     let _ = &bus.shared;
//! }
//! ```
//!
//! A hyperty cannot forge a context for another address:
//!
//! ```compile_fail,E0624
//! use hyperty_actors::prelude::*;
//! use hyperty_actors::bus::Holdings;
//! fn forge(bus: Bus, url: HypertyUrl) -> HypertyContext {
//!     HypertyContext::new(Holdings::new(url), "p".into(), None, bus, None, 0)
//! }
//! ```
//!
//! Its bound handle refuses (403) any `from` or `body.source` it does not hold,
//! listeners on addresses it does not hold and answers to requests not sent to
//! it, so rules keyed on `from` hold against a hostile local hyperty. The runtime
//! owner and protocol stubs keep the full `Bus` and can still write any `from`:
//! rules about what arrives from other runtimes key on verified identities
//! (`users`, `asserted`, `require-assertion`), and policy management over the bus
//! requires a verified manager identity.

pub mod clock;
pub mod compiled;
pub mod events;
mod handle;
mod judge;
pub mod model;
mod pattern;
mod pdp;
mod pep;
pub mod verify;

pub use clock::{utc_ms, Clock, ManualClock, SystemClock};
pub use compiled::{
    data_scheme_of, domain_of, scheme_of, CompileOptions, CompiledPolicies, Decision,
    DecisionEffect, PolicyLimits, PolicyRequest,
};
pub use events::{RuntimeEventPolicy, EVENT_POLICY_NAME};
pub use handle::{Enforcement, PolicyHandle};
pub use judge::{judge, Verdict};
pub use model::{
    Combining, Conditions, Effect, Format, Obligation, PolicyDirection, PolicyFile, PolicySet,
    Rate, Rule, Target, TimeWindow, Weekday,
};
pub use pattern::MAX_PATTERN_LEN;
pub use pdp::{
    install, AddPolicies, Authorisation, Authorise, ListPolicies, Pdp, PdpHandle, PolicyConfig,
    RemovePolicies, SetVerifier, PDP_MAILBOX_CAPACITY,
};
pub use pep::{Pep, PEP_NAME};
pub use verify::{AssertionVerifier, RefuseAll, VerifiedIdentity};

use crate::error::ToResponseCode;
use crate::message::ResponseCode;

/// Errors of the policy layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not valid JSON / TOML at all (400).
    #[error("policy text is not valid {format}: {message}")]
    Syntax {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A policy is well-formed text but not a valid policy (400).
    #[error("policy '{policy}'{}, field '{field}': {reason}", rule.as_ref().map(|r| format!(" rule '{r}'")).unwrap_or_default())]
    Invalid {
        /// The policy set id (or its position when it has none).
        policy: String,
        /// The rule id (or its position), if the error is inside a rule.
        rule: Option<String>,
        /// The field path inside the rule (or set), e.g. `target.from[1]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The PDP configuration is invalid (400).
    #[error("invalid policy configuration {field}: {reason}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A policy file could not be read (500).
    #[error("cannot read policy file {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// No policy set with that id (404).
    #[error("no policy set '{0}'")]
    NotFound(String),
    /// A bound was reached (429).
    #[error("too many {what} (limit {limit})")]
    TooMany {
        /// What.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// A management request is malformed (400).
    #[error("bad policy request: {0}")]
    Request(String),
    /// The sender may not manage policies (403).
    #[error("{0}")]
    Forbidden(String),
    /// Installing the PEP or the PDP's listener failed (500).
    #[error("policy enforcement could not be installed: {0}")]
    Registration(String),
    /// The PDP actor is not running (500).
    #[error("the policy decision point is not running")]
    Unavailable,
}

impl ToResponseCode for PolicyError {
    fn response_code(&self) -> ResponseCode {
        match self {
            PolicyError::Syntax { .. }
            | PolicyError::Invalid { .. }
            | PolicyError::Config { .. }
            | PolicyError::Request(_) => ResponseCode::BadRequest,
            PolicyError::NotFound(_) => ResponseCode::NotFound,
            PolicyError::TooMany { .. } => ResponseCode::TooManyRequests,
            PolicyError::Forbidden(_) => ResponseCode::Forbidden,
            PolicyError::Io { .. } | PolicyError::Registration(_) | PolicyError::Unavailable => {
                ResponseCode::InternalError
            }
        }
    }
}
