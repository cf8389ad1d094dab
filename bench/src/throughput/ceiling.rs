//! The ceilings Shardline is measured against: what the broker and Redis do on their own on
//! the same machine in the same minute.
//!
//! - **Broker**: one durable queue; a publisher with confirms keeps [`WINDOW`] persistent
//!   messages unconfirmed, a consumer with the same prefetch acks each message. The message is
//!   the size of a shard. This is one broker round trip per message, the least a job system on
//!   AMQP pays.
//! - **Redis**: pipelined `EVALSHA` of a script that returns at once, [`PIPELINE`] at a time:
//!   the least one scripted round trip costs Redis.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use shardline::amqp;

use super::cpu::Meter;

/// Unconfirmed publishes and unacked deliveries in flight in the broker loop.
pub const WINDOW: usize = 64;
/// Script calls per Redis pipeline.
pub const PIPELINE: usize = 100;

/// What a ceiling loop measured.
#[derive(Debug, Clone)]
pub struct Ceiling {
    /// Messages (or script calls) per second.
    pub per_sec: f64,
    /// CPU each metered process used per message, µs, by name.
    pub cpu_us: Vec<(String, f64)>,
}

/// Publish `count` messages of `size` bytes with confirms to a fresh durable queue while a
/// consumer acks them; messages per second from the first publish to the last ack.
///
/// # Errors
/// Broker failures.
pub async fn broker(
    amqp_url: &str,
    queue: &str,
    size: usize,
    count: usize,
    meter: &Meter,
) -> anyhow::Result<Ceiling> {
    let publisher = amqp::connect(amqp_url, "shardline-bench ceiling publisher").await?;
    let consumer = amqp::connect(amqp_url, "shardline-bench ceiling consumer").await?;
    let pch = amqp::confirm_channel(&publisher).await?;
    let cch = consumer.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    cch.queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    cch.basic_qos(WINDOW as u16, BasicQosOptions::default())
        .await?;
    let mut deliveries = cch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let body = vec![b'x'; size];
    let reading = meter.start()?;
    let began = Instant::now();
    let consume = async {
        for _ in 0..count {
            let delivery = deliveries
                .next()
                .await
                .context("the ceiling consumer closed")??;
            delivery.ack(BasicAckOptions::default()).await?;
        }
        anyhow::Ok(())
    };
    let publish = async {
        let mut pending = FuturesUnordered::new();
        for _ in 0..count {
            if pending.len() >= WINDOW {
                confirmed(pending.next().await)?;
            }
            let confirm = pch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            pending.push(confirm);
        }
        while let Some(c) = pending.next().await {
            confirmed(Some(c))?;
        }
        anyhow::Ok(())
    };
    tokio::try_join!(consume, publish)?;
    let elapsed = began.elapsed();
    let used = reading.stop()?;
    cch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = publisher.close(200, "ceiling done".into()).await;
    let _ = consumer.close(200, "ceiling done".into()).await;
    Ok(ceiling(count, elapsed, &used))
}

fn confirmed(c: Option<Result<Confirmation, lapin::Error>>) -> anyhow::Result<()> {
    match c {
        Some(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) | None => Ok(()),
        Some(Ok(Confirmation::Nack(_))) => anyhow::bail!("the broker nacked a ceiling message"),
        Some(Err(e)) => Err(e.into()),
    }
}

/// Run `count` calls of a trivial script, [`PIPELINE`] per round trip.
///
/// # Errors
/// Redis failures.
pub async fn redis(url: &str, count: usize, meter: &Meter) -> anyhow::Result<Ceiling> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let script = redis::Script::new("return 1");
    let _: i64 = script.invoke_async(&mut c).await?;
    let hash = script.get_hash().to_owned();
    let reading = meter.start()?;
    let began = Instant::now();
    let mut left = count;
    while left > 0 {
        let n = left.min(PIPELINE);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.cmd("EVALSHA").arg(&hash).arg(0);
        }
        let _: Vec<i64> = pipe.query_async(&mut c).await?;
        left -= n;
    }
    let elapsed = began.elapsed();
    Ok(ceiling(count, elapsed, &reading.stop()?))
}

fn ceiling(count: usize, elapsed: Duration, used: &[(String, Duration)]) -> Ceiling {
    Ceiling {
        per_sec: count as f64 / elapsed.as_secs_f64().max(1e-9),
        cpu_us: used
            .iter()
            .map(|(name, d)| (name.clone(), d.as_secs_f64() * 1e6 / count as f64))
            .collect(),
    }
}
