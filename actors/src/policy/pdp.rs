//! The Policy Decision Point actor: owner of the policy sets.
//!
//! [`Pdp`] holds the sets (loaded from [`PolicyConfig::file`] at start), compiles
//! them on every change and publishes the snapshot through its [`PolicyHandle`],
//! which enforcement points read synchronously: a change takes effect on the very
//! next message.
//!
//! Who sends it what:
//!
//! | message | from | result |
//! |---|---|---|
//! | [`AddPolicies`] | the application, a node, tests | `Result<(), PolicyError>`; a set with a known id replaces it |
//! | [`RemovePolicies`] | the same | `Result<(), PolicyError>`; 404 for an unknown id |
//! | [`ListPolicies`] | the same | the sets, in evaluation order |
//! | [`Authorise`] | anyone holding the PDP | what the PEP would do with a message |
//! | [`SetVerifier`] | the identity module | installs the [`AssertionVerifier`] |
//! | [`Deliver`] at `<runtime>/pep` | reTHINK messages over the bus | `create {value: <set or list of sets>}` adds, `delete {resource: <id or ids>}` removes, `read [{resource: <id>}]` lists; answers 200, 400, 403, 404 or 429 |
//!
//! Managing policies over the bus needs an identity: the message must carry a
//! `body.identity` the verifier accepts for a user matching
//! [`PolicyConfig::managers`]. Addresses are not proof of anything inside a
//! runtime (any component can write any `from`), so they are not trusted for this.
//! With no managers configured, management over the bus is refused (403).
//!
//! ```
//! use hyperty_actors::policy::{utc_ms, Authorise, DecisionEffect, ManualClock, Pdp, PolicyConfig, PolicySet};
//! use hyperty_actors::prelude::*;
//!
//! # #[actix::main] async fn main() {
//! let clock = ManualClock::new(utc_ms(2024, 1, 1, 23, 0, 0));
//! let pdp = Pdp::new(PolicyConfig::default()).unwrap().with_clock(std::sync::Arc::new(clock.clone())).start();
//! let set = PolicySet::from_toml(r#"
//!     id = "office-hours"
//!     [[rules]]
//!     id = "deny-night"
//!     effect = "deny"
//!     conditions = { time_of_day = { from = "20:00", to = "07:00" } }
//! "#).unwrap();
//! pdp.add_policies(vec![set]).await.unwrap();
//! assert_eq!(pdp.list_policies().await.unwrap()[0].id, "office-hours");
//!
//! let msg = Message::new(MessageType::Read, "hyperty://a.org/1".parse().unwrap(),
//!                        "hyperty://a.org/2".parse::<Address>().unwrap());
//! let verdict = pdp.addr().send(Authorise { message: msg.clone(), direction: None }).await.unwrap();
//! assert_eq!(verdict.decision.effect, DecisionEffect::Deny);
//! assert_eq!(verdict.decision.rule.as_deref(), Some("deny-night"));
//! assert!(verdict.result.is_err());
//!
//! clock.set(utc_ms(2024, 1, 2, 9, 0, 0)); // nothing applies by day: default behaviour (permit)
//! let verdict = pdp.addr().send(Authorise { message: msg, direction: None }).await.unwrap();
//! assert_eq!(verdict.decision.effect, DecisionEffect::NotApplicable);
//! assert_eq!(verdict.message.body.auth, Some(false));
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, info_span, warn};

use super::clock::{Clock, SystemClock};
use super::compiled::{domain_of, CompileOptions, CompiledPolicies, Decision, PolicyLimits};
use super::handle::{Enforcement, PolicyHandle};
use super::model::{Combining, Effect, PolicyFile, PolicySet};
use super::pattern::Pattern;
use super::pep::Pep;
use super::verify::AssertionVerifier;
use super::PolicyError;
use crate::bus::{Bus, Deliver, Direction};
use crate::error::{error_response, ToResponseCode};
use crate::message::{Message, MessageType, OneOrMany, ResponseCode};
use crate::registry::{RegisterPep, RuntimeRegistry};

/// Mailbox capacity of the PDP actor.
pub const PDP_MAILBOX_CAPACITY: usize = 256;

/// Configuration of a PDP (the `[policy]` section of a runtime or node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// A policy file (TOML or JSON, see [`PolicyFile`]) loaded at start.
    pub file: Option<PathBuf>,
    /// What the PEP does when no policy applies (reTHINK's `defaultBehaviour`).
    pub default_behaviour: Effect,
    /// How the sets combine (a file's own `combining` overrides it).
    pub combining: Combining,
    /// Patterns of the verified user identities allowed to manage policies with
    /// messages to `<runtime>/pep`; empty: nobody.
    pub managers: Vec<String>,
    /// Bounds.
    pub limits: PolicyLimits,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            file: None,
            default_behaviour: Effect::Permit,
            combining: Combining::DenyOverrides,
            managers: Vec::new(),
            limits: PolicyLimits::default(),
        }
    }
}

/// Adds policy sets (replacing sets with the same id), all or nothing.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), PolicyError>")]
pub struct AddPolicies(pub Vec<PolicySet>);

/// Removes policy sets by id, all or nothing.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), PolicyError>")]
pub struct RemovePolicies(pub Vec<String>);

/// Lists the policy sets, in evaluation order.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Vec<PolicySet>")]
pub struct ListPolicies;

/// Asks what the PEP would do with a message (nothing is delivered).
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Authorisation")]
pub struct Authorise {
    /// The message.
    pub message: Message,
    /// Its direction, if it has one.
    pub direction: Option<Direction>,
}

/// The answer to [`Authorise`].
#[derive(Debug, Clone, PartialEq)]
pub struct Authorisation {
    /// The deciding decision.
    pub decision: Decision,
    /// `Ok`: the message would be delivered; `Err`: blocked, and why.
    pub result: Result<(), crate::error::Rejection>,
    /// The message as it would be delivered (`body.auth` set, obligations applied).
    pub message: Message,
}

/// Installs the assertion verifier.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct SetVerifier(pub Arc<dyn AssertionVerifier>);

impl fmt::Debug for SetVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SetVerifier")
    }
}

/// The PDP actor. Build it with [`Pdp::new`] or [`Pdp::from_file`], start it with
/// [`Pdp::start`].
pub struct Pdp {
    options: CompileOptions,
    sets: Vec<PolicySet>,
    handle: PolicyHandle,
    managers: Box<[Pattern]>,
    bus: Option<Bus>,
}

impl fmt::Debug for Pdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pdp")
            .field("sets", &self.sets.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Pdp {
    /// A PDP configured by `config`, with the policies of `config.file` if any.
    pub fn new(config: PolicyConfig) -> Result<Pdp, PolicyError> {
        let managers = config
            .managers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Pattern::compile(m, config.limits.max_regex_size).map_err(|reason| {
                    PolicyError::Config {
                        field: format!("managers[{i}]"),
                        reason,
                    }
                })
            })
            .collect::<Result<Box<[Pattern]>, _>>()?;
        let (sets, combining) = match &config.file {
            Some(path) => {
                let file = PolicyFile::load(path)?;
                let combining = file.combining.unwrap_or(config.combining);
                (file.policies, combining)
            }
            None => (Vec::new(), config.combining),
        };
        let options = CompileOptions {
            combining,
            default_behaviour: config.default_behaviour,
            limits: config.limits,
        };
        let compiled = CompiledPolicies::compile(&sets, &options)?;
        if let Some(path) = &config.file {
            info!(file = %path.display(), sets = sets.len(), rules = compiled.rule_count(), "policies loaded");
        }
        Ok(Pdp {
            options,
            sets,
            handle: PolicyHandle::new(Arc::new(compiled), Arc::new(SystemClock)),
            managers,
            bus: None,
        })
    }

    /// A PDP with default configuration and the policies of `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Pdp, PolicyError> {
        Pdp::new(PolicyConfig {
            file: Some(path.as_ref().to_owned()),
            ..PolicyConfig::default()
        })
    }

    /// Reads conditions on `clock` instead of the system clock: the runtime's or
    /// node's one clock, shared with its other components.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Pdp {
        self.handle = self.handle.with_clock(clock);
        self
    }

    /// Verifies assertions with `verifier` (default: refuse all).
    pub fn with_verifier(self, verifier: impl AssertionVerifier) -> Pdp {
        self.handle.set_verifier(verifier);
        self
    }

    /// Answers the reTHINK messages delivered to it at `<runtime>/pep` on `bus`.
    pub fn with_bus(mut self, bus: Bus) -> Pdp {
        self.bus = Some(bus);
        self
    }

    /// The handle enforcement points read.
    pub fn policies(&self) -> &PolicyHandle {
        &self.handle
    }

    /// Starts the actor on the current arbiter.
    pub fn start(self) -> PdpHandle {
        let policies = self.handle.clone();
        let addr = Pdp::create(|ctx| {
            ctx.set_mailbox_capacity(PDP_MAILBOX_CAPACITY);
            self
        });
        PdpHandle {
            addr,
            policies,
            installed: None,
        }
    }

    fn commit(&mut self, next: Vec<PolicySet>) -> Result<(), PolicyError> {
        let current = self.handle.snapshot();
        let compiled = CompiledPolicies::compile_after(&next, &self.options, Some(&current))?;
        info!(
            sets = next.len(),
            rules = compiled.rule_count(),
            "policy snapshot published"
        );
        self.handle.publish(Arc::new(compiled));
        self.sets = next;
        Ok(())
    }

    fn add(&mut self, new: Vec<PolicySet>) -> Result<(), PolicyError> {
        let mut next = self.sets.clone();
        for set in new {
            match next.iter_mut().find(|s| s.id == set.id) {
                Some(slot) => *slot = set,
                None => next.push(set),
            }
        }
        self.commit(next)
    }

    fn remove(&mut self, ids: &[String]) -> Result<(), PolicyError> {
        if let Some(missing) = ids
            .iter()
            .find(|id| !self.sets.iter().any(|s| &s.id == *id))
        {
            return Err(PolicyError::NotFound(missing.clone()));
        }
        let next = self
            .sets
            .iter()
            .filter(|s| !ids.contains(&s.id))
            .cloned()
            .collect();
        self.commit(next)
    }

    /// Who may manage policies over the bus: a verified manager identity.
    fn check_manager(&self, m: &Message) -> Result<(), PolicyError> {
        if self.managers.is_empty() {
            return Err(PolicyError::Forbidden(
                "policy management over the bus is disabled (no managers configured)".to_owned(),
            ));
        }
        let identity = m.body.identity.as_ref().ok_or_else(|| {
            PolicyError::Forbidden("policy management needs an identity assertion".to_owned())
        })?;
        let verified = self
            .handle
            .verify(identity, domain_of(m.from.as_str()))
            .map_err(|why| PolicyError::Forbidden(format!("identity not verified: {why}")))?;
        if self.managers.iter().any(|p| p.matches(&verified.user)) {
            Ok(())
        } else {
            Err(PolicyError::Forbidden(format!(
                "{} may not manage policies",
                verified.user
            )))
        }
    }

    /// Handles a reTHINK management message; returns the response.
    fn manage(&mut self, m: &Message) -> Message {
        let result = self.check_manager(m).and_then(|()| match &m.kind {
            MessageType::Create => {
                let sets = match m.body.value.clone() {
                    Some(Value::Array(items)) => items
                        .into_iter()
                        .map(PolicySet::from_value)
                        .collect::<Result<Vec<_>, _>>()?,
                    Some(v @ Value::Object(_)) => vec![PolicySet::from_value(v)?],
                    _ => {
                        return Err(PolicyError::Request(
                            "create needs body.value: a policy set or a list of them".to_owned(),
                        ))
                    }
                };
                let ids: Vec<String> = sets.iter().map(|s| s.id.clone()).collect();
                self.add(sets)?;
                Ok(json!(ids))
            }
            MessageType::Delete => {
                let ids: Vec<String> = match &m.body.resource {
                    Some(r) => r.iter().cloned().collect(),
                    None => {
                        return Err(PolicyError::Request(
                            "delete needs body.resource: a policy set id or a list of them"
                                .to_owned(),
                        ))
                    }
                };
                self.remove(&ids)?;
                Ok(json!(ids))
            }
            MessageType::Read => match &m.body.resource {
                Some(OneOrMany::One(id)) => self
                    .sets
                    .iter()
                    .find(|s| &s.id == id)
                    .map(|s| json!(s))
                    .ok_or_else(|| PolicyError::NotFound(id.clone())),
                _ => Ok(json!(self.sets)),
            },
            other => Err(PolicyError::Request(format!(
                "{other} is not supported here (create, delete or read)"
            ))),
        });
        match result {
            Ok(value) => m.reply_value(ResponseCode::Ok, value),
            Err(e) => {
                warn!(from = %m.from, kind = %m.kind, error = %e, code = e.response_code().as_u16(), "policy management refused");
                error_response(m, &e)
            }
        }
    }
}

impl Actor for Pdp {
    type Context = Context<Self>;
}

impl Handler<AddPolicies> for Pdp {
    type Result = Result<(), PolicyError>;
    fn handle(&mut self, m: AddPolicies, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("pdp.add", sets = m.0.len()).entered();
        self.add(m.0)
    }
}

impl Handler<RemovePolicies> for Pdp {
    type Result = Result<(), PolicyError>;
    fn handle(&mut self, m: RemovePolicies, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("pdp.remove", ids = ?m.0).entered();
        self.remove(&m.0)
    }
}

impl Handler<ListPolicies> for Pdp {
    type Result = Vec<PolicySet>;
    fn handle(&mut self, _: ListPolicies, _: &mut Context<Self>) -> Vec<PolicySet> {
        self.sets.clone()
    }
}

impl Handler<Authorise> for Pdp {
    type Result = MessageResult<Authorise>;
    fn handle(&mut self, m: Authorise, _: &mut Context<Self>) -> Self::Result {
        let _span = info_span!("pdp.authorise", id = m.message.id).entered();
        let mut message = m.message;
        let Enforcement { decision, result } = self.handle.enforce(&mut message, m.direction);
        MessageResult(Authorisation {
            decision,
            result,
            message,
        })
    }
}

impl Handler<SetVerifier> for Pdp {
    type Result = ();
    fn handle(&mut self, m: SetVerifier, _: &mut Context<Self>) {
        self.handle.set_verifier(m.0);
    }
}

impl Handler<Deliver> for Pdp {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        if !m.kind.expects_response() {
            return;
        }
        let _span = info_span!("pdp.manage", id = m.id, kind = %m.kind, from = %m.from).entered();
        let reply = self.manage(&m);
        match &self.bus {
            Some(bus) => {
                bus.send(reply);
            }
            None => warn!("management message received without a bus to answer on"),
        }
    }
}

/// Handle to a running PDP. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PdpHandle {
    addr: Addr<Pdp>,
    policies: PolicyHandle,
    installed: Option<watch::Receiver<Option<Result<(), PolicyError>>>>,
}

impl PdpHandle {
    /// The actor.
    pub fn addr(&self) -> &Addr<Pdp> {
        &self.addr
    }

    /// The handle enforcement points read (and the node decides with).
    pub fn policies(&self) -> &PolicyHandle {
        &self.policies
    }

    /// A PEP enforcing this PDP's policies, to install on a bus.
    pub fn pep(&self) -> Pep {
        Pep::new(self.policies.clone())
    }

    /// Adds policy sets; see [`AddPolicies`].
    pub async fn add_policies(&self, sets: Vec<PolicySet>) -> Result<(), PolicyError> {
        self.addr
            .send(AddPolicies(sets))
            .await
            .map_err(|_| PolicyError::Unavailable)?
    }

    /// Removes policy sets; see [`RemovePolicies`].
    pub async fn remove_policies(&self, ids: Vec<String>) -> Result<(), PolicyError> {
        self.addr
            .send(RemovePolicies(ids))
            .await
            .map_err(|_| PolicyError::Unavailable)?
    }

    /// The policy sets.
    pub async fn list_policies(&self) -> Result<Vec<PolicySet>, PolicyError> {
        self.addr
            .send(ListPolicies)
            .await
            .map_err(|_| PolicyError::Unavailable)
    }

    /// Installs the assertion verifier (takes effect on the next message).
    pub fn set_verifier(&self, verifier: impl AssertionVerifier) {
        self.policies.set_verifier(verifier);
    }

    /// Resolves once the PEP and the `<runtime>/pep` listener set up by
    /// [`install`] are in place (at once for a PDP started otherwise).
    pub async fn installed(&self) -> Result<(), PolicyError> {
        let Some(rx) = &self.installed else {
            return Ok(());
        };
        let mut rx = rx.clone();
        let done = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| PolicyError::Unavailable)?;
        done.clone().unwrap_or(Ok(()))
    }
}

/// Installs policy enforcement in a runtime: starts `pdp` answering at
/// `<runtime>/pep` and registers its PEP with `registry`.
///
/// The registration is the registry's next message, so every hyperty and stub it
/// registers afterwards is subject to the PEP; await [`PdpHandle::installed`]
/// before sending messages straight from the application.
pub fn install(
    pdp: Pdp,
    bus: &Bus,
    registry: &Addr<RuntimeRegistry>,
) -> Result<PdpHandle, PolicyError> {
    let pdp = pdp.with_bus(bus.clone()).start();
    let url = bus
        .runtime_url()
        .join("pep")
        .map_err(|e| PolicyError::Registration(e.to_string()))?;
    // Both sends are queued now, in this order, before anything else can be.
    let register = registry.send(RegisterPep(Arc::new(pdp.pep())));
    let listen = bus.add_listener(url, pdp.addr.clone().recipient(), None);
    let (tx, rx) = watch::channel(None);
    actix::spawn(async move {
        let result = async {
            register
                .await
                .map_err(|_| PolicyError::Unavailable)?
                .map_err(|e| PolicyError::Registration(e.to_string()))?;
            listen
                .await
                .map_err(|e| PolicyError::Registration(e.to_string()))?;
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "policy enforcement could not be installed");
        }
        let _ = tx.send(Some(result));
    });
    Ok(PdpHandle {
        installed: Some(rx),
        ..pdp
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compiled::DEFAULT_MAX_RATE_ENTRIES;

    #[test]
    fn config_is_a_toml_section() {
        let c: PolicyConfig = toml::from_str(
            r#"
            file = "policies.toml"
            default_behaviour = "deny"
            combining = "first-applicable"
            managers = ["user://a.org/admin"]
            [limits]
            max_rules = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.default_behaviour, Effect::Deny);
        assert_eq!(c.combining, Combining::FirstApplicable);
        assert_eq!(c.limits.max_rules, 10);
        assert_eq!(c.limits.max_rate_entries, DEFAULT_MAX_RATE_ENTRIES);
        assert_eq!(
            toml::from_str::<PolicyConfig>("").unwrap(),
            PolicyConfig::default()
        );
        assert!(toml::from_str::<PolicyConfig>("defualt_behaviour = \"deny\"").is_err());
    }

    #[test]
    fn error_codes() {
        let code = |e: PolicyError| e.response_code().as_u16();
        assert_eq!(code(PolicyError::NotFound("x".into())), 404);
        assert_eq!(code(PolicyError::Forbidden("x".into())), 403);
        assert_eq!(code(PolicyError::Request("x".into())), 400);
        assert_eq!(
            code(PolicyError::TooMany {
                what: "rules",
                limit: 1
            }),
            429
        );
        assert_eq!(code(PolicyError::Unavailable), 500);
        let e = PolicyError::Invalid {
            policy: "p".into(),
            rule: Some("r".into()),
            field: "target.to[0]".into(),
            reason: "bad".into(),
        };
        assert_eq!(
            e.to_string(),
            "policy 'p' rule 'r', field 'target.to[0]': bad"
        );
    }

    #[actix::test]
    async fn sets_keep_their_order_and_changes_are_all_or_nothing() {
        let pdp = Pdp::new(PolicyConfig::default()).unwrap().start();
        let set = |id: &str| PolicySet::from_value(serde_json::json!({"id": id})).unwrap();
        pdp.add_policies(vec![set("a"), set("b"), set("c")])
            .await
            .unwrap();
        pdp.remove_policies(vec!["b".into()]).await.unwrap();
        pdp.add_policies(vec![set("b")]).await.unwrap();
        let ids = |v: Vec<PolicySet>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(pdp.list_policies().await.unwrap()), ["a", "c", "b"]);
        // one unknown id: nothing is removed
        assert!(pdp
            .remove_policies(vec!["a".into(), "zz".into()])
            .await
            .is_err());
        assert_eq!(pdp.list_policies().await.unwrap().len(), 3);
        assert_eq!(
            pdp.policies().snapshot().policy_ids().collect::<Vec<_>>(),
            ["a", "c", "b"]
        );
    }
}
