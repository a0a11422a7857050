//! The response future of [`KeyedRateLimitService`](super::KeyedRateLimitService).

use super::{RATELIMIT, RATELIMIT_POLICY};
use http::{HeaderValue, Response};
use retry_safe_core::future::{BoxResponseFuture, LayerFuture, OnResponse};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The response future of [`KeyedRateLimitService`](super::KeyedRateLimitService): a refusal at once, or
    /// the inner service's future whose response gets the `RateLimit-Policy` and `RateLimit`
    /// headers. Only a decision that must be awaited (a shared limiter on Redis) is boxed; an
    /// in-memory limiter's request costs no allocation here.
    pub struct KeyedRateLimitFuture<F, B, E> {
        #[pin]
        inner: LayerFuture<F, Headers, B, E>,
    }
}

/// `(RateLimit-Policy, RateLimit)` for the inner response, when the request was decided.
pub(crate) struct Headers(Option<(HeaderValue, HeaderValue)>);

impl<B> OnResponse<B> for Headers {
    fn on_response(self, res: Option<&mut Response<B>>) {
        if let (Some(res), Some((policy, state))) = (res, self.0) {
            let h = res.headers_mut();
            h.insert(RATELIMIT_POLICY, policy);
            h.insert(RATELIMIT, state);
        }
    }
}

impl<F, B, E> KeyedRateLimitFuture<F, B, E> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            inner: LayerFuture::ready(res),
        }
    }

    /// The inner future; its response gets `(RateLimit-Policy, RateLimit)` when given.
    pub(crate) fn inner(fut: F, headers: Option<(HeaderValue, HeaderValue)>) -> Self {
        Self {
            inner: LayerFuture::inner(fut, Headers(headers)),
        }
    }

    pub(crate) fn boxed(fut: BoxResponseFuture<B, E>) -> Self {
        Self {
            inner: LayerFuture::boxed(fut),
        }
    }
}

impl<F, B, E> std::fmt::Debug for KeyedRateLimitFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimitFuture")
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for KeyedRateLimitFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
