//! The node's HTTP side: the WebSocket endpoint and the files it ships for
//! browsers (the JavaScript client library and the demo page).

pub mod assets;
pub mod inbound;
pub mod ws;
