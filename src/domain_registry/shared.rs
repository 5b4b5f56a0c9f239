//! The registry's table shared through Redis by the N nodes of one domain.
//!
//! # Why a local copy caught up before every request
//!
//! Every node keeps its whole [`Table`](super::table::Table) (the indexes the reads
//! need) and Redis keeps the truth: a hash `<prefix>:registry:entries` (URL → the
//! entry, its holder and deadline, as JSON), a version counter
//! `<prefix>:registry:version` and a stream `<prefix>:registry:changes` whose entry
//! `0-<v>` names the URLs version `v` changed.
//!
//! - **Before** a node answers anything it asks Redis, in one script, for the
//!   current version and the entries changed since the version it holds (or the
//!   whole hash when it holds none, or the stream was trimmed past it). So a read on
//!   any node sees every write any node has acknowledged: pub/sub invalidation would
//!   leave a window in which a node answers from a stale copy, and a lost message
//!   would leave it stale for good.
//! - A write runs the unchanged registry logic on the caught-up copy (access rules,
//!   limits, notifications), then commits the entries it changed with a script that
//!   applies them **only if the version is still the one the copy was caught up
//!   to** (optimistic concurrency: the domain's writes are totally ordered by
//!   version). If another node wrote in between, the changed URLs are reloaded and
//!   the request runs again ([`COMMIT_ATTEMPTS`] times at most). Only a committed
//!   write is acknowledged, and its notifications are sent only then.
//! - Redis unreachable (or slower than `command_timeout_ms`): the request is
//!   answered 503 with a description and nothing is acknowledged. Whether the
//!   script ran is then unknown, so the copy is dropped and reloaded whole on the
//!   next request.
//!
//! Expiry stays the sweep's: deadlines travel with the entries, every node sweeps,
//! and an expiry is a write like any other (the node that commits it notifies).
//! Reading from Redis for every query would need the indexes (by user, guid,
//! reporter, name, runtime) kept in Redis too; the caught-up copy keeps the one
//! table and its tests.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::model::{DataObjectRecord, HypertyRecord, Record, Status};
use super::table::Slot;
use crate::cluster::{ClusterError, ClusterStore};

/// How many times a write is retried after another node's write came first.
pub(crate) const COMMIT_ATTEMPTS: u32 = 8;
/// The change stream keeps about this many versions; a node further behind
/// reloads the whole table.
const STREAM_LEN: u32 = 10_000;
/// A commit changing more URLs than this tells the other nodes to reload whole.
const MAX_LISTED: usize = 1_000;

const FETCH: &str = r#"
local ver = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local urls, vals, seen = {}, {}, {}
local function add(u)
  if not seen[u] then
    seen[u] = true
    urls[#urls + 1] = u
    vals[#urls] = redis.call('HGET', KEYS[3], u)
  end
end
if since >= 0 and since <= ver then
  local ok = true
  if since < ver then
    local rows = redis.call('XRANGE', KEYS[2], '0-' .. (since + 1), '+')
    ok = rows[1] ~= nil and tonumber(string.match(rows[1][1], '%-(%d+)$')) == since + 1
    for _, row in ipairs(rows) do
      if not ok then break end
      local f = row[2]
      for i = 1, #f, 2 do
        if f[i] == 'all' then ok = false break end
        add(f[i + 1])
      end
    end
  end
  if ok then
    for i = 2, #ARGV do add(ARGV[i]) end
    return {ver, 1, urls, vals}
  end
  urls, vals = {}, {}
end
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  urls[#urls + 1] = all[i]
  vals[#urls] = all[i + 1]
end
return {ver, 2, urls, vals}
"#;

const COMMIT: &str = r#"
local ver = tonumber(redis.call('GET', KEYS[1]) or '0')
if ver ~= tonumber(ARGV[1]) then return -1 end
ver = ver + 1
local fields = {}
for i = 3, #ARGV - 1, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[3], ARGV[i])
  else
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  fields[#fields + 1] = 'u'
  fields[#fields + 1] = ARGV[i]
end
if ARGV[2] == 'all' then fields = {'all', '1'} end
redis.call('SET', KEYS[1], ver)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[#ARGV], '0-' .. ver, unpack(fields))
return ver
"#;

/// What a node must apply to its copy to be at `version`.
#[derive(Debug)]
pub(crate) struct Changes {
    /// The version the copy is at once these are applied.
    pub(crate) version: u64,
    /// True: `rows` is the whole table (clear the copy first).
    pub(crate) full: bool,
    /// URL → the entry now (`None`: removed).
    pub(crate) rows: Vec<(String, Option<Slot>)>,
}

/// Why a commit was not made.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// Another node wrote first: catch up and run the request again.
    Conflict,
    /// Redis did not answer (or answered something unreadable).
    Cluster(ClusterError),
}

/// The registry's keys in the cluster store. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    store: ClusterStore,
    keys: [String; 3],
}

impl Shared {
    pub(crate) fn new(store: ClusterStore) -> Shared {
        let keys = ["version", "changes", "entries"].map(|k| store.key(&["registry", k]));
        Shared { store, keys }
    }

    fn script(&self, src: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(src).arg(self.keys.len()).arg(&self.keys);
        cmd
    }

    /// The changes since `since` (`None`: the whole table), plus the entries at
    /// `reload` now.
    pub(crate) async fn fetch(
        self,
        since: Option<u64>,
        reload: BTreeSet<String>,
    ) -> Result<Changes, ClusterError> {
        let mut cmd = self.script(FETCH);
        cmd.arg(since.map_or_else(|| "-1".to_owned(), |v| v.to_string()));
        cmd.arg(reload.iter().collect::<Vec<_>>());
        let (version, mode, urls, vals): (u64, u8, Vec<String>, Vec<Option<String>>) =
            self.store.run(&cmd).await?;
        let rows = urls
            .into_iter()
            .zip(vals)
            .map(|(url, val)| {
                let slot = val
                    .map(|v| serde_json::from_str::<Slot>(&v))
                    .transpose()
                    .map_err(|e| ClusterError::Protocol(format!("registry entry {url}: {e}")))?;
                Ok((url, slot))
            })
            .collect::<Result<_, ClusterError>>()?;
        Ok(Changes {
            version,
            full: mode == 2,
            rows,
        })
    }

    /// The node holding each of `runtimes`' sessions, as the session managers
    /// record it (`rt:<runtime>` → `"<node> <identity>"`); `None`: no node does.
    pub(crate) async fn holders(
        self,
        runtimes: Vec<String>,
    ) -> Result<Vec<(String, Option<String>)>, ClusterError> {
        let mut pipe = redis::pipe();
        for chunk in runtimes.chunks(MAX_LISTED) {
            let keys: Vec<String> = chunk.iter().map(|r| self.store.key(&["rt", r])).collect();
            pipe.cmd("MGET").arg(keys);
        }
        if runtimes.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Vec<Option<String>>> = self.store.pipe(&pipe).await?;
        let nodes = values
            .into_iter()
            .flatten()
            .map(|v| v.and_then(|v| v.split(' ').next().map(str::to_owned)));
        Ok(runtimes.into_iter().zip(nodes).collect())
    }

    /// Writes `rows` as version `expected + 1` if Redis is still at `expected`.
    pub(crate) async fn commit(
        self,
        expected: u64,
        rows: Vec<(String, Option<Slot>)>,
    ) -> Result<u64, CommitError> {
        let mut cmd = self.script(COMMIT);
        cmd.arg(expected).arg(if rows.len() > MAX_LISTED {
            "all"
        } else {
            "urls"
        });
        for (url, slot) in &rows {
            let json = match slot {
                Some(s) => serde_json::to_string(s)
                    .map_err(|e| CommitError::Cluster(ClusterError::Protocol(e.to_string())))?,
                None => String::new(),
            };
            cmd.arg(url).arg(json);
        }
        cmd.arg(STREAM_LEN);
        match self.store.run::<i64>(&cmd).await {
            Ok(v) => u64::try_from(v).map_err(|_| CommitError::Conflict),
            Err(e) => Err(CommitError::Cluster(e)),
        }
    }
}

/// The stored form of a [`Record`] (serde checks it field by field against the
/// record types; the wire form stays theirs).
#[derive(Serialize, Deserialize)]
#[serde(remote = "Record")]
pub(crate) enum RecordDef {
    Hyperty(#[serde(with = "HypertyDef")] HypertyRecord),
    DataObject(#[serde(with = "DataObjectDef")] DataObjectRecord),
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "HypertyRecord")]
struct HypertyDef {
    url: String,
    user: String,
    descriptor: String,
    resources: Vec<String>,
    data_schemes: Vec<String>,
    runtime: Option<String>,
    p2p_requester: Option<String>,
    p2p_handler: Option<String>,
    guid: Option<String>,
    status: Status,
    expires: u64,
    starting_time: std::time::SystemTime,
    last_modified: std::time::SystemTime,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DataObjectRecord")]
struct DataObjectDef {
    url: String,
    name: String,
    schema: String,
    reporter: String,
    resources: Vec<String>,
    data_schemes: Vec<String>,
    runtime: Option<String>,
    p2p_requester: Option<String>,
    status: Status,
    expires: u64,
    starting_time: std::time::SystemTime,
    last_modified: std::time::SystemTime,
}
