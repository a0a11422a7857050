//! `outbox`: run a relay, read the outbox's counts, list and replay dead letters.
//!
//! ```text
//! outbox relay  (--nats URL [--subject-prefix P] | --amqp URL [--exchange X])
//!               [--batch N] [--concurrency N] [--lease-ms N] [--poll-ms N]
//! outbox stats
//! outbox dead   [--limit N]
//! outbox replay (--all | --topic T [--id ID])
//! ```
//! The database comes from `--database-url` or `DATABASE_URL`; the outbox's migrations are
//! applied first. `relay` runs until SIGTERM or SIGINT, finishing its round. Exit codes: 0 done,
//! 1 a backend failed, 2 a bad command line.

use outbox::{NatsSink, Outbox, PostgresOutbox, RabbitSink, Relay, Sink};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: outbox <relay (--nats URL [--subject-prefix P] | --amqp URL [--exchange X]) [--batch N] [--concurrency N] [--lease-ms N] [--poll-ms N] | stats | dead [--limit N] | replay (--all | --topic T [--id ID])> [--database-url URL]";

/// The parsed command line: the command and its `--flag value` pairs (`--all` has none).
struct Args {
    command: String,
    flags: HashMap<String, String>,
}

fn parse(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = raw.next().ok_or("no command")?;
    let mut flags = HashMap::new();
    while let Some(flag) = raw.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("`{flag}` is not a flag"))?;
        let value = if name == "all" {
            String::new()
        } else {
            raw.next()
                .ok_or_else(|| format!("--{name} needs a value"))?
        };
        flags.insert(name.to_owned(), value);
    }
    Ok(Args { command, flags })
}

impl Args {
    fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        self.flags.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{name}: `{v}` is not a whole number"))
        })
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{}", serde_line("error", &e.to_string()));
    ExitCode::from(1)
}

/// One JSON line `{"event": event, "detail": detail}` (detail escaped).
fn serde_line(event: &str, detail: &str) -> String {
    let escaped: String = detail
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect();
    format!("{{\"event\":\"{event}\",\"detail\":\"{escaped}\"}}")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("outbox: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let url = args
        .flags
        .get("database-url")
        .cloned()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let store = match PostgresOutbox::connect(&url).await {
        Ok(store) => store,
        Err(e) => return fail(error_chain(&e)),
    };
    if let Err(e) = store.migrate().await {
        return fail(error_chain(&e));
    }
    let done = match args.command.as_str() {
        "relay" => relay(store, &args).await,
        "stats" => stats(&store).await,
        "dead" => dead(&store, &args).await,
        "replay" => replay(&store, &args).await,
        other => Err(Usage(format!("unknown command `{other}`")).into()),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("outbox: {}\n{USAGE}", e.0);
            ExitCode::from(2)
        }
        Err(Failure::Backend(e)) => fail(e),
    }
}

struct Usage(String);

enum Failure {
    Usage(Usage),
    Backend(String),
}

impl From<Usage> for Failure {
    fn from(u: Usage) -> Self {
        Failure::Usage(u)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn backend(e: impl std::error::Error) -> Failure {
    Failure::Backend(error_chain(&e))
}

async fn relay(store: PostgresOutbox, args: &Args) -> Result<(), Failure> {
    let batch = args.number("batch", 100).map_err(Usage)?;
    let concurrency = args.number("concurrency", 4).map_err(Usage)?;
    let lease = Duration::from_millis(args.number("lease-ms", 30_000).map_err(Usage)?);
    let poll = Duration::from_millis(args.number("poll-ms", 50).map_err(Usage)?);
    let sink: Box<dyn Sink> = match (args.flags.get("nats"), args.flags.get("amqp")) {
        (Some(url), None) => {
            let client = async_nats::connect(url.as_str()).await.map_err(backend)?;
            let sink = NatsSink::new(async_nats::jetstream::new(client));
            let prefix = args
                .flags
                .get("subject-prefix")
                .cloned()
                .unwrap_or_default();
            Box::new(sink.subject_prefix(prefix))
        }
        (None, Some(url)) => {
            let props = lapin::ConnectionProperties::default();
            let conn = lapin::Connection::connect(url, props)
                .await
                .map_err(backend)?;
            let channel = conn.create_channel().await.map_err(backend)?;
            let exchange = args.flags.get("exchange").cloned().unwrap_or_default();
            Box::new(RabbitSink::new(channel, exchange).await.map_err(backend)?)
        }
        _ => return Err(Usage("relay needs one of --nats URL and --amqp URL".into()).into()),
    };
    let relay = Relay::new(store, sink)
        .batch(usize::try_from(batch).unwrap_or(usize::MAX))
        .concurrency(usize::try_from(concurrency).unwrap_or(usize::MAX))
        .lease(lease)
        .poll_interval(poll);
    eprintln!("{}", serde_line("relaying", &format!("{relay:?}")));
    relay.run(shutdown()).await;
    eprintln!("{}", serde_line("stopped", ""));
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn stats(store: &PostgresOutbox) -> Result<(), Failure> {
    let s = store.stats().await.map_err(backend)?;
    let oldest = s.oldest_pending.map_or(0.0, |d| d.as_secs_f64());
    println!(
        "{{\"pending\":{},\"published\":{},\"dead\":{},\"oldest_pending_seconds\":{oldest:.3}}}",
        s.pending, s.published, s.dead
    );
    Ok(())
}

async fn dead(store: &PostgresOutbox, args: &Args) -> Result<(), Failure> {
    let limit = args.number("limit", 100).map_err(Usage)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    for d in store.dead_letters(limit).await.map_err(backend)? {
        let error = d.last_error.unwrap_or_default();
        println!("{}\t{}\t{}\t{error}", d.topic, d.id, d.attempts);
    }
    Ok(())
}

async fn replay(store: &PostgresOutbox, args: &Args) -> Result<(), Failure> {
    let topic = args.flags.get("topic").map(String::as_str);
    let id = args.flags.get("id").map(String::as_str);
    let n = match (args.flags.contains_key("all"), topic, id) {
        (true, None, None) => store.replay_dead(None).await.map_err(backend)?,
        (false, Some(t), Some(id)) => u64::from(store.replay(t, id).await.map_err(backend)?),
        (false, Some(t), None) => store.replay_dead(Some(t)).await.map_err(backend)?,
        _ => return Err(Usage("replay needs --all, or --topic T [--id ID]".into()).into()),
    };
    println!("{{\"replayed\":{n}}}");
    Ok(())
}
