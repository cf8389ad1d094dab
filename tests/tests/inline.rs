//! Shards a worker expects to take microseconds run inline, on its async runtime's thread.
//! What goes wrong there must go wrong exactly as on a blocking thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shardline::Registry;
use shardline::kind::KindError;
use shardline::message::Status;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, request_body, summing_kind};
use uuid::Uuid;

thread_local! {
    /// Set on a thread when the runtime parks it: only the runtime's own worker threads park
    /// (go idle), never a blocking-pool thread.
    static RUNTIME_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Tries of the panicking shard that ran on a runtime worker thread (inline).
static TRAPPED_INLINE: AtomicU32 = AtomicU32::new(0);
/// Tries of the panicking shard that ran on a blocking-pool thread.
static TRAPPED_ON_POOL: AtomicU32 = AtomicU32::new(0);

/// Sums numbers, fast; a shard holding 13 notes which sort of thread it is on, then panics.
struct Trap;

summing_kind!(Trap, "trap", |shard: Vec<i64>| -> Result<i64, KindError> {
    if shard.contains(&13) {
        let tries = if RUNTIME_WORKER.get() {
            &TRAPPED_INLINE
        } else {
            &TRAPPED_ON_POOL
        };
        tries.fetch_add(1, Ordering::SeqCst);
        panic!("unlucky shard");
    }
    Ok(shard.iter().sum())
});

/// Two worker threads, as `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`, that
/// mark themselves [`RUNTIME_WORKER`] whenever they go idle.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_park(|| RUNTIME_WORKER.set(true))
        .build()
        .expect("test runtime")
}

async fn send(c: &Cluster, replies: &Replies, numbers: &[i64]) -> Uuid {
    let payload = rmpv::Value::Array(numbers.iter().map(|n| (*n).into()).collect());
    let body = request_body("trap", payload, &[("max_shards", numbers.len() as u64)]);
    let id = Uuid::new_v4();
    publish_request(c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    id
}

/// After the worker has learned that the kind is fast, a shard that panics runs inline (on a
/// runtime worker thread, every try), is retried and then fails its request with
/// `shard_panicked`, once; the worker goes on.
#[test]
fn a_panic_inline_fails_the_request_like_one_on_the_pool() {
    runtime().block_on(panic_inline());
}

async fn panic_inline() {
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
    let tries = (
        TRAPPED_INLINE.load(Ordering::SeqCst),
        TRAPPED_ON_POOL.load(Ordering::SeqCst),
    );
    assert_eq!(
        tries,
        (3, 0),
        "tries of the panicking shard (inline, on the pool)"
    );
    let id = send(&c, &replies, &[1, 2]).await;
    let r = replies.next(Duration::from_secs(20)).await;
    assert_eq!((r.request_id, completed(&r)), (id, rmpv::Value::from(3)));
    c.shutdown().await;
}
