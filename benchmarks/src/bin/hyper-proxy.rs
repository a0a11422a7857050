//! The floor of a proxy built on hyper: a hyper-util server handing every request to a pooled
//! hyper-util client, nothing else (no headers rewritten, no layers). `cargo xtask bench gateway`
//! runs it beside nginx, haproxy and the gateway, so the gateway's distance to the C proxies splits
//! into what the HTTP engine costs and what the gateway adds.
//!
//! Usage: `hyper-proxy LISTEN_ADDR UPSTREAM_ADDR`; one thread when the process has one core.

use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;

type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: hyper-proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build().expect("a runtime");
    runtime.block_on(serve(listen.clone(), upstream.clone()));
}

async fn serve(listen: String, upstream: String) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Arc<Client<HttpConnector, Body>> =
        Arc::new(Client::builder(TokioExecutor::new()).build(connector));
    let upstream: Arc<str> = upstream.into();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("the listen address");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let (mut parts, body) = req.into_parts();
                        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                        parts.uri = format!("http://{upstream}{path}").parse().expect("a URI");
                        let body = http_body_util::BodyExt::boxed_unsync(body);
                        let res = client.request(http::Request::from_parts(parts, body)).await;
                        res.map(|r| r.map(http_body_util::BodyExt::boxed_unsync))
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
