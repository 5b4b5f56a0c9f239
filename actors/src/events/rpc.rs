//! JSON-RPC 2.0 over events (seed 004 "RPC").
//!
//! A request object or batch travels as the payload (JSON *text*, decision 14) of a
//! `JSONRPC20Request` event; the answer as the payload of a `JSONRPC20Response`
//! event sent back to the request's source with `inResponseTo` set. Both are
//! addressing sensitive and never forwarded; applications never see these events:
//! the dispatcher turns them into [`RpcCall`]s to the handler an entity registered
//! and into the result of the caller's future.
//!
//! Rules (JSON-RPC 2.0 + decision 14):
//!
//! * a notification is a request object **without** an `id` member (`"id": null`
//!   is a request) and is never answered;
//! * a batch is answered by one response event holding only the responses to its
//!   non-notifications; a batch of notifications only is not answered;
//! * a payload that is not JSON, not an object or array, or an empty array makes
//!   the event invalid (an `invalid` delivery notification, no -32700/-32600 reply);
//! * a malformed member of a batch, or a malformed single object, is answered with
//!   -32600 (Invalid Request); an unknown method with -32601; a handler that fails
//!   with its own error, or -32603 if it is gone;
//! * only a primary recipient answers.
//!
//! The types are hand-written (no JSON-RPC framework).
//!
//! ```
//! use hyperty_actors::events::rpc::{parse_request_payload, RpcRequest};
//! use serde_json::json;
//!
//! let batch = parse_request_payload(
//!     r#"[{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1},
//!         {"jsonrpc":"2.0","method":"log"},
//!         {"foo":"bar"}]"#,
//! ).unwrap();
//! assert!(batch.is_batch);
//! assert_eq!(batch.items.len(), 3);
//! let first = batch.items[0].as_ref().unwrap();
//! assert_eq!(first.method, "add");
//! assert!(batch.items[1].as_ref().unwrap().is_notification());
//! assert_eq!(batch.items[2].as_ref().unwrap_err().outcome.as_ref().unwrap_err().code, -32600);
//! assert_eq!(RpcRequest::call("add", Some(json!([1, 2])), json!(1)).to_value()["jsonrpc"], "2.0");
//! ```

use std::collections::HashMap;
use std::fmt;

use actix::prelude::*;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::address::Address;
use crate::events::delivery::DeliveryError;
use crate::events::error::{EventError, EventParseError};

/// -32700: Parse error. Per decision 14 an unparseable request payload makes the
/// event invalid instead; the code is kept for completeness of the vocabulary.
pub const PARSE_ERROR: i64 = -32700;
/// -32600: Invalid Request.
pub const INVALID_REQUEST: i64 = -32600;
/// -32601: Method not found.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// -32602: Invalid params.
pub const INVALID_PARAMS: i64 = -32602;
/// -32603: Internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// Most requests in one batch.
pub const MAX_BATCH: usize = 256;

/// A request id: number, string or null.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RpcId {
    /// `null`.
    Null,
    /// A number.
    Number(Number),
    /// A string.
    String(String),
}

impl RpcId {
    fn from_value(v: &Value) -> Option<RpcId> {
        match v {
            Value::Null => Some(RpcId::Null),
            Value::Number(n) => Some(RpcId::Number(n.clone())),
            Value::String(s) => Some(RpcId::String(s.clone())),
            _ => None,
        }
    }

    /// The JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            RpcId::Null => Value::Null,
            RpcId::Number(n) => Value::Number(n.clone()),
            RpcId::String(s) => Value::String(s.clone()),
        }
    }
}

impl Serialize for RpcId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// The message.
    pub message: String,
    /// Extra data.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Adds data.
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// -32600.
    pub fn invalid_request(why: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_REQUEST, "Invalid Request").with_data(Value::String(why.into()))
    }

    /// -32601.
    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(METHOD_NOT_FOUND, "Method not found").with_data(Value::String(method.into()))
    }

    /// -32602.
    pub fn invalid_params(why: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, "Invalid params").with_data(Value::String(why.into()))
    }

    /// -32603.
    pub fn internal(why: impl Into<String>) -> RpcError {
        RpcError::new(INTERNAL_ERROR, "Internal error").with_data(Value::String(why.into()))
    }

    fn from_value(v: &Value) -> Option<RpcError> {
        let o = v.as_object()?;
        Some(RpcError {
            code: o.get("code")?.as_i64()?,
            message: o.get("message")?.as_str()?.to_owned(),
            data: o.get("data").cloned(),
        })
    }
}

impl Serialize for RpcError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("code", &self.code)?;
        m.serialize_entry("message", &self.message)?;
        if let Some(d) = &self.data {
            m.serialize_entry("data", d)?;
        }
        m.end()
    }
}

/// A request object. `id: None` makes it a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// The method.
    pub method: String,
    /// Positional (array) or named (object) parameters.
    pub params: Option<Value>,
    /// The id; absent for notifications.
    pub id: Option<RpcId>,
}

impl RpcRequest {
    /// A call expecting an answer.
    pub fn call(method: impl Into<String>, params: Option<Value>, id: Value) -> RpcRequest {
        RpcRequest {
            method: method.into(),
            params,
            id: RpcId::from_value(&id).or(Some(RpcId::Null)),
        }
    }

    /// A notification (no answer).
    pub fn notification(method: impl Into<String>, params: Option<Value>) -> RpcRequest {
        RpcRequest {
            method: method.into(),
            params,
            id: None,
        }
    }

    /// True if no `id` member.
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }

    /// The JSON object.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn from_value(v: &Value) -> Result<RpcRequest, RpcResponse> {
        let invalid = |id: RpcId, why: &str| RpcResponse::error(id, RpcError::invalid_request(why));
        let Some(o) = v.as_object() else {
            return Err(invalid(RpcId::Null, "a request must be an object"));
        };
        let id = match o.get("id") {
            None => None,
            Some(i) => match RpcId::from_value(i) {
                Some(id) => Some(id),
                None => {
                    return Err(invalid(
                        RpcId::Null,
                        "'id' must be a string, number or null",
                    ))
                }
            },
        };
        let reply_id = id.clone().unwrap_or(RpcId::Null);
        if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid(reply_id, "'jsonrpc' must be \"2.0\""));
        }
        let Some(method) = o.get("method").and_then(Value::as_str) else {
            return Err(invalid(reply_id, "'method' must be a string"));
        };
        let params = match o.get("params") {
            None => None,
            Some(p @ (Value::Array(_) | Value::Object(_))) => Some(p.clone()),
            Some(_) => return Err(invalid(reply_id, "'params' must be an array or object")),
        };
        Ok(RpcRequest {
            method: method.to_owned(),
            params,
            id,
        })
    }
}

impl Serialize for RpcRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("jsonrpc", "2.0")?;
        m.serialize_entry("method", &self.method)?;
        if let Some(p) = &self.params {
            m.serialize_entry("params", p)?;
        }
        if let Some(id) = &self.id {
            m.serialize_entry("id", id)?;
        }
        m.end()
    }
}

/// A response object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcResponse {
    /// The request's id (`null` if it could not be read).
    pub id: RpcId,
    /// `result` or `error`.
    pub outcome: Result<Value, RpcError>,
}

impl RpcResponse {
    /// A success.
    pub fn result(id: RpcId, value: Value) -> RpcResponse {
        RpcResponse {
            id,
            outcome: Ok(value),
        }
    }

    /// A failure.
    pub fn error(id: RpcId, error: RpcError) -> RpcResponse {
        RpcResponse {
            id,
            outcome: Err(error),
        }
    }

    /// The JSON object.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn from_value(v: &Value) -> Result<RpcResponse, String> {
        let o = v.as_object().ok_or("a response must be an object")?;
        if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err("'jsonrpc' must be \"2.0\"".into());
        }
        let id = o
            .get("id")
            .and_then(RpcId::from_value)
            .ok_or("'id' must be a string, number or null")?;
        let outcome = match (o.get("result"), o.get("error")) {
            (Some(r), None) => Ok(r.clone()),
            (None, Some(e)) => Err(RpcError::from_value(e).ok_or("malformed 'error'")?),
            _ => return Err("exactly one of 'result' and 'error' is required".into()),
        };
        Ok(RpcResponse { id, outcome })
    }
}

impl Serialize for RpcResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("jsonrpc", "2.0")?;
        match &self.outcome {
            Ok(v) => m.serialize_entry("result", v)?,
            Err(e) => m.serialize_entry("error", e)?,
        }
        m.serialize_entry("id", &self.id)?;
        m.end()
    }
}

/// A parsed request payload: each item is a request or the -32600 answer to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBatch {
    /// True if the payload was an array.
    pub is_batch: bool,
    /// The items, in order.
    pub items: Vec<Result<RpcRequest, RpcResponse>>,
}

fn protocol(why: impl Into<String>) -> EventParseError {
    EventParseError::Protocol(why.into())
}

/// Parses a `JSONRPC20Request` payload. Errors make the event invalid.
pub fn parse_request_payload(text: &str) -> Result<RequestBatch, EventParseError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| protocol(format!("RPC request payload is not JSON: {e}")))?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(protocol("RPC request batch is empty"));
            }
            if items.len() > MAX_BATCH {
                return Err(protocol(format!("RPC batch larger than {MAX_BATCH}")));
            }
            Ok(RequestBatch {
                is_batch: true,
                items: items.iter().map(RpcRequest::from_value).collect(),
            })
        }
        v @ Value::Object(_) => Ok(RequestBatch {
            is_batch: false,
            items: vec![RpcRequest::from_value(&v)],
        }),
        _ => Err(protocol(
            "RPC request payload must be a request object or batch",
        )),
    }
}

/// Parses a `JSONRPC20Response` payload. Errors make the event invalid.
pub fn parse_response_payload(text: &str) -> Result<Vec<RpcResponse>, EventParseError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| protocol(format!("RPC response payload is not JSON: {e}")))?;
    let items = match v {
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_BATCH => items,
        Value::Array(_) => return Err(protocol("RPC response batch is empty or too large")),
        v => vec![v],
    };
    items
        .iter()
        .map(|i| RpcResponse::from_value(i).map_err(protocol))
        .collect()
}

/// Serialises responses as one object (single request) or an array (batch).
pub fn response_payload(is_batch: bool, responses: &[RpcResponse]) -> String {
    let v = match (is_batch, responses) {
        (false, [one]) => one.to_value(),
        _ => Value::Array(responses.iter().map(RpcResponse::to_value).collect()),
    };
    v.to_string()
}

/// Serialises requests as one object or an array.
pub fn request_payload(is_batch: bool, requests: &[RpcRequest]) -> String {
    let v = match (is_batch, requests) {
        (false, [one]) => one.to_value(),
        _ => Value::Array(requests.iter().map(RpcRequest::to_value).collect()),
    };
    v.to_string()
}

/// A method invocation handed to the handler an entity registered.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<Value, RpcError>")]
pub struct RpcCall {
    /// The method.
    pub method: String,
    /// Its parameters.
    pub params: Option<Value>,
    /// The entity that called (the request event's source).
    pub caller: Address,
    /// The local entity called.
    pub callee: Address,
    /// True if the caller is an entity of this runtime.
    pub caller_is_local: bool,
    /// True for a notification (the result is discarded).
    pub notification: bool,
}

/// Why a call did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcCallError {
    /// The callee answered with an error object.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The request event was not delivered (bad destination, refused, …).
    #[error("request not delivered: {0}")]
    Delivery(DeliveryError),
    /// No answer within the call timeout.
    #[error("no answer within the RPC timeout")]
    Timeout,
    /// The call could not be sent.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The answer did not hold a response to this request.
    #[error("malformed answer: {0}")]
    BadAnswer(String),
}

type MethodFn = Box<dyn Fn(&RpcCall) -> Result<Value, RpcError> + Send + 'static>;

/// A ready-made RPC handler: named methods backed by closures; unknown methods
/// answer -32601.
///
/// ```
/// use hyperty_actors::events::rpc::{RpcError, RpcMethods};
/// use serde_json::{json, Value};
///
/// let methods = RpcMethods::new()
///     .method("add", |call| {
///         let p = call.params.as_ref().and_then(Value::as_array).ok_or_else(|| RpcError::invalid_params("[a, b]"))?;
///         Ok(json!(p.iter().filter_map(Value::as_i64).sum::<i64>()))
///     });
/// assert_eq!(methods.names(), vec!["add"]);
/// ```
#[derive(Default)]
pub struct RpcMethods {
    methods: HashMap<String, MethodFn>,
}

impl fmt::Debug for RpcMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcMethods")
            .field("methods", &self.names())
            .finish()
    }
}

impl RpcMethods {
    /// No methods.
    pub fn new() -> RpcMethods {
        RpcMethods::default()
    }

    /// Adds a method.
    pub fn method<F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(&RpcCall) -> Result<Value, RpcError> + Send + 'static,
    {
        self.methods.insert(name.into(), Box::new(f));
        self
    }

    /// The method names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.methods.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Starts the handler actor on the current arbiter.
    pub fn start_handler(self) -> Recipient<RpcCall> {
        Actor::start(self).recipient()
    }
}

impl Actor for RpcMethods {
    type Context = Context<Self>;
}

impl Handler<RpcCall> for RpcMethods {
    type Result = Result<Value, RpcError>;
    fn handle(&mut self, call: RpcCall, _: &mut Context<Self>) -> Self::Result {
        match self.methods.get(&call.method) {
            Some(f) => f(&call),
            None => Err(RpcError::method_not_found(&call.method)),
        }
    }
}

/// Reads `params` as an object (named parameters).
pub fn named_params(params: &Option<Value>) -> Result<&Map<String, Value>, RpcError> {
    params
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::invalid_params("named parameters (an object) expected"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notifications_have_no_id_member() {
        let b = parse_request_payload(r#"{"jsonrpc":"2.0","method":"m","id":null}"#).unwrap();
        let r = b.items[0].as_ref().unwrap();
        assert!(!r.is_notification(), "id: null is a request");
        assert_eq!(r.id, Some(RpcId::Null));
        let b = parse_request_payload(r#"{"jsonrpc":"2.0","method":"m"}"#).unwrap();
        assert!(b.items[0].as_ref().unwrap().is_notification());
        assert!(!b.is_batch);
    }

    #[test]
    fn invalid_payloads_make_the_event_invalid() {
        for bad in ["", "{", "[]", "42", "\"x\"", "null"] {
            assert!(parse_request_payload(bad).is_err(), "{bad:?}");
        }
        let many = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
        assert!(parse_request_payload(&many).is_err());
    }

    #[test]
    fn malformed_members_get_invalid_request() {
        let b = parse_request_payload(
            r#"[1, {"jsonrpc":"1.0","method":"m","id":3}, {"jsonrpc":"2.0","id":4}, {"jsonrpc":"2.0","method":"m","params":5,"id":"x"}, {"jsonrpc":"2.0","method":"m","id":{}}]"#,
        )
        .unwrap();
        let ids: Vec<RpcId> = b
            .items
            .iter()
            .map(|i| {
                let r = i.as_ref().unwrap_err();
                assert_eq!(r.outcome.as_ref().unwrap_err().code, INVALID_REQUEST);
                r.id.clone()
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                RpcId::Null,
                RpcId::Number(3.into()),
                RpcId::Number(4.into()),
                RpcId::String("x".into()),
                RpcId::Null
            ]
        );
    }

    #[test]
    fn responses_round_trip() {
        let ok = RpcResponse::result(RpcId::Number(1.into()), json!(3));
        let err = RpcResponse::error(RpcId::String("a".into()), RpcError::method_not_found("x"));
        let text = response_payload(true, &[ok.clone(), err.clone()]);
        assert_eq!(
            parse_response_payload(&text).unwrap(),
            vec![ok.clone(), err]
        );
        let single = response_payload(false, std::slice::from_ref(&ok));
        assert_eq!(
            serde_json::from_str::<Value>(&single).unwrap(),
            json!({"jsonrpc":"2.0","result":3,"id":1})
        );
        assert!(parse_response_payload(r#"{"jsonrpc":"2.0","id":1}"#).is_err());
        assert!(
            parse_response_payload(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#).is_err()
        );
        assert!(parse_response_payload("[]").is_err());
    }

    #[test]
    fn requests_serialise_without_id_for_notifications() {
        let n = RpcRequest::notification("log", None).to_value();
        assert!(n.get("id").is_none());
        let text = request_payload(
            true,
            &[RpcRequest::call("a", Some(json!({"x":1})), json!("i"))],
        );
        let b = parse_request_payload(&text).unwrap();
        assert!(b.is_batch);
        assert_eq!(
            b.items[0].as_ref().unwrap().id,
            Some(RpcId::String("i".into()))
        );
    }

    #[actix::test]
    async fn rpc_methods_answer_or_say_not_found() {
        let h = RpcMethods::new()
            .method("echo", |c| Ok(c.params.clone().unwrap_or_default()))
            .start_handler();
        let call = |m: &str| RpcCall {
            method: m.into(),
            params: Some(json!([1])),
            caller: "hyperty://a/c".parse().unwrap(),
            callee: "hyperty://a/s".parse().unwrap(),
            caller_is_local: true,
            notification: false,
        };
        assert_eq!(h.send(call("echo")).await.unwrap(), Ok(json!([1])));
        assert_eq!(
            h.send(call("nope")).await.unwrap().unwrap_err().code,
            METHOD_NOT_FOUND
        );
    }
}
