//! Precondition evaluation per request: read the four precondition headers, parse the entity-tag
//! lists, compare with the current version (RFC 9110 §13.2.2). Baseline in the same run: the
//! hand-rolled check many services write (`headers.get("if-match") == current etag`, no list, no
//! weak tags, no dates).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use optimistic_lock::{evaluate, Conditions, Current, Version};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_str(v).unwrap());
    }
    map
}

fn bench(c: &mut Criterion) {
    let current = Current::new(Version::number(41_237));
    let etag = current.version.etag().to_string();
    let mut g = c.benchmark_group("precondition");
    let one = headers(&[("if-match", &etag)]);
    g.bench_function("hand_rolled_if_match_eq", |b| {
        b.iter(|| {
            let h = black_box(&one);
            h.get("if-match").map(|v| v.as_bytes()) == Some(etag.as_bytes())
        })
    });
    g.bench_function("if_match_one_tag", |b| {
        b.iter(|| {
            let c = Conditions::from_headers(black_box(&one)).unwrap();
            evaluate(&Method::PATCH, &c, Some(black_box(&current)))
        })
    });
    let list = headers(&[(
        "if-match",
        "\"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"41237\"",
    )]);
    g.bench_function("if_match_eight_tags", |b| {
        b.iter(|| {
            let c = Conditions::from_headers(black_box(&list)).unwrap();
            evaluate(&Method::PATCH, &c, Some(black_box(&current)))
        })
    });
    let get = headers(&[
        ("if-none-match", "W/\"41237\""),
        ("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT"),
    ]);
    g.bench_function("if_none_match_get", |b| {
        b.iter(|| {
            let c = Conditions::from_headers(black_box(&get)).unwrap();
            evaluate(&Method::GET, &c, Some(black_box(&current)))
        })
    });
    let none = HeaderMap::new();
    g.bench_function("no_precondition", |b| {
        b.iter(|| {
            let c = Conditions::from_headers(black_box(&none)).unwrap();
            evaluate(&Method::GET, &c, Some(black_box(&current)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
