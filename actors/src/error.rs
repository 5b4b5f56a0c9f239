//! Errors of the runtime components and their mapping to reTHINK response codes.
//!
//! Every error a caller can see maps to exactly one [`ResponseCode`] through
//! [`ToResponseCode`], and [`error_response`] turns any of them into the reTHINK
//! response a remote sender receives.

use crate::address::AddressError;
use crate::message::{Message, ParseError, ResponseCode};

/// Something that can be reported to a remote sender as a reTHINK response code.
pub trait ToResponseCode: std::fmt::Display {
    /// The code a response reporting this error carries.
    fn response_code(&self) -> ResponseCode;
}

/// Builds the response that reports `err` to the sender of `request`.
///
/// Timeouts use the runtime-core wording `"Response timeout!"` (rethink-wire.md §10).
pub fn error_response(request: &Message, err: &impl ToResponseCode) -> Message {
    request.reply_error(err.response_code(), err.to_string())
}

/// A policy or interceptor refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct Rejection {
    /// Code reported to the sender (403 for policy decisions).
    pub code: ResponseCode,
    /// Human-readable reason.
    pub description: String,
}

impl Rejection {
    /// The standard policy denial: `{code:403, description:"Blocked by policy"}`.
    pub fn blocked_by_policy() -> Rejection {
        Rejection {
            code: ResponseCode::Forbidden,
            description: "Blocked by policy".to_owned(),
        }
    }

    /// A rejection with a code and reason.
    pub fn new(code: ResponseCode, description: impl Into<String>) -> Rejection {
        Rejection {
            code,
            description: description.into(),
        }
    }
}

/// Errors of the message bus, as seen by a sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No final response within the request timeout (408).
    #[error("Response timeout!")]
    Timeout,
    /// No listener, stub or route for the address (404).
    #[error("no route to {0}")]
    NoRoute(String),
    /// An interceptor (PEP) refused the message.
    #[error("{0}")]
    Rejected(Rejection),
    /// The recipient's mailbox or a bounded table is full (429).
    #[error("{0} is overloaded, try again later")]
    Busy(String),
    /// The recipient stopped or crashed before answering (500).
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// The message is not valid (400).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The runtime is shutting down (500).
    #[error("the bus is shut down")]
    Shutdown,
    /// A hyperty used an address its runtime did not give it: sent from it,
    /// listened on it, or answered a request sent to it (403).
    #[error("{hyperty} does not hold {address}")]
    NotHeld {
        /// The hyperty.
        hyperty: String,
        /// The address.
        address: String,
    },
}

impl ToResponseCode for BusError {
    fn response_code(&self) -> ResponseCode {
        match self {
            BusError::Timeout => ResponseCode::RequestTimeout,
            BusError::NoRoute(_) => ResponseCode::NotFound,
            BusError::Rejected(r) => r.code,
            BusError::Busy(_) => ResponseCode::TooManyRequests,
            BusError::Unavailable(_) | BusError::Shutdown => ResponseCode::InternalError,
            BusError::Invalid(_) => ResponseCode::BadRequest,
            BusError::NotHeld { .. } => ResponseCode::Forbidden,
        }
    }
}

impl From<ParseError> for BusError {
    fn from(e: ParseError) -> Self {
        BusError::Invalid(e.to_string())
    }
}

impl From<Rejection> for BusError {
    fn from(r: Rejection) -> Self {
        BusError::Rejected(r)
    }
}

impl ToResponseCode for ParseError {
    fn response_code(&self) -> ResponseCode {
        ResponseCode::BadRequest
    }
}

impl ToResponseCode for Rejection {
    fn response_code(&self) -> ResponseCode {
        self.code
    }
}

/// Errors of the runtime registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Nothing registered under that address or name.
    #[error("not registered: {0}")]
    NotFound(String),
    /// Already registered.
    #[error("already registered: {0}")]
    Exists(String),
    /// A bounded table is full.
    #[error("registry table '{0}' is full")]
    Full(&'static str),
    /// An address could not be built or parsed.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The address allocator (e.g. the messaging node) failed.
    #[error("address allocation failed: {0}")]
    Allocation(String),
    /// A component the registry relies on is gone.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// A sealed PEP cannot be unregistered.
    #[error("{0} is sealed and stays installed")]
    Sealed(String),
}

impl ToResponseCode for RegistryError {
    fn response_code(&self) -> ResponseCode {
        match self {
            RegistryError::NotFound(_) => ResponseCode::NotFound,
            RegistryError::Exists(_) | RegistryError::Address(_) => ResponseCode::BadRequest,
            RegistryError::Full(_) => ResponseCode::TooManyRequests,
            RegistryError::Allocation(_) => ResponseCode::GatewayTimeout,
            RegistryError::Unavailable(_) => ResponseCode::InternalError,
            RegistryError::Sealed(_) => ResponseCode::Forbidden,
        }
    }
}

/// Errors of sandboxes and hyperty hosting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// A hyperty with that address already runs in the sandbox.
    #[error("hyperty {0} already runs")]
    AlreadyRunning(String),
    /// No such hyperty in the sandbox.
    #[error("hyperty {0} is not hosted here")]
    NotHosted(String),
    /// The sandbox is at its hyperty limit.
    #[error("sandbox is full ({0} hyperties)")]
    Full(usize),
    /// Registering the hyperty's listener on the bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The sandbox actor or its arbiter is gone.
    #[error("sandbox is unavailable")]
    Unavailable,
}

impl ToResponseCode for SandboxError {
    fn response_code(&self) -> ResponseCode {
        match self {
            SandboxError::AlreadyRunning(_) => ResponseCode::BadRequest,
            SandboxError::NotHosted(_) => ResponseCode::NotFound,
            SandboxError::Full(_) => ResponseCode::TooManyRequests,
            SandboxError::Bus(e) => e.response_code(),
            SandboxError::Unavailable => ResponseCode::InternalError,
        }
    }
}

impl From<actix::MailboxError> for SandboxError {
    fn from(_: actix::MailboxError) -> Self {
        SandboxError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageType;

    #[test]
    fn codes() {
        assert_eq!(BusError::Timeout.response_code().as_u16(), 408);
        assert_eq!(BusError::NoRoute("x".into()).response_code().as_u16(), 404);
        assert_eq!(
            BusError::Rejected(Rejection::blocked_by_policy())
                .response_code()
                .as_u16(),
            403
        );
        assert_eq!(BusError::Busy("x".into()).response_code().as_u16(), 429);
        assert_eq!(
            BusError::Unavailable("x".into()).response_code().as_u16(),
            500
        );
        assert_eq!(BusError::Invalid("x".into()).response_code().as_u16(), 400);
        assert_eq!(RegistryError::Full("t").response_code().as_u16(), 429);
        assert_eq!(SandboxError::Full(3).response_code().as_u16(), 429);
    }

    #[test]
    fn error_response_shape() {
        let req = Message::new(
            MessageType::Read,
            "hyperty://a/1".parse().unwrap(),
            "hyperty://a/2".parse::<crate::address::Address>().unwrap(),
        )
        .with_id(9);
        let r = error_response(&req, &BusError::Timeout);
        assert_eq!(r.id, 9);
        assert_eq!(r.code(), Some(ResponseCode::RequestTimeout));
        assert_eq!(r.body.description_text(), Some("Response timeout!"));
        let r = error_response(&req, &Rejection::blocked_by_policy());
        assert_eq!(r.body.description_text(), Some("Blocked by policy"));
    }
}
