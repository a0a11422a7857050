//! The response future of [`OptimisticLockService`](super::OptimisticLockService).

use super::service::add_validators;
use crate::precondition::Current;
use http::Response;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`OptimisticLockService`](super::OptimisticLockService): a refusal
    /// (`428`, `412`, `304`, `400`, `503`) at once, or the handler's future — a successful read's
    /// response getting `ETag` / `Last-Modified` where it has none. Only a version read that must
    /// be awaited (a database) is boxed.
    pub struct OptimisticLockFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        Ready { res: Option<Response<B>> },
        Inner {
            #[pin]
            fut: F,
            validators: Option<Current>,
        },
        Boxed { fut: BoxFuture<Result<Response<B>, E>> },
    }
}

impl<F, B, E> OptimisticLockFuture<F, B, E> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            state: State::Ready { res: Some(res) },
        }
    }

    /// The handler's future; a successful response gets `validators` where it has none.
    pub(crate) fn inner(fut: F, validators: Option<Current>) -> Self {
        Self {
            state: State::Inner { fut, validators },
        }
    }

    pub(crate) fn boxed(fut: BoxFuture<Result<Response<B>, E>>) -> Self {
        Self {
            state: State::Boxed { fut },
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
        match self.project().state.project() {
            StateProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending, // polled after completion
            },
            StateProj::Inner { fut, validators } => {
                let mut res = std::task::ready!(fut.poll(cx))?;
                if let Some(current) = validators.take() {
                    if res.status().is_success() {
                        add_validators(res.headers_mut(), &current);
                    }
                }
                Poll::Ready(Ok(res))
            }
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
