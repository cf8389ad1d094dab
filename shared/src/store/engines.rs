//! Worker engines: heartbeats, the kinds they advertise, retirement, and who is alive.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::AsyncCommands;
use tracing::warn;

use super::Store;
use crate::kind::{Advert, BUILTIN_KINDS};
use crate::locality::LocalityKey;
use crate::{Error, now_ms};

/// What an engine says of itself in its heartbeat key:
/// `concurrency=<n> pid=<p> kinds=<a,b,...> metrics=<addr>`, every field optional. Read
/// leniently: a field that is missing or does not parse is `None`, and fields a newer worker
/// adds are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineInfo {
    /// Shards it runs at once.
    pub concurrency: Option<u32>,
    /// Its process id.
    pub pid: Option<u32>,
    /// The kinds it serves; `None` when it did not say.
    pub kinds: Option<Vec<String>>,
    /// Where it serves metrics.
    pub metrics: Option<String>,
}

impl EngineInfo {
    /// Whether the engine serves `kind`: one of the kinds it lists, or, when it lists none
    /// (a worker from before kinds were advertised), a built-in kind.
    pub fn serves(&self, kind: &str) -> bool {
        match &self.kinds {
            Some(kinds) => kinds.iter().any(|k| k == kind),
            None => BUILTIN_KINDS.contains(&kind),
        }
    }

    /// Read heartbeat details.
    pub fn parse(details: &str) -> Self {
        let field = |name: &str| {
            details
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        EngineInfo {
            concurrency: field("concurrency").and_then(|n| n.parse().ok()),
            pid: field("pid").and_then(|n| n.parse().ok()),
            kinds: field("kinds").map(|k| {
                k.split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            metrics: field("metrics").map(str::to_owned),
        }
    }
}

impl std::fmt::Display for EngineInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut fields = Vec::new();
        if let Some(n) = self.concurrency {
            fields.push(format!("concurrency={n}"));
        }
        if let Some(p) = self.pid {
            fields.push(format!("pid={p}"));
        }
        if let Some(k) = &self.kinds {
            fields.push(format!("kinds={}", k.join(",")));
        }
        if let Some(m) = &self.metrics {
            fields.push(format!("metrics={m}"));
        }
        f.write_str(&fields.join(" "))
    }
}

/// The keys as Redis arguments.
fn key_strs(keys: &[LocalityKey]) -> Vec<&str> {
    keys.iter().map(LocalityKey::as_str).collect()
}

impl Store {
    /// Announce an engine as alive for `ttl`, and the kinds it serves (their adverts, seen
    /// now).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn heartbeat(
        &self,
        engine: &str,
        info: &str,
        kinds: &[(String, Advert)],
        ttl: Duration,
    ) -> Result<(), Error> {
        let n = &self.names;
        let now = now_ms();
        // Apart: the keys live in different Redis Cluster slots.
        let (mut alive, mut listed, mut kinds_pipe) = (redis::pipe(), redis::pipe(), redis::pipe());
        alive
            .pset_ex(n.engine_key(engine), info, ttl.as_millis() as u64)
            .ignore();
        listed.zadd(n.engines_key(), engine, now).ignore();
        if !kinds.is_empty() {
            let fields = kinds
                .iter()
                .map(|(name, ad)| {
                    let ad = Advert {
                        seen: now,
                        ..ad.clone()
                    };
                    Ok((name.as_str(), serde_json::to_string(&ad)?))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            kinds_pipe.hset_multiple(n.kinds_key(), &fields).ignore();
        }
        self.run_apart(&[alive, listed, kinds_pipe]).await
    }

    /// The kinds workers advertise, by name. An advert that does not parse (from a newer
    /// worker, or damaged) is left out with a warning rather than hiding every other kind.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn adverts(&self) -> Result<BTreeMap<String, Advert>, Error> {
        let mut c = self.conn();
        let raw: BTreeMap<String, String> = c.hgetall(self.names.kinds_key()).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(name, json)| match serde_json::from_str(&json) {
                Ok(ad) => Some((name, ad)),
                Err(error) => {
                    warn!(kind = %name, %error, "ignoring an advert that does not parse");
                    None
                }
            })
            .collect())
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
        let (mut alive, mut held, mut listed) = (redis::pipe(), redis::pipe(), redis::pipe());
        alive.del(n.engine_key(engine)).ignore();
        held.del(n.locality_key(engine)).ignore();
        listed.zrem(n.engines_key(), engine).ignore();
        self.run_apart(&[alive, held, listed]).await
    }

    /// Replace the locality keys `engine` holds with `keys` (a worker's `--locality`, at
    /// start, before its first heartbeat).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn set_locality(&self, engine: &str, keys: &[LocalityKey]) -> Result<(), Error> {
        let key = self.names.locality_key(engine);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if !keys.is_empty() {
            pipe.sadd(&key, key_strs(keys)).ignore();
        }
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Add `keys` to what `engine` holds, at run time; returns how many were new.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn add_locality(&self, engine: &str, keys: &[LocalityKey]) -> Result<u64, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let key = self.names.locality_key(engine);
        Ok(self.conn().sadd(key, key_strs(keys)).await?)
    }

    /// Take `keys` out of what `engine` holds, at run time; returns how many it held.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn remove_locality(&self, engine: &str, keys: &[LocalityKey]) -> Result<u64, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let key = self.names.locality_key(engine);
        Ok(self.conn().srem(key, key_strs(keys)).await?)
    }

    /// The locality keys each of `engines` holds, in order, asked at once. A member that
    /// is not a valid key (written by hand) is left out with a warning.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn localities(&self, engines: &[String]) -> Result<Vec<BTreeSet<String>>, Error> {
        if engines.is_empty() {
            return Ok(Vec::new());
        }
        // One command each: the keys live in different Redis Cluster slots.
        let asks = engines.iter().map(|e| {
            let mut c = self.conn();
            let key = self.names.locality_key(e);
            async move { c.smembers::<_, Vec<String>>(key).await }
        });
        let raw = futures::future::try_join_all(asks).await?;
        Ok(raw
            .into_iter()
            .zip(engines)
            .map(|(keys, engine)| {
                keys.into_iter()
                    .filter(|k| match LocalityKey::parse(k.as_str()) {
                        Ok(_) => true,
                        Err(error) => {
                            warn!(%engine, key = %k, %error, "ignoring a locality key that does not parse");
                            false
                        }
                    })
                    .collect()
            })
            .collect())
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

    /// The heartbeat details ([`EngineInfo`], as written) of each engine, `None` for an engine
    /// whose heartbeat key expired.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn engine_details(&self, engines: &[String]) -> Result<Vec<Option<String>>, Error> {
        if engines.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = engines.iter().map(|e| self.names.engine_key(e)).collect();
        self.get_each(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heartbeat details round-trip; missing or unreadable fields are `None`, unknown ones
    /// ignored.
    #[test]
    fn engine_info_round_trips_and_reads_leniently() {
        let info = EngineInfo {
            concurrency: Some(4),
            pid: Some(12),
            kinds: Some(vec!["sort".into(), "grep".into()]),
            metrics: Some("127.0.0.1:9465".into()),
        };
        assert_eq!(EngineInfo::parse(&info.to_string()), info);
        let odd = EngineInfo::parse("concurrency=x future=1 kinds= pid=3");
        assert_eq!(odd.concurrency, None);
        assert_eq!(odd.pid, Some(3));
        assert_eq!(odd.kinds, Some(vec![]));
        assert_eq!(EngineInfo::parse("").kinds, None);
        assert!(EngineInfo::parse("").serves("sort") && !EngineInfo::parse("").serves("grep"));
        assert!(info.serves("grep") && !info.serves("wordcount"));
    }
}
