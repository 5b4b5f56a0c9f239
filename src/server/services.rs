//! The node services a session (or peer link) may address, in one place:
//! address allocation (`domain://msg-node.<D>/address-allocation`), subscriptions
//! (`/sm`), the domain registry, the IdP, QoS and the node's PEP management
//! (`domain://msg-node.<D>/pep`). `mn:/session` (open, re-open, renewal, close) is
//! the session's own business (see [`session`](super::session)).
//!
//! [`answer_service`] turns a parsed request into the future of its answer;
//! [`full_message`] and [`answer_text`] carry a string id across the typed
//! [`Message`] (whose ids are numbers).

use std::sync::Arc;

use actix::prelude::*;
use hyperty_actors::error::ToResponseCode;
use hyperty_actors::message::{Message, MessageType, ParseError, ResponseCode};
use hyperty_actors::policy::PolicySet;
use serde_json::{json, Value};

use crate::node::allocation::NodeRequest;
use crate::node::frame::{FrameId, Header, ASSERTED_IDENTITY};
use crate::node::rights::is_manager;
use crate::node::router::{Service, SessionKey};
use crate::node::NodeState;

/// The whole message of a frame whose header `h` is valid (a string id is carried
/// aside: [`Message`] ids are numbers); a `body.assertedIdentity` is dropped.
pub(crate) fn full_message(text: &str, h: &Header<'_>) -> Result<Message, ParseError> {
    let parsed = match &h.id {
        FrameId::Num(_) => Message::parse(text),
        FrameId::Text(_) => serde_json::from_str::<Value>(text)
            .map_err(|e| ParseError::Json(e.to_string()))
            .and_then(|mut v| {
                v["id"] = json!(1);
                Message::from_value(v)
            }),
    };
    parsed.map(|mut m| {
        m.body.extra.remove(ASSERTED_IDENTITY);
        m
    })
}

/// A node answer on the wire, with the id the request came with.
pub(crate) fn answer_text(msg: &Message, id: &FrameId<'_>) -> String {
    match id {
        FrameId::Num(_) => msg.to_json(),
        FrameId::Text(_) => {
            let mut v = serde_json::to_value(msg).unwrap_or_default();
            v["id"] = id.to_json();
            v.to_string()
        }
    }
}

/// Who asks a node service.
#[derive(Debug, Clone)]
pub(crate) struct ServiceCaller {
    /// The session (or peer link) key.
    pub(crate) key: SessionKey,
    /// Its authenticated identity.
    pub(crate) identity: Option<Arc<str>>,
    /// Its runtime URL (none for a peer link).
    pub(crate) runtime: Option<Arc<str>>,
    /// Its client address.
    pub(crate) ip: Option<std::net::IpAddr>,
}

/// The answer of node service `service` to `msg` from `caller` (`None` for
/// `mn:/session`, which the session handles itself).
pub(crate) fn answer_service(
    node: &NodeState,
    service: Service,
    msg: Message,
    caller: ServiceCaller,
) -> Option<ResponseFuture<Message>> {
    let request = NodeRequest {
        session: caller.key.clone(),
        msg: msg.clone(),
    };
    Some(match service {
        Service::Allocation => answered(node.allocation.send(request), msg),
        Service::Subscriptions => answered(node.subscriptions.send(request), msg),
        Service::Registry => {
            let (router, key) = (node.router.clone(), caller.key.clone());
            let registry_caller = crate::domain_registry::Caller {
                identity: caller.identity.clone(),
                runtime: caller.runtime.clone(),
                owns: Arc::new(move |url: &str| router.owns(&key, url)),
            };
            answered(
                node.registry.send(crate::domain_registry::RegistryRequest {
                    msg: msg.clone(),
                    caller: registry_caller,
                }),
                msg,
            )
        }
        Service::Idp => answered(
            node.idp.send(crate::identity::IdpRequest {
                message: msg.clone(),
                source: caller.ip,
            }),
            msg,
        ),
        Service::Qos => answered(
            node.qos.send(crate::qos::QosRequest {
                msg: msg.clone(),
                runtime: caller.runtime.clone(),
            }),
            msg,
        ),
        Service::Policy => manage_policies(node, caller.identity.as_deref(), msg),
        Service::Session => return None,
    })
}

/// Policy management at `domain://msg-node.<D>/pep`, for sessions whose
/// authenticated identity matches `policy.managers`: `create {value: <policy
/// set>}` adds (or replaces) a set, `delete {resource: <set id>}` removes it,
/// `read` lists the sets.
fn manage_policies(
    node: &NodeState,
    identity: Option<&str>,
    msg: Message,
) -> ResponseFuture<Message> {
    let managers = &node.config.policy.managers;
    if !is_manager(managers, identity) {
        return Box::pin(async move {
            msg.reply_error(
                ResponseCode::Forbidden,
                "only policy managers may manage the node's policies",
            )
        });
    }
    let pdp = node.pdp.clone();
    Box::pin(async move {
        let result = match msg.kind {
            MessageType::Create => match msg.body.value.clone().map(PolicySet::from_value) {
                Some(Ok(set)) => pdp.add_policies(vec![set]).await.map(|()| Value::Null),
                Some(Err(e)) => Err(e),
                None => {
                    return msg.reply_error(ResponseCode::BadRequest, "missing field 'body.value'")
                }
            },
            MessageType::Delete => {
                let ids: Vec<String> = msg
                    .body
                    .resource
                    .iter()
                    .flat_map(|r| r.iter().cloned())
                    .collect();
                if ids.is_empty() {
                    return msg
                        .reply_error(ResponseCode::BadRequest, "missing field 'body.resource'");
                }
                pdp.remove_policies(ids).await.map(|()| Value::Null)
            }
            MessageType::Read => pdp
                .list_policies()
                .await
                .map(|sets| serde_json::to_value(sets).unwrap_or_default()),
            _ => {
                return msg.reply_error(
                    ResponseCode::BadRequest,
                    "the node PEP takes create, delete and read",
                )
            }
        };
        match result {
            Ok(Value::Null) => msg.reply(ResponseCode::Ok),
            Ok(v) => msg.reply_value(ResponseCode::Ok, v),
            Err(e) => msg.reply_error(e.response_code(), e.to_string()),
        }
    })
}

/// The answer of a node component, or 500 if the component is gone.
fn answered(
    answer: impl std::future::Future<Output = Result<Message, MailboxError>> + 'static,
    msg: Message,
) -> ResponseFuture<Message> {
    Box::pin(async move {
        answer.await.unwrap_or_else(|_| {
            msg.reply_error(ResponseCode::InternalError, "node component unavailable")
        })
    })
}
