//! Where results go: `reply_to` with the request's encoding, or the result exchange.

use std::time::Duration;

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shardline::message::{FinalResult, Format, Status};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, unsharded};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// A JSON request from a stock AMQP client gets a JSON result with the AMQP RPC properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_request_gets_json_reply() {
    let c = Cluster::builder().start().await;
    let mut replies = Replies::new(&c).await;
    let body = br#"{"kind": "wordcount", "payload": "b a b c b a", "options": {"max_shards": 3}}"#;
    publish_request(
        &c,
        body,
        Some("application/json"),
        "order-17",
        Some(&replies.queue),
    )
    .await;
    let d = replies.next_raw(WAIT).await;
    assert_eq!(
        d.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-order-17")
    );
    let json: serde_json::Value = serde_json::from_slice(&d.data).expect("JSON body");
    assert_eq!(json["status"], "completed");
    assert_eq!(json["output"], serde_json::json!({"a": 2, "b": 3, "c": 1}));
    let id = d
        .properties
        .message_id()
        .as_ref()
        .expect("message_id")
        .to_string();
    assert_eq!(json["request_id"], id.as_str());
    c.shutdown().await;
}

/// Without `reply_to`, the result goes to the result exchange with the kind as routing key and
/// `message_id` = request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_exchange_without_reply_to() {
    let c = Cluster::builder().start().await;
    let ch = c.channel().await;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    ch.queue_bind(
        q.name().clone(),
        c.names.results_exchange().into(),
        "sort".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let id = Uuid::new_v4();
    let payload = rmpv::Value::Array(vec![3.into(), 1.into(), 2.into()]);
    let body = Format::MsgPack
        .encode(&shardline::message::RequestBody {
            kind: "sort".into(),
            payload: payload.clone(),
            options: None,
            locality: None,
        })
        .expect("encode");
    publish_request(&c, &body, None, &id.to_string(), None).await;
    let d = shardline_tests::eventually("a result on the result exchange", WAIT, || async {
        c.drain(q.name().as_str()).await.into_iter().next()
    })
    .await;
    assert_eq!(d.routing_key.as_str(), "sort");
    assert_eq!(
        d.properties.message_id().as_ref().map(|s| s.to_string()),
        Some(id.to_string())
    );
    let r: FinalResult = rmp_serde::from_slice(&d.data).expect("msgpack result");
    assert_eq!(r.status, Status::Completed);
    assert_eq!(completed(&r), unsharded("sort", payload));
    c.shutdown().await;
}
