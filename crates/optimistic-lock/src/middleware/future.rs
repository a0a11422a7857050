//! The response future of [`OptimisticLockService`](super::OptimisticLockService).

use super::service::add_validators;
use crate::precondition::Current;
use http::Response;
use retry_safe_core::future::{BoxResponseFuture, LayerFuture, OnResponse};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The response future of [`OptimisticLockService`](super::OptimisticLockService): a refusal
    /// (`428`, `412`, `304`, `400`, `503`) at once, or the handler's future — a successful read's
    /// response getting `ETag` / `Last-Modified` where it has none. Only a version read that must
    /// be awaited (a database) is boxed.
    pub struct OptimisticLockFuture<F, B, E> {
        #[pin]
        inner: LayerFuture<F, Validators, B, E>,
    }
}

/// The current validators, for a successful response that has none.
pub(crate) struct Validators(Option<Current>);

impl<B> OnResponse<B> for Validators {
    fn on_response(self, res: Option<&mut Response<B>>) {
        if let (Some(res), Some(current)) = (res, self.0) {
            if res.status().is_success() {
                add_validators(res.headers_mut(), &current);
            }
        }
    }
}

impl<F, B, E> OptimisticLockFuture<F, B, E> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            inner: LayerFuture::ready(res),
        }
    }

    /// The handler's future; a successful response gets `validators` where it has none.
    pub(crate) fn inner(fut: F, validators: Option<Current>) -> Self {
        Self {
            inner: LayerFuture::inner(fut, Validators(validators)),
        }
    }

    pub(crate) fn boxed(fut: BoxResponseFuture<B, E>) -> Self {
        Self {
            inner: LayerFuture::boxed(fut),
        }
    }
}

impl<F, B, E> std::fmt::Debug for OptimisticLockFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimisticLockFuture")
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for OptimisticLockFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
