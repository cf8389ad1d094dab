//! Short records of rejected requests: a request refused at intake never gets a record of its
//! own, so without these `status` would call it unknown seconds after its answer went out.
//! Each lives as long as a published request's metadata does.

use std::collections::HashMap;

use redis::AsyncCommands;
use uuid::Uuid;

use super::Store;
use crate::{Error, RejectReason};

/// Why a request was refused, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The kind the request named (empty when the body was unreadable).
    pub kind: String,
    /// Why.
    pub reason: RejectReason,
    /// The detail sent with the answer.
    pub message: String,
    /// Epoch ms of the rejection.
    pub at: u64,
}

impl Store {
    /// Remember that request `id` was rejected.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn remember_rejection(&self, id: Uuid, r: &Rejected) -> Result<(), Error> {
        let key = self.names.rejected_key(id);
        let mut c = self.conn();
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("kind", r.kind.clone()),
                    ("reason", r.reason.code().to_owned()),
                    ("message", r.message.clone()),
                    ("at", r.at.to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, self.grace.as_millis() as i64)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// The rejection of request `id`, if it was rejected recently.
    ///
    /// # Errors
    /// Redis failures, or [`Error::Corrupt`] for a record this version cannot read.
    pub async fn rejection(&self, id: Uuid) -> Result<Option<Rejected>, Error> {
        let mut c = self.conn();
        let mut raw: HashMap<String, String> = c.hgetall(self.names.rejected_key(id)).await?;
        if raw.is_empty() {
            return Ok(None);
        }
        let corrupt = |detail: String| Error::Corrupt { id, detail };
        let reason = raw.get("reason").map(String::as_str).unwrap_or_default();
        let reason = RejectReason::from_code(reason)
            .ok_or_else(|| corrupt(format!("rejection reason {reason:?}")))?;
        let at = raw
            .get("at")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| corrupt("rejection time".into()))?;
        Ok(Some(Rejected {
            kind: raw.remove("kind").unwrap_or_default(),
            reason,
            message: raw.remove("message").unwrap_or_default(),
            at,
        }))
    }
}
