//! A record of recent dead letters, for the dashboard: RabbitMQ cannot show a queue's messages
//! without taking them, so each dead-lettering also leaves a short entry here (the newest
//! [`DEAD_KEPT`]; a request's body too when it is at most [`DEAD_BODY_MAX`] bytes, so that it
//! can be re-submitted). The messages themselves stay in the dead-letter queue.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Store;
use crate::Error;

/// Entries kept.
pub const DEAD_KEPT: isize = 500;
/// Largest request body kept with its entry, bytes.
pub const DEAD_BODY_MAX: usize = 16 * 1024;

/// What was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadKind {
    /// A request the manager rejected.
    Request,
    /// A shard that failed for good, or could not be read.
    Shard,
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry's own id.
    pub id: Uuid,
    /// Epoch ms.
    pub at: u64,
    /// Request or shard.
    pub what: DeadKind,
    /// The reason code.
    pub reason: String,
    /// The detail.
    pub detail: String,
    /// The request it belongs to, when known.
    pub request_id: Option<Uuid>,
    /// The message's AMQP properties needed to send it again.
    pub content_type: Option<String>,
    /// Its `reply_to`.
    pub reply_to: Option<String>,
    /// Its `correlation_id`.
    pub correlation_id: Option<String>,
    /// Its `message_id`.
    pub message_id: Option<String>,
    /// The body of a request of at most [`DEAD_BODY_MAX`] bytes.
    #[serde(with = "serde_bytes")]
    pub body: Option<Vec<u8>>,
}

impl DeadLetter {
    /// The entry for a message dead-lettered now; the body is kept for a request of at most
    /// [`DEAD_BODY_MAX`] bytes.
    pub fn new(
        what: DeadKind,
        body: &[u8],
        props: &lapin::BasicProperties,
        reason: &str,
        detail: &str,
        request_id: Option<Uuid>,
    ) -> Self {
        let text = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|v| v.to_string());
        let keep = what == DeadKind::Request && body.len() <= DEAD_BODY_MAX;
        DeadLetter {
            id: Uuid::new_v4(),
            at: crate::now_ms(),
            what,
            reason: reason.to_owned(),
            detail: detail.to_owned(),
            request_id,
            content_type: text(props.content_type()),
            reply_to: text(props.reply_to()),
            correlation_id: text(props.correlation_id()),
            message_id: text(props.message_id()),
            body: keep.then(|| body.to_vec()),
        }
    }
}

impl Store {
    /// Remember a dead letter (the newest [`DEAD_KEPT`] are kept).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn remember_dead_letter(&self, d: &DeadLetter) -> Result<(), Error> {
        let key = self.names.dead_letters_key();
        let blob = rmp_serde::to_vec_named(d)?;
        let mut c = self.conn();
        let _: () = redis::pipe()
            .atomic()
            .lpush(&key, blob)
            .ignore()
            .ltrim(&key, 0, DEAD_KEPT - 1)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Dead letters, newest first, from `start`, at most `count`; an entry this version cannot
    /// read is skipped.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_letters(&self, start: usize, count: usize) -> Result<Vec<DeadLetter>, Error> {
        let Some((first, last)) = super::ranks(start, count) else {
            return Ok(Vec::new());
        };
        let mut c = self.conn();
        let blobs: Vec<Vec<u8>> = c.lrange(self.names.dead_letters_key(), first, last).await?;
        Ok(blobs
            .iter()
            .filter_map(|b| rmp_serde::from_slice(b).ok())
            .collect())
    }
}
