//! `begin` + `complete` on the in-memory store, the hot path of every first request.
//!
//! Run: `cargo xtask bench idem` (or `cargo bench -p idem-core --bench memory_store`).
//!
//! Keys cycle through a working set; after each pass the clock jumps past the retention, so every
//! `begin` acquires (a new or an expired record) and the map stays at a steady size, as in a server
//! under constant traffic. A bare `parking_lot::Mutex<HashMap>` insert + update of the same record
//! runs in the same process as the floor any store of this shape can reach.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_util::FutureExt;
use idem_core::{
    BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, ManualClock, MemoryStore,
    MemoryStoreConfig, StoredResponse,
};
use std::collections::HashMap;
use std::time::Duration;

const WORKING_SET: usize = 100_000;

fn bench(c: &mut Criterion) {
    let keys: Vec<IdempotencyKey> = (0..WORKING_SET)
        .map(|i| IdempotencyKey::parse(format!("order-{i:08}-3f9a2c").as_bytes()).unwrap())
        .collect();
    let fp = Fingerprint::of_request("POST", "/v1/orders", br#"{"sku":"tea","qty":2}"#);
    let response = StoredResponse {
        status: 201,
        headers: vec![(
            "content-type".into(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::from_static(br#"{"id":"ord_123","status":"created"}"#),
        trailers: Vec::new(),
    };
    let lease = Duration::from_secs(60);
    let retention = Duration::from_secs(3600);

    let mut group = c.benchmark_group("idem_memory");
    group.throughput(Throughput::Elements(1));

    // What the layer runs: the in-place `begin_now` / `complete_now` (no boxed future).
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone(), MemoryStoreConfig::default());
    let mut i = 0usize;
    group.bench_function("begin_complete", |b| {
        b.iter(|| {
            let key = &keys[i];
            i += 1;
            if i == WORKING_SET {
                i = 0;
                clock.advance(retention + lease);
            }
            let Some(Ok(BeginOutcome::Acquired { fence })) =
                store.begin_now("tenant", key, &fp, lease)
            else {
                panic!("begin did not acquire")
            };
            store
                .complete_now("tenant", key, fence, &response, retention)
                .unwrap()
                .unwrap();
        })
    });

    // The same through the async trait (what a caller awaiting the store pays).
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone(), MemoryStoreConfig::default());
    let mut i = 0usize;
    group.bench_function("begin_complete_awaited", |b| {
        b.iter(|| {
            let key = &keys[i];
            i += 1;
            if i == WORKING_SET {
                i = 0;
                clock.advance(retention + lease);
            }
            let Some(Ok(BeginOutcome::Acquired { fence })) =
                store.begin("tenant", key, &fp, lease).now_or_never()
            else {
                panic!("begin did not acquire")
            };
            store
                .complete("tenant", key, fence, &response, retention)
                .now_or_never()
                .unwrap()
                .unwrap();
        })
    });

    group.bench_function("replay", |b| {
        let key = &keys[0];
        let fresh = MemoryStore::with_clock(ManualClock::new(), MemoryStoreConfig::default());
        let Some(Ok(BeginOutcome::Acquired { fence })) =
            fresh.begin("tenant", key, &fp, lease).now_or_never()
        else {
            panic!()
        };
        fresh
            .complete("tenant", key, fence, &response, retention)
            .now_or_never();
        b.iter(|| {
            let out = fresh.begin("tenant", key, &fp, lease).now_or_never();
            assert!(matches!(out, Some(Ok(BeginOutcome::Completed(_)))));
        })
    });

    group.bench_function("baseline_mutex_hashmap_insert_update", |b| {
        let map = parking_lot::Mutex::new(HashMap::<String, (u64, Option<StoredResponse>)>::new());
        let mut j = 0usize;
        b.iter_batched(
            || {
                j = (j + 1) % WORKING_SET;
                format!("6:tenant{}", keys[j].as_str())
            },
            |id| {
                map.lock().insert(id.clone(), (1, None));
                map.lock().get_mut(&id).unwrap().1 = Some(response.clone());
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
