//! Client side shared by both runs: session handshakes, frame building, timing and
//! percentiles.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{sio, LatencyStats, LoadError, Params};

/// Time allowed for one TCP connect + WebSocket upgrade + `open` (or `/sm` subscribe).
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for sending a Close frame at the end of a run.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Length of `{"ts":` + `,"pad":"` + `"}` inside `body.value`.
const VALUE_OVERHEAD: usize = 16;

pub(super) type ClientWs = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(super) type ClientSink = SplitSink<ClientWs, Message>;

/// The process-wide time origin all send stamps are taken from.
fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

pub(super) fn now_ns() -> u64 {
    u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn ns_u32(ns: u64) -> u32 {
    u32::try_from(ns).unwrap_or(u32::MAX)
}

/// Nearest-rank percentiles of nanosecond samples.
pub(super) fn latency_stats(mut ns: Vec<u32>) -> LatencyStats {
    let Some(&max) = ns.iter().max() else {
        return LatencyStats::default();
    };
    ns.sort_unstable();
    let len = ns.len();
    let at = |q: f64| {
        let rank = ((q * len as f64).ceil() as usize).clamp(1, len);
        f64::from(ns[rank - 1]) / 1_000.0
    };
    LatencyStats {
        samples: len as u64,
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: f64::from(max) / 1_000.0,
    }
}

/// Accepts `ws://` (and `http://`) URLs whose host is a loopback address or `localhost`.
pub fn check_loopback(url: &str) -> Result<(), LoadError> {
    let bad = |reason: &str| LoadError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    if !matches!(uri.scheme_str(), Some("ws" | "http")) {
        return Err(bad("only ws:// and http:// are supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(LoadError::NotLoopback {
            host: host.to_string(),
        })
    }
}

/// A run-unique tag, so runtime URLs and resources never collide with an earlier run
/// against the same node.
pub(super) fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// `runtime://D/<tag><role><index>`: fixed width, so no URL is a string prefix of another.
pub(super) fn runtime_url(domain: &str, tag: &str, role: char, index: usize) -> String {
    format!("runtime://{domain}/{tag}{role}{index:05}")
}

/// Builds `update` frames whose `body.value` is `{"ts":<ns>,"pad":"x…"}` of `size` bytes.
pub(super) struct FrameBuilder {
    /// `,"type":"update","from":"…","to":"…","body":{"value":{"ts":`
    middle: String,
    pad: String,
}

impl FrameBuilder {
    pub(super) fn new(from: &str, to: &str, size: usize) -> Self {
        let middle = format!(
            r#","type":"update","from":{},"to":{},"body":{{"value":{{"ts":"#,
            serde_json::Value::from(from),
            serde_json::Value::from(to),
        );
        Self {
            middle,
            pad: "x".repeat(size),
        }
    }

    pub(super) fn frame(&self, id: u64, ts: u64) -> String {
        let ts_digits = ts.checked_ilog10().unwrap_or(0) as usize + 1;
        let pad = self.pad.len().saturating_sub(VALUE_OVERHEAD + ts_digits);
        let mut s = String::with_capacity(self.middle.len() + self.pad.len() + 40);
        let _ = write!(s, r#"{{"id":{id}"#);
        s.push_str(&self.middle);
        let _ = write!(s, r#"{ts},"pad":""#);
        s.push_str(&self.pad[..pad]);
        s.push_str(r#""}}}"#);
        s
    }
}

/// The fields a receiver reads from a delivered frame.
#[derive(Deserialize)]
pub(super) struct Probe<'a> {
    pub(super) id: u64,
    #[serde(borrow)]
    pub(super) to: Cow<'a, str>,
    pub(super) body: ProbeBody,
}

#[derive(Deserialize)]
pub(super) struct ProbeBody {
    pub(super) value: ProbeValue,
}

#[derive(Deserialize)]
pub(super) struct ProbeValue {
    pub(super) ts: u64,
}

/// The fields of a reply a handshake step waits for.
#[derive(Deserialize)]
struct ReplyProbe {
    id: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    body: Option<serde_json::Value>,
}

/// How reTHINK messages travel on a WebSocket: one per text frame (`/ws`), or as the
/// `message` event of Socket.IO (`42["message",<message as JSON text>]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    Raw,
    SocketIo,
}

impl Wire {
    /// The frame carrying the message `text`.
    pub(super) fn wrap(self, text: String) -> Message {
        match self {
            Wire::Raw => Message::text(text),
            Wire::SocketIo => Message::text(sio::event(&text)),
        }
    }

    /// The message a text frame carries, if it carries one.
    fn unwrap(self, frame: &str) -> Option<Cow<'_, str>> {
        match self {
            Wire::Raw => Some(Cow::Borrowed(frame)),
            Wire::SocketIo => sio::message_text(frame),
        }
    }
}

/// Opens a WebSocket to `url`, bounded by `until`.
pub(super) async fn connect_ws(
    url: &str,
    config: Option<WebSocketConfig>,
    until: Instant,
) -> Result<ClientWs, LoadError> {
    let what = format!("connect to {url}");
    let (ws, _) = timeout_at(
        until,
        tokio_tungstenite::connect_async_with_config(url, config, true),
    )
    .await
    .map_err(|_| LoadError::Timeout {
        what,
        after: HANDSHAKE_TIMEOUT,
    })?
    .map_err(|e| LoadError::Connect {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    Ok(ws)
}

/// The `open` of a session for `runtime_url` (id 1), with `p.token` if there is one.
pub(super) fn open_message(runtime_url: &str, p: &Params) -> serde_json::Value {
    let mut open = serde_json::json!({
        "id": 1, "type": "open", "from": runtime_url, "to": "mn:/session",
    });
    if let Some(token) = &p.token {
        open["body"] = serde_json::json!({ "token": token });
    }
    open
}

/// The subscription (id 2) of `runtime_url` to `resource` through `domain://msg-node.D/sm`.
pub(super) fn subscribe_message(
    runtime_url: &str,
    resource: &str,
    p: &Params,
) -> serde_json::Value {
    serde_json::json!({
        "id": 2, "type": "subscribe", "from": format!("{runtime_url}/sm"),
        "to": format!("domain://msg-node.{}/sm", p.domain),
        "body": { "resources": [resource] },
    })
}

/// Connects, sends `open` for `runtime_url` and waits for its 200.
pub(super) async fn open_session(
    url: &str,
    runtime_url: &str,
    p: &Params,
    config: Option<WebSocketConfig>,
    deadline: Instant,
) -> Result<ClientWs, LoadError> {
    let until = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
    let mut ws = connect_ws(url, config, until).await?;
    open_session_on(&mut ws, Wire::Raw, url, runtime_url, p, until).await?;
    Ok(ws)
}

/// Sends `open` for `runtime_url` on a connected `ws` and waits for its 200.
pub(super) async fn open_session_on(
    ws: &mut ClientWs,
    wire: Wire,
    url: &str,
    runtime_url: &str,
    p: &Params,
    until: Instant,
) -> Result<(), LoadError> {
    let what = format!("open of {runtime_url} on {url}");
    request(ws, wire, open_message(runtime_url, p), 1, &what, until).await
}

/// Subscribes an opened session to `resource` through `domain://msg-node.D/sm`.
pub(super) async fn subscribe(
    mut ws: ClientWs,
    url: &str,
    runtime_url: &str,
    resource: &str,
    p: &Params,
    deadline: Instant,
) -> Result<ClientWs, LoadError> {
    subscribe_on(&mut ws, Wire::Raw, url, runtime_url, resource, p, deadline).await?;
    Ok(ws)
}

/// [`subscribe`] on `ws` speaking `wire`.
pub(super) async fn subscribe_on(
    ws: &mut ClientWs,
    wire: Wire,
    url: &str,
    runtime_url: &str,
    resource: &str,
    p: &Params,
    deadline: Instant,
) -> Result<(), LoadError> {
    let (until, what, msg) = subscribe_step(url, runtime_url, resource, p, deadline);
    request(ws, wire, msg, 2, &what, until).await
}

/// A subscription step: its time limit, its description and the message (id 2).
pub(super) fn subscribe_step(
    url: &str,
    runtime_url: &str,
    resource: &str,
    p: &Params,
    deadline: Instant,
) -> (Instant, String, serde_json::Value) {
    let until = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
    let what = format!("subscribe of {runtime_url} to {resource} on {url}");
    (until, what, subscribe_message(runtime_url, resource, p))
}

/// Runs the handshake step `what` until `until`, then gives up with a timeout.
pub(super) async fn bounded<T>(
    until: Instant,
    what: &str,
    step: impl std::future::Future<Output = Result<T, LoadError>>,
) -> Result<T, LoadError> {
    let left = until.saturating_duration_since(Instant::now());
    timeout_at(until, step)
        .await
        .map_err(|_| LoadError::Timeout {
            what: what.to_string(),
            after: left,
        })?
}

/// What a frame says about the request `id`: `None` if it is not its response,
/// `Some(Ok)` for a 200, `Some(Err(Rejected))` for any other code.
pub(super) fn check_reply(text: &str, id: u64, what: &str) -> Option<Result<(), LoadError>> {
    let reply = serde_json::from_str::<ReplyProbe>(text).ok()?;
    let id_matches = reply
        .id
        .as_ref()
        .is_some_and(|v| v.as_u64() == Some(id) || v.as_str() == Some(id.to_string().as_str()));
    if reply.kind.as_deref() != Some("response") || !id_matches {
        return None;
    }
    let code = reply
        .body
        .as_ref()
        .and_then(|b| b.get("code"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Some(if code.as_u64() == Some(200) {
        Ok(())
    } else {
        Err(LoadError::Rejected {
            what: what.to_string(),
            code: code.to_string(),
            frame: text.to_string(),
        })
    })
}

/// Sends `msg` and reads frames until the response with `id` arrives (code 200 → Ok).
async fn request(
    ws: &mut ClientWs,
    wire: Wire,
    msg: serde_json::Value,
    id: u64,
    what: &str,
    until: Instant,
) -> Result<(), LoadError> {
    let lost = |reason: String| LoadError::Lost {
        what: what.to_string(),
        reason,
    };
    let exchange = async {
        ws.send(wire.wrap(msg.to_string()))
            .await
            .map_err(|e| lost(e.to_string()))?;
        // Bounded by the timeout around this block.
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => return Err(lost("closed by peer".into())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(lost(e.to_string())),
            };
            let Some(message) = wire.unwrap(text.as_str()) else {
                continue;
            };
            if let Some(outcome) = check_reply(&message, id, what) {
                return outcome;
            }
        }
    };
    bounded(until, what, exchange).await
}

/// Reads a connection nobody expects frames on, counting what arrives, until `stop`.
pub(super) async fn drain(stream: SplitStream<ClientWs>, stop: watch::Receiver<bool>) -> u64 {
    drain_with(stream, stop, |_| false).await
}

/// [`drain`], not counting the text frames `expected` accepts (a protocol's own
/// packets, such as pings).
pub(super) async fn drain_with(
    mut stream: SplitStream<ClientWs>,
    mut stop: watch::Receiver<bool>,
    mut expected: impl FnMut(&str) -> bool,
) -> u64 {
    let mut unexpected = 0;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    if !expected(t.as_str()) {
                        unexpected += 1;
                    }
                }
                Some(Ok(Message::Binary(_))) => unexpected += 1,
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => break,
        }
    }
    unexpected
}
