//! The response future of [`PriorityShedService`](super::PriorityShedService).

use crate::Clock;
use http::Response;
use retry_safe_core::future::{LayerFuture, OnResponse};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The response future of [`PriorityShedService`]: a refusal at once, or the inner service's
    /// future holding the request's slot until it completes (the slot is freed when the future
    /// completes or is dropped). Only the fleet shedder's network admission is boxed.
    pub struct PriorityShedFuture<F, B, E, C: Clock> {
        #[pin]
        inner: LayerFuture<F, Admitted<C>, B, E>,
    }
}

/// The request's slot, freed when the inner future completes (before the response leaves).
pub(crate) struct Admitted<C: Clock>(crate::OwnedGuard<C>);

impl<C: Clock, B> OnResponse<B> for Admitted<C> {
    fn on_response(self, _: Option<&mut Response<B>>) {
        drop(self.0);
    }
}

impl<F, B, E, C: Clock> PriorityShedFuture<F, B, E, C> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            inner: LayerFuture::ready(res),
        }
    }

    pub(crate) fn admitted(fut: F, guard: crate::OwnedGuard<C>) -> Self {
        Self {
            inner: LayerFuture::inner(fut, Admitted(guard)),
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn boxed(fut: retry_safe_core::future::BoxResponseFuture<B, E>) -> Self {
        Self {
            inner: LayerFuture::boxed(fut),
        }
    }
}

impl<F, B, E, C: Clock> std::fmt::Debug for PriorityShedFuture<F, B, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityShedFuture").finish_non_exhaustive()
    }
}

impl<F, B, E, C> Future for PriorityShedFuture<F, B, E, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Clock,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
