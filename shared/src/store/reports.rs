//! What managers report for the dashboard: each one's view of the live engines now, a capped
//! stream of those views over the last hour (the per-engine charts), and each one's scaling
//! signal. Every record expires or is trimmed, so a manager that stops leaves nothing behind.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use super::Store;
use crate::scaling::Signal;
use crate::{Error, now_ms};

/// Time between two points of an engine in the series (an hour of a manager watching 20
/// engines is about 1.5 MB).
pub const SERIES_STEP: Duration = Duration::from_secs(5);
/// How long the engine series keeps a point: the dashboard charts the last hour.
pub const SERIES_KEEP: Duration = Duration::from_secs(3_660);
/// At most this many series entries are read at once (an hour of 5-second points from 20
/// managers).
const SERIES_READ_MAX: usize = 15_000;

/// One engine at one moment as one manager saw it: a point of the dashboard's engine charts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EnginePoint {
    /// Sampled ready messages in its queue.
    pub depth: Option<u32>,
    /// Unfinished shards the manager sent it.
    pub unfinished: u64,
    /// Forecast hidden ready messages, one sample ahead.
    pub forecast: Option<f64>,
    /// Lower bound of the forecast's prediction interval.
    pub lower: Option<f64>,
    /// Upper bound of the forecast's prediction interval.
    pub upper: Option<f64>,
}

impl EnginePoint {
    /// Five space-separated fields, `-` for a missing one: `depth unfinished forecast lower
    /// upper`.
    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = match self.depth {
            Some(d) => write!(out, "{d} "),
            None => write!(out, "- "),
        };
        let _ = write!(out, "{}", self.unfinished);
        for v in [self.forecast, self.lower, self.upper] {
            let _ = match v.filter(|v| v.is_finite()) {
                Some(v) => write!(out, " {v:.2}"),
                None => write!(out, " -"),
            };
        }
        out
    }

    /// The point [`EnginePoint::encode`] wrote; `None` for anything else.
    fn decode(s: &str) -> Option<Self> {
        fn opt<T: std::str::FromStr>(f: &str) -> Option<Option<T>> {
            if f == "-" {
                Some(None)
            } else {
                f.parse().ok().map(Some)
            }
        }
        let f: Vec<&str> = s.split(' ').collect();
        let [depth, unfinished, forecast, lower, upper] = f.as_slice() else {
            return None;
        };
        let point = EnginePoint {
            depth: opt(depth)?,
            unfinished: unfinished.parse().ok()?,
            forecast: opt(forecast)?,
            lower: opt(lower)?,
            upper: opt(upper)?,
        };
        [point.forecast, point.lower, point.upper]
            .iter()
            .flatten()
            .all(|v| v.is_finite())
            .then_some(point)
    }
}

/// One entry of the engine series: when, which manager, and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesEntry {
    /// Epoch ms (the stream entry's id).
    pub at: u64,
    /// The reporting manager.
    pub manager: String,
    /// Engine id and point.
    pub engines: Vec<(String, EnginePoint)>,
}

/// The field prefix of an engine's point in a series entry.
const ENGINE_FIELD: &str = "e.";

impl Store {
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
        let (mut pipe, mut listed) = (redis::pipe(), redis::pipe());
        pipe.del(&key).ignore();
        if !readings.is_empty() {
            pipe.hset_multiple(&key, readings)
                .ignore()
                .pexpire(&key, ttl.as_millis() as i64)
                .ignore();
        }
        // Apart: the managers' set lives in another Redis Cluster slot.
        listed
            .zadd(n.managers_key(), manager, now)
            .ignore()
            .zrembyscore(n.managers_key(), "-inf", now.saturating_sub(60_000))
            .ignore();
        self.run_apart(&[pipe, listed]).await
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
        let managers = self.reporting_managers(within).await?;
        let mut c = self.conn();
        let mut out = Vec::with_capacity(managers.len());
        for m in managers {
            let readings: HashMap<String, String> =
                c.hgetall(self.names.manager_engines_key(&m)).await?;
            out.push((m, readings));
        }
        Ok(out)
    }

    /// Append manager `manager`'s `points` to the engine series, dropping entries older than
    /// [`SERIES_KEEP`].
    ///
    /// # Errors
    /// Redis failures.
    pub async fn append_engine_series(
        &self,
        manager: &str,
        points: &[(&str, EnginePoint)],
    ) -> Result<(), Error> {
        let keep_from = now_ms().saturating_sub(SERIES_KEEP.as_millis() as u64);
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.names.engine_series_key())
            .arg("MINID")
            .arg("~")
            .arg(keep_from)
            .arg("*")
            .arg("m")
            .arg(manager);
        for (engine, p) in points {
            xadd.arg(format!("{ENGINE_FIELD}{engine}")).arg(p.encode());
        }
        let _: () = xadd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The engine series since `since_ms` (epoch ms), oldest first, at most
    /// [`SERIES_READ_MAX`] entries. Fields this version cannot read are skipped.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn engine_series_since(&self, since_ms: u64) -> Result<Vec<SeriesEntry>, Error> {
        let entries = super::stream_since(
            self,
            self.names.engine_series_key(),
            since_ms,
            SERIES_READ_MAX,
        )
        .await?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| {
                let at = entry.id.split('-').next()?.parse().ok()?;
                let text = |v: &redis::Value| redis::from_redis_value_ref::<String>(v).ok();
                let manager = entry.map.get("m").and_then(text)?;
                let engines = entry
                    .map
                    .iter()
                    .filter_map(|(k, v)| {
                        let engine = k.strip_prefix(ENGINE_FIELD)?;
                        Some((engine.to_owned(), EnginePoint::decode(&text(v)?)?))
                    })
                    .collect();
                Some(SeriesEntry {
                    at,
                    manager,
                    engines,
                })
            })
            .collect())
    }

    /// Record manager `manager`'s scaling signal for `ttl`.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn report_scale(
        &self,
        manager: &str,
        signal: &Signal,
        ttl: Duration,
    ) -> Result<(), Error> {
        let doc = serde_json::to_string(signal)
            .map_err(|e| Error::Config(format!("the scaling signal as JSON: {e}")))?;
        let _: () = self
            .conn()
            .pset_ex(
                self.names.manager_scale_key(manager),
                doc,
                ttl.as_millis() as u64,
            )
            .await?;
        Ok(())
    }

    /// The scaling signal of each manager that reported within `within`: manager id and signal.
    /// A record this version cannot read is skipped.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn scale_reports(&self, within: Duration) -> Result<Vec<(String, Signal)>, Error> {
        let managers = self.reporting_managers(within).await?;
        if managers.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = managers
            .iter()
            .map(|m| self.names.manager_scale_key(m))
            .collect();
        let docs = self.get_each(keys).await?;
        Ok(managers
            .into_iter()
            .zip(docs)
            .filter_map(|(m, doc)| Some((m, serde_json::from_str(&doc?).ok()?)))
            .collect())
    }

    /// Managers that reported within `within`.
    async fn reporting_managers(&self, within: Duration) -> Result<Vec<String>, Error> {
        let since = now_ms().saturating_sub(within.as_millis() as u64);
        Ok(self
            .conn()
            .zrangebyscore(self.names.managers_key(), since, "+inf")
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point reads back as written, missing fields included; anything else is refused.
    #[test]
    fn points_round_trip_and_refuse_garbage() {
        let full = EnginePoint {
            depth: Some(12),
            unfinished: 3,
            forecast: Some(1.25),
            lower: Some(0.0),
            upper: Some(4.5),
        };
        assert_eq!(EnginePoint::decode(&full.encode()), Some(full));
        let empty = EnginePoint::default();
        assert_eq!(empty.encode(), "- 0 - - -");
        assert_eq!(EnginePoint::decode(&empty.encode()), Some(empty));
        for bad in [
            "",
            "1 2 3 4",
            "1 2 3 4 5 6",
            "x 0 - - -",
            "- -1 - - -",
            "- 0 NaN - -",
            "- 0 inf - -",
        ] {
            assert_eq!(EnginePoint::decode(bad), None, "{bad:?}");
        }
    }
}
