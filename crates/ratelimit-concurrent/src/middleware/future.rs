//! The response future of [`KeyedConcurrencyLimitService`](super::KeyedConcurrencyLimitService).

use http::Response;
use retry_safe_core::future::{BoxResponseFuture, LayerFuture, OnResponse};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The response future of [`KeyedConcurrencyLimitService`](super::KeyedConcurrencyLimitService): a
    /// refusal at once, or the inner service's future holding the request's permit until it
    /// completes (the slot is freed when the future completes or is dropped). Only a request that
    /// waits in the queue or asks a fleet limiter over the network is boxed.
    pub struct KeyedConcurrencyLimitFuture<F, P, B, E> {
        #[pin]
        inner: LayerFuture<F, Held<P>, B, E>,
    }
}

/// The permit, freed when the inner future completes (before the response leaves).
pub(crate) struct Held<P>(Option<P>);

impl<P, B> OnResponse<B> for Held<P> {
    fn on_response(self, _: Option<&mut Response<B>>) {
        drop(self.0);
    }
}

impl<F, P, B, E> KeyedConcurrencyLimitFuture<F, P, B, E> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            inner: LayerFuture::ready(res),
        }
    }

    /// The inner future, holding `permit` (none: the request is not limited).
    pub(crate) fn running(fut: F, permit: Option<P>) -> Self {
        Self {
            inner: LayerFuture::inner(fut, Held(permit)),
        }
    }

    pub(crate) fn boxed(fut: BoxResponseFuture<B, E>) -> Self {
        Self {
            inner: LayerFuture::boxed(fut),
        }
    }
}

impl<F, P, B, E> std::fmt::Debug for KeyedConcurrencyLimitFuture<F, P, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyLimitFuture")
            .finish_non_exhaustive()
    }
}

impl<F, P, B, E> Future for KeyedConcurrencyLimitFuture<F, P, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
