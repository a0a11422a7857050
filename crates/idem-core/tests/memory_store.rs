//! The in-memory store: the conformance suite, the reference model, and its own limits.

use idem_core::conformance::{self, MemoryHarness};
use idem_core::{
    BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, ManualClock, MemoryStore,
    MemoryStoreConfig, StoreError, StoredResponse,
};
use proptest::prelude::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    conformance::run_all(&MemoryHarness::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_begins_have_one_winner() {
    conformance::concurrent_begin_one_winner(&MemoryHarness::new(), 1_000).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]
    #[test]
    fn memory_store_agrees_with_the_model(ops in conformance::ops(60)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let harness = MemoryHarness::new();
        let verdict = rt.block_on(conformance::check_model(&harness, "model", &ops));
        prop_assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
    }
}

fn key(i: usize) -> IdempotencyKey {
    IdempotencyKey::parse(format!("k{i}").as_bytes()).unwrap()
}

#[tokio::test]
async fn memory_is_bounded_by_max_records_and_expiry() {
    let clock = ManualClock::new();
    let mut config = MemoryStoreConfig::default();
    config.shards = 4;
    config.max_records = 400;
    config.sweep_interval = Duration::from_secs(1);
    let store = MemoryStore::with_clock(clock.clone(), config);
    let fp = Fingerprint::of_request("POST", "/", b"");
    let lease = Duration::from_secs(5);
    let mut refused = 0;
    for i in 0..1_000 {
        match store.begin("s", &key(i), &fp, lease).await {
            Ok(BeginOutcome::Acquired { .. }) => {}
            Err(StoreError::CapacityExceeded) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(store.len() <= 400, "{} records held", store.len());
    assert!(refused >= 600, "only {refused} refused");
    // Once the leases run out, the space is reused rather than grown.
    clock.advance(lease);
    let mut acquired = 0;
    for i in 1_000..2_000 {
        if let Ok(BeginOutcome::Acquired { .. }) = store.begin("s", &key(i), &fp, lease).await {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 400);
    assert_eq!(store.len(), 400);
    clock.advance(lease);
    assert_eq!(store.purge_expired().await.unwrap(), 400);
    assert!(store.is_empty());
}

#[tokio::test]
async fn expired_records_are_swept_during_use() {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone(), MemoryStoreConfig::default());
    let fp = Fingerprint::of_request("POST", "/", b"");
    let response = StoredResponse {
        status: 200,
        headers: vec![],
        body: "ok".into(),
        trailers: Vec::new(),
    };
    for i in 0..10_000 {
        let BeginOutcome::Acquired { fence } = store
            .begin("s", &key(i), &fp, Duration::from_secs(1))
            .await
            .unwrap()
        else {
            panic!("fresh key not acquired")
        };
        store
            .complete("s", &key(i), fence, &response, Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 10_000);
    clock.advance(Duration::from_secs(61));
    // Ordinary traffic sweeps each shard it touches; no separate sweeper is needed.
    for i in 0..2_000 {
        store
            .begin("t", &key(i), &fp, Duration::from_secs(1))
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 2_000);
}

#[test]
fn stored_response_encoding_round_trips_and_rejects_bad_bytes() {
    let r = StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: "{}".into(),
        trailers: Vec::new(),
    };
    let bytes = r.encode();
    assert_eq!(StoredResponse::decode(&bytes).unwrap(), r);
    // Without trailers the record is written in version 1, which earlier releases read.
    assert_eq!(bytes[0], 1);
    let mut newer = bytes.clone();
    newer[0] = 3;
    assert_eq!(
        StoredResponse::decode(&newer),
        Err(idem_core::DecodeError::UnknownVersion(3))
    );
    // With trailers (a gRPC answer): version 2, trailers kept in order.
    let grpc = StoredResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/grpc".into())],
        body: vec![0u8, 0, 0, 0, 2, 8, 1].into(),
        trailers: vec![
            ("grpc-status".into(), "0".into()),
            ("x-order".into(), "ord_1".into()),
        ],
    };
    let encoded = grpc.encode();
    assert_eq!(encoded[0], 2);
    assert_eq!(StoredResponse::decode(&encoded).unwrap(), grpc);
    let map = grpc.trailer_map().unwrap();
    assert_eq!(map["grpc-status"], "0");
    assert_eq!(map["x-order"], "ord_1");
    assert!(r.trailer_map().is_none());
    // A record written by an earlier release (version 1, body to the end) reads with no trailers.
    let mut v1 = vec![1u8, 0, 201, 0, 0];
    v1.extend_from_slice(b"created");
    let old = StoredResponse::decode(&v1).unwrap();
    assert_eq!(old.status, 201);
    assert_eq!(&old.body[..], b"created");
    assert!(old.trailers.is_empty());
    assert_eq!(
        StoredResponse::decode(&bytes[..7]),
        Err(idem_core::DecodeError::Truncated)
    );
    assert!(matches!(
        StoredResponse::decode(&[1, 0, 5, 0, 0]),
        Err(idem_core::DecodeError::Malformed(_))
    ));
}

proptest! {
    #[test]
    fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = StoredResponse::decode(&bytes);
    }

    #[test]
    fn encode_decode_round_trip(
        status in 100u16..1000,
        headers in proptest::collection::vec(("[a-z-]{1,20}", proptest::collection::vec(any::<u8>(), 0..40)), 0..6),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        trailers in proptest::collection::vec(("[a-z-]{1,20}", proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
    ) {
        let r = StoredResponse {
            status,
            headers: headers.into_iter().map(|(n, v)| (n, v.into())).collect(),
            body: body.into(),
            trailers: trailers.into_iter().map(|(n, v)| (n, v.into())).collect(),
        };
        prop_assert_eq!(StoredResponse::decode(&r.encode()).unwrap(), r);
    }
}

/// Defect 11: the store was capped in records only (each may hold a 1 MiB response) and one
/// scope could take the whole cap. Now bytes are bounded too, and a scope's share is.
#[tokio::test]
async fn bytes_are_bounded_and_expired_records_give_them_back() {
    let clock = ManualClock::new();
    let mut config = MemoryStoreConfig::default();
    config.shards = 1;
    config.max_bytes = 20_000;
    let store = MemoryStore::with_clock(clock.clone(), config);
    let fp = Fingerprint::of_request("POST", "/", b"");
    let lease = Duration::from_secs(5);
    let big = StoredResponse {
        status: 200,
        headers: vec![],
        body: vec![b'x'; 4_000].into(),
        trailers: Vec::new(),
    };
    let mut stored = 0;
    let mut refused = None;
    for i in 0..100 {
        let key = IdempotencyKey::parse(format!("k{i}").as_bytes()).unwrap();
        match store.begin("t", &key, &fp, lease).await {
            Ok(BeginOutcome::Acquired { fence }) => {
                store
                    .complete("t", &key, fence, &big, Duration::from_secs(60))
                    .await
                    .unwrap();
                stored += 1;
            }
            Err(StoreError::CapacityExceeded) => {
                refused = Some(i);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // 20 kB hold about five 4 kB responses (one may pass the budget: it was admitted before).
    assert!((4..=6).contains(&stored), "{stored} stored");
    assert!(refused.is_some());
    clock.advance(Duration::from_secs(61));
    let key = IdempotencyKey::parse(b"after").unwrap();
    assert!(matches!(
        store.begin("t", &key, &fp, lease).await,
        Ok(BeginOutcome::Acquired { .. })
    ));
}

#[tokio::test]
async fn one_scope_cannot_take_the_store_from_the_others() {
    let clock = ManualClock::new();
    let mut config = MemoryStoreConfig::default();
    config.shards = 1;
    config.max_records = 1_000;
    config.max_records_per_scope = Some(10);
    let store = MemoryStore::with_clock(clock.clone(), config);
    let fp = Fingerprint::of_request("POST", "/", b"");
    let lease = Duration::from_secs(5);
    let mut fences = Vec::new();
    for i in 0..10 {
        let key = IdempotencyKey::parse(format!("a{i}").as_bytes()).unwrap();
        match store.begin("flooder", &key, &fp, lease).await.unwrap() {
            BeginOutcome::Acquired { fence } => fences.push((key, fence)),
            other => panic!("{other:?}"),
        }
    }
    let key = IdempotencyKey::parse(b"a10").unwrap();
    assert!(matches!(
        store.begin("flooder", &key, &fp, lease).await,
        Err(StoreError::ScopeFull)
    ));
    // Another tenant is unaffected.
    let key = IdempotencyKey::parse(b"b0").unwrap();
    assert!(matches!(
        store.begin("other", &key, &fp, lease).await,
        Ok(BeginOutcome::Acquired { .. })
    ));
    // The flooder's share comes back as its records go (released, or expired).
    let (k, f) = fences.pop().unwrap();
    store.release("flooder", &k, f).await.unwrap();
    let key = IdempotencyKey::parse(b"a11").unwrap();
    assert!(matches!(
        store.begin("flooder", &key, &fp, lease).await,
        Ok(BeginOutcome::Acquired { .. })
    ));
    clock.advance(Duration::from_secs(6));
    for i in 20..30 {
        let key = IdempotencyKey::parse(format!("a{i}").as_bytes()).unwrap();
        assert!(matches!(
            store.begin("flooder", &key, &fp, lease).await,
            Ok(BeginOutcome::Acquired { .. })
        ));
    }
}

/// Records are found again whatever the length of their scope and key: ids that fit the store's
/// on-stack lookup buffer and ids that spill over it (a long scope) complete, renew, release and
/// replay alike, and two scopes whose concatenations with the key coincide stay apart.
#[tokio::test]
async fn long_and_short_record_ids_are_found_again() {
    let store = MemoryStore::with_clock(ManualClock::new(), MemoryStoreConfig::default());
    let fp = Fingerprint::of_request("POST", "/orders", b"{}");
    let lease = Duration::from_secs(30);
    let response = StoredResponse {
        status: 201,
        headers: vec![],
        body: "created".into(),
        trailers: vec![],
    };
    let long_key = "k".repeat(200);
    let long_scope = "s".repeat(300);
    for (scope, key) in [
        ("a", "bc"),
        ("ab", "c"),
        ("tenant", long_key.as_str()),
        (long_scope.as_str(), "k1"),
        (long_scope.as_str(), long_key.as_str()),
    ] {
        let key = IdempotencyKey::parse(key.as_bytes()).unwrap();
        let BeginOutcome::Acquired { fence } = store.begin(scope, &key, &fp, lease).await.unwrap()
        else {
            panic!("{scope}/{key:?}: a new record");
        };
        store.renew(scope, &key, fence, lease).await.unwrap();
        store
            .complete(scope, &key, fence, &response, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            store.begin(scope, &key, &fp, lease).await.unwrap(),
            BeginOutcome::Completed(response.clone()),
            "{}-byte scope",
            scope.len()
        );
        let other = IdempotencyKey::parse(b"released").unwrap();
        let BeginOutcome::Acquired { fence } =
            store.begin(scope, &other, &fp, lease).await.unwrap()
        else {
            panic!("a new record");
        };
        store.release(scope, &other, fence).await.unwrap();
        let BeginOutcome::Acquired { fence } =
            store.begin(scope, &other, &fp, lease).await.unwrap()
        else {
            panic!("a released key is free again");
        };
        store.release(scope, &other, fence).await.unwrap();
    }
}

/// An expired record taken over by a new attempt keeps its place: the bytes of its old response,
/// its scope's count and its slot are reused, not leaked — fifty takeovers of one key leave room
/// for new keys — and each takeover's fence supersedes the last.
#[tokio::test]
async fn takeovers_in_place_give_back_what_the_expired_record_held() {
    let clock = ManualClock::new();
    let mut config = MemoryStoreConfig::default();
    config.shards = 1;
    config.max_bytes = 20_000;
    config.max_records_per_scope = Some(2);
    // No sweep by interval after the first: every begin below meets its expired record.
    config.sweep_interval = Duration::from_secs(3600 * 24);
    let store = MemoryStore::with_clock(clock.clone(), config);
    let fp = Fingerprint::of_request("POST", "/", b"");
    let lease = Duration::from_secs(5);
    let big = StoredResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: vec![b'x'; 4_000].into(),
        trailers: Vec::new(),
    };
    let key = IdempotencyKey::parse(b"again").unwrap();
    let mut last = None;
    for round in 0..50 {
        let Some(Ok(BeginOutcome::Acquired { fence })) = store.begin_now("t", &key, &fp, lease)
        else {
            panic!("round {round}: the expired record is taken over");
        };
        if let Some(previous) = last {
            assert!(
                fence > previous,
                "round {round}: {fence:?} after {previous:?}"
            );
            assert!(matches!(
                store.complete_now("t", &key, previous, &big, Duration::from_secs(60)),
                Some(Err(StoreError::StaleFence { .. }))
            ));
        }
        store
            .complete_now("t", &key, fence, &big, Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert_eq!(store.len(), 1);
        last = Some(fence);
        clock.advance(Duration::from_secs(61));
    }
    // Room is left: the scope's second record, and its bytes, are still available.
    let other = IdempotencyKey::parse(b"other").unwrap();
    let BeginOutcome::Acquired { fence } = store.begin("t", &other, &fp, lease).await.unwrap()
    else {
        panic!("a new key after the takeovers");
    };
    store
        .complete("t", &other, fence, &big, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.len(), 2);
    // The in-place and the awaited answers agree.
    assert_eq!(
        store.begin_now("t", &other, &fp, lease).unwrap().unwrap(),
        store.begin("t", &other, &fp, lease).await.unwrap()
    );
}
