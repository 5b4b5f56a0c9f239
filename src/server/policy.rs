//! The node's policy check (its PEP) on a routed frame, shared by sessions and
//! peer links.

use std::sync::Arc;

use hyperty_actors::message::MessageType;
use hyperty_actors::policy::model::Obligation;
use hyperty_actors::policy::{judge, CompiledPolicies, PolicyRequest};

use crate::node::frame::{Header, ToRef};
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
    decide(
        &node.pdp.policies().snapshot(),
        node,
        h,
        user,
        asserted_domain,
    )
    .0
}

/// [`permits`], with the session's last decision remembered in `memo`: a frame
/// of the same type between the same sender and single recipient, from the same
/// user, is decided as the last one was while the policies are the same snapshot
/// and none of them depends on the time (time windows, weekdays, rates) — the
/// decision is then a function of exactly those. Decisions with an `audit`
/// obligation are never remembered: each is logged.
pub(crate) fn permits_memo(
    node: &NodeState,
    h: &Header<'_>,
    user: Option<&str>,
    asserted_domain: Option<&str>,
    memo: &mut PepMemo,
) -> Option<bool> {
    let snap = node.pdp.policies().snapshot();
    let ToRef::One(to) = &h.to else {
        return decide(&snap, node, h, user, asserted_domain).0;
    };
    if let Some(m) = &memo.0 {
        if Arc::ptr_eq(&m.snap, &snap)
            && m.kind == h.kind
            && *m.from == *h.from
            && *m.to == **to
            && m.user.as_deref() == user
        {
            return m.verdict;
        }
    }
    let (verdict, audited) = decide(&snap, node, h, user, asserted_domain);
    memo.0 = (!audited && !snap.needs_time()).then(|| Memo {
        snap,
        kind: h.kind.clone(),
        from: (*h.from).into(),
        to: (**to).into(),
        user: user.map(Into::into),
        verdict,
    });
    verdict
}

/// A session's last policy decision (see [`permits_memo`]).
#[derive(Debug, Default)]
pub(crate) struct PepMemo(Option<Memo>);

#[derive(Debug)]
struct Memo {
    snap: Arc<CompiledPolicies>,
    kind: MessageType,
    from: Box<str>,
    to: Box<str>,
    user: Option<Box<str>>,
    verdict: Option<bool>,
}

/// The verdict over every recipient, and whether a decision had to be audited.
fn decide(
    snap: &CompiledPolicies,
    node: &NodeState,
    h: &Header<'_>,
    user: Option<&str>,
    asserted_domain: Option<&str>,
) -> (Option<bool>, bool) {
    let now = if snap.needs_time() {
        node.pdp.policies().clock().now_ms()
    } else {
        0
    };
    let mut stamp = true;
    let mut audited = false;
    for t in h.to.iter() {
        let req = PolicyRequest::new(h.kind.as_str(), &h.from, t)
            .with_identity(user, user.is_some())
            .at(now);
        let v = judge(snap, &req, asserted_domain);
        audited |= v
            .decision
            .obligations
            .iter()
            .any(|o| matches!(o, Obligation::Audit { .. }));
        if !v.permit {
            return (None, audited);
        }
        stamp &= !v.strip_identity;
    }
    (Some(stamp), audited)
}
