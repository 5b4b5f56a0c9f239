//! Errors of the event system.
//!
//! * [`EventError`]: what the application-level API raises (the spec's
//!   `WebinosEventException`: `INVALID_ARGUMENT_ERROR = 1`,
//!   `PERMISSION_DENIED_ERROR = 2`), plus resource and availability errors.
//! * [`EventParseError`]: why received data is not a valid event; the dispatcher
//!   turns it into an `invalid` delivery notification, never a panic.
//! * [`CacheError`]: failures of the durable Local Event Cache.

use crate::address::AddressError;
use crate::error::ToResponseCode;
use crate::message::ResponseCode;

/// `WebinosEventException.INVALID_ARGUMENT_ERROR`.
pub const INVALID_ARGUMENT_ERROR: u16 = 1;
/// `WebinosEventException.PERMISSION_DENIED_ERROR`.
pub const PERMISSION_DENIED_ERROR: u16 = 2;

/// An error raised to the application by the event API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The call's arguments are not acceptable (bad type, empty `to`, reserved type…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The caller may not do this (not the owner of the source, policy denial…).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A bounded table is full.
    #[error("event table '{0}' is full")]
    Full(&'static str),
    /// The Local Event Cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The dispatcher is not running.
    #[error("the event dispatcher is not running")]
    Unavailable,
}

impl EventError {
    /// The `WebinosEventException` code: 1 for invalid arguments, 2 for permission
    /// denials, 0 otherwise.
    pub fn code(&self) -> u16 {
        match self {
            EventError::InvalidArgument(_) => INVALID_ARGUMENT_ERROR,
            EventError::PermissionDenied(_) => PERMISSION_DENIED_ERROR,
            _ => 0,
        }
    }
}

impl From<EventParseError> for EventError {
    fn from(e: EventParseError) -> Self {
        EventError::InvalidArgument(e.to_string())
    }
}

impl From<actix::MailboxError> for EventError {
    fn from(_: actix::MailboxError) -> Self {
        EventError::Unavailable
    }
}

impl ToResponseCode for EventError {
    fn response_code(&self) -> ResponseCode {
        match self {
            EventError::InvalidArgument(_) => ResponseCode::BadRequest,
            EventError::PermissionDenied(_) => ResponseCode::Forbidden,
            EventError::Full(_) => ResponseCode::TooManyRequests,
            EventError::Cache(_) | EventError::Unavailable => ResponseCode::InternalError,
        }
    }
}

/// Why data is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventParseError {
    /// Not JSON.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("an event must be a JSON object")]
    NotAnObject,
    /// A required field is absent or null.
    #[error("missing field '{0}'")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("field '{field}' must be {expected}")]
    WrongType {
        /// The field path.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The type does not match `[_a-zA-Z][_a-zA-Z0-9]*`.
    #[error("field 'type' must match [_a-zA-Z][_a-zA-Z0-9]* (got {0:?})")]
    BadType(String),
    /// No primary recipient.
    #[error("field '{0}' must hold at least one recipient")]
    EmptyTo(&'static str),
    /// An entity is not a valid address.
    #[error("field '{field}' is not a valid address: {error}")]
    Address {
        /// The field path.
        field: String,
        /// What is wrong.
        error: AddressError,
    },
    /// A field that must hold an event id does not.
    #[error("field '{0}' must be 64 lowercase hexadecimal digits")]
    BadId(&'static str),
    /// The transmitted id is not the id of the event's content.
    #[error("id mismatch: the event's content hashes to {computed}, not {claimed}")]
    IdMismatch {
        /// The id carried by the event.
        claimed: String,
        /// The id recomputed from its content.
        computed: String,
    },
    /// More recipients than [`MAX_RECIPIENTS`](crate::events::model::MAX_RECIPIENTS).
    #[error("too many recipients ({0})")]
    TooManyRecipients(usize),
    /// A payload larger than [`MAX_PAYLOAD_LEN`](crate::events::model::MAX_PAYLOAD_LEN).
    #[error("payload too large ({0} bytes)")]
    PayloadTooLarge(usize),
    /// The event breaks the rules of a protocol the dispatcher handles itself
    /// (delivery notifications, RPC).
    #[error("{0}")]
    Protocol(String),
}

/// A failure of the Local Event Cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The database could not be opened (e.g. another process holds it).
    #[error("cannot open the event cache: {0}")]
    Open(String),
    /// A read or write failed.
    #[error("event cache storage error: {0}")]
    Storage(String),
    /// The cache holds its maximum number of events.
    #[error("the event cache is full ({0} events)")]
    Full(usize),
    /// The cache was closed.
    #[error("the event cache is closed")]
    Closed,
}

impl From<redb::Error> for CacheError {
    fn from(e: redb::Error) -> Self {
        CacheError::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CacheError {
            fn from(e: $t) -> Self {
                CacheError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_follow_the_webidl() {
        assert_eq!(EventError::InvalidArgument("x".into()).code(), 1);
        assert_eq!(EventError::PermissionDenied("x".into()).code(), 2);
        assert_eq!(EventError::Unavailable.code(), 0);
        assert_eq!(
            EventError::PermissionDenied("x".into())
                .response_code()
                .as_u16(),
            403
        );
        assert_eq!(EventError::Full("x").response_code().as_u16(), 429);
    }
}
