//! Shards a worker expects to take microseconds run inline, on its async runtime's thread.
//! What goes wrong there must go wrong exactly as on a blocking thread.

use std::time::Duration;

use shardline::Registry;
use shardline::kind::KindError;
use shardline::message::Status;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, request_body, summing_kind};
use uuid::Uuid;

/// Sums numbers, fast; a shard holding 13 panics.
struct Trap;

summing_kind!(Trap, "trap", |shard: Vec<i64>| -> Result<i64, KindError> {
    assert!(!shard.contains(&13), "unlucky shard");
    Ok(shard.iter().sum())
});

async fn send(c: &Cluster, replies: &Replies, numbers: &[i64]) -> Uuid {
    let payload = rmpv::Value::Array(numbers.iter().map(|n| (*n).into()).collect());
    let body = request_body("trap", payload, &[("max_shards", numbers.len() as u64)]);
    let id = Uuid::new_v4();
    publish_request(c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    id
}

/// After the worker has learned that the kind is fast, a shard that panics (now inline) is
/// retried and then fails its request with `shard_panicked`, once; the worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inline_fails_the_request_like_one_on_the_pool() {
    // A generous limit: in a debug build a shard of this kind may take longer than the
    // default, and this test is about what happens inline, not about the limit.
    let c = Cluster::builder()
        .workers(1)
        .worker(|w| w.inline_us = 1_000_000)
        .registry(Registry::builtin().with(Trap))
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let learn: Vec<i64> = (1..=12).collect();
    for _ in 0..2 {
        let id = send(&c, &replies, &learn).await;
        let r = replies.next(Duration::from_secs(20)).await;
        assert_eq!(r.request_id, id);
        assert_eq!(completed(&r), rmpv::Value::from(78));
    }
    let id = send(&c, &replies, &[13]).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Failed));
    let err = r.error.expect("error");
    assert_eq!(err.code, "shard_panicked");
    assert!(err.message.contains("unlucky shard"), "{}", err.message);
    assert!(err.message.contains("attempt 3 of 3"), "{}", err.message);
    let id = send(&c, &replies, &[1, 2]).await;
    let r = replies.next(Duration::from_secs(20)).await;
    assert_eq!((r.request_id, completed(&r)), (id, rmpv::Value::from(3)));
    c.shutdown().await;
}
