//! Shards that fail: retried with backoff up to the kind's limit, then the request fails once.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use shardline::Registry;
use shardline::kind::{Kind, KindError, even_chunks};
use shardline::message::{Format, RequestBody, Shard, Status};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually};
use uuid::Uuid;

/// Tries seen per shard by [`Flaky`].
static TRIES: LazyLock<Mutex<HashMap<Vec<i64>, u32>>> = LazyLock::new(Mutex::default);

/// Sums numbers, but fails the first two tries of every shard.
struct Flaky;

/// Sums numbers, but always panics.
struct Panicky;

macro_rules! summing_kind {
    ($t:ty, $name:literal, $process:expr) => {
        impl Kind for $t {
            type Input = Vec<i64>;
            type Shard = Vec<i64>;
            type Partial = i64;
            type Output = i64;
            fn name(&self) -> &'static str {
                $name
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
                $process(shard)
            }
            fn merge(&self, parts: Vec<i64>) -> Result<i64, KindError> {
                Ok(parts.iter().sum())
            }
        }
    };
}

summing_kind!(Flaky, "flaky", |shard: Vec<i64>| {
    let mut tries = TRIES.lock().expect("lock");
    let n = tries.entry(shard.clone()).or_default();
    *n += 1;
    if *n <= 2 {
        Err(KindError::Failed(format!("try {n} fails")))
    } else {
        Ok(shard.iter().sum())
    }
});
summing_kind!(
    Panicky,
    "panicky",
    |_shard: Vec<i64>| -> Result<i64, KindError> { panic!("poison") }
);

/// Sums numbers, but its merge panics.
struct BadMerge;

impl Kind for BadMerge {
    type Input = Vec<i64>;
    type Shard = Vec<i64>;
    type Partial = i64;
    type Output = i64;
    fn name(&self) -> &'static str {
        "badmerge"
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
    fn merge(&self, _parts: Vec<i64>) -> Result<i64, KindError> {
        panic!("merge bug")
    }
}

async fn cluster() -> Cluster {
    Cluster::builder()
        .registry(Registry::builtin().with(Flaky).with(Panicky).with(BadMerge))
        .start()
        .await
}

async fn send(c: &Cluster, replies: &Replies, kind: &str, payload: Vec<i64>) -> Uuid {
    let body = Format::MsgPack
        .encode(&RequestBody {
            kind: kind.into(),
            payload: rmpv::Value::Array(payload.into_iter().map(Into::into).collect()),
            options: Some(rmpv::Value::Map(vec![("max_shards".into(), 3.into())])),
        })
        .expect("encode");
    let id = Uuid::new_v4();
    publish_request(c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    id
}

/// A shard that fails twice and then succeeds is retried, and the request completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let c = cluster().await;
    let mut replies = Replies::new(&c).await;
    let id = send(&c, &replies, "flaky", vec![1, 2, 3, 40, 50, 600]).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!(r.request_id, id);
    assert_eq!(completed(&r), rmpv::Value::from(696));
    c.shutdown().await;
}

/// A shard that always panics is tried `max_attempts` times, then the request fails once with
/// the reason and the shard lands in the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_shards_fail_the_request_after_the_limit() {
    let c = cluster().await;
    let mut replies = Replies::new(&c).await;
    let id = send(&c, &replies, "panicky", vec![1, 2, 3]).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Failed));
    let err = r.error.expect("error");
    assert_eq!(err.code, "shard_panicked");
    assert!(err.message.contains("attempt 3 of 3"), "{}", err.message);
    let dead = eventually(
        "the poison shard dead-lettered",
        Duration::from_secs(10),
        || async { c.drain(&c.names.dead_queue()).await.into_iter().next() },
    )
    .await;
    let shard: Shard = rmp_serde::from_slice(&dead.data).expect("a shard");
    assert_eq!(shard.request_id, id);
    assert!(
        !replies.another_within(Duration::from_secs(2)).await,
        "one terminal result"
    );
    c.shutdown().await;
}

/// A merge that panics ends the request `failed` (once) instead of being retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_merge_fails_the_request_once() {
    let c = cluster().await;
    let mut replies = Replies::new(&c).await;
    let id = send(&c, &replies, "badmerge", vec![1, 2, 3]).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Failed));
    assert_eq!(r.error.expect("error").code, "merge_panicked");
    assert!(
        !replies.another_within(Duration::from_secs(2)).await,
        "one terminal result"
    );
    c.shutdown().await;
}
