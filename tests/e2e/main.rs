//! End-to-end tests: a real `host` process, real components, real SQLite and PostgreSQL
//! databases.
//!
//! Each test starts its own host on a fresh temporary directory, database and free port, so
//! the tests run in parallel. The fixture components (the example plugins and
//! `tests/plugins/*`) are built once per run by [`harness`]. Every test of what the store
//! guarantees is declared with [`on_every_backend!`] and runs twice, on SQLite and on
//! PostgreSQL; the tests of loading, the sandbox and hot reload do not depend on the store and
//! run on SQLite. One file per guarantee:
//!
//! - `demo`: the order flow of the README across three plugins.
//! - `cli`: `host send` beside a running host shares its database and idempotency keys.
//! - `commands`: how a command's failures answer, and that a failed unit of work writes nothing.
//! - `idempotency`: keys replay the first answer and never run a handler twice.
//! - `traps`: a trapping handler is classified, leaves nothing behind, and the host serves on.
//! - `dlq`: retries end in the dead-letter queue, without touching other subscribers; replay.
//! - `crash`: `kill -9` right after an answer loses neither the command nor its events.
//! - `redelivery`: a delivery run twice at once has its effects committed once.
//! - `loading`: broken and conflicting components are reported, the rest load.
//! - `policy_config`: the host config file: errors name the key; `--print-config`.
//! - `plugin_limits`: a plugin's own deadline and memory cap from `host.toml`.
//! - `ordering`: `strict` holds a failing key back (only that key); `skip` parks and moves on.
//! - `bus_lifecycle`: DLQ filters, show, stats, replay (all, dry run), purge with `--force`.
//! - `faults`: `HOST_FAULT` crash points before/after commit and after a subscriber's effects.
//! - `group_commit`: commands answered under concurrent load survive `kill -9` (durable before answered).
//! - `bench_smoke`: `host bench --quick` produces every figure (no speed asserted).
//! - `lifetimes`: idempotency TTL per command kind; retention of delivered rows.
//! - `hot_key`: a backlog of one key runs in runs committed together, in order, exactly once;
//!   a failure ends its run and holds the rest back.
//! - `crash_loop`: `kill -9` at random instants under load; exactly once, in order, nothing lost.
//! - `hot_reload`: a plugin replaced 20 times under load (and once by a broken build): nothing
//!   lost or repeated, each message handled by one build; removal and return; kind conflicts.
//! - `contract`: a component built against contract 0.1.0 runs unchanged; scheduled events
//!   wait for their time across a restart; payload schemas refuse what does not match.
//! - `component_cache`: a warm restart compiles nothing; a corrupt cache entry is rebuilt.
//! - `c_plugins`: C plugins built from source: a subscriber counts orders; the whole envelope,
//!   emit options and JSON state through the C SDK; errors, a trap and dead letters as in Rust.
//! - `polyglot`: Rust, Python and JavaScript plugins in one host: events flow between them, and
//!   a retryable failure in each language is retried, dead-lettered and replayed alike.
//! - `database_failure`: SQLite on a full disk, PostgreSQL stopped and started: 503 with the
//!   cause, `/ready` says so, the log says it once, nothing acknowledged is lost, all resumes.
//! - `scale_out`: three hosts on one PostgreSQL database under load: `kill -9` twice, a
//!   replacement, a SIGTERM, a host paused past its leases; nothing lost, repeated or reordered.
//!   `bus partitions` shows the count and changes it only while no host runs.
//! - `metrics`: `GET /metrics` passes `promtool check metrics`; commands, retries and dead
//!   letters are counted with their outcome and class; the backlog gauges follow a replay.
//! - `trace`: `host trace` shows one order's causal tree, found by the answered correlation id
//!   or any message id, a dead letter with its class and error.
//! - `flush`: with `--no-dispatch`, `host bus flush` (dry and real) runs what is due in order;
//!   `host bus health --detailed`; `host bus replay ID --force` runs a done delivery again.
//! - `admin_api`: the `host bus` operations and `host trace` over HTTP behind the admin token,
//!   checked against the database.
//! - `bus_via_host`: `host bus` and `host trace` beside a running host go through its admin
//!   API (its plugins run the flush); the database when the token is missing or the host is
//!   stopped or killed; `bus metrics --reset`.
//! - `logs`: `--log-format json`: every line is JSON; lines about a message (the guest's own
//!   included) carry its ids in `span`.
//! - `otlp`: `--otlp-endpoint`: command and delivery spans with their ids reach an OTLP/HTTP
//!   receiver run by the test.
//! - `envelope`: tenant, actor and correlation id given at the ingress reach subscribers in
//!   Python, JavaScript and Rust down a three-link chain, each seeing its cause.
//! - `dev_loop`: `host new` then `host dev`: the new plugin serves, edits go live, a broken
//!   edit keeps the last good version.
//! - `dev_runtime`: `host dev` runs Python sources on the development runtime with no build,
//!   granting only their folder, read-only; a module it lacks is named; JavaScript saves are
//!   only bundled, and a bug while evaluating the bundle is named; `host run` never does.
//! - `backpressure`: past `--max-due` due deliveries commands answer 503 with `Retry-After`,
//!   `/ready` and `/metrics` say so, and an over-rate load levels off at the bound; drained to
//!   the resume mark, commands are accepted again, and nothing accepted is lost.
//! - `readme`: the README's walk through the demo, run a line at a time with a reader's pauses;
//!   every answer it shows is what the line printed.

/// Declares a test that runs twice: `NAME::sqlite` and `NAME::postgres`, every host it
/// starts on that backend (see [`harness::with_backend`]).
macro_rules! on_every_backend {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run() $body

            #[test]
            fn sqlite() {
                $crate::harness::with_backend($crate::harness::Backend::Sqlite, run);
            }

            #[test]
            fn postgres() {
                $crate::harness::with_backend($crate::harness::Backend::Postgres, run);
            }
        }
    };
}

mod harness;
mod ledger;

mod admin_api;
mod backpressure;
mod bench_smoke;
mod bus_lifecycle;
mod bus_via_host;
mod c_plugins;
mod cli;
mod commands;
mod component_cache;
mod contract;
mod crash;
mod crash_loop;
mod database_failure;
mod demo;
mod dev_loop;
mod dev_runtime;
mod dlq;
mod envelope;
mod faults;
mod flush;
mod group_commit;
mod hostile;
mod hot_key;
mod hot_reload;
mod idempotency;
mod lifetimes;
mod loading;
mod logs;
mod loop_guard;
mod metrics;
mod ordering;
mod otlp;
mod plugin_limits;
mod policy_config;
mod polyglot;
mod readme;
mod redelivery;
mod scale_out;
mod shutdown;
mod trace;
mod traps;
