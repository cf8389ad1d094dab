//! The soak tool's one reply queue: every request names it as `reply_to`, and every delivery on
//! it goes into the ledger.
//!
//! The queue is durable and named (`<namespace>.soak.replies`), not exclusive: results published
//! while the consumer's connection recovers wait in it instead of being dropped, so a lost
//! result is the system's, not the tool's. Deliveries are acked after they are recorded.

use std::hash::{Hash, Hasher};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shardline::Names;
use shardline::message::{FinalResult, Format};
use tokio::task::JoinHandle;

use super::ledger::Ledger;

/// The reply queue of a namespace.
pub(crate) fn queue_name(names: &Names) -> String {
    format!("{}.soak.replies", names.namespace())
}

/// Declare the reply queue and consume it into `ledger` until the task is aborted.
///
/// # Errors
/// The broker refuses the queue or the consumer.
pub(crate) async fn start(
    conn: &lapin::Connection,
    names: &Names,
    ledger: std::sync::Arc<Ledger>,
) -> anyhow::Result<JoinHandle<()>> {
    let ch = conn.create_channel().await?;
    let queue = queue_name(names);
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    ch.basic_qos(200, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "shardline-soak".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        let _channel = ch;
        while let Some(delivery) = consumer.next().await {
            let d = match delivery {
                Ok(d) => d,
                Err(error) => {
                    tracing::warn!(%error, "reply consumer error");
                    continue;
                }
            };
            let format =
                Format::from_content_type(d.properties.content_type().as_ref().map(|s| s.as_str()));
            let mut h = std::hash::DefaultHasher::new();
            d.data.hash(&mut h);
            match format.decode::<FinalResult>(&d.data) {
                Ok(r) => ledger.result(
                    &r,
                    d.redelivered,
                    h.finish(),
                    shardline::amqp::attempt(&d.properties),
                ),
                Err(e) => ledger.undecodable(
                    d.properties.message_id().as_ref().map(|m| m.to_string()),
                    e.to_string(),
                ),
            }
            if let Err(error) = d.ack(BasicAckOptions::default()).await {
                tracing::warn!(%error, "acking a result failed");
            }
        }
        tracing::warn!("the reply consumer stopped");
    }))
}
