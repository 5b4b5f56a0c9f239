//! The registry's tables: entries by URL plus the indexes the reads and the expiry
//! sweep need. Plain data, owned and written by the registry actor alone.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::error::DomainRegistryError;
use super::model::{DataObjectRecord, HypertyRecord, Record, Status};

/// One entry with its holder and deadline: also the form a shared registry keeps
/// in Redis (see [`super::shared`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Slot {
    #[serde(with = "super::shared::RecordDef")]
    record: Record,
    /// Who registered the entry: the caller's identity, or its runtime URL if it
    /// is anonymous. Only the holder may change the entry, and caps count per holder.
    holder: String,
    deadline: SystemTime,
}

type Index = HashMap<String, BTreeSet<String>>;

fn index_add(index: &mut Index, key: &str, url: &str) {
    index
        .entry(key.to_owned())
        .or_default()
        .insert(url.to_owned());
}

fn index_remove(index: &mut Index, key: &str, url: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(url);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// `user-guid://abc` and `abc` name the same guid.
pub(crate) fn guid_key(guid: &str) -> &str {
    guid.strip_prefix("user-guid://").unwrap_or(guid)
}

/// Entries and indexes, bounded by a total and a per-holder limit.
#[derive(Debug)]
pub(crate) struct Table {
    entries: HashMap<String, Slot>,
    by_holder: Index,
    by_user: Index,
    by_reporter: Index,
    by_guid: Index,
    by_name: Index,
    by_runtime: Index,
    deadlines: BTreeSet<(SystemTime, String)>,
    /// URLs changed since the last [`Table::take_dirty`] (what a shared registry
    /// writes through).
    dirty: BTreeSet<String>,
    max_entries: usize,
    max_per_holder: usize,
}

impl Table {
    pub(crate) fn new(max_entries: usize, max_per_holder: usize) -> Table {
        Table {
            entries: HashMap::new(),
            by_holder: Index::new(),
            by_user: Index::new(),
            by_reporter: Index::new(),
            by_guid: Index::new(),
            by_name: Index::new(),
            by_runtime: Index::new(),
            deadlines: BTreeSet::new(),
            dirty: BTreeSet::new(),
            max_entries,
            max_per_holder,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn count_hyperties(&self) -> usize {
        self.entries
            .values()
            .filter(|s| matches!(s.record, Record::Hyperty(_)))
            .count()
    }

    pub(crate) fn count_users(&self) -> usize {
        self.by_user.len()
    }

    pub(crate) fn get(&self, url: &str) -> Option<&Record> {
        self.entries.get(url).map(|s| &s.record)
    }

    /// Who registered the entry at `url`.
    pub(crate) fn holder(&self, url: &str) -> Option<&str> {
        self.entries.get(url).map(|s| s.holder.as_str())
    }

    /// Inserts or replaces the entry at `record.url()` for `holder`, expiring at
    /// `deadline`. Returns the replaced entry. Fails with 429 errors when a limit
    /// would be exceeded (a replacement counts only if it moves to another holder).
    pub(crate) fn insert(
        &mut self,
        record: Record,
        holder: &str,
        deadline: SystemTime,
    ) -> Result<Option<Record>, DomainRegistryError> {
        let url = record.url().to_owned();
        let exists = self.entries.contains_key(&url);
        if !exists && self.entries.len() >= self.max_entries {
            return Err(DomainRegistryError::Full {
                limit: self.max_entries,
            });
        }
        let held = self.by_holder.get(holder);
        let already_counted = held.is_some_and(|s| s.contains(&url));
        if !already_counted && held.map_or(0, BTreeSet::len) >= self.max_per_holder {
            return Err(DomainRegistryError::OwnerLimit {
                owner: holder.to_owned(),
                limit: self.max_per_holder,
            });
        }
        let old = self.remove(&url);
        self.place(
            url,
            Slot {
                record,
                holder: holder.to_owned(),
                deadline,
            },
        );
        Ok(old)
    }

    fn place(&mut self, url: String, slot: Slot) {
        self.index(&slot.record, &slot.holder, &url);
        self.deadlines.insert((slot.deadline, url.clone()));
        self.dirty.insert(url.clone());
        self.entries.insert(url, slot);
    }

    /// The URLs changed since the last call, with their entries now (`None`:
    /// removed).
    pub(crate) fn take_dirty(&mut self) -> Vec<(String, Option<Slot>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|url| {
                let slot = self.entries.get(&url).cloned();
                (url, slot)
            })
            .collect()
    }

    /// Replaces the entry at `url` by `slot` (`None`: removes it) as another node
    /// wrote it: no limit applies and nothing is marked changed.
    pub(crate) fn load(&mut self, url: &str, slot: Option<Slot>) {
        self.remove(url);
        if let Some(slot) = slot {
            self.place(url.to_owned(), slot);
        }
        self.dirty.remove(url);
    }

    /// Forgets every entry (before a full reload).
    pub(crate) fn clear(&mut self) {
        *self = Table::new(self.max_entries, self.max_per_holder);
    }

    fn index(&mut self, record: &Record, holder: &str, url: &str) {
        index_add(&mut self.by_holder, holder, url);
        match record {
            Record::Hyperty(h) => {
                index_add(&mut self.by_user, &h.user, url);
                if let Some(g) = &h.guid {
                    index_add(&mut self.by_guid, guid_key(g), url);
                }
            }
            Record::DataObject(d) => {
                index_add(&mut self.by_reporter, &d.reporter, url);
                index_add(&mut self.by_name, &d.name, url);
            }
        }
        if let Some(rt) = record.runtime() {
            index_add(&mut self.by_runtime, rt, url);
        }
    }

    /// Removes an entry and its index rows.
    pub(crate) fn remove(&mut self, url: &str) -> Option<Record> {
        let Slot {
            record,
            holder,
            deadline,
        } = self.entries.remove(url)?;
        self.dirty.insert(url.to_owned());
        self.deadlines.remove(&(deadline, url.to_owned()));
        index_remove(&mut self.by_holder, &holder, url);
        match &record {
            Record::Hyperty(h) => {
                index_remove(&mut self.by_user, &h.user, url);
                if let Some(g) = &h.guid {
                    index_remove(&mut self.by_guid, guid_key(g), url);
                }
            }
            Record::DataObject(d) => {
                index_remove(&mut self.by_reporter, &d.reporter, url);
                index_remove(&mut self.by_name, &d.name, url);
            }
        }
        if let Some(rt) = record.runtime() {
            index_remove(&mut self.by_runtime, rt, url);
        }
        Some(record)
    }

    /// Sets an entry's status (not an indexed field). Returns the previous status.
    pub(crate) fn set_status(
        &mut self,
        url: &str,
        status: Status,
        now: SystemTime,
    ) -> Option<Status> {
        let slot = self.entries.get_mut(url)?;
        let before = slot.record.status();
        if before != status {
            slot.record.set_status(status);
            slot.record.set_times(None, now);
            self.dirty.insert(url.to_owned());
        }
        Some(before)
    }

    /// URLs whose deadline is at or before `now`, earliest first.
    pub(crate) fn due(&self, now: SystemTime) -> Vec<String> {
        self.deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, url)| url.clone())
            .collect()
    }

    /// The runtimes with at least one `live` entry.
    pub(crate) fn live_runtimes(&self) -> Vec<String> {
        self.by_runtime
            .iter()
            .filter(|(_, urls)| {
                urls.iter()
                    .any(|u| self.get(u).is_some_and(|r| r.status() == Status::Live))
            })
            .map(|(rt, _)| rt.clone())
            .collect()
    }

    pub(crate) fn urls_of_runtime(&self, runtime: &str) -> Vec<String> {
        self.by_runtime
            .get(runtime)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn hyperties_in<'a>(
        &'a self,
        index: &'a Index,
        key: &str,
    ) -> impl Iterator<Item = &'a HypertyRecord> + 'a {
        index
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|url| match self.get(url) {
                Some(Record::Hyperty(h)) => Some(h),
                _ => None,
            })
    }

    fn data_objects_in<'a>(
        &'a self,
        index: &'a Index,
        key: &str,
    ) -> impl Iterator<Item = &'a DataObjectRecord> + 'a {
        index
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|url| match self.get(url) {
                Some(Record::DataObject(d)) => Some(d),
                _ => None,
            })
    }

    pub(crate) fn hyperties_of_user<'a>(
        &'a self,
        user: &str,
    ) -> impl Iterator<Item = &'a HypertyRecord> + 'a {
        self.hyperties_in(&self.by_user, user)
    }

    pub(crate) fn hyperties_of_guid<'a>(
        &'a self,
        guid: &str,
    ) -> impl Iterator<Item = &'a HypertyRecord> + 'a {
        self.hyperties_in(&self.by_guid, guid_key(guid))
    }

    pub(crate) fn data_objects_named<'a>(
        &'a self,
        name: &str,
    ) -> impl Iterator<Item = &'a DataObjectRecord> + 'a {
        self.data_objects_in(&self.by_name, name)
    }

    /// Every data object (discovery by criteria scans them; the table is bounded).
    pub(crate) fn data_objects(&self) -> impl Iterator<Item = &DataObjectRecord> + '_ {
        self.entries.values().filter_map(|s| match &s.record {
            Record::DataObject(d) => Some(d),
            _ => None,
        })
    }

    pub(crate) fn data_objects_of_reporter<'a>(
        &'a self,
        reporter: &str,
    ) -> impl Iterator<Item = &'a DataObjectRecord> + 'a {
        self.data_objects_in(&self.by_reporter, reporter)
    }

    /// Panics if an index disagrees with the entries (tests only).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let rows = |i: &Index| i.values().map(BTreeSet::len).sum::<usize>();
        assert!(self.entries.len() <= self.max_entries);
        assert_eq!(self.deadlines.len(), self.entries.len());
        for (d, url) in &self.deadlines {
            assert_eq!(self.entries.get(url).map(|s| s.deadline), Some(*d));
        }
        let mut users = 0;
        let mut reporters = 0;
        let mut guids = 0;
        let mut runtimes = 0;
        for (url, slot) in &self.entries {
            assert_eq!(slot.record.url(), url);
            let held = self.by_holder.get(&slot.holder);
            assert!(held.is_some_and(|s| s.contains(url)));
            assert!(held.is_some_and(|s| s.len() <= self.max_per_holder));
            match &slot.record {
                Record::Hyperty(h) => {
                    assert!(self.by_user.get(&h.user).is_some_and(|s| s.contains(url)));
                    users += 1;
                    guids += usize::from(h.guid.is_some());
                }
                Record::DataObject(d) => {
                    reporters += 1;
                    assert!(self
                        .by_reporter
                        .get(&d.reporter)
                        .is_some_and(|s| s.contains(url)));
                    assert!(self.by_name.get(&d.name).is_some_and(|s| s.contains(url)));
                }
            }
            if let Some(rt) = slot.record.runtime() {
                runtimes += 1;
                assert!(self.by_runtime.get(rt).is_some_and(|s| s.contains(url)));
            }
        }
        assert_eq!(rows(&self.by_holder), self.entries.len());
        assert_eq!(rows(&self.by_user), users);
        assert_eq!(rows(&self.by_reporter), reporters);
        assert_eq!(rows(&self.by_name), reporters);
        assert_eq!(rows(&self.by_guid), guids);
        assert_eq!(rows(&self.by_runtime), runtimes);
        for index in [
            &self.by_holder,
            &self.by_user,
            &self.by_reporter,
            &self.by_guid,
            &self.by_name,
            &self.by_runtime,
        ] {
            assert!(index.values().all(|s| !s.is_empty()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn hyperty(n: u8, user: u8, runtime: u8) -> Record {
        Record::Hyperty(HypertyRecord {
            url: format!("hyperty://d.org/{n}"),
            user: format!("user://idp.org/{user}"),
            descriptor: "desc".into(),
            resources: vec![],
            data_schemes: vec![],
            runtime: Some(format!("runtime://d.org/{runtime}")),
            p2p_requester: None,
            p2p_handler: None,
            guid: Some(format!("user-guid://{user}")),
            status: Status::Live,
            expires: 10,
            starting_time: UNIX_EPOCH,
            last_modified: UNIX_EPOCH,
        })
    }

    fn object(n: u8, reporter: u8) -> Record {
        Record::DataObject(DataObjectRecord {
            url: format!("comm://d.org/{n}"),
            name: format!("room-{}", n % 3),
            schema: "schema".into(),
            reporter: format!("hyperty://d.org/{reporter}"),
            resources: vec![],
            data_schemes: vec!["comm".into()],
            runtime: None,
            p2p_requester: None,
            status: Status::Live,
            expires: 10,
            starting_time: UNIX_EPOCH,
            last_modified: UNIX_EPOCH,
        })
    }

    /// Inserts `r` for the holder named like its owner.
    fn insert(
        t: &mut Table,
        r: Record,
        deadline: SystemTime,
    ) -> Result<Option<Record>, DomainRegistryError> {
        let holder = r.owner().to_owned();
        t.insert(r, &holder, deadline)
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn limits_count_new_entries_only() {
        let mut t = Table::new(3, 2);
        insert(&mut t, hyperty(1, 1, 1), at(10)).expect("room");
        insert(&mut t, hyperty(2, 1, 1), at(10)).expect("room");
        assert!(matches!(
            insert(&mut t, hyperty(3, 1, 1), at(10)),
            Err(DomainRegistryError::OwnerLimit { limit: 2, .. })
        ));
        // replacing an entry of the same owner is always allowed
        assert!(insert(&mut t, hyperty(2, 1, 2), at(20))
            .expect("replace")
            .is_some());
        insert(&mut t, hyperty(3, 2, 1), at(10)).expect("other user");
        assert!(matches!(
            insert(&mut t, hyperty(4, 3, 1), at(10)),
            Err(DomainRegistryError::Full { limit: 3 })
        ));
        // moving an entry to a full owner is refused
        assert!(matches!(
            insert(&mut t, hyperty(3, 1, 1), at(10)),
            Err(DomainRegistryError::OwnerLimit { .. })
        ));
        t.check_invariants();
    }

    #[test]
    fn indexes_follow_replacements_and_removals() {
        let mut t = Table::new(10, 10);
        insert(&mut t, hyperty(1, 1, 1), at(10)).expect("room");
        insert(&mut t, hyperty(1, 2, 2), at(30)).expect("replace");
        assert_eq!(t.hyperties_of_user("user://idp.org/1").count(), 0);
        assert_eq!(t.hyperties_of_user("user://idp.org/2").count(), 1);
        assert_eq!(t.hyperties_of_guid("2").count(), 1);
        assert_eq!(t.urls_of_runtime("runtime://d.org/1"), Vec::<String>::new());
        assert_eq!(t.urls_of_runtime("runtime://d.org/2").len(), 1);
        assert!(t.due(at(29)).is_empty());
        assert_eq!(t.due(at(30)), vec!["hyperty://d.org/1".to_owned()]);
        insert(&mut t, object(5, 1), at(5)).expect("room");
        assert_eq!(t.data_objects_named("room-2").count(), 1);
        assert_eq!(t.data_objects_of_reporter("hyperty://d.org/1").count(), 1);
        assert_eq!(t.due(at(30)).len(), 2);
        assert!(t.remove("hyperty://d.org/1").is_some());
        assert!(t.remove("hyperty://d.org/1").is_none());
        t.check_invariants();
        assert_eq!(t.count_users(), 0);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Hyperty(u8, u8, u8, u64),
        Object(u8, u8, u64),
        Remove(u8, bool),
        Status(u8, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..12, 0u8..4, 0u8..3, 0u64..50).prop_map(|(a, b, c, d)| Step::Hyperty(a, b, c, d)),
            (0u8..12, 0u8..4, 0u64..50).prop_map(|(a, b, c)| Step::Object(a, b, c)),
            (0u8..12, any::<bool>()).prop_map(|(a, b)| Step::Remove(a, b)),
            (0u8..12, any::<bool>()).prop_map(|(a, b)| Step::Status(a, b)),
        ]
    }

    proptest! {
        #[test]
        fn indexes_stay_consistent(steps in prop::collection::vec(step(), 0..60)) {
            let mut t = Table::new(8, 3);
            for s in steps {
                match s {
                    Step::Hyperty(n, u, r, d) => { let _ = insert(&mut t, hyperty(n, u, r), at(d)); }
                    Step::Object(n, r, d) => { let _ = insert(&mut t, object(n, r), at(d)); }
                    Step::Remove(n, h) => {
                        let url = if h { format!("hyperty://d.org/{n}") } else { format!("comm://d.org/{n}") };
                        t.remove(&url);
                    }
                    Step::Status(n, live) => {
                        let st = if live { Status::Live } else { Status::Disconnected };
                        t.set_status(&format!("hyperty://d.org/{n}"), st, at(1));
                    }
                }
                t.check_invariants();
            }
        }
    }
}
