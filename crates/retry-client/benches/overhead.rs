//! The price of a successful first attempt: a GET and a keyed POST through hyper-util's client to
//! a loopback axum server, bare and with `SafeRetryLayer`, in the same run. Run:
//! `cargo xtask bench retries` (both retry benches).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::{BodyExt, Full};
use retry_client::{Retrier, RetryPolicy, SafeRetryLayer};
use tower::{Service, ServiceExt};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/orders",
            axum::routing::get(|| async { "[]" }).post(|| async { "{\"id\":\"ord_1\"}" }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let bare = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let layered = tower::ServiceBuilder::new()
        .layer(SafeRetryLayer::new(Retrier::new(RetryPolicy::default())))
        .service(bare.clone());
    let no_timer = tower::ServiceBuilder::new()
        .layer(SafeRetryLayer::new(Retrier::new(
            RetryPolicy::default().deadline(None),
        )))
        .service(bare.clone());
    let get = move || {
        Request::get(format!("http://{addr}/orders"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let post = move || {
        Request::post(format!("http://{addr}/orders"))
            .body(Full::new(Bytes::from_static(
                b"{\"sku\":\"tea\",\"quantity\":1}",
            )))
            .unwrap()
    };
    let mut g = c.benchmark_group("first_attempt");
    for (name, make) in [
        ("get", &get as &dyn Fn() -> Request<Full<Bytes>>),
        ("post", &post),
    ] {
        g.bench_function(format!("{name}/bare_hyper_util"), |b| {
            b.to_async(&rt).iter(|| {
                let mut svc = bare.clone();
                let req = make();
                async move {
                    let res = svc.call(req).await.unwrap();
                    res.into_body().collect().await.unwrap()
                }
            })
        });
        g.bench_function(format!("{name}/retry_layer"), |b| {
            b.to_async(&rt).iter(|| {
                let svc = layered.clone();
                let req = make();
                async move {
                    let res = svc.oneshot(req).await.unwrap();
                    res.into_body().collect().await.unwrap()
                }
            })
        });
        g.bench_function(format!("{name}/retry_layer_without_deadline"), |b| {
            b.to_async(&rt).iter(|| {
                let svc = no_timer.clone();
                let req = make();
                async move {
                    let res = svc.oneshot(req).await.unwrap();
                    res.into_body().collect().await.unwrap()
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
