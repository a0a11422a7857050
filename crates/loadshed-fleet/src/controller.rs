//! The overload controller: a pure function of latency windows, with an injected clock.
use std::time::Duration;

/// The controller's tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// Length of a measurement window.
    pub window: Duration,
    /// Mean latency above which a window counts as overloaded.
    pub target: Duration,
    /// A window is healthy below `recover_below × target`.
    pub recover_below: f64,
    /// Pressure added per overloaded window.
    pub step_up: f64,
    /// Pressure removed per healthy window.
    pub step_down: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(100),
            target: Duration::from_millis(50),
            recover_below: 0.8,
            step_up: 0.1,
            step_down: 0.02,
        }
    }
}

/// The highest pressure: every class but critical shed.
pub(crate) const MAX_PRESSURE: f64 = 3.0;

/// The controller's state. Pressure is kept in thousandths, so steps add up exactly.
///
/// The overload controller: a pure function of latency windows, with an injected clock.
///
/// The controller keeps one number, the **pressure** `p ∈ [0, 3]`. Classes below `⌊p⌋` are shed
/// entirely; the class at `⌊p⌋` is shed with probability `p − ⌊p⌋`; classes above pass. So
/// `p = 0.4` sheds 40 % of test-mode traffic, `p = 1.5` all test-mode and half the reads,
/// `p = 3` everything but critical requests, which the controller never sheds.
///
/// Every window (100 ms by default) it looks at the mean latency of the requests that completed:
///
/// | window | pressure |
/// |---|---|
/// | mean latency above `target` (overloaded) | `p += step_up` (0.1): shedding rises smoothly, one class after the other, and moves to the next class only once the current one is fully shed and the overload persists |
/// | mean latency below `recover_below × target` (healthy; 0.8) | `p −= step_down` (0.02): traffic comes back five times slower than it was shed, class by class in reverse order |
/// | in between, or no completion | unchanged: the hysteresis band that keeps a steady load from oscillating |
///
/// With the defaults, full shedding (`p = 3`) is reached after 3 s of sustained overload and undone
/// after 15 s of health.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    config: ControllerConfig,
    milli: u32,
    up: u32,
    down: u32,
}

/// What one window did to the pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Overloaded: pressure rose.
    Up,
    /// Healthy: pressure fell.
    Down,
    /// In the band, or nothing measured.
    Hold,
}

impl Controller {
    /// A controller at pressure 0.
    pub fn new(config: ControllerConfig) -> Self {
        let milli = |x: f64| (x.clamp(0.0, MAX_PRESSURE) * 1000.0).round() as u32;
        Self {
            up: milli(config.step_up).max(1),
            down: milli(config.step_down).max(1),
            config,
            milli: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The current pressure.
    pub fn pressure(&self) -> f64 {
        f64::from(self.milli) / 1000.0
    }

    /// Ends a window in which `completed` requests finished with mean latency `mean`.
    pub fn end_window(&mut self, completed: u64, mean: Duration) -> Step {
        if completed == 0 {
            return Step::Hold;
        }
        let target = self.config.target.as_secs_f64();
        let mean = mean.as_secs_f64();
        if mean > target {
            self.milli = (self.milli + self.up).min(3000);
            Step::Up
        } else if mean < target * self.config.recover_below && self.milli > 0 {
            self.milli = self.milli.saturating_sub(self.down);
            Step::Down
        } else {
            Step::Hold
        }
    }
}

/// The probability with which the controller sheds `class_index` (0 = test-mode … 3 = critical)
/// at `pressure`.
pub fn shed_probability(pressure: f64, class_index: usize) -> f64 {
    if class_index >= 3 {
        return 0.0;
    }
    (pressure - class_index as f64).clamp(0.0, 1.0)
}
