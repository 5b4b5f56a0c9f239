//! Errors of the identity provider and the identity module, and their reTHINK
//! response codes (also used as HTTP status codes).
//!
//! Error texts never contain a password, a device secret or a token.

use hyperty_actors::error::ToResponseCode;
use hyperty_actors::message::ResponseCode;

/// Why an identity operation was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A required field is absent (400).
    #[error("missing field '{0}'")]
    MissingField(String),
    /// A field has the wrong type or an unusable value (400).
    #[error("field '{field}' must be {expected}")]
    InvalidField {
        /// Field path, e.g. `params.hyperty`.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The message type or `execute` method is not one this component handles (400).
    #[error("unsupported request: {0}")]
    Unsupported(String),
    /// A user with that name is registered already (409).
    #[error("user {0} already exists")]
    UserExists(String),
    /// Unknown user, wrong password, unknown device or wrong device secret (401).
    /// Deliberately says no more.
    #[error("invalid credentials")]
    BadCredentials,
    /// The token is not a well-formed JWT, or its signature does not verify (401).
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The token's `alg` is not EdDSA (401): `none`, HMAC and RSA tokens are refused.
    #[error("token algorithm {0} is not accepted (EdDSA only)")]
    UnsupportedAlgorithm(String),
    /// No key with the token's `kid` is known for its issuer (401).
    #[error("no signing key '{0}' is known for this issuer")]
    UnknownKey(String),
    /// The token has expired (401).
    #[error("token expired")]
    Expired,
    /// The token is not valid yet (`nbf` or `iat` in the future) (401).
    #[error("token not valid yet")]
    NotYetValid,
    /// The token was issued by someone else (401).
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// The token is meant for someone else (401).
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The token is of another kind (e.g. an identity assertion presented as an ID
    /// token) (401).
    #[error("expected a {expected} token, got a {found} token")]
    WrongTokenUse {
        /// The kind wanted.
        expected: &'static str,
        /// The kind presented.
        found: &'static str,
    },
    /// The assertion does not match the identity or hyperty it is presented for (401).
    #[error("identity mismatch: {0}")]
    IdentityMismatch(&'static str),
    /// The message carries no identity assertion (401).
    #[error("no identity assertion")]
    NoAssertion,
    /// The identity module holds no valid login of this user (401).
    #[error("user {0} is not logged in at this runtime")]
    NotLoggedIn(String),
    /// The identity provider is not trusted: no endpoint is configured for it and
    /// unlisted providers are not discovered (401).
    #[error("unknown identity provider {0}")]
    UnknownIdp(String),
    /// The identity provider could not be reached or answered nonsense (504).
    #[error("identity provider {idp} is unreachable: {reason}")]
    IdpUnreachable {
        /// The provider's domain.
        idp: String,
        /// What went wrong (no secrets).
        reason: String,
    },
    /// The keys of the issuer are not in the cache; the synchronous verifier never
    /// fetches (401). A fetch has been requested in the background.
    #[error("signing keys of identity provider {0} are not cached")]
    KeysNotCached(String),
    /// Nothing is bound or registered under that name (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// A bounded table is full (429).
    #[error("{table} is full ({limit} entries)")]
    Full {
        /// Which table.
        table: &'static str,
        /// Its limit.
        limit: usize,
    },
    /// Too many password hashes are being computed at once (429).
    #[error("too many concurrent credential checks, try again later")]
    Busy,
    /// Too many failed logins for this account from this source, or from this
    /// source (429); the caller may try again after the given time.
    #[error("too many failed logins, retry after {retry_after_secs} s")]
    Throttled {
        /// Seconds to wait before the next attempt is considered.
        retry_after_secs: u64,
    },
    /// The token is valid but does not allow this operation (403), e.g. deleting
    /// another user's device.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The token's user or device has been deleted (401).
    #[error("the token's subject has been revoked")]
    Revoked,
    /// The identity store could not be read or written (500).
    #[error("identity store error: {0}")]
    Store(String),
    /// The key file could not be read or written (500).
    #[error("key store error: {0}")]
    KeyStore(String),
    /// The configuration is unusable (500; only at construction).
    #[error("invalid identity configuration: {0}")]
    InvalidConfig(String),
    /// Signing, hashing or another internal step failed (500).
    #[error("internal identity error: {0}")]
    Internal(&'static str),
    /// The actor is gone (500).
    #[error("the identity component is unavailable")]
    Unavailable,
    /// The Redis the domain's nodes share the provider through cannot be reached
    /// (503).
    #[error("the shared identity store is unreachable: {0}")]
    Shared(String),
}

impl IdentityError {
    pub(crate) fn missing(field: &str) -> Self {
        IdentityError::MissingField(field.to_owned())
    }

    pub(crate) fn invalid(field: &str, expected: &'static str) -> Self {
        IdentityError::InvalidField {
            field: field.to_owned(),
            expected,
        }
    }

    /// True for errors that say a credential (password, token, assertion) is bad,
    /// as opposed to malformed input, full tables or unavailable components.
    pub fn is_credential_error(&self) -> bool {
        self.response_code() == ResponseCode::Unauthorized
    }
}

impl ToResponseCode for IdentityError {
    fn response_code(&self) -> ResponseCode {
        use IdentityError::*;
        match self {
            MissingField(_) | InvalidField { .. } | Unsupported(_) => ResponseCode::BadRequest,
            UserExists(_) => ResponseCode::Other(409),
            BadCredentials
            | InvalidToken(_)
            | UnsupportedAlgorithm(_)
            | UnknownKey(_)
            | Expired
            | NotYetValid
            | WrongIssuer
            | WrongAudience
            | WrongTokenUse { .. }
            | IdentityMismatch(_)
            | NoAssertion
            | NotLoggedIn(_)
            | UnknownIdp(_)
            | KeysNotCached(_)
            | Revoked => ResponseCode::Unauthorized,
            Forbidden(_) => ResponseCode::Forbidden,
            IdpUnreachable { .. } => ResponseCode::GatewayTimeout,
            NotFound(_) => ResponseCode::NotFound,
            Full { .. } | Busy | Throttled { .. } => ResponseCode::TooManyRequests,
            Shared(_) => ResponseCode::ServiceUnavailable,
            KeyStore(_) | Store(_) | InvalidConfig(_) | Internal(_) | Unavailable => {
                ResponseCode::InternalError
            }
        }
    }
}

impl From<crate::cluster::ClusterError> for IdentityError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        IdentityError::Shared(e.to_string())
    }
}

impl From<actix::MailboxError> for IdentityError {
    fn from(_: actix::MailboxError) -> Self {
        IdentityError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let cases = [
            (IdentityError::missing("params"), 400),
            (IdentityError::invalid("username", "x"), 400),
            (IdentityError::Unsupported("read".into()), 400),
            (IdentityError::UserExists("alice".into()), 409),
            (IdentityError::BadCredentials, 401),
            (IdentityError::InvalidToken("bad signature"), 401),
            (IdentityError::UnsupportedAlgorithm("HS256".into()), 401),
            (IdentityError::Expired, 401),
            (IdentityError::WrongIssuer, 401),
            (IdentityError::WrongAudience, 401),
            (IdentityError::UnknownIdp("x.org".into()), 401),
            (IdentityError::KeysNotCached("x.org".into()), 401),
            (
                IdentityError::IdpUnreachable {
                    idp: "x".into(),
                    reason: "y".into(),
                },
                504,
            ),
            (IdentityError::NotFound("h".into()), 404),
            (
                IdentityError::Full {
                    table: "users",
                    limit: 1,
                },
                429,
            ),
            (IdentityError::Busy, 429),
            (
                IdentityError::Throttled {
                    retry_after_secs: 2,
                },
                429,
            ),
            (IdentityError::Forbidden("not yours"), 403),
            (IdentityError::Revoked, 401),
            (IdentityError::Store("x".into()), 500),
            (IdentityError::KeyStore("x".into()), 500),
            (IdentityError::Unavailable, 500),
            (IdentityError::Shared("down".into()), 503),
        ];
        for (e, code) in cases {
            assert_eq!(e.response_code().as_u16(), code, "{e}");
        }
        assert!(IdentityError::Expired.is_credential_error());
        assert!(!IdentityError::Busy.is_credential_error());
    }
}
