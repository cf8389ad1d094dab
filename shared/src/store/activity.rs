//! The activity stream (each process's counts per bucket) and the index of recently finished
//! requests, for the dashboard (see [`crate::activity`]).

use redis::AsyncCommands;
use uuid::Uuid;

use super::Store;
use crate::activity::{Event, FINISHED_FOR, KEEP};
use crate::{Error, now_ms};

/// At most this many activity entries are read at once (two hours of 10-second flushes from
/// 100 processes).
const ACTIVITY_READ_MAX: usize = 72_000;

impl Store {
    /// Append one process's counts for the bucket starting at `t` (epoch s), dropping entries
    /// older than [`KEEP`], and add the requests it `finished` (id, epoch ms) to the index of
    /// recently finished requests, dropping those older than [`FINISHED_FOR`].
    ///
    /// # Errors
    /// Redis failures.
    pub async fn append_activity(
        &self,
        t: u64,
        counts: &[(Event, u64)],
        finished: &[(Uuid, u64)],
    ) -> Result<(), Error> {
        let now = now_ms();
        // Two pipelines: the keys live in different Redis Cluster slots.
        let (mut counted, mut ended) = (redis::pipe(), redis::pipe());
        if !counts.is_empty() {
            let xadd = counted
                .cmd("XADD")
                .arg(self.names.activity_key())
                .arg("MINID")
                .arg("~")
                .arg(now.saturating_sub(KEEP.as_millis() as u64))
                .arg("*")
                .arg("t")
                .arg(t);
            for (e, n) in counts {
                xadd.arg(e.as_str()).arg(n);
            }
            counted.ignore();
        }
        if !finished.is_empty() {
            let key = self.names.finished_key();
            let members: Vec<(u64, String)> = finished
                .iter()
                .map(|(id, at)| (*at, id.to_string()))
                .collect();
            ended
                .zadd_multiple(&key, &members)
                .ignore()
                .zrembyscore(
                    &key,
                    "-inf",
                    format!("({}", now.saturating_sub(FINISHED_FOR.as_millis() as u64)),
                )
                .ignore();
        }
        self.run_apart(&[counted, ended]).await
    }

    /// Requests finished in the last [`FINISHED_FOR`], newest first, from `start`, at most
    /// `count`: id and epoch ms. Members this version cannot read are skipped.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn finished_page(
        &self,
        start: usize,
        count: usize,
    ) -> Result<Vec<(Uuid, u64)>, Error> {
        let Some((first, last)) = super::ranks(start, count) else {
            return Ok(Vec::new());
        };
        let mut c = self.conn();
        let page: Vec<(String, f64)> = c
            .zrevrange_withscores(self.names.finished_key(), first, last)
            .await?;
        Ok(page
            .into_iter()
            .filter_map(|(id, at)| Some((id.parse().ok()?, at.max(0.0) as u64)))
            .collect())
    }

    /// When request `id` finished (epoch ms), if it did in the last [`FINISHED_FOR`].
    ///
    /// # Errors
    /// Redis failures.
    pub async fn finished_at(&self, id: Uuid) -> Result<Option<u64>, Error> {
        let mut c = self.conn();
        let at: Option<f64> = c.zscore(self.names.finished_key(), id.to_string()).await?;
        Ok(at.map(|at| at.max(0.0) as u64))
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
        let entries =
            super::stream_since(self, self.names.activity_key(), since_ms, ACTIVITY_READ_MAX)
                .await?;
        Ok(entries
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
