//! Request correlation: the table of requests awaiting a response.
//!
//! Two kinds of entry, both keyed by the request's `(from, id)` — which is the
//! response's `(to, id)`:
//!
//! * **local**: a [`Bus::post`](super::Bus::post) waiting for its final response:
//!   a one-shot sender, an optional channel for provisional (1xx) responses, the
//!   request's recipients (only they may answer it) and a deadline;
//! * **remote**: a request that came in through a protocol stub and was handed to
//!   a local listener: the recipient, so the requester gets a 500 if it crashes.
//!   Its requester gives up after its own timeout; an entry older than this
//!   table's timeout is dropped when room is needed, so requests nobody answers
//!   (a listener that ignores them, provisional answers only) cannot fill the
//!   table and lock the runtime's own requests out.
//!
//! Both share one bound ([`BusConfig::max_pending`](super::BusConfig::max_pending)).
//! The bus is the only user; the table is plain data with its own tests.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::BusError;
use crate::message::{Message, MessageId, ResponseCode, To};

/// `(requester, id)`.
pub(crate) type Key = (Arc<str>, MessageId);

/// Where the final response of a local request goes.
pub(crate) type Reply = oneshot::Sender<Result<Message, BusError>>;

struct Local {
    tx: Reply,
    progress: Option<mpsc::Sender<Message>>,
    to: To,
    deadline: Instant,
}

/// What became of a response offered to the table.
#[derive(Debug)]
pub(crate) enum Answer {
    /// It completed (or, if provisional, advanced) a local request.
    Taken,
    /// It answers a request that was not addressed to its responder: refused,
    /// the request stays pending.
    NotAddressed(Message),
    /// No local request waits for it: route it like any message.
    Route(Message),
}

/// What a response to a remote request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remote {
    /// It answers a request delivered to its responder.
    Answered,
    /// The request was delivered to someone else.
    NotAddressed,
    /// No remote request waits for it.
    Untracked,
}

/// What [`PendingTable::expire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The deadline passed: the entry was removed.
    Expired,
    /// A provisional response moved the deadline: wait until then.
    Later(Instant),
    /// The entry is gone (answered, failed or forgotten).
    Gone,
}

/// The pending-request table of one bus.
pub(crate) struct PendingTable {
    max: usize,
    timeout: Duration,
    local: DashMap<Key, Local>,
    remote: DashMap<Key, RemoteEntry>,
    tracked: AtomicUsize,
}

struct RemoteEntry {
    recipient: Arc<str>,
    since: Instant,
}

impl PendingTable {
    /// A table of at most `max` entries whose local requests wait `timeout`.
    pub(crate) fn new(max: usize, timeout: Duration) -> PendingTable {
        PendingTable {
            max,
            timeout,
            local: DashMap::new(),
            remote: DashMap::new(),
            tracked: AtomicUsize::new(0),
        }
    }

    fn reserve(&self) -> bool {
        if self.tracked.fetch_add(1, Relaxed) >= self.max {
            self.tracked.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    fn release(&self) {
        self.tracked.fetch_sub(1, Relaxed);
    }

    /// [`reserve`](Self::reserve), dropping remote entries older than the
    /// timeout first when the table is full.
    fn reserve_at(&self, now: Instant) -> bool {
        if self.reserve() {
            return true;
        }
        let stale = now.checked_sub(self.timeout);
        self.remote.retain(|_, e| {
            let keep = stale.is_none_or(|s| e.since > s);
            if !keep {
                self.release();
            }
            keep
        });
        self.reserve()
    }

    /// Entries of both kinds.
    pub(crate) fn len(&self) -> usize {
        self.tracked.load(Relaxed)
    }

    /// Records a local request sent to `to` at `now`. Full: [`BusError::Busy`].
    /// A second request with the same key replaces the first (it loses its
    /// correlation and times out).
    pub(crate) fn insert(
        &self,
        key: Key,
        to: To,
        tx: Reply,
        progress: Option<mpsc::Sender<Message>>,
        now: Instant,
    ) -> Result<(), BusError> {
        if !self.reserve_at(now) {
            return Err(BusError::Busy("the bus (pending requests)".to_owned()));
        }
        let entry = Local {
            tx,
            progress,
            to,
            deadline: now + self.timeout,
        };
        if self.local.insert(key, entry).is_some() {
            self.release();
        }
        Ok(())
    }

    /// Offers the response `msg` (keyed by its `(to, id)`). `may_answer` says
    /// whether its responder may answer a request sent to a given recipient
    /// (`None`: anyone may, e.g. the runtime owner or a stub). A provisional
    /// response moves the deadline of a request that shows progress.
    pub(crate) fn answer(
        &self,
        msg: Message,
        now: Instant,
        may_answer: Option<&dyn Fn(&str) -> bool>,
    ) -> Answer {
        let key = (msg.to.first().shared().clone(), msg.id);
        let addressed = |e: &Local| may_answer.is_none_or(|f| e.to.iter().any(|t| f(t.as_str())));
        if msg.body.code.is_some_and(ResponseCode::is_provisional) {
            let Some(mut e) = self.local.get_mut(&key) else {
                return Answer::Route(msg);
            };
            if !addressed(&e) {
                return Answer::NotAddressed(msg);
            }
            if let Some(p) = &e.progress {
                let _ = p.try_send(msg);
                e.deadline = now + self.timeout;
            }
            return Answer::Taken;
        }
        match self.local.remove_if(&key, |_, e| addressed(e)) {
            Some((_, e)) => {
                self.release();
                let _ = e.tx.send(Ok(msg));
                Answer::Taken
            }
            None if self.local.contains_key(&key) => Answer::NotAddressed(msg),
            None => Answer::Route(msg),
        }
    }

    /// Fails the local request `key` with `err`; false if none waits.
    pub(crate) fn fail(&self, key: &Key, err: BusError) -> bool {
        match self.local.remove(key) {
            Some((_, e)) => {
                self.release();
                let _ = e.tx.send(Err(err));
                true
            }
            None => false,
        }
    }

    /// Forgets the local request `key` (its waiter went away).
    pub(crate) fn forget(&self, key: &Key) {
        if self.local.remove(key).is_some() {
            self.release();
        }
    }

    /// Checks the deadline of the local request `key` at `now`.
    pub(crate) fn expire(&self, key: &Key, now: Instant) -> Expiry {
        let removed = self.local.remove_if(key, |_, e| e.deadline <= now);
        match removed {
            Some(_) => {
                self.release();
                Expiry::Expired
            }
            None => match self.local.get(key) {
                Some(e) => Expiry::Later(e.deadline),
                None => Expiry::Gone,
            },
        }
    }

    /// The deadline of the local request `key`.
    pub(crate) fn deadline(&self, key: &Key) -> Option<Instant> {
        self.local.get(key).map(|e| e.deadline)
    }

    /// Records that the remote request `key` was handed to `recipient` at `now`.
    /// When the table is full the request goes untracked (it is still delivered).
    pub(crate) fn track_remote(&self, key: Key, recipient: Arc<str>, now: Instant) {
        if !self.reserve_at(now) {
            return;
        }
        let entry = RemoteEntry {
            recipient,
            since: now,
        };
        if self.remote.insert(key, entry).is_some() {
            self.release();
        }
    }

    /// Forgets the remote request `key`.
    pub(crate) fn untrack_remote(&self, key: &Key) {
        if self.remote.remove(key).is_some() {
            self.release();
        }
    }

    /// A response to the remote request `key` leaves. `may_answer` says whether
    /// its responder may answer for a given recipient (`None`: anyone may); a
    /// final response forgets the entry.
    pub(crate) fn answer_remote(
        &self,
        key: &Key,
        final_response: bool,
        may_answer: Option<&dyn Fn(&str) -> bool>,
    ) -> Remote {
        let allowed = |r: &RemoteEntry| may_answer.is_none_or(|f| f(&r.recipient));
        if !final_response {
            return match self.remote.get(key) {
                Some(r) if allowed(&r) => Remote::Answered,
                Some(_) => Remote::NotAddressed,
                None => Remote::Untracked,
            };
        }
        match self.remote.remove_if(key, |_, r| allowed(r)) {
            Some(_) => {
                self.release();
                Remote::Answered
            }
            None if self.remote.contains_key(key) => Remote::NotAddressed,
            None => Remote::Untracked,
        }
    }

    /// Removes every request waiting for `recipient` (it crashed): fails the
    /// local ones with [`BusError::Unavailable`] and returns the remote ones, whose
    /// requesters must be told. The count of local requests failed comes first.
    pub(crate) fn drop_recipient(&self, recipient: &str) -> (usize, Vec<Key>) {
        let local: Vec<Key> = self
            .local
            .iter()
            .filter(|e| e.value().to.first().as_str() == recipient)
            .map(|e| e.key().clone())
            .collect();
        let mut n = 0;
        for k in local {
            n += usize::from(self.fail(&k, BusError::Unavailable(recipient.to_owned())));
        }
        let remote: Vec<Key> = self
            .remote
            .iter()
            .filter(|e| &*e.value().recipient == recipient)
            .map(|e| e.key().clone())
            .collect();
        let remote = remote
            .into_iter()
            .filter(|k| {
                let gone = self.remote.remove(k).is_some();
                if gone {
                    self.release();
                }
                gone
            })
            .collect();
        (n, remote)
    }

    /// Fails every local request with [`BusError::Shutdown`].
    pub(crate) fn shutdown(&self) {
        let keys: Vec<Key> = self.local.iter().map(|e| e.key().clone()).collect();
        for k in keys {
            self.fail(&k, BusError::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::message::MessageType;

    fn addr(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn request(from: &str, to: &str, id: MessageId) -> Message {
        Message::new(MessageType::Read, addr(from), addr(to)).with_id(id)
    }

    fn key(m: &Message) -> Key {
        (m.from.shared().clone(), m.id)
    }

    const A: &str = "hyperty://a.example/a";
    const B: &str = "hyperty://a.example/b";
    const E: &str = "hyperty://evil.example/e";
    const T: Duration = Duration::from_secs(10);

    #[test]
    fn insert_then_answer_completes_once() {
        let t = PendingTable::new(10, T);
        let now = Instant::now();
        let req = request(A, B, 1);
        let (tx, mut rx) = oneshot::channel();
        t.insert(key(&req), req.to.clone(), tx, None, now).unwrap();
        assert_eq!(t.len(), 1);
        let resp = req.reply(ResponseCode::Ok);
        assert!(matches!(t.answer(resp.clone(), now, None), Answer::Taken));
        assert_eq!(
            rx.try_recv().unwrap().unwrap().code(),
            Some(ResponseCode::Ok)
        );
        assert_eq!(t.len(), 0);
        assert!(matches!(t.answer(resp, now, None), Answer::Route(_)));
    }

    #[test]
    fn only_a_recipient_may_answer() {
        let t = PendingTable::new(10, T);
        let now = Instant::now();
        let req = request(A, B, 2);
        let (tx, mut rx) = oneshot::channel();
        t.insert(key(&req), req.to.clone(), tx, None, now).unwrap();
        let forged = req.reply_from(addr(E), ResponseCode::Ok);
        let evil = |a: &str| crate::address::is_under(a, E);
        assert!(matches!(
            t.answer(forged, now, Some(&evil)),
            Answer::NotAddressed(_)
        ));
        assert!(rx.try_recv().is_err(), "nothing reached the requester");
        assert_eq!(t.len(), 1);
        let b = |a: &str| crate::address::is_under(a, B);
        assert!(matches!(
            t.answer(req.reply(ResponseCode::Ok), now, Some(&b)),
            Answer::Taken
        ));
        assert!(rx.try_recv().unwrap().is_ok());
    }

    #[test]
    fn the_bound_is_kept() {
        let t = PendingTable::new(2, T);
        let now = Instant::now();
        for id in 1..=2 {
            let req = request(A, B, id);
            t.insert(key(&req), req.to.clone(), oneshot::channel().0, None, now)
                .unwrap();
        }
        let req = request(A, B, 3);
        let err = t
            .insert(key(&req), req.to.clone(), oneshot::channel().0, None, now)
            .unwrap_err();
        assert!(matches!(err, BusError::Busy(_)));
        t.track_remote((Arc::from(E), 9), Arc::from(B), now);
        assert_eq!(
            t.len(),
            2,
            "a remote request beyond the bound goes untracked"
        );
        // a reused key replaces, it does not count twice
        let req = request(A, B, 1);
        t.forget(&key(&req));
        t.insert(key(&req), req.to.clone(), oneshot::channel().0, None, now)
            .unwrap();
        t.forget(&key(&request(A, B, 2)));
        t.insert(key(&req), req.to.clone(), oneshot::channel().0, None, now)
            .unwrap();
        assert_eq!(t.len(), 1);
    }

    /// Remote requests nobody answers leave room once they are older than the
    /// timeout: the runtime's own requests are not locked out.
    #[test]
    fn unanswered_remote_requests_give_way_after_the_timeout() {
        let t = PendingTable::new(2, T);
        let start = Instant::now();
        for id in 1..=2 {
            t.track_remote((Arc::from(E), id), Arc::from(B), start);
        }
        let req = request(A, B, 3);
        let early = t.insert(
            key(&req),
            req.to.clone(),
            oneshot::channel().0,
            None,
            start + T / 2,
        );
        assert!(
            matches!(early, Err(BusError::Busy(_))),
            "within the timeout they count"
        );
        t.insert(
            key(&req),
            req.to.clone(),
            oneshot::channel().0,
            None,
            start + T * 2,
        )
        .unwrap();
        assert_eq!(
            t.len(),
            1,
            "both stale entries dropped, the new one counted"
        );
        assert_eq!(
            t.answer_remote(&(Arc::from(E), 1), true, None),
            Remote::Untracked
        );
    }

    #[test]
    fn timeout_and_progress_move_the_deadline() {
        let t = PendingTable::new(10, T);
        let start = Instant::now();
        let req = request(A, B, 4);
        let (ptx, mut prx) = mpsc::channel(4);
        t.insert(
            key(&req),
            req.to.clone(),
            oneshot::channel().0,
            Some(ptx),
            start,
        )
        .unwrap();
        assert_eq!(t.expire(&key(&req), start), Expiry::Later(start + T));
        let later = start + Duration::from_secs(5);
        let progress = req.reply(ResponseCode::Provisional);
        assert!(progress.body.code.is_some_and(ResponseCode::is_provisional));
        assert!(matches!(t.answer(progress, later, None), Answer::Taken));
        assert_eq!(
            prx.try_recv().unwrap().code(),
            Some(ResponseCode::Provisional)
        );
        assert_eq!(t.expire(&key(&req), start + T), Expiry::Later(later + T));
        assert_eq!(t.expire(&key(&req), later + T), Expiry::Expired);
        assert_eq!(t.len(), 0);
        assert_eq!(t.expire(&key(&req), later + T), Expiry::Gone);
    }

    #[test]
    fn a_crashed_recipient_fails_its_requests() {
        let t = PendingTable::new(10, T);
        let now = Instant::now();
        let to_b = request(A, B, 5);
        let to_e = request(A, E, 6);
        let (tx_b, mut rx_b) = oneshot::channel();
        let (tx_e, mut rx_e) = oneshot::channel();
        t.insert(key(&to_b), to_b.to.clone(), tx_b, None, now)
            .unwrap();
        t.insert(key(&to_e), to_e.to.clone(), tx_e, None, now)
            .unwrap();
        t.track_remote((Arc::from(E), 7), Arc::from(B), Instant::now());
        let (failed, remote) = t.drop_recipient(B);
        assert_eq!(failed, 1);
        assert_eq!(remote, vec![(Arc::from(E), 7)]);
        assert!(matches!(
            rx_b.try_recv().unwrap(),
            Err(BusError::Unavailable(_))
        ));
        assert!(rx_e.try_recv().is_err(), "others stay pending");
        assert_eq!(t.len(), 1);
        t.shutdown();
        assert!(matches!(rx_e.try_recv().unwrap(), Err(BusError::Shutdown)));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn remote_requests_are_answered_by_their_recipient_only() {
        let t = PendingTable::new(10, T);
        let k: Key = (Arc::from(A), 8);
        t.track_remote(k.clone(), Arc::from(B), Instant::now());
        let evil = |a: &str| crate::address::is_under(a, E);
        assert_eq!(t.answer_remote(&k, true, Some(&evil)), Remote::NotAddressed);
        assert_eq!(
            t.answer_remote(&k, false, Some(&evil)),
            Remote::NotAddressed
        );
        assert_eq!(t.len(), 1);
        let b = |a: &str| crate::address::is_under(a, B);
        assert_eq!(t.answer_remote(&k, false, Some(&b)), Remote::Answered);
        assert_eq!(t.len(), 1, "a provisional answer keeps it open");
        assert_eq!(t.answer_remote(&k, true, Some(&b)), Remote::Answered);
        assert_eq!(t.len(), 0);
        assert_eq!(t.answer_remote(&k, true, Some(&evil)), Remote::Untracked);
        t.track_remote(k.clone(), Arc::from(B), Instant::now());
        assert_eq!(t.answer_remote(&k, true, None), Remote::Answered);
        t.track_remote(k.clone(), Arc::from(B), Instant::now());
        t.untrack_remote(&k);
        assert_eq!(t.len(), 0);
    }
}
