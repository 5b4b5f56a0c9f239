//! The node's policy check (its PEP) on a routed frame, shared by sessions and
//! peer links.

use hyperty_actors::policy::{judge, PolicyRequest};

use crate::node::frame::Header;
use crate::node::NodeState;

/// The node's PEP: every recipient must be permitted by the node's policies,
/// decided by the one policy function ([`judge`]) on the header and the sender's
/// authenticated identity `user` (which counts as asserted: the node checked it
/// at `open`, or the peer domain vouches for its own users). `None`: blocked;
/// `Some(stamp)`: deliver, stamping `assertedIdentity` unless a `strip-identity`
/// obligation says not to.
pub(crate) fn permits(
    node: &NodeState,
    h: &Header<'_>,
    user: Option<&str>,
    asserted_domain: Option<&str>,
) -> Option<bool> {
    let policies = node.pdp.policies();
    let snap = policies.snapshot();
    let now = if snap.needs_time() {
        policies.clock().now_ms()
    } else {
        0
    };
    let mut stamp = true;
    for t in h.to.iter() {
        let req = PolicyRequest::new(h.kind.as_str(), &h.from, t)
            .with_identity(user, user.is_some())
            .at(now);
        let v = judge(&snap, &req, asserted_domain);
        if !v.permit {
            return None;
        }
        stamp &= !v.strip_identity;
    }
    Some(stamp)
}
