//! What the harness runs itself, on the bridge's address: the merchant's webhook receiver and
//! the delaying TCP relays in front of each Redis node (this kernel has no `netem`).

use axum::routing::post;
use axum::{Extension, Router};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webhook_sig::{ReplayGuard, Scheme, Secret, VerifiedWebhook, Verifier, WebhookLayer};

/// The Standard Webhooks secret the servers sign with (their `WEBHOOK_SECRET`).
pub const SECRET: &str = "whsec_Y2hhb3MtcnVuLXdlYmhvb2stc2VjcmV0LTAxMjM0NQ==";

/// The receiver's counts.
#[derive(Clone, Default)]
pub struct Received {
    /// Deliveries processed per webhook id (the replay guard lets a redelivery through once).
    pub processed: Arc<Mutex<BTreeMap<String, u32>>>,
    /// Every delivery that arrived, redeliveries and rejected ones included.
    pub arrived: Arc<AtomicU64>,
}

/// Starts the receiver on `addr` (port 0: any); its URL.
pub async fn receiver(addr: SocketAddr, received: Received) -> Result<String, String> {
    let secret = Secret::from_standard(SECRET).map_err(|e| e.to_string())?;
    let (processed, arrived) = (received.processed.clone(), received.arrived.clone());
    let app = Router::new()
        .route(
            "/hooks",
            post(move |Extension(hook): Extension<VerifiedWebhook>| {
                let processed = processed.clone();
                async move {
                    if let Ok(mut p) = processed.lock() {
                        *p.entry(hook.id.unwrap_or_default()).or_default() += 1;
                    }
                    "ok"
                }
            }),
        )
        .layer(
            WebhookLayer::new(Verifier::new(Scheme::StandardWebhooks, secret))
                .replay_guard(ReplayGuard::new(idem_core::MemoryStore::new())),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                arrived.fetch_add(1, Ordering::Relaxed);
                next.run(req)
            },
        ));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("receiver on {addr}: {e}"))?;
    let url = format!(
        "http://{}/hooks",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// A TCP relay on `listen` (port 0: any) to `upstream` that, while `on` is set, holds every
/// chunk 100 ms ± 25 ms in each direction (order kept): 200 ms ± 50 ms a round trip. Its port.
pub async fn delaying_relay(
    listen: SocketAddr,
    upstream: SocketAddr,
    on: Arc<AtomicBool>,
) -> Result<u16, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("relay on {listen}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let on = on.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pump(cr, sw, on.clone()), pump(sr, cw, on));
            });
        }
    });
    Ok(port)
}

/// Copies `from` to `to`, each chunk due 100 ms ± 25 ms after it was read while `on` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    on: Arc<AtomicBool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last = tokio::time::Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = if on.load(Ordering::Relaxed) {
                Duration::from_millis(fastrand::u64(75..=125))
            } else {
                Duration::ZERO
            };
            last = last.max(tokio::time::Instant::now() + delay);
            if tx.send((last, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
