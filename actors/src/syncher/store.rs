//! The durable store of a runtime's sync objects: one embedded redb database (a
//! file, or memory when no path is configured), like the Local Event Cache.
//!
//! Two tables, keyed by object URL, each value one JSON document:
//!
//! * `sync_reported`: a reported object — its state (data, version, children),
//!   schema, history window, invited and accepted observers;
//! * `sync_observed`: an observed replica — its state and its local observers.
//!
//! The [`SyncherManager`](super::SyncherManager) writes the objects a burst of
//! changes touched in one transaction ([`SyncStore::write`]) and loads everything
//! at start, so a restarted runtime resumes its objects with the same URLs and
//! versions.
//!
//! ```
//! use hyperty_actors::syncher::store::{SyncStore, Write};
//! let store = SyncStore::open(None).unwrap();
//! store.write(vec![Write::Reported("comm://d/1".into(), Some(r#"{"x":1}"#.into()))]).unwrap();
//! let (reported, observed) = store.load().unwrap();
//! assert_eq!(reported, vec![("comm://d/1".to_owned(), r#"{"x":1}"#.to_owned())]);
//! assert!(observed.is_empty());
//! ```

use std::fmt;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::SyncError;

const REPORTED: TableDefinition<'_, &str, &str> = TableDefinition::new("sync_reported");
const OBSERVED: TableDefinition<'_, &str, &str> = TableDefinition::new("sync_observed");

/// One change to the store: a document to put (`Some`) or remove (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A reported object.
    Reported(String, Option<String>),
    /// An observed replica.
    Observed(String, Option<String>),
}

/// The redb database of sync objects.
pub struct SyncStore {
    db: Database,
}

impl fmt::Debug for SyncStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncStore").finish_non_exhaustive()
    }
}

fn store_err(e: impl fmt::Display) -> SyncError {
    SyncError::Store(e.to_string())
}

impl SyncStore {
    /// Opens (or creates) the database at `path`, or an in-memory one for `None`.
    pub fn open(path: Option<&Path>) -> Result<SyncStore, SyncError> {
        let db = match path {
            Some(p) => Database::create(p).map_err(store_err)?,
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(store_err)?,
        };
        let tx = db.begin_write().map_err(store_err)?;
        tx.open_table(REPORTED).map_err(store_err)?;
        tx.open_table(OBSERVED).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(SyncStore { db })
    }

    /// Every stored document: (reported, observed), as (URL, JSON) pairs.
    #[allow(clippy::type_complexity)]
    pub fn load(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>), SyncError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let read =
            |def: TableDefinition<'_, &str, &str>| -> Result<Vec<(String, String)>, SyncError> {
                let table = tx.open_table(def).map_err(store_err)?;
                let mut out = Vec::new();
                for item in table.iter().map_err(store_err)? {
                    let (k, v) = item.map_err(store_err)?;
                    out.push((k.value().to_owned(), v.value().to_owned()));
                }
                Ok(out)
            };
        Ok((read(REPORTED)?, read(OBSERVED)?))
    }

    /// Applies `writes` in one transaction.
    pub fn write(&self, writes: Vec<Write>) -> Result<(), SyncError> {
        if writes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut reported = tx.open_table(REPORTED).map_err(store_err)?;
            let mut observed = tx.open_table(OBSERVED).map_err(store_err)?;
            for w in &writes {
                let (table, key, doc) = match w {
                    Write::Reported(k, d) => (&mut reported, k, d),
                    Write::Observed(k, d) => (&mut observed, k, d),
                };
                match doc {
                    Some(d) => {
                        table.insert(key.as_str(), d.as_str()).map_err(store_err)?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(store_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopening_a_file() {
        let path = std::env::temp_dir().join(format!("hyperty-sync-{}.redb", uuid::Uuid::new_v4()));
        {
            let s = SyncStore::open(Some(&path)).unwrap();
            s.write(vec![
                Write::Reported("a".into(), Some("1".into())),
                Write::Observed("b".into(), Some("2".into())),
                Write::Reported("c".into(), Some("3".into())),
            ])
            .unwrap();
            s.write(vec![Write::Reported("c".into(), None)]).unwrap();
        }
        let s = SyncStore::open(Some(&path)).unwrap();
        let (r, o) = s.load().unwrap();
        assert_eq!(r, vec![("a".to_owned(), "1".to_owned())]);
        assert_eq!(o, vec![("b".to_owned(), "2".to_owned())]);
        drop(s);
        let _ = std::fs::remove_file(path);
    }
}
