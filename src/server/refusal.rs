//! Refusals: how a frame the node will not route is answered, on every transport and
//! on peer links alike.
//!
//! [`refusal_rule`] counts a refused frame and says whether it counts as abuse and
//! whether its sender is told; [`refusal_answer`] applies that rule and builds the
//! reTHINK error response ([`error_frame`]) to send back.

use hyperty_actors::message::{MessageType, ResponseCode};
use serde_json::{json, Value};

use crate::node::frame::Header;
use crate::node::NodeState;

/// How a refused frame is treated (sessions and peer links alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefusalRule {
    /// It counts towards the connection's abuse account (400, 403, 429).
    pub(crate) abuse: bool,
    /// Its sender is told.
    pub(crate) report: bool,
}

/// Treats a refused frame alike on sessions and peer links: counts it, asks
/// `closed_as_abusive` (the connection's abuse account) for refusals that count,
/// and returns the error frame to send back, if its sender is to be told.
pub(crate) fn refusal_answer(
    node: &NodeState,
    h: &Header<'_>,
    code: ResponseCode,
    description: &str,
    closed_as_abusive: impl FnOnce() -> bool,
) -> Option<String> {
    let rule = refusal_rule(&node.router.stats, &h.kind, code);
    let metrics = &node.router.metrics;
    if rule.abuse && closed_as_abusive() {
        metrics.refused(code, false);
        return None;
    }
    metrics.refused(code, rule.report);
    rule.report.then(|| {
        error_frame(
            Some(h.id.to_json()),
            h.to.first(),
            Some(&h.from),
            code,
            description,
        )
    })
}

/// Counts a frame of `kind` refused with `code` and says how to treat it: a
/// refusal (403/400) is reported for anything but a response; a missing route or
/// capacity (404/408/429) only to requests — notifications are dropped and counted.
pub(crate) fn refusal_rule(
    stats: &crate::node::router::NodeStats,
    kind: &MessageType,
    code: ResponseCode,
) -> RefusalRule {
    use std::sync::atomic::Ordering::Relaxed;
    let counter = match code {
        ResponseCode::Forbidden => &stats.forbidden,
        ResponseCode::NotFound => &stats.not_found,
        ResponseCode::TooManyRequests => &stats.rate_limited,
        _ => &stats.bad_requests,
    };
    counter.fetch_add(1, Relaxed);
    let report = match code {
        // an event nobody holds is answered too: its sender's dispatcher turns the
        // 404 into the recipients' `badDestination`
        ResponseCode::NotFound => kind.expects_response() || *kind == MessageType::Event,
        ResponseCode::RequestTimeout | ResponseCode::TooManyRequests => kind.expects_response(),
        _ => *kind != MessageType::Response,
    };
    if !report {
        stats.dropped.fetch_add(1, Relaxed);
    }
    RefusalRule {
        abuse: matches!(
            code,
            ResponseCode::Forbidden | ResponseCode::BadRequest | ResponseCode::TooManyRequests
        ),
        report,
    }
}

/// A reTHINK error response as wire text.
pub(crate) fn error_frame(
    id: Option<Value>,
    from: &str,
    to: Option<&str>,
    code: ResponseCode,
    description: &str,
) -> String {
    let mut v = json!({
        "type": "response",
        "from": from,
        "body": { "code": code, "description": description },
    });
    if let Some(id) = id {
        v["id"] = id;
    }
    if let Some(to) = to {
        v["to"] = json!(to);
    }
    v.to_string()
}
