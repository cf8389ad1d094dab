//! Failures: a shard whose work fails, and brokers that are not there.

use std::time::Duration;

use shardline::Registry;
use shardline::config::ConnectArgs;
use shardline::message::{Options, Status};
use shardline_tests::{Cluster, eventually};

/// A shard whose work fails ends its request as `failed` with the reason, published once,
/// and the shard is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shard_fails_the_request() {
    let c = Cluster::builder().start().await;
    // One shard declaring 1,000 s of work: over the synthetic kind's per-shard limit.
    let w = shardline::kind::synthetic::Work {
        units: 1_000,
        unit_cost_us: 1_000_000,
        spin: false,
        noise_seed: None,
    };
    let payload = shardline::message::to_named_value(&w).expect("value");
    let opts = Options {
        max_shards: Some(1),
        deadline_ms: None,
        ..Options::default()
    };
    let r = c
        .client()
        .submit("synthetic", payload, opts, Duration::from_secs(30))
        .await
        .expect("result");
    assert_eq!(r.status, Status::Failed);
    let err = r.error.expect("error");
    assert_eq!(err.code, "shard_failed");
    assert!(err.message.contains("limit"), "{}", err.message);
    let dead = eventually(
        "the failed shard dead-lettered",
        Duration::from_secs(10),
        || async { c.drain(&c.names.dead_queue()).await.into_iter().next() },
    )
    .await;
    let shard: shardline::message::Shard = rmp_serde::from_slice(&dead.data).expect("a shard");
    assert_eq!(shard.request_id, r.request_id);
    c.shutdown().await;
}

/// A manager whose broker is unreachable at start fails with an error instead of hanging or
/// panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_fails_fast_without_a_broker() {
    let mut connect = ConnectArgs::local();
    connect.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    connect.redis_url = shardline_tests::Services::get().await.redis_url;
    let run = shardline_manager::run(
        shardline_manager::Config::new(connect),
        Registry::builtin(),
        std::future::pending(),
    );
    let r = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("gives up in time");
    assert!(r.is_err());
}

/// A worker whose Redis is unreachable at start fails with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_fails_fast_without_redis() {
    let mut connect = ConnectArgs::local();
    connect.redis_url = "redis://127.0.0.1:1".into();
    let run = shardline_worker::run(
        shardline_worker::Config::new(connect),
        Registry::builtin(),
        std::future::pending(),
    );
    let r = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("gives up in time");
    let e = r.expect_err("no Redis");
    assert!(e.to_string().to_lowercase().contains("redis"), "{e}");
}
