//! Recovery without a graceful stop: killed workers, vanished engines, dead finalizers.
//! Every scenario checks exactly one result per request and completion within a bound.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use shardline::Registry;
use shardline::amqp::{self, ReplyTo};
use shardline::message::{Format, Status};
use shardline::store::RequestState;
use shardline_tests::process::{signal, spawn_worker};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{
    Cluster, completed, eventually, ghost_engine, request_body, stage_unfinalized, synthetic,
    unsharded, wait_progress,
};
use uuid::Uuid;

/// Engine TTL of the manager in these tests: an engine silent this long is dead.
const ENGINE_TTL_MS: u64 = 1_500;

async fn queue_gone(c: &Cluster, engine: &str) -> bool {
    let ch = c.channel().await;
    ch.queue_declare(
        c.names.engine_queue(engine).into(),
        QueueDeclareOptions::default().passive(),
        Default::default(),
    )
    .await
    .is_err()
}

/// SIGKILL a worker process holding unacked shards: its shards are finished elsewhere, every
/// request completes exactly once, and its queue is reaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_worker_shards_finish_elsewhere() {
    let c = Cluster::builder()
        .workers(2)
        .engine_queues()
        .manager(|m| m.engine_ttl_ms = ENGINE_TTL_MS)
        .start()
        .await;
    let mut killed = spawn_worker(env!("CARGO_BIN_EXE_worker-under-test"), &c, "p0", 2);
    c.wait_registered("p0").await;
    let mut replies = Replies::new(&c).await;
    let payload = synthetic(100, 10_000); // 10 shards of 100 ms
    let request = request_body("synthetic", payload.clone(), &[]);
    let ids = std::sync::Mutex::new(Vec::new());
    eventually(
        "a request routed to the worker process",
        Duration::from_secs(20),
        || async {
            let id = Uuid::new_v4();
            publish_request(&c, &request, None, &id.to_string(), Some(&replies.queue)).await;
            ids.lock().expect("lock").push(id);
            let routes = eventually("request routed", Duration::from_secs(10), || async {
                let routes = c.store.routes(id).await.ok()?;
                (!routes.is_empty()).then_some(routes)
            })
            .await;
            routes.values().any(|e| e == "p0").then_some(())
        },
    )
    .await;
    let mut ids = ids.into_inner().expect("lock");
    for _ in 0..6 {
        let id = Uuid::new_v4();
        publish_request(&c, &request, None, &id.to_string(), Some(&replies.queue)).await;
        ids.push(id);
    }
    wait_progress(&c, &ids, 6).await; // the worker process is mid-shard
    signal(&killed, "KILL");
    let _ = killed.wait().await;

    let results = replies
        .exactly_one_each(&ids, Duration::from_secs(60))
        .await;
    let want = unsharded("synthetic", payload);
    for r in results.values() {
        assert_eq!(completed(r), want);
    }
    eventually(
        "the killed engine reaped",
        Duration::from_secs(15),
        || async { queue_gone(&c, "p0").await.then_some(()) },
    )
    .await;
    c.shutdown().await;
}

/// An engine that vanishes for good with 50 shards queued: its queue moves to the shared queue
/// and the request completes on another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_engine_with_fifty_queued_shards() {
    let mut c = Cluster::builder()
        .engine_queues()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let beat = ghost_engine(&c, "ghost", Duration::from_millis(ENGINE_TTL_MS)).await;
    let ch = c.channel().await;
    c.start_manager(|m| {
        m.engine_ttl_ms = ENGINE_TTL_MS;
        m.shard_size_scale = 1e-9;
    });
    let mut replies = Replies::new(&c).await;
    let payload = rmpv::Value::Array((0..500i64).rev().map(rmpv::Value::from).collect());
    let id = Uuid::new_v4();
    publish_request(
        &c,
        &request_body("sort", payload.clone(), &[("max_shards", 50)]),
        None,
        &id.to_string(),
        Some(&replies.queue),
    )
    .await;
    eventually(
        "50 shards queued on the ghost engine",
        Duration::from_secs(15),
        || async {
            let q = ch
                .queue_declare(
                    c.names.engine_queue("ghost").into(),
                    QueueDeclareOptions::default().passive(),
                    Default::default(),
                )
                .await
                .ok()?;
            (q.message_count() == 50).then_some(())
        },
    )
    .await;
    beat.abort(); // the ghost vanishes
    c.add_worker("w0").await;
    let results = replies
        .exactly_one_each(&[id], Duration::from_secs(30))
        .await;
    assert_eq!(completed(&results[&id]), unsharded("sort", payload));
    assert!(
        queue_gone(&c, "ghost").await,
        "the ghost's queue was deleted"
    );
    let live = c
        .store
        .live_engines(Duration::from_secs(3600))
        .await
        .expect("redis");
    assert!(!live.contains(&"ghost".to_string()));
    c.shutdown().await;
}

/// Write every part of a 3-shard sort request as a worker would, the last write claiming the
/// finalizer lease for a holder that then "crashes" (never finalizes).
async fn stage_claimed_request(c: &Cluster, reply_queue: &str) -> (Uuid, rmpv::Value) {
    let kind = Registry::builtin().get("sort").expect("sort");
    let payload = rmpv::Value::Array(vec![
        9.into(),
        4.into(),
        7.into(),
        1.into(),
        8.into(),
        2.into(),
    ]);
    let parts: Vec<Vec<u8>> = kind
        .split(payload.clone(), &mut |_, _| 3)
        .expect("split")
        .iter()
        .map(|s| {
            kind.process(s, &shardline::kind::Stop::new())
                .expect("process")
        })
        .collect();
    let id = stage_unfinalized(c, "sort", &parts, reply_queue).await;
    (id, payload)
}

/// A finalizer that dies after its claim and before publishing: the sweeper publishes the
/// result once its lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_killed_before_publishing() {
    let mut c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let (id, payload) = stage_claimed_request(&c, &replies.queue).await;
    c.start_manager(|_| {});
    let d = replies.next_raw(Duration::from_secs(15)).await;
    assert_eq!(
        amqp::attempt(&d.properties),
        Some(1),
        "nothing was sent before: a first copy"
    );
    assert!(!replies.another_within(Duration::from_millis(500)).await);
    let result: shardline::message::FinalResult =
        Format::MsgPack.decode(&d.data).expect("decodable result");
    assert_eq!(completed(&result), unsharded("sort", payload));
    let meta = c.store.meta(id).await.expect("redis").expect("meta");
    assert_eq!(meta.state, RequestState::Published);
    c.shutdown().await;
}

/// A finalizer that dies after publishing but before marking the request: the sweeper
/// publishes again with the same `message_id` and the same content, so consumers deduplicate,
/// and the request ends `published`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_killed_after_publishing() {
    let mut c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let (id, payload) = stage_claimed_request(&c, &replies.queue).await;
    // What the dead finalizer managed to publish before dying.
    let first = shardline::message::FinalResult {
        request_id: id,
        kind: "sort".into(),
        status: Status::Completed,
        shards: 3,
        output: Some(unsharded("sort", payload.clone())),
        error: None,
        failed_shards: Vec::new(),
    };
    // The dead finalizer counted its publication, as a real one does before sending.
    assert_eq!(c.store.publication(id).await.expect("redis"), Some(1));
    let ch = c.channel().await;
    let to = ReplyTo {
        reply_to: Some(replies.queue.clone()),
        correlation_id: None,
        format: Format::MsgPack,
    };
    amqp::publish_result(&ch, &c.names, &to, &first, Some(1))
        .await
        .expect("publish");
    c.start_manager(|_| {});
    let a = replies.next_raw(Duration::from_secs(15)).await;
    let b = replies.next_raw(Duration::from_secs(15)).await;
    assert_eq!(
        a.properties.message_id(),
        b.properties.message_id(),
        "same message_id to deduplicate on"
    );
    assert_eq!(a.data, b.data, "same content");
    assert_eq!(amqp::attempt(&a.properties), Some(1));
    assert_eq!(
        amqp::attempt(&b.properties),
        Some(2),
        "the re-driven copy says it may repeat"
    );
    assert!(!replies.another_within(Duration::from_millis(500)).await);
    eventually(
        "the request marked published",
        Duration::from_secs(5),
        || async { (c.store.state(id).await.ok()?? == RequestState::Published).then_some(()) },
    )
    .await;
    c.shutdown().await;
}
