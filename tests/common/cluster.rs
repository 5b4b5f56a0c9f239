//! Cluster test helpers: nodes of one domain on the shared Redis under a unique
//! prefix, waiting for membership, cleaning the prefix up, and a private
//! `redis-server` a test can stop, freeze and restart.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyperty::cluster::{ClusterSection, ClusterStore};

use super::{eventually, start_node};

/// A private `redis-server` on a free port, killed on drop.
pub struct PrivateRedis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = free_port();
        let mut r = PrivateRedis { child: None, port };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`PrivateRedis::stop`]).
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
    }

    /// Stops the process (SIGSTOP) without losing its data: clients time out.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    pub fn stop(&mut self) {
        self.thaw();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared Redis every machine of the project runs.
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `[cluster]` on `url` under `prefix`, quick to give up on a lost Redis.
pub fn section(url: &str, prefix: &str) -> ClusterSection {
    ClusterSection {
        redis: Some(url.into()),
        prefix: prefix.into(),
        command_timeout_ms: 300,
        ..ClusterSection::default()
    }
}

/// A prefix no other test uses.
pub fn unique_prefix(name: &str) -> String {
    format!("test-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Fast cluster settings for tests: `redis`, `prefix`, short heartbeat and TTL.
pub fn tune_cluster(cfg: &mut hyperty::config::NodeConfig, redis: &str, prefix: &str) {
    cfg.cluster.redis = Some(redis.to_owned());
    cfg.cluster.prefix = prefix.to_owned();
    cfg.cluster.heartbeat_ms = 100;
    cfg.cluster.entry_ttl_ms = 2_000;
    cfg.cluster.command_timeout_ms = 500;
    cfg.cluster.request_timeout_ms = 3_000;
}

/// `n` nodes of `domain` sharing `prefix`, each seeing all of them.
pub async fn start_cluster(
    n: usize,
    domain: &str,
    prefix: &str,
    tune: impl Fn(&mut hyperty::config::NodeConfig),
) -> Vec<hyperty::node::NodeHandle> {
    let nodes: Vec<_> = (0..n)
        .map(|_| {
            start_node(domain, |c| {
                tune_cluster(c, REDIS, prefix);
                tune(c);
            })
        })
        .collect();
    for node in &nodes {
        let c = node
            .state()
            .router()
            .cluster()
            .expect("a cluster node")
            .clone();
        assert!(
            eventually(Duration::from_secs(10), || {
                let c = c.clone();
                async move { c.members().len() >= n }
            })
            .await,
            "every node sees the others"
        );
    }
    nodes
}

/// Deletes every key under `prefix`.
pub async fn clean(redis: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Keys left under `prefix`.
pub async fn keys(redis: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(redis).expect("redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

/// Waits until `store` answers PING (Redis back, reconnected).
pub async fn until_up(store: &ClusterStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.ping().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("redis never came back: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
