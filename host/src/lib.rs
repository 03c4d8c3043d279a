//! Handler Host: one process that owns everything that must be correct and durable in a
//! message-driven service, while the business logic runs as sandboxed WebAssembly components.
//!
//! # Layout
//! The path of a command, top to bottom: [`http`] (ingress) → [`executor`] (idempotency, the
//! unit of work, re-runs on conflict) → [`plugin`] (the sandboxed call, built on [`sandbox`] and
//! `bindings`) → [`committer`] (group commit into the [`store`]) → `dispatcher` (delivers the
//! outbox to subscribers, with [`retry`] and the dead-letter queue).
//!
//! - [`app`]: the one place a running host is assembled from its configuration (committer,
//!   executor, dispatcher, leases, maintenance, back-pressure), for `run`, `dev`, `send`,
//!   `bus` and the bench.
//! - `bindings`: the Rust side of the WIT contract, generated once.
//! - [`sandbox`]: the wasmtime engine, limits, traps and what a guest may touch.
//! - [`plugin`]: one loaded component and the typed calls into it.
//! - [`registry`]: every loaded plugin and who owns or subscribes to which kind: a snapshot,
//!   replaced whole when plugins change.
//! - [`plugin_dir`]: the plugins directory as loaded, and hot reload: rebuild, check and swap
//!   a changed plugin between two messages.
//! - [`cache`]: compiled components on disk, keyed by content and engine configuration.
//! - `scaffold`: `host new`, a plugin project to start from.
//! - `manifest`: `plugin.toml`, how a plugin folder is built into a component.
//! - [`message`]: the one envelope type inside the host, and its WIT record.
//! - [`unit_of_work`]: what one handler call reads and writes, before it commits.
//! - [`store`]: the database behind one interface, SQLite or PostgreSQL by URL: reads,
//!   batches planned in memory and written in a fixed handful of statements, the delivery
//!   queue, what operators inspect and repair, and whether the database is working.
//! - [`committer`]: the single writer that applies many units of work per transaction.
//! - [`executor`]: runs commands, queries and event deliveries end to end.
//! - `dispatcher`: the background delivery loop: ordering, retries, dead letters.
//! - [`backpressure`]: the bound on due, undelivered deliveries past which commands are
//!   refused (503) until the backlog falls back.
//! - `partitions`: on PostgreSQL, the partitions this host leases and so dispatches, when
//!   several hosts share one database.
//! - [`retry`]: the retry policy and its backoff.
//! - `maintenance`: the background task that deletes expired keys and old delivered rows.
//! - `fault`: test-only crash points (`HOST_FAULT`), inert unless set.
//! - [`http`]: the HTTP ingress: requests read and checked, and the one place an error
//!   becomes a status code and a JSON body.
//! - `admin`: the admin API, the `host bus` operations over HTTP behind the admin token.
//! - [`stats`]: percentiles and shares of collected figures, for the metrics and the store.
//! - [`telemetry`]: Prometheus metrics, counted as the work happens and sampled from the
//!   database when scraped.
//! - [`config`]: the host config file (per-plugin retry, ordering, limits; idempotency and
//!   retention lifetimes) and every other tunable, each default written once.
//! - [`error`]: the failure classes that decide what happens to a message, the JSON error
//!   format, and the one host error type.
//! - `trace`: `host trace`, one request's causal tree from the database.
//! - [`cli`]: the `host` command line.
//!
//! Beside the library: the `host` binary (`main.rs`) and `host-bench` (`bin/host-bench`), the
//! project measured against its baselines. The library's public surface is what those two
//! use: assembling and running a host ([`app`], [`config`], [`store`], [`executor`],
//! [`plugin_dir`], [`sandbox`], [`http`], [`telemetry`], [`stats`]) and the command line ([`cli`]); the
//! modules named in plain text above are the host's own.

#![warn(missing_docs)]

mod admin;
pub mod app;
pub mod backpressure;
mod bindings;
pub mod cache;
pub mod cli;
pub mod committer;
pub mod config;
mod dispatcher;
pub mod error;
pub mod executor;
mod fault;
pub mod http;
mod maintenance;
mod manifest;
pub mod message;
mod partitions;
pub mod plugin;
pub mod plugin_dir;
pub mod registry;
pub mod retry;
pub mod sandbox;
mod scaffold;
pub mod stats;
pub mod store;
pub mod telemetry;
mod trace;
pub mod unit_of_work;
