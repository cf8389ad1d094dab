//! Worker engines: heartbeats, retirement, and who is alive.

use std::time::Duration;

use redis::AsyncCommands;

use super::Store;
use crate::{Error, now_ms};

impl Store {
    /// Announce an engine as alive for `ttl`.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn heartbeat(&self, engine: &str, info: &str, ttl: Duration) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        // Not MULTI: the two keys live in different Redis Cluster slots.
        let _: () = redis::pipe()
            .pset_ex(n.engine_key(engine), info, ttl.as_millis() as u64)
            .ignore()
            .zadd(n.engines_key(), engine, now_ms())
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Take an engine out of routing at once, but keep it known as dead, so that if it cannot
    /// finish handing off its queue the manager's sweeper does it.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn retire(&self, engine: &str) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        // Two slots in a Redis Cluster: two plain commands, not one MULTI.
        let _: () = c.zadd(n.engines_key(), engine, 0).await?;
        let _: () = c.del(n.engine_key(engine)).await?;
        Ok(())
    }

    /// Remove an engine (graceful shutdown).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn deregister(&self, engine: &str) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        let _: () = redis::pipe()
            .del(n.engine_key(engine))
            .ignore()
            .zrem(n.engines_key(), engine)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Every engine registered in the namespace, live or not, sorted by id.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn known_engines(&self) -> Result<Vec<String>, Error> {
        let mut c = self.conn();
        let mut ids: Vec<String> = c.zrange(self.names.engines_key(), 0, -1).await?;
        ids.sort();
        Ok(ids)
    }

    /// Engines whose heartbeat is younger than `ttl`, sorted by id.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn live_engines(&self, ttl: Duration) -> Result<Vec<String>, Error> {
        let mut c = self.conn();
        let since = now_ms().saturating_sub(ttl.as_millis() as u64);
        let mut ids: Vec<String> = c
            .zrangebyscore(self.names.engines_key(), since, "+inf")
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// Every registered engine with the epoch ms of its last heartbeat (0 once retired).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn engine_beats(&self) -> Result<Vec<(String, u64)>, Error> {
        let mut c = self.conn();
        let beats: Vec<(String, f64)> =
            c.zrange_withscores(self.names.engines_key(), 0, -1).await?;
        Ok(beats
            .into_iter()
            .map(|(id, at)| (id, at.max(0.0) as u64))
            .collect())
    }

    /// Engines whose last heartbeat is older than `ttl`: dead, or cut off.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_engines(&self, ttl: Duration) -> Result<Vec<String>, Error> {
        let mut c = self.conn();
        let before = now_ms().saturating_sub(ttl.as_millis() as u64);
        Ok(
            c.zrangebyscore(self.names.engines_key(), "-inf", format!("({before}"))
                .await?,
        )
    }

    /// The heartbeat details (`concurrency=<n> pid=<p>`, and `metrics=<addr>` when the worker
    /// serves metrics) of each engine, `None` for an engine
    /// whose heartbeat key expired.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn engine_details(&self, engines: &[String]) -> Result<Vec<Option<String>>, Error> {
        if engines.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let keys: Vec<String> = engines.iter().map(|e| self.names.engine_key(e)).collect();
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut c).await?)
    }
}
