//! Shards that fail: retried with backoff up to the kind's limit, then the request fails once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use lapin::types::AMQPValue;
use shardline::Registry;
use shardline::kind::{Kind, KindError, even_chunks};
use shardline::message::{Format, RequestBody, Shard, Status};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually, summing_kind};
use uuid::Uuid;

/// Tries seen per shard by [`Flaky`].
static TRIES: LazyLock<Mutex<HashMap<Vec<i64>, u32>>> = LazyLock::new(Mutex::default);

/// Sums numbers, but fails the first two tries of every shard.
struct Flaky;

/// Sums numbers, but always panics.
struct Panicky;

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

/// Sums numbers, but a shard holding a negative number always fails.
struct Picky;

summing_kind!(Picky, "picky", |shard: Vec<i64>| {
    if shard.iter().any(|x| *x < 0) {
        Err(KindError::Failed("negative number".into()))
    } else {
        Ok(shard.iter().sum())
    }
});

/// Lets [`Gated`]'s shard holding [`GATE`] finish.
static GATE_OPEN: AtomicBool = AtomicBool::new(false);
/// Starts of [`Gated`]'s shard holding [`GATE`], and of its failing shard.
static GATED_RUNS: AtomicU32 = AtomicU32::new(0);
static FAILED_RUNS: AtomicU32 = AtomicU32::new(0);
/// The number that makes a [`Gated`] shard wait for [`GATE_OPEN`].
const GATE: i64 = 1_000;

/// Sums numbers; a shard holding a negative number fails on its one try, and a shard holding
/// [`GATE`] waits (at most 60 s) until the test opens the gate.
struct Gated;

summing_kind!(
    Gated,
    "gated",
    |shard: Vec<i64>| {
        if shard.iter().any(|x| *x < 0) {
            FAILED_RUNS.fetch_add(1, Ordering::SeqCst);
            return Err(KindError::Failed("negative number".into()));
        }
        if shard.contains(&GATE) {
            GATED_RUNS.fetch_add(1, Ordering::SeqCst);
            let until = std::time::Instant::now() + Duration::from_secs(60);
            while !GATE_OPEN.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(shard.iter().sum())
    },
    1
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
    builder().start().await
}

fn builder() -> shardline_tests::cluster::ClusterBuilder {
    Cluster::builder().registry(
        Registry::builtin()
            .with(Flaky)
            .with(Panicky)
            .with(BadMerge)
            .with(Picky)
            .with(Gated),
    )
}

async fn send(c: &Cluster, replies: &Replies, kind: &str, payload: Vec<i64>) -> Uuid {
    send_with(c, replies, kind, payload, vec![]).await
}

async fn send_with(
    c: &Cluster,
    replies: &Replies,
    kind: &str,
    payload: Vec<i64>,
    options: Vec<(rmpv::Value, rmpv::Value)>,
) -> Uuid {
    let id = Uuid::new_v4();
    let body = body(kind, payload, options);
    publish_request(c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    id
}

/// A request body of `kind` cut into at most three shards.
fn body(kind: &str, payload: Vec<i64>, mut options: Vec<(rmpv::Value, rmpv::Value)>) -> Vec<u8> {
    options.push(("max_shards".into(), 3.into()));
    Format::MsgPack
        .encode(&RequestBody {
            kind: kind.into(),
            payload: rmpv::Value::Array(payload.into_iter().map(Into::into).collect()),
            options: Some(rmpv::Value::Map(options)),
            locality: None,
        })
        .expect("encode")
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

/// Shards [1, 2], [-3, 4], [5, 6]: the middle one fails for good.
const MIXED: [i64; 6] = [1, 2, -3, 4, 5, 6];

/// With `failure_policy: partial`, the request waits for every shard and returns the merge of
/// the ones that succeeded, listing the failed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_policy_returns_what_succeeded() {
    let c = cluster().await;
    let mut replies = Replies::new(&c).await;
    let opts = vec![("failure_policy".into(), "partial".into())];
    let id = send_with(&c, &replies, "picky", MIXED.to_vec(), opts).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Partial));
    assert_eq!(r.output, Some(rmpv::Value::from(14)));
    assert_eq!(r.failed_shards, vec![1]);
    assert_eq!(r.error.expect("error").code, "shards_failed");
    assert!(
        !replies.another_within(Duration::from_secs(1)).await,
        "one terminal result"
    );
    c.shutdown().await;
}

/// With `quorum: 2` of 3 shards, one failure still gives a (partial) answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_met_returns_a_partial_answer() {
    let c = cluster().await;
    let mut replies = Replies::new(&c).await;
    let opts = vec![
        ("failure_policy".into(), "quorum".into()),
        ("quorum".into(), 2.into()),
    ];
    let id = send_with(&c, &replies, "picky", MIXED.to_vec(), opts).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Partial));
    assert_eq!(r.output, Some(rmpv::Value::from(14)));
    c.shutdown().await;
}

/// With `quorum: 3` of 3 shards, the first failure makes the quorum unreachable: the request
/// fails at once, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_unreachable_fails_the_request() {
    let c = cluster().await;
    let mut replies = Replies::new(&c).await;
    let opts = vec![
        ("failure_policy".into(), "quorum".into()),
        ("quorum".into(), 3.into()),
    ];
    let id = send_with(&c, &replies, "picky", MIXED.to_vec(), opts).await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Failed));
    assert_eq!(r.error.expect("error").code, "quorum_unreachable");
    assert!(
        !replies.another_within(Duration::from_secs(1)).await,
        "one terminal result"
    );
    c.shutdown().await;
}

/// A request redelivered while it runs does not send again a shard that already failed for
/// good under `failure_policy: partial`: the failure settled it as a stored result would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_request_does_not_resend_a_failed_shard() {
    // Four slots a worker: the two copies of the gated shard, blocked until the end, can never
    // hold every slot of the worker a re-sent shard was routed to (with two slots they could,
    // and that shard then waited in its queue for a gate that waited for it).
    let c = builder()
        .worker(|cfg| cfg.concurrency = Some(4))
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    // Shards [GATE, 1], [-3, 4], [5, 6]: the first waits, the second fails for good.
    let opts = vec![("failure_policy".into(), "partial".into())];
    let body = body("gated", vec![GATE, 1, -3, 4, 5, 6], opts);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    eventually(
        "the failing shard's failure recorded",
        Duration::from_secs(30),
        || async {
            c.store
                .failures(id)
                .await
                .ok()?
                .contains_key(&1)
                .then_some(())
        },
    )
    .await;
    // The same request again (a manager died before acking it): its unsettled shards go out
    // again, the gated one among them.
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    eventually(
        "the gated shard sent again",
        Duration::from_secs(30),
        || async { (GATED_RUNS.load(Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    eventually(
        "every shard sent again has reached a worker",
        Duration::from_secs(30),
        || async { shardline_tests::delivered(&c, id, 3).await.then_some(()) },
    )
    .await;
    GATE_OPEN.store(true, Ordering::SeqCst);
    let r = replies.next(Duration::from_secs(60)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Partial));
    assert_eq!(r.output, Some(rmpv::Value::from(GATE + 12)));
    assert_eq!(r.failed_shards, vec![1]);
    assert_eq!(
        FAILED_RUNS.load(Ordering::SeqCst),
        1,
        "the failed shard ran again"
    );
    assert!(
        !replies.another_within(Duration::from_secs(1)).await,
        "one terminal result"
    );
    c.shutdown().await;
}

/// A shard on the last delivery its queue allows (a quorum queue's `x-delivery-count` at the
/// delivery limit) fails its request at once instead of going back, where the broker would
/// dead-letter it with its request still waiting. The count is set by hand here: a quorum
/// queue sets it itself, after a hundred put-backs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_on_its_last_allowed_delivery_fails_its_request() {
    let mut c = builder().workers(0).start().await;
    let mut replies = Replies::new(&c).await;
    let id = send(&c, &replies, "picky", vec![-1, 2, 3]).await;
    let queue = c.names.kind_queue("picky");
    let shards = eventually("the shards queued", Duration::from_secs(10), || async {
        let got = c.drain(&queue).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    let ch = c.channel().await;
    for shard in shards {
        let mut headers = shard.properties.headers().clone().unwrap_or_default();
        let limit = i64::from(shardline::amqp::queue_type::DELIVERY_LIMIT);
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(limit));
        let props = shard.properties.clone().with_headers(headers);
        shardline::amqp::publish(&ch, "", &queue, &shard.data, props, true)
            .await
            .expect("queue the shard again");
    }
    c.add_worker("w1").await;
    let r = replies.next(Duration::from_secs(30)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Failed));
    let err = r.error.expect("error");
    assert!(
        err.message.contains("attempt 1 of 3") && err.message.contains("last delivery"),
        "{}",
        err.message
    );
    c.shutdown().await;
}
