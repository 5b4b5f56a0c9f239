//! Errors of the domain registry and their reTHINK response codes.

use hyperty_actors::error::ToResponseCode;
use hyperty_actors::message::ResponseCode;

/// Why the domain registry refused or could not answer a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainRegistryError {
    /// A required field is absent (400).
    #[error("missing field '{0}'")]
    MissingField(String),
    /// A field has the wrong type or an unusable value (400).
    #[error("field '{field}' must be {expected}")]
    InvalidField {
        /// Field path, e.g. `value.resources`.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The message type is not one the registry handles (400).
    #[error("unsupported message type {0:?} (expected create, read, update or delete)")]
    UnsupportedType(String),
    /// No entry matches (404, wire description "Not Found").
    #[error("Not Found")]
    NotFound,
    /// Every matching entry is disconnected (408, wire description
    /// "Temporarily Unavailable").
    #[error("Temporarily Unavailable")]
    TemporarilyUnavailable,
    /// The caller may not make this change (403): not its address, not its
    /// identity, or an entry another session registered.
    #[error("{0}")]
    Forbidden(String),
    /// The caller (identity, or runtime if anonymous) already holds the most entries allowed (429).
    #[error("{owner} already has {limit} registry entries")]
    OwnerLimit {
        /// The identity or runtime URL the entries are held under.
        owner: String,
        /// `max_entries_per_user`.
        limit: usize,
    },
    /// The registry holds the most entries allowed (429).
    #[error("the domain registry is full ({limit} entries)")]
    Full {
        /// `max_entries`.
        limit: usize,
    },
    /// The configuration or the domain is unusable (500; only at construction).
    #[error("invalid domain registry configuration: {0}")]
    InvalidConfig(String),
    /// The Redis the domain's nodes share the registry through cannot be reached
    /// or did not answer in time (503); nothing was acknowledged.
    #[error("the shared domain registry is unreachable: {0}")]
    Shared(String),
    /// The registry actor is gone (500).
    #[error("the domain registry is unavailable")]
    Unavailable,
}

impl DomainRegistryError {
    pub(crate) fn missing(field: &str) -> Self {
        DomainRegistryError::MissingField(field.to_owned())
    }

    pub(crate) fn invalid(field: &str, expected: &'static str) -> Self {
        DomainRegistryError::InvalidField {
            field: field.to_owned(),
            expected,
        }
    }
}

impl ToResponseCode for DomainRegistryError {
    fn response_code(&self) -> ResponseCode {
        match self {
            DomainRegistryError::MissingField(_)
            | DomainRegistryError::InvalidField { .. }
            | DomainRegistryError::UnsupportedType(_) => ResponseCode::BadRequest,
            DomainRegistryError::Forbidden(_) => ResponseCode::Forbidden,
            DomainRegistryError::NotFound => ResponseCode::NotFound,
            DomainRegistryError::TemporarilyUnavailable => ResponseCode::RequestTimeout,
            DomainRegistryError::OwnerLimit { .. } | DomainRegistryError::Full { .. } => {
                ResponseCode::TooManyRequests
            }
            DomainRegistryError::Shared(_) => ResponseCode::ServiceUnavailable,
            DomainRegistryError::InvalidConfig(_) | DomainRegistryError::Unavailable => {
                ResponseCode::InternalError
            }
        }
    }
}

impl From<crate::cluster::ClusterError> for DomainRegistryError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        DomainRegistryError::Shared(e.to_string())
    }
}

impl From<actix::MailboxError> for DomainRegistryError {
    fn from(_: actix::MailboxError) -> Self {
        DomainRegistryError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts() {
        let cases = [
            (DomainRegistryError::missing("value.user"), 400),
            (DomainRegistryError::invalid("value.expires", "x"), 400),
            (
                DomainRegistryError::UnsupportedType("subscribe".into()),
                400,
            ),
            (DomainRegistryError::Forbidden("no".into()), 403),
            (DomainRegistryError::NotFound, 404),
            (DomainRegistryError::TemporarilyUnavailable, 408),
            (
                DomainRegistryError::OwnerLimit {
                    owner: "u".into(),
                    limit: 1,
                },
                429,
            ),
            (DomainRegistryError::Full { limit: 1 }, 429),
            (DomainRegistryError::Unavailable, 500),
            (DomainRegistryError::Shared("down".into()), 503),
        ];
        for (e, code) in cases {
            assert_eq!(e.response_code().as_u16(), code, "{e}");
        }
        assert_eq!(
            DomainRegistryError::missing("value.user").to_string(),
            "missing field 'value.user'"
        );
        assert_eq!(DomainRegistryError::NotFound.to_string(), "Not Found");
    }
}
