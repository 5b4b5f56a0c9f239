//! Engine.IO 3 and Socket.IO 4 (socket.io 1.x/2.x) packets, as text.
//!
//! An Engine.IO packet is its type digit (`0` open, `1` close, `2` ping, `3` pong,
//! `4` message, `5` upgrade, `6` noop) followed by its data. Over a WebSocket each
//! text frame is one packet. Over polling a body is a *payload* of packets:
//!
//! * text (`b64=1`, or a `text/plain` POST): `<length>:<packet>` repeated, where each
//!   packet is UTF-8 encoded *into a string of byte values* first and the length
//!   counts those bytes (Engine.IO 3's `utf8encode`), the whole then sent as UTF-8;
//! * binary (`application/octet-stream`, the default answer to a client that has
//!   XHR2): per packet a `0` byte (a string packet), the decimal digits of its UTF-8
//!   length as byte values 0–9, `0xFF`, then its UTF-8 bytes.
//!
//! A Socket.IO packet rides in an Engine.IO message: its type digit (`0` connect,
//! `1` disconnect, `2` event, `3` ack, `4` error), an optional namespace
//! (`/nsp,`), an optional ack id (digits), then JSON data.

use serde_json::value::RawValue;

/// What is wrong with a packet or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PacketError {
    /// A payload's framing is broken.
    #[error("broken payload: {0}")]
    Payload(&'static str),
    /// A packet has no known type.
    #[error("unknown packet type")]
    Type,
    /// A Socket.IO packet's data is not what its type needs.
    #[error("broken socket.io packet: {0}")]
    Data(String),
}

/// An Engine.IO packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eio {
    Open,
    Close,
    Ping,
    Pong,
    Message,
    Upgrade,
    Noop,
}

/// One Engine.IO packet, borrowing its data.
pub(crate) fn eio(packet: &str) -> Result<(Eio, &str), PacketError> {
    let kind = match packet.as_bytes().first() {
        Some(b'0') => Eio::Open,
        Some(b'1') => Eio::Close,
        Some(b'2') => Eio::Ping,
        Some(b'3') => Eio::Pong,
        Some(b'4') => Eio::Message,
        Some(b'5') => Eio::Upgrade,
        Some(b'6') => Eio::Noop,
        _ => return Err(PacketError::Type),
    };
    Ok((kind, &packet[1..]))
}

/// Decodes a polling POST body into its packets (`binary`: an
/// `application/octet-stream` body).
pub(crate) fn decode_payload(body: &[u8], binary: bool) -> Result<Vec<String>, PacketError> {
    if binary {
        decode_binary(body)
    } else {
        let text = std::str::from_utf8(body).map_err(|_| PacketError::Payload("not UTF-8"))?;
        decode_text(text)
    }
}

fn decode_text(text: &str) -> Result<Vec<String>, PacketError> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_once(':')
            .ok_or(PacketError::Payload("missing length"))?;
        let n: usize = len
            .parse()
            .map_err(|_| PacketError::Payload("bad length"))?;
        // the packet is n characters, each standing for one byte of its UTF-8
        let mut bytes = Vec::with_capacity(n);
        let mut end = tail.len();
        for (count, (i, c)) in tail.char_indices().enumerate() {
            if count == n {
                end = i;
                break;
            }
            bytes.push(
                u8::try_from(u32::from(c)).map_err(|_| {
                    PacketError::Payload("a character above U+00FF in a text payload")
                })?,
            );
        }
        if bytes.len() != n {
            return Err(PacketError::Payload("packet shorter than its length"));
        }
        if n == 0 {
            return Err(PacketError::Payload("empty packet"));
        }
        out.push(String::from_utf8(bytes).map_err(|_| PacketError::Payload("packet not UTF-8"))?);
        rest = &tail[end..];
    }
    Ok(out)
}

fn decode_binary(mut body: &[u8]) -> Result<Vec<String>, PacketError> {
    let mut out = Vec::new();
    while let Some((&kind, tail)) = body.split_first() {
        if kind != 0 {
            return Err(PacketError::Payload("binary packets are not supported"));
        }
        let sep = tail
            .iter()
            .position(|&b| b == 0xFF)
            .ok_or(PacketError::Payload("missing length"))?;
        if sep == 0 || sep > 10 {
            return Err(PacketError::Payload("bad length"));
        }
        let mut n = 0usize;
        for &d in &tail[..sep] {
            if d > 9 {
                return Err(PacketError::Payload("bad length"));
            }
            n = n * 10 + usize::from(d);
        }
        let data = tail
            .get(sep + 1..sep + 1 + n)
            .ok_or(PacketError::Payload("packet shorter than its length"))?;
        let packet =
            std::str::from_utf8(data).map_err(|_| PacketError::Payload("packet not UTF-8"))?;
        out.push(packet.to_owned());
        body = &tail[sep + 1 + n..];
    }
    Ok(out)
}

/// Encodes packets as a text payload (for a `b64=1` poll).
pub(crate) fn encode_text(packets: &[String]) -> String {
    let mut out = String::new();
    for p in packets {
        out.push_str(&p.len().to_string());
        out.push(':');
        // each byte of the packet's UTF-8 becomes one character
        out.extend(p.bytes().map(char::from));
    }
    out
}

/// Encodes packets as a binary payload.
pub(crate) fn encode_binary(packets: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packets.iter().map(|p| p.len() + 12).sum());
    for p in packets {
        out.push(0);
        out.extend(p.len().to_string().bytes().map(|d| d - b'0'));
        out.push(0xFF);
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// A Socket.IO packet from a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sio<'a> {
    /// `0[/nsp]`: connect to a namespace (`None`: the default one).
    Connect(Option<&'a str>),
    /// `1`: the client leaves.
    Disconnect,
    /// `2[/nsp,][id]["message",<frame>]`: one reTHINK frame, as JSON text, and the
    /// ack id the client asked for.
    Message {
        nsp: Option<&'a str>,
        ack: Option<u64>,
        frame: String,
    },
    /// Any other event, or a packet type a client does not send.
    Other(String),
}

/// Parses the data of an Engine.IO message.
pub(crate) fn sio(data: &str) -> Result<Sio<'_>, PacketError> {
    let kind = data.as_bytes().first().ok_or(PacketError::Type)?;
    let mut rest = &data[1..];
    let mut nsp = None;
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        nsp = Some(&rest[..end]).filter(|n| *n != "/");
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = match digits {
        0 => None,
        _ => Some(
            rest[..digits]
                .parse::<u64>()
                .map_err(|_| PacketError::Data("ack id too large".to_owned()))?,
        ),
    };
    rest = &rest[digits..];
    match kind {
        b'0' => Ok(Sio::Connect(nsp)),
        b'1' => Ok(Sio::Disconnect),
        b'2' => {
            let args: Vec<&RawValue> = serde_json::from_str(rest)
                .map_err(|e| PacketError::Data(format!("event data is not a JSON array: {e}")))?;
            let name: Option<String> = args
                .first()
                .and_then(|n| serde_json::from_str(n.get()).ok());
            match (name.as_deref(), args.get(1)) {
                (Some("message"), Some(arg)) => {
                    let raw = arg.get();
                    let frame = if raw.starts_with('"') {
                        // the reference stub sends JSON.stringify(message)
                        serde_json::from_str::<String>(raw)
                            .map_err(|e| PacketError::Data(e.to_string()))?
                    } else {
                        raw.to_owned()
                    };
                    Ok(Sio::Message { nsp, ack, frame })
                }
                (Some("message"), None) => Err(PacketError::Data(
                    "a message event needs the message as its argument".to_owned(),
                )),
                (Some(other), _) => Ok(Sio::Other(format!(
                    "unknown event {other:?}: send reTHINK messages as \"message\" events"
                ))),
                (None, _) => Err(PacketError::Data("an event needs a name".to_owned())),
            }
        }
        b'3'..=b'6' => Ok(Sio::Other(
            "only connect, disconnect and message events are taken".to_owned(),
        )),
        _ => Err(PacketError::Type),
    }
}

/// The Engine.IO message carrying a reTHINK frame (JSON text) to the client.
pub(crate) fn message(frame: &str) -> String {
    let mut p = String::with_capacity(frame.len() + 14);
    p.push_str("42[\"message\",");
    p.push_str(frame);
    p.push(']');
    p
}

/// The Engine.IO message answering ack `id` with `value` (JSON text).
pub(crate) fn ack(id: u64, value: &str) -> String {
    format!("43{id}[{value}]")
}

/// The Engine.IO message carrying a Socket.IO error for namespace `nsp`.
pub(crate) fn error(nsp: Option<&str>, description: &str) -> String {
    let text = serde_json::Value::String(description.to_owned()).to_string();
    match nsp {
        Some(n) => format!("44{n},{text}"),
        None => format!("44{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_payloads_count_utf8_bytes_and_round_trip() {
        let packets = vec!["2".to_owned(), "42[\"message\",\"é\"]".to_owned()];
        let text = encode_text(&packets);
        assert!(text.starts_with("1:2"));
        assert!(text.contains("18:42"), "{text}");
        assert_eq!(decode_payload(text.as_bytes(), false).unwrap(), packets);
    }

    #[test]
    fn binary_payloads_round_trip() {
        let packets = vec!["40".to_owned(), "42[\"message\",{\"a\":\"ü\"}]".to_owned()];
        let bin = encode_binary(&packets);
        assert_eq!(&bin[..4], &[0, 2, 0xFF, b'4']);
        assert_eq!(decode_payload(&bin, true).unwrap(), packets);
    }

    #[test]
    fn broken_payloads_are_errors() {
        for bad in ["5:2", "x:2", "2", "0:", "3:4\u{100}x"] {
            assert!(decode_payload(bad.as_bytes(), false).is_err(), "{bad}");
        }
        assert!(decode_payload(&[0, 5, 0xFF, b'2'], true).is_err());
        assert!(decode_payload(&[1, 1, 0xFF, 0], true).is_err());
        assert!(decode_payload(&[0, 12, 0xFF, b'2'], true).is_err());
    }

    #[test]
    fn socketio_messages_carry_frames_and_ack_ids() {
        let f = r#"{"id":1}"#;
        assert_eq!(
            sio(r#"2["message","{\"id\":1}"]"#).unwrap(),
            Sio::Message {
                nsp: None,
                ack: None,
                frame: f.to_owned()
            }
        );
        assert_eq!(
            sio(r#"27["message",{"id":1}]"#).unwrap(),
            Sio::Message {
                nsp: None,
                ack: Some(7),
                frame: f.to_owned()
            }
        );
        assert_eq!(
            sio(r#"2/chat,3["message",{"id":1}]"#).unwrap(),
            Sio::Message {
                nsp: Some("/chat"),
                ack: Some(3),
                frame: f.to_owned()
            }
        );
        assert_eq!(sio("0").unwrap(), Sio::Connect(None));
        assert_eq!(sio("0/x").unwrap(), Sio::Connect(Some("/x")));
        assert_eq!(sio("1").unwrap(), Sio::Disconnect);
        assert!(matches!(sio(r#"2["other",1]"#).unwrap(), Sio::Other(_)));
        assert!(sio("2[").is_err());
        assert!(sio(r#"2["message"]"#).is_err());
        assert!(sio("9").is_err());
        assert_eq!(message(f), r#"42["message",{"id":1}]"#);
        assert_eq!(ack(7, f), r#"437[{"id":1}]"#);
        assert_eq!(
            error(Some("/x"), "Invalid namespace"),
            r#"44/x,"Invalid namespace""#
        );
    }
}
