//! What is sent (a [`WebhookEvent`]) and where (an [`Endpoint`]).

use bytes::Bytes;
use std::fmt;
use webhook_sig::Signer;

/// The longest event id accepted, in bytes.
pub(crate) const MAX_ID_LEN: usize = 255;

/// Why an event or an endpoint could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event id is empty, longer than 255 bytes or has characters other than visible
    /// ASCII (it travels as the `webhook-id` header).
    #[error("a webhook event id must be 1 to 255 visible ASCII characters")]
    InvalidId,
    /// The endpoint name is empty, longer than 255 bytes, or holds a space or a control
    /// character (it is the event's topic in the outbox).
    #[error("an endpoint name must be 1 to 255 bytes without spaces or control characters")]
    InvalidEndpointName,
    /// The content type is not a valid header value.
    #[error("the content type is not a valid header value")]
    InvalidContentType,
    /// The endpoint URL does not parse, or is not `http`/`https`, or has credentials in it.
    #[error("the endpoint URL must be an http or https URL without user or password: {0}")]
    InvalidUrl(String),
}

/// One webhook to deliver to one endpoint: the id the receiver deduplicates on (`webhook-id`, the
/// same on every attempt), the endpoint's name and the raw payload.
///
/// ```
/// use webhook_delivery::WebhookEvent;
///
/// let event = WebhookEvent::new("orders-hook", "evt_ord_42", r#"{"type":"order.created"}"#).unwrap();
/// assert_eq!(event.content_type, "application/json");
/// assert!(WebhookEvent::new("orders-hook", "", "{}").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The event id, sent as `webhook-id` (visible ASCII, 1–255 bytes). Enqueuing the same id for
    /// the same endpoint twice queues it once.
    pub id: String,
    /// The name of the [`Endpoint`] it goes to.
    pub endpoint: String,
    /// The body, sent and signed byte for byte.
    pub payload: Bytes,
    /// The `Content-Type` of the body (default `application/json`).
    pub content_type: String,
}

impl WebhookEvent {
    /// An `application/json` event `id` for `endpoint`.
    pub fn new(
        endpoint: impl Into<String>,
        id: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<Self, EventError> {
        let (endpoint, id) = (endpoint.into(), id.into());
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EventError::InvalidId);
        }
        check_endpoint_name(&endpoint)?;
        Ok(Self {
            id,
            endpoint,
            payload: payload.into(),
            content_type: "application/json".to_owned(),
        })
    }

    /// The same event with another content type.
    pub fn with_content_type(mut self, content_type: &str) -> Result<Self, EventError> {
        http::HeaderValue::from_str(content_type).map_err(|_| EventError::InvalidContentType)?;
        if content_type.chars().any(char::is_control) {
            return Err(EventError::InvalidContentType);
        }
        self.content_type = content_type.to_owned();
        Ok(self)
    }

    /// The outbox's event: topic = the endpoint's name, the `content-type` header.
    pub fn to_event(&self) -> Result<outbox::Event, outbox::EventError> {
        outbox::Event::new(&self.endpoint, &self.id, self.payload.clone())?
            .header(CONTENT_TYPE, &self.content_type)
    }

    /// The webhook an outbox event stands for (see [`to_event`](Self::to_event)); an event
    /// without a `content-type` header is `application/json`.
    pub fn from_event(event: &outbox::Event) -> Self {
        let content_type = event
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE))
            .map_or("application/json", |(_, value)| value.as_str());
        Self {
            id: event.id.clone(),
            endpoint: event.topic.clone(),
            payload: event.payload.clone(),
            content_type: content_type.to_owned(),
        }
    }
}

/// The header that carries a webhook's content type in the outbox.
const CONTENT_TYPE: &str = "content-type";

pub(crate) fn check_endpoint_name(name: &str) -> Result<(), EventError> {
    let visible = !name.chars().any(|c| c.is_control() || c.is_whitespace());
    if name.is_empty() || name.len() > MAX_ID_LEN || !visible {
        return Err(EventError::InvalidEndpointName);
    }
    Ok(())
}

/// A receiver: its name (what events name), its URL and the signer of its deliveries.
///
/// ```
/// use webhook_delivery::Endpoint;
/// use webhook_sig::{Scheme, Secret, Signer};
///
/// let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// let endpoint = Endpoint::new(
///     "orders-hook",
///     "https://hooks.example.com/orders",
///     Signer::new(Scheme::StandardWebhooks, &secret),
/// )
/// .unwrap();
/// assert_eq!(endpoint.url().host_str(), Some("hooks.example.com"));
/// assert!(Endpoint::new("x", "ftp://example.com", Signer::new(Scheme::StandardWebhooks, &secret)).is_err());
/// ```
#[derive(Clone)]
pub struct Endpoint {
    name: String,
    url: reqwest::Url,
    signer: Signer,
}

impl Endpoint {
    /// An endpoint named `name` at `url` (`http` or `https`, no credentials in it), whose
    /// deliveries `signer` signs.
    pub fn new(name: impl Into<String>, url: &str, signer: Signer) -> Result<Self, EventError> {
        let name = name.into();
        check_endpoint_name(&name)?;
        let parsed = reqwest::Url::parse(url).map_err(|e| EventError::InvalidUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(EventError::InvalidUrl(
                "not an http(s) URL with a host".into(),
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EventError::InvalidUrl("credentials in the URL".into()));
        }
        Ok(Self {
            name,
            url: parsed,
            signer,
        })
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The signer of its deliveries.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            // The query may hold a receiver's token: it stays out of Debug.
            .field("url", &redacted_url(&self.url))
            .field("signer", &self.signer)
            .finish()
    }
}

/// `scheme://host[:port]/path`, without the query and the fragment.
pub(crate) fn redacted_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?<redacted>");
    }
    shown
}
