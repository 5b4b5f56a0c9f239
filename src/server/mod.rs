//! The node's HTTP side: the WebSocket endpoint.

pub mod inbound;
pub mod ws;
