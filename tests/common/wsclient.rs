//! A raw WebSocket client speaking the reTHINK wire, for node tests.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TIMEOUT;

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Frames received while waiting for something else.
    backlog: VecDeque<Value>,
    pub closed: Option<String>,
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("connect");
        WsClient {
            ws,
            next_id: 100,
            backlog: VecDeque::new(),
            closed: None,
        }
    }

    /// Connects from the loopback address `source` (e.g. 127.0.0.2), so the node
    /// sees another client address.
    pub async fn connect_from(url: &str, source: std::net::IpAddr) -> WsClient {
        let host = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("a ws:// URL");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = socket
            .connect(host.parse().expect("an address"))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), None)
                .await
                .expect("handshake");
        WsClient {
            ws,
            next_id: 100,
            backlog: VecDeque::new(),
            closed: None,
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Ws::Text(s.into())).await.expect("send");
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.ws.send(Ws::Binary(b.into())).await.expect("send");
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await
    }

    /// Next text frame as it arrived, within `within`.
    pub async fn recv_text(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Ws::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Ws::Close(c)))) => {
                    self.closed = Some(
                        c.map(|c| format!("{}: {}", u16::from(c.code), c.reason))
                            .unwrap_or_default(),
                    );
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => {
                    self.closed.get_or_insert_with(|| e.to_string());
                    return None;
                }
                Ok(None) => {
                    self.closed.get_or_insert_with(|| "stream ended".to_owned());
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Next JSON frame (backlog first) within `within`.
    pub async fn recv(&mut self, within: Duration) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        let t = self.recv_text(within).await?;
        Some(serde_json::from_str(&t).expect("node sent JSON"))
    }

    /// The next frame matching `pred` (others skipped), within the default deadline.
    pub async fn recv_matching(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self
                .recv(left)
                .await
                .expect("a matching frame within the deadline");
            if pred(&v) {
                return v;
            }
        }
    }

    pub async fn expect(&mut self) -> Value {
        self.recv(TIMEOUT)
            .await
            .expect("a frame within the deadline")
    }

    /// Sends a request and returns the response with the same id (other frames are kept).
    pub async fn request(&mut self, mut v: Value) -> Value {
        if v.get("id").is_none() {
            v["id"] = json!(self.id());
        }
        let id = v["id"].clone();
        self.send(v).await;
        let mut other = VecDeque::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let t = self
                .recv_text(left)
                .await
                .expect("response within the deadline");
            let r: Value = serde_json::from_str(&t).expect("JSON");
            if r["type"] == "response" && r["id"] == id {
                break r;
            }
            other.push_back(r);
        };
        self.backlog.extend(other);
        found
    }

    pub async fn open(&mut self, runtime: &str) -> String {
        let r = self
            .request(json!({"type": "open", "from": runtime, "to": "mn:/session"}))
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
        assert_eq!(r["from"], "mn:/session");
        r["body"]["runtimeToken"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    pub async fn allocate(&mut self, from: &str, domain: &str, number: u64) -> Vec<String> {
        let r = self
            .request(json!({"type": "create", "from": from,
                "to": format!("domain://msg-node.{domain}/address-allocation"),
                "body": {"value": {"number": number}}}))
            .await;
        assert_eq!(r["body"]["code"], 200, "{r}");
        r["body"]["value"]["allocated"]
            .as_array()
            .expect("allocated")
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn subscribe(&mut self, from: &str, domain: &str, resources: &[&str]) -> Value {
        self.request(json!({"type": "subscribe", "from": from,
            "to": format!("domain://msg-node.{domain}/sm"),
            "body": {"resources": resources}}))
            .await
    }

    /// Drops the TCP connection without a reTHINK close.
    pub async fn drop_socket(self) {
        drop(self.ws);
    }

    /// A clean WebSocket close (no reTHINK close).
    pub async fn ws_close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
