//! `cargo xtask chaos [--quick] [--seed N] [--minutes M] [--sabotage]`: a fleet under faults, and
//! a checker of what its clients were told.
//!
//! The fleet: three orders-api servers (orders and idempotency records on PostgreSQL in
//! single-commit mode, the fleet limits on a Redis Cluster), a Redis Cluster of 3 masters and 3
//! replicas, a PostgreSQL server, each in a network namespace of its own on one bridge, haproxy
//! on loopback in front, and the merchant's webhook receiver. Three client processes
//! ([`client`]) log a history while faults run on a seeded schedule ([`Schedule`]); then the
//! keys whose outcome a client never learned are retried, the webhooks drained, and the
//! [`checker`] runs over the histories, the database and the receiver. Everything started is
//! stopped by PID, every namespace and link created is deleted, whatever the outcome.

mod checker;
mod client;
mod fleet;
mod history;
mod net;
mod side;

pub use client::main as client_main;

use history::{now_ms, Fault, Kind, Op};
use std::time::Duration;

/// What the command line asked for.
pub struct Opts {
    pub seed: u64,
    /// How long the faults run: one of each kind (`--quick`), or cycles for `--minutes`.
    pub minutes: Option<u64>,
    /// `--sabotage`: before the check, a second order is written for a key that has one (the
    /// checker must report it: the run then fails).
    pub sabotage: bool,
}

fn opts(args: &[String]) -> crate::Result<Opts> {
    let usage =
        || "usage: cargo xtask chaos [--quick] [--seed N] [--minutes M] [--sabotage]".to_owned();
    let mut o = Opts {
        seed: now_ms() % 100_000,
        minutes: Some(20),
        sabotage: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => o.minutes = None,
            "--sabotage" => o.sabotage = true,
            "--seed" => o.seed = it.next().and_then(|v| v.parse().ok()).ok_or_else(usage)?,
            "--minutes" => {
                o.minutes = Some(it.next().and_then(|v| v.parse().ok()).ok_or_else(usage)?)
            }
            _ => return Err(usage()),
        }
    }
    Ok(o)
}

/// The kinds of fault, each with how long it holds (ms).
pub const FAULTS: &[(&str, u64)] = &[
    ("kill-server", 3_000),
    // Longer than the idempotency lease (10 s): another server takes the key over meanwhile.
    ("pause-server", 12_000),
    ("kill-redis-master", 8_000),
    ("partition-redis", 6_000),
    ("partition-pg", 6_000),
    ("loss-redis", 8_000),
    ("latency-redis", 8_000),
    ("restart-pg", 0),
    ("redis-down", 10_000),
    ("slow-senders", 15_000),
];

/// The seeded order of faults: every kind once in a shuffled order, again and again until
/// `minutes` (or once, quick), each on a server drawn from the seed.
pub struct Schedule {
    pub steps: Vec<(&'static str, usize)>,
    pub calm: Duration,
}

impl Schedule {
    pub fn new(seed: u64, minutes: Option<u64>) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let cycle: u64 = FAULTS.iter().map(|(_, ms)| ms + 4_000).sum();
        let cycles = minutes.map_or(1, |m| (m * 60_000).div_ceil(cycle).max(1));
        let mut steps = Vec::new();
        for _ in 0..cycles {
            let mut kinds: Vec<&'static str> = FAULTS.iter().map(|(k, _)| *k).collect();
            rng.shuffle(&mut kinds);
            steps.extend(kinds.into_iter().map(|k| (k, rng.usize(0..3))));
        }
        Self {
            steps,
            calm: Duration::from_secs(4),
        }
    }
}

/// `cargo xtask chaos …`.
pub fn run(args: &[String]) -> crate::Result {
    let opts = opts(args)?;
    let started = std::time::Instant::now();
    eprintln!(
        "xtask chaos: seed {} ({}); reproduce with `cargo xtask chaos {}--seed {}`",
        opts.seed,
        opts.minutes
            .map_or("quick".to_owned(), |m| format!("{m} minutes")),
        opts.minutes
            .map_or("--quick ".to_owned(), |m| format!("--minutes {m} ")),
        opts.seed
    );
    let mut fleet = fleet::Fleet::start(&opts)?;
    let outcome = fleet.exercise(&Schedule::new(opts.seed, opts.minutes), opts.sabotage);
    let report = outcome.and_then(|observed| report(&opts, &observed, started.elapsed(), &fleet));
    drop(fleet);
    let (text, violations) = report?;
    println!("{text}");
    if violations == 0 {
        Ok(())
    } else {
        Err(format!(
            "{violations} violations (the report above names each)"
        ))
    }
}

/// The bounds the fleet is configured with (see [`fleet::Fleet::start`]).
fn bounds() -> checker::Bounds {
    checker::Bounds {
        rate: f64::from(fleet::RATE),
        burst: f64::from(fleet::RATE),
        lease: 10_000,
        deadline: client::DEADLINE.as_millis() as u64,
        critical: 0.999,
    }
}

/// The report: per fault, operations and outcomes by kind, recovery time; then every violation.
fn report(
    opts: &Opts,
    obs: &checker::Observed,
    took: Duration,
    fleet: &fleet::Fleet,
) -> crate::Result<(String, usize)> {
    use std::fmt::Write;
    let violations = checker::check(obs, &bounds());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## chaos run: seed {}, {}, {} s",
        opts.seed,
        opts.minutes.map_or("quick".into(), |m| format!("{m} min")),
        took.as_secs()
    );
    let _ = writeln!(out, "\n| fault | target | held (ms) | ops | 2xx | 4xx | 5xx | no answer | critical 2xx | recovery (ms) |\n|---|---|---|---|---|---|---|---|---|---|");
    for f in &obs.faults {
        let during: Vec<&Op> = obs
            .ops
            .iter()
            .filter(|o| o.start <= f.end && f.start <= o.end)
            .collect();
        let count = |p: &dyn Fn(&Op) -> bool| during.iter().filter(|o| p(o)).count();
        let critical = during.iter().filter(|o| o.kind == Kind::Capture).count();
        let critical_ok = during
            .iter()
            .filter(|o| o.kind == Kind::Capture && o.ok())
            .count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {critical_ok}/{critical} | {} |",
            f.kind,
            f.target,
            f.end - f.start,
            during.len(),
            count(&|o| o.ok()),
            count(&|o| o.status.is_some_and(|s| (400..500).contains(&s))),
            count(&|o| o.status.is_some_and(|s| s >= 500)),
            count(&|o| o.status.is_none()),
            recovery(obs, f).map_or("—".into(), |ms| ms.to_string()),
        );
    }
    let by_kind = |k: Kind| obs.ops.iter().filter(|o| o.kind == k).count();
    let _ = writeln!(
        out,
        "\noperations: {} ({} creates, {} replays, {} reads, {} patches, {} captures, {} burst requests, {} settled after the last fault); {} orders, {} webhooks processed ({} deliveries arrived)",
        obs.ops.len(),
        by_kind(Kind::Create),
        by_kind(Kind::Replay),
        by_kind(Kind::Read),
        by_kind(Kind::Patch),
        by_kind(Kind::Capture),
        by_kind(Kind::Burst),
        by_kind(Kind::Settle),
        obs.orders.len(),
        obs.webhooks.len(),
        fleet.deliveries(),
    );
    let (share, _) = checker::priority(obs, &bounds());
    let _ = writeln!(
        out,
        "critical captures outside \"all Redis down\": {:.2} % 2xx",
        share * 100.0
    );
    for b in checker::bursts(obs) {
        let _ = writeln!(
            out,
            "burst {}: {} sent, {} admitted in {} ms{}",
            b.key,
            b.sent,
            b.admitted,
            b.span,
            if b.excused {
                " (a Redis fault overlapped: fail-open decided)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "\nviolations: {}", violations.len());
    for v in &violations {
        let _ = writeln!(out, "- {}: {}", v.check, v.detail);
    }
    std::fs::write(fleet.dir().join("report.md"), &out).map_err(|e| e.to_string())?;
    Ok((out, violations.len()))
}

/// How long after `f` healed the first create answered 2xx.
fn recovery(obs: &checker::Observed, f: &Fault) -> Option<u64> {
    obs.ops
        .iter()
        .filter(|o| o.kind == Kind::Create && o.ok() && o.start >= f.end)
        .map(|o| o.end - f.end)
        .min()
}
