//! Test helpers: a [`Probe`] listener that records what it is delivered, and
//! receive-with-deadline helpers, so tests never sleep and hope.
//!
//! ```
//! use hyperty_actors::prelude::*;
//! use hyperty_actors::testkit::{Probe, TIMEOUT};
//!
//! # #[actix::main] async fn main() {
//! let bus = MessageBus::start("hyperty-runtime://a.org/rt".parse().unwrap(), Default::default(), Default::default());
//! let (recipient, mut probe) = Probe::start();
//! let me: Address = "hyperty://a.org/me".parse().unwrap();
//! bus.add_listener(me.clone(), recipient, None).await.unwrap();
//! bus.send(Message::new(MessageType::Update, me.clone(), me.clone()));
//! let got = probe.recv(TIMEOUT).await.expect("delivered");
//! assert_eq!(got.kind, MessageType::Update);
//! assert!(probe.recv(std::time::Duration::from_millis(10)).await.is_none());
//! # }
//! ```

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::bus::Deliver;
use crate::message::Message;

/// A generous deadline for things that should happen promptly.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// An actor that forwards every delivered message to a channel.
#[derive(Debug)]
pub struct Probe {
    tx: mpsc::UnboundedSender<Message>,
}

/// The receiving end of a [`Probe`].
#[derive(Debug)]
pub struct ProbeRx {
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Probe {
    /// Starts a probe on the current arbiter.
    pub fn start() -> (Recipient<Deliver>, ProbeRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Probe { tx }.start().recipient(), ProbeRx { rx })
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Probe {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        let _ = self.tx.send(m);
    }
}

impl ProbeRx {
    /// The next message, or `None` if none arrives within `within`.
    pub async fn recv(&mut self, within: Duration) -> Option<Message> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message matching `pred` within `within` (others are skipped).
    pub async fn recv_matching(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await?;
            if pred(&m) {
                return Some(m);
            }
        }
    }

    /// Messages already received, without waiting.
    pub fn drain(&mut self) -> Vec<Message> {
        let mut v = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            v.push(m);
        }
        v
    }
}
