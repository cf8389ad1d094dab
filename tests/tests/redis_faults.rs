//! Redis killed and restarted mid-request. Redis holds the in-flight requests, so it must
//! persist them (append-only file); with that, every request still ends exactly once.
//!
//! The test runs its own `redis-server` (on a free port, with its own data directory) so that
//! other tests sharing the machine's Redis are not disturbed. It needs `redis-server` on PATH
//! (override with `TEST_REDIS_SERVER`).

use std::time::Duration;

use shardline_manager::plan::ShardCount;
use shardline_tests::private_redis::PrivateRedis;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{
    Cluster, attempts, completed, delivered, eventually, request_body, synthetic, unsharded,
    wait_progress,
};
use uuid::Uuid;

/// SIGKILL Redis while requests are running and start it again on the same data: every
/// request completes exactly once with the right answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_request() {
    let mut redis = PrivateRedis::start().await;
    let c = Cluster::builder().redis_url(redis.url()).start().await;
    let mut replies = Replies::new(&c).await;
    let payload = synthetic(200, 5_000);
    let body = request_body("synthetic", payload.clone(), &[]);
    let ids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    }
    wait_progress(&c, &ids, 10).await;
    redis.kill().await;
    redis.restart().await;

    let want = unsharded("synthetic", payload);
    for r in replies
        .exactly_one_each(&ids, Duration::from_secs(90))
        .await
        .values()
    {
        assert_eq!(completed(r), want);
    }
    c.shutdown().await;
}

/// Redis is down when a shard finishes: the worker keeps the result and retries storing it
/// until Redis is back, instead of giving the shard back. The request completes once and the
/// outage does not count as an attempt of the shard (a poison shard is one that fails, not
/// one whose worker could not reach Redis): the shard never comes back, so its tries are
/// never counted at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_at_the_end_of_a_shard_costs_no_attempt() {
    let mut redis = PrivateRedis::start().await;
    let c = Cluster::builder()
        .redis_url(redis.url())
        .workers(1)
        .manager(|m| m.shard_count = ShardCount::Fixed(1))
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let payload = synthetic(1, 1_500_000);
    let id = Uuid::new_v4();
    let body = request_body("synthetic", payload.clone(), &[]);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    // A first delivery goes to work without a word to Redis: the shard has started once it
    // is routed and no longer ready in its queue.
    eventually("the shard started", Duration::from_secs(20), || async {
        delivered(&c, id, 1).await.then_some(())
    })
    .await;
    redis.kill().await;
    // The outage: the shard finishes (1.5 s) while Redis is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart().await;

    let results = replies
        .exactly_one_each(&[id], Duration::from_secs(60))
        .await;
    assert_eq!(completed(&results[&id]), unsharded("synthetic", payload));
    assert_eq!(attempts(&c, id, 0).await, 0, "the outage cost no attempt");
    c.shutdown().await;
}
