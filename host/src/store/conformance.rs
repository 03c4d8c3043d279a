//! The store's conformance suite: every test runs on SQLite and on PostgreSQL (a fresh
//! database each), so the two backends keep the same semantics.

use super::test_support::{event, every_partition, idempotency_record, on_every_backend};
use super::*;
use crate::error::{ErrorClass, HandlerFailure};

on_every_backend!(
    a_stale_read_conflicts_alone_and_the_rest_of_the_batch_commits,
    a_delete_leaves_a_tombstone_with_a_new_version,
    state_is_namespaced_by_plugin,
    an_idempotency_key_is_taken_once_until_it_expires,
    a_delivery_commits_its_effects_once,
    a_dead_letter_holds_back_its_key_until_replayed,
    skip_parks_a_failed_delivery_and_strict_does_not,
    a_scheduled_event_is_not_due_before_its_time_and_holds_nothing_back,
    replay_all_and_stats_follow_the_filters,
    an_empty_value_is_not_a_tombstone,
    a_large_mixed_batch_commits_in_order,
    an_event_keeps_its_depth_and_its_cause_is_readable,
    the_backlog_counts_each_subscribers_unfinished_deliveries,
);

/// Two stores on one database stand for two hosts committing at once.
mod two_hosts {
    use super::*;
    use crate::store::test_support::{TestDb, postgres_server};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_on_one_key_never_both_commit_a_stale_read() {
        let db = TestDb::postgres().await;
        let name = db.name();
        let other = Store::open(&format!("{}/{name}", postgres_server()))
            .await
            .unwrap();
        // Each round, both hosts read version v of the counter and try to write v + 1: only
        // one may commit; the other must conflict. 50 rounds of racing batches.
        for round in 0..50 {
            let (_, version) = db.store.read_state("p", "counter").await.unwrap();
            let write = |value: &str| {
                vec![Write::Command {
                    changes: StateChanges {
                        plugin: "p".into(),
                        reads: vec![("counter".into(), version)],
                        writes: vec![("counter".into(), Some(value.as_bytes().to_vec()))],
                    },
                    outbox: vec![],
                    idempotency: None,
                }]
            };
            let (a, b) = (write("a"), write("b"));
            let (a, b) = tokio::join!(db.store.apply_batch(&a), other.apply_batch(&b));
            let mut results = [a.unwrap()[0], b.unwrap()[0]];
            results.sort_by_key(|r| *r != Applied::Committed);
            assert_eq!(
                results,
                [Applied::Committed, Applied::Conflict],
                "round {round}"
            );
            assert_eq!(
                db.store.read_state("p", "counter").await.unwrap().1,
                version + 1
            );
        }
        other.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idempotency_claim_holds_until_released_or_its_owner_is_gone() {
        let db = TestDb::postgres().await;
        let url = format!("{}/{}", postgres_server(), db.name());
        let other = Store::open(&url).await.unwrap();
        let minute = std::time::Duration::from_secs(60);
        assert!(db.store.claim_idempotency_key("k", minute).await.unwrap());
        assert!(!other.claim_idempotency_key("k", minute).await.unwrap());
        assert!(
            db.store.claim_idempotency_key("k", minute).await.unwrap(),
            "its own"
        );
        db.store.release_idempotency_claim("k").await.unwrap();
        assert!(other.claim_idempotency_key("k", minute).await.unwrap());

        // The owner's process goes away (its session ends) long before the claim expires.
        let third = Store::open(&url).await.unwrap();
        assert!(!third.claim_idempotency_key("k", minute).await.unwrap());
        other.close().await;
        assert!(third.claim_idempotency_key("k", minute).await.unwrap());
        third.close().await;
    }
}

fn put(plugin: &str, key: &str, value: &str, reads: Vec<(String, StateVersion)>) -> Write {
    Write::Command {
        changes: StateChanges {
            plugin: plugin.into(),
            reads,
            writes: vec![(key.into(), Some(value.as_bytes().to_vec()))],
        },
        outbox: Vec::new(),
        idempotency: None,
    }
}

async fn a_stale_read_conflicts_alone_and_the_rest_of_the_batch_commits(store: &Store) {
    store
        .apply_batch(&[put("p", "k", "1", vec![])])
        .await
        .unwrap();
    let (_, version) = store.read_state("p", "k").await.unwrap();
    assert_eq!(version, 1);
    let results = store
        .apply_batch(&[
            put("p", "k", "2", vec![("k".into(), 1)]),
            // Read at version 1 too, but the first item already moved it to 2.
            put("p", "k", "3", vec![("k".into(), 1)]),
            put("p", "other", "x", vec![("other".into(), 0)]),
        ])
        .await
        .unwrap();
    assert_eq!(
        results,
        [Applied::Committed, Applied::Conflict, Applied::Committed]
    );
    assert_eq!(
        store.read_state("p", "k").await.unwrap(),
        (Some(b"2".to_vec()), 2)
    );
    assert_eq!(
        store.read_state("p", "other").await.unwrap(),
        (Some(b"x".to_vec()), 1)
    );
}

async fn a_delete_leaves_a_tombstone_with_a_new_version(store: &Store) {
    store
        .apply_batch(&[put("p", "k", "1", vec![])])
        .await
        .unwrap();
    let delete = Write::Command {
        changes: StateChanges {
            plugin: "p".into(),
            reads: vec![],
            writes: vec![("k".into(), None)],
        },
        outbox: Vec::new(),
        idempotency: None,
    };
    store.apply_batch(&[delete]).await.unwrap();
    assert_eq!(store.read_state("p", "k").await.unwrap(), (None, 2));
    // A reader that saw the key absent before it ever existed (version 0) now conflicts.
    let results = store
        .apply_batch(&[put("p", "k", "y", vec![("k".into(), 0)])])
        .await
        .unwrap();
    assert_eq!(results, [Applied::Conflict]);
}

async fn state_is_namespaced_by_plugin(store: &Store) {
    store
        .apply_batch(&[put("a", "k", "from a", vec![])])
        .await
        .unwrap();
    assert_eq!(store.read_state("b", "k").await.unwrap(), (None, 0));
}

async fn an_idempotency_key_is_taken_once_until_it_expires(store: &Store) {
    let record = |expires_at_ms| idempotency_record("key", expires_at_ms);
    let command = |record| Write::Command {
        changes: StateChanges::default(),
        outbox: vec![],
        idempotency: Some(record),
    };
    let results = store
        .apply_batch(&[
            command(record(now_ms() - 1)),
            command(record(now_ms() + 60_000)),
        ])
        .await
        .unwrap();
    // The first record is already expired, so the second may take the key over.
    assert_eq!(results, [Applied::Committed, Applied::Committed]);
    let results = store
        .apply_batch(&[command(record(now_ms() + 60_000))])
        .await
        .unwrap();
    assert_eq!(results, [Applied::IdempotencyTaken]);
    assert!(store.idempotency_record("key").await.unwrap().is_some());
}

async fn a_delivery_commits_its_effects_once(store: &Store) {
    emit(store, vec![event("e", "k1", &["s"])]).await;
    let due = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].message.headers,
        vec![("h".to_owned(), "v".to_owned())]
    );
    let delivered = || Write::Delivered {
        delivery_id: due[0].delivery_id,
        attempt: 1,
        lease: None,
        handled_by: "s@1".into(),
        changes: StateChanges {
            plugin: "s".into(),
            reads: vec![],
            writes: vec![("count".into(), Some(b"1".to_vec()))],
        },
        outbox: vec![],
    };
    let results = store
        .apply_batch(&[delivered(), delivered()])
        .await
        .unwrap();
    assert_eq!(results, [Applied::Committed, Applied::DeliveryStale]);
    // The duplicate's write was rolled back: version 1, not 2.
    assert_eq!(store.read_state("s", "count").await.unwrap().1, 1);
    assert!(
        store
            .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_dead_letter_holds_back_its_key_until_replayed(store: &Store) {
    emit(
        store,
        vec![
            event("e", "k1", &["s"]),
            event("e", "k1", &["s"]),
            event("e", "k2", &["s"]),
        ],
    )
    .await;
    let due = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 10)
        .await
        .unwrap();
    let keys: Vec<_> = due
        .iter()
        .map(|d| d.message.partition_key.clone().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["k1", "k2"],
        "the second k1 message waits for the first"
    );
    let first = due[0].delivery_id;
    let failure = HandlerFailure::new(ErrorClass::Permanent, "s", "boom");
    let dead = Write::DeliveryFailed {
        delivery_id: first,
        attempt: 1,
        lease: None,
        handled_by: "s@1".into(),
        failure,
        fate: DeliveryFate::Dead,
    };
    store.apply_batch(&[dead]).await.unwrap();
    let due = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 10)
        .await
        .unwrap();
    assert_eq!(
        due.len(),
        1,
        "k1 is held back by its dead letter, k2 is due"
    );
    assert_eq!(due[0].message.partition_key.as_deref(), Some("k2"));
    assert!(store.replay(first).await.unwrap());
    assert!(
        !store.replay(first).await.unwrap(),
        "only a dead delivery can be replayed"
    );
    let due = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 10)
        .await
        .unwrap();
    assert_eq!(due[0].delivery_id, first);
    assert_eq!(due[0].attempts, 0);
    // Unloaded subscribers' deliveries are not handed out.
    assert!(
        store
            .due_deliveries(&["other".into()], &[], &[], Some(&every_partition()), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_event_keeps_its_depth_and_its_cause_is_readable(store: &Store) {
    let mut first = event("a.ping", "k", &["s"]);
    first.message.causation_id = Some("the-command".into());
    // Another key: not held back behind the first.
    let mut second = event("b.pong", "j", &["s"]);
    second.message.depth = 2;
    second.message.causation_id = Some(first.message.id.clone());
    let second_id = second.message.id.clone();
    emit(store, vec![first.clone(), second]).await;
    let due = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 10)
        .await
        .unwrap();
    let depths: Vec<(String, u32)> = due
        .iter()
        .map(|d| (d.message.kind.clone(), d.message.depth))
        .collect();
    assert_eq!(depths, [("a.ping".into(), 1), ("b.pong".into(), 2)]);
    let cause = store.message_cause(&second_id).await.unwrap().unwrap();
    assert_eq!(
        cause,
        MessageCause {
            kind: "b.pong".into(),
            emitted_by: "p".into(),
            causation_id: Some(first.message.id.clone()),
        }
    );
    let origin = store
        .message_cause(&first.message.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(origin.causation_id.as_deref(), Some("the-command"));
    assert_eq!(store.message_cause("the-command").await.unwrap(), None);
}

async fn emit(store: &Store, events: Vec<OutboxEvent>) {
    let write = Write::Command {
        changes: StateChanges::default(),
        outbox: events,
        idempotency: None,
    };
    assert_eq!(
        store.apply_batch(&[write]).await.unwrap(),
        [Applied::Committed]
    );
}

async fn fail(store: &Store, id: i64, attempt: u32, class: ErrorClass, fate: DeliveryFate) {
    let write = Write::DeliveryFailed {
        delivery_id: id,
        attempt,
        lease: None,
        handled_by: "s@1".into(),
        failure: HandlerFailure::new(class, "s", "boom"),
        fate,
    };
    assert_eq!(
        store.apply_batch(&[write]).await.unwrap(),
        [Applied::Committed]
    );
}

async fn due_keys(store: &Store, skip: &[String]) -> Vec<(i64, String)> {
    store
        .due_deliveries(&["s".into()], skip, &[], Some(&every_partition()), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.delivery_id, d.message.partition_key.unwrap()))
        .collect()
}

async fn skip_parks_a_failed_delivery_and_strict_does_not(store: &Store) {
    emit(
        store,
        vec![event("e", "k", &["s"]), event("e", "k", &["s"])],
    )
    .await;
    let skip = vec!["s".to_owned()];
    let due = due_keys(store, &skip).await;
    assert_eq!(
        due.len(),
        1,
        "before any failure both policies wait: {due:?}"
    );
    let first = due[0].0;
    // A retry due in the future: under skip the second is due now; under strict not.
    fail(
        store,
        first,
        1,
        ErrorClass::Retryable,
        DeliveryFate::RetryAt(now_ms() + 60_000),
    )
    .await;
    assert!(due_keys(store, &[]).await.is_empty());
    let due = due_keys(store, &skip).await;
    assert_eq!(due.len(), 1);
    assert_ne!(due[0].0, first);
    // Dead: still held back under strict, still parked under skip.
    fail(store, first, 2, ErrorClass::Permanent, DeliveryFate::Dead).await;
    assert!(due_keys(store, &[]).await.is_empty());
    assert_eq!(due_keys(store, &skip).await.len(), 1);
    // A purged letter releases a strict key.
    let filter = DeliveryFilter::default();
    assert_eq!(store.purge_matching(&filter, true).await.unwrap(), [first]);
    assert_eq!(store.stats().await.unwrap().by_status["dead"], 1);
    assert_eq!(store.purge_matching(&filter, false).await.unwrap(), [first]);
    assert_eq!(due_keys(store, &[]).await.len(), 1);
}

async fn a_scheduled_event_is_not_due_before_its_time_and_holds_nothing_back(store: &Store) {
    let later = OutboxEvent {
        deliver_at_ms: Some(now_ms() + 60_000),
        ..event("e", "k", &["s"])
    };
    let soon = OutboxEvent {
        deliver_at_ms: Some(now_ms() + 300),
        ..event("e", "k", &["s"])
    };
    let now = event("e", "k", &["s"]);
    let now_id = now.message.id.clone();
    emit(store, vec![later, soon, now]).await;
    // Under strict and skip alike, only the unscheduled third is due: the scheduled ones
    // ahead of it in the lane hold nothing back while they wait.
    for skip in [Vec::new(), vec!["s".to_owned()]] {
        let due = store
            .due_deliveries(&["s".into()], &skip, &[], Some(&every_partition()), 100)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{skip:?}");
        assert_eq!(due[0].message.id, now_id);
    }
    // The dispatcher's next wake-up is the sooner one's time.
    let next = store.next_retry_at_ms().await.unwrap().unwrap();
    assert!(next <= now_ms() + 300, "{next}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // Once due it takes its place in the lane: first, ahead of the unscheduled one.
    let due = due_keys(store, &[]).await;
    assert_eq!(due.len(), 1, "{due:?}");
    let first = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 100)
        .await
        .unwrap();
    assert_ne!(first[0].message.id, now_id);
    let pending = store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    let scheduled: Vec<bool> = pending.iter().map(|d| d.scheduled).collect();
    assert_eq!(scheduled.iter().filter(|s| **s).count(), 1, "{pending:?}");
}

async fn replay_all_and_stats_follow_the_filters(store: &Store) {
    emit(
        store,
        vec![
            event("a.x", "1", &["s"]),
            event("a.y", "2", &["s"]),
            event("b.x", "3", &["s"]),
        ],
    )
    .await;
    let due = due_keys(store, &[]).await;
    let classes = [
        ErrorClass::Permanent,
        ErrorClass::Retryable,
        ErrorClass::Permanent,
    ];
    for ((id, _), class) in due.iter().zip(classes) {
        fail(store, *id, 1, class, DeliveryFate::Dead).await;
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_status["dead"], 3);
    assert_eq!(stats.by_status["pending"], 0);
    assert_eq!(stats.by_error_class["permanent"]["dead"], 2);
    assert_eq!(stats.by_error_class["retryable"]["dead"], 1);

    let filter = |kind: &str, class: Option<&str>| DeliveryFilter {
        kind: Some(kind.into()),
        error_class: class.map(str::to_owned),
        ..DeliveryFilter::default()
    };
    let a_permanent = filter("a.*", Some("permanent"));
    assert_eq!(
        store.replay_matching(&a_permanent, true).await.unwrap(),
        [due[0].0]
    );
    assert_eq!(store.stats().await.unwrap().by_status["dead"], 3, "dry run");
    assert_eq!(
        store.replay_matching(&a_permanent, false).await.unwrap(),
        [due[0].0]
    );
    assert!(
        store
            .replay_matching(&a_permanent, false)
            .await
            .unwrap()
            .is_empty(),
        "only dead letters are replayed"
    );
    let replayed = store.delivery(due[0].0).await.unwrap().unwrap();
    assert_eq!(replayed.view.status, DeliveryStatus::Pending);
    assert_eq!(replayed.view.attempts, 0);
    assert_eq!(replayed.view.error_class.as_deref(), Some("permanent"));
    let listed = store
        .list_deliveries(&DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..filter("*.x", None)
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, "b.x");
    assert!(store.delivery(12345).await.unwrap().is_none());

    // A done delivery is replayed only when forced, and then runs again from its first attempt.
    let done = Write::Delivered {
        delivery_id: due[0].0,
        attempt: 1,
        lease: None,
        handled_by: "s@1".into(),
        changes: StateChanges::default(),
        outbox: Vec::new(),
    };
    assert_eq!(
        store.apply_batch(&[done]).await.unwrap(),
        [Applied::Committed]
    );
    assert!(!store.replay(due[0].0).await.unwrap(), "not dead");
    assert!(store.replay_forced(due[0].0).await.unwrap());
    let forced = store.delivery(due[0].0).await.unwrap().unwrap();
    assert_eq!(
        (
            forced.view.status,
            forced.view.attempts,
            forced.completed_at_ms
        ),
        (DeliveryStatus::Pending, 0, None)
    );
    assert!(
        due_keys(store, &[])
            .await
            .iter()
            .any(|(id, _)| *id == due[0].0)
    );
    assert!(!store.replay_forced(12345).await.unwrap());
}

async fn the_backlog_counts_each_subscribers_unfinished_deliveries(store: &Store) {
    assert!(store.backlog().await.unwrap().is_empty());
    let before = now_ms();
    emit(
        store,
        vec![
            event("e", "1", &["s", "t"]),
            event("e", "2", &["s"]),
            event("e", "3", &["s"]),
        ],
    )
    .await;
    let due = due_keys(store, &[]).await;
    assert_eq!(due.len(), 3);
    fail(
        store,
        due[0].0,
        1,
        ErrorClass::Permanent,
        DeliveryFate::Dead,
    )
    .await;
    fail(
        store,
        due[1].0,
        1,
        ErrorClass::Retryable,
        DeliveryFate::RetryAt(now_ms() + 60_000),
    )
    .await;
    let backlog = store.backlog().await.unwrap();
    let names: Vec<&str> = backlog.iter().map(|b| b.subscriber.as_str()).collect();
    assert_eq!(names, ["s", "t"]);
    let (s, t) = (&backlog[0], &backlog[1]);
    assert_eq!((s.pending, s.scheduled, s.dead()), (2, 1, 1));
    assert_eq!(s.dead_by_class["permanent"], 1);
    assert_eq!((t.pending, t.scheduled, t.dead()), (1, 0, 0));
    let oldest = s.oldest_pending_ms.expect("s has pending deliveries");
    assert!(oldest >= before && oldest <= now_ms(), "{oldest}");
    assert!(s.oldest_pending_age_ms(oldest + 1500) == Some(1500));
}

async fn an_empty_value_is_not_a_tombstone(store: &Store) {
    let write = Write::Command {
        changes: StateChanges {
            plugin: "p".into(),
            reads: vec![],
            writes: vec![("empty".into(), Some(Vec::new())), ("gone".into(), None)],
        },
        outbox: vec![],
        idempotency: None,
    };
    store.apply_batch(&[write]).await.unwrap();
    assert_eq!(
        store.read_state("p", "empty").await.unwrap(),
        (Some(Vec::new()), 1)
    );
    assert_eq!(store.read_state("p", "gone").await.unwrap(), (None, 1));
}

/// Hundreds of units of every kind in one batch: each sees the ones before it, messages are
/// numbered in commit order, and every result is the one running them singly would give.
async fn a_large_mixed_batch_commits_in_order(store: &Store) {
    let record = |key: &str| IdempotencyRecord {
        body: vec![0, 1, 2, 255],
        ..idempotency_record(key, now_ms() + 60_000)
    };
    let mut batch = Vec::new();
    for i in 0..300 {
        let mut e = event("e", &format!("k{}", i % 7), &["s", "t"]);
        e.message.payload = format!("{{\"i\":{i}}}").into_bytes();
        e.message.tenant_id = (i % 2 == 0).then(|| "tenant".to_owned());
        batch.push(Write::Command {
            changes: StateChanges {
                plugin: "p".into(),
                // Every unit reads the counter at the version the one before it wrote.
                reads: vec![("counter".into(), i)],
                writes: vec![
                    ("counter".into(), Some(i.to_string().into_bytes())),
                    (format!("item-{i}"), Some(vec![i as u8; 3])),
                ],
            },
            outbox: vec![e],
            idempotency: Some(record(&format!("key-{}", i % 250))),
        });
    }
    let results = store.apply_batch(&batch).await.unwrap();
    // Units 0..250 commit; 250..300 reuse keys 0..50, which are taken (and, having not
    // committed, leave the counter behind, so nothing after them may commit either).
    assert!(results[..250].iter().all(|r| *r == Applied::Committed));
    assert_eq!(results[250], Applied::IdempotencyTaken);
    assert!(
        results[251..].iter().all(|r| *r == Applied::Conflict),
        "{:?}",
        &results[251..]
    );
    assert_eq!(
        store.read_state("p", "counter").await.unwrap(),
        (Some(b"249".to_vec()), 250)
    );
    assert_eq!(
        store.read_state("p", "item-7").await.unwrap(),
        (Some(vec![7; 3]), 1)
    );
    assert_eq!(
        store
            .idempotency_record("key-3")
            .await
            .unwrap()
            .unwrap()
            .body,
        [0, 1, 2, 255]
    );
    // Two subscribers, 250 messages; `k0`'s messages are due one at a time, oldest first.
    let due = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 1000)
        .await
        .unwrap();
    assert_eq!(due.len(), 7, "one per key");
    // The first message of each key, in `seq` order: the messages were numbered in commit order.
    let firsts: Vec<&[u8]> = due.iter().map(|d| d.message.payload.as_slice()).collect();
    let expected: Vec<Vec<u8>> = (0..7)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    assert_eq!(
        firsts,
        expected.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );
    let first = &due[0];
    assert_eq!(first.message.tenant_id.as_deref(), Some("tenant"));
    // A running delivery is left out of the scan and still holds back its key.
    let without_first = store
        .due_deliveries(
            &["s".into()],
            &[],
            &[first.delivery_id],
            Some(&every_partition()),
            1000,
        )
        .await
        .unwrap();
    assert_eq!(without_first.len(), 6);
    assert!(
        without_first
            .iter()
            .all(|d| d.message.partition_key != first.message.partition_key)
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_status["pending"], 500);
    let listed = store
        .list_deliveries(&DeliveryFilter {
            subscriber: Some("t".into()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    let order: Vec<i64> = listed
        .iter()
        .map(|d| d.payload["i"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        (0..250).collect::<Vec<_>>(),
        "messages in commit order"
    );
}
