//! Deliveries held back until the end of the sender's read pass.
//!
//! A connection's actor reads up to [`FRAMES_PER_POLL`](crate::server::inbound::FRAMES_PER_POLL)
//! frames per poll (a *read pass*, [`Pass`]). Every frame it routes to a live
//! session is charged to that session's byte account at once, as always, but the
//! frame itself waits in this thread's hand-off list; when the pass ends, each
//! recipient gets its frames in one mailbox message ([`OutboundBurst`]), in order.
//! A recipient on another worker thread is then woken once per pass instead of
//! once per frame, and writes its socket with one send per burst: nats-server
//! hands its deliveries over the same way (a client's pending flushes, signalled
//! once per read).
//!
//! A recipient on the sender's own thread gets its frames at once: waking it
//! costs nothing there, and it runs only after the pass anyway.
//!
//! Outside a pass (other transports, node services, peer links) frames go to the
//! recipient's mailbox at once. A frame the mailbox no longer takes at the end of
//! the pass is treated as it would have been at once: a closed connection's frames
//! wait in its session's grace buffer, a full mailbox evicts its session.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use actix::dev::SendError;
use actix::Recipient;
use bytestring::ByteString;

use super::outbound::OutboundQueue;
use super::router::{OutboundBurst, Router, SessionKey};

/// Frames held for one connection.
struct Held {
    router: Arc<Router>,
    key: SessionKey,
    bursts: Recipient<OutboundBurst>,
    queue: Arc<OutboundQueue>,
    frames: Vec<ByteString>,
}

#[derive(Default)]
struct Passes {
    /// Open passes on this thread (a pass may open inside another).
    depth: u32,
    held: Vec<Held>,
    /// `held` index by connection id.
    index: HashMap<u64, usize, foldhash::fast::FixedState>,
}

thread_local! {
    static PASSES: RefCell<Passes> = RefCell::default();
    static THREAD_NO: u64 = {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
}

/// A number for this thread, unique in the process (cheaper to read than its
/// `ThreadId`).
pub(crate) fn thread_no() -> u64 {
    THREAD_NO.with(|n| *n)
}

/// An open read pass on this thread: deliveries are held while it lives and
/// handed over when the outermost one is dropped.
#[derive(Debug)]
#[must_use = "a pass ends when it is dropped"]
pub struct Pass(());

impl Pass {
    /// Opens a pass.
    pub fn open() -> Pass {
        PASSES.with_borrow_mut(|p| p.depth += 1);
        Pass(())
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let held = PASSES.with_borrow_mut(|p| {
            p.depth -= 1;
            if p.depth > 0 {
                return Vec::new();
            }
            p.index.clear();
            std::mem::take(&mut p.held)
        });
        for h in held {
            hand_over(h);
        }
    }
}

/// Holds `frame` (already charged to `queue`) for connection `conn_id` of session
/// `key` until the pass ends; `false` when no pass is open on this thread, and the
/// caller sends it now.
pub(crate) fn hold(
    router: &std::sync::Weak<Router>,
    key: &str,
    conn_id: u64,
    bursts: &Recipient<OutboundBurst>,
    queue: &Arc<OutboundQueue>,
    frame: &ByteString,
) -> bool {
    PASSES.with_borrow_mut(|p| {
        if p.depth == 0 {
            return false;
        }
        let i = match p.index.get(&conn_id) {
            Some(&i) => i,
            None => {
                let Some(router) = router.upgrade() else {
                    return false;
                };
                p.held.push(Held {
                    router,
                    key: key.into(),
                    bursts: bursts.clone(),
                    queue: queue.clone(),
                    frames: Vec::new(),
                });
                p.index.insert(conn_id, p.held.len() - 1);
                p.held.len() - 1
            }
        };
        p.held[i].frames.push(frame.clone());
        true
    })
}

/// Puts one connection's held frames into its mailbox, as one message.
fn hand_over(h: Held) {
    match h.bursts.try_send(OutboundBurst(h.frames)) {
        Ok(()) => {}
        Err(SendError::Closed(OutboundBurst(frames))) => {
            for frame in &frames {
                h.queue.refund(frame.len());
                h.router.held_for_closed(&h.key, frame);
            }
        }
        Err(SendError::Full(OutboundBurst(frames))) => {
            for frame in &frames {
                h.queue.refund(frame.len());
            }
            h.router.held_for_full(&h.key, frames.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use actix::prelude::*;

    use super::*;
    use crate::node::outbound::QueueLimits;
    use crate::node::router::{Delivered, Kick, Outbound, Slot};

    /// A connection that records what reaches it, one entry per mailbox message.
    struct Sink(Arc<Mutex<Vec<Vec<String>>>>);

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Sink {
        type Result = ();
        fn handle(&mut self, Outbound(f): Outbound, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(vec![f.to_string()]);
        }
    }

    impl Handler<OutboundBurst> for Sink {
        type Result = ();
        fn handle(&mut self, OutboundBurst(fs): OutboundBurst, _: &mut Context<Self>) {
            self.0
                .lock()
                .unwrap()
                .push(fs.iter().map(|f| f.to_string()).collect());
        }
    }

    impl Handler<Kick> for Sink {
        type Result = ();
        fn handle(&mut self, _: Kick, _: &mut Context<Self>) {}
    }

    /// A router whose session `k1` is served by `sink`, its queue made on another
    /// thread (as a connection on another worker's is).
    fn router_with(sink: &Addr<Sink>) -> (Arc<Router>, Arc<OutboundQueue>) {
        let router = Arc::new(Router::new("d.org", 8));
        router.hold_in_passes();
        let limits = QueueLimits {
            slow_down: 1 << 20,
            budget: 2 << 20,
        };
        let queue = std::thread::spawn(move || OutboundQueue::new(limits, None))
            .join()
            .unwrap();
        let slot = Slot::live(
            1,
            sink.clone().recipient(),
            sink.clone().recipient(),
            queue.clone(),
            sink.clone().recipient(),
        );
        router.slots.insert_for_test(Arc::from("k1"), slot);
        (router, queue)
    }

    fn frames(n: usize) -> Vec<ByteString> {
        (0..n)
            .map(|i| ByteString::from(format!("{{\"n\":{i}}}")))
            .collect()
    }

    #[actix::test]
    async fn a_pass_hands_its_frames_over_in_one_message_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(seen.clone()).start();
        let (router, queue) = router_with(&sink);
        {
            let _pass = Pass::open();
            for f in frames(3) {
                assert_eq!(router.deliver("k1", &f), Delivered::Queued);
            }
            assert_eq!(queue.pending(), 3 * 7, "charged at once");
            // a pass inside the pass hands nothing over when it ends
            drop(Pass::open());
        }
        // outside a pass, a frame goes at once
        router.deliver("k1", &ByteString::from_static("{\"n\":9}"));
        actix::clock::sleep(std::time::Duration::from_millis(50)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                vec!["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"],
                vec!["{\"n\":9}"]
            ]
        );
    }

    #[actix::test]
    async fn frames_held_for_a_closed_connection_wait_in_its_grace_buffer() {
        let sink = Sink(Arc::default()).start();
        let (router, queue) = router_with(&sink);
        let pass = Pass::open();
        for f in frames(2) {
            router.deliver("k1", &f);
        }
        // the connection ends before the pass does
        sink.do_send(Stop);
        actix::clock::sleep(std::time::Duration::from_millis(50)).await;
        drop(pass);
        assert_eq!(queue.pending(), 0, "refunded");
        let slot = router.slots.get("k1").unwrap();
        let kept: Vec<String> = slot
            .buffer
            .lock()
            .unwrap()
            .take()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(kept, ["{\"n\":0}", "{\"n\":1}"]);
    }

    #[derive(actix::Message)]
    #[rtype(result = "()")]
    struct Stop;

    impl Handler<Stop> for Sink {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
}
