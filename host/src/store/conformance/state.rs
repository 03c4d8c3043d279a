//! State and idempotency keys as batches of commands write them: versions and conflicts,
//! tombstones, namespaces, and one large batch of every kind of unit.

use crate::error::{ErrorClass, HandlerFailure};
use crate::store::test_support::{event, every_partition, idempotency_record};
use crate::store::{
    Applied, DeliveryFilter, FirstOutcome, IdempotencyRecord, StateChanges, StateVersion, Store,
    Write, now_ms,
};

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

pub(super) async fn a_stale_read_conflicts_alone_and_the_rest_of_the_batch_commits(store: &Store) {
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

pub(super) async fn a_delete_leaves_a_tombstone_with_a_new_version(store: &Store) {
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

pub(super) async fn state_is_namespaced_by_plugin(store: &Store) {
    store
        .apply_batch(&[put("a", "k", "from a", vec![])])
        .await
        .unwrap();
    assert_eq!(store.read_state("b", "k").await.unwrap(), (None, 0));
}

pub(super) async fn an_idempotency_key_is_taken_once_until_it_expires(store: &Store) {
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

pub(super) async fn an_empty_value_is_not_a_tombstone(store: &Store) {
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
pub(super) async fn a_large_mixed_batch_commits_in_order(store: &Store) {
    // Even keys store a reply (not valid UTF-8), odd ones a rejection.
    let outcome = |i: i64| match i % 2 {
        0 => FirstOutcome::Succeeded(vec![0, 1, 2, 255]),
        _ => FirstOutcome::Rejected(HandlerFailure::new(
            ErrorClass::Rejected,
            "p",
            format!("no \"{i}\""),
        )),
    };
    let record = |i: i64| IdempotencyRecord {
        outcome: outcome(i),
        ..idempotency_record(&format!("key-{i}"), now_ms() + 60_000)
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
            idempotency: Some(record(i % 250)),
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
    for i in [3, 4] {
        let stored = store.idempotency_record(&format!("key-{i}")).await.unwrap();
        assert_eq!(stored.unwrap().outcome, outcome(i));
    }
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
