//! The signing keys the N nodes of one domain share through Redis.
//!
//! A token issued by one node must verify on every other and the JWKS must be the
//! same everywhere, so the domain has one key set, kept at
//! `<prefix>:identity:keys` in the key-file form. Each provider offers its own
//! ring with `SET NX` and takes whatever the key holds afterwards: the first node
//! to start creates the domain's set, the others load it. Until a provider holds
//! the shared set it signs nothing (503) and retries every
//! [`KEYS_RETRY`]; once loaded, the keys stay in memory, so tokens keep verifying
//! while Redis is away.

use std::time::Duration;

use crate::cluster::{ClusterError, ClusterStore};

/// How often a provider that could not load the shared keys tries again.
pub(crate) const KEYS_RETRY: Duration = Duration::from_secs(1);

/// The domain's shared key set in the cluster store. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SharedKeys {
    store: ClusterStore,
    key: String,
}

impl SharedKeys {
    pub(crate) fn new(store: ClusterStore) -> SharedKeys {
        let key = store.key(&["identity", "keys"]);
        SharedKeys { store, key }
    }

    /// Stores `ours` unless the domain has a key set already; answers the
    /// domain's set (ours if it was first).
    pub(crate) async fn agree(self, ours: Vec<u8>) -> Result<Vec<u8>, ClusterError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&self.key)
            .arg(ours)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&self.key);
        let (set,): (Option<Vec<u8>>,) = self.store.pipe(&pipe).await?;
        set.ok_or_else(|| ClusterError::Protocol("the shared key set vanished".into()))
    }
}
