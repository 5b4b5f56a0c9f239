//! The node's HTTP side: the transports that carry runtime sessions (raw
//! WebSocket, HTTP POST + long-poll, Socket.IO), the session core they share, and
//! the files it ships for browsers (the JavaScript client library and the demo).
//!
//! | module | what it is for |
//! |---|---|
//! | [`session`] | the session core: one runtime's session, whatever carries it |
//! | [`services`] | the node services a session may address |
//! | [`policy`] | the node's PEP on routed frames |
//! | [`refusal`] | how refused frames are answered |
//! | [`ws`] | raw WebSocket at `/ws` |
//! | [`http`] | HTTP POST + long-poll at `/http/…` |
//! | [`polling`] | the outbox of a polled session |
//! | [`socketio`] | Socket.IO (Engine.IO 3) at `/socket.io/` |
//! | [`inbound`] | the WebSocket frame reader with backpressure, rate and abuse accounts |
//! | [`assets`] | `GET /` (the demo) and `GET /client/hyperty.js` |

pub mod assets;
pub mod http;
pub mod inbound;
pub(crate) mod policy;
pub(crate) mod polling;
pub(crate) mod refusal;
pub(crate) mod services;
pub(crate) mod session;
pub mod socketio;
pub mod ws;
