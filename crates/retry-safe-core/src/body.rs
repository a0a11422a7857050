//! Reading a request body whole, bounded in size and in time (feature `body`): what every layer
//! that must see a body before deciding (idempotency fingerprints, webhook signatures, the
//! gateway's buffering) does the one same way.

use crate::Problem;
use bytes::{Buf, Bytes};
use http::StatusCode;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::time::Duration;

/// Why a body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is (or says it is, in `Content-Length`) larger than the limit.
    #[error("the body is larger than {max} bytes")]
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// The body did not arrive within the deadline.
    #[error("the body did not arrive within {after:?}")]
    TimedOut {
        /// The deadline.
        after: Duration,
    },
    /// The body ended with an error (the client went away, a malformed chunk).
    #[error("the body ended with an error")]
    Unreadable,
    /// The body arrived slower than the minimum rate ([`BodyLimits::min_rate`]).
    #[error("the body arrived slower than {bytes_per_sec} bytes per second")]
    TooSlow {
        /// The minimum rate.
        bytes_per_sec: u32,
    },
}

/// The limits of [`read_body`]: at most `max` bytes, within `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BodyLimits {
    /// The largest body accepted, in bytes.
    pub max: usize,
    /// The time the whole body may take.
    pub deadline: Duration,
    /// The slowest data rate accepted, in bytes per second, and the grace before it applies
    /// (see [`BodyLimits::min_rate`]); `None` (the default): only the deadline.
    pub min_rate: Option<(u32, Duration)>,
}

impl BodyLimits {
    /// At most `max` bytes within `deadline`.
    pub fn new(max: usize, deadline: Duration) -> Self {
        Self {
            max,
            deadline,
            min_rate: None,
        }
    }

    /// Refuses a body that, `grace` after its start, has sent fewer than `bytes_per_sec` bytes
    /// for each second since then ([`BodyError::TooSlow`]): a client trickling a byte a second
    /// is cut off within seconds, not at the deadline, as nginx's `client_body_timeout` and
    /// Apache's `mod_reqtimeout` `MinRate` do.
    pub fn min_rate(mut self, bytes_per_sec: u32, grace: Duration) -> Self {
        self.min_rate = (bytes_per_sec > 0).then_some((bytes_per_sec, grace));
        self
    }

    /// When the body must have sent more than `received` bytes: the deadline, or earlier by the
    /// minimum rate.
    fn next_byte_due(&self, start: tokio::time::Instant, received: usize) -> tokio::time::Instant {
        let end = start + self.deadline;
        match self.min_rate {
            Some((rate, grace)) => {
                let allowed = Duration::from_secs_f64((received as f64 + 1.0) / f64::from(rate));
                end.min(start + grace + allowed)
            }
            None => end,
        }
    }
}

/// Reads `body` whole within `limits`; a `declared` length (`Content-Length`) over the limit is
/// refused before a byte is read.
///
/// ```
/// use retry_safe_core::body::{read_body, BodyError, BodyLimits};
/// use http_body_util::Full;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let limits = BodyLimits::new(4, Duration::from_secs(1));
/// let body = Full::new(bytes::Bytes::from_static(b"abc"));
/// assert_eq!(read_body(body, None, limits).await.unwrap(), "abc");
/// let body = Full::new(bytes::Bytes::from_static(b"abcde"));
/// assert_eq!(read_body(body, None, limits).await, Err(BodyError::TooLarge { max: 4 }));
/// # });
/// ```
pub async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    limits: BodyLimits,
) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<crate::BoxError>,
{
    let too_large = BodyError::TooLarge { max: limits.max };
    if declared.is_some_and(|len| len > limits.max as u64) {
        return Err(too_large);
    }
    if body.is_end_stream() {
        return Ok(Bytes::new()); // nothing to wait for (a GET): no timer, no buffer
    }
    if limits.min_rate.is_none() {
        return read_within_deadline(body, limits).await;
    }
    let start = tokio::time::Instant::now();
    let mut body = std::pin::pin!(body);
    let mut read = bytes::BytesMut::new();
    loop {
        let due = limits.next_byte_due(start, read.len());
        let frame = match tokio::time::timeout_at(due, body.as_mut().frame()).await {
            Err(_) if due < start + limits.deadline => {
                let (bytes_per_sec, _) = limits.min_rate.unwrap_or_default();
                return Err(BodyError::TooSlow { bytes_per_sec });
            }
            Err(_) => {
                return Err(BodyError::TimedOut {
                    after: limits.deadline,
                })
            }
            Ok(None) => return Ok(read.freeze()),
            Ok(Some(Err(_))) => return Err(BodyError::Unreadable),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(mut data) = frame.into_data() {
            if read.len() + data.remaining() > limits.max {
                return Err(too_large);
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                read.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
}

/// [`read_body`] with only the deadline: one timer for the whole body.
async fn read_within_deadline<B>(body: B, limits: BodyLimits) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<crate::BoxError>,
{
    let too_large = BodyError::TooLarge { max: limits.max };
    let read = Limited::new(body, limits.max).collect();
    match tokio::time::timeout(limits.deadline, read).await {
        Err(_) => Err(BodyError::TimedOut {
            after: limits.deadline,
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large),
        Ok(Err(_)) => Err(BodyError::Unreadable),
    }
}

/// The `Content-Length` of `headers`, when it is one number.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl BodyError {
    /// This failure's code among `codes`.
    pub fn code(&self, codes: &BodyCodes) -> &'static str {
        match self {
            Self::TooLarge { .. } => codes.too_large,
            Self::TimedOut { .. } | Self::TooSlow { .. } => codes.timeout,
            Self::Unreadable => codes.unreadable,
        }
    }

    /// The answer to a request whose body this refused: 413, 408 or 400, with the codes
    /// `<prefix>_too_large`, `<prefix>_timeout` and `<prefix>_unreadable` of `codes`
    /// (`codes.name` is the thing whose body it is: "request", "webhook").
    pub fn problem(&self, codes: &BodyCodes) -> Problem {
        let name = codes.name;
        match self {
            Self::TooLarge { max } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                self.code(codes),
                format!("{} body too large", capitalized(name)),
            )
            .with_detail(format!("{name} bodies are limited to {max} bytes")),
            Self::TimedOut { after } => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                self.code(codes),
                format!("{} body too slow", capitalized(name)),
            )
            .with_detail(format!("the body did not arrive within {after:?}")),
            Self::TooSlow { bytes_per_sec } => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                self.code(codes),
                format!("{} body too slow", capitalized(name)),
            )
            .with_detail(format!(
                "the body arrived slower than {bytes_per_sec} bytes per second"
            )),
            Self::Unreadable => Problem::new(
                StatusCode::BAD_REQUEST,
                self.code(codes),
                format!("{} body unreadable", capitalized(name)),
            )
            .with_detail("the request body ended with an error"),
        }
    }
}

/// How a layer names its body failures (see [`BodyError::problem`]).
#[derive(Debug, Clone, Copy)]
pub struct BodyCodes {
    /// Whose body it is, lowercase ("request", "webhook").
    pub name: &'static str,
    /// The code of [`BodyError::TooLarge`].
    pub too_large: &'static str,
    /// The code of [`BodyError::TimedOut`].
    pub timeout: &'static str,
    /// The code of [`BodyError::Unreadable`].
    pub unreadable: &'static str,
}

use crate::backend::capitalized;

/// A layer that reads each request's body whole, within [`BodyLimits`] (size, deadline and
/// minimum rate), **before** the inner services see the request (feature `body`).
///
/// Put it outside the layers that hold capacity — the load shedder, the concurrency caps — so a
/// client trickling its body holds none of their slots while it trickles, and is cut off at the
/// minimum rate (408) instead of at a deadline; nginx buffers request bodies before it takes an
/// upstream connection for the same reason. Refusals are problem+json (codes
/// `request_body_too_large`, `request_body_timeout`, `request_body_unreadable`). Requests that
/// switch protocols (`Upgrade`) and those [`skip`](Self::skip) names (streaming RPCs, say) pass
/// as they came.
///
/// ```
/// use retry_safe_core::body::{BodyLimits, BufferBodyLayer};
/// use http_body_util::Full;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let limits = BodyLimits::new(4, Duration::from_secs(1)).min_rate(1024, Duration::from_secs(1));
/// let echo = tower::service_fn(|req: http::Request<Full<bytes::Bytes>>| async move {
///     Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
/// });
/// let svc = BufferBodyLayer::new(limits).layer(echo);
/// let res = svc.clone().oneshot(http::Request::new(Full::from("ok"))).await.unwrap();
/// assert_eq!(res.status(), 200);
/// let res = svc.oneshot(http::Request::new(Full::from("too long"))).await.unwrap();
/// assert_eq!(res.status(), 413);
/// # });
/// ```
#[derive(Clone)]
pub struct BufferBodyLayer {
    limits: BodyLimits,
    skip: Option<SkipFn>,
}

/// Which requests [`BufferBodyLayer`] lets pass unread.
type SkipFn = std::sync::Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>;

/// The codes of [`BufferBodyLayer`]'s refusals.
pub const REQUEST_BODY_CODES: BodyCodes = BodyCodes {
    name: "request",
    too_large: "request_body_too_large",
    timeout: "request_body_timeout",
    unreadable: "request_body_unreadable",
};

impl std::fmt::Debug for BufferBodyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferBodyLayer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl BufferBodyLayer {
    /// Reads bodies within `limits`.
    pub fn new(limits: BodyLimits) -> Self {
        Self { limits, skip: None }
    }

    /// Lets the requests `skip` names pass unread (their bodies stream to the inner service).
    pub fn skip(
        mut self,
        skip: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.skip = Some(std::sync::Arc::new(skip));
        self
    }
}

impl<S> tower_layer::Layer<S> for BufferBodyLayer {
    type Service = BufferBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferBodyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`BufferBodyLayer`].
#[derive(Clone, Debug)]
pub struct BufferBodyService<S> {
    inner: S,
    layer: BufferBodyLayer,
}

impl<S> BufferBodyService<S> {
    crate::inner_service!(S);
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for BufferBodyService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data: Send> + From<Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
    RB: From<Bytes> + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = crate::future::LayerFuture<S::Future, (), RB, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let upgrading = parts.headers.contains_key(http::header::UPGRADE);
        let skipped = self.layer.skip.as_ref().is_some_and(|skip| skip(&parts));
        if upgrading || skipped || body.is_end_stream() {
            let req = http::Request::from_parts(parts, body);
            return crate::future::LayerFuture::inner(self.inner.call(req), ());
        }
        // The clone driven to readiness serves this request, once its body is in.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.layer.limits;
        crate::future::LayerFuture::boxed(Box::pin(async move {
            match read_body(body, declared_length(&parts.headers), limits).await {
                Ok(bytes) => {
                    inner
                        .call(http::Request::from_parts(parts, B::from(bytes)))
                        .await
                }
                Err(e) => Ok(e.problem(&REQUEST_BODY_CODES).into_response()),
            }
        }))
    }
}
