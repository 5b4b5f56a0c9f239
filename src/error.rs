//! Top-level errors of the `hyperty` crate.

use hyperty_actors::address::AddressError;
use hyperty_actors::error::{BusError, RegistryError, SandboxError, ToResponseCode};
use hyperty_actors::events::EventError;
use hyperty_actors::message::ResponseCode;
use hyperty_actors::policy::PolicyError;
use hyperty_actors::protostub::StubError;

/// Errors of the runtime wiring.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration names an invalid address or domain.
    #[error("invalid address: {0}")]
    Address(#[from] AddressError),
    /// The registry refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The sandbox refused.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A protocol stub failed.
    #[error(transparent)]
    Stub(#[from] StubError),
    /// The bus refused.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The identity module refused (e.g. binding a user who is not logged in).
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The event system refused or could not start (e.g. its cache database).
    #[error(transparent)]
    Events(#[from] EventError),
    /// A deployment was refused: its package does not match its descriptor, or
    /// the descriptor names no known factory.
    #[error(transparent)]
    Integrity(#[from] hyperty_actors::catalogue::IntegrityError),
    /// A runtime component stopped.
    #[error("runtime component {0} is not running")]
    Unavailable(&'static str),
    /// The policy configuration or files are invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The Syncher refused or could not start (e.g. its store).
    #[error(transparent)]
    Sync(#[from] hyperty_actors::syncher::SyncError),
}

impl ToResponseCode for RuntimeError {
    fn response_code(&self) -> ResponseCode {
        match self {
            RuntimeError::Address(_) => ResponseCode::BadRequest,
            RuntimeError::Registry(e) => e.response_code(),
            RuntimeError::Sandbox(e) => e.response_code(),
            RuntimeError::Bus(e) => e.response_code(),
            RuntimeError::Sync(e) => e.code(),
            RuntimeError::Events(e) => e.response_code(),
            RuntimeError::Stub(_) => ResponseCode::GatewayTimeout,
            RuntimeError::Identity(e) => e.response_code(),
            RuntimeError::Integrity(e) => e.response_code(),
            RuntimeError::Unavailable(_) => ResponseCode::InternalError,
            RuntimeError::Policy(e) => e.response_code(),
        }
    }
}
