//! A merge that takes longer than the finalizer lease: the finalizer renews its lease, so the
//! sweeper does not take the request over and the result is published once.

use std::time::Duration;

use shardline::Registry;
use shardline::kind::{Kind, KindError, even_chunks};
use shardline::message::Status;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, request_body};
use uuid::Uuid;

/// Sums numbers; its merge takes two seconds.
struct SlowMerge;

impl Kind for SlowMerge {
    type Input = Vec<i64>;
    type Shard = Vec<i64>;
    type Partial = i64;
    type Output = i64;
    fn name(&self) -> &'static str {
        "slowmerge"
    }
    fn size(&self, input: &Vec<i64>) -> u64 {
        input.len() as u64
    }
    fn split(&self, input: Vec<i64>, n: usize) -> Vec<Vec<i64>> {
        even_chunks(&input, n)
            .into_iter()
            .map(<[i64]>::to_vec)
            .collect()
    }
    fn process(&self, shard: Vec<i64>) -> Result<i64, KindError> {
        Ok(shard.iter().sum())
    }
    fn merge(&self, parts: Vec<i64>) -> Result<i64, KindError> {
        std::thread::sleep(Duration::from_secs(2));
        Ok(parts.iter().sum())
    }
}

/// With a 300 ms lease and a 2 s merge, exactly one result is published: the lease is renewed
/// during the merge (without renewal the sweeper re-drives the request and publishes twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_merge_keeps_its_lease() {
    let c = Cluster::builder()
        .registry(Registry::builtin().with(SlowMerge))
        .worker(|w| w.lease_ms = 300)
        .manager(|m| m.lease_ms = 300)
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    let payload = rmpv::Value::Array((1..=8i64).map(rmpv::Value::from).collect());
    publish_request(
        &c,
        &request_body("slowmerge", payload, &[("max_shards", 4)]),
        None,
        &id.to_string(),
        Some(&replies.queue),
    )
    .await;
    let r = replies.next(Duration::from_secs(20)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Completed));
    assert_eq!(r.output, Some(rmpv::Value::from(36)));
    assert!(
        !replies.another_within(Duration::from_secs(3)).await,
        "a second finalizer published the result again"
    );
    c.shutdown().await;
}
