//! Failures: a shard whose work fails, and brokers that are not there.

use std::time::Duration;

use shardline::Registry;
use shardline::config::ConnectArgs;
use shardline::message::Status;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, eventually, request_body, synthetic};
use uuid::Uuid;

/// A shard whose work fails ends its request as `failed` with the reason, published once,
/// and the shard is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shard_fails_the_request() {
    let c = Cluster::builder().start().await;
    let mut replies = Replies::new(&c).await;
    // One shard declaring 1,000 s of work: over the synthetic kind's per-shard limit.
    let id = Uuid::new_v4();
    let body = request_body(
        "synthetic",
        synthetic(1_000, 1_000_000),
        &[("max_shards", 1)],
    );
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Failed));
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
    assert_eq!(shard.request_id, id);
    assert!(
        !replies.another_within(Duration::from_secs(2)).await,
        "one terminal result"
    );
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
        shardline_tests::cluster::manager_config(&connect),
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

/// A worker started with another queue type than its namespace's queues have stops at once
/// with a configuration error that names the queue and the setting, instead of retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_another_queue_type_fails_with_a_clear_error() {
    let c = Cluster::builder()
        .queue_type(shardline::amqp::QueueType::Quorum)
        .workers(0)
        .start()
        .await;
    let mut cfg = c.worker_config("w-classic");
    cfg.connect.queue_type = shardline::amqp::QueueType::Classic;
    let run = shardline_worker::run(cfg, Registry::builtin(), std::future::pending());
    let r = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("gives up in time");
    let e = r.expect_err("the queues are quorum queues");
    let msg = e.to_string();
    assert!(
        matches!(e, shardline_worker::Error::Config(_))
            || matches!(
                e,
                shardline_worker::Error::Shared(shardline::Error::Config(_))
            ),
        "{msg}"
    );
    assert!(
        msg.contains("--queue-type") && msg.contains(c.names.namespace()),
        "{msg}"
    );
    c.shutdown().await;
}
