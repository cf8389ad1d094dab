//! # Shardline client
//!
//! [`Client`] submits requests and waits for their final results on one exclusive reply
//! queue, and reads progress and in-flight requests from Redis. The `shardline` CLI is a thin
//! layer over it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shardline_client::Error> {
//! use shardline::config::ConnectArgs;
//! use shardline::message::Options;
//! use shardline_client::Client;
//! use std::time::Duration;
//!
//! let client = Client::connect(&ConnectArgs::local()).await?;
//! let result = client
//!     .submit("sort", vec![3, 1, 2].into(), Options::default(), Duration::from_secs(30))
//!     .await?;
//! println!("{:?}", result.output);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod dashboard;
pub mod load;
mod payload;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use shardline::amqp;
use shardline::locality::LocalityKey;
use shardline::message::{FinalResult, Format, Options, PreCutBody, RequestBody};
use shardline::store::{Meta, Rejected, Store};
use shardline::{Names, config::ConnectArgs};
use tokio::sync::oneshot;
use tracing::warn;
use uuid::Uuid;

pub use payload::{InputFormat, parse_payload};

/// The client's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker could not be reached or failed.
    #[error("broker: {0}")]
    Broker(#[source] shardline::Error),
    /// Redis could not be reached or failed.
    #[error("redis: {0}")]
    Redis(#[source] shardline::Error),
    /// No result arrived in time.
    #[error("no result for request {id} within {timeout:?}")]
    Timeout {
        /// The request.
        id: Uuid,
        /// How long we waited.
        timeout: Duration,
    },
    /// The request could not be encoded or the input could not be read.
    #[error("bad input: {0}")]
    Input(String),
    /// The reply consumer stopped (connection lost).
    #[error("the reply queue closed before the result arrived")]
    RepliesClosed,
}

type Pending = Arc<Mutex<HashMap<Uuid, oneshot::Sender<FinalResult>>>>;

/// A worker that beat within this long counts as running (the managers' default engine TTL).
const LIVE_WITHIN: Duration = Duration::from_secs(6);

/// A connection to a Shardline deployment.
pub struct Client {
    conn: Connection,
    channel: lapin::Channel,
    names: Names,
    store: Store,
    reply_queue: String,
    pending: Pending,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("names", &self.names)
            .field("reply_queue", &self.reply_queue)
            .finish()
    }
}

impl Client {
    /// Connect to the broker and Redis, declare the topology and an exclusive reply queue.
    ///
    /// # Errors
    /// [`Error::Broker`] or [`Error::Redis`] when either is unreachable.
    pub async fn connect(args: &ConnectArgs) -> Result<Self, Error> {
        let names = args.names().map_err(|e| Error::Input(e.to_string()))?;
        let store = args.store().await.map_err(Error::Redis)?;
        let broker = |e: lapin::Error| Error::Broker(e.into());
        let conn = amqp::connect(&args.amqp_url, "shardline-client")
            .await
            .map_err(Error::Broker)?;
        let channel = amqp::confirm_channel(&conn).await.map_err(Error::Broker)?;
        amqp::declare_topology(&channel, &names)
            .await
            .map_err(Error::Broker)?;
        let replies = conn.create_channel().await.map_err(broker)?;
        let queue = replies
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive().auto_delete(),
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
        let reply_queue = queue.name().to_string();
        let consumer = replies
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
        let pending: Pending = Arc::default();
        tokio::spawn(route_replies(consumer, pending.clone()));
        Ok(Client {
            conn,
            channel,
            names,
            store,
            reply_queue,
            pending,
        })
    }

    /// The namespace's names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Publish a request whose result comes back to this client; returns its id and a
    /// receiver for the result.
    ///
    /// # Errors
    /// The broker refused the request.
    pub async fn send(
        &self,
        kind: &str,
        payload: rmpv::Value,
        options: Options,
    ) -> Result<(Uuid, oneshot::Receiver<FinalResult>), Error> {
        self.publish(&RequestBody {
            kind: kind.to_owned(),
            payload,
            options: options.to_value(),
            locality: None,
        })
        .await
    }

    /// Publish a request cut by the caller: each of `shards` is a value of the kind's input
    /// and becomes one shard, in order (for data already held in pieces: files, partitions).
    /// Returns its id and a receiver for the result.
    ///
    /// # Errors
    /// The broker refused the request.
    pub async fn send_shards(
        &self,
        kind: &str,
        shards: Vec<rmpv::Value>,
        options: Options,
    ) -> Result<(Uuid, oneshot::Receiver<FinalResult>), Error> {
        self.publish(&PreCutBody {
            kind: kind.to_owned(),
            shards,
            options: options.to_value(),
            locality: None,
            localities: None,
        })
        .await
    }

    /// Publish a request whose data lives at `locality` (every shard): the manager prefers
    /// engines that hold the key ([`shardline::locality`]).
    ///
    /// # Errors
    /// The broker refused the request.
    pub async fn send_at(
        &self,
        kind: &str,
        payload: rmpv::Value,
        locality: &LocalityKey,
        options: Options,
    ) -> Result<(Uuid, oneshot::Receiver<FinalResult>), Error> {
        self.publish(&RequestBody {
            kind: kind.to_owned(),
            payload,
            options: options.to_value(),
            locality: Some(locality.to_string()),
        })
        .await
    }

    /// Publish a request cut by the caller ([`Client::send_shards`]) whose pieces each name
    /// where their data lives (`None`: anywhere), one entry per piece.
    ///
    /// # Errors
    /// [`Error::Input`] when the counts differ; the broker refused the request.
    pub async fn send_shards_at(
        &self,
        kind: &str,
        shards: Vec<rmpv::Value>,
        localities: Vec<Option<LocalityKey>>,
        options: Options,
    ) -> Result<(Uuid, oneshot::Receiver<FinalResult>), Error> {
        if localities.len() != shards.len() {
            return Err(Error::Input(format!(
                "{} locality keys for {} shards: give one per shard",
                localities.len(),
                shards.len()
            )));
        }
        self.publish(&PreCutBody {
            kind: kind.to_owned(),
            shards,
            options: options.to_value(),
            locality: None,
            localities: Some(
                localities
                    .into_iter()
                    .map(|k| k.map(|k| k.to_string()))
                    .collect(),
            ),
        })
        .await
    }

    /// Publish `body` as a new request with this client as its reply target.
    async fn publish(
        &self,
        body: &impl serde::Serialize,
    ) -> Result<(Uuid, oneshot::Receiver<FinalResult>), Error> {
        let id = Uuid::new_v4();
        let body = Format::MsgPack
            .encode(body)
            .map_err(|e| Error::Input(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id, tx);
        let props = BasicProperties::default()
            .with_message_id(id.to_string().into())
            .with_correlation_id(id.to_string().into())
            .with_reply_to(self.reply_queue.as_str().into())
            .with_content_type(Format::MsgPack.content_type().into());
        let sent = amqp::publish(
            &self.channel,
            &self.names.requests_exchange(),
            "",
            &body,
            props,
            true,
        )
        .await;
        match sent {
            Ok(p) if !p.is_returned(&id.to_string()) => Ok((id, rx)),
            Ok(_) => {
                self.lock_pending().remove(&id);
                Err(Error::Broker(shardline::Error::Nacked(
                    self.names.requests_exchange(),
                )))
            }
            Err(e) => {
                self.lock_pending().remove(&id);
                Err(Error::Broker(e))
            }
        }
    }

    /// Submit a request and wait up to `timeout` for its final result.
    ///
    /// # Errors
    /// Broker failures or [`Error::Timeout`].
    pub async fn submit(
        &self,
        kind: &str,
        payload: rmpv::Value,
        options: Options,
        timeout: Duration,
    ) -> Result<FinalResult, Error> {
        let (id, rx) = self.send(kind, payload, options).await?;
        self.wait(id, rx, timeout).await
    }

    /// Submit a request cut by the caller ([`Client::send_shards`]) and wait up to `timeout`
    /// for its final result.
    ///
    /// # Errors
    /// Broker failures or [`Error::Timeout`].
    pub async fn submit_shards(
        &self,
        kind: &str,
        shards: Vec<rmpv::Value>,
        options: Options,
        timeout: Duration,
    ) -> Result<FinalResult, Error> {
        let (id, rx) = self.send_shards(kind, shards, options).await?;
        self.wait(id, rx, timeout).await
    }

    /// Wait for the result of a request sent with [`Client::send`].
    ///
    /// # Errors
    /// [`Error::Timeout`] or [`Error::RepliesClosed`].
    pub async fn wait(
        &self,
        id: Uuid,
        rx: oneshot::Receiver<FinalResult>,
        timeout: Duration,
    ) -> Result<FinalResult, Error> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(Error::RepliesClosed),
            Err(_) => {
                self.lock_pending().remove(&id);
                Err(Error::Timeout { id, timeout })
            }
        }
    }

    /// A request's metadata (state, progress), or `None` when unknown or expired.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn status(&self, id: Uuid) -> Result<Option<Meta>, Error> {
        self.store.meta(id).await.map_err(Error::Redis)
    }

    /// Why a request was rejected, if it was rejected within the last few minutes (a rejected
    /// request has no [`Client::status`]).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn rejection(&self, id: Uuid) -> Result<Option<Rejected>, Error> {
        self.store.rejection(id).await.map_err(Error::Redis)
    }

    /// The engine each shard of a request was routed to (index → engine id, `(shared)` for the
    /// shared queue); empty when unknown or expired.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn routes(&self, id: Uuid) -> Result<BTreeMap<u32, String>, Error> {
        self.store.routes(id).await.map_err(Error::Redis)
    }

    /// Cancel a request. A running one ends ([`Ended::Claimed`] or [`Ended::Marked`]) and its
    /// one `cancelled` result goes where its result would have gone; one not seen yet is
    /// remembered ([`Ended::Remembered`]) and cancelled when it arrives; one that already
    /// ended is left alone ([`Ended::NotRunning`]).
    ///
    /// [`Ended::Claimed`]: shardline::store::Ended::Claimed
    /// [`Ended::Marked`]: shardline::store::Ended::Marked
    /// [`Ended::Remembered`]: shardline::store::Ended::Remembered
    /// [`Ended::NotRunning`]: shardline::store::Ended::NotRunning
    ///
    /// # Errors
    /// Redis failures.
    pub async fn cancel(&self, id: Uuid) -> Result<shardline::store::Ended, Error> {
        self.store
            .cancel(id, "cancelled by a client")
            .await
            .map_err(Error::Redis)
    }

    /// The locality keys `engine` holds, sorted.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn locality(&self, engine: &str) -> Result<Vec<String>, Error> {
        let held = self
            .store
            .localities(&[engine.to_owned()])
            .await
            .map_err(Error::Redis)?;
        Ok(held.into_iter().flatten().collect())
    }

    /// Add `keys` to what `engine` holds, at run time (until the worker restarts, when its
    /// `--locality` applies again); returns how many were new. Managers see the change
    /// within a second.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn add_locality(&self, engine: &str, keys: &[LocalityKey]) -> Result<u64, Error> {
        self.store
            .add_locality(engine, keys)
            .await
            .map_err(Error::Redis)
    }

    /// Take `keys` out of what `engine` holds, at run time; returns how many it held.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn remove_locality(&self, engine: &str, keys: &[LocalityKey]) -> Result<u64, Error> {
        self.store
            .remove_locality(engine, keys)
            .await
            .map_err(Error::Redis)
    }

    /// Engines whose heartbeat is current, sorted by id.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn live_engines(&self) -> Result<Vec<String>, Error> {
        self.store
            .live_engines(LIVE_WITHIN)
            .await
            .map_err(Error::Redis)
    }

    /// In-flight requests (id and deadline in epoch ms), earliest deadline first.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn list(&self, limit: usize) -> Result<Vec<(Uuid, u64)>, Error> {
        self.store.inflight(limit).await.map_err(Error::Redis)
    }

    /// Delete every queue, exchange and Redis key of the namespace (see
    /// [`shardline::teardown`]). Refused while a worker of the namespace is alive: its
    /// in-flight work would be lost. Stop the managers first too; they do not register.
    ///
    /// # Errors
    /// [`Error::Input`] while workers are alive; broker or Redis failures.
    pub async fn remove_namespace(&self) -> Result<(), Error> {
        let live = self
            .store
            .live_engines(LIVE_WITHIN)
            .await
            .map_err(Error::Redis)?;
        if !live.is_empty() {
            return Err(Error::Input(format!(
                "{} worker(s) of namespace {} are still running ({}); stop them first",
                live.len(),
                self.names.namespace(),
                live.join(", ")
            )));
        }
        shardline::teardown::remove_namespace(&self.conn, &self.store, &[])
            .await
            .map_err(Error::Broker)
    }

    /// Close the connection.
    pub async fn close(self) {
        if let Err(error) = self.conn.close(200, "client done".into()).await {
            warn!(%error, "closing the client connection failed");
        }
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<FinalResult>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn route_replies(mut consumer: lapin::Consumer, pending: Pending) {
    while let Some(next) = consumer.next().await {
        let Ok(delivery) = next else { break };
        let format = Format::from_content_type(
            delivery
                .properties
                .content_type()
                .as_ref()
                .map(|s| s.as_str()),
        );
        let decoded = format.decode::<FinalResult>(&delivery.data);
        // Ack before handing the result over: the waiter may close the connection as soon as
        // it has it. (The reply queue is exclusive, so an ack lost with the connection loses
        // nothing: the queue goes with it.)
        if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
            warn!(%error, "acking a reply failed");
        }
        match decoded {
            Ok(result) => {
                let tx = pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&result.request_id);
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            Err(error) => warn!(%error, "ignoring an undecodable reply"),
        }
    }
    // Dropping the senders wakes every waiter with RepliesClosed.
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}
