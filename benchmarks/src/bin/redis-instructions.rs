//! What each of the workspace's Redis operations costs the Redis server, in instructions.
//!
//! Run by `cargo xtask bench redis-server`, which starts a private `redis-server` under valgrind's
//! callgrind with `--toggle-collect=call`: only the execution of commands is counted (not the
//! event loop, reading requests or writing replies), and the count is the same whatever else the
//! machine does — where round-trip timings on a shared 2-core machine swing by tens of percent.
//!
//! Usage: `redis-instructions <redis-url> <server-pid> <callgrind-out-file> [calls]`. For each
//! operation: zero the counters (`callgrind_control -z`), run `calls` operations through the real
//! clients, dump (`callgrind_control -d`) and divide the dump's total by `calls`. The floors run the
//! same way: a raw `SET … NX PX` of a new key, `EVALSHA` of `return 1`, a raw `ZADD` + `ZREM`.

use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse};
use idem_store_redis::RedisStore;
use ratelimit_concurrent::RedisConcurrencyLimiter;
use ratelimit_token_bucket::{Quota, Quotas, RedisLimiter};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The counters of `pid`'s callgrind: zeroed, or dumped to a new file (whose total is returned).
struct Counter {
    pid: String,
    out: PathBuf,
}

impl Counter {
    fn control(&self, flag: &str) -> Result<(), BoxError> {
        let status = Command::new("callgrind_control")
            .args([flag, &self.pid])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("callgrind_control {flag} {} failed", self.pid).into());
        }
        Ok(())
    }

    fn dumps(&self) -> Result<Vec<PathBuf>, BoxError> {
        let dir = self.out.parent().unwrap_or(Path::new("."));
        let stem = self
            .out
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("callgrind out file without a name")?
            .to_owned();
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{stem}.")))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Instructions executed by commands since the last zero, dumped now.
    fn dump(&self) -> Result<u64, BoxError> {
        let before = self.dumps()?;
        self.control("-d")?;
        for _ in 0..200 {
            let now = self.dumps()?;
            if let Some(new) = now.iter().find(|p| !before.contains(p)) {
                // The file is complete once its totals line is written.
                let text = std::fs::read_to_string(new)?;
                if let Some(total) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("totals:").or(l.strip_prefix("summary:")))
                {
                    return Ok(total.trim().parse()?);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("callgrind wrote no dump within 10 s".into())
    }
}

struct Row {
    what: &'static str,
    floor: Option<&'static str>,
    per_call: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, pid, out, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: redis-instructions <redis-url> <server-pid> <callgrind-out-file> [calls]"
                .into(),
        );
    };
    let calls: u64 = rest.first().map_or(Ok(2_000), |n| n.parse())?;
    let counter = Counter {
        pid: pid.clone(),
        out: PathBuf::from(out),
    };
    let prefix = format!("ri:{}", std::process::id());
    let quotas = Quotas::new([Quota::per_second(100).burst(1_000_000)])?;
    let limiter = RedisLimiter::connect(url, quotas)
        .await?
        .prefix(&format!("{prefix}:rl"));
    let store = RedisStore::connect(url)
        .await?
        .prefix(&format!("{prefix}:idem"));
    let leases = RedisConcurrencyLimiter::connect(url, 100)
        .await?
        .prefix(&format!("{prefix}:cc"));
    let mut conn = limiter.connection();
    let trivial = redis::Script::new("return 1");
    let fp = Fingerprint::of_request("POST", "/v1/orders", br#"{"sku":"tea","qty":2}"#);
    let response = StoredResponse {
        status: 201,
        headers: vec![(
            "content-type".into(),
            bytes::Bytes::from_static(b"application/json"),
        )],
        body: bytes::Bytes::from_static(br#"{"id":"ord_123","status":"created"}"#),
        trailers: Vec::new(),
    };
    let lease = Duration::from_secs(30);
    let retention = Duration::from_secs(3600);
    let keys: Vec<IdempotencyKey> = (0..calls)
        .map(|i| IdempotencyKey::parse(format!("order-{i:08}").as_bytes()))
        .collect::<Result<_, _>>()?;
    // Scripts are loaded (and the connections warm) before anything is counted.
    let _: i64 = trivial.invoke_async(&mut conn).await?;
    limiter.check("warm", 1).await?;
    let warm = IdempotencyKey::parse(b"warm")?;
    store.begin("t", &warm, &fp, lease).await?;
    leases.acquire("warm").await?.release().await?;

    let mut rows = Vec::new();
    let mut measure = |what, floor, total: u64| {
        rows.push(Row {
            what,
            floor,
            per_call: total / calls,
        })
    };

    counter.control("-z")?;
    for i in 0..calls {
        let _: Option<String> = redis::cmd("SET")
            .arg(format!("{prefix}:raw:{i}"))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut conn)
            .await?;
    }
    measure("raw `SET … NX PX` of a new key", None, counter.dump()?);

    counter.control("-z")?;
    for _ in 0..calls {
        let _: i64 = trivial.invoke_async(&mut conn).await?;
    }
    measure("`EVALSHA` of `return 1`", None, counter.dump()?);

    counter.control("-z")?;
    for i in 0..calls {
        let d = limiter.check(&(i % 1000), 1).await?;
        if !d.is_allowed() {
            return Err("a rate-limit decision was refused".into());
        }
    }
    measure(
        "rate limit: one decision (`RedisLimiter::check`)",
        Some("`EVALSHA` of `return 1`"),
        counter.dump()?,
    );

    let mut fences = Vec::with_capacity(keys.len());
    counter.control("-z")?;
    for key in &keys {
        match store.begin("t", key, &fp, lease).await? {
            BeginOutcome::Acquired { fence } => fences.push(fence),
            other => return Err(format!("begin of a new key: {other:?}").into()),
        }
    }
    measure(
        "idempotency: `begin` of a new key",
        Some("raw `SET … NX PX` of a new key"),
        counter.dump()?,
    );

    counter.control("-z")?;
    for (key, fence) in keys.iter().zip(&fences) {
        store
            .complete("t", key, *fence, &response, retention)
            .await?;
    }
    measure(
        "idempotency: `complete`",
        Some("raw `SET … NX PX` of a new key"),
        counter.dump()?,
    );

    counter.control("-z")?;
    for key in &keys {
        if !matches!(
            store.begin("t", key, &fp, lease).await?,
            BeginOutcome::Completed(_)
        ) {
            return Err("a completed key did not replay".into());
        }
    }
    measure(
        "idempotency: `begin` → replay",
        Some("raw `SET … NX PX` of a new key"),
        counter.dump()?,
    );

    counter.control("-z")?;
    for i in 0..calls {
        let key = format!("{prefix}:zraw:{{{}}}", i % 1000);
        let _: i64 = redis::cmd("ZADD")
            .arg(&key)
            .arg(1)
            .arg("lease")
            .query_async(&mut conn)
            .await?;
        let _: i64 = redis::cmd("ZREM")
            .arg(&key)
            .arg("lease")
            .query_async(&mut conn)
            .await?;
    }
    measure("raw `ZADD` + `ZREM`", None, counter.dump()?);

    counter.control("-z")?;
    for i in 0..calls {
        leases
            .acquire(&(i % 1000).to_string())
            .await?
            .release()
            .await?;
    }
    measure(
        "concurrency: acquire + release (script + `ZREM`)",
        Some("raw `ZADD` + `ZREM`"),
        counter.dump()?,
    );

    println!("| operation | server instructions per call | ÷ its floor |");
    println!("|---|---|---|");
    for row in &rows {
        let ratio = match row.floor {
            None => "floor".to_owned(),
            Some(floor) => {
                let base = rows
                    .iter()
                    .find(|r| r.what == floor)
                    .map_or(1, |r| r.per_call.max(1));
                format!("{:.1}× ({floor})", row.per_call as f64 / base as f64)
            }
        };
        println!("| {} | {} | {ratio} |", row.what, row.per_call);
    }
    Ok(())
}
