//! Slots migrated between Redis Cluster primaries (`redis-cli --cluster reshard`) while
//! requests run: the clients follow `MOVED` and `ASK`, and every request ends once with the
//! right answer. A test binary of its own, so that no other test shares the cluster while
//! its slots move.

use std::time::Duration;

use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{
    Cluster, completed, redis_cluster, request_body, synthetic, unsharded, wait_progress,
};
use uuid::Uuid;

/// Move all but one slot of a primary to another primary and back while 12 requests run;
/// at least one running request's keys move, and each request completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_migrated_mid_run_lose_nothing() {
    let c = Cluster::builder()
        .redis_url(redis_cluster::urls())
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let payload = synthetic(200, 5_000);
    let body = request_body("synthetic", payload.clone(), &[]);
    let ids: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    }
    wait_progress(&c, &ids, 10).await;
    let keys: Vec<String> = ids.iter().map(|id| c.names.meta_key(*id)).collect();
    let before = serving(&keys).await;

    let primaries = redis_cluster::primaries().await;
    let [(_, from, slots), (_, to, _), ..] = primaries.as_slice() else {
        panic!("a cluster of at least two primaries: {primaries:?}");
    };
    // All but one slot, so the source stays a primary (an empty one would become a replica).
    redis_cluster::reshard(from, to, slots - 1).await;
    let moved = serving(&keys).await;
    redis_cluster::reshard(to, from, slots - 1).await;
    assert!(
        before.iter().zip(&moved).any(|(b, m)| b != m),
        "no running request's keys moved: {before:?}"
    );

    let want = unsharded("synthetic", payload);
    for r in replies
        .exactly_one_each(&ids, Duration::from_secs(120))
        .await
        .values()
    {
        assert_eq!(completed(r), want);
    }
    c.shutdown().await;
}

/// The port of the primary serving each of `keys`.
async fn serving(keys: &[String]) -> Vec<u16> {
    let mut ports = Vec::new();
    for k in keys {
        ports.push(
            redis_cluster::primary_of(k)
                .await
                .expect("every slot served"),
        );
    }
    ports
}
