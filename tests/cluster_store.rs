//! The cluster store on the real Redis: keys under the prefix, bounded commands,
//! 503 while Redis is away and reconnection by itself once it is back.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{section, unique_prefix, until_up, PrivateRedis};
use hyperty::cluster::{ClusterError, ClusterSection, ClusterStore};

#[test]
fn no_redis_configured_means_no_store_and_bad_settings_are_refused() {
    assert!(ClusterStore::open(&ClusterSection::default())
        .unwrap()
        .is_none());
    let mut s = section("redis://127.0.0.1:6379", "x");
    s.entry_ttl_ms = s.heartbeat_ms;
    assert!(s.validate().unwrap_err().contains("entry_ttl_ms"));
    let mut s = section("redis://127.0.0.1:6379", "x");
    s.node_id = Some("a:b".into());
    assert!(s.validate().unwrap_err().contains("node_id"));
    let mut s = section("redis://127.0.0.1:6379", "has space");
    s.prefix = "has space".into();
    assert!(s.validate().unwrap_err().contains("prefix"));
    let err = actix_rt::System::new()
        .block_on(async { ClusterStore::open(&section("nope://", "x")).map(|_| ()) })
        .unwrap_err();
    assert!(matches!(err, ClusterError::Url(_)), "{err}");
    let err = ClusterStore::open(&section("redis://127.0.0.1:6379", "x")).unwrap_err();
    assert!(matches!(err, ClusterError::NoRuntime), "{err}");
}

#[actix_rt::test]
async fn commands_run_under_the_prefix_on_the_shared_redis() {
    let prefix = unique_prefix("store");
    let store = ClusterStore::open(&section("redis://127.0.0.1:6379", &prefix))
        .unwrap()
        .unwrap();
    let key = store.key(&["owner", "hyperty://d/1"]);
    assert_eq!(key, format!("{prefix}:owner:hyperty://d/1"));
    let () = store
        .run(
            redis::cmd("SET")
                .arg(&key)
                .arg("node-a")
                .arg("PX")
                .arg(5_000),
        )
        .await
        .unwrap();
    let got: Option<String> = store.run(redis::cmd("GET").arg(&key)).await.unwrap();
    assert_eq!(got.as_deref(), Some("node-a"));
    let ttl: i64 = store.run(redis::cmd("PTTL").arg(&key)).await.unwrap();
    assert!(ttl > 0 && ttl <= 5_000, "{ttl}");
    let (a, b): (i64, Option<String>) = store
        .pipe(
            redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(&key)
                .cmd("GET")
                .arg(&key),
        )
        .await
        .unwrap();
    assert_eq!((a, b), (1, None));
    let wrong: Result<i64, _> = store.run(&redis::cmd("NOSUCHCOMMAND")).await;
    assert!(matches!(wrong, Err(ClusterError::Protocol(_))), "{wrong:?}");
}

#[actix_rt::test]
async fn an_unreachable_redis_is_unavailable_and_the_store_reconnects_by_itself() {
    let mut redis = PrivateRedis::start();
    redis.stop();
    let store = ClusterStore::open(&section(&redis.url(), "outage"))
        .unwrap()
        .unwrap();
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, ClusterError::Unavailable(_)), "{err}");
    assert_eq!(err.code(), 503);

    redis.restart();
    until_up(&store).await;
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_ok() {
        assert!(Instant::now() < deadline, "the stopped redis still answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.restart();
    until_up(&store).await;
}
