//! Shared by the tests: a scripted receiver on loopback.
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
use webhook_delivery::{AddressPolicy, Sender};

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
