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

/// `run` with four rounds in flight: every event once, each aggregate in order, and a clean
/// stop on shutdown (tokio's paused clock drives the poll interval).
#[tokio::test(start_paused = true)]
async fn run_keeps_rounds_in_flight_and_stops_on_shutdown() {
    use outbox::{ChannelSink, Relay};
    let outbox = MemoryOutbox::new();
    for i in 0..60 {
        let e = common::event(&format!("e{i:02}"), Some(&format!("agg{}", i % 6)));
        outbox.enqueue(&e).await.unwrap();
    }
    let (sink, mut rx) = ChannelSink::new();
    let relay = Relay::new(outbox.clone(), sink).batch(4).concurrency(4);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        relay.run(async { drop(stopped.await) }).await;
    });
    let mut by_agg: std::collections::HashMap<String, Vec<String>> = Default::default();
    for _ in 0..60 {
        let e = rx.recv().await.unwrap();
        by_agg.entry(e.aggregate.unwrap()).or_default().push(e.id);
    }
    stop.send(()).unwrap();
    running.await.unwrap();
    assert!(rx.try_recv().is_err(), "nothing published twice");
    for (agg, ids) in by_agg {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!((ids.len(), &ids), (10, &sorted), "{agg}");
    }
    assert_eq!(outbox.stats().await.unwrap().published, 60);
}

#[tokio::test]
async fn a_view_of_the_memory_outbox_claims_only_its_topics() {
    let all = MemoryOutbox::new();
    let hooks = all.clone().only_topics(["merchant"]);
    common::only_topics(&all, &hooks).await;
}
