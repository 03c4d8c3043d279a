//! The dispatcher's scan as PostgreSQL plans and runs it: along the pending indexes, stopping
//! at its limit, whatever the statistics, and never reading a delivery that is not due.

use super::*;
use crate::store::Backend;
use crate::store::test_support::TestDb;

/// Writes `count` messages of kind `kind` for subscriber `sub`, each on its own key, with a
/// pending delivery due at `due` (waiting when `waiting`), straight into the tables.
async fn deliveries(store: &PgStore, kind: &str, count: i64, due: i64, waiting: bool) {
    sqlx::query(
        "INSERT INTO messages (id, kind, partition_key, correlation_id, schema_version,
                               occurred_at_ms, headers, payload, emitted_by)
         SELECT $1 || g, $1, $1 || g, 'c' || g, 1, 0, '[]', '\\x7b7d', 'sub'
         FROM generate_series(1, $2) g",
    )
    .bind(kind)
    .bind(count)
    .execute(&store.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO deliveries (message_seq, subscriber, partition_key, status,
                                 next_attempt_at_ms, waiting, partition_hash)
         SELECT seq, 'sub', partition_key, 'pending', $2, $3, partition_hash('sub', partition_key)
         FROM messages WHERE kind = $1",
    )
    .bind(kind)
    .bind(due)
    .bind(i32::from(waiting))
    .execute(&store.pool)
    .await
    .unwrap();
}

/// The scan's plan, run (`ANALYZE`) when `analyze`, with a limit of 64.
async fn plan(store: &PgStore, analyze: bool) -> String {
    let explain = if analyze {
        "EXPLAIN ANALYZE"
    } else {
        "EXPLAIN"
    };
    let plan: Vec<String> = sqlx::query_scalar(&format!("{explain} {DUE}"))
        .bind(now_ms())
        .bind(vec!["sub".to_owned()])
        .bind(Vec::<String>::new())
        .bind(64_i64)
        .bind(Vec::<i64>::new())
        .bind(1_i64)
        .bind(vec![0_i64])
        .fetch_all(&store.scans)
        .await
        .unwrap();
    plan.join("\n")
}

fn postgres(db: &TestDb) -> &PgStore {
    let Backend::Postgres(store) = &db.store.backend else {
        unreachable!("a PostgreSQL test database")
    };
    store
}

/// Right after a burst of deliveries, before autovacuum analyses the table, the scan still
/// walks the pending indexes and stops at its limit, instead of reading every pending row
/// (through a bitmap, or the whole table) and sorting them; only the at most twice 64 rows
/// the two walks return are sorted.
// Multi-threaded: dropping the test database closes its pools from another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_walks_the_pending_indexes_before_the_table_is_analysed() {
    let db = TestDb::postgres().await;
    let store = postgres(&db);
    deliveries(store, "burst", 5000, 0, false).await;
    let plan = plan(store, false).await;
    assert!(
        plan.contains("Index Scan using deliveries_ready_by_seq")
            && plan.contains("Index Scan using deliveries_waiting")
            && !plan.contains("Seq Scan on deliveries")
            && !plan.contains("Bitmap")
            && plan.matches("Sort  (").count() <= 1,
        "the scan's plan:\n{plan}"
    );
}

/// A backlog scheduled an hour ahead is never read by a scan: both walks of the scan return
/// only the due deliveries, and no row is read and filtered out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backlog_is_never_read_by_a_scan() {
    let db = TestDb::postgres().await;
    let store = postgres(&db);
    let hour = 3_600_000;
    deliveries(store, "later", 3000, now_ms() + hour, true).await;
    deliveries(store, "now", 5, 0, false).await;
    deliveries(store, "retry", 3, 0, true).await;
    let plan = plan(store, true).await;
    let rows_of = |index: &str| -> Vec<i64> {
        plan.lines()
            .filter(|line| line.contains(&format!("Index Scan using {index}")))
            .map(|line| {
                let rows = line
                    .split("rows=")
                    .nth(2)
                    .unwrap_or_else(|| panic!("{line}"));
                rows.split(' ').next().unwrap().parse().unwrap()
            })
            .collect()
    };
    assert_eq!(rows_of("deliveries_ready_by_seq"), [5], "{plan}");
    assert_eq!(rows_of("deliveries_waiting"), [3], "{plan}");
    assert!(!plan.contains("Rows Removed by Filter"), "{plan}");
}
