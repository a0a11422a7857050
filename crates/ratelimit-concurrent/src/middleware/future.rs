//! The response future of [`ConcurrencyLimitService`](super::ConcurrencyLimitService).

use http::Response;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`ConcurrencyLimitService`](super::ConcurrencyLimitService): a
    /// refusal at once, or the inner service's future holding the request's permit until it
    /// completes (the slot is freed when the future completes or is dropped). Only a request that
    /// waits in the queue or asks a fleet limiter over the network is boxed.
    pub struct ConcurrencyLimitFuture<F, P, B, E> {
        #[pin]
        state: State<F, P, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, P, B, E> {
        Ready { res: Option<Response<B>> },
        Running {
            #[pin]
            fut: F,
            permit: Option<P>,
        },
        Boxed { fut: BoxFuture<Result<Response<B>, E>> },
    }
}

impl<F, P, B, E> ConcurrencyLimitFuture<F, P, B, E> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            state: State::Ready { res: Some(res) },
        }
    }

    /// The inner future, holding `permit` (none: the request is not limited).
    pub(crate) fn running(fut: F, permit: Option<P>) -> Self {
        Self {
            state: State::Running { fut, permit },
        }
    }

    pub(crate) fn boxed(fut: BoxFuture<Result<Response<B>, E>>) -> Self {
        Self {
            state: State::Boxed { fut },
        }
    }
}

impl<F, P, B, E> std::fmt::Debug for ConcurrencyLimitFuture<F, P, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimitFuture")
            .finish_non_exhaustive()
    }
}

impl<F, P, B, E> Future for ConcurrencyLimitFuture<F, P, B, E>
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
            StateProj::Running { fut, permit } => {
                let out = std::task::ready!(fut.poll(cx));
                // The request is done: its slot is free before the response leaves.
                drop(permit.take());
                Poll::Ready(out)
            }
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
