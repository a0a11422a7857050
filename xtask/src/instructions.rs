//! `cargo xtask instructions [--update]`: instructions per request of the full stack and of the
//! bare handlers, counted by valgrind's callgrind — deterministic where timings are not.
//!
//! The release `stack-instructions` binary sends requests in process (no network, one thread,
//! in-memory stores): a warm-up of 100, then 2,000 inside the one function callgrind collects in
//! (`--toggle-collect`), so start-up, lazy statics and the clock's calibration (which spins on
//! wall time) stay out; total / 2,000 is the cost of one request, the median of three runs. Cases: keyed `POST /orders` and `GET /orders/ord_1`,
//! through the stack and bare.
//!
//! The gate (`cargo xtask ci` runs it): the stack's instructions per request may not grow more
//! than 10 % over `xtask/instructions-baseline.txt`. Then the gate checks itself: the same stack
//! behind one deliberately wasteful layer must fail it. `--update` rewrites the baseline (commit it
//! with the reason in the message).

use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T = ()> = std::result::Result<T, String>;

/// How much the stack may grow over the baseline.
pub const TOLERANCE: f64 = 0.10;
/// Measured requests per run.
const REQUESTS: u64 = 2_000;
/// Runs per figure; the median is kept (hash seeds and ids vary between runs).
const RUNS: usize = 3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn baseline_path() -> PathBuf {
    root().join("xtask/instructions-baseline.txt")
}

/// `name value` lines; `#` starts a comment.
pub fn parse_baseline(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.split_once(char::is_whitespace)?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The cases over the tolerance: `(name, baseline, measured)`.
pub fn over_budget(
    baseline: &[(String, u64)],
    measured: &[(String, u64)],
) -> Vec<(String, u64, u64)> {
    measured
        .iter()
        .filter(|(name, _)| name.starts_with("stack_"))
        .filter_map(|(name, value)| {
            let (_, base) = baseline.iter().find(|(n, _)| n == name)?;
            (*value as f64 > *base as f64 * (1.0 + TOLERANCE))
                .then(|| (name.clone(), *base, *value))
        })
        .collect()
}

/// The total instructions of one run under callgrind.
fn total(binary: &Path, mode: &str, kind: &str, n: u64) -> Result<u64> {
    let out_file = std::env::temp_dir().join(format!(
        "retry-safe-callgrind-{}-{mode}-{kind}-{n}.out",
        std::process::id()
    ));
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--cache-sim=no",
            "--branch-sim=no",
            "--toggle-collect=*measured_requests*",
        ])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(binary)
        .args([mode, kind, &n.to_string()])
        .env("RUST_LOG", "off")
        .output()
        .map_err(|e| {
            format!("valgrind could not run (install it with `apt-get install -y valgrind`): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "stack-instructions {mode} {kind} {n} failed under valgrind:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = std::fs::read_to_string(&out_file).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out_file);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no total in callgrind's output".into())
}

/// Instructions per request of `mode` / `kind`: the median of [`RUNS`] runs of [`REQUESTS`].
fn per_request(binary: &Path, mode: &str, kind: &str) -> Result<u64> {
    let mut figures = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        figures.push(total(binary, mode, kind, REQUESTS)? / REQUESTS);
    }
    figures.sort_unstable();
    Ok(figures[RUNS / 2])
}

pub fn run(update: bool) -> Result {
    let binary = crate::release_binary("benchmarks", "stack-instructions")?;
    let mut measured = Vec::new();
    for kind in ["post", "get"] {
        for mode in ["bare", "stack"] {
            let n = per_request(&binary, mode, kind)?;
            eprintln!("xtask: {mode} {kind}: {n} instructions per request");
            measured.push((format!("{mode}_{kind}"), n));
        }
    }
    let get = |name: &str| {
        measured
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    };
    println!("\n| request | bare | full stack | stack − bare | stack / bare |");
    println!("|---|---|---|---|---|");
    for kind in ["post", "get"] {
        let (bare, stack) = (get(&format!("bare_{kind}")), get(&format!("stack_{kind}")));
        println!(
            "| {} | {bare} | {stack} | {} | {:.2}× |",
            if kind == "post" {
                "keyed `POST /orders`"
            } else {
                "`GET /orders/ord_1`"
            },
            stack.saturating_sub(bare),
            stack as f64 / bare.max(1) as f64
        );
    }
    let path = baseline_path();
    if update {
        let mut text = String::from(
            "# Instructions per request (callgrind), written by `cargo xtask instructions --update`.\n\
             # `cargo xtask ci` fails when a stack_* figure grows more than 10 % over these.\n",
        );
        for (name, value) in &measured {
            text.push_str(&format!("{name} {value}\n"));
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
        return Ok(());
    }
    let baseline = parse_baseline(&std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (create it with `cargo xtask instructions --update`)",
            path.display()
        )
    })?);
    let mut over = over_budget(&baseline, &measured);
    if !over.is_empty() {
        // Measured again before failing: a figure moves a few per cent between runs.
        eprintln!("xtask: over the baseline ({over:?}); measuring again to confirm");
        let mut again = Vec::new();
        for (name, _, _) in &over {
            let (mode, kind) = name.split_once('_').unwrap_or((name, ""));
            again.push((name.clone(), per_request(&binary, mode, kind)?));
        }
        over = over_budget(&baseline, &again);
    }
    if !over.is_empty() {
        let list: Vec<String> = over
            .iter()
            .map(|(n, b, m)| {
                format!(
                    "{n}: {m} instructions per request, baseline {b} (+{:.1} %)",
                    100.0 * (*m as f64 / *b as f64 - 1.0)
                )
            })
            .collect();
        return Err(format!(
            "the stack's instructions per request grew more than {:.0} % over the baseline:\n  {}\n\
             (if deliberate: `cargo xtask instructions --update` and say why in the commit)",
            TOLERANCE * 100.0,
            list.join("\n  ")
        ));
    }
    eprintln!(
        "xtask: instructions per request within {:.0} % of the baseline",
        TOLERANCE * 100.0
    );
    // The gate checks itself: a deliberately slower layer in front of the stack must trip it.
    let mut slow = Vec::new();
    for kind in ["post", "get"] {
        slow.push((format!("stack_{kind}"), per_request(&binary, "slow", kind)?));
    }
    if over_budget(&baseline, &slow).len() != 2 {
        return Err(format!(
            "the instructions gate did not notice a deliberately slower layer: {slow:?} vs baseline {baseline:?}"
        ));
    }
    eprintln!("xtask: the gate trips on a deliberately slower layer ({slow:?})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_allows_ten_percent_and_trips_above() {
        let baseline =
            parse_baseline("# comment\nstack_post 1000\nstack_get 500 # trailing\nbare_get 100\n");
        assert_eq!(baseline.len(), 3);
        let ok = vec![
            ("stack_post".into(), 1100),
            ("stack_get".into(), 400),
            ("bare_get".into(), 900),
        ];
        assert!(
            over_budget(&baseline, &ok).is_empty(),
            "bare figures are not gated"
        );
        let slow = vec![("stack_post".into(), 1101), ("stack_get".into(), 560)];
        let over = over_budget(&baseline, &slow);
        assert_eq!(over.len(), 2);
        assert_eq!(over[0], ("stack_post".into(), 1000, 1101));
    }
}
