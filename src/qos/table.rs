//! The broker's table: the latest connectivity report of each runtime, bounded.
//!
//! A plain data structure, written only by the [`QosBroker`](super::QosBroker)
//! actor. At most `max_reports` runtimes are kept; a report from a new runtime
//! when the table is full evicts the runtime whose latest report is the oldest
//! (an index by arrival order finds it in O(log n)).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hyperty_actors::qos::ConnectivityReport;
use serde::Serialize;

/// A report as the broker keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredReport {
    /// The report as the runtime sent it.
    #[serde(flatten)]
    pub report: ConnectivityReport,
    /// When the broker received it (ms since the Unix epoch).
    pub received_at: u64,
    /// True while the runtime's session is lost (it may come back); the report is
    /// dropped when the session is closed for good.
    pub stale: bool,
}

#[derive(Debug)]
struct Entry {
    stored: StoredReport,
    /// Position in the arrival order.
    seq: u64,
}

/// Latest report per runtime URL, at most `max` runtimes.
#[derive(Debug)]
pub(crate) struct ReportTable {
    max: usize,
    entries: HashMap<Arc<str>, Entry>,
    /// Arrival order → runtime: the first is the oldest.
    order: BTreeMap<u64, Arc<str>>,
    next: u64,
}

impl ReportTable {
    /// An empty table keeping at most `max` runtimes (at least one).
    pub(crate) fn new(max: usize) -> ReportTable {
        ReportTable {
            max: max.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    /// Keeps `stored` as the latest report of its runtime; returns the runtime
    /// evicted to make room, if one was.
    pub(crate) fn put(&mut self, stored: StoredReport) -> Option<Arc<str>> {
        let runtime: Arc<str> = Arc::from(stored.report.runtime.as_str());
        self.next += 1;
        let seq = self.next;
        if let Some(old) = self.entries.insert(runtime.clone(), Entry { stored, seq }) {
            self.order.remove(&old.seq);
            self.order.insert(seq, runtime);
            return None;
        }
        self.order.insert(seq, runtime);
        if self.entries.len() <= self.max {
            return None;
        }
        let (_, oldest) = self.order.pop_first()?;
        self.entries.remove(&oldest);
        Some(oldest)
    }

    /// Marks the report of `runtime` stale (or fresh again); false if there is none.
    pub(crate) fn mark_stale(&mut self, runtime: &str, stale: bool) -> bool {
        match self.entries.get_mut(runtime) {
            Some(e) => {
                e.stored.stale = stale;
                true
            }
            None => false,
        }
    }

    /// Forgets the report of `runtime`; false if there was none.
    pub(crate) fn remove(&mut self, runtime: &str) -> bool {
        match self.entries.remove(runtime) {
            Some(e) => {
                self.order.remove(&e.seq);
                true
            }
            None => false,
        }
    }

    /// The report of `runtime`.
    pub(crate) fn get(&self, runtime: &str) -> Option<&StoredReport> {
        self.entries.get(runtime).map(|e| &e.stored)
    }

    /// Every report, by runtime URL.
    pub(crate) fn all(&self) -> Vec<StoredReport> {
        let mut v: Vec<StoredReport> = self.entries.values().map(|e| e.stored.clone()).collect();
        v.sort_by(|a, b| a.report.runtime.cmp(&b.report.runtime));
        v
    }

    /// Runtimes with a report.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rt: &str, at: u64) -> StoredReport {
        StoredReport {
            report: ConnectivityReport {
                runtime: rt.parse().unwrap(),
                sent_at: at,
                stubs: Vec::new(),
            },
            received_at: at,
            stale: false,
        }
    }

    const A: &str = "hyperty-runtime://d.org/a";
    const B: &str = "hyperty-runtime://d.org/b";
    const C: &str = "hyperty-runtime://d.org/c";

    #[test]
    fn keeps_the_latest_per_runtime_and_evicts_the_oldest() {
        let mut t = ReportTable::new(2);
        assert_eq!(t.put(report(A, 1)), None);
        assert_eq!(t.put(report(B, 2)), None);
        // A reports again: it is now the newest, B the oldest
        assert_eq!(t.put(report(A, 3)), None);
        assert_eq!(t.get(A).map(|s| s.received_at), Some(3));
        assert_eq!(t.put(report(C, 4)).as_deref(), Some(B));
        assert_eq!(t.len(), 2);
        assert!(t.get(B).is_none());
        let all: Vec<_> = t
            .all()
            .into_iter()
            .map(|s| s.report.runtime.to_string())
            .collect();
        assert_eq!(all, [A, C]);
    }

    #[test]
    fn stale_and_removed() {
        let mut t = ReportTable::new(8);
        t.put(report(A, 1));
        assert!(t.mark_stale(A, true));
        assert!(t.get(A).is_some_and(|s| s.stale));
        assert!(!t.mark_stale(B, true));
        // a new report from the runtime is fresh
        t.put(report(A, 2));
        assert!(t.get(A).is_some_and(|s| !s.stale));
        assert!(t.remove(A));
        assert!(!t.remove(A));
        assert_eq!(t.len(), 0);
        // the arrival index is clean: filling up evicts nothing that is gone
        t.put(report(B, 3));
        assert_eq!(t.order.len(), 1);
    }
}
