//! MemoryOutbox: the outbox contract and the relay's schedule on a manual clock.

mod common;

use outbox::{ManualClock, MemoryOutbox, Outbox, OutboxError};
use std::time::Duration;

#[tokio::test]
async fn the_memory_outbox_passes_the_contract() {
    let clock = ManualClock::new();
    let outbox = MemoryOutbox::new().with_clock(clock.clone());
    common::contract(&outbox, &move |d| clock.advance(d)).await;
}

#[tokio::test]
async fn the_relay_retries_on_its_schedule_and_dead_letters_on_the_memory_outbox() {
    let clock = ManualClock::new();
    let outbox = MemoryOutbox::new().with_clock(clock.clone());
    common::relay_schedule(outbox, &move |d| clock.advance(d)).await;
}

#[tokio::test]
async fn a_full_memory_outbox_refuses_the_next_event() {
    let outbox = MemoryOutbox::new().with_capacity(1);
    outbox.enqueue(&common::event("x1", None)).await.unwrap();
    let err = outbox
        .enqueue(&common::event("x2", None))
        .await
        .unwrap_err();
    assert!(matches!(err, OutboxError::Full { capacity: 1 }), "{err}");
    let claimed = outbox.claim(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(claimed.len(), 1);
}
