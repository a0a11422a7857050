//! The response future of [`LoadShedService`](super::LoadShedService).

use crate::Clock;
use http::Response;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`LoadShedService`]: a refusal at once, or the inner service's
    /// future holding the request's slot until it completes (the slot is freed when the future
    /// completes or is dropped). Only the fleet shedder's network admission is boxed.
    pub struct LoadShedFuture<F, B, E, C: Clock> {
        #[pin]
        state: FutureState<F, B, E, C>,
    }
}

pin_project_lite::pin_project! {
    #[project = FutureStateProj]
    enum FutureState<F, B, E, C: Clock> {
        Ready { res: Option<Response<B>> },
        Admitted {
            #[pin]
            fut: F,
            guard: Option<crate::OwnedGuard<C>>,
        },
        Boxed { fut: BoxFuture<Result<Response<B>, E>> },
    }
}

impl<F, B, E, C: Clock> LoadShedFuture<F, B, E, C> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            state: FutureState::Ready { res: Some(res) },
        }
    }

    pub(crate) fn admitted(fut: F, guard: crate::OwnedGuard<C>) -> Self {
        Self {
            state: FutureState::Admitted {
                fut,
                guard: Some(guard),
            },
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn boxed(fut: BoxFuture<Result<Response<B>, E>>) -> Self {
        Self {
            state: FutureState::Boxed { fut },
        }
    }
}

impl<F, B, E, C: Clock> std::fmt::Debug for LoadShedFuture<F, B, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedFuture").finish_non_exhaustive()
    }
}

impl<F, B, E, C> Future for LoadShedFuture<F, B, E, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Clock,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            FutureStateProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending, // polled after completion
            },
            FutureStateProj::Admitted { fut, guard } => {
                let out = std::task::ready!(fut.poll(cx));
                // The request is done: its slot is free before the response leaves.
                drop(guard.take());
                Poll::Ready(out)
            }
            FutureStateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
