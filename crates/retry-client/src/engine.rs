//! The retry loop every integration shares: classify, consult the budget and the throttle,
//! wait (jittered backoff or the server's hint), respect the deadline, keep the history.

use crate::budget::{AdaptiveThrottle, RetryBudget};
use crate::hints::server_hint;
use crate::policy::{Failure, Outcome, Reason, RetryPolicy};
use http::{HeaderMap, Method, StatusCode};
use parking_lot::Mutex;
use retry_safe_core::{Clock, SystemClock};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// One attempt of a logical request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// The wait before it (zero for the first).
    pub waited: Duration,
    /// What it got (displayed as `status_201`, `not_sent`, `maybe_sent`, `timeout`, `fatal`).
    pub outcome: Reason,
}

/// Why the client stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// The last attempt's outcome is final (success, or a status a retry cannot change).
    Done,
    /// A retry would not be safe (the request may have been acted on and it has no key).
    NotSafe,
    /// The policy's attempts are used up.
    AttemptsExhausted,
    /// The shared retry budget is spent (the service is failing for many requests).
    BudgetExhausted,
    /// The body was too large or streaming, so it could be sent only once.
    BodyNotReplayable,
    /// The next attempt would start after the deadline.
    Deadline,
    /// The server asked for a longer wait than the policy allows.
    HintTooLong,
    /// Adaptive throttling refused the attempt locally.
    Throttled,
}

/// The attempts of one logical request, added to the response's extensions and to every error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// Why there was no further attempt.
    pub stop: Option<Stop>,
    /// The `Idempotency-Key` every attempt carried, if any.
    pub idempotency_key: Option<String>,
}

impl History {
    /// The number of attempts made.
    pub fn len(&self) -> usize {
        self.attempts.len()
    }

    /// Whether no attempt was made.
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }
}

/// Why a logical request ended without a response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// The last attempt failed in the transport and no further attempt followed
    /// (see [`History::stop`]).
    #[error("request failed after {} attempt(s) ({:?}): {source}", .history.len(), .history.stop)]
    Failed {
        /// The transport's error.
        #[source]
        source: E,
        /// The attempts.
        history: History,
    },
    /// The last attempt got no answer within its timeout and no further attempt followed.
    #[error("no answer within the attempt timeout after {} attempt(s) ({:?})", .history.len(), .history.stop)]
    TimedOut {
        /// The attempts.
        history: History,
    },
    /// The last attempt failed in the transport or timed out, and waiting for the next one would
    /// pass the deadline, so the call ended at once. (When the last attempt got an answer, the
    /// call returns that answer instead, with [`Stop::Deadline`] in its [`History`].)
    #[error("the next attempt would start after the deadline: it needs a wait of {wait:?}, {remaining:?} are left (last: {last})")]
    Deadline {
        /// The wait the next attempt needed.
        wait: Duration,
        /// The time left before the deadline.
        remaining: Duration,
        /// The last attempt's outcome.
        last: Reason,
        /// The attempts.
        history: History,
    },
    /// The request body could not be read (nothing was sent).
    #[error("the request body could not be read: {source}")]
    BodyUnreadable {
        /// The body's error.
        #[source]
        source: retry_safe_core::BoxError,
        /// No attempts.
        history: History,
    },
    /// Adaptive throttling refused the request locally: the backend is rejecting most traffic.
    #[error("rejected locally by adaptive throttling (the backend refuses most requests)")]
    Throttled {
        /// The attempts (possibly none).
        history: History,
    },
}

impl<E> RetryError<E> {
    /// The attempts made.
    pub fn history(&self) -> &History {
        match self {
            RetryError::Failed { history, .. }
            | RetryError::TimedOut { history }
            | RetryError::Deadline { history, .. }
            | RetryError::BodyUnreadable { history, .. }
            | RetryError::Throttled { history } => history,
        }
    }
}

/// The shared state of a retrying client: its policy, its budget, its optional throttle. Cheap
/// to clone; clones share the budget and the throttle.
#[derive(Clone)]
pub struct Retrier {
    pub(crate) policy: Arc<RetryPolicy>,
    budget: Option<RetryBudget>,
    throttle: Option<AdaptiveThrottle>,
    clock: Arc<dyn Clock>,
    rng: Arc<Mutex<fastrand::Rng>>,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

impl Default for Retrier {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

/// What an integration tells the loop about one attempt.
pub(crate) enum Sent<R, E> {
    Response(R),
    Error(E, Failure),
    TimedOut,
}

impl Retrier {
    /// A retrier with `policy` and the default [`RetryBudget`].
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            budget: Some(RetryBudget::default()),
            throttle: None,
            clock: Arc::new(SystemClock::new()),
            rng: Arc::new(Mutex::new(fastrand::Rng::new())),
        }
    }

    /// Another budget (`None`: retries limited by the policy's attempts only — not recommended).
    pub fn budget(mut self, budget: Option<RetryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Adds adaptive client-side throttling.
    pub fn throttle(mut self, throttle: AdaptiveThrottle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The wall clock for `Retry-After` dates (tests: a manual or tokio clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// A seeded jitter source (reproducible waits).
    pub fn seed(self, seed: u64) -> Self {
        *self.rng.lock() = fastrand::Rng::with_seed(seed);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn jitter(&self, retry: u32) -> Duration {
        let ceiling = self.policy.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.lock().u64(0..=nanos))
    }

    /// Gives a non-idempotent request its one `Idempotency-Key` when the policy wants one (every
    /// attempt then carries it); the key the request carries, its own or the new one.
    pub(crate) fn key_request(&self, method: &Method, headers: &mut HeaderMap) -> Option<String> {
        if let Some(format) = self.policy.wants_key(method, headers) {
            if let Ok(v) = http::HeaderValue::from_str(&format.generate()) {
                headers.insert(retry_safe_core::headers::IDEMPOTENCY_KEY, v);
            }
        }
        let key = headers
            .get(retry_safe_core::headers::IDEMPOTENCY_KEY)?
            .to_str()
            .ok()?;
        Some(key.to_owned())
    }

    /// Runs one logical request: `send(n)` makes attempt `n` (1-based).
    pub(crate) async fn run<R, E, Fut>(
        &self,
        method: &Method,
        keyed: bool,
        replayable: bool,
        mut history: History,
        inspect: impl Fn(&R) -> (StatusCode, &HeaderMap),
        mut send: impl FnMut(u32, Option<Duration>) -> Fut,
    ) -> Result<(R, History), RetryError<E>>
    where
        Fut: Future<Output = Sent<R, E>>,
    {
        let deadline = self
            .policy
            .deadline
            .map(|d| tokio::time::Instant::now() + d);
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut waited = Duration::ZERO;
        for number in 1.. {
            if self.throttle.as_ref().is_some_and(|t| !t.admit()) {
                history.stop = Some(Stop::Throttled);
                count("throttled");
                return Err(RetryError::Throttled { history });
            }
            #[cfg(feature = "metrics")]
            metrics::counter!("retry_client_attempts_total").increment(1);
            let sent = send(number, self.attempt_timeout(deadline)).await;
            let (outcome, label, headers) = self.judge(method, keyed, &sent, &inspect);
            history.attempts.push(Attempt {
                number,
                waited,
                outcome: label,
            });
            let wait = match self.next_wait(outcome, replayable, number, headers) {
                Ok(wait) => wait,
                Err(stop) => return self.finish(sent, history, stop),
            };
            if let Some(left) =
                deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
            {
                if wait >= left {
                    history.stop = Some(Stop::Deadline);
                    count("deadline");
                    // The caller sees the server's answer (its status, its hint) when there is one.
                    if let Sent::Response(r) = sent {
                        return Ok((r, history));
                    }
                    return Err(RetryError::Deadline {
                        wait,
                        remaining: left,
                        last: label,
                        history,
                    });
                }
            }
            if self.budget.as_ref().is_some_and(|b| !b.withdraw()) {
                return self.finish(sent, history, Stop::BudgetExhausted);
            }
            tracing::debug!(attempt = number, outcome = %label, wait_ms = wait.as_millis() as u64, "retrying");
            #[cfg(feature = "metrics")]
            metrics::counter!("retry_client_retries_total", "reason" => label.label()).increment(1);
            tokio::time::sleep(wait).await;
            waited = wait;
        }
        unreachable!("the loop returns")
    }

    /// The time one attempt may take: the attempt timeout, cut to what is left of the deadline.
    fn attempt_timeout(&self, deadline: Option<tokio::time::Instant>) -> Option<Duration> {
        let remaining = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        match (self.policy.attempt_timeout, remaining) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    /// What the policy makes of one attempt: the outcome, its label, and the response headers
    /// (when there was a response) for the server's hint.
    fn judge<'s, R, E>(
        &self,
        method: &Method,
        keyed: bool,
        sent: &'s Sent<R, E>,
        inspect: &impl Fn(&'s R) -> (StatusCode, &'s HeaderMap),
    ) -> (Outcome, Reason, Option<&'s HeaderMap>) {
        let classify = &self.policy.classify;
        match sent {
            Sent::Response(r) => {
                let (status, headers) = inspect(r);
                if let Some(throttle) = &self.throttle {
                    if !matches!(status.as_u16(), 429 | 503) {
                        throttle.accepted();
                    }
                }
                let outcome = classify(method, keyed, Ok(status));
                (outcome, Reason::Status(status), Some(headers))
            }
            Sent::Error(_, failure) => {
                let o = classify(method, keyed, Err(*failure));
                let label = match o {
                    Outcome::Retry(r) | Outcome::GiveUp(r) => r,
                    Outcome::Done => Reason::Fatal,
                };
                (o, label, None)
            }
            Sent::TimedOut => (
                classify(method, keyed, Err(Failure::MaybeSent)),
                Reason::TimedOut,
                None,
            ),
        }
    }

    /// The wait before attempt `number + 1`, or why there is none: the server's hint when it
    /// gave one (refused past `max_hint`), else full jitter.
    fn next_wait(
        &self,
        outcome: Outcome,
        replayable: bool,
        number: u32,
        headers: Option<&HeaderMap>,
    ) -> Result<Duration, Stop> {
        match outcome {
            Outcome::Done => return Err(Stop::Done),
            Outcome::GiveUp(_) => return Err(Stop::NotSafe),
            Outcome::Retry(_) if !replayable => return Err(Stop::BodyNotReplayable),
            Outcome::Retry(_) if number >= self.policy.max_attempts => {
                return Err(Stop::AttemptsExhausted)
            }
            Outcome::Retry(_) => {}
        }
        // The server's hint is read only when another attempt may follow.
        let now = UNIX_EPOCH + self.clock.unix_time();
        match headers.and_then(|h| server_hint(h, now)) {
            Some(h) if h > self.policy.max_hint => Err(Stop::HintTooLong),
            // The server knows best: come back exactly when it asked.
            Some(h) => Ok(h),
            None => Ok(self.jitter(number)),
        }
    }

    fn finish<R, E>(
        &self,
        sent: Sent<R, E>,
        mut history: History,
        stop: Stop,
    ) -> Result<(R, History), RetryError<E>> {
        history.stop = Some(stop);
        if stop != Stop::Done {
            count(match stop {
                Stop::NotSafe => "not_safe",
                Stop::AttemptsExhausted => "attempts_exhausted",
                Stop::BudgetExhausted => "budget_exhausted",
                Stop::BodyNotReplayable => "body_not_replayable",
                Stop::HintTooLong => "hint_too_long",
                _ => "other",
            });
            tracing::debug!(?stop, attempts = history.len(), "not retrying");
        }
        match sent {
            Sent::Response(r) => Ok((r, history)),
            Sent::Error(source, _) => Err(RetryError::Failed { source, history }),
            Sent::TimedOut => Err(RetryError::TimedOut { history }),
        }
    }
}

/// A give-up reason to the `metrics` facade (feature `metrics`).
#[allow(unused_variables)]
fn count(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("retry_client_give_ups_total", "reason" => reason).increment(1);
}

/// The failure class of a transport error, read from its source chain: an I/O error that says the
/// connection was never made (refused, unreachable, DNS) means the request was not sent; anything
/// else (reset, EOF, broken pipe, unknown) may have been sent.
pub fn classify_error(error: &(dyn std::error::Error + 'static)) -> Failure {
    use std::io::ErrorKind::*;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                ConnectionRefused | AddrNotAvailable | NotFound | HostUnreachable
                | NetworkUnreachable => Failure::NotSent,
                _ => Failure::MaybeSent,
            };
        }
        next = e.source();
    }
    Failure::MaybeSent
}
