//! The delivery queue: effects committed once, per-key order under `strict` and `skip`, dead
//! letters and replay, scheduled events, causes, stats and each subscriber's backlog.

use crate::error::{ErrorClass, HandlerFailure};
use crate::store::test_support::{event, every_partition};
use crate::store::{
    Applied, DeliveryFate, DeliveryFilter, DeliveryStatus, MessageCause, OutboxEvent, StateChanges,
    Store, Write, now_ms,
};

pub(super) async fn a_delivery_commits_its_effects_once(store: &Store) {
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

pub(super) async fn a_dead_letter_holds_back_its_key_until_replayed(store: &Store) {
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

pub(super) async fn an_event_keeps_its_depth_and_its_cause_is_readable(store: &Store) {
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

pub(super) async fn emit(store: &Store, events: Vec<OutboxEvent>) {
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

pub(super) async fn fail(
    store: &Store,
    id: i64,
    attempt: u32,
    class: ErrorClass,
    fate: DeliveryFate,
) {
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

pub(super) async fn skip_parks_a_failed_delivery_and_strict_does_not(store: &Store) {
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

pub(super) async fn a_scheduled_event_is_not_due_before_its_time_and_holds_nothing_back(
    store: &Store,
) {
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

pub(super) async fn replay_all_and_stats_follow_the_filters(store: &Store) {
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

pub(super) async fn the_backlog_counts_each_subscribers_unfinished_deliveries(store: &Store) {
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
