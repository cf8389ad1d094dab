//! Closing a request: the finalizer lease, what a finalizer reads, counting publications, and
//! marking the request published.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{BATCH, Meta, Store};
use crate::message::Status;
use crate::{Error, now_ms};

static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/release.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/renew.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/finish.lua")));
static PUBLICATION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/publication.lua")));

/// What [`Store::closing`] read.
#[derive(Debug, Clone)]
pub struct Closing {
    /// The metadata, `None` when the request is gone.
    pub meta: Option<Meta>,
    /// Failed shards (index → reason).
    pub failures: BTreeMap<u32, String>,
    /// Every part in shard order, when they were read with the rest.
    pub parts: Option<Vec<Option<Vec<u8>>>>,
}

impl Store {
    /// Take the finalizer lease of a request that is closing (`finalizing` or `failing`) and
    /// whose lease is free: its finalizer died or gave up. True when taken.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn claim_lease(
        &self,
        id: Uuid,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        self.set_nx_px(&self.names.lease_key(id), holder, lease)
            .await
    }

    /// Give back a finalizer lease this holder could not complete, so that the next delivery of
    /// one of the request's shards re-claims it at once instead of after the lease expires.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn release(&self, id: Uuid, holder: &str) -> Result<bool, Error> {
        let mut c = self.conn();
        let released: i64 = RELEASE
            .key(self.names.lease_key(id))
            .arg(holder)
            .invoke_async(&mut c)
            .await?;
        Ok(released == 1)
    }

    /// Extend the finalizer lease `holder` holds to `lease` from now; false when it is not
    /// held by `holder` any more.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn renew(&self, id: Uuid, holder: &str, lease: Duration) -> Result<bool, Error> {
        let mut c = self.conn();
        let renewed: i64 = RENEW
            .key(self.names.lease_key(id))
            .arg(holder)
            .arg(lease.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(renewed == 1)
    }

    /// What a finalizer reads, in one round trip: the request's metadata, its failed shards,
    /// and, when the caller knows the shard count (`total`, as the claim reported it) and it
    /// is at most one batch, every part in shard order (`None` for a part not stored).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn closing(&self, id: Uuid, total: Option<u32>) -> Result<Closing, Error> {
        let parts = async {
            let Some(total) = total.filter(|t| (1..=BATCH as u32).contains(t)) else {
                return Ok(None);
            };
            let mut c = self.conn();
            let got: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(self.names.parts_key(id))
                .arg((0..total).collect::<Vec<u32>>())
                .query_async(&mut c)
                .await?;
            Ok::<_, Error>(Some(got))
        };
        let (meta, failures, parts) = tokio::try_join!(self.meta(id), self.failures(id), parts)?;
        Ok(Closing {
            meta,
            failures,
            parts,
        })
    }

    /// Count a publication of a request's final result, before it is sent: `Some(1)` for
    /// the first one ever, `Some(n)` for a re-driven one that may repeat an earlier copy, `None`
    /// when the request is gone or already published (send nothing).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn publication(&self, id: Uuid) -> Result<Option<u64>, Error> {
        let eval = Self::evalsha(&PUBLICATION, &[self.names.meta_key(id)]);
        // Replicated before the result is sent: a lost count would make a re-drive look like
        // a first.
        let n: u64 = self
            .eval_replicated("publication", &PUBLICATION, eval)
            .await?;
        Ok((n > 0).then_some(n))
    }

    /// Mark a request published (its result is confirmed by the broker), drop its partials and
    /// lease, keep its metadata for the grace period, and remove it from the in-flight index
    /// (in the background, after this returns).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn finish(&self, id: Uuid, status: Status) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        let keys = [
            n.meta_key(id),
            n.parts_key(id),
            n.lease_key(id),
            n.failures_key(id),
        ];
        let mut eval = Self::evalsha(&FINISH, &keys);
        eval.arg(status.as_str())
            .arg(now_ms())
            .arg(self.grace.as_millis() as u64);
        let _: i64 = self.eval_replicated("finish", &FINISH, eval).await?;
        // Off the finalizer's path, and only once the record says published: an entry left
        // behind (Redis failed just then) is removed by the manager's sweeper, which drops
        // index entries whose record is published or gone.
        let (key, member) = (n.inflight_key(), id.to_string());
        tokio::spawn(async move {
            if let Err(error) = c.zrem::<_, _, ()>(key, member).await {
                tracing::debug!(%error, "removing a published request from the index failed");
            }
        });
        Ok(())
    }
}
