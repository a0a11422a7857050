//! One delivery attempt over HTTP.

use crate::guard::{AddressPolicy, Blocked, GuardedResolver};
use crate::webhook::NextStep;
use crate::{Endpoint, Schedule, WebhookEvent};
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The default total time of one attempt: connecting, sending, and the answer's head and body.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The default time to open the connection (within the total).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a receiver's answer body that is read (then the connection is dropped).
pub(crate) const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why an attempt failed. No variant carries a secret or the endpoint URL's query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The endpoint's address is refused by the SSRF guard; nothing was sent.
    #[error(transparent)]
    Blocked(Blocked),
    /// The attempt took longer than the timeout.
    #[error("the receiver did not answer within the timeout")]
    Timeout,
    /// The connection could not be made (refused, reset, DNS, TLS).
    #[error("could not connect to the receiver: {0}")]
    Connect(String),
    /// The receiver answered with a status other than 2xx (3xx included: redirects are not
    /// followed).
    #[error("the receiver answered {0}")]
    Status(u16),
    /// The request failed after it was sent (the connection broke).
    #[error("the delivery failed: {0}")]
    Request(String),
    /// The headers could not be signed (an event id the scheme cannot carry).
    #[error("the delivery could not be signed: {0}")]
    Sign(webhook_sig::SignError),
    /// The event names an endpoint the dispatcher does not know.
    #[error("no endpoint named {0:?} is configured")]
    UnknownEndpoint(String),
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// From sending to the answer's head, or to the failure.
    pub latency: Duration,
    /// The receiver's `Retry-After`, on 429, 502, 503 and 504 answers.
    pub retry_after: Option<Duration>,
    /// `None` on a 2xx answer.
    pub error: Option<DeliveryError>,
}

impl Delivery {
    /// Whether the receiver answered 2xx.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }

    /// What follows attempt `number` (1 = the first) that found this: 2xx → delivered; 410 →
    /// the endpoint is disabled; anything else → the next scheduled attempt (not before a
    /// `Retry-After`), or exhausted after the last. `unit` (uniform in `[0, 1)`) draws the
    /// jitter.
    pub fn next(&self, number: u32, schedule: &Schedule, unit: f64) -> NextStep {
        if self.is_success() {
            return NextStep::Delivered;
        }
        if self.status == Some(410) {
            return NextStep::DisableEndpoint;
        }
        match schedule.delay_after(number.saturating_add(1), unit, self.retry_after) {
            Some(delay) => NextStep::RetryIn(delay),
            None => NextStep::Exhausted,
        }
    }

    pub(crate) fn failed(error: DeliveryError) -> Self {
        Self {
            status: None,
            latency: Duration::ZERO,
            retry_after: None,
            error: Some(error),
        }
    }
}

/// Could not build the HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("could not build the webhook HTTP client")]
#[non_exhaustive]
pub struct SenderError(#[source] reqwest::Error);

/// Sends signed deliveries: one signature per attempt (the same `webhook-id`, a fresh
/// timestamp), connect and total timeouts, no redirects, the SSRF guard on every address.
/// Cheap to clone: clones share the connection pool.
///
/// TLS: this crate enables no TLS backend of `reqwest`, so that applications choose theirs;
/// enable one in the application (`reqwest = { version = "0.13", features = ["rustls"] }`) to
/// deliver to `https` endpoints. Proxies are off: the guard must see the addresses connected to.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

/// Settings of a [`Sender`].
#[derive(Debug)]
#[must_use]
pub struct SenderBuilder {
    timeout: Duration,
    connect_timeout: Duration,
    policy: AddressPolicy,
    client: Option<reqwest::ClientBuilder>,
}

impl SenderBuilder {
    /// The total time of one attempt (default 15 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time to connect (default 10 s; the total timeout still applies).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Which addresses may be connected to (default: public addresses only).
    pub fn address_policy(mut self, policy: AddressPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Starts from this `reqwest` builder (TLS roots, a user agent, HTTP/2 settings…). Its
    /// redirect policy, timeouts, resolver and proxies are replaced by the sender's.
    pub fn client_builder(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.client = Some(builder);
        self
    }

    /// The sender.
    pub fn build(self) -> Result<Sender, SenderError> {
        let policy = Arc::new(self.policy);
        let client = self
            .client
            .unwrap_or_else(|| {
                reqwest::Client::builder().user_agent(concat!(
                    "retry-safe-webhook-delivery/",
                    env!("CARGO_PKG_VERSION")
                ))
            })
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .build()
            .map_err(SenderError)?;
        Ok(Sender { client, policy })
    }
}

impl Sender {
    /// A sender with the default settings.
    pub fn new() -> Result<Self, SenderError> {
        Self::builder().build()
    }

    /// The settings, to change some.
    pub fn builder() -> SenderBuilder {
        SenderBuilder {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            policy: AddressPolicy::default(),
            client: None,
        }
    }

    /// Makes one attempt to deliver `event` to `endpoint`, signed now by the endpoint's signer.
    pub async fn send(&self, endpoint: &Endpoint, event: &WebhookEvent) -> Delivery {
        // An address in the URL itself is never resolved: check it here.
        let literal: Option<IpAddr> = match endpoint.url().host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.into()),
            Some(url::Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if let Some(ip) = literal {
            if let Err(blocked) = self.policy.check(ip) {
                return Delivery::failed(DeliveryError::Blocked(blocked));
            }
        }
        let signed = match endpoint.signer().headers(&event.id, &event.payload) {
            Ok(headers) => headers,
            Err(e) => return Delivery::failed(DeliveryError::Sign(e)),
        };
        let content_type = HeaderValue::from_str(&event.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
        let request = self
            .client
            .post(endpoint.url().clone())
            .headers(signed)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(event.payload.clone());
        let started = std::time::Instant::now();
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let latency = started.elapsed();
                let mut failed = Delivery::failed(classify_error(e));
                failed.latency = latency;
                return failed;
            }
        };
        let latency = started.elapsed();
        let status = response.status();
        let retry_after = matches!(status.as_u16(), 429 | 502 | 503 | 504)
            .then(|| retry_safe_core::headers::retry_after(response.headers(), SystemTime::now()))
            .flatten();
        // Read (a bounded part of) the answer, so the connection can be reused.
        let mut read = 0usize;
        while read < MAX_RESPONSE_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        Delivery {
            status: Some(status.as_u16()),
            latency,
            retry_after,
            error: (!status.is_success()).then_some(DeliveryError::Status(status.as_u16())),
        }
    }
}

/// Maps a `reqwest` failure, without its URL, to a [`DeliveryError`].
fn classify_error(e: reqwest::Error) -> DeliveryError {
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(blocked) = err.downcast_ref::<Blocked>() {
            return DeliveryError::Blocked(blocked.clone());
        }
        source = err.source();
    }
    if e.is_timeout() {
        DeliveryError::Timeout
    } else if e.is_connect() {
        DeliveryError::Connect(chain(&e))
    } else {
        DeliveryError::Request(chain(&e))
    }
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
