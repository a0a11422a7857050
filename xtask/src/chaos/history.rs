//! What the chaos clients did, one JSON line per logical operation, and the faults the harness
//! injected: the input of the [checker](super::checker).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: every process of a run is on this machine, one clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The kind of a logical operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST /orders` with a new `Idempotency-Key` (the order's sku is the key).
    Create,
    /// The same `POST /orders` again later, with the key of a create that succeeded.
    Replay,
    /// `GET /orders/{id}` of an order the client saw created.
    Read,
    /// `PATCH /orders/{id}` with `If-Match` the version last read.
    Patch,
    /// `POST /payments/{id}/capture`: the critical route.
    Capture,
    /// One request of a burst with one principal against the fleet rate limit.
    Burst,
    /// After the last fault healed: the create of a key whose outcome the client never learned,
    /// retried until answered (liveness).
    Settle,
}

/// One logical operation: what was asked, when, and what the client was told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The client process.
    pub client: u32,
    /// What it was.
    pub kind: Kind,
    /// The idempotency key (create, replay, settle, capture), the order id (read, patch), or the
    /// burst's principal.
    pub key: String,
    /// The bearer token it was sent with: the principal that scopes its idempotency key (a
    /// retry of the key must come from the same one).
    pub principal: String,
    /// Invoked at (ms since the epoch).
    pub start: u64,
    /// Answered or given up at.
    pub end: u64,
    /// The final status; `None` when no answer came (a transport failure or the deadline).
    pub status: Option<u16>,
    /// Attempts the retrying client made.
    pub attempts: u32,
    /// The order id in the answer (create, replay, settle, read, patch).
    pub order: Option<String>,
    /// The version answered (read, patch).
    pub version: Option<u64>,
    /// The version a patch expected (`If-Match`).
    pub base: Option<u64>,
    /// The quantity a patch wrote, or a read saw.
    pub quantity: Option<u32>,
}

impl Op {
    /// A 2xx answer.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The client cannot know whether the operation took effect: no answer, or an answer that
    /// does not rule it out (a 5xx after attempts that may have reached the server).
    pub fn unknown(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s >= 500 || (s == 409 && self.kind != Kind::Patch),
        }
    }
}

/// A fault the harness injected, from `start` until it healed at `end` (ms since the epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Its kind (`kill-server`, `redis-down`, …).
    pub kind: String,
    /// What it hit (`s1`, `redis 10.77.0.21:7001`, …).
    pub target: String,
    /// Injected at.
    pub start: u64,
    /// Healed at.
    pub end: u64,
}

impl Fault {
    /// Whether the fault takes the fleet limits' Redis away from at least one server (the
    /// configured fail mode decides then).
    pub fn hits_redis(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "redis-down" | "partition-redis" | "kill-redis-master" | "loss-redis" | "latency-redis"
        )
    }
}

/// Reads a JSON-lines file of `T`s; a line that does not parse is an error naming it.
pub fn read_lines<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}
