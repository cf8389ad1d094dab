//! Running shards that are no longer wanted stop: on cancel, and at the worker's time limit
//! (which keeps a long shard from reaching the broker's consumer timeout).

use std::time::{Duration, Instant};

use shardline::message::{Options, Status};
use shardline_manager::plan::ShardCount;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{
    Cluster, attempts, delivered, eventually, patience, request_body, synthetic,
};
use uuid::Uuid;

/// A cluster of one worker with two slots that checks its running shards every 100 ms;
/// `short_limit` gives shards a one-second time limit.
async fn cluster(short_limit: bool) -> Cluster {
    let b = Cluster::builder()
        .workers(1)
        .manager(|m| m.shard_count = ShardCount::Fixed(2));
    let b = if short_limit {
        b.worker(|w| {
            w.concurrency = Some(2);
            w.stop_check_ms = 100;
            w.shard_time_limit_ms = 1_000;
        })
    } else {
        b.worker(|w| {
            w.concurrency = Some(2);
            w.stop_check_ms = 100;
        })
    };
    b.start().await
}

/// A two-millisecond request completes within 20 s (far less than the minute the long shards
/// of these tests would hold the worker's slots).
async fn small_request_completes(c: &Cluster, what: &str) {
    let r = c
        .client()
        .submit(
            "synthetic",
            synthetic(2, 1_000),
            Options::default(),
            patience(Duration::from_secs(20)),
        )
        .await
        .expect(what);
    assert_eq!(r.status, Status::Completed, "{what}");
}

/// Cancelling a request stops its running shards at their next check: the worker's slots are
/// free again at once (another request completes in seconds, not after the minute the
/// cancelled shards would have run), and no result of the cancelled request is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_shards() {
    let c = cluster(false).await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    // Two shards of one minute each fill both slots.
    let body = request_body("synthetic", synthetic(2, 60_000_000), &[]);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    eventually("both shards running", Duration::from_secs(30), || async {
        delivered(&c, id, 2).await.then_some(())
    })
    .await;

    c.client().cancel(id).await.expect("cancel");
    let r = replies.next(Duration::from_secs(10)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Cancelled));

    small_request_completes(
        &c,
        "the next request completes while the cancelled shards would still run",
    )
    .await;
    let meta = c.store.meta(id).await.expect("redis").expect("meta");
    assert_eq!(
        meta.done, 0,
        "no result of the cancelled request was stored"
    );
    assert!(
        !replies.another_within(Duration::from_millis(500)).await,
        "one terminal result"
    );
    c.shutdown().await;
}

/// A shard that runs past the worker's time limit is stopped and counts as a failed attempt;
/// after the kind's three attempts the request fails once with `time_limit`. The shard is
/// tried exactly three times (no redelivery storm) and the worker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_time_limit_stops_long_shards() {
    let c = cluster(true).await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    let body = request_body("synthetic", synthetic(2, 60_000_000), &[]);
    let sent = Instant::now();
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;

    let r = replies.next(Duration::from_secs(40)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Failed));
    let error = r.error.expect("error");
    assert_eq!(error.code, "time_limit", "{error:?}");
    assert!(
        sent.elapsed() < patience(Duration::from_secs(30)),
        "stopped after {:?}",
        sent.elapsed()
    );
    let tries = attempts(&c, id, 0).await.max(attempts(&c, id, 1).await);
    assert_eq!(tries, 3, "tried exactly max_attempts times");
    assert!(
        !replies.another_within(Duration::from_millis(500)).await,
        "one terminal result"
    );

    small_request_completes(&c, "the worker still serves").await;
    c.shutdown().await;
}
