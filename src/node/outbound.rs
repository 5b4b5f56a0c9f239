//! Flow control between sessions: the byte budget of each client's outbound queue.
//!
//! Every live connection has one [`OutboundQueue`], shared by the router (which
//! charges each frame it hands to the connection's mailbox) and the connection's own
//! actor (which discharges it once the frame has moved to the socket writer). Three
//! limits, all from `[session]`:
//!
//! | limit | what happens |
//! |---|---|
//! | `slow_down_bytes` pending | the **sender** is slowed: it stops reading its own socket until the queue is back below half of it (TCP pushes back on the client that floods); the receiver keeps everything |
//! | `max_pending_bytes` pending | the receiver is evicted: its socket is shut, its session freed |
//! | no write progress for `write_deadline_ms` while frames are pending | the same eviction (checked by the session manager's sweep) |
//!
//! So a fast sender to a healthy receiver is slowed and nothing is lost, while a
//! client that stops reading costs at most `max_pending_bytes` for at most
//! `write_deadline_ms`. Progress is counted in frames (no clock read per frame).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// What charging a frame to a queue found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Room to spare.
    Ok,
    /// Above the slow-down mark: the sender should wait for [`OutboundQueue::space`].
    Congested,
    /// Above the hard budget: the frame was not charged and the receiver must be
    /// evicted.
    OverBudget,
    /// The connection has ended or was evicted: the frame was not charged.
    Closed,
}

/// Limits of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Pending bytes above which senders are slowed.
    pub slow_down: usize,
    /// Pending bytes above which the receiver is evicted.
    pub budget: usize,
}

/// The byte account of one connection's outbound queue.
#[derive(Debug)]
pub struct OutboundQueue {
    limits: QueueLimits,
    pending: AtomicUsize,
    /// Frames written so far: the write-progress counter.
    written: AtomicU64,
    closed: AtomicBool,
    waiting: AtomicBool,
    space: Notify,
    socket: Option<ConnSocket>,
    /// The thread the queue was made on: its connection's.
    thread: u64,
}

impl OutboundQueue {
    /// An empty queue; `socket` (a duplicate of the connection's descriptor, see
    /// [`ConnSocket`]) lets an eviction shut the connection even when its actor is
    /// stuck behind a full socket.
    pub fn new(limits: QueueLimits, socket: Option<ConnSocket>) -> Arc<OutboundQueue> {
        Arc::new(OutboundQueue {
            limits,
            pending: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            space: Notify::new(),
            socket,
            thread: super::handoff::thread_no(),
        })
    }

    /// True on the thread the queue was made on (its connection's, where a
    /// frame handed over at once wakes nobody on another thread).
    pub fn on_this_thread(&self) -> bool {
        self.thread == super::handoff::thread_no()
    }

    /// Charges a frame of `len` bytes about to be queued.
    pub fn charge(&self, len: usize) -> Charge {
        if self.closed.load(Relaxed) {
            return Charge::Closed;
        }
        let now = self.pending.fetch_add(len, Relaxed) + len;
        if now > self.limits.budget {
            self.pending.fetch_sub(len, Relaxed);
            Charge::OverBudget
        } else if now > self.limits.slow_down {
            Charge::Congested
        } else {
            Charge::Ok
        }
    }

    /// Charges a frame whatever the budget (frames a session kept while it was away,
    /// already bounded by the grace buffer).
    pub fn force(&self, len: usize) {
        self.pending.fetch_add(len, Relaxed);
    }

    /// Gives back the charge of a frame that was not queued after all.
    pub fn refund(&self, len: usize) {
        self.pending.fetch_sub(len, Relaxed);
    }

    /// A frame of `len` bytes was handed to the socket writer.
    pub fn written(&self, len: usize) {
        self.written.fetch_add(1, Relaxed);
        let left = self.pending.fetch_sub(len, Relaxed).saturating_sub(len);
        if left <= self.limits.slow_down / 2 && self.waiting.swap(false, Relaxed) {
            self.space.notify_waiters();
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// Frames written so far.
    pub fn progress(&self) -> u64 {
        self.written.load(Relaxed)
    }

    /// True once the queue's connection was evicted.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Closes the queue (nothing more is charged to it) and wakes its waiting
    /// senders. Returns false if it was closed already.
    pub fn close(&self) -> bool {
        if self.closed.swap(true, Relaxed) {
            return false;
        }
        self.space.notify_waiters();
        true
    }

    /// Closes the queue and shuts the socket down, so that the connection ends even
    /// if its actor is not being polled (its client stopped reading). Returns false
    /// if the queue was closed already.
    pub fn evict(&self) -> bool {
        if !self.close() {
            return false;
        }
        if let Some(socket) = &self.socket {
            let _ = socket.0.shutdown(std::net::Shutdown::Both);
        }
        true
    }

    /// Resolves once the queue is back below half the slow-down mark, is closed, or
    /// `deadline` passed (then the session manager's sweep deals with the receiver).
    pub async fn space(self: Arc<Self>, deadline: Duration) {
        let wait = async {
            loop {
                let notified = self.space.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                self.waiting.store(true, Relaxed);
                if self.is_closed() || self.pending() <= self.limits.slow_down / 2 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
    }
}

/// A duplicate of a connection's socket descriptor, taken when the connection is
/// accepted (see [`on_connect`]) and kept in the connection's data.
#[derive(Debug, Clone)]
pub struct ConnSocket(Arc<std::net::TcpStream>);

/// The `HttpServer::on_connect` hook that lets the node evict a client that stopped
/// reading: it keeps a duplicate of each TCP connection's descriptor. [`start`](super::start)
/// installs it; an application that mounts the node into its own server should
/// install it too (`HttpServer::new(..).on_connect(hyperty::node::on_connect)`),
/// otherwise evicted clients are only told to close, which a stuck socket never reads.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd;
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            data.insert(ConnSocket(Arc::new(std::net::TcpStream::from(fd))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(slow_down: usize, budget: usize) -> Arc<OutboundQueue> {
        OutboundQueue::new(QueueLimits { slow_down, budget }, None)
    }

    #[test]
    fn charges_congest_then_refuse_past_the_budget() {
        let q = queue(100, 300);
        assert_eq!(q.charge(60), Charge::Ok);
        assert_eq!(q.charge(60), Charge::Congested);
        assert_eq!(q.charge(200), Charge::OverBudget);
        assert_eq!(q.pending(), 120, "a refused frame is not charged");
        q.written(60);
        q.written(60);
        assert_eq!((q.pending(), q.progress()), (0, 2));
        assert!(q.close());
        assert!(!q.close());
        assert_eq!(q.charge(1), Charge::Closed);
    }

    #[actix::test]
    async fn a_waiting_sender_wakes_when_the_queue_drains_or_closes() {
        let q = queue(100, 1000);
        q.charge(150);
        let waiter = actix::spawn(q.clone().space(Duration::from_secs(30)));
        tokio::task::yield_now().await;
        q.written(150);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the drain")
            .unwrap();
        q.charge(150);
        let waiter = actix::spawn(q.clone().space(Duration::from_secs(30)));
        tokio::task::yield_now().await;
        q.close();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the close")
            .unwrap();
    }

    #[actix::test]
    async fn a_stuck_receiver_releases_its_sender_at_the_deadline() {
        let q = queue(100, 1000);
        q.charge(150);
        tokio::time::timeout(
            Duration::from_secs(5),
            q.clone().space(Duration::from_millis(20)),
        )
        .await
        .expect("the deadline ends the wait");
    }
}
