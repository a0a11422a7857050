//! A seeded discrete-event simulation of a **fleet** behind a balancer, up to a 12× spike, for
//! two admission strategies: (a) each server's own `Shedder` (reserved capacity + controller),
//! and (b) the fleet usage shedder in front of those same per-server shedders.
//!
//! Run: `cargo xtask bench loadshed` (or `cargo bench -p loadshed-fleet --bench fleet_simulation`).
//! Writes its tables into `docs/benchmarks.md` between the `loadshed-fleet-simulation` markers and
//! prints them.
//!
//! **The fleet.** `SERVERS` = 4 servers of 16 workers each; a balancer sends every request to a
//! server picked uniformly at random. Each server has a FIFO queue for its workers. A request on a
//! worker needs one of the `DB_SLOTS` = 24 connections of a database the whole fleet shares (FIFO
//! queue for them) and holds worker and connection for its service time (exponential, mean 20 ms).
//! The fleet's capacity is the database's: 24 / 20 ms = 1,200 requests/s, well below what its
//! 64 workers could do alone — the shared bottleneck that no single server can see.
//!
//! **Traffic.** Poisson arrivals; at 1× capacity 10 % critical, 30 % write, 45 % read, 15 %
//! test-mode. Above 1× the spike is non-critical traffic (retries, scripts, background work, as
//! in Netflix's account of a 12× spike): critical traffic stays at its 1× rate and the other
//! classes grow in proportion. Phases of 30 s at 0.5×, 1×, 3×, 6× and 12×, then 60 s back at
//! 0.5×. Clients give up after 1 s: a success is a request admitted and completed within 1 s.
//!
//! **Strategies.** (a) every server runs `Shedder::with_shares(32, default)` with the
//! controller (40 ms target), on a `ManualClock` set to each event's time. (b) the same, behind one
//! fleet-wide admission of 48 slots (the database's 24 plus as many queued) with the default shares
//! — the rule `FleetShedder` runs in Redis (`limit(class) = capacity × share`, one shared
//! count), here the same `Shedder` arithmetic shared by the four servers, so that the simulation
//! needs no network. Its Redis round trip is charged: 0.5 ms is added to every admitted
//! request's latency (the release is off the request path). A request is admitted by its server
//! first, then by the fleet, as `PriorityShedLayer::with_fleet` does.

use loadshed_fleet::ManualClock;
use loadshed_fleet::{Class, ControllerConfig, Guard, Shares, Shedder};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

mod sim;
use sim::{all_latencies, bench_mode, ms, percentile, phase_ns, Cell, Rng};

const SERVERS: usize = 4;
const WORKERS: usize = 16;
const SERVER_SLOTS: u32 = 32;
const DB_SLOTS: usize = 24;
const FLEET_SLOTS: u32 = 2 * DB_SLOTS as u32;
const MEAN_SERVICE_S: f64 = 0.020;
const CAPACITY_RPS: f64 = DB_SLOTS as f64 / MEAN_SERVICE_S;
const FLEET_RTT_NS: u64 = 500_000;
const TIMEOUT_NS: u64 = 1_000_000_000;
/// Class shares at 1× (critical, write, read, test-mode).
const MIX: [(Class, f64); 4] = [
    (Class::Critical, 0.10),
    (Class::Write, 0.30),
    (Class::Read, 0.45),
    (Class::TestMode, 0.15),
];
const PHASES: [(f64, u64); 6] = [
    (0.5, 30),
    (1.0, 30),
    (3.0, 30),
    (6.0, 30),
    (12.0, 30),
    (0.5, 60),
];
/// The index of the 12× phase.
const SPIKE: usize = 4;
const SEED: u64 = 0x5eed_2026;

/// Arrival rate per class (requests/s) at `load`× capacity.
fn class_rates(load: f64) -> [f64; 4] {
    let critical = MIX[0].1 * load.min(1.0) * CAPACITY_RPS;
    let rest = load * CAPACITY_RPS - critical;
    let others: f64 = MIX[1..].iter().map(|(_, s)| s).sum();
    let mut rates = [0.0; 4];
    for (class, share) in MIX {
        rates[class.index()] = if class == Class::Critical {
            critical
        } else {
            rest * share / others
        };
    }
    rates
}

#[derive(Clone, Copy)]
struct Request {
    id: u64,
    class: Class,
    server: usize,
    arrival: u64,
    service: u64,
    phase: usize,
}

/// What an admission strategy decides.
trait Admission {
    /// Admit `req` at `now` (ns)? The strategy keeps whatever it holds for it.
    fn admit(&mut self, req: &Request, now: u64) -> bool;
    /// `req` completed at `now`.
    fn complete(&mut self, id: u64, now: u64);
    /// Latency the strategy adds to an admitted request (ns).
    fn overhead(&self) -> u64;
}

/// (a) Each server on its own.
struct PerServer<'a> {
    servers: &'a [Shedder<ManualClock>],
    clock: ManualClock,
    held: HashMap<u64, Guard<'a, ManualClock>>,
}

impl Admission for PerServer<'_> {
    fn admit(&mut self, req: &Request, now: u64) -> bool {
        self.clock.set(Duration::from_nanos(now));
        match self.servers[req.server].admit(req.class) {
            Ok(guard) => {
                self.held.insert(req.id, guard);
                true
            }
            Err(_) => false,
        }
    }

    fn complete(&mut self, id: u64, now: u64) {
        self.clock.set(Duration::from_nanos(now));
        self.held.remove(&id);
    }

    fn overhead(&self) -> u64 {
        0
    }
}

/// (b) The server's admission first, then the fleet's.
struct Fleet<'a> {
    fleet: &'a Shedder<ManualClock>,
    servers: &'a [Shedder<ManualClock>],
    clock: ManualClock,
    held: HashMap<u64, (Guard<'a, ManualClock>, Guard<'a, ManualClock>)>,
}

impl Admission for Fleet<'_> {
    fn admit(&mut self, req: &Request, now: u64) -> bool {
        self.clock.set(Duration::from_nanos(now));
        let Ok(server) = self.servers[req.server].admit(req.class) else {
            return false; // shed by its server: the fleet is not asked
        };
        match self.fleet.admit(req.class) {
            Ok(fleet) => {
                self.held.insert(req.id, (server, fleet));
                true
            }
            Err(_) => false, // the server slot is released with `server`
        }
    }

    fn complete(&mut self, id: u64, now: u64) {
        self.clock.set(Duration::from_nanos(now));
        self.held.remove(&id);
    }

    fn overhead(&self) -> u64 {
        FLEET_RTT_NS
    }
}

struct Outcome {
    cells: Vec<[Cell; 4]>,
    /// Seconds after the spike ended until a full second passed with nothing shed and the
    /// admitted p99 back within 2× the unloaded p99.
    recovery_s: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Completion,
    Arrival,
}

/// The shared state of the fleet's servers and database.
struct Fleetwide {
    free_workers: [usize; SERVERS],
    server_queues: [VecDeque<Request>; SERVERS],
    free_db: usize,
    db_queue: VecDeque<Request>,
    running: HashMap<u64, Request>,
}

impl Fleetwide {
    /// `req` holds a worker: it takes a connection or waits for one.
    fn send_to_database(&mut self, req: Request, now: u64, events: &mut Events) {
        if self.free_db > 0 {
            self.free_db -= 1;
            events.push(Reverse((now + req.service, Event::Completion, req.id)));
            self.running.insert(req.id, req);
        } else {
            self.db_queue.push_back(req);
        }
    }
}

type Events = BinaryHeap<Reverse<(u64, Event, u64)>>;

fn run(strategy: &mut dyn Admission) -> Outcome {
    let mut rng = Rng(SEED);
    let mut events: Events = BinaryHeap::new();
    let mut state = Fleetwide {
        free_workers: [WORKERS; SERVERS],
        server_queues: Default::default(),
        free_db: DB_SLOTS,
        db_queue: VecDeque::new(),
        running: HashMap::new(),
    };
    let mut cells = vec![<[Cell; 4]>::default(); PHASES.len()];
    let ends: Vec<u64> = PHASES
        .iter()
        .scan(0, |t, &(_, secs)| {
            *t += phase_ns(secs);
            Some(*t)
        })
        .collect();
    let total = *ends.last().unwrap();
    let spike_end = ends[SPIKE];
    let seconds_after = (phase_ns(PHASES[SPIKE + 1].1) / 1_000_000_000).max(1) as usize + 1;
    let mut after: Vec<(u64, Vec<u64>)> = vec![(0, Vec::new()); seconds_after];
    let second = |t: u64| ((t - spike_end) / 1_000_000_000) as usize;
    let mut next_id = 0u64;
    let mut phase = 0usize;
    let overhead = strategy.overhead();
    events.push(Reverse((0, Event::Arrival, 0)));
    while let Some(Reverse((now, event, id))) = events.pop() {
        match event {
            Event::Arrival => {
                if now >= total {
                    continue;
                }
                while now >= ends[phase] {
                    phase += 1;
                }
                let rates = class_rates(PHASES[phase].0);
                let rate: f64 = rates.iter().sum();
                events.push(Reverse((now + rng.exp_ns(1.0 / rate), Event::Arrival, 0)));
                let u = rng.next() * rate;
                let mut acc = 0.0;
                let class = Class::ALL
                    .into_iter()
                    .find(|c| {
                        acc += rates[c.index()];
                        u < acc
                    })
                    .unwrap_or(Class::TestMode);
                let server = ((rng.next() * SERVERS as f64) as usize).min(SERVERS - 1);
                let req = Request {
                    id: next_id,
                    class,
                    server,
                    arrival: now,
                    service: rng.exp_ns(MEAN_SERVICE_S),
                    phase,
                };
                next_id += 1;
                let cell = &mut cells[phase][class.index()];
                cell.offered += 1;
                if !strategy.admit(&req, now) {
                    cell.shed += 1;
                    if now >= spike_end {
                        after[second(now)].0 += 1;
                    }
                    continue;
                }
                if state.free_workers[server] > 0 {
                    state.free_workers[server] -= 1;
                    state.send_to_database(req, now, &mut events);
                } else {
                    state.server_queues[server].push_back(req);
                }
            }
            Event::Completion => {
                let req = state.running.remove(&id).expect("a running request");
                strategy.complete(id, now);
                let latency = now - req.arrival + overhead;
                let cell = &mut cells[req.phase][req.class.index()];
                cell.latencies.push(latency);
                if latency <= TIMEOUT_NS {
                    cell.succeeded += 1;
                }
                if req.arrival >= spike_end {
                    after[second(req.arrival)].1.push(latency);
                }
                // Its connection goes to the next request waiting for one …
                state.free_db += 1;
                if let Some(next) = state.db_queue.pop_front() {
                    state.send_to_database(next, now, &mut events);
                }
                // … and its worker to the next request queued on its server.
                if let Some(next) = state.server_queues[req.server].pop_front() {
                    state.send_to_database(next, now, &mut events);
                } else {
                    state.free_workers[req.server] += 1;
                }
            }
        }
    }
    let unloaded_p99 = percentile(&mut all_latencies(&cells[0]), 0.99);
    let recovery_s = after.iter_mut().position(|(shed, lat)| {
        *shed == 0 && !lat.is_empty() && percentile(lat, 0.99) <= 2 * unloaded_p99
    });
    Outcome {
        cells,
        recovery_s: recovery_s.map(|s| s as u64),
    }
}

fn servers(clock: &ManualClock) -> Vec<Shedder<ManualClock>> {
    let mut config = ControllerConfig::default();
    config.target = Duration::from_millis(40);
    (0..SERVERS as u64)
        .map(|i| {
            Shedder::with_shares(SERVER_SLOTS, Shares::default())
                .unwrap()
                .controller(config, clock.clone())
                .seed(SEED + i)
        })
        .collect()
}

fn success(cell: &Cell) -> f64 {
    cell.succeeded as f64 / cell.offered.max(1) as f64
}

fn main() {
    let clock = ManualClock::new();
    let alone = servers(&clock);
    let a = run(&mut PerServer {
        servers: &alone,
        clock: clock.clone(),
        held: HashMap::new(),
    });

    let clock = ManualClock::new();
    let behind = servers(&clock);
    let fleet: Shedder<ManualClock> = Shedder::with_shares(FLEET_SLOTS, Shares::default()).unwrap();
    let b = run(&mut Fleet {
        fleet: &fleet,
        servers: &behind,
        clock: clock.clone(),
        held: HashMap::new(),
    });

    let strategies = [("per-server", &a), ("fleet + per-server", &b)];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Written by `cargo xtask bench loadshed` (crates/loadshed-fleet/benches/fleet_simulation.rs); seed {SEED:#x}. -->\n"
    );
    let _ = writeln!(
        out,
        "#### Per phase: critical success, goodput, admitted latency\n"
    );
    let _ = writeln!(
        out,
        "| load | strategy | critical success | all classes success | goodput (req/s) | admitted p50 | admitted p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (p, &(load, secs)) in PHASES.iter().enumerate() {
        for (name, o) in strategies {
            let cells = &o.cells[p];
            let offered: u64 = cells.iter().map(|c| c.offered).sum();
            let ok: u64 = cells.iter().map(|c| c.succeeded).sum();
            let mut lat = all_latencies(cells);
            let label = if p == PHASES.len() - 1 {
                format!("{load}× (after)")
            } else {
                format!("{load}×")
            };
            let _ = writeln!(
                out,
                "| {label} | {name} | {:.2} % | {:.1} % | {:.0} | {} ms | {} ms |",
                100.0 * success(&cells[Class::Critical.index()]),
                100.0 * ok as f64 / offered.max(1) as f64,
                ok as f64 / (phase_ns(secs) as f64 / 1e9),
                ms(percentile(&mut lat.clone(), 0.5)),
                ms(percentile(&mut lat, 0.99)),
            );
        }
    }
    let _ = writeln!(out, "\n#### Per class at the 12× spike\n");
    let _ = writeln!(
        out,
        "| strategy | class | success | shed | admitted p50 | admitted p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (name, o) in strategies {
        for class in Class::ALL.iter().rev() {
            let cell = &o.cells[SPIKE][class.index()];
            let mut lat = cell.latencies.clone();
            let _ = writeln!(
                out,
                "| {name} | {} | {:.2} % | {:.1} % | {} ms | {} ms |",
                class.name(),
                100.0 * success(cell),
                100.0 * cell.shed as f64 / cell.offered.max(1) as f64,
                ms(percentile(&mut lat.clone(), 0.5)),
                ms(percentile(&mut lat, 0.99)),
            );
        }
    }
    let _ = writeln!(out, "\n#### Recovery after the spike ends\n");
    let _ = writeln!(
        out,
        "| strategy | unloaded admitted p99 | first full second with nothing shed and p99 ≤ 2× unloaded |"
    );
    let _ = writeln!(out, "|---|---|---|");
    for (name, o) in strategies {
        let r = o
            .recovery_s
            .map_or("not within 60 s".into(), |s| format!("{s} s after"));
        let unloaded = percentile(&mut all_latencies(&o.cells[0]), 0.99);
        let _ = writeln!(out, "| {name} | {} ms | {r} |", ms(unloaded));
    }
    println!("{out}");

    // The goals at the 12× spike, for the fleet shedder, checked in both modes.
    let critical = success(&b.cells[SPIKE][Class::Critical.index()]);
    assert!(critical >= 0.999, "critical success at 12×: {critical}");
    let unloaded = percentile(&mut all_latencies(&b.cells[0]), 0.99);
    let p99 = percentile(&mut all_latencies(&b.cells[SPIKE]), 0.99);
    assert!(
        p99 <= 2 * unloaded,
        "admitted p99 at 12×: {p99} ns vs unloaded {unloaded} ns"
    );
    assert!(
        b.recovery_s.is_some(),
        "full admission returns after the spike"
    );
    if !bench_mode() {
        return;
    }

    sim::write_tables("loadshed-fleet-simulation", &out);
    eprintln!("updated docs/benchmarks.md");
}
