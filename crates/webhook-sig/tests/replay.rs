//! The replay guard over the in-memory idempotency store, on a manual clock.

use async_trait::async_trait;
use idem_core::{
    BeginOutcome, Fence, Fingerprint, IdempotencyKey, IdempotencyStore, ManualClock, MemoryStore,
    MemoryStoreConfig, StoreError, StoredResponse,
};
use std::sync::Arc;
use std::time::Duration;
use webhook_sig::{ReplayGuard, VerifyError};

fn guard() -> (ReplayGuard<MemoryStore<ManualClock>>, ManualClock) {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone(), MemoryStoreConfig::default());
    (ReplayGuard::new(store), clock)
}

#[tokio::test]
async fn a_processed_event_is_refused_until_its_retention_ends() {
    let (g, clock) = guard();
    let g = g.retention(Duration::from_secs(3600));
    g.begin("evt_1", b"{}")
        .await
        .unwrap()
        .processed()
        .await
        .unwrap();
    assert_eq!(
        g.begin("evt_1", b"{}").await.unwrap_err(),
        VerifyError::Replayed
    );
    // The same id with another payload is refused too.
    assert_eq!(
        g.begin("evt_1", b"{\"x\":1}").await.unwrap_err(),
        VerifyError::Replayed
    );
    // Other ids are unaffected.
    assert!(g.begin("evt_2", b"{}").await.is_ok());
    clock.advance(Duration::from_secs(3601));
    assert!(g.begin("evt_1", b"{}").await.is_ok());
}

#[tokio::test]
async fn a_failed_event_can_be_delivered_again() {
    let (g, _) = guard();
    g.begin("evt_1", b"{}")
        .await
        .unwrap()
        .failed()
        .await
        .unwrap();
    g.begin("evt_1", b"{}")
        .await
        .unwrap()
        .processed()
        .await
        .unwrap();
    assert_eq!(
        g.begin("evt_1", b"{}").await.unwrap_err(),
        VerifyError::Replayed
    );
}

#[tokio::test]
async fn a_concurrent_delivery_is_told_when_to_retry() {
    let (g, clock) = guard();
    let g = g.lease(Duration::from_secs(30));
    let first = g.begin("evt_1", b"{}").await.unwrap();
    clock.advance(Duration::from_millis(10_500));
    assert_eq!(
        g.begin("evt_1", b"{}").await.unwrap_err(),
        VerifyError::InFlight {
            retry_after_secs: 20
        }
    );
    first.processed().await.unwrap();
}

#[tokio::test]
async fn a_vanished_holder_frees_the_id_after_its_lease_and_cannot_complete() {
    let (g, clock) = guard();
    let g = g.lease(Duration::from_secs(30));
    let zombie = g.begin("evt_1", b"{}").await.unwrap();
    clock.advance(Duration::from_secs(31));
    let retry = g.begin("evt_1", b"{}").await.unwrap();
    assert!(matches!(
        zombie.processed().await,
        Err(StoreError::StaleFence { .. })
    ));
    retry.processed().await.unwrap();
    assert_eq!(
        g.begin("evt_1", b"{}").await.unwrap_err(),
        VerifyError::Replayed
    );
}

#[tokio::test]
async fn a_dropped_ticket_releases_the_id_in_the_background() {
    let (g, _) = guard();
    drop(g.begin("evt_1", b"{}").await.unwrap());
    let mut freed = false;
    for _ in 0..10 {
        tokio::task::yield_now().await;
        if let Ok(ticket) = g.begin("evt_1", b"{}").await {
            ticket.processed().await.unwrap();
            freed = true;
            break;
        }
    }
    assert!(freed, "the dropped ticket did not release its id");
}

#[tokio::test]
async fn scopes_keep_senders_apart() {
    let store = Arc::new(MemoryStore::new());
    let a = ReplayGuard::shared(store.clone()).scope("acme");
    let b = ReplayGuard::shared(store).scope("globex");
    a.begin("evt_1", b"{}")
        .await
        .unwrap()
        .processed()
        .await
        .unwrap();
    b.begin("evt_1", b"{}")
        .await
        .unwrap()
        .processed()
        .await
        .unwrap();
    assert_eq!(
        a.begin("evt_1", b"{}").await.unwrap_err(),
        VerifyError::Replayed
    );
}

#[tokio::test]
async fn ids_that_are_not_valid_keys_are_hashed_not_refused() {
    let (g, _) = guard();
    let long = "e".repeat(1000);
    for id in [long.as_str(), "with space", "\"quoted\"", "quoted", "é"] {
        g.begin(id, b"{}").await.unwrap().processed().await.unwrap();
    }
    for id in [long.as_str(), "with space", "\"quoted\"", "quoted", "é"] {
        assert_eq!(
            g.begin(id, b"{}").await.unwrap_err(),
            VerifyError::Replayed,
            "{id}"
        );
    }
    // A longer id sharing the 1000-char prefix is another event.
    assert!(g.begin(&format!("{long}x"), b"{}").await.is_ok());
}

/// A store whose backend is down: every call fails as a network error would.
struct DownStore;

#[async_trait]
impl IdempotencyStore for DownStore {
    async fn begin(
        &self,
        _: &str,
        _: &IdempotencyKey,
        _: &Fingerprint,
        _: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn complete(
        &self,
        _: &str,
        _: &IdempotencyKey,
        _: Fence,
        _: &StoredResponse,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn release(&self, _: &str, _: &IdempotencyKey, _: Fence) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn renew(
        &self,
        _: &str,
        _: &IdempotencyKey,
        _: Fence,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
}

#[tokio::test]
async fn an_unreachable_store_is_a_typed_error() {
    let g = ReplayGuard::new(DownStore);
    assert_eq!(
        g.begin("evt_1", b"{}").await.unwrap_err(),
        VerifyError::ReplayStoreUnavailable
    );
}
