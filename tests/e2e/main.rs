//! End-to-end tests: a real `host` process, real components, real SQLite databases.
//!
//! Each test starts its own host on a fresh temporary directory and a free port, so the tests
//! run in parallel. The fixture components (the example plugins and `tests/plugins/*`) are
//! built once per run by [`harness`]. One file per guarantee:
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

mod harness;

mod cli;
mod commands;
mod crash;
mod demo;
mod dlq;
mod idempotency;
mod loading;
mod redelivery;
mod traps;
