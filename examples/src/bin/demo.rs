//! The demo scenario, in-memory, no services needed: `cargo run -p examples --bin demo`.
//!
//! Starts the orders API in-process and plays retries, a reused key, a burst, too many requests
//! in flight, an overload, forged and replayed webhooks, and a traced error; then prints what
//! each layer did.

use std::io::Write;

#[tokio::main]
async fn main() {
    let outcomes = examples::demo::run(|done, total, name| {
        let width = 28;
        let filled = width * done / total;
        eprint!(
            "\r[{}{}] {done}/{total} {name:<55}",
            "#".repeat(filled),
            ".".repeat(width - filled)
        );
        let _ = std::io::stderr().flush();
    })
    .await;
    eprintln!();
    println!();
    for (i, o) in outcomes.iter().enumerate() {
        println!(
            "{}. {} {}",
            i + 1,
            if o.ok { "PASS" } else { "FAIL" },
            o.name
        );
        println!("   expected: {}", o.expected);
        println!("   observed: {}", o.observed);
    }
    let passed = outcomes.iter().filter(|o| o.ok).count();
    println!(
        "\n{passed}/{} scenarios behaved as expected",
        outcomes.len()
    );
    if passed != outcomes.len() {
        std::process::exit(1);
    }
}
