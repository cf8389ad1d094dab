//! Publishing and receiving by hand, the way a client in another language would.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};
use shardline::amqp;
use shardline::message::{FinalResult, Format};

use crate::{Cluster, patience};

/// An exclusive reply queue with its consumer.
pub struct Replies {
    /// The queue's name (use as `reply_to`).
    pub queue: String,
    consumer: Consumer,
    _channel: Channel,
}

impl Replies {
    /// Declare a fresh exclusive queue and consume it.
    pub async fn new(cluster: &Cluster) -> Self {
        let ch = cluster.conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive(),
                FieldTable::default(),
            )
            .await
            .expect("declare reply queue");
        let queue = q.name().to_string();
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Replies {
            queue,
            consumer,
            _channel: ch,
        }
    }

    /// The next reply's raw delivery, within `within` (scaled by patience).
    pub async fn next_raw(&mut self, within: Duration) -> lapin::message::Delivery {
        let d = tokio::time::timeout(patience(within), self.consumer.next())
            .await
            .expect("a reply in time")
            .expect("reply stream open")
            .expect("reply delivery");
        d.ack(BasicAckOptions::default()).await.expect("ack");
        d
    }

    /// The next reply decoded by its content type.
    pub async fn next(&mut self, within: Duration) -> FinalResult {
        let d = self.next_raw(within).await;
        let fmt =
            Format::from_content_type(d.properties.content_type().as_ref().map(|s| s.as_str()));
        fmt.decode(&d.data).expect("a decodable result")
    }

    /// Exactly one result for each of `ids` (each within `within`), and no extra result right
    /// after.
    pub async fn exactly_one_each(
        &mut self,
        ids: &[uuid::Uuid],
        within: Duration,
    ) -> std::collections::HashMap<uuid::Uuid, FinalResult> {
        let mut got = std::collections::HashMap::new();
        while got.len() < ids.len() {
            let r = self.next(within).await;
            assert!(
                ids.contains(&r.request_id),
                "unexpected result {}",
                r.request_id
            );
            assert!(
                got.insert(r.request_id, r).is_none(),
                "a request got two results"
            );
        }
        assert!(
            !self.another_within(Duration::from_millis(500)).await,
            "an extra result arrived"
        );
        got
    }

    /// Exactly one result for each of `ids` (each within 120 s), every one of them completed
    /// with `want`, and no extra result right after.
    pub async fn each_completed_once(&mut self, ids: &[uuid::Uuid], want: &rmpv::Value) {
        let results = self.exactly_one_each(ids, Duration::from_secs(120)).await;
        for r in results.values() {
            assert_eq!(&crate::completed(r), want, "request {}", r.request_id);
        }
    }

    /// Whether another reply arrives within `within`.
    pub async fn another_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.consumer.next())
            .await
            .is_ok()
    }
}

/// Publish raw bytes to the request exchange, as any AMQP client could.
pub async fn publish_request(
    cluster: &Cluster,
    body: &[u8],
    content_type: Option<&str>,
    message_id: &str,
    reply_to: Option<&str>,
) {
    let ch = cluster.channel().await;
    let mut props = BasicProperties::default().with_message_id(message_id.into());
    if let Some(ct) = content_type {
        props = props.with_content_type(ct.into());
    }
    if let Some(r) = reply_to {
        props = props
            .with_reply_to(r.into())
            .with_correlation_id(format!("corr-{message_id}").into());
    }
    amqp::publish(
        &ch,
        &cluster.names.requests_exchange(),
        "",
        body,
        props,
        true,
    )
    .await
    .expect("request published");
}

/// Requests that are running: `n` synthetic requests of 200 units of 5 ms published with a
/// reply queue, returned once 10 shards are done, with the answer each must get.
pub async fn running_requests(
    c: &crate::Cluster,
    n: usize,
) -> (Replies, Vec<uuid::Uuid>, rmpv::Value) {
    let replies = Replies::new(c).await;
    let payload = crate::synthetic(200, 5_000);
    let body = crate::request_body("synthetic", payload.clone(), &[]);
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
    for id in &ids {
        publish_request(c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    }
    crate::wait_progress(c, &ids, 10).await;
    (replies, ids, crate::unsharded("synthetic", payload))
}
