//! Handing a stopping engine's queued shards to the shared queue, so nothing is stranded in a
//! queue nobody will consume again.

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use shardline::amqp::{self, Published};
use shardline::{Error, Names};
use tracing::{info, warn};

/// Attempts at draining and deleting the queue (a shard may land between the two).
const ATTEMPTS: usize = 5;

/// Move every ready message of the engine's queue to the shared queue (confirmed before each
/// ack), then delete the engine queue if it is empty. Returns how many shards moved.
///
/// Call it after the engine has deregistered, so managers stop routing to it; a manager's
/// publish that arrives after the delete comes back as unroutable and goes to the shared queue.
///
/// # Errors
/// Broker failures.
pub async fn handoff(
    conn: &lapin::Connection,
    names: &Names,
    engine: &str,
) -> Result<usize, Error> {
    let queue = names.engine_queue(engine);
    let shared = names.shared_queue();
    let mut moved = 0;
    for _ in 0..ATTEMPTS {
        let ch = amqp::confirm_channel(conn).await?;
        while let Some(msg) = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        {
            let d = msg.delivery;
            match amqp::publish(&ch, "", &shared, &d.data, d.properties.clone(), true).await? {
                Published::Stored => {
                    d.ack(BasicAckOptions::default()).await?;
                }
                Published::Returned => return Err(Error::Nacked(shared)),
            }
            moved += 1;
        }
        let delete = QueueDeleteOptions {
            if_empty: true,
            ..Default::default()
        };
        match ch.queue_delete(queue.as_str().into(), delete).await {
            Ok(_) => {
                info!(moved, %queue, "engine queue handed off and deleted");
                return Ok(moved);
            }
            // A shard arrived after the drain: the channel is closed; drain again on a new one.
            Err(error) => warn!(%error, "engine queue not empty yet; draining again"),
        }
    }
    warn!(moved, %queue, "engine queue kept receiving shards; leaving it in place");
    Ok(moved)
}
