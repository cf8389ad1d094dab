//! A shard's first delivery goes straight to work without asking Redis; its try is counted
//! only if the shard comes back. These tests check that such a try is still counted: after a
//! crash (the broker's `redelivered` flag) and after a hand-off moved the shard (the mark the
//! move carries).

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shardline::Registry;
use shardline::amqp;
use shardline::kind::KindError;
use shardline::message::Status;
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, eventually, request_body, summing_kind};
use uuid::Uuid;

/// Sums numbers; a shard may be tried once.
struct Once;

summing_kind!(
    Once,
    "once",
    |shard: Vec<i64>| -> Result<i64, KindError> { Ok(shard.iter().sum()) },
    1
);

/// Take one message from `queue` without acking it and close the channel, as a worker that
/// died holding it would: the broker puts it back marked `redelivered`.
async fn deliver_and_die(c: &Cluster, queue: &str) {
    let ch = c.channel().await;
    eventually(
        &format!("a message in {queue}"),
        Duration::from_secs(10),
        || async {
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .expect("basic.get")
                .map(|_| ())
        },
    )
    .await;
    ch.close(200, "dying".into()).await.expect("close");
}

/// A shard whose first delivery died with its worker is poison at a limit of one try: the
/// first try, never counted up front, is counted when the shard comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_try_that_died_counts_as_an_attempt() {
    let mut c = Cluster::builder()
        .workers(0)
        .registry(Registry::builtin().with(Once))
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let payload = rmpv::Value::Array(vec![1.into(), 2.into(), 3.into()]);
    let body = request_body("once", payload, &[("max_shards", 1)]);
    let id = Uuid::new_v4();
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    deliver_and_die(&c, &c.names.kind_queue("once")).await;
    c.add_worker("w1").await;
    let r = replies.next(Duration::from_secs(20)).await;
    assert_eq!(r.request_id, id);
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let code = r.error.map(|e| e.code);
    assert_eq!(code.as_deref(), Some("poison_shard"));
    c.shutdown().await;
}

/// A message moved by a hand-off keeps the broker's mark: one delivered before arrives in the
/// shared queue as tried before, one never delivered does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_keeps_the_redelivered_mark() {
    let mut c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let ch = c.channel().await;
    amqp::declare_topology(&ch, &c.names)
        .await
        .expect("topology");
    let gone = c.names.engine_queue("gone");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(gone.as_str().into(), durable, FieldTable::default())
        .await
        .expect("declare");
    for body in [b"tried".as_slice(), b"fresh".as_slice()] {
        ch.basic_publish(
            "".into(),
            gone.as_str().into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_type("wordcount".into()),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
        if body == b"tried" {
            deliver_and_die(&c, &gone).await;
        }
    }
    let conn = amqp::connect(&c.connect.amqp_url, "hand-off test")
        .await
        .expect("connect");
    let (moved, deleted) =
        shardline::handoff::handoff(&conn, &c.names, "gone", shardline::handoff::By::Engine)
            .await
            .expect("hand-off");
    assert_eq!((moved, deleted), (2, true));
    let mut marks: Vec<(Vec<u8>, bool)> = c
        .drain(&c.names.kind_queue("wordcount"))
        .await
        .iter()
        .map(|d| (d.data.clone(), amqp::tried_before(d)))
        .collect();
    marks.sort();
    assert_eq!(
        marks,
        vec![(b"fresh".to_vec(), false), (b"tried".to_vec(), true)]
    );
    let _ = conn.close(200, "done".into()).await;
    c.cleanup(&[gone]).await;
}
