//! The node's HTTP side: the WebSocket endpoint and the JavaScript client library.

pub mod client;
pub mod inbound;
pub mod ws;
