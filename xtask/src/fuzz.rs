//! `cargo xtask fuzz [--seconds N] [--target NAME]`: every target of `fuzz/` (one per parser of
//! untrusted input) under libFuzzer, N seconds each (default 60), with cargo-fuzz on the nightly
//! toolchain (both installed here when missing). Each run grows `fuzz/corpus/<target>/` (commit
//! it: CI replays it on stable, `fuzz/tests/corpus.rs`); a crash is copied to
//! `fuzz/regressions/<target>/`, where the same replay keeps it as a regression test, and fails
//! the command after every target ran. The corpus is then minimized (`cargo fuzz cmin`: only
//! inputs that add coverage stay). Prints per target: executions, corpus size, crashes.

use std::path::Path;
use std::process::Command;

type Result<T = ()> = std::result::Result<T, String>;

/// One target's figures.
struct Figures {
    target: String,
    executions: u64,
    corpus: usize,
    crashes: Vec<String>,
}

pub fn run(args: &[String]) -> Result {
    let seconds = flag(args, "--seconds").unwrap_or_else(|| "60".into());
    seconds
        .parse::<u64>()
        .map_err(|_| format!("--seconds {seconds}: not a number"))?;
    let only = flag(args, "--target");
    ensure_tools()?;
    let mut figures = Vec::new();
    for target in targets()? {
        if only.as_ref().is_some_and(|o| *o != target) {
            continue;
        }
        figures.push(fuzz_one(&target, &seconds)?);
    }
    println!("\n| target | seconds | executions | corpus inputs | crashes |");
    println!("|---|---|---|---|---|");
    for f in &figures {
        println!(
            "| `{}` | {seconds} | {} | {} | {} |",
            f.target,
            f.executions,
            f.corpus,
            f.crashes.len()
        );
    }
    let crashed: Vec<_> = figures.iter().flat_map(|f| f.crashes.iter()).collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "crashes, kept under fuzz/regressions/ (fix each, its replay is a test): {crashed:?}"
        ))
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

/// The targets: one file per target in `fuzz/fuzz_targets/`.
fn targets() -> Result<Vec<String>> {
    let dir = Path::new("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e} (run from the workspace root)", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// cargo-fuzz and the nightly toolchain (libFuzzer's instrumentation needs it).
fn ensure_tools() -> Result {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        eprintln!("xtask: installing the nightly toolchain for libFuzzer");
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !fuzz {
        eprintln!("xtask: installing cargo-fuzz");
        status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

fn status(cmd: &mut Command) -> Result {
    let done = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if done.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {done}"))
    }
}

fn fuzz_one(target: &str, seconds: &str) -> Result<Figures> {
    let corpus = format!("fuzz/corpus/{target}");
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{corpus}: {e}"))?;
    let before = artifacts(target);
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let out = Command::new("cargo")
        .args([
            "+nightly",
            "fuzz",
            "run",
            target,
            "--features",
            "libfuzzer",
            "--",
        ])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-max_len=4096")
        .output()
        .map_err(|e| format!("cargo fuzz run {target}: {e}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let crashes: Vec<String> = artifacts(target)
        .into_iter()
        .filter(|a| !before.contains(a))
        .collect();
    if !out.status.success() && crashes.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        return Err(format!(
            "cargo fuzz run {target} failed without a crash input:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    keep_as_regressions(target, &crashes)?;
    // Keep the committed corpus to the inputs that add coverage.
    status(Command::new("cargo").args([
        "+nightly",
        "fuzz",
        "cmin",
        target,
        "--features",
        "libfuzzer",
    ]))?;
    Ok(Figures {
        target: target.to_owned(),
        executions,
        corpus: std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0),
        crashes,
    })
}

/// Crash inputs libFuzzer left in `fuzz/artifacts/<target>/`.
fn artifacts(target: &str) -> Vec<String> {
    std::fs::read_dir(format!("fuzz/artifacts/{target}"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn keep_as_regressions(target: &str, crashes: &[String]) -> Result {
    let dir = format!("fuzz/regressions/{target}");
    for crash in crashes {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
        let name = Path::new(crash).file_name().unwrap_or_default();
        std::fs::copy(crash, Path::new(&dir).join(name)).map_err(|e| format!("{crash}: {e}"))?;
    }
    Ok(())
}
