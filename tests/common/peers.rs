//! One client type over every transport the node speaks: raw WebSocket (`/ws`),
//! HTTP POST + long-poll (`/http/…`) and Socket.IO over Engine.IO 3's WebSocket
//! (`/socket.io/?EIO=3&transport=websocket`, as the raw form of the reTHINK
//! Node.js node's dialect).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{WsClient, TIMEOUT};

/// Which transport a [`Peer`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ws,
    Http,
    SocketIo,
}

pub const KINDS: [Kind; 3] = [Kind::Ws, Kind::Http, Kind::SocketIo];

/// An HTTP long-poll session.
pub struct HttpPeer {
    base: String,
    client: awc::Client,
    pub session: Option<String>,
}

impl HttpPeer {
    pub fn new(base: &str) -> HttpPeer {
        HttpPeer {
            base: base.to_owned(),
            client: awc::Client::builder().timeout(TIMEOUT * 2).finish(),
            session: None,
        }
    }

    /// A raw request: the status and the body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        session: Option<&str>,
        body: Option<String>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self.client.post(&url),
            _ => self.client.get(&url),
        };
        if let Some(s) = session {
            req = req.insert_header(("Hyperty-Session", s));
        }
        let mut resp = match body {
            Some(b) => {
                req.insert_header(("Content-Type", "application/json"))
                    .send_body(b)
                    .await
            }
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let body = resp.body().limit(64 << 20).await.expect("body");
        (
            resp.status().as_u16(),
            String::from_utf8(body.to_vec()).expect("UTF-8"),
        )
    }

    /// A POST with `Authorization: Bearer <token>`: the status and the body.
    pub async fn call_with_bearer(&self, path: &str, token: &str, body: String) -> (u16, String) {
        let mut resp = self
            .client
            .post(format!("{}{path}", self.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_body(body)
            .await
            .expect("POST");
        let body = resp.body().await.expect("body");
        (
            resp.status().as_u16(),
            String::from_utf8(body.to_vec()).expect("UTF-8"),
        )
    }

    /// Opens with `open`: the status and the body.
    pub async fn open_with(&mut self, open: Value) -> (u16, Value) {
        let (status, body) = self
            .call("POST", "/http/session", None, Some(open.to_string()))
            .await;
        let v: Value = serde_json::from_str(&body).expect("JSON");
        if status == 200 {
            self.session = v["session"].as_str().map(str::to_owned);
        }
        (status, v)
    }

    pub async fn send_raw(&self, body: String) -> (u16, Value) {
        let (status, body) = self
            .call("POST", "/http/send", self.session.as_deref(), Some(body))
            .await;
        (status, serde_json::from_str(&body).expect("JSON"))
    }

    /// One long-poll of at most `wait`.
    pub async fn poll(&self, wait: Duration) -> (u16, Value) {
        let path = format!("/http/poll?wait={}", wait.as_millis());
        let (status, body) = self.call("GET", &path, self.session.as_deref(), None).await;
        (status, serde_json::from_str(&body).expect("JSON"))
    }
}

/// A Socket.IO client over the Engine.IO WebSocket.
pub struct SioPeer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub sid: String,
    next_ack: u64,
    /// Engine.IO packets other than messages, as they came.
    pub packets: VecDeque<String>,
}

impl SioPeer {
    pub async fn connect(http_base: &str) -> SioPeer {
        let url = format!(
            "{}/socket.io/?EIO=3&transport=websocket",
            http_base.replacen("http://", "ws://", 1)
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let open = next_text(&mut ws, TIMEOUT).await.expect("open packet");
        let hs: Value = serde_json::from_str(open.strip_prefix('0').expect("0{…}")).expect("JSON");
        assert_eq!(hs["upgrades"], json!([]), "{hs}");
        assert!(hs["pingInterval"].as_u64().is_some(), "{hs}");
        assert_eq!(
            next_text(&mut ws, TIMEOUT).await.as_deref(),
            Some("40"),
            "connected to /"
        );
        SioPeer {
            ws,
            sid: hs["sid"].as_str().expect("sid").to_owned(),
            next_ack: 0,
            packets: VecDeque::new(),
        }
    }

    pub async fn send_packet(&mut self, p: &str) {
        self.ws.send(Ws::Text(p.into())).await.expect("send");
    }

    /// Sends `m` the way the reference stub does: `socket.send(JSON.stringify(m))`.
    pub async fn send(&mut self, m: &Value) {
        let p = format!("42{}", json!(["message", m.to_string()]));
        self.send_packet(&p).await;
    }

    /// Sends `m` with an ack id; returns the id.
    pub async fn send_acked(&mut self, m: &Value) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        let p = format!("42{id}{}", json!(["message", m.to_string()]));
        self.send_packet(&p).await;
        id
    }

    /// The next packet of any kind.
    pub async fn next_packet(&mut self, within: Duration) -> Option<String> {
        next_text(&mut self.ws, within).await
    }

    /// The next reTHINK message; other packets are kept in `packets`.
    pub async fn recv(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let p = next_text(&mut self.ws, left).await?;
            if let Some(args) = p.strip_prefix("42") {
                let v: Value = serde_json::from_str(args).expect("JSON event");
                assert_eq!(v[0], "message", "{p}");
                return Some(v[1].clone());
            }
            self.packets.push_back(p);
        }
    }

    /// The packet starting with `prefix`, skipping messages.
    pub async fn expect_packet(&mut self, prefix: &str) -> String {
        if let Some(i) = self.packets.iter().position(|p| p.starts_with(prefix)) {
            return self.packets.remove(i).expect("there");
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let p = next_text(&mut self.ws, left)
                .await
                .unwrap_or_else(|| panic!("a {prefix}… packet within the deadline"));
            if p.starts_with(prefix) {
                return p;
            }
        }
    }

    /// True once the socket has closed.
    pub async fn closes(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Ws::Close(_)))) => return true,
                Ok(Some(Ok(Ws::Text(t)))) => self.packets.push_back(t.to_string()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

async fn next_text(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    within: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Ws::Ping(_) | Ws::Pong(_)))) => {}
            _ => return None,
        }
    }
}

/// A runtime's client on one transport.
pub enum Peer {
    Ws(WsClient),
    Http(HttpPeer, VecDeque<Value>),
    SocketIo(SioPeer),
}

impl Peer {
    /// A client of `node` over `kind`, with `runtime`'s session open.
    pub async fn open(kind: Kind, node: &hyperty::node::NodeHandle, runtime: &str) -> Peer {
        let open = json!({"id": 1, "type": "open", "from": runtime, "to": "mn:/session"});
        let mut p = match kind {
            Kind::Ws => Peer::Ws(WsClient::connect(&node.ws_url()).await),
            Kind::Http => {
                let mut h = HttpPeer::new(&node.http_url());
                let (status, v) = h.open_with(open).await;
                assert_eq!(status, 200, "{v}");
                assert_eq!(v["frames"][0]["body"]["code"], 200, "{v}");
                return Peer::Http(h, VecDeque::new());
            }
            Kind::SocketIo => Peer::SocketIo(SioPeer::connect(&node.http_url()).await),
        };
        let r = p.request(open).await;
        assert_eq!(r["body"]["code"], 200, "{r}");
        p
    }

    pub async fn send(&mut self, m: Value) {
        match self {
            Peer::Ws(c) => c.send(m).await,
            Peer::Http(h, _) => {
                let (status, v) = h.send_raw(m.to_string()).await;
                assert_eq!((status, &v["accepted"]), (200, &json!(1)), "{v}");
            }
            Peer::SocketIo(s) => s.send(&m).await,
        }
    }

    /// The next message within `within`.
    pub async fn recv(&mut self, within: Duration) -> Option<Value> {
        match self {
            Peer::Ws(c) => c.recv(within).await,
            Peer::SocketIo(s) => s.recv(within).await,
            Peer::Http(h, backlog) => {
                let deadline = tokio::time::Instant::now() + within;
                loop {
                    if let Some(v) = backlog.pop_front() {
                        return Some(v);
                    }
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    let (status, frames) = h.poll(left).await;
                    assert_eq!(status, 200, "{frames}");
                    backlog.extend(frames.as_array().expect("an array").iter().cloned());
                    if backlog.is_empty() {
                        return None;
                    }
                }
            }
        }
    }

    pub async fn expect(&mut self) -> Value {
        self.recv(TIMEOUT)
            .await
            .expect("a message within the deadline")
    }

    /// Sends a request and waits for the response with its id (other frames are
    /// dropped).
    pub async fn request(&mut self, m: Value) -> Value {
        let id = m["id"].clone();
        self.send(m).await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self
                .recv(left)
                .await
                .expect("a response within the deadline");
            if r["type"] == "response" && r["id"] == id {
                return r;
            }
        }
    }
}
