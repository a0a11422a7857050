//! [`LayerFuture`]: the response future every layer of the workspace is built on.
//!
//! A layer answers a request in one of three ways: at once (a refusal, a replay), by running the
//! inner service and touching its response when it completes (adding headers, freeing a slot),
//! or — only when its decision needs I/O — through a boxed future. `LayerFuture` is those three
//! states; each layer wraps it in a named future of its own, as tower's middleware do, so that
//! the common cases cost no allocation.

use http::Response;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed response future: the path of a decision that had to wait for I/O.
pub type BoxResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

/// What a layer does when the inner service's future completes: `Some(res)` on success, `None`
/// when the inner service failed. Runs once, before the response leaves the layer.
pub trait OnResponse<B> {
    /// Touches the inner response (or learns that there is none).
    fn on_response(self, res: Option<&mut Response<B>>);
}

/// Holds nothing: the inner response passes as it is.
impl<B> OnResponse<B> for () {
    fn on_response(self, _: Option<&mut Response<B>>) {}
}

pin_project_lite::pin_project! {
    /// A response at once, the inner service's future followed by `A`'s
    /// [`on_response`](OnResponse::on_response), or a boxed future.
    ///
    /// ```
    /// use retry_safe_core::future::{LayerFuture, OnResponse};
    /// use http::Response;
    ///
    /// struct Served;
    /// impl OnResponse<&'static str> for Served {
    ///     fn on_response(self, res: Option<&mut Response<&'static str>>) {
    ///         if let Some(res) = res {
    ///             res.headers_mut().insert("x-served-by", "edge".parse().unwrap());
    ///         }
    ///     }
    /// }
    /// # futures_executor_block_on(async {
    /// let inner = async { Ok::<_, ()>(Response::new("ok")) };
    /// let res = LayerFuture::<_, _, _, ()>::inner(inner, Served).await.unwrap();
    /// assert_eq!(res.headers()["x-served-by"], "edge");
    /// # });
    /// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub struct LayerFuture<F, A, B, E> {
        #[pin]
        state: State<F, A, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, A, B, E> {
        Ready { res: Option<Response<B>> },
        Inner {
            #[pin]
            fut: F,
            after: Option<A>,
        },
        Boxed { fut: BoxResponseFuture<B, E> },
    }
}

impl<F, A, B, E> LayerFuture<F, A, B, E> {
    /// Answers `res` at once.
    pub fn ready(res: Response<B>) -> Self {
        Self {
            state: State::Ready { res: Some(res) },
        }
    }

    /// Runs `fut`, then `after` on its outcome.
    pub fn inner(fut: F, after: A) -> Self {
        Self {
            state: State::Inner {
                fut,
                after: Some(after),
            },
        }
    }

    /// Runs the boxed `fut` (a decision that needed I/O).
    pub fn boxed(fut: BoxResponseFuture<B, E>) -> Self {
        Self {
            state: State::Boxed { fut },
        }
    }
}

impl<F, A, B, E> std::fmt::Debug for LayerFuture<F, A, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFuture").finish_non_exhaustive()
    }
}

impl<F, A, B, E> Future for LayerFuture<F, A, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    A: OnResponse<B>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending, // polled after completion
            },
            StateProj::Inner { fut, after } => {
                let mut out = std::task::ready!(fut.poll(cx));
                if let Some(after) = after.take() {
                    after.on_response(out.as_mut().ok());
                }
                Poll::Ready(out)
            }
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

/// The accessors tower's middleware give their services — `get_ref`, `get_mut`, `into_inner` —
/// for a service whose wrapped service is its field `inner` of type `$inner`; expands inside the
/// service's `impl` block.
///
/// ```
/// struct Counted<S> { inner: S, calls: u64 }
/// impl<S> Counted<S> {
///     retry_safe_core::inner_service!(S);
/// }
/// let c = Counted { inner: "svc", calls: 0 };
/// assert_eq!((*c.get_ref(), c.calls), ("svc", 0));
/// assert_eq!(c.into_inner(), "svc");
/// ```
#[macro_export]
macro_rules! inner_service {
    ($inner:ty) => {
        /// The wrapped service.
        pub fn get_ref(&self) -> &$inner {
            &self.inner
        }

        /// The wrapped service, mutably.
        pub fn get_mut(&mut self) -> &mut $inner {
            &mut self.inner
        }

        /// The wrapped service, this one dropped.
        pub fn into_inner(self) -> $inner {
            self.inner
        }
    };
}
