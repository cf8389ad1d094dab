//! The resolver script against a real Redis: first writer wins, one claim, lease recovery.

use std::time::Duration;

use shardline::message::Status;
use shardline::store::{Begun, Created, NewRequest, Recorded, Store};
use shardline::{Names, message::Format, now_ms};
use shardline_tests::{Services, eventually};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

async fn store() -> Store {
    let s = Services::get().await;
    let ns = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    Store::connect(&s.redis_url, Names::try_new(ns).expect("ns"))
        .await
        .expect("redis")
}

async fn request(store: &Store, total: u32) -> Uuid {
    let id = Uuid::new_v4();
    let created = store
        .create(&NewRequest {
            id,
            kind: "sort".into(),
            total,
            created: now_ms(),
            deadline: now_ms() + 60_000,
            reply_to: None,
            correlation_id: None,
            format: Format::MsgPack,
            policy: Default::default(),
            quorum: None,
            manager: "test".into(),
            cut: shardline::kind::Splitter::Custom,
        })
        .await
        .expect("create");
    assert_eq!(created, Created::New);
    id
}

async fn record(
    store: &Store,
    id: Uuid,
    index: u32,
    data: &[u8],
    holder: &str,
    lease: Duration,
) -> Recorded {
    store
        .record(
            id,
            index,
            data,
            now_ms() + 60_000,
            holder,
            lease,
            holder,
            Duration::from_micros(7),
        )
        .await
        .expect("record")
}

/// A second write to the same shard index changes neither the stored bytes nor the count.
#[tokio::test]
async fn duplicate_writes_are_ignored() {
    let s = store().await;
    let id = request(&s, 3).await;
    assert_eq!(
        record(&s, id, 0, b"first", "a", LEASE).await,
        Recorded::Accepted { done: 1, total: 3 }
    );
    assert_eq!(
        record(&s, id, 0, b"second", "b", LEASE).await,
        Recorded::Duplicate
    );
    let meta = s.meta(id).await.expect("redis").expect("meta");
    assert_eq!(meta.done, 1);
    record(&s, id, 1, b"x", "a", LEASE).await;
    record(&s, id, 2, b"y", "a", LEASE).await;
    assert_eq!(s.parts(id, 3).await.expect("parts")[0], b"first");
}

/// With many concurrent writers and duplicates, exactly one write claims finalization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_claim_under_concurrency() {
    let s = store().await;
    let id = request(&s, 20).await;
    let mut tasks = Vec::new();
    for copy in 0..5 {
        for index in 0..20 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                record(
                    &s,
                    id,
                    index,
                    format!("{index}").as_bytes(),
                    &format!("h{copy}-{index}"),
                    LEASE,
                )
                .await
            }));
        }
    }
    let mut claims = 0;
    for t in tasks {
        if matches!(t.await.expect("task"), Recorded::Claimed { .. }) {
            claims += 1;
        }
    }
    assert_eq!(claims, 1);
    assert_eq!(s.meta(id).await.expect("redis").expect("meta").done, 20);
}

/// A duplicate delivery after the finalizer's lease expired claims it again (crash recovery),
/// but not while the lease is held.
#[tokio::test]
async fn expired_lease_is_reclaimed_by_a_redelivery() {
    let s = store().await;
    let id = request(&s, 1).await;
    assert!(matches!(
        record(&s, id, 0, b"p", "dies", Duration::from_millis(200)).await,
        Recorded::Claimed { .. }
    ));
    assert_eq!(
        record(&s, id, 0, b"p", "other", LEASE).await,
        Recorded::Duplicate
    );
    eventually(
        "the lease to expire and be re-claimed",
        Duration::from_secs(5),
        || async {
            matches!(
                record(&s, id, 0, b"p", "other", LEASE).await,
                Recorded::Claimed { .. }
            )
            .then_some(())
        },
    )
    .await;
}

/// Released leases are re-claimed at once; a finished request refuses late writes.
#[tokio::test]
async fn release_and_finish() {
    let s = store().await;
    let id = request(&s, 1).await;
    assert!(matches!(
        record(&s, id, 0, b"p", "a", LEASE).await,
        Recorded::Claimed { .. }
    ));
    assert!(
        !s.release(id, "not-a").await.expect("release"),
        "only the holder may release"
    );
    assert!(s.release(id, "a").await.expect("release"));
    assert!(matches!(
        record(&s, id, 0, b"p", "b", LEASE).await,
        Recorded::Claimed { .. }
    ));
    s.finish(id, Status::Completed).await.expect("finish");
    assert_eq!(record(&s, id, 0, b"p", "c", LEASE).await, Recorded::Closed);
    assert!(
        s.inflight(100)
            .await
            .expect("inflight")
            .iter()
            .all(|(i, _)| *i != id)
    );
}

/// Publications of a final result are numbered from 1, and none is counted for a request that
/// is already published or does not exist.
#[tokio::test]
async fn publications_are_numbered_until_published() {
    let s = store().await;
    let id = request(&s, 1).await;
    assert_eq!(s.publication(id).await.expect("redis"), Some(1));
    assert_eq!(s.publication(id).await.expect("redis"), Some(2));
    s.finish(id, Status::Completed).await.expect("finish");
    assert_eq!(s.publication(id).await.expect("redis"), None);
    assert_eq!(s.publication(Uuid::new_v4()).await.expect("redis"), None);
}

/// Writes for unknown requests or out-of-range indices are refused, not stored.
#[tokio::test]
async fn unknown_requests_and_bad_indices_are_refused() {
    let s = store().await;
    assert_eq!(
        record(&s, Uuid::new_v4(), 0, b"p", "a", LEASE).await,
        Recorded::Unknown
    );
    let id = request(&s, 2).await;
    assert_eq!(
        record(&s, id, 2, b"p", "a", LEASE).await,
        Recorded::BadIndex
    );
    assert_eq!(s.meta(id).await.expect("redis").expect("meta").done, 0);
}

/// Before processing a redelivered shard, a shard whose result is already stored is reported
/// settled and not counted as an attempt; others count attempts, the first call counting the
/// first delivery's uncounted try too (2, 3, ...).
#[tokio::test]
async fn begin_counts_attempts_but_not_stored_shards() {
    let s = store().await;
    let id = request(&s, 2).await;
    assert_eq!(s.begin(id, 0).await.expect("begin"), Begun::Attempt(2));
    assert_eq!(s.begin(id, 0).await.expect("begin"), Begun::Attempt(3));
    record(&s, id, 0, b"p", "a", LEASE).await;
    assert_eq!(s.begin(id, 0).await.expect("begin"), Begun::Settled);
    assert_eq!(
        s.begin(Uuid::new_v4(), 0).await.expect("begin"),
        Begun::Gone
    );
}
