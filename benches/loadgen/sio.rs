//! Socket.IO over Engine.IO's WebSocket transport, just enough to load the node's
//! Socket.IO endpoint and a plain socket.io 4 server the way the raw WebSocket is
//! loaded: the engine handshake, keep-alive, and reTHINK messages as the `message`
//! event.
//!
//! | | Engine.IO 3 (the node, socket.io 1.x's dialect) | Engine.IO 4 (socket.io 4) |
//! |---|---|---|
//! | connect | `/socket.io/?EIO=3&transport=websocket` | `/socket.io/?EIO=4&transport=websocket&addr=<address>` |
//! | handshake | server: `0{sid,…,pingInterval}`, `40` | server: `0{sid,…,pingInterval}`; client: `40`; server: `40{"sid":…}` |
//! | keep-alive | the client pings (`2`) every `pingInterval`; server: `3` | the server pings (`2`); client: `3` |
//!
//! Both carry a message as `42["message",<message>]`: clients send its JSON text (as
//! the reference protostub does, `socket.send(JSON.stringify(m))`); the node delivers
//! the object, a relay that forwards the text delivers the text. [`delivered`] takes
//! either, parsing the packet once when it carries the object.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::client::{bounded, connect_ws, ClientWs, Probe};
use super::LoadError;

/// Which Engine.IO protocol a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// The node's `/socket.io/` (socket.io 1.x): the client pings.
    Eio3,
    /// socket.io 4: the server pings.
    Eio4,
}

/// An open Engine.IO session's keep-alive terms.
#[derive(Debug, Clone, Copy)]
pub(super) struct Engine {
    pub(super) dialect: Dialect,
    pub(super) ping_interval: Duration,
}

impl Engine {
    /// How often this client must ping, if it must (Engine.IO 3).
    pub(super) fn client_pings(&self) -> Option<Duration> {
        (self.dialect == Dialect::Eio3).then_some(self.ping_interval)
    }
}

/// One Engine.IO packet from the server, by what the client does with it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Packet<'a> {
    /// `42…`: a Socket.IO event; the JSON array after `42`.
    Event(&'a str),
    /// `2`: answer `3`.
    Ping,
    /// `3`, `6`, `40…`: nothing to do.
    Quiet,
    /// `1`, `41`: the server ends the session.
    Close,
    /// `44…` (a Socket.IO error) or anything else.
    Other,
}

/// What kind of packet `text` is.
pub(super) fn packet(text: &str) -> Packet<'_> {
    if let Some(args) = text.strip_prefix("42") {
        return Packet::Event(args);
    }
    match text {
        "2" => Packet::Ping,
        "3" | "6" => Packet::Quiet,
        "1" | "41" => Packet::Close,
        t if t.starts_with("40") => Packet::Quiet,
        _ => Packet::Other,
    }
}

/// True for the engine's own packets (pings, pongs, noops): what a connection nobody
/// expects messages on may still receive.
pub(super) fn is_engine_packet(text: &str) -> bool {
    matches!(packet(text), Packet::Ping | Packet::Quiet)
}

/// `42["message","<text>"]`: the message event carrying `text` as a JSON string.
pub(super) fn event(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8 + 16);
    out.extend_from_slice(br#"42["message","#);
    // Writing a &str as JSON to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, text);
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}

/// A delivered `message` event's argument.
pub(super) enum Delivered<'a> {
    /// The message as an object, already read as a [`Probe`].
    Probe(Probe<'a>),
    /// The message as JSON text, still to be read.
    Text(String),
    /// Not a `message` event with one message.
    Bad,
}

/// Reads the arguments of a `42` packet (`["message",<message or its text>]`).
pub(super) fn delivered(args: &str) -> Delivered<'_> {
    match serde_json::from_str::<(&str, Probe<'_>)>(args) {
        Ok(("message", probe)) => return Delivered::Probe(probe),
        Ok(_) => return Delivered::Bad,
        Err(_) => {}
    }
    match serde_json::from_str::<(&str, String)>(args) {
        Ok(("message", text)) => Delivered::Text(text),
        _ => Delivered::Bad,
    }
}

/// The reTHINK message a text frame carries as a `message` event, as JSON text.
pub(super) fn message_text(frame: &str) -> Option<Cow<'_, str>> {
    let Packet::Event(args) = packet(frame) else {
        return None;
    };
    let (name, arg) = serde_json::from_str::<(&str, &RawValue)>(args).ok()?;
    if name != "message" {
        return None;
    }
    if arg.get().starts_with('"') {
        serde_json::from_str::<String>(arg.get())
            .ok()
            .map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(arg.get()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handshake {
    ping_interval: u64,
}

/// Escapes a query parameter value.
fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Connects to the Socket.IO server at `origin` (`ws://host:port`) and waits until
/// the session is connected to the main namespace. With `addr`, the connection
/// names it as `&addr=` (socket.io 4 relay: the room it joins).
pub(super) async fn connect(
    origin: &str,
    dialect: Dialect,
    addr: Option<&str>,
    config: Option<WebSocketConfig>,
    until: Instant,
) -> Result<(ClientWs, Engine), LoadError> {
    let eio = match dialect {
        Dialect::Eio3 => 3,
        Dialect::Eio4 => 4,
    };
    let mut url = format!(
        "{}/socket.io/?EIO={eio}&transport=websocket",
        origin.trim_end_matches('/')
    );
    if let Some(a) = addr {
        url.push_str("&addr=");
        url.push_str(&query_value(a));
    }
    let mut ws = connect_ws(&url, config, until).await?;
    let what = format!("Socket.IO handshake with {url}");
    let lost = |reason: String| LoadError::Lost {
        what: what.clone(),
        reason,
    };
    let handshake = async {
        let open = next_text(&mut ws).await.map_err(&lost)?;
        let hs = open
            .strip_prefix('0')
            .and_then(|j| serde_json::from_str::<Handshake>(j).ok())
            .ok_or_else(|| lost(format!("expected an open packet 0{{…}}, got {open:?}")))?;
        if dialect == Dialect::Eio4 {
            ws.send(Message::text("40"))
                .await
                .map_err(|e| lost(e.to_string()))?;
        }
        // Bounded by the timeout around this block.
        loop {
            let p = next_text(&mut ws).await.map_err(&lost)?;
            match packet(&p) {
                _ if p.starts_with("40") => break,
                Packet::Ping => ws
                    .send(Message::text("3"))
                    .await
                    .map_err(|e| lost(e.to_string()))?,
                Packet::Quiet => {}
                _ => return Err(lost(format!("expected 40, got {p:?}"))),
            }
        }
        Ok(Engine {
            dialect,
            ping_interval: Duration::from_millis(hs.ping_interval.max(1)),
        })
    };
    let engine = bounded(until, &what, handshake).await?;
    Ok((ws, engine))
}

/// The next text frame.
async fn next_text(ws: &mut ClientWs) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(_))) | None => return Err("closed by peer".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_packets_and_both_forms_of_a_message() {
        assert_eq!(packet("2"), Packet::Ping);
        assert_eq!(packet("40{\"sid\":\"x\"}"), Packet::Quiet);
        assert_eq!(packet("41"), Packet::Close);
        assert_eq!(packet("44\"no\""), Packet::Other);
        let m = r#"{"id":3,"to":"a","body":{"value":{"ts":7}}}"#;
        let text = event(m);
        let Packet::Event(args) = packet(&text) else {
            panic!("{text}")
        };
        assert!(matches!(delivered(args), Delivered::Text(t) if t == m));
        let object = format!(r#"["message",{m}]"#);
        assert!(matches!(delivered(&object), Delivered::Probe(p) if p.id == 3 && p.to == "a"));
        assert!(matches!(delivered(r#"["other",{}]"#), Delivered::Bad));
        assert_eq!(message_text(&text).as_deref(), Some(m));
        assert_eq!(message_text(&format!("42{object}")).as_deref(), Some(m));
    }
}
