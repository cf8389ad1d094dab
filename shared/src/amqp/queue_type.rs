//! The type of a namespace's queues: classic (one broker node holds each) or quorum (Raft
//! replicated over a RabbitMQ cluster), and what each type changes for Shardline.
//!
//! Every queue of a namespace (requests, dead letters, kinds' shared queues, engine queues)
//! has the same type, and every process of the namespace must say the same: RabbitMQ refuses
//! to declare a queue that exists with another type (see [`explain_declare_error`]).
//!
//! What quorum queues change:
//! - **No global QoS.** RabbitMQ closes the connection of a channel with a global prefetch
//!   that consumes a quorum queue (`540 NOT_IMPLEMENTED`), so a worker's prefetch is per
//!   consumer there ([`QueueType::global_qos`]).
//! - **A delivery limit.** A quorum queue counts the deliveries of a message that came back
//!   (`x-delivery-count`) and dead-letters it past `x-delivery-limit` (RabbitMQ 4 sets 20
//!   when none is given; 3.x has none). Shardline declares [`DELIVERY_LIMIT`] on each of
//!   them, so every version behaves alike, and a worker fails a shard as poison on the last
//!   delivery the broker allows ([`last_delivery`]) instead of putting it back, where the
//!   broker would dead-letter it with its request still waiting for it.

use std::fmt;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::AMQPValue;

/// Deliveries of one message that a quorum queue allows after the first
/// (`x-delivery-limit`): the message is delivered at most `DELIVERY_LIMIT + 1` times.
///
/// A backstop, not the poison rule: a shard that keeps failing or crashing its worker is
/// failed by its kind's attempts (counted in Redis, 3 by default) long before. What spends
/// deliveries without an attempt is a put-back after a transient failure (Redis or the broker
/// unreachable, about 1 s apart) or a worker stopping; 100 outlasts an outage of a minute and
/// a half, and still ends a message that crashes the manager in a loop.
pub const DELIVERY_LIMIT: u32 = 100;

/// How long a quorum engine queue may go unused (no consumer, no declaration) before the
/// broker deletes it (`x-expires`). A reaper leaves a dead engine's queue, unbound and
/// drained, for the broker to delete ([`crate::handoff`]); a live engine consumes its queue,
/// which never expires then.
pub const ENGINE_QUEUE_EXPIRES: Duration = Duration::from_secs(3_600);

/// The header in which a quorum queue says how often it delivered a message before.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// The type of a namespace's queues (`--queue-type`, `SHARDLINE_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Classic queues: each lives on one broker node (the default; a single node has no
    /// other choice worth making).
    #[default]
    Classic,
    /// Quorum queues, replicated over a RabbitMQ cluster: a queue survives the loss of a
    /// minority of the nodes.
    Quorum,
}

impl QueueType {
    /// The name RabbitMQ gives the type (`x-queue-type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }

    /// Whether one prefetch window may span several consumers of a channel (AMQP global
    /// QoS); quorum queues refuse it.
    pub fn global_qos(self) -> bool {
        self == QueueType::Classic
    }

    /// The declaration arguments the type adds to a queue's own. None for a classic queue,
    /// so that queues declared before there was a choice are declared the same.
    pub fn arguments(self) -> Vec<(&'static str, AMQPValue)> {
        match self {
            QueueType::Classic => Vec::new(),
            QueueType::Quorum => vec![
                ("x-queue-type", AMQPValue::LongString(self.as_str().into())),
                (
                    "x-delivery-limit",
                    AMQPValue::LongLongInt(i64::from(DELIVERY_LIMIT)),
                ),
            ],
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many times a quorum queue delivered this message before (its `x-delivery-count`
/// header); `None` on a classic queue, which does not count.
pub fn delivery_count(props: &BasicProperties) -> Option<u64> {
    match props
        .headers()
        .as_ref()?
        .inner()
        .get(DELIVERY_COUNT_HEADER)?
    {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Whether this is the last delivery the queue allows: put back once more, the broker would
/// dead-letter it with no result recorded, so the worker fails it as poison instead.
pub fn last_delivery(props: &BasicProperties) -> bool {
    delivery_count(props).is_some_and(|n| n >= u64::from(DELIVERY_LIMIT))
}

/// A declaration refused because the queue exists with other arguments (the broker's 406
/// `PRECONDITION_FAILED`: another type, most likely), said plainly; other errors as they are.
pub fn explain_declare_error(queue: &str, wanted: QueueType, e: lapin::Error) -> crate::Error {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let refused = matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(err)
            if *err.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    );
    if refused {
        crate::Error::Config(format!(
            "queue {queue} exists with other arguments than a {wanted} queue's ({e}); every \
             process of a namespace must use the same --queue-type: delete the namespace's \
             queues or use a new namespace to change it"
        ))
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    fn with_count(value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("x-delivery-count".into(), value);
        BasicProperties::default().with_headers(headers)
    }

    /// The setting parses strictly from the names RabbitMQ uses, and prints them back.
    #[test]
    fn parses_strictly() {
        use clap::ValueEnum;
        for t in [QueueType::Classic, QueueType::Quorum] {
            assert_eq!(QueueType::from_str(t.as_str(), false), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert!(QueueType::from_str("Quorum", false).is_err());
        assert!(QueueType::from_str("stream", false).is_err());
    }

    /// Only quorum queues carry a delivery limit, and only classic ones allow global QoS.
    #[test]
    fn quorum_queues_are_limited_and_take_no_global_qos() {
        let names = |t: QueueType| {
            t.arguments()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert!(names(QueueType::Classic).is_empty());
        assert_eq!(
            names(QueueType::Quorum),
            ["x-queue-type", "x-delivery-limit"]
        );
        assert!(QueueType::Classic.global_qos());
        assert!(!QueueType::Quorum.global_qos());
    }

    /// The last allowed delivery is the one whose count reached the limit, whatever integer
    /// type the broker used; no count (a classic queue) is never the last.
    #[test]
    fn the_last_delivery_is_the_one_at_the_limit() {
        let limit = i64::from(DELIVERY_LIMIT);
        assert!(!last_delivery(&BasicProperties::default()));
        assert!(!last_delivery(&with_count(AMQPValue::LongLongInt(
            limit - 1
        ))));
        assert!(last_delivery(&with_count(AMQPValue::LongLongInt(limit))));
        assert!(last_delivery(&with_count(AMQPValue::LongInt(
            i32::try_from(limit).expect("small")
        ))));
        assert_eq!(
            delivery_count(&with_count(AMQPValue::LongLongInt(-1))),
            None
        );
    }
}
