//! The node's HTTP transport (POST + long-poll, `src/server/http.rs`) as a load client:
//! a session opened with `POST /http/session`, messages sent in batches with
//! `POST /http/send` (a JSON array), deliveries read with `GET /http/poll?wait=…`.
//!
//! Each session has one keep-alive HTTP/1.1 connection and one request at a time on
//! it, as a browser's `fetch` loop would. The client is written here over a tokio
//! `TcpStream` (heads parsed with httparse) rather than with awc, the HTTP client in
//! the dependency tree, because awc's connections are tasks of the current thread
//! (not `Send`), and the load clients run as `Send` tasks on any tokio runtime.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::{
    bounded, check_reply, now_ns, open_message, subscribe_step, Probe, HANDSHAKE_TIMEOUT,
};
use super::flood::Tally;
use super::{LoadError, Params};

/// The `wait` of every long-poll (the node cuts it to `transports.poll_max_wait_ms`).
const POLL_WAIT_MS: u64 = 20_000;
/// A connection idle this long is not reused (the node's keep-alive is 5 s).
const IDLE_REUSE: Duration = Duration::from_secs(3);
/// Largest response body read.
const MAX_BODY: usize = 64 << 20;

/// One keep-alive HTTP/1.1 connection to `host`.
pub(super) struct HttpConn {
    host: String,
    stream: Option<TcpStream>,
    last_used: std::time::Instant,
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the last response.
    consumed: usize,
    request: Vec<u8>,
}

impl HttpConn {
    /// A connection to `base` (`http://host:port`), opened on first use.
    pub(super) fn new(base: &str) -> Result<HttpConn, LoadError> {
        let host = base
            .strip_prefix("http://")
            .map(|h| h.trim_end_matches('/'))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| LoadError::BadUrl {
                url: base.to_string(),
                reason: "expected http://host:port".into(),
            })?;
        Ok(HttpConn {
            host: host.to_string(),
            stream: None,
            last_used: std::time::Instant::now(),
            buf: Vec::with_capacity(64 * 1024),
            consumed: 0,
            request: Vec::with_capacity(64 * 1024),
        })
    }

    /// One request; the status and the body.
    pub(super) async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> Result<(u16, &[u8]), String> {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        if self.last_used.elapsed() > IDLE_REUSE {
            self.stream = None;
        }
        self.request.clear();
        let _ = write!(
            Writer(&mut self.request),
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}",
            self.host
        );
        if method == "POST" {
            let _ = write!(
                Writer(&mut self.request),
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        if self.stream.is_none() {
            self.buf.clear();
            let s = TcpStream::connect(&self.host)
                .await
                .map_err(|e| format!("connect to {}: {e}", self.host))?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(format!("no connection to {}", self.host));
        };
        let failed = |e: std::io::Error| format!("{method} {path}: {e}");
        stream.write_all(&self.request).await.map_err(failed)?;
        // Each pass reads more of the response; ends at its end or at EOF.
        let (status, start, len, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let mut len = 0usize;
                    let mut close = false;
                    for h in resp.headers.iter() {
                        let value = std::str::from_utf8(h.value).unwrap_or("");
                        if h.name.eq_ignore_ascii_case("content-length") {
                            len = value.trim().parse().map_err(|_| "bad Content-Length")?;
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(format!("{method} {path}: {value} bodies are not read"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = value.eq_ignore_ascii_case("close");
                        }
                    }
                    if len > MAX_BODY {
                        return Err(format!("{method} {path}: a body of {len} bytes"));
                    }
                    if self.buf.len() >= head + len {
                        break (resp.code.unwrap_or(0), head, len, close);
                    }
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("{method} {path}: bad response: {e}")),
            }
            self.buf.reserve(64 * 1024);
            let n = stream.read_buf(&mut self.buf).await.map_err(failed)?;
            if n == 0 {
                self.stream = None;
                return Err(format!("{method} {path}: connection closed"));
            }
        };
        self.consumed = start + len;
        self.last_used = std::time::Instant::now();
        if close {
            self.stream = None;
        }
        Ok((status, &self.buf[start..start + len]))
    }
}

/// `fmt::Write` into a byte buffer.
struct Writer<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[derive(Deserialize)]
struct Opened<'a> {
    session: String,
    #[serde(borrow)]
    frames: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Accepted {
    accepted: usize,
}

/// An open HTTP session of the node.
pub(super) struct HttpSession {
    conn: HttpConn,
    /// `Hyperty-Session: <id>\r\n`
    header: String,
    poll_path: String,
}

impl HttpSession {
    /// `POST /http/session` with the `open` of `runtime_url` (the token, if any, as
    /// `Authorization: Bearer`), waiting for its 200.
    pub(super) async fn open(
        base: &str,
        runtime_url: &str,
        p: &Params,
        deadline: Instant,
    ) -> Result<HttpSession, LoadError> {
        let until = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
        let what = format!("HTTP open of {runtime_url} on {base}");
        let mut conn = HttpConn::new(base)?;
        let auth = p
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let open = open_message(runtime_url, p).to_string();
        let exchange = async {
            let (status, body) = conn
                .call("POST", "/http/session", &auth, open.as_bytes())
                .await
                .map_err(|reason| lost(&what, reason))?;
            let text = String::from_utf8_lossy(body);
            let opened =
                serde_json::from_str::<Opened<'_>>(&text).map_err(|_| LoadError::Rejected {
                    what: what.clone(),
                    code: status.to_string(),
                    frame: text.to_string(),
                })?;
            let outcome = opened
                .frames
                .iter()
                .find_map(|f| check_reply(f.get(), 1, &what));
            match outcome {
                Some(Ok(())) if status == 200 => Ok(opened.session),
                Some(Err(e)) => Err(e),
                _ => Err(LoadError::Rejected {
                    what: what.clone(),
                    code: status.to_string(),
                    frame: text.to_string(),
                }),
            }
        };
        let session = bounded(until, &what, exchange).await?;
        Ok(HttpSession {
            conn,
            header: format!("Hyperty-Session: {session}\r\n"),
            poll_path: format!("/http/poll?wait={POLL_WAIT_MS}"),
        })
    }

    /// Subscribes the session to `resource` through `/sm`; the response comes in a poll.
    pub(super) async fn subscribe(
        &mut self,
        base: &str,
        runtime_url: &str,
        resource: &str,
        p: &Params,
        deadline: Instant,
    ) -> Result<(), LoadError> {
        let (until, what, msg) = subscribe_step(base, runtime_url, resource, p, deadline);
        let msg = msg.to_string();
        let exchange = async {
            self.send(msg.as_bytes(), 1)
                .await
                .map_err(|reason| lost(&what, reason))?;
            // Bounded by the timeout around this block.
            loop {
                let body = self.poll().await.map_err(|reason| lost(&what, reason))?;
                let frames = serde_json::from_slice::<Vec<&RawValue>>(body)
                    .map_err(|e| lost(&what, format!("bad poll body: {e}")))?;
                if let Some(outcome) = frames.iter().find_map(|f| check_reply(f.get(), 2, &what)) {
                    return outcome;
                }
            }
        };
        bounded(until, &what, exchange).await
    }

    /// `POST /http/send` of `body` (one message or a JSON array of `count`).
    pub(super) async fn send(&mut self, body: &[u8], count: usize) -> Result<(), String> {
        let (status, reply) = self
            .conn
            .call("POST", "/http/send", &self.header, body)
            .await?;
        let accepted = serde_json::from_slice::<Accepted>(reply).map(|a| a.accepted);
        if status == 200 && accepted.as_ref().is_ok_and(|&a| a == count) {
            Ok(())
        } else {
            Err(format!(
                "POST /http/send of {count}: {status} {}",
                String::from_utf8_lossy(reply)
            ))
        }
    }

    /// One long-poll: the JSON array of frames.
    pub(super) async fn poll(&mut self) -> Result<&[u8], String> {
        self.poll_for(None).await
    }

    /// A poll of at most `wait_ms` (default [`POLL_WAIT_MS`]).
    async fn poll_for(&mut self, wait_ms: Option<u64>) -> Result<&[u8], String> {
        let path = match wait_ms {
            Some(ms) => format!("/http/poll?wait={ms}"),
            None => self.poll_path.clone(),
        };
        match self.conn.call("GET", &path, &self.header, b"").await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!(
                "GET /http/poll: {status} {}",
                String::from_utf8_lossy(body)
            )),
        }
    }

    /// The frames waiting now (a poll that does not wait), as a count: for a session
    /// nobody sends to, the unexpected ones.
    pub(super) async fn leftovers(&mut self) -> u64 {
        match self.poll_for(Some(0)).await {
            Ok(body) => serde_json::from_slice::<Vec<&RawValue>>(body)
                .map(|v| v.len() as u64)
                .unwrap_or(1),
            Err(_) => 0,
        }
    }
}

fn lost(what: &str, reason: String) -> LoadError {
    LoadError::Lost {
        what: what.to_string(),
        reason,
    }
}

/// A subscriber's loop of long-polls, counting into `tally` until it has every
/// message or `stop` is raised.
pub(super) async fn receive(
    mut session: HttpSession,
    tally: &mut Tally,
    mut stop: watch::Receiver<bool>,
) {
    while !tally.done() {
        let polled = tokio::select! {
            biased;
            polled = session.poll() => polled,
            _ = stop.changed() => break,
        };
        let body = match polled {
            Ok(body) => body,
            Err(e) => {
                tally.stop(format!("poll failed: {e}"));
                break;
            }
        };
        let now = now_ns();
        count_batch(body, now, tally);
        tally.report();
    }
}

/// Counts a poll's frames: read as probes in one pass when they all are, else frame
/// by frame.
fn count_batch(body: &[u8], now: u64, tally: &mut Tally) {
    if let Ok(probes) = serde_json::from_slice::<Vec<Probe<'_>>>(body) {
        for probe in probes {
            tally.take(probe, now);
        }
        return;
    }
    match serde_json::from_slice::<Vec<&RawValue>>(body) {
        Ok(frames) => {
            for f in frames {
                tally.count(f.get().as_bytes(), now);
            }
        }
        Err(_) => tally.unexpected(),
    }
}
