//! Every figure, in the order of the report: what it measures, under which conditions, and
//! the measurement that gives it.

use crate::pipeline::{Route, StoreKind};
use crate::report::Table;
use crate::sandbox::{DEV_SAVES, LANGUAGES, Language};
use crate::{Bench, KEPT_CALLS, PLUGIN, RAW_BATCH};
use handler_host::config::{DispatchConfig, Limits};
use handler_host::plugin_dir::{self, BuildPolicy, PluginDir};
use handler_host::sandbox::{Compiler, Sandbox};
use sqlx::sqlite::SqliteSynchronous;
use std::time::Duration;

/// Measures every figure `--only` names (all of them without it) into `table`.
pub(crate) async fn measure_all(bench: &Bench, table: &mut Table) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(bench.args.seconds);

    bench
        .measure(
            table,
            "B0-FULL",
            "raw SQLite single-row transactions",
            "tx/s",
            "WAL, synchronous=FULL, 1 connection, 16-byte rows",
            |i| bench.raw_sqlite(i, SqliteSynchronous::Full, duration),
        )
        .await?;
    bench
        .measure(
            table,
            "B0-NORMAL",
            "raw SQLite single-row transactions",
            "tx/s",
            "WAL, synchronous=NORMAL, 1 connection, 16-byte rows",
            |i| bench.raw_sqlite(i, SqliteSynchronous::Normal, duration),
        )
        .await?;
    let iterations = if bench.args.quick { 200 } else { 20_000 };
    bench
        .measure(
            table,
            "B1",
            "raw wasmtime instantiate + call, empty component (p50)",
            "µs",
            &format!("pooling allocator, epoch deadline, {iterations} calls"),
            |_| bench.raw_wasmtime(iterations),
        )
        .await?;
    bench
        .measure(
            table,
            "P1",
            "durable commands/s, WASM handler, in-process",
            "cmd/s",
            &bench.command_conditions(),
            |i| bench.commands(i, duration, Route::InProcess),
        )
        .await?;
    bench
        .measure(
            table,
            "P1-kept",
            "durable commands/s, WASM handler, in-process, instances kept",
            "cmd/s",
            &format!(
                "{}; `calls_per_instance = {KEPT_CALLS}`",
                bench.command_conditions()
            ),
            |i| bench.commands(i, duration, Route::Kept),
        )
        .await?;
    bench
        .measure(
            table,
            "P1-HTTP",
            "durable commands/s, WASM handler, over HTTP",
            "cmd/s",
            &bench.command_conditions(),
            |i| bench.commands(i, duration, Route::Http),
        )
        .await?;
    bench
        .measure(
            table,
            "P2-native",
            "durable commands/s, native handler, in-process",
            "cmd/s",
            &bench.command_conditions(),
            |i| bench.commands(i, duration, Route::Native),
        )
        .await?;
    bench
        .measure(
            table,
            "P3",
            "fresh-store invoke of the trivial handler (p50)",
            "µs",
            &format!("`bench.noop`, no state, {iterations} calls"),
            |_| bench.invoke(iterations),
        )
        .await?;
    let backlog = if bench.args.quick { 200 } else { 20_000 };
    bench
        .measure(
            table,
            "P4-backlog",
            "events delivered/s from a pre-filled backlog",
            "ev/s",
            &format!(
                "{backlog} events, 1 subscriber, inbox mark per event, dispatcher concurrency {}",
                DispatchConfig::DEFAULT.concurrency
            ),
            |i| bench.event_backlog(i, backlog, StoreKind::Sqlite, 1),
        )
        .await?;
    bench
        .measure(
            table,
            "H1",
            "events delivered/s from a pre-filled backlog on one partition key (a hot key), strict order",
            "ev/s",
            &format!(
                "{backlog} events on one partition key, numbered in commit order, 1 subscriber, strict ordering; the subscriber's state checked after the drain: each handled once, in order"
            ),
            |i| bench.hot_key_backlog(i, backlog),
        )
        .await?;
    let scheduled = if bench.args.quick { 1_000 } else { 100_000 };
    bench
        .measure(
            table,
            "P4-sched",
            "events delivered/s from a pre-filled backlog, other deliveries scheduled an hour ahead",
            "ev/s",
            &format!(
                "as P4-backlog, behind {scheduled} deliveries to the same subscriber (a key each) committed first and due an hour later"
            ),
            |i| bench.scheduled_backlog(i, backlog, scheduled),
        )
        .await?;
    bench
        .measure(
            table,
            "P4-stream",
            "events delivered/s while commands stream in",
            "ev/s",
            &bench.command_conditions(),
            |i| bench.event_stream(i, duration),
        )
        .await?;
    bench
        .measure(
            table,
            "B2",
        "storage limit: the row writes of `bench.touch`, group-committed",
        "units/s",
        &format!(
            "SQLite WAL synchronous=FULL, {RAW_BATCH} units a transaction, prepared statements, 1 connection, no WASM/async"
        ),
            |i| bench.raw_group_commit(i, duration),
        )
        .await?;
    if bench.args.no_postgres {
        tracing::warn!("--no-postgres: the PostgreSQL figures are left out");
    } else {
        bench
            .measure(
                table,
                "B0-pg",
            "raw PostgreSQL single-row transactions",
            "tx/s",
            &format!(
                "{} connections (as pgbench would), autocommit INSERT of 16-byte rows, server defaults",
                bench.args.concurrency
            ),
                |i| bench.raw_postgres(i, duration),
            )
            .await?;
        bench
            .measure(
                table,
                "P1-pg",
                "durable commands/s, WASM handler, in-process, PostgreSQL",
                "cmd/s",
                &bench.command_conditions(),
                |i| bench.commands(i, duration, Route::Postgres),
            )
            .await?;
        bench
            .measure(
                table,
                "P4-pg",
                "events delivered/s from a pre-filled backlog, PostgreSQL",
                "ev/s",
                &format!("{backlog} events, 1 subscriber, inbox mark per event"),
                |i| bench.event_backlog(i, backlog, StoreKind::Postgres, 1),
            )
            .await?;
        bench
            .measure(
                table,
                "P1-pg-3",
            "durable commands/s, WASM handler, PostgreSQL, 3 hosts",
            "cmd/s",
            "as P1-pg, the callers spread over 3 hosts (executor, committer, pool each) in one process",
                |i| bench.commands_on_hosts(i, duration, Route::Postgres, 3),
            )
            .await?;
        bench
            .measure(
                table,
                "P4-pg-3",
                "events delivered/s from a pre-filled backlog, PostgreSQL, 3 hosts",
                "ev/s",
                "as P4-pg, 3 hosts in one process sharing the partitions by lease",
                |i| bench.event_backlog(i, backlog, StoreKind::Postgres, 3),
            )
            .await?;
    }
    // P1 is measured whenever P5 is (see `with_dependencies`).
    if let Some(p1) = table.median("P1") {
        let rate = p1 / 2.0;
        bench
            .measure(
                table,
                "P5",
                "command latency at 50% of P1 (p50)",
                "ms",
                &format!("open loop at {rate:.0} cmd/s, dispatcher running"),
                |i| bench.latency(i, duration, rate),
            )
            .await?;
    }
    // P1 and P1-pg are measured whenever S1 and S1-pg are (see `with_dependencies`).
    for (id, what, ceiling_id, kind) in [
        (
            "S1",
            "highest open-loop command rate with fewer than 1 000 deliveries pending (1 subscriber)",
            "P1",
            StoreKind::Sqlite,
        ),
        (
            "S1-pg",
            "highest open-loop command rate with fewer than 1 000 deliveries pending (1 subscriber), PostgreSQL",
            "P1-pg",
            StoreKind::Postgres,
        ),
    ] {
        if let Some(ceiling) = table.median(ceiling_id) {
            bench
                .measure(
                    table,
                    id,
                    what,
                    "cmd/s",
                    &bench.saturation_conditions(ceiling_id, ceiling),
                    |i| bench.saturation(i, kind, ceiling),
                )
                .await?;
        }
    }
    let swaps = if bench.args.quick { 3 } else { 20 };
    for (id, what, compiler) in [
        (
            "R1",
            "hot reload (host dev): component file renamed into place → new version serving (p50)",
            Compiler::Winch,
        ),
        (
            "R1-run",
            "hot reload (host run --watch): the same, compiled by Cranelift (p50)",
            Compiler::Cranelift,
        ),
    ] {
        bench
            .measure(
                table,
                id,
                what,
                "ms",
                &format!(
                    "{swaps} swaps of `{PLUGIN}` (a new build each: compiled by {}, no cache), watcher settle {} ms",
                    compiler.as_str(),
                    plugin_dir::SETTLE.as_millis()
                ),
                |i| bench.hot_reload(i, swaps, compiler),
            )
            .await?;
    }
    for save in DEV_SAVES.iter().filter(|save| bench.wants(save.id)) {
        let saves = if bench.args.quick { 3 } else { 20 };
        let conditions = format!(
            "{saves} saves of the {} example on its development runtime (no component build; runtime kept compiled), watcher settle {} ms",
            save.language,
            plugin_dir::SETTLE.as_millis()
        );
        bench
            .measure(table, save.id, save.what, "ms", &conditions, |i| {
                bench.dev_save(save, i, saves)
            })
            .await?;
    }
    if bench.wants("P8") {
        let plugins = bench.cold_start_plugins().await?;
        let starts = if bench.args.quick { 2 } else { 10 };
        bench
            .measure(
                table,
                "P8",
                "cold start: `host run` process start → serving, compiled components cached (p50)",
                "ms",
                &format!(
                    "{} plugins ({}), a fresh SQLite database each start, {starts} starts",
                    plugins.names.len(),
                    plugins.names.join(", ")
                ),
                |i| bench.cold_start(&plugins.folder, i, starts),
            )
            .await?;
    }
    let languages: Vec<&Language> = LANGUAGES.iter().filter(|l| bench.wants(l.id)).collect();
    if !languages.is_empty() {
        let (_, examples) = PluginDir::load(
            &bench.sandbox,
            &bench.args.examples,
            BuildPolicy::BuildStale,
        )
        .await?;
        // The same examples again, each instance serving up to KEPT_CALLS calls.
        let keeping = Sandbox::new(Limits {
            calls_per_instance: KEPT_CALLS,
            ..Limits::DEFAULT
        })?;
        let (_, kept) =
            PluginDir::load(&keeping, &bench.args.examples, BuildPolicy::LoadOnly).await?;
        for language in languages {
            if examples.plugin(language.plugin).is_none() {
                tracing::warn!(
                    "the {} example `{}` did not load from {}: its figure is left out",
                    language.language,
                    language.plugin,
                    bench.args.examples.display()
                );
                continue;
            }
            bench
                .measure(
                    table,
                    language.id,
                    language.what,
                    "µs",
                    &format!(
                        "`{}` `{}` {}, fresh instance per call ({KEPT_CALLS} calls an instance for the kept figure), {} calls",
                        language.plugin,
                        language.command,
                        language.payload,
                        iterations / 10
                    ),
                    |_| bench.language_invoke([&examples, &kept], language, iterations / 10),
                )
                .await?;
        }
    }
    Ok(())
}
