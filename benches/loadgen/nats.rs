//! A NATS client over WebSocket, just enough to load nats-server the way the node is
//! loaded: `CONNECT` with user and password, `SUB`, `PUB`, and reading `MSG`s.
//!
//! nats-server's WebSocket listener (`websocket { … no_tls: true }`) carries the NATS
//! text protocol in binary frames: the client writes one `PUB` per frame (as the node's
//! clients write one reTHINK message per frame); the server may put several `MSG`s in
//! one frame, or split one over frames, so [`MsgReader`] reassembles them.

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::client::{ClientWs, HANDSHAKE_TIMEOUT};
use super::LoadError;

/// The credentials a nats-server was started with.
#[derive(Debug, Clone)]
pub struct NatsAuth {
    pub user: String,
    pub password: String,
}

#[derive(Serialize)]
struct Connect<'a> {
    verbose: bool,
    pedantic: bool,
    user: &'a str,
    pass: &'a str,
    lang: &'static str,
    version: &'static str,
    protocol: u8,
    headers: bool,
}

/// What one read of a NATS connection gave.
pub(super) enum Event<'a> {
    /// The payload of one `MSG`.
    Msg(&'a [u8]),
    /// The server sent `-ERR`.
    Err(String),
}

/// Reassembles the server's protocol lines and `MSG` payloads from WebSocket frames.
#[derive(Default)]
pub(super) struct MsgReader {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    at: usize,
    /// `PING`s seen since the last call to [`MsgReader::take_pings`].
    pings: usize,
}

impl MsgReader {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 0 && self.at * 2 > self.buf.len() {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole `MSG` or `-ERR`, skipping `INFO`, `+OK`, `PONG` and counting
    /// `PING`s; `None` once the buffer holds no whole one.
    pub(super) fn next_event(&mut self) -> Option<Event<'_>> {
        loop {
            let rest = &self.buf[self.at..];
            let eol = rest.windows(2).position(|w| w == b"\r\n")?;
            let line = &rest[..eol];
            if let Some(args) = line.strip_prefix(b"MSG ") {
                let size = std::str::from_utf8(args)
                    .ok()
                    .and_then(|a| a.rsplit(' ').next())
                    .and_then(|s| s.parse::<usize>().ok());
                let Some(size) = size else {
                    let e = String::from_utf8_lossy(line).into_owned();
                    self.at = self.buf.len();
                    return Some(Event::Err(format!("bad MSG line {e:?}")));
                };
                let start = self.at + eol + 2;
                if self.buf.len() < start + size + 2 {
                    return None;
                }
                self.at = start + size + 2;
                return Some(Event::Msg(&self.buf[start..start + size]));
            }
            let line_text = String::from_utf8_lossy(line).into_owned();
            self.at += eol + 2;
            if line_text.starts_with("-ERR") {
                return Some(Event::Err(line_text));
            }
            if line_text == "PING" {
                self.pings += 1;
            }
        }
    }

    pub(super) fn take_pings(&mut self) -> usize {
        std::mem::take(&mut self.pings)
    }
}

/// One `PUB` of `payload` to `subject`, as a frame.
pub(super) fn publish(subject: &str, payload: &str) -> Message {
    Message::binary(format!("PUB {subject} {}\r\n{payload}\r\n", payload.len()))
}

/// Connects, authenticates and, with `subscribe`, subscribes to that subject; every
/// step is confirmed by a `PONG` before this returns.
pub(super) async fn connect(
    url: &str,
    auth: &NatsAuth,
    subscribe: Option<&str>,
    config: Option<WebSocketConfig>,
    deadline: Instant,
) -> Result<(ClientWs, MsgReader), LoadError> {
    let until = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
    let what = format!("NATS connect to {url}");
    let timed_out = || LoadError::Timeout {
        what: what.clone(),
        after: HANDSHAKE_TIMEOUT,
    };
    let lost = |reason: String| LoadError::Lost {
        what: what.clone(),
        reason,
    };
    let (mut ws, _) = timeout_at(
        until,
        tokio_tungstenite::connect_async_with_config(url, config, true),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| LoadError::Connect {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    let connect = serde_json::to_string(&Connect {
        verbose: false,
        pedantic: false,
        user: &auth.user,
        pass: &auth.password,
        lang: "rust",
        version: "0",
        protocol: 1,
        headers: false,
    })
    .map_err(|e| lost(e.to_string()))?;
    let mut hello = format!("CONNECT {connect}\r\n");
    if let Some(subject) = subscribe {
        hello.push_str(&format!("SUB {subject} 1\r\n"));
    }
    hello.push_str("PING\r\n");
    ws.send(Message::binary(hello))
        .await
        .map_err(|e| lost(e.to_string()))?;
    let mut reader = MsgReader::default();
    // Bounded by `until`: the server answers the PING with PONG, or -ERR and closes.
    loop {
        let frame = timeout_at(until, ws.next())
            .await
            .map_err(|_| timed_out())?;
        let bytes = match frame {
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Close(_))) | None => return Err(lost("closed by server".into())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(lost(e.to_string())),
        };
        if bytes.windows(6).any(|w| w == b"PONG\r\n") {
            // the handshake's replies carry no MSG
            return Ok((ws, reader));
        }
        reader.push(&bytes);
        if let Some(Event::Err(e)) = reader.next_event() {
            return Err(LoadError::Rejected {
                what,
                code: "-ERR".into(),
                frame: e,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Event, MsgReader};

    #[test]
    fn reassembles_messages_split_over_frames() {
        let mut r = MsgReader::default();
        r.push(b"INFO {}\r\nMSG a.b 1 5\r\nhel");
        assert!(r.next_event().is_none());
        r.push(b"lo\r\nPING\r\nMSG a.b 1 2\r\nhi\r\n");
        assert!(matches!(r.next_event(), Some(Event::Msg(b"hello"))));
        assert!(matches!(r.next_event(), Some(Event::Msg(b"hi"))));
        assert!(r.next_event().is_none());
        assert_eq!(r.take_pings(), 1);
        r.push(b"-ERR 'Authorization Violation'\r\n");
        assert!(matches!(r.next_event(), Some(Event::Err(_))));
    }
}
