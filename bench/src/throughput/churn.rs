//! What an engine queue costs to come and go: a worker declares and binds its queue at start
//! ([`shardline::amqp::declare_engine_queue`]) and deletes it when it stops. Measured per
//! broker and queue type, so that the placement of engine queues on a cluster (quorum, like
//! every other queue of a quorum namespace) rests on a number.

use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use shardline::Names;
use shardline::amqp::{self, QueueType};
use uuid::Uuid;

use super::table::percentile;

/// Declare-and-bind and delete times of one broker and queue type.
#[derive(Debug, Clone)]
pub struct Churn {
    /// Which broker (`one node`, `3-node cluster`).
    pub broker: String,
    /// The queue type.
    pub queue_type: QueueType,
    /// Each declare + bind.
    pub declare: Vec<Duration>,
    /// Each delete.
    pub delete: Vec<Duration>,
}

/// Declare, bind and delete `n` engine queues one after another on a namespace of its own.
///
/// # Errors
/// Broker failures.
pub async fn measure(
    broker: &str,
    amqp_url: &str,
    queue_type: QueueType,
    n: usize,
) -> anyhow::Result<Churn> {
    let ns = format!("churn{}", &Uuid::new_v4().simple().to_string()[..10]);
    let names = Names::try_new(ns)?.with_queue_type(queue_type);
    let conn = amqp::connect(amqp_url, "shardline-bench queue churn").await?;
    let ch = conn.create_channel().await?;
    amqp::declare_topology(&ch, &names).await?;
    let mut churn = Churn {
        broker: broker.to_owned(),
        queue_type,
        declare: Vec::with_capacity(n),
        delete: Vec::with_capacity(n),
    };
    let measured = async {
        for i in 0..n {
            let engine = format!("e{i}");
            let began = Instant::now();
            amqp::declare_engine_queue(&ch, &names, &engine).await?;
            churn.declare.push(began.elapsed());
            let began = Instant::now();
            ch.queue_delete(
                names.engine_queue(&engine).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await?;
            churn.delete.push(began.elapsed());
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // Whatever happened, on a channel of its own (a failed step closes the first).
    let cleanup = conn.create_channel().await?;
    let mut queues = vec![names.requests_queue(), names.dead_queue()];
    queues.extend((0..n).map(|i| names.engine_queue(&format!("e{i}"))));
    for queue in queues {
        let _ = cleanup
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [
        names.requests_exchange(),
        names.results_exchange(),
        names.dead_exchange(),
        names.engines_exchange(),
    ] {
        let _ = cleanup
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
    let _ = conn.close(200, "churn measured".into()).await;
    measured?;
    Ok(churn)
}

/// A Markdown table of the measurements: median and p90 of each step, in ms.
pub fn markdown(rows: &[Churn]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::from(
        "| broker | queue type | runs | declare + bind p50 ms | p90 ms | delete p50 ms | p90 ms |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            r.broker,
            r.queue_type,
            r.declare.len(),
            ms(percentile(&r.declare, 0.5)),
            ms(percentile(&r.declare, 0.9)),
            ms(percentile(&r.delete, 0.5)),
            ms(percentile(&r.delete, 0.9)),
        ));
    }
    out
}
