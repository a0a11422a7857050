//! Three servers in leased mode sharing one fleet limit: a seeded random schedule of requests
//! at pinned times, the admitted times checked against the documented overshoot bound over every
//! window. Shared by the single-node and the cluster tests.

use ratelimit_token_bucket::{Clock, LeasedLimiter, ManualClock, RedisLimiter};
use std::time::Duration;

/// What a run admitted, and the largest excess over the exact limit in any window.
#[derive(Debug)]
pub struct Report {
    pub requests: usize,
    pub admitted: usize,
    pub local: u64,
    pub calls: u64,
    pub worst_excess: i64,
    pub bound: u64,
}

/// `requests` requests for one key, each to a server chosen at random, `0..max_gap` apart on
/// `clock`; between requests the servers' background renewals get a turn (no sleep).
pub async fn run(
    servers: &[LeasedLimiter<String, ManualClock>],
    clock: &ManualClock,
    requests: usize,
    max_gap: Duration,
    seed: u64,
) -> Report {
    let key = "user-42".to_owned();
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut times = Vec::new();
    for _ in 0..requests {
        clock.advance(Duration::from_nanos(
            next() % u64::try_from(max_gap.as_nanos()).unwrap().max(1),
        ));
        let server = &servers[(next() % servers.len() as u64) as usize];
        if server.check(&key, 1).await.unwrap().is_allowed() {
            times.push(clock.now_nanos());
        }
        for _ in 0..(next() % 4) {
            tokio::task::yield_now().await;
        }
    }
    let fleet: &RedisLimiter = servers[0].fleet();
    let quota = fleet.quotas().quotas()[0];
    let interval = u64::try_from(quota.interval().as_nanos()).unwrap();
    let burst = quota.burst_size();
    let held = servers[0].lease().max_held() * servers.len() as u64;
    Report {
        requests,
        admitted: times.len(),
        local: servers.iter().map(LeasedLimiter::local_decisions).sum(),
        calls: servers.iter().map(LeasedLimiter::redis_calls).sum(),
        worst_excess: worst_excess(&times, burst, interval),
        bound: held,
    }
}

/// The largest `admitted − (burst + w / interval)` over every window that starts and ends at an
/// admitted request (the windows where the excess peaks).
fn worst_excess(times: &[u64], burst: u64, interval: u64) -> i64 {
    let mut worst = i64::MIN;
    for (i, &start) in times.iter().enumerate() {
        for (j, &end) in times.iter().enumerate().skip(i) {
            let admitted = (j - i + 1) as i64;
            let exact = (burst + (end - start) / interval) as i64;
            worst = worst.max(admitted - exact);
        }
    }
    worst
}
