//! Shards the broker returns as unroutable (their engine's queue is gone) all reach the shared
//! queue, even when many publishes are in flight on one channel: an AMQP return carries no
//! delivery tag, so the client library may hand it to another publish's confirm.

use std::time::Duration;

use shardline::message::{Options, Status};
use shardline_manager::RouterKind;
use shardline_manager::plan::ShardCount;
use shardline_tests::{Cluster, completed, patience, synthetic, unsharded};

/// An engine registered and beating but without a queue gets a third of the shards of each
/// request (round robin); every one comes back unroutable while others are confirmed around
/// it, and every request still completes with each shard counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_returned_shard_reaches_the_shared_queue() {
    let c = Cluster::builder()
        .workers(2)
        .without_manager()
        .worker(|w| w.concurrency = Some(8))
        .start()
        .await;
    let store = c.store.clone();
    let beat = tokio::spawn(async move {
        loop {
            let _ = store
                .heartbeat(
                    "queueless",
                    "concurrency=8 pid=0",
                    &[],
                    Duration::from_secs(6),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    c.wait_registered("queueless").await;
    let mut c = c;
    c.start_manager(|m| {
        m.router = RouterKind::RoundRobin;
        m.shard_count = ShardCount::Fixed(3_000);
        m.max_shards = 3_000;
    });
    for _ in 0..3 {
        let r = c
            .client()
            .submit(
                "synthetic",
                synthetic(3_000, 0),
                Options {
                    max_shards: Some(3_000),
                    ..Options::default()
                },
                patience(Duration::from_secs(90)),
            )
            .await
            .expect("every shard arrives");
        assert_eq!((r.status, r.shards), (Status::Completed, 3_000));
        assert_eq!(completed(&r), unsharded("synthetic", synthetic(3_000, 0)));
        let routes = c.store.routes(r.request_id).await.expect("redis");
        let queueless = routes.values().filter(|e| *e == "queueless").count();
        assert!(
            (800..=1_200).contains(&queueless),
            "{queueless} of 3000 shards routed to the engine without a queue"
        );
    }
    beat.abort();
    c.shutdown().await;
}
