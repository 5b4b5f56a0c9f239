//! Who held which address: the durable record behind re-claims.
//!
//! Every address the node binds to a session is recorded with its *holder*: the
//! session's authenticated identity, or for an anonymous session (`auth.mode =
//! optional`) its runtime URL. After a node restart, or once a session is gone, an
//! address may be bound again only for the same holder, for as long as the record
//! lives: `allocation.holder_retention_secs` after the address was last held. The
//! records live in an embedded [redb](https://docs.rs/redb) file under the node's
//! `data_dir` (owner-only), with an in-memory copy for lookups; at most
//! `allocation.max_holder_records` of them.
//!
//! [`AddressAllocation`](super::allocation::AddressAllocation) is the only user.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::info;

/// address → (holder, last held, seconds since the epoch)
const HOLDERS: TableDefinition<'static, &str, (&str, u64)> = TableDefinition::new("holders");

/// The file under the node's data directory.
pub const HOLDERS_FILE: &str = "holders.redb";

/// Why the record store failed.
#[derive(Debug, thiserror::Error)]
pub enum HoldersError {
    /// The directory or database could not be opened.
    #[error("cannot open the address records at {path}: {reason}")]
    Open {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
    /// A read or write failed.
    #[error("address record store: {0}")]
    Storage(String),
    /// `allocation.max_holder_records` reached.
    #[error("the node remembers at most {0} address holders")]
    Full(usize),
}

fn storage(e: impl std::fmt::Display) -> HoldersError {
    HoldersError::Storage(e.to_string())
}

#[derive(Debug, Clone)]
struct Record {
    holder: Arc<str>,
    seen: u64,
}

/// The address → holder records.
pub struct Holders {
    db: Option<Database>,
    records: HashMap<Arc<str>, Record>,
    retention: u64,
    max: usize,
}

impl std::fmt::Debug for Holders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holders")
            .field("records", &self.records.len())
            .field("durable", &self.db.is_some())
            .finish_non_exhaustive()
    }
}

impl Holders {
    /// Opens (or creates) the records in `dir` (created owner-only), or keeps them
    /// in memory for `None`. Records older than `retention` seconds at `now` are
    /// dropped on load.
    pub fn open(
        dir: Option<&Path>,
        retention: u64,
        max: usize,
        now: u64,
    ) -> Result<Holders, HoldersError> {
        let mut h = Holders {
            db: None,
            records: HashMap::new(),
            retention,
            max,
        };
        let Some(dir) = dir else {
            return Ok(h);
        };
        let path = dir.join(HOLDERS_FILE);
        let open_err = |reason: String| HoldersError::Open {
            path: path.display().to_string(),
            reason,
        };
        crate::private_files::create_private_dir(dir).map_err(|e| open_err(e.to_string()))?;
        crate::private_files::open_private_db(&path).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        {
            let tx = db.begin_write().map_err(storage)?;
            tx.open_table(HOLDERS).map_err(storage)?;
            tx.commit().map_err(storage)?;
        }
        {
            let tx = db.begin_read().map_err(storage)?;
            let table = tx.open_table(HOLDERS).map_err(storage)?;
            for item in table.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                let (holder, seen) = v.value();
                h.records.insert(
                    Arc::from(k.value()),
                    Record {
                        holder: Arc::from(holder),
                        seen,
                    },
                );
            }
        }
        h.db = Some(db);
        let swept = h.sweep(now)?;
        if !h.records.is_empty() || swept > 0 {
            info!(
                records = h.records.len(),
                expired = swept,
                "address holders resumed"
            );
        }
        Ok(h)
    }

    /// The holder remembered for `address`, if its record is still alive at `now`.
    pub fn holder(&self, address: &str, now: u64) -> Option<&str> {
        self.records
            .get(address)
            .filter(|r| now < r.seen.saturating_add(self.retention))
            .map(|r| &*r.holder)
    }

    /// True if `holder` may bind `address` at `now`: nobody else's live record.
    pub fn may_hold(&self, address: &str, holder: &str, now: u64) -> bool {
        self.holder(address, now).is_none_or(|h| h == holder)
    }

    /// Records `holder` for `addresses` (held as of `now`), in one transaction.
    pub fn record(
        &mut self,
        holder: &Arc<str>,
        addresses: &[Arc<str>],
        now: u64,
    ) -> Result<(), HoldersError> {
        let new = addresses
            .iter()
            .filter(|a| !self.records.contains_key(*a))
            .count();
        if self.records.len() + new > self.max {
            // expired records make room first
            self.sweep(now)?;
            if self.records.len() + new > self.max {
                return Err(HoldersError::Full(self.max));
            }
        }
        self.write(addresses.iter().map(|a| (a, Some((holder, now)))))?;
        for a in addresses {
            self.records.insert(
                a.clone(),
                Record {
                    holder: holder.clone(),
                    seen: now,
                },
            );
        }
        Ok(())
    }

    /// Marks `addresses` as held until `now` (their session ended): the retention
    /// counts from here.
    pub fn touch(&mut self, addresses: &[Arc<str>], now: u64) -> Result<(), HoldersError> {
        let touched: Vec<(Arc<str>, Arc<str>)> = addresses
            .iter()
            .filter_map(|a| self.records.get(a).map(|r| (a.clone(), r.holder.clone())))
            .collect();
        self.write(touched.iter().map(|(a, h)| (a, Some((h, now)))))?;
        for (a, _) in &touched {
            if let Some(r) = self.records.get_mut(a) {
                r.seen = now;
            }
        }
        Ok(())
    }

    /// Forgets records older than the retention; returns how many.
    pub fn sweep(&mut self, now: u64) -> Result<usize, HoldersError> {
        let expired: Vec<Arc<str>> = self
            .records
            .iter()
            .filter(|(_, r)| now >= r.seen.saturating_add(self.retention))
            .map(|(a, _)| a.clone())
            .collect();
        self.write(expired.iter().map(|a| (a, None)))?;
        for a in &expired {
            self.records.remove(a);
        }
        Ok(expired.len())
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Closes the file (the records stay in memory): another node may open it.
    pub fn close(&mut self) {
        self.db = None;
    }

    fn write<'a>(
        &self,
        changes: impl Iterator<Item = (&'a Arc<str>, Option<(&'a Arc<str>, u64)>)>,
    ) -> Result<(), HoldersError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let mut changes = changes.peekable();
        if changes.peek().is_none() {
            return Ok(());
        }
        let tx = db.begin_write().map_err(storage)?;
        {
            let mut t = tx.open_table(HOLDERS).map_err(storage)?;
            for (address, change) in changes {
                match change {
                    Some((holder, seen)) => {
                        t.insert(&**address, (&**holder, seen)).map_err(storage)?;
                    }
                    None => {
                        t.remove(&**address).map_err(storage)?;
                    }
                }
            }
        }
        tx.commit().map_err(storage)?;
        Ok(())
    }
}

/// The holders file of a node whose data directory is `dir`.
pub fn holders_path(dir: &Path) -> PathBuf {
    dir.join(HOLDERS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn records_survive_a_reopen_and_expire() {
        let dir = std::env::temp_dir().join(format!("hyperty-holders-{}", uuid::Uuid::new_v4()));
        let alice = a("user://d/alice");
        {
            let mut h = Holders::open(Some(&dir), 100, 10, 1_000).unwrap();
            h.record(&alice, &[a("hyperty://d/1"), a("hyperty://d/2")], 1_000)
                .unwrap();
            h.touch(&[a("hyperty://d/2")], 1_050).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&holders_path(&dir)), 0o600);
        }
        let h = Holders::open(Some(&dir), 100, 10, 1_060).unwrap();
        assert_eq!(h.holder("hyperty://d/1", 1_060), Some("user://d/alice"));
        assert!(h.may_hold("hyperty://d/1", "user://d/alice", 1_060));
        assert!(!h.may_hold("hyperty://d/1", "user://d/mallory", 1_060));
        assert!(h.may_hold("hyperty://d/unknown", "user://d/mallory", 1_060));
        // 1 was last held at 1000, 2 at 1050: retention 100
        assert!(h.may_hold("hyperty://d/1", "user://d/mallory", 1_100));
        assert!(!h.may_hold("hyperty://d/2", "user://d/mallory", 1_100));
        drop(h);
        let h = Holders::open(Some(&dir), 100, 10, 1_120).unwrap();
        assert_eq!(h.len(), 1, "the expired record was swept on load");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_number_of_records_is_bounded() {
        let mut h = Holders::open(None, 100, 2, 0).unwrap();
        let who = a("runtime://d/rt");
        h.record(&who, &[a("hyperty://d/1"), a("hyperty://d/2")], 0)
            .unwrap();
        assert!(matches!(
            h.record(&who, &[a("hyperty://d/3")], 10),
            Err(HoldersError::Full(2))
        ));
        // re-recording a known address needs no room
        h.record(&who, &[a("hyperty://d/1")], 10).unwrap();
        // expired ones make room
        h.record(&who, &[a("hyperty://d/3")], 105).unwrap();
        assert_eq!(h.len(), 2);
    }
}
