//! Workspace automation: `cargo xtask <command>`.
//!
//! | command | what it runs |
//! |---|---|
//! | `test` | every test of the workspace, all features (the README's test command) |
//! | `proptest [--cases N] [--seed S]` | the test suite with N proptest cases per property (default 4096), from seed S |
//! | `bench [GROUP]` | the benchmarks: all, or one group of [`BENCHES`] (`cargo xtask help` lists them) |
//! | `ci` | `fmt --check`, `clippy -D warnings`, `doc` with warnings denied, `features`, `msrv`, `instructions` (CI runs `test` and then `ci`) |
//! | `instructions [--update]` | instructions per request through the stack vs bare (callgrind); fails when the stack grows > 10 % over `xtask/instructions-baseline.txt`, then checks that a deliberately slower layer trips that gate |
//! | `features` | each published crate in each feature set: `check --all-targets` and `doc`, warnings denied |
//! | `msrv` | each published crate's `rust-version` covers every dependency's, in each feature set |
//! | `cluster` | starts the tests' private Redis Cluster, prints its `REDIS_CLUSTER_URLS`, stops it at end of input |
//! | `fuzz [--seconds N] [--target NAME]` | every parser of untrusted input under libFuzzer (cargo-fuzz on nightly), N seconds a target; crashes kept as regressions |
//! | `chaos [--quick] [--seed N] [--minutes M]` | a fleet of three servers, a Redis Cluster and PostgreSQL in network namespaces under seeded faults, its clients' history checked ([`chaos`]); needs root |
//!
//! Before tests run, every backing service that a crate of the workspace tests against is checked
//! (see [`services`]); one that is down is started, or the command fails saying how to start it.
//! A private Redis Cluster is started for the tests ([`cluster`]) unless `REDIS_CLUSTER_URLS`
//! names one, and stopped when they end.

mod chaos;
mod e2e;
mod features;
mod fuzz;
mod gateway;
mod instructions;
mod msrv;
mod redis_server;
mod services;

use testkit::cluster;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&[]),
        Some("proptest") => proptest(&args[1..]),
        Some("bench") => bench(args.get(1).map(String::as_str)),
        Some("ci") => ci(),
        Some("msrv") => msrv::run(),
        Some("instructions") => instructions::run(std::env::args().any(|a| a == "--update")),
        Some("features") => features::run(),
        Some("cluster") => cluster::serve(),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        // A client process of `chaos`, started by it.
        Some("chaos-client") => chaos::client_main(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test | proptest [--cases N] [--seed S] | bench [{}] | ci | features | msrv | instructions [--update] | cluster | fuzz [--seconds N] [--target NAME] | chaos [--quick] [--seed N] [--minutes M]>\n\
                 test      run every test of the workspace\n\
                 proptest  run the tests with more proptest cases\n\
                 bench     run the benchmarks (all, or one group)\n\
                 ci        fmt, clippy, docs, the feature matrix, the MSRV check and the instructions gate (CI runs test, then ci)\n\
                 features  each crate in each feature set: check --all-targets and doc, warnings denied\n\
                 msrv      each crate's rust-version covers its dependencies\n\
                 instructions  instructions per request (callgrind), stack vs bare; fails over the baseline + 10 %\n\
                 cluster   a private Redis Cluster until end of input (prints REDIS_CLUSTER_URLS)\n\
                 fuzz      each parser of untrusted input under libFuzzer, N seconds a target (cargo-fuzz, nightly)\n\
                 chaos     the fleet under seeded faults in network namespaces, its history checked (root)",
                bench_names()
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

/// Builds the binary `bin` of `package` in release mode and gives its path.
fn release_binary(package: &str, bin: &str) -> Result<std::path::PathBuf> {
    cargo(&["build", "--release", "-p", package, "--bin", bin], &[])?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release").join(bin))
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn test(env: &[(&str, &str)]) -> Result {
    services::ensure_all()?;
    // A private Redis Cluster (unless REDIS_CLUSTER_URLS names one), stopped when this returns.
    let cluster = cluster::start()?;
    let mut env = env.to_vec();
    if let Some(c) = &cluster {
        env.push(("REDIS_CLUSTER_URLS", c.urls.as_str()));
    }
    cargo(
        &["test", "--workspace", "--all-features", "--all-targets"],
        &env,
    )?;
    cargo(&["test", "--workspace", "--all-features", "--doc"], &env)
}

fn proptest(args: &[String]) -> Result {
    let usage = || "usage: cargo xtask proptest [--cases N] [--seed S]".to_owned();
    let mut cases = "4096".to_owned();
    let mut seed = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .filter(|v| v.parse::<u64>().is_ok())
            .ok_or_else(usage)?;
        match flag.as_str() {
            "--cases" => cases = value.clone(),
            "--seed" => seed = Some(value.clone()),
            _ => return Err(usage()),
        }
    }
    eprintln!(
        "xtask: {cases} cases per property, seed {}",
        seed.as_deref()
            .unwrap_or("random (proptest prints it on failure)")
    );
    let mut env = vec![("PROPTEST_CASES", cases.as_str())];
    if let Some(seed) = &seed {
        env.push(("PROPTEST_RNG_SEED", seed));
    }
    test(&env)
}

/// How a benchmark group runs.
enum Run {
    /// `cargo bench` with these arguments; `services`: the backing services must be up first.
    Cargo {
        args: &'static [&'static str],
        services: bool,
    },
    /// On a private Redis Cluster (its `REDIS_CLUSTER_URLS` in the environment).
    OnCluster(&'static [&'static str]),
    /// A driver of the xtask's own.
    Driver(fn() -> Result),
}

/// Every benchmark group: `cargo xtask bench <name>`. The usage text and the error for an unknown
/// name are made from this one list.
const BENCHES: &[(&str, Run)] = &[
    (
        "idem",
        Run::Cargo {
            args: &["-p", "idem-core", "--bench", "memory_store"],
            services: false,
        },
    ),
    (
        "webhook",
        Run::Cargo {
            args: &["-p", "webhook-sig", "--bench", "verify"],
            services: false,
        },
    ),
    (
        "redis",
        Run::Cargo {
            args: &["-p", "idem-store-redis", "--bench", "redis_store"],
            services: true,
        },
    ),
    (
        "postgres",
        Run::Cargo {
            args: &["-p", "idem-store-postgres", "--bench", "postgres_store"],
            services: true,
        },
    ),
    (
        "ratelimit",
        Run::Cargo {
            args: &["-p", "ratelimit-token-bucket", "--bench", "limiter"],
            services: false,
        },
    ),
    (
        "ratelimit-redis",
        Run::Cargo {
            args: &[
                "-p",
                "ratelimit-token-bucket",
                "--features",
                "redis",
                "--bench",
                "redis_limiter",
            ],
            services: true,
        },
    ),
    (
        "concurrency",
        Run::Cargo {
            args: &["-p", "ratelimit-concurrent", "--bench", "permits"],
            services: false,
        },
    ),
    (
        "concurrency-redis",
        Run::Cargo {
            args: &[
                "-p",
                "ratelimit-concurrent",
                "--features",
                "redis",
                "--bench",
                "redis_leases",
            ],
            services: true,
        },
    ),
    ("redis-server", Run::Driver(redis_server::run)),
    (
        "trace",
        Run::Cargo {
            args: &["-p", "trace-ctx", "--bench", "propagation"],
            services: false,
        },
    ),
    (
        "loadshed",
        Run::Cargo {
            args: &[
                "-p",
                "loadshed-fleet",
                "--bench",
                "simulation",
                "--bench",
                "fleet_simulation",
            ],
            services: false,
        },
    ),
    (
        "loadshed-decision",
        Run::Cargo {
            args: &["-p", "loadshed-fleet", "--bench", "admit"],
            services: false,
        },
    ),
    (
        "optimistic",
        Run::Cargo {
            args: &["-p", "optimistic-lock", "--bench", "precondition"],
            services: false,
        },
    ),
    (
        "retries",
        Run::Cargo {
            args: &["-p", "retry-client"],
            services: false,
        },
    ),
    (
        "outbox",
        Run::Cargo {
            args: &[
                "-p",
                "webhook-delivery",
                "--features",
                "postgres",
                "--bench",
                "outbox",
            ],
            services: true,
        },
    ),
    (
        "events",
        Run::Cargo {
            args: &[
                "-p",
                "outbox",
                "--features",
                "postgres,nats,rabbitmq",
                "--bench",
                "relay",
            ],
            services: true,
        },
    ),
    (
        "cluster",
        Run::OnCluster(&["-p", "benchmarks", "--bench", "redis_fleet"]),
    ),
    ("e2e", Run::Driver(|| e2e::run(false))),
    ("gateway", Run::Driver(gateway::run)),
    ("e2e-postgres", Run::Driver(|| e2e::run(true))),
    (
        "e2e-inprocess",
        Run::Cargo {
            args: &["-p", "benchmarks", "--bench", "e2e"],
            services: true,
        },
    ),
];

/// The benchmark group names, `a | b | c`.
fn bench_names() -> String {
    BENCHES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn bench(which: Option<&str>) -> Result {
    let Some(which) = which else {
        services::ensure_all()?;
        return cargo(&["bench", "--workspace", "--all-features"], &[]);
    };
    let Some((_, run)) = BENCHES.iter().find(|(name, _)| *name == which) else {
        return Err(format!(
            "no benchmark group `{which}`; known: {}",
            bench_names()
        ));
    };
    match run {
        Run::Cargo { args, services } => {
            if *services {
                services::ensure_all()?;
            }
            cargo(&[&["bench"], *args].concat(), &[])
        }
        Run::OnCluster(args) => {
            services::ensure_all()?;
            let cluster = cluster::start()?;
            let env: Vec<(&str, &str)> = cluster
                .iter()
                .map(|c| ("REDIS_CLUSTER_URLS", c.urls.as_str()))
                .collect();
            cargo(&[&["bench"], *args].concat(), &env)
        }
        Run::Driver(run) => run(),
    }
}

fn ci() -> Result {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--all-features", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    features::run()?;
    msrv::run()?;
    instructions::run(false)
}
