//! Shared by the tests: a scripted receiver on loopback and the outbox contract, run against
//! every outbox.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use webhook_delivery::{
    AddressPolicy, DeliveryAttempt, EventState, NextStep, Outbox, Sender, WebhookEvent,
};

/// What the receiver answers to one request.
#[derive(Clone)]
pub enum Answer {
    Status(u16),
    WithHeader(u16, &'static str, &'static str),
    Stall(Duration),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A receiver on 127.0.0.1 that answers from a script (200 once it runs out) and records every
/// request.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub base: String,
    script: Arc<Mutex<VecDeque<Answer>>>,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(script: impl IntoIterator<Item = Answer>) -> Self {
        let script = Arc::new(Mutex::new(script.into_iter().collect::<VecDeque<_>>()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (script.clone(), received.clone());
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                r.lock().push(Received { headers, body });
                let answer = s.lock().pop_front().unwrap_or(Answer::Status(200));
                match answer {
                    Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
                    Answer::WithHeader(code, name, value) => {
                        let mut resp: Response =
                            StatusCode::from_u16(code).unwrap().into_response();
                        resp.headers_mut().insert(name, value.parse().unwrap());
                        resp
                    }
                    Answer::Stall(d) => {
                        tokio::time::sleep(d).await;
                        StatusCode::OK.into_response()
                    }
                }
            }
        };
        let app = Router::new()
            .route("/hook", post(handler.clone()))
            .route("/elsewhere", post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("{base}/hook"),
            base,
            script,
            received,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }
}

/// A sender that may reach loopback (the tests' receivers), with a short timeout.
pub fn loopback_sender(timeout: Duration) -> Sender {
    Sender::builder()
        .address_policy(AddressPolicy::default().allow("127.0.0.0/8".parse().unwrap()))
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .unwrap()
}

fn attempt(n: u32, status: u16) -> DeliveryAttempt {
    DeliveryAttempt::new(n, Some(status), Duration::from_millis(3), None)
}

/// The outbox contract. `advance` moves the outbox's clock.
pub async fn contract<O: Outbox>(outbox: &O, advance: &(dyn Fn(Duration) + Sync)) {
    let lease = Duration::from_secs(30);
    let e1 = WebhookEvent::new("a", "evt_1", "one").unwrap();
    let e2 = WebhookEvent::new("a", "evt_2", "two").unwrap();
    let e3 = WebhookEvent::new("b", "evt_1", "three").unwrap(); // same id, other endpoint

    // Enqueue is idempotent per (endpoint, id).
    assert!(outbox.enqueue(&e1).await.unwrap());
    assert!(!outbox.enqueue(&e1).await.unwrap());
    advance(Duration::from_millis(10));
    assert!(outbox.enqueue(&e2).await.unwrap());
    advance(Duration::from_millis(10));
    assert!(outbox.enqueue(&e3).await.unwrap());
    assert_eq!(outbox.stats().await.unwrap().pending, 3);

    // Claims are exclusive and oldest first.
    let first = outbox.claim(1, lease).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event, e1);
    assert_eq!(first[0].attempts, 0);
    let rest = outbox.claim(10, lease).await.unwrap();
    let mut ids: Vec<_> = rest
        .iter()
        .map(|c| (c.event.endpoint.clone(), c.event.id.clone()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [("a".into(), "evt_2".into()), ("b".into(), "evt_1".into())]
    );
    assert!(outbox.claim(10, lease).await.unwrap().is_empty());

    // A retry is due after its delay, with the attempt counted and recorded.
    assert!(outbox
        .settle(
            &first[0],
            &attempt(1, 500),
            NextStep::RetryIn(Duration::from_secs(5))
        )
        .await
        .unwrap());
    advance(Duration::from_secs(4));
    assert!(outbox.claim(10, lease).await.unwrap().is_empty());
    advance(Duration::from_secs(1));
    let again = outbox.claim(10, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_ne!(again[0].claim, first[0].claim);
    // A settle with the old claim is refused.
    assert!(!outbox
        .settle(&first[0], &attempt(2, 200), NextStep::Delivered)
        .await
        .unwrap());
    assert!(outbox
        .settle(&again[0], &attempt(2, 200), NextStep::Delivered)
        .await
        .unwrap());
    let status = outbox.status("a", "evt_1").await.unwrap().unwrap();
    assert_eq!(status.state, EventState::Delivered);
    let statuses: Vec<_> = status.attempts.iter().map(|a| a.attempt.status).collect();
    assert_eq!(statuses, [Some(500), Some(200)]);
    assert_eq!(status.attempts[1].attempt.number, 2);
    // Settled once, never again.
    assert!(!outbox
        .settle(&again[0], &attempt(3, 200), NextStep::Delivered)
        .await
        .unwrap());

    // A claim whose holder died comes back after its lease, to a new claimant.
    advance(lease);
    let orphans = outbox.claim(10, lease).await.unwrap();
    assert_eq!(orphans.len(), 2, "both unsettled claims are due again");
    let b = orphans.iter().find(|c| c.event.endpoint == "b").unwrap();
    let a2 = orphans.iter().find(|c| c.event.endpoint == "a").unwrap();
    for stale in &rest {
        assert!(!outbox
            .settle(stale, &attempt(1, 200), NextStep::Delivered)
            .await
            .unwrap());
    }

    // 410: the event is marked, the endpoint disabled, its other events held.
    let e4 = WebhookEvent::new("b", "evt_4", "four").unwrap();
    assert!(outbox.enqueue(&e4).await.unwrap());
    assert!(outbox
        .settle(b, &attempt(1, 410), NextStep::DisableEndpoint)
        .await
        .unwrap());
    assert_eq!(outbox.disabled_endpoints().await.unwrap(), ["b"]);
    assert_eq!(
        outbox.status("b", "evt_1").await.unwrap().unwrap().state,
        EventState::EndpointDisabled
    );
    assert!(
        outbox.claim(10, lease).await.unwrap().is_empty(),
        "b is disabled, a is held"
    );
    assert!(outbox.enable_endpoint("b").await.unwrap());
    assert!(!outbox.enable_endpoint("b").await.unwrap());
    let resumed = outbox.claim(10, lease).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].event, e4);

    // Exhausted.
    assert!(outbox
        .settle(a2, &attempt(1, 500), NextStep::Exhausted)
        .await
        .unwrap());
    assert_eq!(
        outbox.status("a", "evt_2").await.unwrap().unwrap().state,
        EventState::Exhausted
    );

    let stats = outbox.stats().await.unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.delivered,
            stats.exhausted,
            stats.disabled
        ),
        (1, 1, 1, 1)
    );
    assert!(stats.oldest_pending.is_some());
    assert!(outbox.status("a", "nope").await.unwrap().is_none());

    // Purge: finished rows older than the cut, not pending ones.
    advance(Duration::from_secs(100));
    assert_eq!(
        outbox
            .purge_finished(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        outbox
            .purge_finished(Duration::from_secs(50))
            .await
            .unwrap(),
        3
    );
    assert!(outbox.status("a", "evt_1").await.unwrap().is_none());
    // A purged id can be queued again; the pending one stays.
    assert!(outbox.enqueue(&e1).await.unwrap());
    assert_eq!(outbox.stats().await.unwrap().pending, 2);
}
