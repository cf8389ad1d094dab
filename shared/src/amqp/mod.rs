//! AMQP plumbing: connecting to one node or a cluster ([`nodes`]), declaring the topology in
//! classic or quorum queues ([`queue_type`]), confirmed publishing.

pub mod nodes;
pub mod queue_type;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use uuid::Uuid;

use crate::message::{FinalResult, Format};
use crate::{Error, Names};
pub use nodes::Brokers;
pub use queue_type::QueueType;

/// Header carrying the reason a message was dead-lettered.
pub const REASON_HEADER: &str = "x-shardline-reason";
/// Header carrying the detail of why a message was dead-lettered.
pub const DETAIL_HEADER: &str = "x-shardline-detail";
/// Header carrying a result's status on result messages.
pub const STATUS_HEADER: &str = "x-shardline-status";
/// Header carrying which publication of an accepted request's final result a message is: `1`
/// is the first and never repeats an earlier copy; a higher number comes from a re-driven
/// finalizer and may repeat one (deduplicate on `message_id`). Rejections carry no attempt.
pub const ATTEMPT_HEADER: &str = "x-shardline-attempt";
/// Header of a shard moved to another queue (a hand-off) after an earlier delivery of it: the
/// move publishes a new message, which the broker marks as never delivered, so the mark keeps
/// what AMQP's `redelivered` flag said, that an earlier try may have started and crashed.
pub const REDELIVERED_HEADER: &str = "x-shardline-redelivered";
/// Header of a hedge copy: a second copy of a late shard that a manager sent to another engine
/// while the first may still be running. A worker asks Redis before working on one (a result
/// already stored means it is skipped). Its try is not counted up front, as a first delivery's
/// is not: a copy that crashes its worker is redelivered, and counted then.
pub const HEDGE_HEADER: &str = "x-shardline-hedge";

/// Connect to the broker at `urls`: one URL, or a cluster's nodes as a comma-separated list
/// (see [`nodes`] for how each recovers from a lost node).
///
/// # Errors
/// A bad URL list ([`Error::Config`]), or no node reachable or accepting the credentials.
pub async fn connect(urls: &str, name: &str) -> Result<Connection, Error> {
    Brokers::parse(urls)?.connect(name).await
}

/// Open a channel in publisher-confirm mode.
///
/// # Errors
/// The connection is closed.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// Which of a namespace's queues is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The dead-letter queue.
    DeadLetters,
    /// The requests queue or a kind's shared queue.
    Shared,
    /// One engine's queue.
    Engine,
}

/// The arguments of a namespace's queue: its queue type's, the dead-letter exchange unless it
/// is the dead-letter queue itself, and, for a quorum engine queue, its expiry once unused.
fn queue_args(names: &Names, role: Role) -> FieldTable {
    let queue_type = names.queue_type();
    let mut pairs = queue_type.arguments();
    if role != Role::DeadLetters {
        pairs.push((
            "x-dead-letter-exchange",
            AMQPValue::LongString(names.dead_exchange().into()),
        ));
    }
    if role == Role::Engine && queue_type == QueueType::Quorum {
        let ms = i64::try_from(queue_type::ENGINE_QUEUE_EXPIRES.as_millis()).unwrap_or(i64::MAX);
        pairs.push(("x-expires", AMQPValue::LongLongInt(ms)));
    }
    args(&pairs)
}

/// Declare one durable queue of the namespace, explaining a clash of queue types.
async fn declare_queue(ch: &Channel, names: &Names, queue: &str, role: Role) -> Result<(), Error> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        queue_args(names, role),
    )
    .await
    .map_err(|e| queue_type::explain_declare_error(queue, names.queue_type(), e))?;
    Ok(())
}

/// Declare the exchanges and the request and dead-letter queues of a namespace (idempotent;
/// every process calls it). Kinds' shared queues are declared by [`declare_kind_queue`].
///
/// # Errors
/// The broker refuses a declaration (for example a queue that exists with other arguments).
pub async fn declare_topology(ch: &Channel, names: &Names) -> Result<(), Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let none = FieldTable::default();
    ch.exchange_declare(
        names.requests_exchange().into(),
        ExchangeKind::Fanout,
        durable,
        none.clone(),
    )
    .await?;
    ch.exchange_declare(
        names.results_exchange().into(),
        ExchangeKind::Topic,
        durable,
        none.clone(),
    )
    .await?;
    ch.exchange_declare(
        names.dead_exchange().into(),
        ExchangeKind::Fanout,
        durable,
        none.clone(),
    )
    .await?;
    ch.exchange_declare(
        names.engines_exchange().into(),
        ExchangeKind::Direct,
        durable,
        none.clone(),
    )
    .await?;

    declare_queue(ch, names, &names.dead_queue(), Role::DeadLetters).await?;
    ch.queue_bind(
        names.dead_queue().into(),
        names.dead_exchange().into(),
        "".into(),
        QueueBindOptions::default(),
        none.clone(),
    )
    .await?;
    declare_queue(ch, names, &names.requests_queue(), Role::Shared).await?;
    ch.queue_bind(
        names.requests_queue().into(),
        names.requests_exchange().into(),
        "".into(),
        QueueBindOptions::default(),
        none,
    )
    .await?;
    Ok(())
}

/// Declare a kind's durable shared shard queue (idempotent; `kind` is a checked name).
///
/// # Errors
/// The broker refuses the declaration.
pub async fn declare_kind_queue(ch: &Channel, names: &Names, kind: &str) -> Result<(), Error> {
    declare_queue(ch, names, &names.kind_queue(kind), Role::Shared).await
}

/// The kind a shard message names in its `type` property, when that is a valid kind name
/// (managers set it on every shard; a hand-off routes by it).
pub fn shard_kind(props: &BasicProperties) -> Option<&str> {
    props
        .kind()
        .as_ref()
        .map(ShortString::as_str)
        .filter(|k| crate::kind::check_name(k).is_ok())
}

/// Declare one engine's durable shard queue and bind it to the engines exchange under the
/// engine's id (call [`declare_topology`] first).
///
/// # Errors
/// The broker refuses the declaration.
pub async fn declare_engine_queue(ch: &Channel, names: &Names, engine: &str) -> Result<(), Error> {
    let queue = names.engine_queue(engine);
    declare_queue(ch, names, &queue, Role::Engine).await?;
    ch.queue_bind(
        queue.as_str().into(),
        names.engines_exchange().into(),
        engine.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Publish a shard to one engine's queue through the engines exchange, confirmed and
/// mandatory: a shard whose engine has unbound its queue (it is stopping, or gone) comes back
/// as [`Published::Returned`]; send it to the shared queue.
///
/// Never publish to an engine queue by its name on the default exchange: that route cannot be
/// withdrawn, and RabbitMQ confirms, without storing, a message that reaches a queue as it is
/// deleted.
///
/// # Errors
/// Broker failures, or [`Error::Nacked`].
pub async fn publish_to_engine(
    ch: &Channel,
    names: &Names,
    engine: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<Published, Error> {
    publish(ch, &names.engines_exchange(), engine, body, props, true).await
}

/// What happened to a confirmed publish.
#[derive(Debug)]
pub enum Published {
    /// The broker stored it.
    Stored,
    /// The broker returned a mandatory message as unroutable, and the return came with this
    /// confirm. An AMQP return carries no delivery tag, so on a channel with several publishes
    /// in flight it may be **another** publish's message: compare [`Published::is_returned`]
    /// and handle the message itself. Each returned message comes with exactly one confirm.
    Returned(Box<lapin::message::BasicReturnMessage>),
}

impl Published {
    /// Whether the message with this `message_id` is the one that came back.
    pub fn is_returned(&self, message_id: &str) -> bool {
        match self {
            Published::Stored => false,
            Published::Returned(m) => {
                m.properties.message_id().as_ref().map(|s| s.as_str()) == Some(message_id)
            }
        }
    }
}

/// Publish on a confirm-mode channel and wait for the broker's confirm.
///
/// # Errors
/// Broker failures, or [`Error::Nacked`] when the broker refused the message.
pub async fn publish(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
    mandatory: bool,
) -> Result<Published, Error> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body,
            props.with_delivery_mode(2),
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(Published::Stored),
        Confirmation::Ack(Some(returned)) => Ok(Published::Returned(Box::new(returned))),
        Confirmation::Nack(_) => Err(Error::Nacked(format!("{exchange}/{routing_key}"))),
    }
}

/// Where a request's result goes: its `reply_to` queue, or the result exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyTo {
    /// AMQP `reply_to` of the request.
    pub reply_to: Option<String>,
    /// AMQP `correlation_id` of the request.
    pub correlation_id: Option<String>,
    /// Encoding of the request, used for the result too.
    pub format: Format,
}

/// Publish a request's final result, confirmed, with `message_id` = request id so that
/// consumers can deduplicate, and the publication `attempt` (from [`crate::Store::publication`])
/// in [`ATTEMPT_HEADER`] when there is one.
///
/// # Errors
/// Broker failures or an unencodable result.
pub async fn publish_result(
    ch: &Channel,
    names: &Names,
    to: &ReplyTo,
    result: &FinalResult,
    attempt: Option<u64>,
) -> Result<(), Error> {
    let body = to.format.encode(result)?;
    let mut headers = FieldTable::default();
    headers.insert(
        STATUS_HEADER.into(),
        AMQPValue::LongString(result.status.as_str().into()),
    );
    if let Some(n) = attempt {
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
        );
    }
    let mut props = BasicProperties::default()
        .with_message_id(result.request_id.to_string().into())
        .with_content_type(to.format.content_type().into())
        .with_type(result.kind.clone().into())
        .with_headers(headers);
    if let Some(c) = &to.correlation_id {
        props = props.with_correlation_id(c.clone().into());
    }
    let (exchange, key) = match &to.reply_to {
        Some(q) => (String::new(), q.clone()),
        None => (
            names.results_exchange(),
            if result.kind.is_empty() {
                "_".to_owned()
            } else {
                result.kind.clone()
            },
        ),
    };
    // Not mandatory: a client that gave up waiting must not block the result.
    publish(ch, &exchange, &key, &body, props, false).await?;
    Ok(())
}

/// The publication attempt a result message carries in [`ATTEMPT_HEADER`]: `Some(1)` for a
/// first copy, more for a re-driven one that may repeat it, `None` when absent (rejections).
pub fn attempt(props: &BasicProperties) -> Option<u64> {
    match props.headers().as_ref()?.inner().get(ATTEMPT_HEADER)? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Whether an earlier delivery of this message may have started work on it: the broker's
/// `redelivered` flag, or the [`REDELIVERED_HEADER`] of a message moved after such a delivery.
/// A worker counts a shard's attempt up front only then; a first delivery's try is counted if
/// it is ever redelivered.
pub fn tried_before(delivery: &lapin::message::Delivery) -> bool {
    delivery.redelivered || has_header(&delivery.properties, REDELIVERED_HEADER)
}

/// Whether a shard is a hedge copy ([`HEDGE_HEADER`]).
pub fn is_hedge(props: &BasicProperties) -> bool {
    has_header(props, HEDGE_HEADER)
}

/// `props` marked as a hedge copy's ([`HEDGE_HEADER`]).
pub fn hedge_properties(props: BasicProperties) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(HEDGE_HEADER.into(), AMQPValue::Boolean(true));
    props.with_headers(headers)
}

fn has_header(props: &BasicProperties, name: &str) -> bool {
    props
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(name))
}

/// The properties to move a delivered message to another queue with: its own, without the old
/// queue's delivery count, marked with [`REDELIVERED_HEADER`] when an earlier delivery may
/// have started it.
pub fn moved_properties(delivery: &lapin::message::Delivery) -> BasicProperties {
    let mut kept = delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    // The old queue's delivery count is not the new queue's: a quorum queue counts afresh.
    let counted = kept.remove(queue_type::DELIVERY_COUNT_HEADER).is_some();
    let tried = tried_before(delivery);
    if !counted && !tried {
        return delivery.properties.clone();
    }
    let mut headers = FieldTable::from(kept);
    if tried {
        headers.insert(REDELIVERED_HEADER.into(), AMQPValue::Boolean(true));
    }
    delivery.properties.clone().with_headers(headers)
}

/// Publish a copy of a message to the dead-letter exchange with the reason in headers.
///
/// # Errors
/// Broker failures.
pub async fn dead_letter(
    ch: &Channel,
    names: &Names,
    body: &[u8],
    original: &BasicProperties,
    reason: &str,
    detail: &str,
    request_id: Option<Uuid>,
) -> Result<(), Error> {
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert(DETAIL_HEADER.into(), AMQPValue::LongString(detail.into()));
    let mut props = original.clone().with_headers(headers);
    if let Some(id) = request_id {
        props = props.with_message_id(id.to_string().into());
    }
    publish(ch, &names.dead_exchange(), "", body, props, false).await?;
    crate::metric::dead_lettered(reason);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hedge copy's properties keep the original's and carry the mark; the original's do not.
    #[test]
    fn hedge_copies_are_marked() {
        let original = BasicProperties::default().with_message_id("r:1".into());
        assert!(!is_hedge(&original));
        let copy = hedge_properties(original.clone());
        assert!(is_hedge(&copy));
        assert_eq!(copy.message_id(), original.message_id());
    }
}
