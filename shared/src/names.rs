//! Every AMQP and Redis name Shardline uses, built in one place from a namespace.
//!
//! With the default namespace `shardline` the names are:
//!
//! | what | name |
//! | --- | --- |
//! | request exchange (fanout) and its durable queue | `shardline.requests` |
//! | result exchange (topic, routing key = kind) | `shardline.results` |
//! | dead-letter exchange (fanout) and queue | `shardline.dead` |
//! | a kind's shared shard queue: every worker serving the kind consumes it | `shardline.shards.<kind>` |
//! | one engine's queue | `shardline.engine.<worker id>` |
//! | request metadata hash | `shardline:{<uuid>}:meta` |
//! | partial results hash (shard index → MessagePack) | `shardline:{<uuid>}:parts` |
//! | failed shards (shard index → reason), `partial`/`quorum` policies | `shardline:{<uuid>}:failed` |
//! | finalizer lease | `shardline:{<uuid>}:lease` |
//! | in-flight index (sorted set, score = deadline in ms) | `shardline:inflight` |
//! | live engines (sorted set, score = last heartbeat in ms) | `shardline:engines` |
//! | one engine's heartbeat (string with a TTL) | `shardline:engine:<worker id>` |
//! | kinds workers serve (hash: kind → JSON advert) | `shardline:kinds` |
//! | completion events (pub/sub channel) | `shardline:events` |
//! | sweeper locks (strings with a TTL) | `shardline:lock:<name>` |
//!
//! The `{<uuid>}` hash tag keeps all keys of one request in one Redis Cluster slot.

use uuid::Uuid;

use crate::Error;
use crate::amqp::QueueType;

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "shardline";

/// Names derived from a namespace, and the type of its queues (every declaration of the
/// namespace's queues reads it from here, so they all agree); tests use a unique namespace
/// each so they can share a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    ns: String,
    queue_type: QueueType,
}

impl Names {
    /// Validate a namespace: 1 to 64 characters of `[A-Za-z0-9_-]`.
    ///
    /// # Errors
    /// [`Error::Config`] when the namespace is empty, too long, or has other characters.
    pub fn try_new(ns: impl Into<String>) -> Result<Self, Error> {
        let ns = ns.into();
        let ok = !ns.is_empty()
            && ns.len() <= 64
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Names {
                ns,
                queue_type: QueueType::default(),
            })
        } else {
            Err(Error::Config(format!(
                "namespace {ns:?} must be 1-64 characters of [A-Za-z0-9_-]"
            )))
        }
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// These names with the namespace's queues of type `queue_type`.
    #[must_use]
    pub fn with_queue_type(self, queue_type: QueueType) -> Self {
        Names { queue_type, ..self }
    }

    /// The type of the namespace's queues.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    // === AMQP ===

    /// Exchange (fanout) that clients publish requests to.
    pub fn requests_exchange(&self) -> String {
        format!("{}.requests", self.ns)
    }
    /// Durable queue the managers consume.
    pub fn requests_queue(&self) -> String {
        self.requests_exchange()
    }
    /// Topic exchange for final results without `reply_to`; routing key = kind.
    pub fn results_exchange(&self) -> String {
        format!("{}.results", self.ns)
    }
    /// Fanout exchange for rejected messages.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }
    /// Durable queue bound to the dead-letter exchange.
    pub fn dead_queue(&self) -> String {
        self.dead_exchange()
    }
    /// A kind's shared shard queue (`kind` is a checked name, see
    /// [`crate::kind::check_name`]): every worker serving the kind consumes it; shards no
    /// engine queue takes, and those of departed engines, land here.
    pub fn kind_queue(&self, kind: &str) -> String {
        format!("{}.shards.{kind}", self.ns)
    }
    /// One engine's own shard queue.
    pub fn engine_queue(&self, engine: &str) -> String {
        format!("{}.engine.{engine}", self.ns)
    }
    /// Direct exchange that routes a shard to one engine's queue; routing key = engine id.
    /// A stopping engine unbinds its queue here before deleting it (see `handoff`).
    pub fn engines_exchange(&self) -> String {
        format!("{}.engines", self.ns)
    }

    // === Redis ===

    /// Request metadata hash.
    pub fn meta_key(&self, id: Uuid) -> String {
        format!("{}:{{{id}}}:meta", self.ns)
    }
    /// Partial results hash.
    pub fn parts_key(&self, id: Uuid) -> String {
        format!("{}:{{{id}}}:parts", self.ns)
    }
    /// Failed shards hash (shard index → reason), for requests whose policy tolerates failures.
    pub fn failures_key(&self, id: Uuid) -> String {
        format!("{}:{{{id}}}:failed", self.ns)
    }
    /// Why a request was rejected (kind, reason, message, at), for a while after.
    pub fn rejected_key(&self, id: Uuid) -> String {
        format!("{}:{{{id}}}:rejected", self.ns)
    }
    /// Finalizer lease.
    pub fn lease_key(&self, id: Uuid) -> String {
        format!("{}:{{{id}}}:lease", self.ns)
    }
    /// Sorted set of in-flight request ids, scored by deadline (epoch ms).
    pub fn inflight_key(&self) -> String {
        format!("{}:inflight", self.ns)
    }
    /// Sorted set of engines, scored by last heartbeat (epoch ms).
    pub fn engines_key(&self) -> String {
        format!("{}:engines", self.ns)
    }
    /// One engine's heartbeat key.
    pub fn engine_key(&self, engine: &str) -> String {
        format!("{}:engine:{engine}", self.ns)
    }
    /// Set of the locality keys one engine holds (see [`crate::locality`]).
    pub fn locality_key(&self, engine: &str) -> String {
        format!("{}:locality:{engine}", self.ns)
    }
    /// The kinds live workers serve: kind name → JSON [`crate::kind::Advert`].
    pub fn kinds_key(&self) -> String {
        format!("{}:kinds", self.ns)
    }
    /// A short-lived lock shared by every manager of the namespace (the sweeper's).
    pub fn lock_key(&self, name: &str) -> String {
        format!("{}:lock:{name}", self.ns)
    }
    /// Pub/sub channel of shard completions (`<engine> <request> <index> <micros>`), merges
    /// (`merged <kind> <parts> <micros>`) and requests that end early (`ended <request>`).
    pub fn events_channel(&self) -> String {
        format!("{}:events", self.ns)
    }
    /// Stream of per-process activity counts per bucket (the dashboard's charts).
    pub fn activity_key(&self) -> String {
        format!("{}:activity", self.ns)
    }
    /// Sorted set of managers that report engine readings, scored by their last report.
    pub fn managers_key(&self) -> String {
        format!("{}:managers", self.ns)
    }
    /// What one manager knows of each engine now (engine id → JSON), for the dashboard.
    pub fn manager_engines_key(&self, manager: &str) -> String {
        format!("{}:manager:{manager}:engines", self.ns)
    }
    /// One manager's scaling signal (JSON, with a TTL), for the dashboard's `/api/scale`.
    pub fn manager_scale_key(&self, manager: &str) -> String {
        format!("{}:manager:{manager}:scale", self.ns)
    }
    /// Stream of the managers' engine readings over the last hour (the dashboard's engine
    /// charts).
    pub fn engine_series_key(&self) -> String {
        format!("{}:engine-series", self.ns)
    }
    /// Sorted set of recently finished request ids, scored by finish time (epoch ms).
    pub fn finished_key(&self) -> String {
        format!("{}:finished", self.ns)
    }
    /// List of recent dead letters, newest first (the dashboard's).
    pub fn dead_letters_key(&self) -> String {
        format!("{}:dead", self.ns)
    }
    /// The managers' learned service times, shared so that a restarted or second manager
    /// starts warm.
    pub fn history_key(&self) -> String {
        format!("{}:history", self.ns)
    }
}

impl Default for Names {
    fn default() -> Self {
        Names {
            ns: DEFAULT_NAMESPACE.to_owned(),
            queue_type: QueueType::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of one request share a hash tag, so Redis Cluster keeps them in one slot.
    #[test]
    fn request_keys_share_a_hash_tag() {
        let n = Names::default();
        let id = Uuid::nil();
        let tag = format!("{{{id}}}");
        for key in [
            n.meta_key(id),
            n.parts_key(id),
            n.lease_key(id),
            n.failures_key(id),
            n.rejected_key(id),
        ] {
            assert!(key.contains(&tag), "{key}");
            assert!(key.starts_with("shardline:"), "{key}");
        }
    }

    /// Namespaces that would produce odd queue or key names are refused.
    #[test]
    fn rejects_bad_namespaces() {
        assert!(Names::try_new("").is_err());
        assert!(Names::try_new("a b").is_err());
        assert!(Names::try_new("a:b").is_err());
        assert!(Names::try_new("x".repeat(65)).is_err());
        assert!(Names::try_new("t-1_a").is_ok());
    }
}
