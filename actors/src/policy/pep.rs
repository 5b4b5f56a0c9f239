//! The Policy Enforcement Point: the bus interceptor that applies the PDP's
//! decisions to every message, in every direction.
//!
//! The bus calls [`Pep::intercept`] synchronously on the sender's thread for each
//! message, local, outgoing (to a protocol stub) and incoming (from one). The PEP
//! reads the PDP's current snapshot through its [`PolicyHandle`] (no actor hop) and
//!
//! * on **deny** returns [`Rejection::blocked_by_policy`]: the bus answers the
//!   sender `{code:403, description:"Blocked by policy"}` and delivers nothing;
//! * on **permit** fulfils the rule's obligations (a `require-assertion` that the
//!   verifier does not satisfy blocks the message) and sets `body.auth = true`;
//! * when **nothing applies** uses the default behaviour (permit or deny) and
//!   sets `body.auth = false`.
//!
//! The PEP is *sealed* ([`Interceptor::sealed`]): once installed nobody holding a
//! [`Bus`](crate::bus::Bus) handle can remove it, and it runs after every other
//! interceptor, so what it judged is what gets delivered.
//!
//! ```
//! use std::sync::Arc;
//! use hyperty_actors::policy::{Pdp, PolicySet};
//! use hyperty_actors::prelude::*;
//!
//! # #[actix::main] async fn main() {
//! let bus = MessageBus::start("hyperty-runtime://a.org/rt".parse().unwrap(), Default::default(), Default::default());
//! let pdp = Pdp::new(Default::default()).unwrap().start();
//! bus.add_interceptor(Arc::new(pdp.pep())).await.unwrap();
//! pdp.add_policies(vec![PolicySet::from_json(
//!     r#"{"id": "p", "rules": [{"id": "no-deletes", "effect": "deny", "target": {"types": ["delete"]}}]}"#,
//! ).unwrap()]).await.unwrap();
//!
//! let me: Address = "hyperty-runtime://a.org/rt/app".parse().unwrap();
//! let them: Address = "hyperty://a.org/x".parse().unwrap();
//! let err = bus.post(Message::new(MessageType::Delete, me, them)).await.unwrap_err();
//! assert_eq!(err.response_code(), ResponseCode::Forbidden);
//! # }
//! ```

use crate::bus::{Direction, Interceptor};
use crate::error::Rejection;
use crate::message::Message;

use super::handle::PolicyHandle;

/// The name the runtime's PEP is installed under (its URL is `<runtime>/pep/policy`).
pub const PEP_NAME: &str = "policy";

/// A policy enforcement point for a runtime bus.
#[derive(Debug, Clone)]
pub struct Pep {
    name: String,
    policies: PolicyHandle,
}

impl Pep {
    /// A PEP enforcing the policies behind `policies`, named [`PEP_NAME`].
    pub fn new(policies: PolicyHandle) -> Pep {
        Pep {
            name: PEP_NAME.to_owned(),
            policies,
        }
    }

    /// The same PEP under another name (to install several on one bus).
    pub fn named(mut self, name: impl Into<String>) -> Pep {
        self.name = name.into();
        self
    }

    /// The policies it enforces.
    pub fn policies(&self) -> &PolicyHandle {
        &self.policies
    }
}

impl Interceptor for Pep {
    fn name(&self) -> &str {
        &self.name
    }

    fn sealed(&self) -> bool {
        true
    }

    fn intercept(&self, msg: &mut Message, direction: Direction) -> Result<(), Rejection> {
        self.policies.enforce(msg, Some(direction)).result
    }
}
