//! Looking at the deployment from outside: is it up, what is left in its queues, what does
//! Redis say about a request, and removing the namespace at the end (`shardline::teardown`).

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use shardline::Names;
use shardline::config::ConnectArgs;
use shardline::message::Status;
use shardline::store::Store;
use tokio::time::Instant;
use uuid::Uuid;

/// Messages ready and consumers of a queue; `None` when it does not exist. A channel per
/// probe, since a missing queue closes the channel.
pub(crate) async fn queue(conn: &lapin::Connection, name: &str) -> Option<(u32, u32)> {
    let ch = conn.create_channel().await.ok()?;
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await
        .ok();
    let _ = ch.close(200, "probe".into()).await;
    q.map(|q| (q.message_count(), q.consumer_count()))
}

/// Wait until every worker in `workers` beats and `managers` managers consume requests.
///
/// # Errors
/// Not ready within `within`; the message says what was missing.
pub(crate) async fn ready(
    conn: &lapin::Connection,
    store: &Store,
    names: &Names,
    workers: &[String],
    managers: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    loop {
        let live = store
            .live_engines(Duration::from_secs(3))
            .await
            .unwrap_or_default();
        let missing: Vec<&String> = workers.iter().filter(|w| !live.contains(w)).collect();
        let consumers = queue(conn, &names.requests_queue())
            .await
            .map_or(0, |(_, c)| c as usize);
        if missing.is_empty() && consumers >= managers {
            return Ok(());
        }
        if Instant::now() >= until {
            anyhow::bail!(
                "deployment not ready after {within:?}: workers without a heartbeat {missing:?}, \
                 {consumers} of {managers} managers consuming requests"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What Redis knows about a request, in one line.
pub(crate) async fn describe(store: &Store, id: Uuid) -> String {
    match store.meta(id).await {
        Ok(Some(m)) => {
            let engines: Vec<_> = store
                .routes(id)
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
            format!(
                "state={} status={} outcome={} done={}/{} engines={:?} error={}",
                m.state,
                m.status.map_or("-", Status::as_str),
                m.outcome.map_or("-", Status::as_str),
                m.done,
                m.total,
                engines,
                m.error
                    .as_ref()
                    .map_or("-".to_owned(), |e| format!("{}: {}", e.code, e.message))
            )
        }
        Ok(None) => "no record in Redis (never accepted, or expired)".into(),
        Err(e) => format!("reading Redis failed: {e}"),
    }
}

/// Delete the namespace: its queues (every worker queue of the run and the reply queue
/// included), exchanges and Redis keys (best effort: a failure is printed).
pub(crate) async fn cleanup(connect: &ConnectArgs, names: &Names, workers: &[String]) {
    let extra: Vec<String> = workers
        .iter()
        .map(|w| names.engine_queue(w))
        .chain([super::replies::queue_name(names)])
        .collect();
    let work = async {
        let conn = shardline::amqp::connect(&connect.amqp_url, "shardline-soak cleanup").await?;
        let store = Store::connect(&connect.redis_url, names.clone()).await?;
        shardline::teardown::remove_namespace(&conn, &store, &extra).await?;
        let _ = conn.close(200, "soak done".into()).await;
        Ok::<_, shardline::Error>(())
    };
    if let Err(error) = work.await {
        eprintln!(
            "soak: removing the namespace {} failed: {error}",
            names.namespace()
        );
    }
}
