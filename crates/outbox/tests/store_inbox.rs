//! StoreInbox on the in-memory idempotency store (a manual clock) and on the real Redis of
//! `REDIS_URL` (a key prefix of the test's own): a message applied once across redeliveries,
//! a concurrent delivery refused while the first runs, a failed effect freeing the id, and a
//! consumer that died mid-effect leaving the message to the redelivery after its lease.

use idem_core::{IdempotencyStore, ManualClock, MemoryStore, MemoryStoreConfig};
use idem_store_redis::RedisStore;
use outbox::{Handled, StoreInbox, StoreInboxError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

async fn contract<S: IdempotencyStore + Clone>(store: S, advance: &dyn Fn(Duration)) {
    let effects = AtomicU32::new(0);
    let apply = async || {
        effects.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(())
    };
    let inbox = StoreInbox::new(store.clone(), "read-model").lease(Duration::from_secs(5));
    assert_eq!(
        inbox.handle("evt_1", apply).await.unwrap(),
        Handled::Applied(())
    );
    assert_eq!(
        inbox.handle("evt_1", apply).await.unwrap(),
        Handled::Duplicate
    );
    let other = StoreInbox::new(store.clone(), "billing");
    assert_eq!(
        other.handle("evt_1", apply).await.unwrap(),
        Handled::Applied(())
    );
    assert_eq!(effects.load(Ordering::SeqCst), 2, "once per consumer");

    // A failed effect frees the id: the redelivery runs it.
    let failed = inbox.handle("evt_2", async || Err::<(), _>("down")).await;
    assert!(matches!(failed, Err(StoreInboxError::Handler("down"))));
    assert_eq!(
        inbox.handle("evt_2", apply).await.unwrap(),
        Handled::Applied(())
    );

    // A delivery while another runs the effect is refused; after the first dies mid-effect
    // (its lease runs out), the redelivery runs it.
    let (started, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    let first = inbox.handle("evt_3", async || {
        started.notify_one();
        release.notified().await;
        Ok::<_, String>(())
    });
    let second = async {
        started.notified().await;
        let busy = inbox.handle("evt_3", apply).await;
        assert!(
            matches!(busy, Err(StoreInboxError::InFlight { .. })),
            "{busy:?}"
        );
        advance(Duration::from_secs(6));
        let after = inbox.handle("evt_3", apply).await.unwrap();
        assert_eq!(
            after,
            Handled::Applied(()),
            "the lease ran out: the redelivery runs it"
        );
        release.notify_one();
    };
    let (first, ()) = tokio::join!(first, second);
    assert!(
        matches!(first, Err(StoreInboxError::Store(_))),
        "the dead one cannot complete"
    );
    assert!(matches!(
        inbox.handle("has space", apply).await,
        Err(StoreInboxError::BadMessageId)
    ));
}

#[tokio::test]
async fn the_store_inbox_applies_each_message_once_in_memory() {
    let clock = ManualClock::new();
    let store = std::sync::Arc::new(MemoryStore::with_clock(
        clock.clone(),
        MemoryStoreConfig::default(),
    ));
    contract(store, &move |d| clock.advance(d)).await;
}

#[tokio::test]
async fn the_store_inbox_applies_each_message_once_on_redis() {
    let offset = idem_core::TimeOffset::new();
    let store = RedisStore::connect(&testkit::redis_url())
        .await
        .unwrap_or_else(|e| panic!("Redis is not reachable ({e}); run `cargo xtask test`"))
        .prefix(&testkit::unique("t_outbox", "inbox"))
        .time_offset(offset.clone());
    contract(store, &move |d| offset.advance(d)).await;
}
