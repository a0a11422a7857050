//! `retry-safe-gateway CONFIG` runs the gateway; `--check CONFIG` validates the config (exit
//! code 2 when it is refused); `hash-key` prints the digest of the API key on stdin, for the keys
//! file.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: a proxy allocates and frees a few small buffers per request (headers, ids), which
/// it serves from per-thread pages; measured in docs/gateway.md against the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: retry-safe-gateway [--check] CONFIG.toml | retry-safe-gateway hash-key < key";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, path) = match args.as_slice() {
        [cmd] if cmd == "hash-key" => return hash_key(),
        [flag, path] if flag == "--check" => (true, PathBuf::from(path)),
        [path] if !path.starts_with('-') => (false, PathBuf::from(path)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One core (a container's share, or `taskset`): one thread runs everything, as one nginx
    // worker does, with no cross-thread wakeups; more cores: a worker per core.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if check {
            retry_safe_gateway::check(&path).await
        } else {
            retry_safe_gateway::run(&path).await
        }
    });
    match result {
        Ok(()) if check => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            match e {
                retry_safe_gateway::StartError::Config(_)
                | retry_safe_gateway::StartError::Build(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn hash_key() -> ExitCode {
    let mut key = String::new();
    if std::io::stdin().read_to_string(&mut key).is_err() {
        eprintln!("cannot read the key from stdin");
        return ExitCode::from(2);
    }
    println!(
        "{}",
        retry_safe_gateway::hash_key(key.trim_end_matches(['\r', '\n']))
    );
    ExitCode::SUCCESS
}
