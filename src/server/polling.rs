//! The outbox of a polled session (HTTP long-poll, Engine.IO polling): packets
//! waiting for the client's next poll, and the one poll parked until some arrive.
//!
//! The outbox is bounded by bytes (`session.max_pending_bytes`): a client that
//! stops polling is ended once that much waits for it, as a WebSocket client that
//! stops reading is evicted. A poll takes at most `transports.poll_max_frames`
//! packets and about `transports.poll_max_bytes` (always at least one packet).

use std::collections::VecDeque;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context};
use tokio::sync::oneshot;

/// How long an ended polled session keeps its last packets for a poll.
const LINGER: Duration = Duration::from_secs(5);

/// Packets for one polled client.
#[derive(Debug)]
pub(crate) struct Outbox {
    packets: VecDeque<String>,
    bytes: usize,
    budget: usize,
    max_frames: usize,
    max_bytes: usize,
    parked: Option<(u64, oneshot::Sender<Vec<String>>)>,
    polls: u64,
}

impl Outbox {
    /// An empty outbox holding at most `budget` bytes, handing out `max_frames`
    /// packets or `max_bytes` per poll.
    pub(crate) fn new(budget: usize, max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox {
            packets: VecDeque::new(),
            bytes: 0,
            budget,
            max_frames: max_frames.max(1),
            max_bytes,
            parked: None,
            polls: 0,
        }
    }

    /// Queues `packet` and answers a parked poll; false if the outbox is now over
    /// its budget (the client does not poll: end it).
    pub(crate) fn push(&mut self, packet: String) -> bool {
        self.bytes += packet.len();
        self.packets.push_back(packet);
        self.wake();
        self.bytes <= self.budget
    }

    /// True if nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// True while a poll is parked.
    pub(crate) fn is_parked(&self) -> bool {
        self.parked.as_ref().is_some_and(|(_, tx)| !tx.is_closed())
    }

    /// Takes the packets for one poll.
    pub(crate) fn take(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(p) = self.packets.front() {
            if out.len() == self.max_frames || (!out.is_empty() && bytes + p.len() > self.max_bytes)
            {
                break;
            }
            bytes += p.len();
            if let Some(p) = self.packets.pop_front() {
                out.push(p);
            }
        }
        self.bytes -= bytes;
        out
    }

    /// Takes everything that waits.
    pub(crate) fn take_all(&mut self) -> Vec<String> {
        self.bytes = 0;
        self.packets.drain(..).collect()
    }

    /// A poll: answered at once if packets wait, else parked (a poll parked before
    /// is answered empty). Returns the parked poll's number, for [`Outbox::expire`].
    pub(crate) fn poll(&mut self, tx: oneshot::Sender<Vec<String>>) -> Option<u64> {
        if let Some((_, old)) = self.parked.take() {
            let _ = old.send(Vec::new());
        }
        if !self.packets.is_empty() {
            let _ = tx.send(self.take());
            return None;
        }
        self.polls += 1;
        self.parked = Some((self.polls, tx));
        Some(self.polls)
    }

    /// The wait of poll `n` is over: it is answered empty if still parked.
    pub(crate) fn expire(&mut self, n: u64) {
        if self.parked.as_ref().is_some_and(|(p, _)| *p == n) {
            if let Some((_, tx)) = self.parked.take() {
                let _ = tx.send(Vec::new());
            }
        }
    }

    /// The session of this outbox has ended: the parked poll gets what waits,
    /// and the session stops — at once if nothing is left, else after [`LINGER`]
    /// for a last poll to take it.
    pub(crate) fn end<A: Actor<Context = Context<A>>>(&mut self, ctx: &mut Context<A>) {
        self.flush();
        if self.is_empty() {
            ctx.stop();
        } else {
            ctx.run_later(LINGER, |_, ctx| ctx.stop());
        }
    }

    /// Answers the parked poll, if any, with what waits (even nothing).
    pub(crate) fn flush(&mut self) {
        if let Some((_, tx)) = self.parked.take() {
            let _ = tx.send(self.take());
        }
    }

    fn wake(&mut self) {
        if self.parked.is_some() {
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_takes_what_waits_within_its_bounds() {
        let mut o = Outbox::new(1000, 2, 10);
        assert!(o.push("aaaa".into()));
        assert!(o.push("bbbbbbbb".into()));
        assert!(o.push("c".into()));
        assert_eq!(o.take(), vec!["aaaa".to_owned()]);
        assert_eq!(o.take(), vec!["bbbbbbbb".to_owned(), "c".to_owned()]);
        assert!(o.take().is_empty());
        assert!(!o.push("x".repeat(1001)));
    }

    #[test]
    fn a_parked_poll_is_answered_by_the_next_packet_or_its_expiry() {
        let mut o = Outbox::new(1000, 10, 1000);
        let (tx, mut rx) = oneshot::channel();
        let n = o.poll(tx).expect("parked");
        assert!(o.is_parked());
        o.push("p".into());
        assert_eq!(rx.try_recv().expect("answered"), vec!["p".to_owned()]);
        let (tx, mut rx) = oneshot::channel();
        let m = o.poll(tx).expect("parked");
        o.expire(n);
        assert!(o.is_parked(), "an older poll's expiry leaves it parked");
        o.expire(m);
        assert!(rx.try_recv().expect("answered").is_empty());
    }
}
