//! Slots migrated between Redis Cluster primaries (`redis-cli --cluster reshard`) while
//! requests run: the clients follow `MOVED` and `ASK`, and every request ends once with the
//! right answer. A test binary of its own, so that no other test shares the cluster while
//! its slots move.

use shardline_tests::{Cluster, redis_cluster};

/// Move all but one slot of a primary to another primary and back while 12 requests run;
/// at least one running request's keys move, and each request completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_migrated_mid_run_lose_nothing() {
    let c = Cluster::builder()
        .redis_url(redis_cluster::urls())
        .start()
        .await;
    let (mut replies, ids, want) = shardline_tests::raw::running_requests(&c, 12).await;
    let keys: Vec<String> = ids.iter().map(|id| c.names.meta_key(*id)).collect();
    let before = serving(&keys).await;

    // From the primary serving the first request's keys (12 keys need not reach every
    // primary), to another.
    let primaries = redis_cluster::primaries().await;
    let from = primaries
        .iter()
        .find(|p| p.port == before[0])
        .unwrap_or_else(|| panic!("{} serves no slot: {primaries:?}", before[0]));
    let to = primaries
        .iter()
        .find(|p| p.port != from.port)
        .unwrap_or_else(|| panic!("a cluster of at least two primaries: {primaries:?}"));
    // All but one slot, so the source stays a primary (an empty one would become a replica).
    let slots = from.slot_count() - 1;
    redis_cluster::reshard(&from.id, &to.id, slots).await;
    let moved = serving(&keys).await;
    redis_cluster::reshard(&to.id, &from.id, slots).await;
    assert!(
        before.iter().zip(&moved).any(|(b, m)| b != m),
        "no running request's keys moved: {before:?}"
    );

    replies.each_completed_once(&ids, &want).await;
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
