//! The response future of [`WebhookService`](super::WebhookService).

use futures_util::future::BoxFuture;
use http::Response;
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
        state: State<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        PassThrough {
            #[pin]
            fut: F,
        },
        Delivery { fut: BoxFuture<'static, Result<Response<B>, E>> },
    }
}

impl<F, B, E> WebhookFuture<F, B, E> {
    pub(crate) fn pass_through(fut: F) -> Self {
        Self {
            state: State::PassThrough { fut },
        }
    }

    pub(crate) fn delivery(fut: BoxFuture<'static, Result<Response<B>, E>>) -> Self {
        Self {
            state: State::Delivery { fut },
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
        match self.project().state.project() {
            StateProj::PassThrough { fut } => fut.poll(cx),
            StateProj::Delivery { fut } => fut.as_mut().poll(cx),
        }
    }
}
