//! Errors of the federation component.

use hyperty_actors::error::ToResponseCode;
use hyperty_actors::message::ResponseCode;

use crate::identity::IdentityError;

/// Why a peer could not be found, authenticated or linked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// Federation is switched off on this node.
    #[error("federation is disabled on this node")]
    Disabled,
    /// The domain is neither a configured peer nor discoverable.
    #[error("unknown domain {0}")]
    UnknownDomain(String),
    /// Discovery or a key fetch failed.
    #[error("domain {domain} unreachable: {reason}")]
    Unreachable {
        /// The peer domain.
        domain: String,
        /// Why.
        reason: String,
    },
    /// The peer's token (or its absence) did not prove its domain.
    #[error("peer {domain} not authenticated: {reason}")]
    Unauthenticated {
        /// The domain the peer claimed.
        domain: String,
        /// Why.
        reason: String,
    },
    /// A link to the peer exists and the tie-break keeps it.
    #[error("a link with {0} exists already")]
    LinkExists(String),
    /// Too many peers.
    #[error("at most {0} peer domains")]
    TooManyPeers(usize),
}

impl FederationError {
    pub(crate) fn unauthenticated(domain: &str, e: impl std::fmt::Display) -> Self {
        FederationError::Unauthenticated {
            domain: domain.to_owned(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn unreachable(domain: &str, e: impl std::fmt::Display) -> Self {
        FederationError::Unreachable {
            domain: domain.to_owned(),
            reason: e.to_string(),
        }
    }

    /// The key fetch failed as an authentication error (bad keys, bad token).
    pub(crate) fn from_identity(domain: &str, e: IdentityError) -> Self {
        Self::unauthenticated(domain, e)
    }
}

impl ToResponseCode for FederationError {
    fn response_code(&self) -> ResponseCode {
        match self {
            FederationError::Disabled | FederationError::UnknownDomain(_) => {
                ResponseCode::Forbidden
            }
            FederationError::Unreachable { .. } => ResponseCode::GatewayTimeout,
            FederationError::Unauthenticated { .. } => ResponseCode::Unauthorized,
            FederationError::LinkExists(_) => ResponseCode::Other(409),
            FederationError::TooManyPeers(_) => ResponseCode::Other(503),
        }
    }
}
