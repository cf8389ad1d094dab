//! Worker engines: heartbeats, retirement, and who is alive.

use std::collections::HashMap;
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

    /// Record what manager `manager` knows of each live engine now (`readings`: engine id and a
    /// JSON document), for the dashboard. Each manager's record expires after `ttl`; the set
    /// of reporting managers forgets one that stopped reporting a minute ago.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn report_engines(
        &self,
        manager: &str,
        readings: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), Error> {
        let n = &self.names;
        let key = n.manager_engines_key(manager);
        let now = now_ms();
        let mut c = self.conn();
        let mut pipe = redis::pipe();
        pipe.del(&key).ignore();
        if !readings.is_empty() {
            pipe.hset_multiple(&key, readings)
                .ignore()
                .pexpire(&key, ttl.as_millis() as i64)
                .ignore();
        }
        // Not MULTI: the managers' set lives in another Redis Cluster slot.
        pipe.zadd(n.managers_key(), manager, now)
            .ignore()
            .zrembyscore(n.managers_key(), "-inf", now.saturating_sub(60_000))
            .ignore();
        let _: () = pipe.query_async(&mut c).await?;
        Ok(())
    }

    /// What each manager that reported within `within` knows of the engines: manager id, and
    /// engine id → JSON document.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn engine_reports(
        &self,
        within: Duration,
    ) -> Result<Vec<(String, HashMap<String, String>)>, Error> {
        let n = &self.names;
        let mut c = self.conn();
        let since = now_ms().saturating_sub(within.as_millis() as u64);
        let managers: Vec<String> = c.zrangebyscore(n.managers_key(), since, "+inf").await?;
        let mut out = Vec::with_capacity(managers.len());
        for m in managers {
            let readings: HashMap<String, String> = c.hgetall(n.manager_engines_key(&m)).await?;
            out.push((m, readings));
        }
        Ok(out)
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
