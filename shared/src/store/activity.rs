//! The activity stream: each process's counts per bucket, for the dashboard's charts (see
//! [`crate::activity`]).

use super::Store;
use crate::activity::{Event, KEEP};
use crate::{Error, now_ms};

impl Store {
    /// Append one process's counts for the bucket starting at `t` (epoch s), dropping entries
    /// older than [`KEEP`].
    ///
    /// # Errors
    /// Redis failures.
    pub async fn append_activity(&self, t: u64, counts: &[(Event, u64)]) -> Result<(), Error> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.names.activity_key())
            .arg("MINID")
            .arg("~")
            .arg(now_ms().saturating_sub(KEEP.as_millis() as u64))
            .arg("*")
            .arg("t")
            .arg(t);
        for (e, n) in counts {
            cmd.arg(e.as_str()).arg(n);
        }
        let _: String = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The entries appended since `since_ms` (epoch ms): bucket start and counts. Fields this
    /// version does not know are skipped.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn activity_since(
        &self,
        since_ms: u64,
    ) -> Result<Vec<(u64, Vec<(Event, u64)>)>, Error> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.names.activity_key())
            .arg(since_ms)
            .arg("+")
            .query_async(&mut self.conn())
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let field = |v: &redis::Value| redis::from_redis_value_ref::<u64>(v).ok();
                let t = entry.map.get("t").and_then(field)?;
                let counts = entry
                    .map
                    .iter()
                    .filter_map(|(k, v)| Some((Event::from_field(k)?, field(v)?)))
                    .collect();
                Some((t, counts))
            })
            .collect())
    }
}
