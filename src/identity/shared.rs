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
//!
//! Users, devices and revocations: Redis is the domain's source of truth
//! ([`SharedIdentities`], hashes `<prefix>:identity:{users,devices,revoked}`).
//! Before login, device registration, device tokens and deletions the provider
//! reads the records it needs into its own view (one pipelined round trip), and
//! it answers only once its writes are in Redis; a name is claimed with `HSETNX`,
//! so it stays unique across nodes. A deleted device is refused by every node's
//! provider at its next look-up, which also takes the device's revocation into
//! that node's verifier (a check in the slow path rather than a pub/sub channel:
//! no extra connection, nothing to miss while unsubscribed). Redis unreachable:
//! these operations answer 503 after the command timeout; a write answered 503
//! may still have landed, never the reverse.

use std::time::Duration;

use super::error::IdentityError;
use super::model::Profile;
use super::store::{Change, StoredDevice, StoredUser};
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

/// What [`SharedIdentities::fetch`] found: each asked user and device as the
/// domain holds it now (`None`: gone or never there), with the device's
/// revocation time.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub(crate) users: Vec<(String, Option<StoredUser>)>,
    pub(crate) devices: Vec<(String, Option<StoredDevice>, Option<u64>)>,
}

/// The domain's users, devices and revocations in the cluster store, three
/// hashes under `<prefix>:identity:`. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SharedIdentities {
    store: ClusterStore,
    users: String,
    devices: String,
    revoked: String,
}

impl SharedIdentities {
    pub(crate) fn new(store: ClusterStore) -> SharedIdentities {
        SharedIdentities {
            users: store.key(&["identity", "users"]),
            devices: store.key(&["identity", "devices"]),
            revoked: store.key(&["identity", "revoked"]),
            store,
        }
    }

    /// Claims `name` for `user` (`HSETNX`): false when another node has it.
    pub(crate) async fn claim_user(
        self,
        name: String,
        user: Vec<u8>,
    ) -> Result<bool, ClusterError> {
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(&self.users).arg(name).arg(user);
        self.store.run(&cmd).await
    }

    /// Reads the current state of `users` and `devices` (one round trip).
    pub(crate) async fn fetch(
        self,
        users: Vec<String>,
        devices: Vec<String>,
        runtime: impl Fn(&str) -> String,
    ) -> Result<Fetched, ClusterError> {
        let mut pipe = redis::pipe();
        for u in &users {
            pipe.cmd("HGET").arg(&self.users).arg(u);
        }
        for d in &devices {
            pipe.cmd("HGET").arg(&self.devices).arg(d);
            pipe.cmd("HGET").arg(&self.revoked).arg(runtime(d));
        }
        if users.is_empty() && devices.is_empty() {
            return Ok(Fetched::default());
        }
        let values: Vec<redis::Value> = self.store.pipe(&pipe).await?;
        let mut values = values.into_iter();
        let mut next = || -> Result<Option<Vec<u8>>, ClusterError> {
            let v = values
                .next()
                .ok_or_else(|| ClusterError::Protocol("short pipeline answer".into()))?;
            redis::from_redis_value(v).map_err(|e| ClusterError::Protocol(e.to_string()))
        };
        let mut fetched = Fetched::default();
        for u in users {
            // an undecodable record keeps its name taken, its password never verifies
            let user = next()?.map(|raw| {
                serde_json::from_slice(&raw).unwrap_or(StoredUser {
                    hash: String::new(),
                    profile: Profile::default(),
                })
            });
            fetched.users.push((u, user));
        }
        for d in devices {
            let device = next()?.and_then(|raw| serde_json::from_slice(&raw).ok());
            let revoked = next()?
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|t| t.parse().ok());
            fetched.devices.push((d, device, revoked));
        }
        Ok(fetched)
    }

    /// The Redis side of `change` (one `MULTI`); users are put only by
    /// [`claim_user`](Self::claim_user).
    pub(crate) fn pipeline(&self, change: &Change<'_>) -> Result<redis::Pipeline, IdentityError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some((id, device)) = change.put_device {
            let json = serde_json::to_vec(device)
                .map_err(|e| IdentityError::Store(format!("cannot encode a device: {e}")))?;
            pipe.cmd("HSET")
                .arg(&self.devices)
                .arg(id)
                .arg(json)
                .ignore();
        }
        for name in &change.delete_users {
            pipe.cmd("HDEL").arg(&self.users).arg(*name).ignore();
        }
        for id in &change.delete_devices {
            pipe.cmd("HDEL").arg(&self.devices).arg(*id).ignore();
        }
        for (sub, at) in &change.revoke {
            pipe.cmd("HSET")
                .arg(&self.revoked)
                .arg(*sub)
                .arg(*at)
                .ignore();
        }
        Ok(pipe)
    }

    /// Runs what [`pipeline`](Self::pipeline) built.
    pub(crate) async fn write(self, pipe: redis::Pipeline) -> Result<(), ClusterError> {
        self.store.pipe::<()>(&pipe).await
    }
}
