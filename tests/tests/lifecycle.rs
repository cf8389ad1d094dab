//! Ending requests early: deadlines and cancel. One terminal result each, on time.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::QueueDeclareOptions;
use shardline::amqp;
use shardline::message::Status;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, eventually, request_body, synthetic};
use uuid::Uuid;

/// A request whose shards are never processed (no worker at all) ends `timed_out` at its
/// deadline instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_ends_a_request_whose_shards_are_lost() {
    let c = Cluster::builder().workers(0).start().await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    let body = request_body(
        "sort",
        rmpv::Value::Array((0..10i64).map(Into::into).collect()),
        &[("deadline_ms", 1_000)],
    );
    let sent = Instant::now();
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    let r = replies.next(Duration::from_secs(10)).await;
    let took = sent.elapsed();
    assert_eq!((r.request_id, r.status), (id, Status::TimedOut));
    let err = r.error.expect("error");
    assert_eq!(err.code, "timed_out");
    assert!(err.message.contains("0 of"), "{}", err.message);
    assert!(
        took >= Duration::from_millis(1_000),
        "ended before its deadline: {took:?}"
    );
    assert!(
        !replies.another_within(Duration::from_millis(1_500)).await,
        "one terminal result"
    );
    c.shutdown().await;
}

/// Cancelling a 10,000-shard request mid-run publishes exactly one `cancelled` result quickly,
/// and no shard is counted after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_ten_thousand_shard_request() {
    let c = Cluster::builder()
        .manager(|m| m.shard_size_scale = 1e-9)
        .worker(|w| w.concurrency = Some(4))
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    let body = request_body(
        "synthetic",
        synthetic(10_000, 2_000),
        &[("max_shards", 10_000)],
    );
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    eventually("the request under way", Duration::from_secs(60), || async {
        let m = c.store.meta(id).await.ok()??;
        (m.total == 10_000 && m.done >= 100).then_some(())
    })
    .await;
    let cancelled_at = Instant::now();
    assert_ne!(
        c.client().cancel(id).await.expect("cancel"),
        shardline::store::Ended::NotRunning,
        "it was running"
    );
    let r = replies.next(Duration::from_secs(10)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Cancelled));
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        cancelled_at.elapsed()
    );
    let done_at_cancel = c.store.meta(id).await.expect("redis").expect("meta").done;
    assert!(done_at_cancel < 10_000);

    // The remaining shards are skipped, not run: every queue drains fast.
    let ch = c.channel().await;
    eventually(
        "the remaining shards skipped",
        Duration::from_secs(60),
        || async {
            let mut ready = 0;
            for q in [
                c.names.kind_queue("synthetic"),
                c.names.engine_queue("w0"),
                c.names.engine_queue("w1"),
                c.names.engine_queue("w2"),
            ] {
                ready += ch
                    .queue_declare(
                        q.into(),
                        QueueDeclareOptions::default().passive(),
                        Default::default(),
                    )
                    .await
                    .ok()?
                    .message_count();
            }
            (ready == 0).then_some(())
        },
    )
    .await;
    let meta = c.store.meta(id).await.expect("redis").expect("meta");
    assert_eq!(
        meta.done, done_at_cancel,
        "no shard was counted after the cancel"
    );
    assert_eq!(meta.status, Some(Status::Cancelled));
    assert!(
        !replies.another_within(Duration::from_millis(500)).await,
        "one terminal result"
    );
    c.shutdown().await;
}

/// A message of AMQP type `cancel` on the request exchange cancels the request named by its
/// `message_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_by_amqp_message() {
    let c = Cluster::builder().workers(0).start().await; // no workers: it stays running
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    publish_request(
        &c,
        &request_body("sort", vec![rmpv::Value::from(2), 1.into()].into(), &[]),
        None,
        &id.to_string(),
        Some(&replies.queue),
    )
    .await;
    eventually("the request recorded", Duration::from_secs(10), || async {
        c.store.meta(id).await.ok()?
    })
    .await;
    let ch = c.channel().await;
    let props = BasicProperties::default()
        .with_type("cancel".into())
        .with_message_id(id.to_string().into());
    amqp::publish(&ch, &c.names.requests_exchange(), "", b"", props, true)
        .await
        .expect("publish cancel");
    let r = replies.next(Duration::from_secs(10)).await;
    assert_eq!((r.request_id, r.status), (id, Status::Cancelled));
    c.shutdown().await;
}

/// `shardline cancel` cancels a running request (exit 0) and refuses one that already ended
/// (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_the_cli() {
    let c = Cluster::builder().workers(0).start().await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    publish_request(
        &c,
        &request_body("sort", vec![rmpv::Value::from(2), 1.into()].into(), &[]),
        None,
        &id.to_string(),
        Some(&replies.queue),
    )
    .await;
    eventually("the request recorded", Duration::from_secs(10), || async {
        c.store.meta(id).await.ok()?
    })
    .await;
    let cli = || shardline_tests::process::cli(env!("CARGO_BIN_EXE_shardline-under-test"), &c);
    let out = cli()
        .args(["cancel", &id.to_string()])
        .output()
        .await
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        replies.next(Duration::from_secs(10)).await.status,
        Status::Cancelled
    );
    let out = cli()
        .args(["cancel", &id.to_string()])
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    c.shutdown().await;
}

/// A cancel that overtakes its request (sent before the request is recorded) is remembered:
/// the request, when it arrives, publishes no shard and ends with exactly one `cancelled`
/// result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_the_request_arrives() {
    let c = Cluster::builder().workers(0).start().await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    let ended = c.client().cancel(id).await.expect("redis");
    assert_eq!(ended, shardline::store::Ended::Remembered);
    publish_request(
        &c,
        &request_body("synthetic", shardline_tests::synthetic(40, 1_000), &[]),
        None,
        &id.to_string(),
        Some(&replies.queue),
    )
    .await;
    let results = replies
        .exactly_one_each(&[id], Duration::from_secs(15))
        .await;
    assert_eq!(
        results[&id].status,
        Status::Cancelled,
        "{:?}",
        results[&id].error
    );
    let meta = c.store.meta(id).await.expect("redis").expect("meta");
    assert_eq!(meta.done, 0, "no shard was processed");
    // No worker runs, so a shard the manager published would still wait in the shared queue.
    assert_eq!(
        shardline_tests::ready(&c, &c.names.kind_queue("synthetic")).await,
        Some(0),
        "a shard of the cancelled request was published"
    );
    c.shutdown().await;
}
