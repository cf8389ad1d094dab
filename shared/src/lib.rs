//! # Shardline: shared library
//!
//! Shardline splits one large request into shards, runs them in parallel on worker engines and
//! joins the partial results. This crate holds what the manager, the worker and the client
//! share.
//!
//! # Layout
//!
//! - [`message`] — wire types (request, shard, final result) and their encodings;
//! - [`kind`] — the [`kind::Kind`] trait, the built-in kinds and the [`Registry`];
//! - [`locality`] — locality keys: where a shard's data lives, which engines hold it;
//! - [`names`] — every AMQP and Redis name, from one namespace;
//! - [`store`] — all Redis access (Lua scripts in `shared/lua/`);
//! - [`config`] — the connection flags every process takes;
//! - [`amqp`] — connecting, declaring the topology, confirmed publishing;
//! - [`resolve`] — assembling and publishing a request's final result;
//! - [`inline`] — which small work runs on the runtime's thread instead of a blocking one;
//! - [`metric`], [`exporter`] — the metrics every process records, and `/metrics`;
//! - [`activity`] — requests accepted and ended per bucket, for the dashboard's charts;
//! - [`service`] — the services' error type and exit codes;
//! - [`signal`], [`telemetry`] — shutdown signals and logging for the binaries;
//! - [`teardown`] — removing a namespace (tests, benchmarks, retired deployments).

#![warn(missing_docs)]

pub mod activity;
pub mod amqp;
pub mod config;
mod error;
pub mod exporter;
pub mod handoff;
pub mod inline;
pub mod kind;
pub mod locality;
pub mod message;
pub mod metric;
pub mod names;
pub mod resolve;
pub mod scaling;
pub mod service;
pub mod signal;
pub mod store;
pub mod supervise;
pub mod teardown;
pub mod telemetry;

pub use error::{Error, RejectReason};
pub use kind::Registry;
pub use names::Names;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The message of a caught panic (`catch_unwind`'s payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
