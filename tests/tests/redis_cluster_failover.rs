//! A Redis Cluster primary killed with SIGKILL mid-run (its replica is promoted): with
//! `--redis-wait-replicas 1`, every request still ends in exactly one result, and the right
//! one. A test binary of its own, so that no other test shares the cluster while a node is
//! down; it starts the killed node again at the end (it rejoins as a replica).

use shardline_tests::{Cluster, redis_cluster};

/// Kill the primary that holds the first request's keys while 12 requests are running: each
/// completes exactly once with the unsharded answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_leaves_every_request_one_right_result() {
    let c = Cluster::builder()
        .redis_url(redis_cluster::urls())
        .redis_wait_replicas(1)
        .start()
        .await;
    let (mut replies, ids, want) = shardline_tests::raw::running_requests(&c, 12).await;
    let key = c.names.meta_key(ids[0]);
    let victim = redis_cluster::primary_of(&key)
        .await
        .expect("a primary serves it");
    redis_cluster::kill(victim).await;
    redis_cluster::wait_failover(&key, victim).await;

    replies.each_completed_once(&ids, &want).await;
    c.shutdown().await;
    redis_cluster::heal();
}
