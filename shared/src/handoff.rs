//! Handing an engine's queued shards to their kinds' shared queues, so nothing is stranded in
//! a queue nobody will consume again. A stopping worker does it for itself; the manager's sweeper does
//! it for an engine whose heartbeat expired.
//!
//! The order matters. RabbitMQ confirms a message that reaches a queue as the queue is deleted
//! without storing it, so a queue that still receives shards must never be deleted. The queue
//! first leaves the engines exchange: from then on a manager's shard for this engine comes back
//! to it as unroutable and goes to its kind's shared queue. After a short pause for publishes the
//! broker routed just before, the queued shards move and the empty queue is deleted.

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tracing::{debug, info, warn};

use crate::amqp::{self, Published};
use crate::{Error, Names};

/// Attempts at draining and deleting the queue (a consumer may still be attached).
const ATTEMPTS: usize = 5;
/// Pause between attempts: time for the broker to notice that a dead engine's connection is
/// gone and drop its consumer.
const PAUSE: Duration = Duration::from_millis(700);
/// Pause after the unbind, for publishes routed to the queue before it to arrive in it.
const SETTLE: Duration = Duration::from_millis(100);

/// Who hands an engine's queue off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The engine itself, stopping: nothing else consumes its queue.
    Engine,
    /// A manager's sweeper, for an engine whose heartbeat expired: the engine may come back
    /// under the same id at any moment and consume its queue again.
    Reaper,
}

/// True for the broker's 404: the queue does not exist.
fn is_not_found(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(err)
            if *err.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
    )
}

/// Unbind the engine's queue from the engines exchange, move every ready message of it to its
/// kind's shared queue (by its `type` property; confirmed before each ack; a message that
/// names no valid kind is dead-lettered; a message delivered before keeps that mark, see
/// [`amqp::moved_properties`]), then delete the queue if it is empty and has no consumer.
/// Returns how many shards moved, and whether the queue is gone.
///
/// Call it after the engine has left routing (retired or expired), so managers stop picking
/// it; a shard a manager still sends it after the unbind comes back as unroutable and goes to
/// the shared queue. A queue that still has a consumer (an engine alive after all, or one whose
/// connection the broker has not yet noticed is dead) is left in place: deleting it would drop
/// the deliveries that consumer has not acked.
///
/// # Errors
/// Broker failures.
pub async fn handoff(
    conn: &lapin::Connection,
    names: &Names,
    engine: &str,
    by: By,
) -> Result<(usize, bool), Error> {
    let queue = names.engine_queue(engine);
    let mut declared = HashSet::new();
    withdraw(conn, names, engine).await?;
    tokio::time::sleep(SETTLE).await;
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
                // Already deleted (by its engine's own hand-off, or another's): the expected
                // end of a hand-off, not a failure.
                Err(e) if is_not_found(&e) => {
                    debug!(moved, %queue, "engine queue already gone; hand-off done");
                    return Ok((moved, true));
                }
                Err(e) => return Err(e.into()),
            };
            let d = msg.delivery;
            let Some(kind) = amqp::shard_kind(&d.properties) else {
                warn!(%queue, "a queued message names no valid kind; dead-lettering it");
                let detail = "an engine queue held a message without a valid kind in its type";
                amqp::dead_letter(
                    &ch,
                    names,
                    &d.data,
                    &d.properties,
                    "malformed_shard",
                    detail,
                    None,
                )
                .await?;
                d.ack(BasicAckOptions::default()).await?;
                continue;
            };
            let shared = names.kind_queue(kind);
            if declared.insert(kind.to_owned()) {
                amqp::declare_kind_queue(&ch, names, kind).await?;
            }
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
        match delete_if_idle(&ch, names, &queue, by).await {
            Ok(true) => {
                info!(moved, %queue, "engine queue handed off and deleted");
                return Ok((moved, true));
            }
            Ok(false) => warn!(%queue, "engine queue still consumed or not empty; retrying"),
            Err(e) if is_not_found(&e) => {
                debug!(moved, %queue, "engine queue already gone; hand-off done");
                return Ok((moved, true));
            }
            // The broker closed the channel: try again on a new one.
            Err(error) => warn!(%error, %queue, "deleting the engine queue failed; retrying"),
        }
    }
    warn!(moved, %queue, "engine queue still has a consumer; leaving it");
    Ok((moved, false))
}

/// Delete `queue` if it is empty and has no consumer; `Ok(false)` when it has either.
///
/// A classic queue's delete checks both itself (`if-empty`, `if-unused`). Quorum queues
/// refuse those flags (and the broker closes the connection), so there a passive declare
/// checks first, and nothing makes the check and a delete one step:
/// - the engine itself deletes with no flags: the queue is unbound and drained, and nothing
///   else consumes it, so nothing can arrive but a publish the broker routed before the
///   unbind and still has not stored after [`SETTLE`] and the drain (logged with its count);
/// - a reaper leaves the empty, unbound queue to the broker, which deletes it once unused for
///   [`crate::amqp::queue_type::ENGINE_QUEUE_EXPIRES`]: the engine may have come back under
///   the same id between the check and a delete, and a delete would drop its deliveries.
async fn delete_if_idle(
    ch: &lapin::Channel,
    names: &Names,
    queue: &str,
    by: By,
) -> Result<bool, lapin::Error> {
    if names.queue_type().global_qos() {
        let delete = QueueDeleteOptions {
            if_empty: true,
            if_unused: true,
            ..Default::default()
        };
        return match ch.queue_delete(queue.into(), delete).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Err(e),
            // A consumer is still attached (or a message arrived): the channel is closed.
            Err(error) => {
                debug!(%error, %queue, "the broker refused the delete");
                Ok(false)
            }
        };
    }
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    if q.message_count() > 0 || q.consumer_count() > 0 {
        return Ok(false);
    }
    if by == By::Reaper {
        debug!(%queue, "engine queue unbound and empty; the broker deletes it once unused");
        return Ok(true);
    }
    let dropped = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    if dropped > 0 {
        tracing::error!(dropped, %queue, "shards reached the engine queue as it was deleted; their requests time out");
    }
    Ok(true)
}

/// Take the engine's queue out of the engines exchange, so that no new shard reaches it. A
/// queue (or exchange) that does not exist has nothing to withdraw.
async fn withdraw(conn: &lapin::Connection, names: &Names, engine: &str) -> Result<(), Error> {
    let ch = conn.create_channel().await?;
    let unbound = ch
        .queue_unbind(
            names.engine_queue(engine).into(),
            names.engines_exchange().into(),
            engine.into(),
            FieldTable::default(),
        )
        .await;
    match unbound {
        Ok(()) => {
            let _ = ch.close(200, "unbound".into()).await;
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            debug!(engine, "no engine queue or exchange to unbind");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
