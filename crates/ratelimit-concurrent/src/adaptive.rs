//! An adaptive cap on requests in flight: TCP Vegas applied to a server's concurrency.
use std::time::Duration;

/// The Vegas controller: feed it `(latency, in flight)` samples, read the limit it settles on.
///
/// ```
/// use ratelimit_concurrent::Vegas;
/// use std::time::Duration;
///
/// let mut vegas = Vegas::new(10, 1, 1000);
/// // A service that answers in 10 ms up to 40 requests at once, and queues beyond.
/// for _ in 0..20_000 {
///     let c = vegas.limit();
///     let latency = Duration::from_millis(10) * c.max(40) / 40;
///     vegas.sample(latency, c);
/// }
/// assert!((40..=60).contains(&vegas.limit()), "{}", vegas.limit());
/// ```
///
/// An adaptive cap on requests in flight: TCP Vegas applied to a server's concurrency.
///
/// A fixed cap is either too low (wasted capacity) or too high (queueing, timeouts, and the
/// retries they cause). Vegas infers the right one from latency alone, as Netflix's
/// concurrency-limits library does:
///
/// - `rtt_noload` is the lowest latency seen: the service's time with no queue. With
///   `probe_every(n)`, every n samples the limit is halved, the minimum restarts and slow start
///   begins again, so a service
///   that became slower for good gets a new baseline measured below its knee (off by default: a
///   probe costs a dip in admitted concurrency).
/// - Samples are taken in windows of `limit` samples (about one round of the requests in flight,
///   as TCP Vegas decides once per round trip): a decision per sample would act on reports that
///   arrive one request-duration late, many times over, and oscillate. For a window of mean
///   latency `rtt`, the estimated queue is `limit × (1 − rtt_noload / rtt)`: how many of the
///   requests in flight are waiting rather than being served.
/// - With `α = 3·log10(limit)`, `β = 6·log10(limit)` (log10 taken as at least 1): below `α` the
///   limit grows by `log10(limit)`, above `β` it shrinks by `log10(limit)`, in between it stays.
///   Until the first queue is seen (slow start), a queue of at most `log10(limit)` grows it by `β`
///   instead, so a low initial limit climbs fast; afterwards growth stays gentle, because latency
///   reports arrive one request-duration late and fast growth would overshoot.
/// - Samples taken while fewer than half the limit were in flight say nothing about the limit
///   (the service was not pushed) and are ignored; the limit stays within `[min, max]`.
///
/// At equilibrium the queue is between α and β: a service whose latency starts rising past `K`
/// requests in flight settles a few requests above `K`, with a small standing queue that keeps
/// it busy.
#[derive(Debug, Clone)]
pub struct Vegas {
    limit: f64,
    min: u32,
    max: u32,
    rtt_noload: Option<Duration>,
    probe_every: Option<u64>,
    samples: u64,
    slow_start: bool,
    window: u32,
    window_nanos: u128,
}

impl Vegas {
    /// A controller starting at `initial`, kept within `[min, max]` (min at least 1).
    pub fn new(initial: u32, min: u32, max: u32) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            limit: f64::from(initial.clamp(min, max)),
            min,
            max,
            rtt_noload: None,
            probe_every: None,
            samples: 0,
            slow_start: true,
            window: 0,
            window_nanos: 0,
        }
    }

    /// Every `n` samples (at least 1), halves the limit and measures `rtt_noload` afresh.
    pub fn probe_every(mut self, n: u64) -> Self {
        self.probe_every = Some(n.max(1));
        self
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// The lowest latency seen since the last probe.
    pub fn rtt_noload(&self) -> Option<Duration> {
        self.rtt_noload
    }

    /// Feeds one request's latency and the requests in flight when it started; returns the new
    /// limit.
    pub fn sample(&mut self, rtt: Duration, in_flight: u32) -> u32 {
        self.samples += 1;
        if self
            .probe_every
            .is_some_and(|n| self.samples.is_multiple_of(n))
        {
            self.rtt_noload = None;
            self.limit = (self.limit / 2.0).max(f64::from(self.min));
            (self.window, self.window_nanos) = (0, 0);
            self.slow_start = true;
            return self.limit();
        }
        if rtt.is_zero() {
            return self.limit();
        }
        let noload = match self.rtt_noload {
            Some(n) if n <= rtt => n,
            _ => {
                self.rtt_noload = Some(rtt);
                rtt
            }
        };
        if f64::from(in_flight) * 2.0 < self.limit {
            return self.limit();
        }
        self.window += 1;
        self.window_nanos += rtt.as_nanos();
        if f64::from(self.window) < self.limit {
            return self.limit();
        }
        let mean = self.window_nanos as f64 / f64::from(self.window);
        (self.window, self.window_nanos) = (0, 0);
        let queue = self.limit * (1.0 - noload.as_nanos() as f64 / mean);
        let log = self.limit.log10().max(1.0);
        let (alpha, beta) = (3.0 * log, 6.0 * log);
        if queue > log {
            self.slow_start = false;
        }
        let next = if queue <= log && self.slow_start {
            self.limit + beta
        } else if queue < alpha {
            self.limit + log
        } else if queue > beta {
            self.limit - log
        } else {
            self.limit
        };
        self.limit = next.clamp(f64::from(self.min), f64::from(self.max));
        self.limit()
    }
}
