//! Duplicate shard deliveries through the real pipeline never change the result or complete a
//! request twice.

use std::time::Duration;

use lapin::BasicProperties;
use shardline::amqp;
use shardline::message::{Format, RequestBody, Shard};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually, ready, unsharded};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Every shard delivered three times still yields one correct result, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_shards_complete_once() {
    // No workers yet: with no live engine the manager parks shards in the shared queue.
    let mut c = Cluster::builder()
        .workers(0)
        .manager(|m| m.shard_size_scale = 1e-9)
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let payload = rmpv::Value::Array((0..200i64).map(|i| ((i * 37) % 200).into()).collect());
    let body = Format::MsgPack
        .encode(&RequestBody {
            kind: "sort".into(),
            payload: payload.clone(),
            options: Some(rmpv::Value::Map(vec![("max_shards".into(), 10.into())])),
            locality: None,
        })
        .expect("encode");
    let id = Uuid::new_v4();
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;

    let seen = std::sync::Mutex::new(Vec::new());
    eventually("10 shards in the shared queue", WAIT, || async {
        let more = c.drain(&c.names.kind_queue("sort")).await;
        let mut s = seen.lock().expect("lock");
        s.extend(more);
        (s.len() == 10).then_some(())
    })
    .await;
    let shards = seen.into_inner().expect("lock");
    let ch = c.channel().await;
    for copy in 0..3 {
        for d in &shards {
            let shard: Shard = rmp_serde::from_slice(&d.data).expect("shard");
            assert_eq!((shard.request_id, shard.total), (id, 10));
            let props = BasicProperties::default()
                .with_message_id(format!("{}#{copy}", shard.message_id()).into());
            amqp::publish(&ch, "", &c.names.kind_queue("sort"), &d.data, props, true)
                .await
                .expect("republish");
        }
    }
    for i in 0..3 {
        c.add_worker(&format!("w{i}")).await;
    }
    let r = replies.next(WAIT).await;
    assert_eq!(r.request_id, id);
    assert_eq!(completed(&r), unsharded("sort", payload));
    // Let every duplicate run to its ack: stopping a worker finishes its running shards.
    eventually("all 30 deliveries consumed", WAIT, || async {
        (ready(&c, &c.names.kind_queue("sort")).await? == 0).then_some(())
    })
    .await;
    for i in 0..3 {
        c.stop_worker(&format!("w{i}")).await;
    }
    assert!(
        !replies.another_within(Duration::from_millis(500)).await,
        "a second result was published"
    );
    let meta = c.store.meta(id).await.expect("redis").expect("meta");
    assert_eq!(
        (meta.done, meta.total, meta.state.as_str()),
        (10, 10, "published")
    );
    c.shutdown().await;
}
