//! Runs: a hot key's deliveries claimed together, and chained writes that commit only after
//! the one before them.

use super::deliveries::{emit, fail};
use crate::error::ErrorClass;
use crate::store::test_support::{event, every_partition};
use crate::store::{
    Applied, DeliveryFate, DueDelivery, OutboxEvent, StateChanges, Store, Write, now_ms,
};

/// The runs of what is due now for subscriber `s`, `length` deliveries at most each.
async fn runs(store: &Store, length: usize) -> Vec<Vec<DueDelivery>> {
    let heads = store
        .due_deliveries(&["s".into()], &[], &[], Some(&every_partition()), 100)
        .await
        .unwrap();
    store.delivery_runs(heads, length).await.unwrap()
}

/// Each run as its events' kinds.
fn kinds(runs: &[Vec<DueDelivery>]) -> Vec<Vec<String>> {
    runs.iter()
        .map(|run| run.iter().map(|d| d.message.kind.clone()).collect())
        .collect()
}

pub(super) async fn a_hot_keys_deliveries_are_claimed_as_one_run_in_order(store: &Store) {
    let later = OutboxEvent {
        deliver_at_ms: Some(now_ms() + 3_600_000),
        ..event("k1.scheduled", "k1", &["s"])
    };
    let mut unkeyed = event("none.1", "-", &["s"]);
    unkeyed.message.partition_key = None;
    emit(
        store,
        vec![
            event("k1.1", "k1", &["s"]),
            event("k2.1", "k2", &["s"]),
            event("k1.2", "k1", &["s"]),
            later,
            unkeyed,
            event("k1.3", "k1", &["s"]),
            event("k2.2", "k2", &["s"]),
            event("k1.4", "k1", &["s", "other"]),
        ],
    )
    .await;
    // The scheduled event holds nothing back and is not taken; an unkeyed one runs alone.
    assert_eq!(
        kinds(&runs(store, 32).await),
        [
            vec!["k1.1", "k1.2", "k1.3", "k1.4"],
            vec!["k2.1", "k2.2"],
            vec!["none.1"],
        ]
    );
    assert_eq!(
        kinds(&runs(store, 3).await),
        [
            vec!["k1.1", "k1.2", "k1.3"],
            vec!["k2.1", "k2.2"],
            vec!["none.1"]
        ]
    );
    assert_eq!(
        kinds(&runs(store, 1).await),
        [vec!["k1.1"], vec!["k2.1"], vec!["none.1"]]
    );
}

pub(super) async fn a_run_stops_before_a_delivery_that_failed_before(store: &Store) {
    emit(
        store,
        (1..=4)
            .map(|n| event(&format!("k.{n}"), "k", &["s"]))
            .collect(),
    )
    .await;
    let all = runs(store, 32).await;
    assert_eq!(kinds(&all), [vec!["k.1", "k.2", "k.3", "k.4"]]);
    let third = all[0][2].delivery_id;
    fail(
        store,
        third,
        1,
        ErrorClass::Retryable,
        DeliveryFate::RetryAt(now_ms() + 3_600_000),
    )
    .await;
    assert_eq!(kinds(&runs(store, 32).await), [vec!["k.1", "k.2"]]);
}

pub(super) async fn a_chained_write_commits_only_after_the_one_before_it(store: &Store) {
    emit(
        store,
        (1..=3)
            .map(|n| event(&format!("k.{n}"), "k", &["s"]))
            .collect(),
    )
    .await;
    let run = runs(store, 32).await.remove(0);
    assert_eq!(run.len(), 3);
    // Each delivery writes the count the one before it left (read from the run's overlay).
    let delivered = |due: &DueDelivery, count: u8, reads: Vec<(String, i64)>| Write::Delivered {
        delivery_id: due.delivery_id,
        attempt: 1,
        lease: None,
        handled_by: "s@1".into(),
        changes: StateChanges {
            plugin: "s".into(),
            reads,
            writes: vec![("count".into(), Some(vec![count]))],
        },
        outbox: vec![],
    };
    // The first read a version that is not current: it conflicts, and the rest of its run,
    // which ran on its writes, is cut.
    let stale = [
        delivered(&run[0], 1, vec![("count".into(), 7)]),
        Write::Chained(Box::new(delivered(&run[1], 2, vec![]))),
        Write::Chained(Box::new(delivered(&run[2], 3, vec![]))),
    ];
    assert_eq!(
        store.apply_batch(&stale).await.unwrap(),
        [Applied::Conflict, Applied::RunCut, Applied::RunCut]
    );
    assert_eq!(store.read_state("s", "count").await.unwrap(), (None, 0));
    assert_eq!(
        runs(store, 32).await[0].len(),
        3,
        "nothing of the run committed"
    );
    // Run again on current state: all three commit, in order, as one batch.
    let fresh = [
        delivered(&run[0], 1, vec![("count".into(), 0)]),
        Write::Chained(Box::new(delivered(&run[1], 2, vec![]))),
        Write::Chained(Box::new(delivered(&run[2], 3, vec![]))),
    ];
    assert_eq!(
        store.apply_batch(&fresh).await.unwrap(),
        [Applied::Committed; 3]
    );
    assert_eq!(
        store.read_state("s", "count").await.unwrap(),
        (Some(vec![3]), 3)
    );
    assert!(runs(store, 32).await.is_empty());
}
