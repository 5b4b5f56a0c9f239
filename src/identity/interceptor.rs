//! [`IdentityInterceptor`]: the outgoing-pipeline step that adds `body.identity`
//! to hyperty messages (rethink-wire.md §7, runtime-core's IdentityHandler).

use std::sync::Arc;

use dashmap::DashMap;
use hyperty_actors::address::{Address, AddressKind, HypertyUrl};
use hyperty_actors::bus::{Direction, Interceptor};
use hyperty_actors::error::Rejection;
use hyperty_actors::message::Message;
use serde_json::{json, Value};

/// Name of the interceptor on the bus.
pub const INTERCEPTOR_NAME: &str = "identity";

/// One hyperty's bound identity, as the interceptor attaches it.
#[derive(Debug)]
pub(crate) struct Binding {
    pub(crate) user: hyperty_actors::address::UserUrl,
    pub(crate) expires: u64,
    pub(crate) assertion: super::model::IdentityAssertion,
    /// The ready-made `body.identity` object.
    pub(crate) identity: Value,
}

/// Bindings by hyperty URL; written by the identity module, read by the
/// interceptor on every outgoing message.
pub(crate) type Bindings = Arc<DashMap<Arc<str>, Arc<Binding>>>;

/// Adds the sender's identity to outgoing hyperty messages.
///
/// For every message leaving the runtime ([`Direction::Outgoing`]) that is not a
/// response:
///
/// * senders of the schemes `domain`, `domain-idp`, `global`, `hyperty-runtime`
///   and `runtime` (runtime and back-end components) are left alone;
/// * the sending hyperty is the one whose bound bus handle sent the message
///   ([`Interceptor::intercept_sent`]) — never what `from` or `body.source`
///   claim; for messages of the runtime owner (the full `Bus`) it is `from`, or
///   `body.source` when `from` is a data object (a reporter's updates);
/// * if an identity is bound to it, `body.identity` becomes
///   `{userProfile:{userURL,username,cn,avatar,…}, idp, assertion, expires}`;
/// * otherwise `body.identity` becomes `{userProfile:{guid:"anonymous"}}` (with
///   [`mark_anonymous`](super::IdmConfig::mark_anonymous), the reference
///   behaviour) or is removed.
///
/// Whatever `body.identity` the hyperty wrote itself is replaced: a hyperty cannot
/// claim an identity it was not bound to. Messages between local hyperties and
/// incoming messages are not touched (the reference pipeline skips them too).
#[derive(Debug, Clone)]
pub struct IdentityInterceptor {
    bindings: Bindings,
    mark_anonymous: bool,
}

impl IdentityInterceptor {
    pub(crate) fn new(bindings: Bindings, mark_anonymous: bool) -> IdentityInterceptor {
        IdentityInterceptor {
            bindings,
            mark_anonymous,
        }
    }
}

/// True for senders whose messages carry no user identity.
fn is_component(from: &Address) -> bool {
    matches!(
        from.kind(),
        AddressKind::Domain | AddressKind::DomainIdp | AddressKind::Global | AddressKind::Runtime
    )
}

impl Interceptor for IdentityInterceptor {
    fn name(&self) -> &str {
        INTERCEPTOR_NAME
    }

    fn intercept(&self, msg: &mut Message, direction: Direction) -> Result<(), Rejection> {
        self.intercept_sent(msg, direction, None)
    }

    fn intercept_sent(
        &self,
        msg: &mut Message,
        direction: Direction,
        hyperty: Option<&HypertyUrl>,
    ) -> Result<(), Rejection> {
        if direction != Direction::Outgoing || msg.is_response() || is_component(&msg.from) {
            return Ok(());
        }
        let sender = match (hyperty, msg.from.kind(), &msg.body.source) {
            (Some(h), _, _) => h.as_str(),
            (None, AddressKind::DataObject, Some(source)) => source.as_str(),
            (None, _, _) => msg.from.as_str(),
        };
        let identity = match self.bindings.get(sender) {
            Some(b) => Some(b.identity.clone()),
            None if self.mark_anonymous => Some(json!({"userProfile": {"guid": "anonymous"}})),
            None => None,
        };
        msg.body.identity = identity;
        Ok(())
    }
}
