//! Verify throughput against a bare HMAC-SHA256 of the same bytes, in one run.
//!
//! `cargo xtask bench webhook` (or `cargo bench -p webhook-sig --bench verify`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use webhook_sig::{ManualClock, Scheme, Secret, Signer, Verifier};

const NOW: u64 = 1_700_000_000;

fn bench_verify(c: &mut Criterion) {
    let key = [7u8; 32];
    let secret = Secret::new(key.to_vec()).unwrap();
    for size in [1024usize, 64 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut group = c.benchmark_group(format!("webhook_verify_{}KiB", size / 1024));
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_function(BenchmarkId::new("bare_hmac_sha256", size), |b| {
            b.iter(|| {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(black_box(&key)).unwrap();
                mac.update(black_box(&body));
                black_box(mac.finalize().into_bytes())
            })
        });

        let prekeyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        group.bench_function(BenchmarkId::new("prekeyed_hmac_sha256", size), |b| {
            b.iter(|| {
                let mut mac = prekeyed.clone();
                mac.update(black_box(&body));
                black_box(mac.finalize().into_bytes())
            })
        });

        for scheme in [Scheme::StandardWebhooks, Scheme::Stripe, Scheme::GitHub] {
            let headers = Signer::new(scheme, &secret)
                .headers_at("msg_2Lh9KRbq7Cq1HvKUp5Cqx1gRvC6", NOW, &body)
                .unwrap();
            let verifier =
                Verifier::new(scheme, secret.clone()).with_clock(ManualClock::at_unix_secs(NOW));
            assert!(verifier.verify(&headers, &body).is_ok());
            group.bench_function(BenchmarkId::new(format!("verify_{scheme:?}"), size), |b| {
                b.iter(|| black_box(verifier.verify(black_box(&headers), black_box(&body))))
            });
        }

        // v1a: Ed25519 over `{id}.{timestamp}.{body}`, against ed25519-dalek's strict verify of
        // the same, already concatenated, content.
        let id = "msg_2Lh9KRbq7Cq1HvKUp5Cqx1gRvC6";
        let signing = webhook_sig::SigningKey::from_seed([9; 32]);
        let headers = Signer::ed25519(&signing)
            .headers_at(id, NOW, &body)
            .unwrap();
        let verifier =
            Verifier::ed25519(signing.public_key()).with_clock(ManualClock::at_unix_secs(NOW));
        assert!(verifier.verify(&headers, &body).is_ok());
        let dalek = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut content = format!("{id}.{NOW}.").into_bytes();
        content.extend_from_slice(&body);
        let signature = ed25519_dalek::Signer::sign(&dalek, &content);
        let public = dalek.verifying_key();
        group.bench_function(BenchmarkId::new("bare_ed25519_verify_strict", size), |b| {
            b.iter(|| black_box(public.verify_strict(black_box(&content), black_box(&signature))))
        });
        group.bench_function(BenchmarkId::new("verify_v1a", size), |b| {
            b.iter(|| black_box(verifier.verify(black_box(&headers), black_box(&body))))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
