//! When the attempts of one event are made: the relay's publishes and the webhook dispatcher's
//! deliveries follow the same kind of schedule.

use std::time::Duration;

/// The attempt schedule: the first attempt at once, then one retry after each delay, counted from
/// the previous attempt, with jitter. After the last attempt fails the event is given up (a dead
/// letter in the outbox, exhausted for a webhook).
///
/// The default is Svix's: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h — eight
/// attempts over about 27.5 hours — each retry delay jittered by ±20 %.
///
/// ```
/// use std::time::Duration;
/// use outbox::Schedule;
///
/// let s = Schedule::default();
/// assert_eq!(s.attempts(), 8);
/// assert_eq!(s.base_delay(2), Some(Duration::from_secs(5)));
/// assert_eq!(s.base_delay(9), None); // no ninth attempt
///
/// let fixed = Schedule::new([Duration::from_secs(1)]).jitter(0.0);
/// assert_eq!(fixed.attempts(), 2);
/// assert_eq!(fixed.delay(2, 0.99), Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    delays: Vec<Duration>,
    jitter: f64,
    max_retry_after: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        const M: u64 = 60;
        const H: u64 = 3600;
        Self {
            delays: [5, 5 * M, 30 * M, 2 * H, 5 * H, 10 * H, 10 * H]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(24 * H),
        }
    }
}

impl Schedule {
    /// The first attempt at once, then one retry after each of `retry_delays` (none: a single
    /// attempt). Jitter ±20 %, `Retry-After` capped at a day.
    pub fn new(retry_delays: impl IntoIterator<Item = Duration>) -> Self {
        Self {
            delays: retry_delays.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Spreads each retry delay uniformly over ±`fraction` of it (0 for none; clamped to 0..=1),
    /// so that events that failed together do not all come back together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The longest `Retry-After` a receiver can impose (default 24 h); longer ones are cut to it.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// How many attempts an event gets.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len() + 1).unwrap_or(u32::MAX)
    }

    /// The delay before attempt `n` (1 = the first, at once) without jitter; `None` past the
    /// last.
    pub fn base_delay(&self, n: u32) -> Option<Duration> {
        match n {
            0 => None,
            1 => Some(Duration::ZERO),
            n => self.delays.get(usize::try_from(n - 2).ok()?).copied(),
        }
    }

    /// The delay before attempt `n` with the jitter drawn from `unit` (uniform in `[0, 1)`);
    /// `None` past the last attempt.
    pub fn delay(&self, n: u32, unit: f64) -> Option<Duration> {
        let base = self.base_delay(n)?;
        if self.jitter == 0.0 || base.is_zero() {
            return Some(base);
        }
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }

    /// The wait before attempt `n` after a failure that said `Retry-After: hint`: the
    /// scheduled delay, or the hint when that is longer (capped by
    /// [`max_retry_after`](Self::max_retry_after)); `None` past the last attempt.
    pub fn delay_after(&self, n: u32, unit: f64, hint: Option<Duration>) -> Option<Duration> {
        let scheduled = self.delay(n, unit)?;
        Some(match hint {
            Some(hint) => scheduled.max(hint.min(self.max_retry_after)),
            None => scheduled,
        })
    }
}
