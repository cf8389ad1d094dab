//! Handing an engine's queued shards to the shared queue, so nothing is stranded in a queue
//! nobody will consume again. A stopping worker does it for itself; the manager's sweeper does
//! it for an engine whose heartbeat expired.

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use tracing::{info, warn};

use crate::amqp::{self, Published};
use crate::{Error, Names};

/// Attempts at draining and deleting the queue (a shard may land between the two).
const ATTEMPTS: usize = 5;
/// Pause between attempts: longer than a manager's engine refresh, so that managers that
/// still routed to the engine have stopped.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(700);

/// True for the broker's 404: the queue does not exist.
fn is_not_found(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(err)
            if *err.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
    )
}

/// Move every ready message of the engine's queue to the shared queue (confirmed before each
/// ack; a message delivered before keeps that mark, see [`amqp::moved_properties`]), then delete the engine queue if it is empty and has no consumer. Returns how many
/// shards moved, and whether the queue is gone.
///
/// Call it after the engine has deregistered, so managers stop routing to it; a manager's
/// publish that arrives after the delete comes back as unroutable and goes to the shared queue.
/// A queue that still has a consumer (an engine alive after all, or one whose connection the
/// broker has not yet noticed is dead) is left in place: deleting it would drop the deliveries
/// that consumer has not acked.
///
/// # Errors
/// Broker failures.
pub async fn handoff(
    conn: &lapin::Connection,
    names: &Names,
    engine: &str,
) -> Result<(usize, bool), Error> {
    let queue = names.engine_queue(engine);
    let shared = names.shared_queue();
    let mut moved = 0;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        let ch = amqp::confirm_channel(conn).await?;
        loop {
            let msg = match ch
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(e) if is_not_found(&e) => return Ok((moved, true)),
                Err(e) => return Err(e.into()),
            };
            let d = msg.delivery;
            match amqp::publish(&ch, "", &shared, &d.data, amqp::moved_properties(&d), true).await?
            {
                Published::Stored => {
                    d.ack(BasicAckOptions::default()).await?;
                }
                // One publish at a time on this channel: the return is this message's.
                Published::Returned(_) => return Err(Error::Nacked(shared)),
            }
            moved += 1;
        }
        let delete = QueueDeleteOptions {
            if_empty: true,
            if_unused: true,
            ..Default::default()
        };
        match ch.queue_delete(queue.as_str().into(), delete).await {
            Ok(_) => {
                info!(moved, %queue, "engine queue handed off and deleted");
                return Ok((moved, true));
            }
            // A shard arrived after the drain, or a consumer is still attached: the channel is
            // closed; try again on a new one.
            Err(error) => {
                warn!(%error, %queue, "engine queue not empty or still consumed; retrying")
            }
        }
    }
    warn!(moved, %queue, "engine queue kept receiving shards or has a consumer; leaving it");
    Ok((moved, false))
}
