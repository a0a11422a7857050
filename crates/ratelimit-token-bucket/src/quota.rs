//! Quotas: how many requests per period, with how large a burst.
use retry_safe_core::duration_to_nanos as to_nanos;
use std::fmt;
use std::time::Duration;

/// The most quotas one limiter checks per request.
pub const MAX_QUOTAS: usize = 4;

/// The longest burst window (`burst × interval`) a quota may have: 2^52 ns, about 52 days.
///
/// It keeps every offset exact in the 53-bit integers of Redis' Lua, so the in-memory and the
/// Redis limiter compute the same decisions to the nanosecond.
pub const MAX_WINDOW: Duration = Duration::from_nanos(1 << 52);

/// A rate limit: `rate` requests per `period`, of which up to `burst` may arrive at once.
///
/// Under GCRA this is a token bucket holding `burst` tokens that refills one token every
/// `period / rate` (the emission interval, rounded up to a whole nanosecond so the limit is never
/// exceeded). The default burst is `rate`.
///
/// ```
/// use ratelimit_token_bucket::Quota;
/// use std::time::Duration;
///
/// let q = Quota::per_second(10).burst(20).named("per-second");
/// assert_eq!(q.interval(), Duration::from_millis(100));
/// assert_eq!(q.window(), Duration::from_secs(2)); // a full bucket refills in 2 s
/// ```
///
/// Quotas: how many requests per period, with how large a burst.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    rate: u64,
    period: Duration,
    burst: u64,
    name: Option<&'static str>,
}

impl Quota {
    /// `rate` requests per `period`, burst `rate`.
    pub const fn new(rate: u64, period: Duration) -> Self {
        Self {
            rate,
            period,
            burst: rate,
            name: None,
        }
    }

    /// `rate` requests per second.
    pub const fn per_second(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(1))
    }

    /// `rate` requests per minute.
    pub const fn per_minute(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(60))
    }

    /// `rate` requests per hour.
    pub const fn per_hour(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(3600))
    }

    /// `rate` requests per day.
    pub const fn per_day(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(86_400))
    }

    /// The same quota with room for `burst` requests at once.
    pub const fn burst(mut self, burst: u64) -> Self {
        self.burst = burst;
        self
    }

    /// The same quota with the name the `RateLimit` headers give it (a short printable token such
    /// as `per-second`; by default `default`, or `q1`, `q2`… in a set of several).
    pub const fn named(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    /// Requests per period.
    pub const fn rate(&self) -> u64 {
        self.rate
    }

    /// The period of the rate.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// Requests that may arrive at once.
    pub const fn burst_size(&self) -> u64 {
        self.burst
    }

    /// The name given with [`named`](Self::named), if any.
    pub const fn name(&self) -> Option<&'static str> {
        self.name
    }

    /// The emission interval: one token is restored every `period / rate`, rounded up to a whole
    /// nanosecond (1 ns if the quota is invalid).
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos().max(1))
    }

    /// The time an empty bucket takes to fill: `burst × interval`.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos().saturating_mul(self.burst))
    }

    fn interval_nanos(&self) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        to_nanos(self.period).div_ceil(self.rate)
    }

    /// Checks the quota on its own.
    pub fn validate(&self) -> Result<(), QuotaError> {
        if self.rate == 0 {
            return Err(QuotaError::ZeroRate);
        }
        if self.period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        if self.burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let too_long = match self.interval_nanos().checked_mul(self.burst) {
            Some(tolerance) => tolerance > to_nanos(MAX_WINDOW),
            None => true,
        };
        if too_long {
            return Err(QuotaError::WindowTooLong {
                window: self.window(),
            });
        }
        if let Some(name) = self.name {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                return Err(QuotaError::InvalidName(name));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("rate", &self.rate)
            .field("period", &self.period)
            .field("burst", &self.burst)
            .field("name", &self.name)
            .finish()
    }
}

/// A quota or set of quotas that cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// A rate of zero requests.
    #[error("a quota's rate must be at least 1 request per period")]
    ZeroRate,
    /// A zero-length period.
    #[error("a quota's period must be longer than zero")]
    ZeroPeriod,
    /// A burst of zero requests: nothing could ever pass.
    #[error("a quota's burst must be at least 1")]
    ZeroBurst,
    /// `burst × interval` is longer than [`MAX_WINDOW`].
    #[error(
        "a quota's burst window ({window:?}) is longer than the 2^52 ns (about 52 days) supported"
    )]
    WindowTooLong {
        /// The window asked for.
        window: Duration,
    },
    /// A name that cannot appear in a `RateLimit` header.
    #[error("quota name {0:?} must be non-empty printable ASCII without quotes or backslashes")]
    InvalidName(&'static str),
    /// No quota at all.
    #[error("a limiter needs at least one quota")]
    Empty,
    /// More than [`MAX_QUOTAS`] quotas.
    #[error("a limiter checks at most {MAX_QUOTAS} quotas, {0} given")]
    TooMany(usize),
    /// Two quotas of one set with the same name.
    #[error("two quotas are named {0:?}")]
    DuplicateName(String),
}
