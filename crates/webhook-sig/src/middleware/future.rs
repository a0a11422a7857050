//! The response future of [`WebhookService`](super::WebhookService).

use http::Response;
use retry_safe_core::future::{BoxResponseFuture, LayerFuture};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The response future of [`WebhookService`](super::WebhookService): a request that is not a
    /// delivery (any method but POST) is the inner service's future, untouched and unboxed; a
    /// delivery — whose body is buffered, verified and checked for a replay before the handler
    /// runs — is boxed.
    pub struct WebhookFuture<F, B, E> {
        #[pin]
        inner: LayerFuture<F, (), B, E>,
    }
}

impl<F, B, E> WebhookFuture<F, B, E> {
    pub(crate) fn pass_through(fut: F) -> Self {
        Self {
            inner: LayerFuture::inner(fut, ()),
        }
    }

    pub(crate) fn delivery(fut: BoxResponseFuture<B, E>) -> Self {
        Self {
            inner: LayerFuture::boxed(fut),
        }
    }
}

impl<F, B, E> std::fmt::Debug for WebhookFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for WebhookFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
