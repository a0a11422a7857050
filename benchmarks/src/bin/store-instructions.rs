//! The in-memory idempotency store's `begin` + `complete`, counted in instructions under
//! valgrind's callgrind, next to the floor of any store of its shape.
//!
//! `store-instructions <now|awaited|floor>`: 100,000 keys, one pass to fill the maps (not
//! counted), then two passes inside `measured_store` / `measured_floor`, the only functions
//! callgrind collects in (`valgrind --tool=callgrind --toggle-collect='*measured_*'`); total /
//! 200,000 is one `begin` + `complete`. Between passes the clock jumps past the retention, so every
//! `begin` acquires an expired or swept key, as in a server under constant traffic. `now` is what
//! the idempotency layer runs (`begin_now` / `complete_now`, in place), `awaited` the async trait
//! (`begin` / `complete`, each a boxed future polled once), `floor` a bare
//! `parking_lot::Mutex<HashMap<String, _>>` insert plus update with the same response clone.

use bytes::Bytes;
use futures_util::FutureExt;
use idem_core::{
    BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, ManualClock, MemoryStore,
    MemoryStoreConfig, StoredResponse,
};
use std::collections::HashMap;
use std::time::Duration;

const WORKING_SET: usize = 100_000;
const PASSES: usize = 2;
const LEASE: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(3600);

type Floor = parking_lot::Mutex<HashMap<String, (u64, Option<StoredResponse>)>>;

fn one(
    store: &MemoryStore<ManualClock>,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    response: &StoredResponse,
    in_place: bool,
) {
    if in_place {
        let Some(Ok(BeginOutcome::Acquired { fence })) = store.begin_now("tenant", key, fp, LEASE)
        else {
            panic!("begin did not acquire")
        };
        store
            .complete_now("tenant", key, fence, response, RETENTION)
            .expect("in place")
            .expect("completed");
    } else {
        let Some(Ok(BeginOutcome::Acquired { fence })) =
            store.begin("tenant", key, fp, LEASE).now_or_never()
        else {
            panic!("begin did not acquire")
        };
        store
            .complete("tenant", key, fence, response, RETENTION)
            .now_or_never()
            .expect("ready")
            .expect("completed");
    }
}

/// The counted passes over the store.
#[inline(never)]
fn measured_store(
    store: &MemoryStore<ManualClock>,
    clock: &ManualClock,
    keys: &[IdempotencyKey],
    fp: &Fingerprint,
    response: &StoredResponse,
    in_place: bool,
) {
    for _ in 0..PASSES {
        for key in keys {
            one(store, key, fp, response, in_place);
        }
        clock.advance(RETENTION + LEASE);
    }
}

/// The counted passes over the floor.
#[inline(never)]
fn measured_floor(map: &Floor, ids: &[String], response: &StoredResponse) {
    for _ in 0..PASSES {
        for id in ids {
            map.lock().insert(id.clone(), (1, None));
            if let Some(entry) = map.lock().get_mut(id) {
                entry.1 = Some(response.clone());
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let keys: Vec<IdempotencyKey> = (0..WORKING_SET)
        .map(|i| IdempotencyKey::parse(format!("order-{i:08}-3f9a2c").as_bytes()))
        .collect::<Result<_, _>>()?;
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
    match mode.as_str() {
        "now" | "awaited" => {
            let in_place = mode == "now";
            let clock = ManualClock::new();
            let store = MemoryStore::with_clock(clock.clone(), MemoryStoreConfig::default());
            for key in &keys {
                one(&store, key, &fp, &response, in_place);
            }
            clock.advance(RETENTION + LEASE);
            measured_store(&store, &clock, &keys, &fp, &response, in_place);
            println!("{} records", store.len());
        }
        "floor" => {
            let ids: Vec<String> = keys
                .iter()
                .map(|k| format!("6:tenant{}", k.as_str()))
                .collect();
            let map = Floor::default();
            for id in &ids {
                map.lock().insert(id.clone(), (1, None));
            }
            measured_floor(&map, &ids, &response);
            println!("{} records", map.lock().len());
        }
        _ => return Err("usage: store-instructions <now|awaited|floor>".into()),
    }
    Ok(())
}
