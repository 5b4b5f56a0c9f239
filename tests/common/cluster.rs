//! Cluster test helpers: nodes of one domain on the shared Redis under a unique
//! prefix, waiting for membership, and cleaning the prefix up.

use std::time::Duration;

use super::{eventually, start_node};

/// A private `redis-server` on `port` (for tests that stop Redis), killed on drop.
pub struct PrivateRedis(std::process::Child);

impl PrivateRedis {
    pub fn start(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        PrivateRedis(child)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The shared Redis every machine of the project runs.
pub const REDIS: &str = "redis://127.0.0.1:6379";

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
