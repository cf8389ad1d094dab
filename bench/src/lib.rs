//! # Shardline benchmark
//!
//! Real manager, real workers (in this process, each with its own broker and Redis
//! connections), real RabbitMQ and Redis. Engines run the `synthetic` kind, which sleeps for a
//! seeded cost divided by the engine's speed. Arrivals are open-loop Poisson from a seed and
//! latency is measured from each request's *scheduled* send time, so a slow system cannot hide
//! its queueing (no coordinated omission). Every policy runs the same trace, interleaved, each
//! on a fresh namespace with fresh engines and manager; the first 10% of each run is discarded.
//!
//! Suites:
//! - [`suite::routing`] — policy × workload × load → p50/p99/p99.9, throughput,
//!   makespan/ideal, and p99 ratios against round robin, sampled-depth JSQ and pull, each
//!   with a paired [`bootstrap`] confidence interval; on the locality workload (W9), also
//!   against the locality ablation ([`policy::Policy::NoLocality`]) with the share of shards
//!   that ran where their data is;
//! - [`sharding::sharding`] — fixed shard counts (1/4/16/64 by default) against adaptive, on
//!   small, medium and large requests, each mode over every size, and a mixed trace of all
//!   three where one fixed count has to serve every size;
//! - [`suite::decisions`] — the cost of one routing decision;
//! - [`throughput`] — the per-shard cost of real manager and worker processes against the
//!   broker's and Redis's own ceilings, CPU per shard by process;
//! - [`scaling`] — whether the manager's desired-replica signal rises before the queue.
//!
//! [`soak`] is not a benchmark: 30 minutes of mixed load on real manager and worker processes
//! with random kills and restarts, then a check that every request got exactly one result.

#![warn(missing_docs)]

pub mod bootstrap;
pub mod harness;
pub mod policy;
pub mod report;
pub mod scaling;
pub mod sharding;
pub mod soak;
pub mod suite;
pub mod throughput;
pub mod workload;
