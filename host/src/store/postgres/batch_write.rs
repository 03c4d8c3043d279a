//! One batch of units of work on PostgreSQL: the keys it writes locked and their versions
//! read in one query, then state, messages, deliveries and idempotency records written with a
//! fixed handful of multi-row statements, whatever the batch's size.

use super::*;

pub(super) async fn apply_once(
    conn: &mut PgConnection,
    batch: &[Write],
) -> anyhow::Result<Vec<Applied>> {
    let mut tx = conn.begin().await.context("BEGIN")?;
    let now = now_ms();
    let lookups = Lookups::of(batch);
    let snapshot = lock_and_read(&mut tx, &lookups, now).await?;
    let plan = batch::plan(batch, snapshot, now);
    write_plan(&mut tx, &plan, now).await?;
    // Other hosts need waking only for new deliveries: a finished or retried one changes
    // nothing they could claim (a retry is this host's to run, at its time).
    if plan.adds_deliveries() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(COMMIT_CHANNEL)
            .execute(&mut *tx)
            .await
            .context("NOTIFY")?;
    }
    fault::hit(FaultPoint::BeforeCommit);
    tx.commit().await.context("COMMIT")?;
    fault::hit(FaultPoint::AfterCommit);
    Ok(plan.results)
}

/// Locks what `lookups` names and reads it, one statement per list.
async fn lock_and_read(
    conn: &mut PgConnection,
    lookups: &Lookups<'_>,
    now: i64,
) -> anyhow::Result<Snapshot> {
    let mut locks: Vec<i64> = lookups
        .state_keys
        .iter()
        .map(|(plugin, key)| lock_id("state", &[plugin, key]))
        .chain(
            lookups
                .idempotency_keys
                .iter()
                .map(|key| lock_id("idempotency", &[key])),
        )
        .collect();
    locks.sort_unstable();
    locks.dedup();
    if !locks.is_empty() {
        // Taken in array order, which is sorted: every host locks in the same order.
        sqlx::query("SELECT pg_advisory_xact_lock(id) FROM UNNEST($1::bigint[]) AS id")
            .bind(&locks)
            .execute(&mut *conn)
            .await
            .context("locking the keys the batch touches")?;
    }
    let mut snapshot = Snapshot::default();
    if !lookups.state_keys.is_empty() {
        let (plugins, keys): (Vec<&str>, Vec<&str>) = lookups.state_keys.iter().copied().unzip();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT s.plugin, s.key, s.version
             FROM UNNEST($1::text[], $2::text[]) AS t(plugin, key)
             JOIN state s ON s.plugin = t.plugin AND s.key = t.key",
        )
        .bind(&plugins)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .context("reading the versions of the keys the batch touches")?;
        snapshot.set_versions(rows);
    }
    if !lookups.idempotency_keys.is_empty() {
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM idempotency WHERE key = ANY($1) AND expires_at_ms > $2",
        )
        .bind(&lookups.idempotency_keys)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .context("reading the batch's idempotency keys")?;
        snapshot.live_idempotency_keys = live.into_iter().collect();
    }
    if !lookups.lease_epochs.is_empty() {
        // FOR SHARE: a takeover of one of these leases waits until this batch commits, so a
        // delivery's outcome is recorded either before another host owns its partition or
        // not at all.
        let live: Vec<i64> = sqlx::query_scalar(
            "SELECT epoch FROM partition_leases WHERE epoch = ANY($1)
             ORDER BY partition FOR SHARE",
        )
        .bind(&lookups.lease_epochs)
        .fetch_all(&mut *conn)
        .await
        .context("checking the partition leases of the deliveries the batch finishes")?;
        snapshot.live_leases = live.into_iter().collect();
    }
    if !lookups.delivery_ids.is_empty() {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, status, attempts FROM deliveries WHERE id = ANY($1)
             ORDER BY id FOR UPDATE",
        )
        .bind(&lookups.delivery_ids)
        .fetch_all(&mut *conn)
        .await
        .context("reading the deliveries the batch finishes")?;
        snapshot.set_deliveries(rows);
    }
    Ok(snapshot)
}

/// Writes `plan`: one statement per table it touches (messages and their deliveries in one).
async fn write_plan(conn: &mut PgConnection, plan: &Plan<'_>, now: i64) -> anyhow::Result<()> {
    if !plan.state.is_empty() {
        let plugins: Vec<&str> = plan.state.iter().map(|r| r.plugin).collect();
        let keys: Vec<&str> = plan.state.iter().map(|r| r.key).collect();
        let values: Vec<Option<&[u8]>> = plan.state.iter().map(|r| r.value).collect();
        let versions: Vec<i64> = plan.state.iter().map(|r| r.version).collect();
        sqlx::query(
            "INSERT INTO state (plugin, key, value, version)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::bigint[])
             ON CONFLICT (plugin, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version",
        )
        .bind(&plugins)
        .bind(&keys)
        .bind(&values)
        .bind(&versions)
        .execute(&mut *conn)
        .await
        .context("writing state")?;
    }
    if !plan.idempotency.is_empty() {
        let records = &plan.idempotency;
        let (statuses, bodies): (Vec<i64>, Vec<_>) =
            records.iter().map(|r| r.outcome.to_row()).unzip();
        sqlx::query(
            "INSERT INTO idempotency
               (key, command_kind, request_hash, status, body, created_at_ms, expires_at_ms)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[],
                                  $6::bigint[], $7::bigint[])
             ON CONFLICT (key) DO UPDATE SET
               command_kind = EXCLUDED.command_kind, request_hash = EXCLUDED.request_hash,
               status = EXCLUDED.status, body = EXCLUDED.body,
               created_at_ms = EXCLUDED.created_at_ms, expires_at_ms = EXCLUDED.expires_at_ms",
        )
        .bind(records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
        .bind(
            records
                .iter()
                .map(|r| r.command_kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            records
                .iter()
                .map(|r| r.request_hash.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(statuses)
        .bind(
            bodies
                .iter()
                .map(|body| body.as_ref())
                .collect::<Vec<&[u8]>>(),
        )
        .bind(records.iter().map(|r| r.created_at_ms).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.expires_at_ms).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .context("writing idempotency records")?;
    }
    if !plan.messages.is_empty() {
        write_messages(conn, plan, now).await?;
    }
    if !plan.failures.is_empty() {
        let failures = &plan.failures;
        sqlx::query(
            "UPDATE deliveries d
             SET status = t.status, attempts = t.attempts, next_attempt_at_ms = t.next_at,
                 waiting = CASE WHEN t.status = 'pending' THEN 1 ELSE 0 END,
                 last_error = t.last_error, error_class = t.error_class,
                 first_failed_at_ms = COALESCE(d.first_failed_at_ms, $8),
                 last_failed_at_ms = $8, handled_by = t.handled_by, lease_epoch = t.lease
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                         $6::text[], $7::text[], $9::bigint[])
                  AS t(id, status, attempts, next_at, last_error, error_class, handled_by, lease)
             WHERE d.id = t.id",
        )
        .bind(failures.iter().map(|f| f.delivery_id).collect::<Vec<_>>())
        .bind(
            failures
                .iter()
                .map(|f| if f.dead { "dead" } else { "pending" })
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| i64::from(f.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| f.next_attempt_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| f.failure.message.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            failures
                .iter()
                .map(|f| f.failure.class.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(failures.iter().map(|f| f.handled_by).collect::<Vec<_>>())
        .bind(now)
        .bind(failures.iter().map(|f| f.lease).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .context("recording failed deliveries")?;
    }
    if !plan.done.is_empty() {
        let done = &plan.done;
        sqlx::query(
            "UPDATE deliveries d
             SET status = 'done', attempts = t.attempts, handled_by = t.handled_by,
                 completed_at_ms = $4, lease_epoch = t.lease
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $5::bigint[])
                  AS t(id, attempts, handled_by, lease)
             WHERE d.id = t.id",
        )
        .bind(done.iter().map(|d| d.delivery_id).collect::<Vec<_>>())
        .bind(
            done.iter()
                .map(|d| i64::from(d.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(done.iter().map(|d| d.handled_by).collect::<Vec<_>>())
        .bind(now)
        .bind(done.iter().map(|d| d.lease).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .context("marking deliveries done")?;
    }
    Ok(())
}

/// The outbox rows and their delivery rows, in one statement: messages are numbered in array
/// order (commit order), and each delivery joins the message it belongs to by id.
async fn write_messages(conn: &mut PgConnection, plan: &Plan<'_>, now: i64) -> anyhow::Result<()> {
    let messages = &plan.messages;
    let headers = messages
        .iter()
        .map(|m| serde_json::to_string(&m.message.headers))
        .collect::<Result<Vec<_>, _>>()?;
    let mut delivery_messages = Vec::new();
    let mut subscribers = Vec::new();
    let mut due = Vec::new();
    for m in messages.iter() {
        for subscriber in &m.subscribers {
            delivery_messages.push(m.message.id.as_str());
            subscribers.push(subscriber.as_str());
            due.push(m.deliver_at_ms.unwrap_or(now));
        }
    }
    sqlx::query(
        "WITH m AS (
           INSERT INTO messages (id, kind, partition_key, tenant_id, correlation_id, causation_id,
                                 actor, schema_version, occurred_at_ms, headers, payload, emitted_by,
                                 depth)
           SELECT id, kind, partition_key, tenant_id, correlation_id, causation_id, actor,
                  schema_version, occurred_at_ms, headers, payload, emitted_by, depth
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::bytea[], $12::text[],
                       $16::bigint[])
                WITH ORDINALITY
                AS t(id, kind, partition_key, tenant_id, correlation_id, causation_id, actor,
                     schema_version, occurred_at_ms, headers, payload, emitted_by, depth, n)
           ORDER BY n
           RETURNING seq, id, partition_key)
         INSERT INTO deliveries (message_seq, subscriber, partition_key, status, next_attempt_at_ms,
                                 waiting, partition_hash)
         SELECT m.seq, s.subscriber, m.partition_key, 'pending', s.due,
                CASE WHEN s.due > $17 THEN 1 ELSE 0 END,
                partition_hash(s.subscriber, COALESCE(m.partition_key, m.id))
         FROM UNNEST($13::text[], $14::text[], $15::bigint[]) WITH ORDINALITY
              AS s(message_id, subscriber, due, n)
         JOIN m ON m.id = s.message_id
         ORDER BY s.n",
    )
    .bind(messages.iter().map(|m| m.message.id.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.message.kind.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.message.partition_key.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.message.tenant_id.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.message.correlation_id.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.message.causation_id.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.message.actor.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| i64::from(m.message.schema_version)).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.message.occurred_at_ms).collect::<Vec<_>>())
    .bind(&headers)
    .bind(messages.iter().map(|m| m.message.payload.as_slice()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.emitted_by.as_str()).collect::<Vec<_>>())
    .bind(&delivery_messages)
    .bind(&subscribers)
    .bind(&due)
    .bind(messages.iter().map(|m| i64::from(m.message.depth)).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut *conn)
    .await
    .context("writing messages and deliveries")?;
    Ok(())
}
