//! The protocol-stub API.
//!
//! A protocol stub connects a runtime to another domain or runtime over some
//! transport and translates between the bus and the wire (seed 003: every site picks
//! its own in-the-wire protocol). Writing one = writing an actor that handles
//! [`Connect`], [`Disconnect`] and [`Deliver`] (an outbound message to carry). It is
//! built with a [`StubContext`], through which it hands inbound messages to the bus
//! ([`StubContext::inject`]) and reports its status
//! (`created → in-progress → live → disconnected | failed`) as `update` messages to
//! `<stubURL>/status` ([`StubContext::report`]). It records its connectivity
//! statistics in [`StubContext::stats`] (see [`connectivity`](crate::connectivity)).
//!
//! ```
//! use hyperty_actors::prelude::*;
//!
//! /// A stub that answers everything with 404, as if the far side knew nobody.
//! struct Nowhere(StubContext);
//! impl Actor for Nowhere { type Context = Context<Self>; }
//! impl Handler<Connect> for Nowhere {
//!     type Result = Result<(), StubError>;
//!     fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
//!         self.0.report(StubStatus::Live, None);
//!         Ok(())
//!     }
//! }
//! impl Handler<Disconnect> for Nowhere {
//!     type Result = ();
//!     fn handle(&mut self, _: Disconnect, _: &mut Context<Self>) {
//!         self.0.report(StubStatus::Disconnected, Some("closed by the runtime"));
//!     }
//! }
//! impl Handler<Deliver> for Nowhere {
//!     type Result = ();
//!     fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
//!         if m.kind.expects_response() {
//!             self.0.inject(m.reply(ResponseCode::NotFound));
//!         }
//!     }
//! }
//! ```

use std::fmt;

use actix::prelude::*;
use serde_json::json;

use crate::address::Address;
use crate::bus::{Bus, Deliver};
use crate::connectivity::StubStats;
use crate::message::{Message, MessageType};

/// A stub's connection status, as reported on `<stubURL>/status` (serialised as
/// its wire value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StubStatus {
    /// Registered, not yet connecting.
    Created,
    /// Connecting or handshaking.
    InProgress,
    /// Connected; messages flow.
    #[serde(alias = "connected")]
    Live,
    /// Connection lost or closed (it may come back).
    Disconnected,
    /// Gave up.
    Failed,
}

impl StubStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            StubStatus::Created => "created",
            StubStatus::InProgress => "in-progress",
            StubStatus::Live => "live",
            StubStatus::Disconnected => "disconnected",
            StubStatus::Failed => "failed",
        }
    }

    /// Parses a wire value (`connected` is the Node stub's spelling of `live`).
    pub fn from_wire(s: &str) -> Option<StubStatus> {
        Some(match s {
            "created" => StubStatus::Created,
            "in-progress" => StubStatus::InProgress,
            "live" | "connected" => StubStatus::Live,
            "disconnected" => StubStatus::Disconnected,
            "failed" => StubStatus::Failed,
            _ => return None,
        })
    }
}

/// Errors of a protocol stub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StubError {
    /// Could not reach the far side.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The far side refused the handshake.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// The stub is not connected.
    #[error("not connected")]
    NotConnected,
}

/// Asks a stub to connect.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "Result<(), StubError>")]
pub struct Connect;

/// Asks a stub to disconnect.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Disconnect;

/// What a protocol stub is.
pub trait ProtoStub:
    Actor<Context = Context<Self>> + Handler<Deliver> + Handler<Connect> + Handler<Disconnect>
{
}
impl<T> ProtoStub for T where
    T: Actor<Context = Context<T>> + Handler<Deliver> + Handler<Connect> + Handler<Disconnect>
{
}

/// What a stub is given: its URL, the domain it serves and the bus.
#[derive(Clone)]
pub struct StubContext {
    url: Address,
    status: Address,
    domain: Option<String>,
    bus: Bus,
    stats: StubStats,
}

impl fmt::Debug for StubContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StubContext")
            .field("url", &self.url)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl StubContext {
    /// A context for the stub at `url` serving `domain` (`None`: the default stub).
    pub fn new(url: Address, domain: Option<String>, bus: Bus) -> StubContext {
        let status = url.join("status").unwrap_or_else(|_| url.clone());
        StubContext {
            url,
            status,
            domain,
            bus,
            stats: StubStats::new(),
        }
    }

    /// The stub's URL.
    pub fn url(&self) -> &Address {
        &self.url
    }

    /// `<stubURL>/status`.
    pub fn status_address(&self) -> &Address {
        &self.status
    }

    /// The domain it serves; `None` for the runtime's default stub.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The stub's connectivity statistics: what it records here, the registry
    /// reports (clones share the counters).
    pub fn stats(&self) -> &StubStats {
        &self.stats
    }

    /// Hands a message that arrived from the wire to the bus.
    pub fn inject(&self, msg: Message) {
        self.bus.inject(msg, &self.url);
    }

    /// Reports a status change as `update {value[,desc]}` to `<stubURL>/status`.
    pub fn report(&self, status: StubStatus, desc: Option<&str>) {
        let mut m = Message::new(MessageType::Update, self.url.clone(), self.status.clone())
            .with_value(json!(status.as_str()));
        if let Some(d) = desc {
            m.body.desc = Some(json!(d));
        }
        tracing::info!(stub = %self.url, status = status.as_str(), desc, "stub status");
        self.bus.send(m);
    }
}
