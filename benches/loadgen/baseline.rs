//! The baseline relay: a minimal tokio-tungstenite server speaking the node's wire
//! contract, the transport limit a node is compared with.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::LoadError;

/// Frames queued towards one connection of the baseline relay.
const RELAY_QUEUE: usize = 1_024;
/// Frames the baseline relay's writer takes from its queue before it flushes.
const RELAY_WRITE_BATCH: usize = 256;

/// A running baseline relay; [`RelayHandle::shutdown`] (or dropping it) stops it and
/// closes every connection.
#[derive(Debug)]
pub struct RelayHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Stops accepting, drops every connection, and waits for the accept task to end.
    pub async fn shutdown(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// Where a frame can be queued: the writer of one connection.
#[derive(Clone)]
struct Route {
    conn: u64,
    tx: mpsc::Sender<Message>,
}

#[derive(Default)]
struct RelayState {
    /// runtime URL → the connection that opened it.
    sessions: DashMap<String, Route>,
    /// resource → subscribed connections.
    subscriptions: DashMap<String, Vec<Route>>,
}

/// What one connection registered, removed again when it closes.
#[derive(Default)]
struct Owned {
    urls: Vec<String>,
    resources: Vec<String>,
}

/// The header fields the relay routes on; `body` stays unparsed unless it is a `/sm` call.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SmBody {
    resources: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
    unsubscribe: Option<Vec<String>>,
}

#[derive(Serialize)]
struct Reply<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(rename = "type")]
    kind: &'static str,
    from: &'a str,
    to: &'a str,
    body: ReplyBody,
}

#[derive(Serialize)]
struct ReplyBody {
    code: u16,
    #[serde(rename = "runtimeToken", skip_serializing_if = "Option::is_none")]
    runtime_token: Option<String>,
}

/// Aborts the wrapped task when dropped, so a connection's writer dies with its reader.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the baseline relay on `127.0.0.1:0`, on the current tokio runtime, and returns
/// its address (`ws://ADDR/ws`) and handle.
///
/// It answers `open` (to `mn:/session`) with 200 and a `runtimeToken`, routes every other
/// text frame unchanged to the subscribers of its exact `to`, or else to the session whose
/// runtime URL is `to` or a `/`-prefix of it, handles `subscribe`/`unsubscribe` to
/// `domain://msg-node.*/sm` (`body.resources`, or the legacy `subscribe`/`unsubscribe`
/// keys), and drops frames for unknown addresses. `body.token` is not checked. Each
/// connection has one reader and one writer task joined by a bounded channel.
pub async fn start_baseline_relay() -> Result<(SocketAddr, RelayHandle), LoadError> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, stop_rx));
    Ok((addr, RelayHandle { stop, task }))
}

async fn accept_loop(listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    let state = Arc::new(RelayState::default());
    let mut conns = JoinSet::new();
    let mut next_conn = 0u64;
    // Runs until the handle is shut down or dropped; dropping `conns` aborts every
    // connection task.
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_conn += 1;
                    conns.spawn(serve_conn(stream, next_conn, state.clone()));
                }
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => {}
                Err(e) => {
                    eprintln!("baseline relay: accept failed, stopping: {e}");
                    break;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

#[allow(clippy::result_large_err)] // the signature is fixed by tungstenite's callback trait
fn only_ws_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == "/ws" {
        Ok(resp)
    } else {
        let mut err = ErrorResponse::new(Some("not found: use /ws".into()));
        *err.status_mut() = StatusCode::NOT_FOUND;
        Err(err)
    }
}

async fn serve_conn(stream: TcpStream, conn: u64, state: Arc<RelayState>) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, only_ws_path).await else {
        return;
    };
    let (sink, mut source) = ws.split();
    let (tx, rx) = mpsc::channel(RELAY_QUEUE);
    let _writer = AbortOnDrop(tokio::spawn(write_loop(sink, rx)));
    let mut owned = Owned::default();
    // Ends when the peer closes or the connection fails.
    while let Some(Ok(frame)) = source.next().await {
        match frame {
            Message::Text(text) => relay_frame(&state, conn, &tx, &mut owned, text).await,
            Message::Close(_) => break,
            _ => {}
        }
    }
    for url in owned.urls {
        state.sessions.remove_if(&url, |_, r| r.conn == conn);
    }
    for res in owned.resources {
        if let Some(mut subs) = state.subscriptions.get_mut(&res) {
            subs.retain(|r| r.conn != conn);
        }
        state
            .subscriptions
            .remove_if(&res, |_, subs| subs.is_empty());
    }
}

/// Writes queued frames, flushing once per batch; ends when the queue closes or the
/// socket fails.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(first) = rx.recv().await {
        if sink.feed(first).await.is_err() {
            return;
        }
        for _ in 1..RELAY_WRITE_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            if sink.feed(next).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Queues `msg` on `route`, waiting for room only if its queue is full.
async fn deliver(route: &Route, msg: Message) {
    match route.tx.try_send(msg) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(msg)) => {
            let _ = route.tx.send(msg).await;
        }
    }
}

async fn relay_frame(
    state: &RelayState,
    conn: u64,
    tx: &mpsc::Sender<Message>,
    owned: &mut Owned,
    text: Utf8Bytes,
) {
    let Ok(h) = serde_json::from_str::<Header<'_>>(text.as_str()) else {
        return;
    };
    if h.to == "mn:/session" {
        let (code, token) = if h.kind == "open" {
            let route = Route {
                conn,
                tx: tx.clone(),
            };
            state.sessions.insert(h.from.to_string(), route);
            owned.urls.push(h.from.to_string());
            (200, Some(uuid::Uuid::new_v4().to_string()))
        } else {
            (400, None)
        };
        reply(tx, conn, &h, code, token).await;
        return;
    }
    if h.to.starts_with("domain://msg-node.") && h.to.ends_with("/sm") {
        let code = subscription(state, conn, tx, owned, &h);
        reply(tx, conn, &h, code, None).await;
        return;
    }
    // Subscribers of exactly `to` first, then the owner of `to` or of a `/`-prefix of it.
    let subscribers: Option<Vec<Route>> = state
        .subscriptions
        .get(h.to.as_ref())
        .map(|subs| subs.clone());
    if let Some(subs) = subscribers {
        for route in &subs {
            deliver(route, Message::Text(text.clone())).await;
        }
        return;
    }
    let Some(scheme_end) = h.to.find("://").map(|i| i + 3) else {
        return;
    };
    let mut key: &str = &h.to;
    // At most one lookup per path segment.
    let owner = loop {
        if let Some(route) = state.sessions.get(key) {
            break Some(route.clone());
        }
        match key.rfind('/') {
            Some(cut) if cut > scheme_end => key = &key[..cut],
            _ => break None,
        }
    };
    if let Some(route) = owner {
        deliver(&route, Message::Text(text)).await;
    }
}

/// Handles a `/sm` call; returns the response code.
fn subscription(
    state: &RelayState,
    conn: u64,
    tx: &mpsc::Sender<Message>,
    owned: &mut Owned,
    h: &Header<'_>,
) -> u16 {
    let Some(body) = h
        .body
        .and_then(|b| serde_json::from_str::<SmBody>(b.get()).ok())
    else {
        return 400;
    };
    match h.kind.as_ref() {
        "subscribe" => {
            let Some(list) = body.resources.or(body.subscribe) else {
                return 400;
            };
            for res in list {
                let mut subs = state.subscriptions.entry(res.clone()).or_default();
                if !subs.iter().any(|r| r.conn == conn) {
                    subs.push(Route {
                        conn,
                        tx: tx.clone(),
                    });
                    owned.resources.push(res);
                }
            }
            200
        }
        "unsubscribe" => {
            let Some(list) = body.resources.or(body.unsubscribe) else {
                return 400;
            };
            for res in list {
                if let Some(mut subs) = state.subscriptions.get_mut(&res) {
                    subs.retain(|r| r.conn != conn);
                }
                state
                    .subscriptions
                    .remove_if(&res, |_, subs| subs.is_empty());
            }
            200
        }
        _ => 400,
    }
}

async fn reply(
    tx: &mpsc::Sender<Message>,
    conn: u64,
    h: &Header<'_>,
    code: u16,
    runtime_token: Option<String>,
) {
    let reply = Reply {
        id: h.id,
        kind: "response",
        from: &h.to,
        to: &h.from,
        body: ReplyBody {
            code,
            runtime_token,
        },
    };
    if let Ok(text) = serde_json::to_string(&reply) {
        let route = Route {
            conn,
            tx: tx.clone(),
        };
        deliver(&route, Message::text(text)).await;
    }
}
