//! [`IdentityStore`]: the provider's users, devices and revocations in an
//! embedded [redb](https://docs.rs/redb) database, [`STORE_FILE_NAME`] in the
//! data directory (owner-only: the directory 0700, the file 0600 on Unix), or in
//! memory without one.
//!
//! The provider loads everything at start and writes through on every change, one
//! transaction per change, before it answers: what was answered survives a
//! restart. A record that cannot be decoded is logged; a broken **user** record
//! still reserves its name (its password never verifies), so a damaged store can
//! never hand an existing name to someone else.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::error::IdentityError;
use super::model::Profile;

/// Name of the identity database inside the provider's data directory.
pub const STORE_FILE_NAME: &str = "idp-identities.redb";

/// Page cache of the database, bytes.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

const USERS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("users");
const DEVICES: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("devices");
/// Subject URL → unix time at or before which its tokens were issued are refused.
const REVOKED: TableDefinition<'static, &str, u64> = TableDefinition::new("revoked");

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredUser {
    /// PHC string of the Argon2id hash; empty for a record that could not be read.
    pub(crate) hash: String,
    pub(crate) profile: Profile,
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredDevice {
    /// SHA-256 of the secret, hex.
    pub(crate) secret_sha256: String,
    /// Username of the user who registered it.
    pub(crate) owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) label: Option<String>,
}

/// What a store holds at open.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) users: Vec<(String, StoredUser)>,
    pub(crate) devices: Vec<(String, StoredDevice)>,
    pub(crate) revoked: Vec<(String, u64)>,
}

/// One change, written in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Change<'a> {
    pub(crate) put_user: Option<(&'a str, &'a StoredUser)>,
    pub(crate) put_device: Option<(&'a str, &'a StoredDevice)>,
    pub(crate) delete_users: Vec<&'a str>,
    pub(crate) delete_devices: Vec<&'a str>,
    /// Whose `delete_devices` are (the cluster store lists each user's devices).
    pub(crate) owner: Option<&'a str>,
    pub(crate) revoke: Vec<(&'a str, u64)>,
    pub(crate) unrevoke: Vec<&'a str>,
}

/// The provider's database (see the module docs).
pub(crate) struct IdentityStore {
    db: Database,
}

impl std::fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityStore").finish_non_exhaustive()
    }
}

fn store_err(what: &str, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Store(format!("{what}: {e}"))
}

impl IdentityStore {
    /// Opens (or creates) the store in `data_dir`, or in memory for `None`, and
    /// reads what it holds.
    pub(crate) fn open(data_dir: Option<&Path>) -> Result<(IdentityStore, Loaded), IdentityError> {
        let builder = {
            let mut b = Database::builder();
            b.set_cache_size(CACHE_BYTES);
            b
        };
        let db = match data_dir {
            Some(dir) => {
                crate::private_files::create_private_dir(dir)
                    .map_err(|e| store_err("cannot create the data directory", e))?;
                let path = dir.join(STORE_FILE_NAME);
                let file = crate::private_files::open_private_db(&path)
                    .map_err(|e| store_err("cannot open the identity store", e))?;
                let backend = redb::backends::FileBackend::new(file).map_err(|e| {
                    store_err(
                        "the identity store is in use (another provider on the same data_dir?)",
                        e,
                    )
                })?;
                builder.create_with_backend(backend).map_err(|e| {
                    store_err(
                        "cannot open the identity store (in use by another provider?)",
                        e,
                    )
                })?
            }
            None => builder
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| store_err("cannot create the identity store", e))?,
        };
        let store = IdentityStore { db };
        let loaded = store.load()?;
        if data_dir.is_some() {
            info!(
                users = loaded.users.len(),
                devices = loaded.devices.len(),
                revoked = loaded.revoked.len(),
                "identity store opened"
            );
        }
        Ok((store, loaded))
    }

    fn load(&self) -> Result<Loaded, IdentityError> {
        let err = |e: &dyn std::fmt::Display| store_err("cannot read the identity store", e);
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        tx.open_table(USERS).map_err(|e| err(&e))?;
        tx.open_table(DEVICES).map_err(|e| err(&e))?;
        tx.open_table(REVOKED).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let mut loaded = Loaded::default();
        for item in tx
            .open_table(USERS)
            .map_err(|e| err(&e))?
            .iter()
            .map_err(|e| err(&e))?
        {
            let (k, v) = item.map_err(|e| err(&e))?;
            let name = k.value().to_owned();
            let user = serde_json::from_slice(v.value()).unwrap_or_else(|_| {
                warn!(user = %name, "undecodable user record: the name stays taken, its password never verifies");
                StoredUser {
                    hash: String::new(),
                    profile: Profile::default(),
                }
            });
            loaded.users.push((name, user));
        }
        for item in tx
            .open_table(DEVICES)
            .map_err(|e| err(&e))?
            .iter()
            .map_err(|e| err(&e))?
        {
            let (k, v) = item.map_err(|e| err(&e))?;
            match serde_json::from_slice(v.value()) {
                Ok(d) => loaded.devices.push((k.value().to_owned(), d)),
                Err(_) => warn!(device = %k.value(), "undecodable device record ignored"),
            }
        }
        for item in tx
            .open_table(REVOKED)
            .map_err(|e| err(&e))?
            .iter()
            .map_err(|e| err(&e))?
        {
            let (k, v) = item.map_err(|e| err(&e))?;
            loaded.revoked.push((k.value().to_owned(), v.value()));
        }
        Ok(loaded)
    }

    /// Writes `change` in one transaction (all of it or nothing).
    pub(crate) fn apply(&self, change: &Change<'_>) -> Result<(), IdentityError> {
        let err = |e: &dyn std::fmt::Display| store_err("cannot write the identity store", e);
        let encode = |v: &dyn ErasedSerialize| v.json().map_err(|e| err(&e));
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut users = tx.open_table(USERS).map_err(|e| err(&e))?;
            if let Some((name, user)) = change.put_user {
                users
                    .insert(name, encode(user)?.as_slice())
                    .map_err(|e| err(&e))?;
            }
            for name in &change.delete_users {
                users.remove(*name).map_err(|e| err(&e))?;
            }
            let mut devices = tx.open_table(DEVICES).map_err(|e| err(&e))?;
            if let Some((id, device)) = change.put_device {
                devices
                    .insert(id, encode(device)?.as_slice())
                    .map_err(|e| err(&e))?;
            }
            for id in &change.delete_devices {
                devices.remove(*id).map_err(|e| err(&e))?;
            }
            let mut revoked = tx.open_table(REVOKED).map_err(|e| err(&e))?;
            for (sub, at) in &change.revoke {
                revoked.insert(*sub, *at).map_err(|e| err(&e))?;
            }
            for sub in &change.unrevoke {
                revoked.remove(*sub).map_err(|e| err(&e))?;
            }
        }
        tx.commit().map_err(|e| err(&e))
    }
}

/// A record that encodes to JSON bytes (users and devices alike).
trait ErasedSerialize {
    fn json(&self) -> Result<Vec<u8>, serde_json::Error>;
}

impl<T: Serialize> ErasedSerialize for T {
    fn json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("hyperty-idstore-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn changes_survive_a_reopen_and_the_files_are_private() {
        let dir = temp_dir();
        let alice = StoredUser {
            hash: "$argon2id$x".into(),
            profile: Profile {
                cn: Some("Alice".into()),
                ..Profile::default()
            },
        };
        let tv = StoredDevice {
            secret_sha256: "00".repeat(32),
            owner: "alice".into(),
            label: Some("tv".into()),
        };
        {
            let (store, loaded) = IdentityStore::open(Some(&dir)).unwrap();
            assert!(loaded.users.is_empty());
            store
                .apply(&Change {
                    put_user: Some(("alice", &alice)),
                    ..Change::default()
                })
                .unwrap();
            store
                .apply(&Change {
                    put_device: Some(("d1", &tv)),
                    revoke: vec![("user://a.org/bob", 7)],
                    ..Change::default()
                })
                .unwrap();
            // a second provider on the same directory is refused while this one runs
            assert!(matches!(
                IdentityStore::open(Some(&dir)),
                Err(IdentityError::Store(_))
            ));
        }
        let (store, loaded) = IdentityStore::open(Some(&dir)).unwrap();
        assert_eq!(loaded.users, vec![("alice".to_owned(), alice)]);
        assert_eq!(loaded.devices, vec![("d1".to_owned(), tv)]);
        assert_eq!(loaded.revoked, vec![("user://a.org/bob".to_owned(), 7)]);
        store
            .apply(&Change {
                delete_users: vec!["alice"],
                delete_devices: vec!["d1"],
                unrevoke: vec!["user://a.org/bob"],
                ..Change::default()
            })
            .unwrap();
        drop(store);
        let (_store, loaded) = IdentityStore::open(Some(&dir)).unwrap();
        assert!(loaded.users.is_empty() && loaded.devices.is_empty() && loaded.revoked.is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join(STORE_FILE_NAME)), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_broken_user_record_keeps_its_name_taken() {
        let dir = temp_dir();
        {
            let (store, _) = IdentityStore::open(Some(&dir)).unwrap();
            let tx = store.db.begin_write().unwrap();
            tx.open_table(USERS)
                .unwrap()
                .insert("alice", b"not json".as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let (_store, loaded) = IdentityStore::open(Some(&dir)).unwrap();
        assert_eq!(loaded.users.len(), 1);
        assert_eq!(loaded.users[0].0, "alice");
        assert!(loaded.users[0].1.hash.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
