//! Handler Host: one process that owns everything that must be correct and durable in a
//! message-driven service, while the business logic runs as sandboxed WebAssembly components.
//!
//! # Layout
//! The path of a command, top to bottom: [`http`] (ingress) → [`executor`] (idempotency, the
//! unit of work, re-runs on conflict) → [`plugin`] (the sandboxed call, built on [`sandbox`] and
//! [`bindings`]) → [`committer`] (group commit into the [`store`]) → [`dispatcher`] (delivers the
//! outbox to subscribers, with [`retry`] and the dead-letter queue).
//!
//! - [`app`]: the one place a running host is assembled from its configuration (committer,
//!   executor, dispatcher, leases, maintenance), for `run`, `dev`, `send`, `bus` and the bench.
//! - [`bindings`]: the Rust side of the WIT contract, generated once.
//! - [`sandbox`]: the wasmtime engine, limits, traps and what a guest may touch.
//! - [`plugin`]: one loaded component and the typed calls into it.
//! - [`registry`]: every loaded plugin and who owns or subscribes to which kind: a snapshot,
//!   replaced whole when plugins change.
//! - [`plugin_dir`]: the plugins directory as loaded, and hot reload: rebuild, check and swap
//!   a changed plugin between two messages.
//! - [`cache`]: compiled components on disk, keyed by content and engine configuration.
//! - [`scaffold`]: `host new`, a plugin project to start from.
//! - [`manifest`]: `plugin.toml`, how a plugin folder is built into a component.
//! - [`message`]: the one envelope type inside the host, and its WIT record.
//! - [`unit_of_work`]: what one handler call reads and writes, before it commits.
//! - [`store`]: the database behind one interface, SQLite or PostgreSQL by URL: reads,
//!   batches planned in memory and written in a fixed handful of statements, the queue and
//!   the dead letters, and whether the database is working.
//! - [`committer`]: the single writer that applies many units of work per transaction.
//! - [`executor`]: runs commands, queries and event deliveries end to end.
//! - [`dispatcher`]: the background delivery loop: ordering, retries, dead letters.
//! - [`partitions`]: on PostgreSQL, the partitions this host leases and so dispatches, when
//!   several hosts share one database.
//! - [`retry`]: the retry policy and its backoff.
//! - [`policy`]: the host config file: per-plugin retry, ordering, limits; idempotency and
//!   retention lifetimes.
//! - [`maintenance`]: the background task that deletes expired keys and old delivered rows.
//! - [`fault`]: test-only crash points (`HOST_FAULT`), inert unless set.
//! - [`http`]: the HTTP ingress and the JSON error format.
//! - [`admin`]: the admin API, the `host bus` operations over HTTP behind the admin token.
//! - [`telemetry`]: Prometheus metrics, counted as the work happens and sampled from the
//!   database when scraped.
//! - [`config`]: every tunable, with its default written once.
//! - [`error`]: the failure classes that decide what happens to a message.
//! - [`trace`]: `host trace`, one request's causal tree from the database.
//! - [`cli`]: the `host` command line.
//!
//! Beside the library: the `host` binary (`main.rs`) and `host-bench` (`bin/host-bench`), the
//! project measured against its baselines through this library's public surface.

pub mod admin;
pub mod app;
pub mod bindings;
pub mod cache;
pub mod cli;
pub mod committer;
pub mod config;
pub mod dispatcher;
pub mod error;
pub mod executor;
pub mod fault;
pub mod http;
pub mod maintenance;
pub mod manifest;
pub mod message;
pub mod partitions;
pub mod plugin;
pub mod plugin_dir;
pub mod policy;
pub mod registry;
pub mod retry;
pub mod sandbox;
pub mod scaffold;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod unit_of_work;
