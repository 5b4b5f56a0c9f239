#![doc = include_str!("../README.md")]
#![deny(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

pub use hyperty_actors as actors;

pub mod bridge;
pub mod catalogue;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod domain_registry;
pub mod error;
pub mod federation;
pub mod identity;
pub mod jsbox;
pub mod metrics;
pub mod node;
mod private_files;
pub mod qos;
pub mod runtime;
pub mod server;
pub mod ua;

pub use error::RuntimeError;
pub use runtime::{Runtime, RuntimeConfig, RuntimeHandle, StubHandle};

/// The names most applications need.
pub mod prelude {
    pub use crate::runtime::{Runtime, RuntimeConfig, RuntimeHandle};
    pub use hyperty_actors::prelude::*;
}
