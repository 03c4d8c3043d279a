//! The baselines: what the same machine does without the host. **B0** raw SQLite
//! single-row transactions, **B0-pg** the same on PostgreSQL from many connections, **B2**
//! the storage work of a unit of work group-committed by hand, **B1** raw wasmtime.

use crate::pipeline::StoreKind;
use crate::report::{Run, percentiles_us};
use crate::{Bench, PLUGIN, RAW_BATCH};
use anyhow::Context;
use handler_host::store::{Store, now_ms};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::time::{Duration, Instant};

impl Bench {
    /// B0: one connection, one row per transaction, as fast as the disk commits.
    pub(crate) async fn raw_sqlite(
        &self,
        run: usize,
        sync: SqliteSynchronous,
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let path = self.scratch.join(format!("raw-{sync:?}-{run}.db"));
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .connect()
            .await?;
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .execute(&mut conn)
            .await?;
        let start = Instant::now();
        let mut count = 0u64;
        while start.elapsed() < duration {
            sqlx::query("INSERT INTO t (v) VALUES (?)")
                .bind(&[7u8; 16][..])
                .execute(&mut conn)
                .await?;
            count += 1;
        }
        let per_second = count as f64 / start.elapsed().as_secs_f64();
        conn.close().await?;
        Ok(Run {
            value: per_second,
            detail: vec![],
        })
    }

    /// B0-pg: one connection per concurrent caller, each inserting one row per transaction.
    pub(crate) async fn raw_postgres(&self, run: usize, duration: Duration) -> anyhow::Result<Run> {
        let url = self.database_url(StoreKind::Postgres, "raw", run);
        // Opening a store creates the database; the raw table lives beside the host's.
        let store = Store::open(&url)
            .await
            .context("the PostgreSQL figures need a server: pass --postgres-url, or --no-postgres to leave them out")?;
        store.close().await;
        self.postgres_databases.lock().unwrap().push(url.clone());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.args.concurrency as u32)
            .connect(&url)
            .await?;
        sqlx::query("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v BYTEA NOT NULL)")
            .execute(&pool)
            .await?;
        let deadline = Instant::now() + duration;
        let start = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.args.concurrency {
            let pool = pool.clone();
            workers.spawn(async move {
                let mut conn = pool.acquire().await?;
                let mut count = 0u64;
                while Instant::now() < deadline {
                    sqlx::query("INSERT INTO t (v) VALUES ($1)")
                        .bind(&[7u8; 16][..])
                        .execute(&mut *conn)
                        .await?;
                    count += 1;
                }
                anyhow::Ok(count)
            });
        }
        let mut total = 0;
        while let Some(count) = workers.join_next().await {
            total += count??;
        }
        let per_second = total as f64 / start.elapsed().as_secs_f64();
        pool.close().await;
        Ok(Run {
            value: per_second,
            detail: vec![],
        })
    }

    /// B2: the storage work of `bench.touch` units (read a version, upsert the key, insert a
    /// message and its delivery), `RAW_BATCH` to a transaction, on the host's own schema, with
    /// prepared statements on one synchronous connection: the fastest honest way to do it.
    pub(crate) async fn raw_group_commit(
        &self,
        run: usize,
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let path = self.scratch.join(format!("raw-batch-{run}.db"));
        let store = Store::open(&format!("sqlite://{}", path.display())).await?;
        store.close().await;
        tokio::task::spawn_blocking(move || raw_group_commit(&path, duration)).await?
    }

    /// B1: the same engine instantiating and calling a component that does nothing.
    pub(crate) async fn raw_wasmtime(&self, iterations: usize) -> anyhow::Result<Run> {
        const EMPTY: &str = r#"(component
            (core module $m (func (export "run")))
            (core instance $i (instantiate $m))
            (func (export "run") (canon lift (core func $i "run"))))"#;
        let engine = self.sandbox.engine();
        let component =
            wasmtime::component::Component::new(engine, EMPTY).map_err(anyhow::Error::from)?;
        let linker = wasmtime::component::Linker::<()>::new(engine);
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)?;
        let mut timings = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            let mut store = wasmtime::Store::new(engine, ());
            store.set_epoch_deadline(1000);
            store.epoch_deadline_trap();
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(anyhow::Error::from)?;
            let run = instance
                .get_typed_func::<(), ()>(&mut store, "run")
                .map_err(anyhow::Error::from)?;
            run.call_async(&mut store, ())
                .await
                .map_err(anyhow::Error::from)?;
            timings.push(start.elapsed());
        }
        Ok(percentiles_us(timings))
    }
}

pub(crate) fn raw_group_commit(path: &std::path::Path, duration: Duration) -> anyhow::Result<Run> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let start = Instant::now();
    let mut units = 0u64;
    while start.elapsed() < duration {
        let tx = conn.transaction()?;
        {
            let mut read =
                tx.prepare_cached("SELECT version FROM state WHERE plugin = ?1 AND key = ?2")?;
            let mut write = tx.prepare_cached(
                "INSERT INTO state (plugin, key, value, version) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, version = excluded.version",
            )?;
            let mut message = tx.prepare_cached(
                "INSERT INTO messages (id, kind, partition_key, correlation_id, schema_version,
                                       occurred_at_ms, headers, payload, emitted_by)
                 VALUES (?1, 'bench.touched', ?2, ?1, 1, ?3, '[]', ?4, 'bench-trivial') RETURNING seq",
            )?;
            let mut delivery = tx.prepare_cached(
                "INSERT INTO deliveries (message_seq, subscriber, partition_key, status, next_attempt_at_ms)
                 VALUES (?1, 'bench-trivial', ?2, 'pending', ?3)",
            )?;
            for _ in 0..RAW_BATCH {
                let key = format!("k{units}");
                let version: i64 = read
                    .query_row(rusqlite::params![PLUGIN, key], |row| row.get(0))
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(0),
                        e => Err(e),
                    })?;
                write.execute(rusqlite::params![PLUGIN, key, b"{\"n\":1}", version + 1])?;
                let id = uuid::Uuid::now_v7().to_string();
                let now = now_ms();
                let payload = format!("{{\"key\":\"{key}\"}}");
                let seq: i64 = message
                    .query_row(rusqlite::params![id, key, now, payload.as_bytes()], |row| {
                        row.get(0)
                    })?;
                delivery.execute(rusqlite::params![seq, key, now])?;
                units += 1;
            }
        }
        tx.commit()?;
    }
    Ok(Run {
        value: units as f64 / start.elapsed().as_secs_f64(),
        detail: vec![],
    })
}
