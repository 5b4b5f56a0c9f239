//! The runtime's policy decision point as the event dispatcher's policy.
//!
//! [`RuntimeEventPolicy`] asks the runtime PDP — through the same [`judge`] the bus
//! PEP and the node use — about every event/recipient combination the dispatcher
//! checks (see [`events::policy`](crate::events::policy)), as a message of type
//! `event` from the event's current sender to the recipient. `Runtime::start`
//! installs it whenever the runtime has a PDP, so one policy file governs messages
//! and events alike.

use crate::events::policy::{EventPolicy, PolicyDecision, PolicyRequest as EventRequest};
use crate::policy::{judge, PolicyHandle, PolicyRequest};

/// The name under which the runtime PDP is installed on the dispatcher.
pub const EVENT_POLICY_NAME: &str = "runtime-pdp";

/// The runtime PDP, deciding events.
#[derive(Debug, Clone)]
pub struct RuntimeEventPolicy(pub PolicyHandle);

impl EventPolicy for RuntimeEventPolicy {
    fn name(&self) -> &str {
        EVENT_POLICY_NAME
    }

    fn check(&self, r: &EventRequest<'_>) -> PolicyDecision {
        let snap = self.0.snapshot();
        let now = if snap.needs_time() {
            self.0.clock().now_ms()
        } else {
            0
        };
        let req = PolicyRequest::new("event", r.sender.as_str(), r.recipient.as_str()).at(now);
        if judge(&snap, &req, None).permit {
            PolicyDecision::Allow
        } else {
            PolicyDecision::Deny("Blocked by policy".to_owned())
        }
    }
}
