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
//! A rotation on any node rotates the domain's set: the node reads it, rotates
//! it aside and stores it back only if its version (`<prefix>:identity:keys-version`)
//! did not move meanwhile (one script; otherwise 503, try again), and signs with
//! the new key only then. Every other node reads that version once per
//! [`SHARED_POLL`] and takes the rotated set when it moved: the new key's
//! tokens verify there and it signs with the new key within that time, while
//! the retired key keeps verifying for the overlap a single node keeps.
//!
//! Users, devices and revocations: Redis is the domain's source of truth
//! ([`SharedIdentities`], under `<prefix>:identity:`). Before login, device
//! registration, device tokens, assertions and deletions the provider reads the
//! records it needs into its own view (one pipelined round trip: the user with
//! the list of their devices and their revocation, the device with its
//! revocation), and it answers only once its writes are in Redis. A name is
//! claimed and a device stored by one Lua script each, which checks the
//! domain's limits (`max_users`, `max_devices`, `max_devices_per_user`) in the
//! same atomic step: names stay unique and the limits hold across nodes. A user or device
//! deleted on one node is therefore refused by every other node's provider at
//! its next look-up, and every node's [`TokenVerifier`](super::TokenVerifier) —
//! the hot path of session `open`, which never waits for Redis — takes the
//! revocation within [`SHARED_POLL`]: each provider reads the domain's
//! revocation counter once per poll and the revocation table only when the
//! counter moved. Redis unreachable: these operations answer 503 after the
//! command timeout; a write answered 503 may still have landed, never the
//! reverse; the verifier keeps the revocations it has.

use std::collections::HashMap;
use std::time::Duration;

use super::model::Profile;
use super::store::{Change, StoredDevice, StoredUser};
use crate::cluster::{ClusterError, ClusterStore};

/// How often a provider that could not load the shared keys tries again.
pub(crate) const KEYS_RETRY: Duration = Duration::from_secs(1);

/// How often a provider reads the domain's revocation counter and key-set
/// version (one `GET` each), and the revocation table or the key set when one
/// moved: the longest a token of a user or device deleted on another node
/// still verifies on this one, and the longest this one takes to verify and
/// sign with a key rotated on another.
pub(crate) const SHARED_POLL: Duration = Duration::from_secs(1);

/// The domain's shared key set in the cluster store (`keys`), with the
/// counter `keys-version` bumped by every rotation. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SharedKeys {
    store: ClusterStore,
    key: String,
    version: String,
}

impl SharedKeys {
    pub(crate) fn new(store: ClusterStore) -> SharedKeys {
        SharedKeys {
            key: store.key(&["identity", "keys"]),
            version: store.key(&["identity", "keys-version"]),
            store,
        }
    }

    /// Stores `ours` unless the domain has a key set already; answers the
    /// domain's set (ours if it was first) and its version.
    pub(crate) async fn agree(self, ours: Vec<u8>) -> Result<(u64, Vec<u8>), ClusterError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&self.key)
            .arg(ours)
            .arg("NX")
            .ignore();
        self.read(pipe).await
    }

    /// The domain's set and its version, unless the version still is `seen`.
    pub(crate) async fn changed(
        self,
        seen: Option<u64>,
    ) -> Result<Option<(u64, Vec<u8>)>, ClusterError> {
        let version: Option<u64> = self.store.run(redis::cmd("GET").arg(&self.version)).await?;
        if seen == Some(version.unwrap_or(0)) {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.read(pipe).await.map(Some)
    }

    /// `pipe`, then the set and its version.
    async fn read(&self, mut pipe: redis::Pipeline) -> Result<(u64, Vec<u8>), ClusterError> {
        pipe.cmd("GET").arg(&self.key).cmd("GET").arg(&self.version);
        let (set, version): (Option<Vec<u8>>, Option<u64>) = self.store.pipe(&pipe).await?;
        let set =
            set.ok_or_else(|| ClusterError::Protocol("the shared key set vanished".into()))?;
        Ok((version.unwrap_or(0), set))
    }

    /// Replaces the set with `ring` if its version is still `expected`:
    /// answers the new version, `None` when another node changed it first.
    pub(crate) async fn replace(
        self,
        expected: u64,
        ring: Vec<u8>,
    ) -> Result<Option<u64>, ClusterError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REPLACE_KEYS)
            .arg(2)
            .arg(&self.key)
            .arg(&self.version)
            .arg(expected)
            .arg(ring);
        let version: i64 = self.store.run(&cmd).await?;
        Ok(u64::try_from(version).ok())
    }
}

/// `KEYS` the key set and its version; `ARGV` the expected version and the
/// new set: the new version, or -1 when the version moved.
const REPLACE_KEYS: &str = r"
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
return redis.call('INCR', KEYS[2])
";

/// A user as [`SharedIdentities::fetch`] found it.
#[derive(Debug)]
pub(crate) struct FetchedUser {
    /// The record; `None`: gone or never there.
    pub(crate) record: Option<StoredUser>,
    /// The ids of the devices the user registered, on any node.
    pub(crate) devices: Vec<String>,
    /// When the user's subject was last revoked (deleted), if it was.
    pub(crate) revoked: Option<u64>,
}

/// What [`SharedIdentities::fetch`] found: each asked user and device as the
/// domain holds it now (`None`: gone or never there), with the device's
/// revocation time.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub(crate) users: Vec<(String, FetchedUser)>,
    pub(crate) devices: Vec<(String, Option<StoredDevice>, Option<u64>)>,
}

/// The domain's users, devices and revocations in the cluster store, under
/// `<prefix>:identity:`: the hashes `users`, `devices` and `revoked` (subject →
/// unix time), the set `user-devices:<name>` of each user's devices, and
/// `revoked-epoch`, a counter bumped with every revocation so that nodes poll
/// one `GET` instead of the whole hash. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SharedIdentities {
    store: ClusterStore,
    domain: String,
    users: String,
    devices: String,
    revoked: String,
    epoch: String,
}

impl SharedIdentities {
    pub(crate) fn new(store: ClusterStore, domain: &str) -> SharedIdentities {
        SharedIdentities {
            users: store.key(&["identity", "users"]),
            devices: store.key(&["identity", "devices"]),
            revoked: store.key(&["identity", "revoked"]),
            epoch: store.key(&["identity", "revoked-epoch"]),
            domain: domain.to_owned(),
            store,
        }
    }

    fn user_devices(&self, name: &str) -> String {
        self.store.key(&["identity", "user-devices", name])
    }

    fn user_subject(&self, name: &str) -> String {
        format!("user://{}/{name}", self.domain)
    }

    fn runtime(&self, device: &str) -> String {
        format!("hyperty-runtime://{}/{device}", self.domain)
    }

    /// Claims `name` for `user` unless it is taken or the domain has
    /// `max_users` users already — one atomic step, so nodes signing up users
    /// at once never exceed the limit.
    pub(crate) async fn claim_user(
        self,
        name: String,
        user: Vec<u8>,
        max_users: usize,
    ) -> Result<Claim, ClusterError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM_USER)
            .arg(1)
            .arg(&self.users)
            .arg(name)
            .arg(user)
            .arg(max_users);
        match self.store.run::<i64>(&cmd).await? {
            1 => Ok(Claim::Done),
            0 => Ok(Claim::Taken),
            _ => Ok(Claim::Full),
        }
    }

    /// Stores `device` of `owner` unless the owner is gone or the domain's
    /// device table or the owner's device list (`limits`: their sizes) is
    /// full — one atomic step.
    pub(crate) async fn add_device(
        self,
        owner: String,
        device: String,
        record: Vec<u8>,
        limits: (usize, usize),
    ) -> Result<DeviceClaim, ClusterError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ADD_DEVICE)
            .arg(3)
            .arg(&self.users)
            .arg(&self.devices)
            .arg(self.user_devices(&owner))
            .arg(owner)
            .arg(device)
            .arg(record)
            .arg(limits.0)
            .arg(limits.1);
        match self.store.run::<i64>(&cmd).await? {
            1 => Ok(DeviceClaim::Done),
            0 => Ok(DeviceClaim::NoOwner),
            -1 => Ok(DeviceClaim::Full),
            _ => Ok(DeviceClaim::OwnerFull),
        }
    }

    /// Reads the current state of `users` and `devices` (one round trip).
    pub(crate) async fn fetch(
        self,
        users: Vec<String>,
        devices: Vec<String>,
    ) -> Result<Fetched, ClusterError> {
        if users.is_empty() && devices.is_empty() {
            return Ok(Fetched::default());
        }
        let mut pipe = redis::pipe();
        for u in &users {
            pipe.cmd("HGET").arg(&self.users).arg(u);
            pipe.cmd("SMEMBERS").arg(self.user_devices(u));
            pipe.cmd("HGET")
                .arg(&self.revoked)
                .arg(self.user_subject(u));
        }
        for d in &devices {
            pipe.cmd("HGET").arg(&self.devices).arg(d);
            pipe.cmd("HGET").arg(&self.revoked).arg(self.runtime(d));
        }
        let values: Vec<redis::Value> = self.store.pipe(&pipe).await?;
        let mut values = values.into_iter();
        let mut next = || -> Result<redis::Value, ClusterError> {
            values
                .next()
                .ok_or_else(|| ClusterError::Protocol("short pipeline answer".into()))
        };
        let decode = |v: redis::Value| -> Result<Option<Vec<u8>>, ClusterError> {
            redis::from_redis_value(v).map_err(|e| ClusterError::Protocol(e.to_string()))
        };
        let time = |raw: Option<Vec<u8>>| {
            raw.and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|t| t.parse().ok())
        };
        let mut fetched = Fetched::default();
        for u in users {
            // an undecodable record keeps its name taken, its password never verifies
            let record = decode(next()?)?.map(|raw| {
                serde_json::from_slice(&raw).unwrap_or(StoredUser {
                    hash: String::new(),
                    profile: Profile::default(),
                })
            });
            let devices: Vec<String> = redis::from_redis_value(next()?)
                .map_err(|e| ClusterError::Protocol(e.to_string()))?;
            let revoked = time(decode(next()?)?);
            fetched.users.push((
                u,
                FetchedUser {
                    record,
                    devices,
                    revoked,
                },
            ));
        }
        for d in devices {
            let device = decode(next()?)?.and_then(|raw| serde_json::from_slice(&raw).ok());
            let revoked = time(decode(next()?)?);
            fetched.devices.push((d, device, revoked));
        }
        Ok(fetched)
    }

    /// The domain's revocations (subject → unix time), unless the revocation
    /// counter still is `seen`: `None` then, else the counter with them.
    pub(crate) async fn revocations(
        self,
        seen: Option<u64>,
    ) -> Result<Option<(u64, HashMap<String, u64>)>, ClusterError> {
        let epoch: Option<u64> = self.store.run(redis::cmd("GET").arg(&self.epoch)).await?;
        let epoch = epoch.unwrap_or(0);
        if seen == Some(epoch) {
            return Ok(None);
        }
        let all: HashMap<String, u64> = self
            .store
            .run(redis::cmd("HGETALL").arg(&self.revoked))
            .await?;
        Ok(Some((epoch, all)))
    }

    /// Drops the revocations at or before `before` (their tokens have all
    /// expired), leaving any made again since; answers how many went.
    pub(crate) async fn forget_revocations(self, before: u64) -> Result<u64, ClusterError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(FORGET_REVOCATIONS)
            .arg(1)
            .arg(&self.revoked)
            .arg(before);
        self.store.run(&cmd).await
    }

    /// The Redis side of `change` (one `MULTI`); users and devices are put only
    /// by [`claim_user`](Self::claim_user) and [`add_device`](Self::add_device).
    pub(crate) fn pipeline(&self, change: &Change<'_>) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for name in &change.delete_users {
            pipe.cmd("HDEL").arg(&self.users).arg(*name).ignore();
            pipe.cmd("DEL").arg(self.user_devices(name)).ignore();
        }
        for id in &change.delete_devices {
            pipe.cmd("HDEL").arg(&self.devices).arg(*id).ignore();
            if let Some(owner) = change.owner {
                pipe.cmd("SREM")
                    .arg(self.user_devices(owner))
                    .arg(*id)
                    .ignore();
            }
        }
        for (sub, at) in &change.revoke {
            pipe.cmd("HSET")
                .arg(&self.revoked)
                .arg(*sub)
                .arg(*at)
                .ignore();
        }
        if !change.revoke.is_empty() {
            pipe.cmd("INCR").arg(&self.epoch).ignore();
        }
        pipe
    }

    /// Runs what [`pipeline`](Self::pipeline) built.
    pub(crate) async fn write(self, pipe: redis::Pipeline) -> Result<(), ClusterError> {
        self.store.pipe::<()>(&pipe).await
    }
}

/// What [`SharedIdentities::claim_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    Done,
    Taken,
    Full,
}

/// What [`SharedIdentities::add_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceClaim {
    Done,
    /// The owner was deleted meanwhile.
    NoOwner,
    /// The domain's device table is full.
    Full,
    /// The owner's device list is full.
    OwnerFull,
}

/// `KEYS[1]` the users hash; `ARGV` name, record, limit: 1 stored, 0 taken,
/// -1 full.
const CLAIM_USER: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// `KEYS` the users and devices hashes and the owner's device set; `ARGV`
/// owner, device id, record, device limit, per-user limit: 1 stored, 0 no
/// owner, -1 device table full, -2 owner's list full.
const ADD_DEVICE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[5]) then return -2 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
";

/// `KEYS[1]` the revocations hash, `ARGV[1]` a unix time: deletes the entries
/// at or before it.
const FORGET_REVOCATIONS: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n
";
