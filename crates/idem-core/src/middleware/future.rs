//! The response future of [`IdempotencyService`](super::IdempotencyService).

use super::IdempotencyBody;
use futures_util::future::BoxFuture;
use http::Response;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The response future of [`IdempotencyService`](super::IdempotencyService): a request the
    /// layer does not cover (another method, no key where none is required) is the inner
    /// service's future, its body streamed through without an allocation here; a refused key is
    /// answered at once. Only a keyed request — which buffers its body, asks the store and
    /// records the response — is boxed.
    pub struct IdempotencyFuture<F, B, E> {
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
        Ready { res: Option<Response<IdempotencyBody<B>>> },
        Boxed { fut: BoxFuture<'static, Result<Response<IdempotencyBody<B>>, E>> },
    }
}

impl<F, B, E> IdempotencyFuture<F, B, E> {
    pub(crate) fn pass_through(fut: F) -> Self {
        Self {
            state: State::PassThrough { fut },
        }
    }

    pub(crate) fn ready(res: Response<IdempotencyBody<B>>) -> Self {
        Self {
            state: State::Ready { res: Some(res) },
        }
    }

    pub(crate) fn boxed(fut: BoxFuture<'static, Result<Response<IdempotencyBody<B>>, E>>) -> Self {
        Self {
            state: State::Boxed { fut },
        }
    }
}

impl<F, B, E> std::fmt::Debug for IdempotencyFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for IdempotencyFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<IdempotencyBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::PassThrough { fut } => fut
                .poll(cx)
                .map(|res| res.map(|res| res.map(IdempotencyBody::streaming))),
            StateProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending, // polled after completion
            },
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
