//! Requests at the extremes of the shard count.

use std::time::Duration;

use shardline::message::Options;
use shardline_tests::{Cluster, completed, unsharded};

/// A request capped at one shard runs as a single shard and is still correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_request() {
    let c = Cluster::builder().start().await;
    let payload = rmpv::Value::Array(vec![5.into(), (-3).into(), 9.into(), 0.into()]);
    let opts = Options {
        max_shards: Some(1),
        deadline_ms: None,
        ..Options::default()
    };
    let r = c
        .client()
        .submit("sort", payload.clone(), opts, Duration::from_secs(30))
        .await
        .expect("result");
    assert_eq!(r.shards, 1);
    assert_eq!(completed(&r), unsharded("sort", payload));
    c.shutdown().await;
}

/// A request cut into 1,000 shards completes with every shard counted once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_shard_request() {
    let c = Cluster::builder()
        .manager(|m| m.shard_size_scale = 1e-9)
        .worker(|w| w.concurrency = Some(8))
        .start()
        .await;
    let payload = rmpv::Value::Array((0..5_000i64).rev().map(rmpv::Value::from).collect());
    let opts = Options {
        max_shards: Some(1_000),
        deadline_ms: None,
        ..Options::default()
    };
    let r = c
        .client()
        .submit("sort", payload.clone(), opts, Duration::from_secs(120))
        .await
        .expect("result");
    assert_eq!(r.shards, 1_000);
    assert_eq!(completed(&r), unsharded("sort", payload));
    let meta = c
        .store
        .meta(r.request_id)
        .await
        .expect("redis")
        .expect("meta");
    assert_eq!((meta.done, meta.total), (1_000, 1_000));
    c.shutdown().await;
}
