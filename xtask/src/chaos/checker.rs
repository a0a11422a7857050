//! The checker: the history the clients logged, against what PostgreSQL holds and what the
//! webhook receiver processed. Each violation names the check and the operation that shows it.

use super::history::{Fault, Kind, Op};
use std::collections::{BTreeMap, BTreeSet};

/// A row of the `orders` table.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderRow {
    pub id: String,
    pub sku: String,
    pub quantity: u32,
    pub version: u64,
}

/// Everything a run observed.
#[derive(Default)]
pub struct Observed {
    pub ops: Vec<Op>,
    pub orders: Vec<OrderRow>,
    /// Capture rows per payment id.
    pub captures: BTreeMap<String, u32>,
    /// Times the receiver processed each webhook id (its deduplication lets a redelivery through
    /// only once).
    pub webhooks: BTreeMap<String, u32>,
    pub faults: Vec<Fault>,
    /// When the last fault healed.
    pub healed: u64,
}

/// The documented bounds the run is checked against.
pub struct Bounds {
    /// The fleet rate limit per principal: tokens a second, and the burst.
    pub rate: f64,
    pub burst: f64,
    /// The idempotency lease (ms).
    pub lease: u64,
    /// The clients' deadline per logical operation (ms).
    pub deadline: u64,
    /// The share of critical requests that must succeed outside "all Redis down".
    pub critical: f64,
}

/// One violated property.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

fn violation(check: &'static str, detail: String) -> Violation {
    Violation { check, detail }
}

/// Every check over `obs`.
pub fn check(obs: &Observed, bounds: &Bounds) -> Vec<Violation> {
    let mut found = Vec::new();
    found.extend(orders_per_key(obs));
    found.extend(replays(obs));
    found.extend(captures(obs));
    found.extend(patch_chains(obs));
    found.extend(fleet_rate(obs, bounds));
    found.extend(liveness(obs, bounds));
    found.extend(events(obs));
    found.extend(priority(obs, bounds).1);
    found
}

/// At most one order per key; exactly one, with the id the client was told, for every key whose
/// client saw a 2xx.
fn orders_per_key(obs: &Observed) -> Vec<Violation> {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for o in &obs.orders {
        by_key.entry(&o.sku).or_default().push(&o.id);
    }
    let mut found: Vec<Violation> = by_key
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(key, ids)| violation("one order per key", format!("key {key}: orders {ids:?}")))
        .collect();
    let creates = obs
        .ops
        .iter()
        .filter(|op| matches!(op.kind, Kind::Create | Kind::Replay | Kind::Settle) && op.ok());
    for op in creates {
        let ids = by_key.get(op.key.as_str()).cloned().unwrap_or_default();
        if ids.len() != 1 || op.order.as_deref() != Some(ids[0]) {
            found.push(violation(
                "one order per key",
                format!("{op:?} was answered 2xx, the database holds {ids:?} for its key"),
            ));
        }
    }
    found
}

/// Every 2xx answer for a key (first, retried, replayed) names the same order.
fn replays(obs: &Observed) -> Vec<Violation> {
    let mut first: BTreeMap<&str, &Op> = BTreeMap::new();
    let mut found = Vec::new();
    let mut ops: Vec<&Op> = obs
        .ops
        .iter()
        .filter(|op| matches!(op.kind, Kind::Create | Kind::Replay | Kind::Settle) && op.ok())
        .collect();
    ops.sort_by_key(|op| op.end);
    for op in ops {
        match first.get(op.key.as_str()) {
            None => {
                first.insert(&op.key, op);
            }
            Some(f) if f.order != op.order || f.status != op.status => found.push(violation(
                "replay equals the first answer",
                format!("{op:?} differs from the first answer {f:?}"),
            )),
            Some(_) => {}
        }
    }
    found
}

/// At most one capture per payment key; exactly one for a 2xx.
fn captures(obs: &Observed) -> Vec<Violation> {
    let mut found: Vec<Violation> = obs
        .captures
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, n)| violation("one capture per key", format!("payment {p}: {n} captures")))
        .collect();
    for op in obs.ops.iter().filter(|o| o.kind == Kind::Capture && o.ok()) {
        if obs.captures.get(&op.key).copied().unwrap_or(0) != 1 {
            found.push(violation(
                "one capture per key",
                format!("{op:?} was answered 2xx and no capture was stored"),
            ));
        }
    }
    found
}

/// No lost update: the patches answered 200 on an order each moved it from the version they
/// expected to the next, no two from the same version, and the database's version counts every
/// confirmed patch (and at most the unconfirmed ones besides). A read that began after a
/// confirmed patch ended sees its version or a later one.
fn patch_chains(obs: &Observed) -> Vec<Violation> {
    let mut found = Vec::new();
    let rows: BTreeMap<&str, &OrderRow> = obs.orders.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut patches: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in obs.ops.iter().filter(|o| o.kind == Kind::Patch) {
        patches.entry(&op.key).or_default().push(op);
    }
    for (order, ops) in &patches {
        let confirmed: Vec<&&Op> = ops.iter().filter(|o| o.ok()).collect();
        let unknown = ops.iter().filter(|o| o.unknown()).count() as u64;
        let mut bases = BTreeSet::new();
        for op in &confirmed {
            if op.version != op.base.map(|b| b + 1) {
                found.push(violation("no lost update", format!("{op:?}: not base + 1")));
            }
            if !bases.insert(op.base) {
                found.push(violation(
                    "no lost update",
                    format!("{op:?}: a second confirmed patch from the same version"),
                ));
            }
        }
        let Some(row) = rows.get(order) else {
            found.push(violation(
                "no lost update",
                format!("order {order} is gone"),
            ));
            continue;
        };
        let applied = row.version.saturating_sub(1);
        let n = confirmed.len() as u64;
        if applied < n || applied > n + unknown {
            found.push(violation(
                "no lost update",
                format!(
                    "order {order} at version {}: {n} patches confirmed, {unknown} unknown",
                    row.version
                ),
            ));
        }
        if let Some(last) = confirmed.iter().max_by_key(|o| o.version) {
            if last.version == Some(row.version) && last.quantity != Some(row.quantity) {
                found.push(violation(
                    "no lost update",
                    format!(
                        "order {order} holds quantity {}, the last confirmed patch wrote {last:?}",
                        row.quantity
                    ),
                ));
            }
        }
        found.extend(stale_reads(obs, order, &confirmed));
    }
    found
}

fn stale_reads(obs: &Observed, order: &str, confirmed: &[&&Op]) -> Vec<Violation> {
    obs.ops
        .iter()
        .filter(|r| r.kind == Kind::Read && r.key == order && r.ok())
        .filter_map(|r| {
            let seen = confirmed
                .iter()
                .filter(|p| p.end < r.start)
                .filter_map(|p| p.version)
                .max()?;
            (r.version < Some(seen)).then(|| {
                violation(
                    "no lost update",
                    format!("{r:?} read a version older than {seen}, confirmed before it began"),
                )
            })
        })
        .collect()
}

/// Fleet rate limit: a burst's admitted requests (answered other than 429 / 503) are at most the
/// burst plus the rate over the burst's span, plus one; bursts during a fault that takes Redis
/// away, or within [`FAIL_OPEN_TAIL`] of its heal, are left to the fail mode (reported, not
/// checked).
fn fleet_rate(obs: &Observed, bounds: &Bounds) -> Vec<Violation> {
    bursts(obs)
        .into_iter()
        .filter(|b| !b.excused)
        .filter(|b| b.admitted as f64 > b.allowed(bounds))
        .map(|b| {
            violation(
                "fleet rate limit",
                format!(
                    "principal {}: {} admitted in {} ms, the quota allows {:.0}",
                    b.key,
                    b.admitted,
                    b.span,
                    b.allowed(bounds)
                ),
            )
        })
        .collect()
}

/// How long fail-open outlives a Redis fault's heal (ms): the breakers stay open for their
/// cool-down (1 s), then a probe waits up to the response timeout (1 s) before they close.
pub const FAIL_OPEN_TAIL: u64 = 2_000;

/// One burst of one principal.
pub struct Burst {
    pub key: String,
    pub sent: usize,
    pub admitted: usize,
    pub span: u64,
    /// It overlapped a fault that takes Redis away from a server.
    pub excused: bool,
}

impl Burst {
    fn allowed(&self, bounds: &Bounds) -> f64 {
        bounds.burst + bounds.rate * self.span as f64 / 1000.0 + 1.0
    }
}

/// The bursts of a run.
pub fn bursts(obs: &Observed) -> Vec<Burst> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in obs.ops.iter().filter(|o| o.kind == Kind::Burst) {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let start = ops.iter().map(|o| o.start).min().unwrap_or(0);
            let end = ops.iter().map(|o| o.end).max().unwrap_or(0);
            let excused = obs
                .faults
                .iter()
                .any(|f| f.hits_redis() && f.start <= end && start <= f.end + FAIL_OPEN_TAIL);
            Burst {
                key: key.to_owned(),
                sent: ops.len(),
                admitted: ops
                    .iter()
                    .filter(|o| o.status.is_some_and(|s| s != 429 && s != 503))
                    .count(),
                span: end - start,
                excused,
            }
        })
        .collect()
}

/// Liveness: every key settled after the last fault healed answered 2xx within lease + 1 s of
/// the heal (or of its settling, begun after); no operation outlived the clients' deadline (plus a second for the last attempt to
/// be cut).
fn liveness(obs: &Observed, bounds: &Bounds) -> Vec<Violation> {
    let mut found = Vec::new();
    for op in obs.ops.iter().filter(|o| o.kind == Kind::Settle) {
        // Settled from the heal on: usable within the lease (an attempt cut by the fault still
        // holds the key that long) and a second.
        let by = obs.healed.max(op.start) + bounds.lease + 1_000;
        if !op.ok() || op.end > by {
            found.push(violation(
                "usable again within lease + 1 s",
                format!("{op:?}: the last fault healed at {}", obs.healed),
            ));
        }
    }
    for op in &obs.ops {
        if op.end.saturating_sub(op.start) > bounds.deadline + 1_000 {
            found.push(violation(
                "no request outlives its deadline",
                format!("{op:?} took {} ms", op.end - op.start),
            ));
        }
    }
    found
}

/// Events: every order has exactly one webhook processed by the receiver (`evt_<order id>`),
/// and no webhook names an order the database does not hold.
fn events(obs: &Observed) -> Vec<Violation> {
    let ids: BTreeSet<String> = obs.orders.iter().map(|o| format!("evt_{}", o.id)).collect();
    let mut found: Vec<Violation> = ids
        .iter()
        .filter(|id| obs.webhooks.get(*id).copied().unwrap_or(0) != 1)
        .map(|id| {
            violation(
                "one webhook per order",
                format!(
                    "{id}: processed {} times",
                    obs.webhooks.get(id).copied().unwrap_or(0)
                ),
            )
        })
        .collect();
    found.extend(
        obs.webhooks
            .keys()
            .filter(|id| !ids.contains(*id))
            .map(|id| violation("one webhook per order", format!("{id}: no such order"))),
    );
    found
}

/// Critical requests outside "all Redis down": the share answered 2xx, and a violation when it
/// is below the bound.
pub fn priority(obs: &Observed, bounds: &Bounds) -> (f64, Vec<Violation>) {
    let down: Vec<&Fault> = obs
        .faults
        .iter()
        .filter(|f| f.kind == "redis-down")
        .collect();
    let critical: Vec<&Op> = obs
        .ops
        .iter()
        .filter(|o| o.kind == Kind::Capture)
        .filter(|o| !down.iter().any(|f| f.start <= o.end && o.start <= f.end))
        .collect();
    if critical.is_empty() {
        return (1.0, Vec::new());
    }
    let ok = critical.iter().filter(|o| o.ok()).count();
    let share = ok as f64 / critical.len() as f64;
    let found = if share < bounds.critical {
        let failed: Vec<&&Op> = critical.iter().filter(|o| !o.ok()).take(5).collect();
        vec![violation(
            "critical requests served",
            format!(
                "{ok} of {} ({:.2} %) served; the first failures: {failed:?}",
                critical.len(),
                share * 100.0
            ),
        )]
    } else {
        Vec::new()
    };
    (share, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, key: &str, status: u16, order: &str) -> Op {
        Op {
            client: 0,
            kind,
            key: key.into(),
            principal: "p".into(),
            start: 1_000,
            end: 1_100,
            status: Some(status),
            attempts: 1,
            order: Some(order.into()),
            version: None,
            base: None,
            quantity: None,
        }
    }

    fn row(id: &str, sku: &str, version: u64, quantity: u32) -> OrderRow {
        OrderRow {
            id: id.into(),
            sku: sku.into(),
            quantity,
            version,
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            rate: 10.0,
            burst: 10.0,
            lease: 10_000,
            deadline: 10_000,
            critical: 0.999,
        }
    }

    /// A clean run: one order per key, its webhook once, a replay equal to the first answer.
    fn clean() -> Observed {
        Observed {
            ops: vec![
                op(Kind::Create, "k1", 201, "o1"),
                op(Kind::Replay, "k1", 201, "o1"),
            ],
            orders: vec![row("o1", "k1", 1, 1)],
            webhooks: [("evt_o1".to_owned(), 1)].into(),
            ..Observed::default()
        }
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        assert_eq!(check(&clean(), &bounds()), vec![]);
    }

    #[test]
    fn a_duplicated_order_is_reported() {
        let mut obs = clean();
        obs.orders.push(row("o2", "k1", 1, 1));
        obs.webhooks.insert("evt_o2".into(), 1);
        let found = check(&obs, &bounds());
        assert!(
            found
                .iter()
                .any(|v| v.check == "one order per key" && v.detail.contains("o2")),
            "{found:?}"
        );
    }

    #[test]
    fn an_acknowledged_order_missing_from_the_database_is_reported() {
        let mut obs = clean();
        obs.ops.push(op(Kind::Create, "k2", 201, "o9"));
        let found = check(&obs, &bounds());
        assert!(found.iter().any(|v| v.detail.contains("k2")), "{found:?}");
    }

    #[test]
    fn a_replay_that_differs_from_the_first_answer_is_reported() {
        let mut obs = clean();
        obs.ops[1].status = Some(200);
        let found = check(&obs, &bounds());
        assert!(
            found
                .iter()
                .any(|v| v.check == "replay equals the first answer"),
            "{found:?}"
        );
    }

    #[test]
    fn a_lost_update_is_reported() {
        let mut obs = clean();
        let patch = |base: u64, quantity: u32| Op {
            kind: Kind::Patch,
            key: "o1".into(),
            base: Some(base),
            version: Some(base + 1),
            quantity: Some(quantity),
            ..op(Kind::Patch, "o1", 200, "o1")
        };
        // Two patches both confirmed from version 1: one of them overwrote the other.
        obs.ops.extend([patch(1, 5), patch(1, 6)]);
        obs.orders[0] = row("o1", "k1", 2, 6);
        let found = check(&obs, &bounds());
        assert!(
            found.iter().any(|v| v.check == "no lost update"),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_or_doubled_webhook_is_reported() {
        let mut obs = clean();
        obs.webhooks.insert("evt_o1".into(), 2);
        obs.webhooks.insert("evt_ghost".into(), 1);
        let found = check(&obs, &bounds());
        assert_eq!(
            found
                .iter()
                .filter(|v| v.check == "one webhook per order")
                .count(),
            2,
            "{found:?}"
        );
    }

    #[test]
    fn a_burst_over_the_quota_is_reported_unless_redis_was_away() {
        let mut obs = clean();
        // 10 burst + 10/s over 0.1 s + 1 = 12 allowed; 20 admitted.
        obs.ops.extend((0..20).map(|_| Op {
            start: 10_000,
            end: 10_100,
            ..op(Kind::Burst, "b1", 404, "")
        }));
        let found = check(&obs, &bounds());
        assert!(
            found.iter().any(|v| v.check == "fleet rate limit"),
            "{found:?}"
        );
        let outage = |end: u64| Fault {
            kind: "redis-down".into(),
            target: "all".into(),
            start: 0,
            end,
        };
        // Until the breakers close again after the heal, fail-open decides.
        obs.faults.push(outage(10_000 - FAIL_OPEN_TAIL + 100));
        assert!(check(&obs, &bounds())
            .iter()
            .all(|v| v.check != "fleet rate limit"));
        obs.faults[0] = outage(10_000 - FAIL_OPEN_TAIL - 100);
        assert!(check(&obs, &bounds())
            .iter()
            .any(|v| v.check == "fleet rate limit"));
    }

    #[test]
    fn a_key_still_stuck_after_the_lease_is_reported() {
        let mut obs = clean();
        obs.healed = 1_000;
        let mut stuck = op(Kind::Settle, "k1", 201, "o1");
        stuck.end = 1_000 + 10_000 + 1_500;
        stuck.start = 1_000;
        obs.ops.push(stuck);
        let found = check(&obs, &bounds());
        assert!(
            found
                .iter()
                .any(|v| v.check == "usable again within lease + 1 s"),
            "{found:?}"
        );
    }

    #[test]
    fn failed_critical_requests_below_the_bound_are_reported() {
        let mut obs = clean();
        obs.ops.push(op(Kind::Capture, "p1", 503, ""));
        obs.ops.push(op(Kind::Capture, "p2", 200, ""));
        obs.captures.insert("p2".into(), 1);
        let found = check(&obs, &bounds());
        assert!(
            found.iter().any(|v| v.check == "critical requests served"),
            "{found:?}"
        );
    }
}
