//! Kinds served by workers, not compiled into the manager: a worker advertises the kinds it
//! has, a stock manager cuts them with the generic splitter they name, routes their shards only
//! to engines that serve them, and has a worker of the kind merge a request it cannot.

use std::collections::BTreeMap;
use std::time::Duration;

use shardline::message::Status;
use shardline_tests::process::{spawn_manager, spawn_worker};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually, request_body, stage_unfinalized};
use tokio::process::Child;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Start the example worker that has `histogram` (and the built-in kinds) as engine `id`, and
/// wait until it is live.
async fn histogram_worker(c: &Cluster, id: &str) -> Child {
    let child = spawn_worker(env!("CARGO_BIN_EXE_custom-worker-under-test"), c, id, 2);
    eventually("the histogram worker live", WAIT, || async {
        let live = c.store.live_engines(Duration::from_secs(5)).await.ok()?;
        live.iter().any(|e| e == id).then_some(())
    })
    .await;
    child
}

/// `histogram` of 0..n: buckets of ten, as the kind merges them.
fn buckets(n: i64) -> rmpv::Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for x in 0..n {
        *counts
            .entry((x.div_euclid(10) * 10).to_string())
            .or_default() += 1;
    }
    shardline::message::to_named_value(&counts).expect("value")
}

/// Check that `r` is request `id` completed with the histogram of 0..n.
fn assert_histogram(r: &shardline::message::FinalResult, id: Uuid, n: i64) {
    assert_eq!(
        (r.request_id, r.status),
        (id, Status::Completed),
        "{:?}",
        r.error
    );
    assert_eq!(completed(r), buckets(n));
}

/// Record a running `histogram` request of `total` shards, cut by the `list` splitter, whose
/// result goes to `reply_to`; returns its deadline.
async fn record_histogram(c: &Cluster, id: Uuid, total: u32, reply_to: &str) -> u64 {
    let deadline = shardline::now_ms() + 60_000;
    c.store
        .create(&shardline::store::NewRequest {
            id,
            kind: "histogram".into(),
            total,
            created: shardline::now_ms(),
            deadline,
            reply_to: Some(reply_to.to_owned()),
            correlation_id: None,
            format: shardline::message::Format::MsgPack,
            policy: Default::default(),
            quorum: None,
            manager: "test".into(),
            cut: shardline::kind::Splitter::List,
        })
        .await
        .expect("create");
    deadline
}

fn numbers(n: i64) -> rmpv::Value {
    rmpv::Value::Array((0..n).map(rmpv::Value::from).collect())
}

/// A stock manager binary serves `histogram`, a kind it was never built with, as soon as a
/// worker that has it registers: cut into 8 shards by the `list` splitter, merged right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_manager_serves_a_kind_it_never_saw() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut worker = histogram_worker(&c, "hist").await;
    let mut manager = spawn_manager(
        env!("CARGO_BIN_EXE_manager-under-test"),
        &c,
        &[("SHARDLINE_SHARD_COUNT", "8")],
    );
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    let body = request_body("histogram", numbers(100), &[]);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    let r = replies.next(WAIT).await;
    assert_histogram(&r, id, 100);
    assert_eq!(r.shards, 8, "cut by the manager with the list splitter");
    let _ = manager.kill().await;
    let _ = worker.kill().await;
    c.shutdown().await;
}

/// Send six 16-shard `histogram` requests through a stock manager routing with `router`,
/// beside an engine (`w0`) that lacks the kind, and check that each completes and that no
/// shard was routed to `w0`.
async fn histogram_shards_avoid_engines_without_it(router: &str) {
    let c = Cluster::builder()
        .workers(1)
        .without_manager()
        .start()
        .await;
    let mut worker = histogram_worker(&c, "hist").await;
    let mut manager = spawn_manager(
        env!("CARGO_BIN_EXE_manager-under-test"),
        &c,
        &[
            ("SHARDLINE_SHARD_COUNT", "16"),
            ("SHARDLINE_ROUTER", router),
        ],
    );
    let mut replies = Replies::new(&c).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = Uuid::new_v4();
        let body = request_body("histogram", numbers(400), &[]);
        publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
        ids.push(id);
    }
    for _ in &ids {
        let r = replies.next(WAIT).await;
        assert_eq!(r.status, Status::Completed, "{router}: {:?}", r.error);
        assert_eq!(completed(&r), buckets(400));
    }
    for id in &ids {
        let routes = c.store.routes(*id).await.expect("redis");
        assert_eq!(routes.len(), 16);
        let elsewhere: Vec<_> = routes
            .values()
            .filter(|r| !matches!(r.as_str(), "hist" | "(shared)" | "(held)"))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "{router}: histogram shards routed to {elsewhere:?}"
        );
    }
    let _ = manager.kill().await;
    let _ = worker.kill().await;
    c.shutdown().await;
}

/// A router that places every shard at once sends a kind's shards only to engines that serve
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_shards_go_only_to_engines_that_serve_their_kind() {
    histogram_shards_avoid_engines_without_it("round-robin").await;
}

/// The default router, which holds shards in the manager, lets a kind's held shards go only
/// to engines that serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_shards_go_only_to_engines_that_serve_their_kind() {
    histogram_shards_avoid_engines_without_it("predictive-no-forecast").await;
}

/// A kind no worker advertises, and a kind name that could not name a queue, are rejected
/// with `unknown_kind` by a manager that does not have them built in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unadvertised_kind_is_unknown() {
    let c = Cluster::builder().workers(0).start().await;
    let mut replies = Replies::new(&c).await;
    for kind in ["histogram", "Not A Kind"] {
        let id = Uuid::new_v4();
        let body = request_body(kind, numbers(10), &[]);
        publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
        let r = replies.next(WAIT).await;
        assert_eq!((r.request_id, r.status), (id, Status::Rejected));
        let code = r.error.map(|e| e.code);
        assert_eq!(code.as_deref(), Some("unknown_kind"), "{kind}");
    }
    c.shutdown().await;
}

/// A `histogram` request whose finalizer died after the last shard was stored: the manager
/// (built without `histogram`, so it cannot merge) orders a worker of the kind to finalize it,
/// and exactly one completed result is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_the_kind_finalizes_what_the_manager_cannot_merge() {
    let mut c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut worker = histogram_worker(&c, "hist").await;
    let mut replies = Replies::new(&c).await;
    // The parts of 0..20 cut in two, as the kind's `process` writes them.
    let parts: Vec<Vec<u8>> = [
        BTreeMap::from([(0i64, 10u64)]),
        BTreeMap::from([(10i64, 10u64)]),
    ]
    .iter()
    .map(|p| rmp_serde::to_vec_named(p).expect("encode"))
    .collect();
    let id = stage_unfinalized(&c, "histogram", &parts, &replies.queue).await;
    c.start_manager(|_| {});
    let r = replies.next(WAIT).await;
    assert_histogram(&r, id, 20);
    assert!(!replies.another_within(Duration::from_millis(1_500)).await);
    let _ = worker.kill().await;
    c.shutdown().await;
}

/// A shard that reaches an engine that does not serve its kind (a manager's view of the
/// engines was stale) is passed, untouched, to its kind's queue, and its request completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_at_the_wrong_engine_is_passed_on() {
    let c = Cluster::builder()
        .workers(1)
        .without_manager()
        .start()
        .await;
    let mut worker = histogram_worker(&c, "hist").await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    let deadline = record_histogram(&c, id, 1, &replies.queue).await;
    let shard = shardline::message::Shard {
        request_id: id,
        index: 0,
        total: 1,
        kind: "histogram".into(),
        attempt: 1,
        deadline,
        payload: rmp_serde::to_vec(&(0..30).collect::<Vec<i64>>()).expect("encode"),
    };
    let ch = c.channel().await;
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let props = lapin::BasicProperties::default()
        .with_message_id(shard.message_id().into())
        .with_type("histogram".into());
    let body = rmp_serde::to_vec_named(&shard).expect("encode");
    let published = shardline::amqp::publish_to_engine(&ch, &c.names, "w0", &body, props)
        .await
        .expect("publish");
    assert!(matches!(published, shardline::amqp::Published::Stored));
    let r = replies.next(WAIT).await;
    assert_histogram(&r, id, 30);
    let _ = worker.kill().await;
    c.shutdown().await;
}

/// A request already recorded whose kind no live worker serves now is not rejected (its
/// shards may be out, its result may be published): it waits, and completes once a worker of
/// the kind comes, cut again as recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_request_waits_for_its_kind() {
    let c = Cluster::builder().workers(0).start().await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    record_histogram(&c, id, 2, &replies.queue).await;
    // The client republishes it (same id) while no worker serves `histogram`.
    let body = request_body("histogram", numbers(40), &[]);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    assert!(
        !replies.another_within(Duration::from_secs(3)).await,
        "the recorded request was answered before its kind was served"
    );
    let mut worker = histogram_worker(&c, "hist").await;
    let r = replies.next(WAIT).await;
    assert_histogram(&r, id, 40);
    assert_eq!(r.shards, 2, "cut again into the recorded count");
    let _ = worker.kill().await;
    c.shutdown().await;
}
