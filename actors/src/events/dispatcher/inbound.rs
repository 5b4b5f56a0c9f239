//! The interceptor that hands incoming `event` messages to the dispatcher.

use super::*;

/// Rewrites incoming `event` messages to the local dispatcher (see the module docs),
/// and refuses (403) messages that local components address to the dispatcher
/// directly: they use the event API, which knows who owns what.
#[derive(Debug, Clone)]
pub struct InboundEvents {
    dispatcher: Address,
}

impl InboundEvents {
    /// An interceptor sending incoming events to `dispatcher`.
    pub fn new(dispatcher: Address) -> InboundEvents {
        InboundEvents { dispatcher }
    }
}

fn looks_like_event(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|o| {
        o.get("type").is_some_and(Value::is_string)
            && o.get("source").is_some_and(Value::is_string)
            && o.contains_key("to")
    })
}

impl Interceptor for InboundEvents {
    fn name(&self) -> &str {
        INBOUND_INTERCEPTOR
    }

    fn intercept(&self, msg: &mut Message, direction: Direction) -> Result<(), Rejection> {
        if direction != Direction::Incoming && msg.to.contains(self.dispatcher.as_str()) {
            return Err(Rejection::new(
                ResponseCode::Forbidden,
                "local components reach the event dispatcher through its API",
            ));
        }
        if direction != Direction::Incoming
            || msg.kind != MessageType::Event
            || !looks_like_event(msg.body.value.as_ref())
        {
            return Ok(());
        }
        let original: Vec<Value> = msg
            .to
            .iter()
            .map(|a| Value::String(a.as_str().to_owned()))
            .collect();
        msg.body
            .extra
            .insert(RECIPIENTS_KEY.to_owned(), Value::Array(original));
        msg.to = To::One(self.dispatcher.clone());
        Ok(())
    }
}
