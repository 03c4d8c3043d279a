//! Two stores on one database stand for two hosts committing at once.

use crate::store::test_support::{TestDb, postgres_server};
use crate::store::{Applied, StateChanges, Store, Write};

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
