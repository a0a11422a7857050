//! The response future of [`RateLimitService`](super::RateLimitService).

use super::{RATELIMIT, RATELIMIT_POLICY};
use http::{HeaderValue, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`RateLimitService`](super::RateLimitService): a refusal at once, or
    /// the inner service's future whose response gets the `RateLimit-Policy` and `RateLimit`
    /// headers. Only a decision that must be awaited (a shared limiter on Redis) is boxed; an
    /// in-memory limiter's request costs no allocation here.
    pub struct RateLimitFuture<F, B, E> {
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
            headers: Option<(HeaderValue, HeaderValue)>,
        },
        Boxed { fut: BoxFuture<Result<Response<B>, E>> },
    }
}

impl<F, B, E> RateLimitFuture<F, B, E> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            state: State::Ready { res: Some(res) },
        }
    }

    /// The inner future; its response gets `(RateLimit-Policy, RateLimit)` when given.
    pub(crate) fn inner(fut: F, headers: Option<(HeaderValue, HeaderValue)>) -> Self {
        Self {
            state: State::Inner { fut, headers },
        }
    }

    pub(crate) fn boxed(fut: BoxFuture<Result<Response<B>, E>>) -> Self {
        Self {
            state: State::Boxed { fut },
        }
    }
}

impl<F, B, E> std::fmt::Debug for RateLimitFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RateLimitFuture<F, B, E>
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
            StateProj::Inner { fut, headers } => {
                let mut res = std::task::ready!(fut.poll(cx))?;
                if let Some((policy, state)) = headers.take() {
                    let h = res.headers_mut();
                    h.insert(RATELIMIT_POLICY, policy);
                    h.insert(RATELIMIT, state);
                }
                Poll::Ready(Ok(res))
            }
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
