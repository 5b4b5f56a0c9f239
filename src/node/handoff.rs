//! Deliveries held back until the end of the sender's read pass.
//!
//! A connection's actor reads up to [`FRAMES_PER_POLL`](crate::server::inbound::FRAMES_PER_POLL)
//! frames per poll (a *read pass*, [`Pass`]). Every frame it routes to a live
//! session is charged to that session's byte account at once, as always, but the
//! frame itself waits in this thread's hand-off list; when the pass ends, each
//! recipient gets its frames in one mailbox message ([`OutboundBurst`]), in order. A recipient on another
//! worker thread is then woken once per pass instead of once per frame, and
//! writes its socket with one send per burst: nats-server hands its deliveries
//! over the same way (a client's pending flushes, signalled once per read).
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
