//! A seeded discrete-event simulation of one server under rising load, for three admission
//! strategies: (a) no shedding, (b) tower's `LoadShed` over `ConcurrencyLimit`, (c) this crate's
//! `Shedder` (reserved capacity + controller).
//!
//! Run: `cargo xtask bench loadshed` (or `cargo bench -p loadshed-fleet --bench simulation`).
//! Writes the tables into `docs/benchmarks.md` (between the `loadshed-simulation` markers) and
//! the plot `docs/loadshed-success.svg` (per-class success vs offered load), and prints the tables.
//!
//! The server has `W` = 16 workers and a FIFO queue; service times are exponential with a 20 ms
//! mean, so capacity is 800 requests/s. Arrivals are Poisson; classes are drawn 10 % critical,
//! 30 % write, 45 % read, 15 % test-mode. Offered load runs 30 s at each of 0.5×, 1×, 2×, 3× and
//! 5× capacity, then 60 s back at 0.5×. Clients give up after 1 s: a request counts as a success
//! if it was admitted and completed within 1 s of its arrival. (b) and (c) admit at most 32
//! requests in flight (16 running, 16 queued); (a) queues without bound. Strategy (b) runs
//! tower's real `LoadShed<ConcurrencyLimit<_>>` services, polled with a no-op waker on virtual
//! time; (c) runs the real `Shedder` on a `ManualClock` set to each event's time.

use loadshed_fleet::ManualClock;
use loadshed_fleet::{Class, ControllerConfig, Guard, Shares, Shedder};
use plotters::prelude::*;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

mod sim;
use sim::{all_latencies, bench_mode, ms, percentile, phase_ns, Cell, Rng};
use tower::Service;

const WORKERS: usize = 16;
const SLOTS: u32 = 32;
const MEAN_SERVICE_S: f64 = 0.020;
const CAPACITY_RPS: f64 = WORKERS as f64 / MEAN_SERVICE_S;
const TIMEOUT_NS: u64 = 1_000_000_000;
const MIX: [(Class, f64); 4] = [
    (Class::Critical, 0.10),
    (Class::Write, 0.30),
    (Class::Read, 0.45),
    (Class::TestMode, 0.15),
];
const PHASES: [(f64, u64); 6] = [
    (0.5, 30),
    (1.0, 30),
    (2.0, 30),
    (3.0, 30),
    (5.0, 30),
    (0.5, 60),
];
const SEED: u64 = 0x5eed_2026;

#[derive(Clone, Copy)]
struct Request {
    id: u64,
    class: Class,
    arrival: u64,
    service: u64,
    phase: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Completion(u64),
    Arrival,
}

/// What an admission strategy decides.
trait Admission {
    /// Admit `req` at `now` (ns)? The strategy keeps whatever it holds for it.
    fn admit(&mut self, req: &Request, now: u64) -> bool;
    /// `req` completed at `now`.
    fn complete(&mut self, id: u64, now: u64);
}

struct NoShedding;

impl Admission for NoShedding {
    fn admit(&mut self, _: &Request, _: u64) -> bool {
        true
    }
    fn complete(&mut self, _: u64, _: u64) {}
}

type Held = Pin<Box<dyn Future<Output = Result<(), tower::BoxError>>>>;

struct TowerLoadShed<S> {
    service: S,
    held: HashMap<u64, (Held, tokio::sync::oneshot::Sender<()>)>,
    waker: Waker,
}

impl<S> Admission for TowerLoadShed<S>
where
    S: Service<tokio::sync::oneshot::Receiver<()>, Response = (), Error = tower::BoxError>,
    S::Future: 'static,
{
    fn admit(&mut self, req: &Request, _: u64) -> bool {
        let mut cx = Context::from_waker(&self.waker);
        if !matches!(self.service.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
            return false;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut fut: Held = Box::pin(self.service.call(rx));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(_) => false, // LoadShed answered Overloaded at once
            Poll::Pending => {
                self.held.insert(req.id, (fut, tx));
                true
            }
        }
    }

    fn complete(&mut self, id: u64, _: u64) {
        if let Some((mut fut, tx)) = self.held.remove(&id) {
            let _ = tx.send(());
            let mut cx = Context::from_waker(&self.waker);
            assert!(
                fut.as_mut().poll(&mut cx).is_ready(),
                "the response completes"
            );
        }
    }
}

struct Ours<'a> {
    shedder: &'a Shedder<ManualClock>,
    clock: ManualClock,
    held: HashMap<u64, Guard<'a, ManualClock>>,
}

impl Admission for Ours<'_> {
    fn admit(&mut self, req: &Request, now: u64) -> bool {
        self.clock.set(Duration::from_nanos(now));
        match self.shedder.admit(req.class) {
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
}

fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |_| RawWaker::new(std::ptr::null(), &VTABLE),
        |_| {},
        |_| {},
        |_| {},
    );
    // SAFETY: every vtable function ignores the (null) data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

struct Outcome {
    cells: Vec<[Cell; 4]>,
    /// Seconds after the overload ended until a full second passed with nothing shed and the
    /// admitted p99 back within 2× the unloaded p99.
    recovery_s: Option<f64>,
}

fn run(strategy: &mut dyn Admission) -> Outcome {
    let mut rng = Rng(SEED);
    let mut events: BinaryHeap<Reverse<(u64, Event, u64)>> = BinaryHeap::new();
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut free = WORKERS;
    let mut cells = vec![<[Cell; 4]>::default(); PHASES.len()];
    let mut running: HashMap<u64, Request> = HashMap::new();
    let ends: Vec<u64> = PHASES
        .iter()
        .scan(0, |t, &(_, secs)| {
            *t += phase_ns(secs);
            Some(*t)
        })
        .collect();
    let total = *ends.last().unwrap();
    let overload_end = ends[PHASES.len() - 2];
    // Recovery tracking: completions and sheds per second after the overload.
    let mut after: Vec<(u64, Vec<u64>)> = vec![(0, Vec::new()); 60];
    let mut next_id = 0u64;
    let mut phase = 0usize;
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
                let rate = PHASES[phase].0 * CAPACITY_RPS;
                events.push(Reverse((now + rng.exp_ns(1.0 / rate), Event::Arrival, 0)));
                let u = rng.next();
                let mut acc = 0.0;
                let class = MIX
                    .iter()
                    .find(|(_, share)| {
                        acc += share;
                        u < acc
                    })
                    .map_or(Class::TestMode, |&(c, _)| c);
                let req = Request {
                    id: next_id,
                    class,
                    arrival: now,
                    service: rng.exp_ns(MEAN_SERVICE_S),
                    phase,
                };
                next_id += 1;
                let cell = &mut cells[phase][class.index()];
                cell.offered += 1;
                if !strategy.admit(&req, now) {
                    cell.shed += 1;
                    if now >= overload_end {
                        after[((now - overload_end) / 1_000_000_000) as usize].0 += 1;
                    }
                    continue;
                }
                if free > 0 {
                    free -= 1;
                    events.push(Reverse((
                        now + req.service,
                        Event::Completion(req.id),
                        req.id,
                    )));
                    running.insert(req.id, req);
                } else {
                    queue.push_back(req);
                }
            }
            Event::Completion(_) => {
                let req = running.remove(&id).expect("a running request");
                strategy.complete(id, now);
                let latency = now - req.arrival;
                let cell = &mut cells[req.phase][req.class.index()];
                cell.latencies.push(latency);
                if latency <= TIMEOUT_NS {
                    cell.succeeded += 1;
                }
                if req.arrival >= overload_end {
                    after[((req.arrival - overload_end) / 1_000_000_000) as usize]
                        .1
                        .push(latency);
                }
                if let Some(next) = queue.pop_front() {
                    events.push(Reverse((
                        now + next.service,
                        Event::Completion(next.id),
                        next.id,
                    )));
                    running.insert(next.id, next);
                } else {
                    free += 1;
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
        recovery_s: recovery_s.map(|s| s as f64),
    }
}

fn main() {
    // The bench harness passes flags such as `--bench`; the simulation takes none.
    let mut none = NoShedding;
    let a = run(&mut none);

    let service = tower::ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(SLOTS as usize)
        .service(tower::service_fn(
            |rx: tokio::sync::oneshot::Receiver<()>| async move {
                let _ = rx.await;
                Ok::<_, Infallible>(())
            },
        ));
    let mut tower_shed = TowerLoadShed {
        service,
        held: HashMap::new(),
        waker: noop_waker(),
    };
    let b = run(&mut tower_shed);

    let clock = ManualClock::new();
    let mut config = ControllerConfig::default();
    config.target = Duration::from_millis(40);
    let shedder = Shedder::with_shares(SLOTS, Shares::default())
        .unwrap()
        .controller(config, clock.clone())
        .seed(SEED);
    let mut ours = Ours {
        shedder: &shedder,
        clock,
        held: HashMap::new(),
    };
    let c = run(&mut ours);

    let strategies = [
        ("no shedding", &a),
        ("tower load_shed", &b),
        ("loadshed-fleet", &c),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Written by `cargo xtask bench loadshed` (crates/loadshed-fleet/benches/simulation.rs); seed {SEED:#x}. -->\n"
    );
    let _ = writeln!(
        out,
        "### Per phase: critical success, goodput, admitted latency\n"
    );
    let _ = writeln!(
        out,
        "| load | strategy | critical success | all classes success | goodput (req/s) | admitted p50 | admitted p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (p, &(load, secs)) in PHASES.iter().enumerate() {
        for (name, o) in strategies {
            let cells = &o.cells[p];
            let crit = &cells[Class::Critical.index()];
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
                100.0 * crit.succeeded as f64 / crit.offered.max(1) as f64,
                100.0 * ok as f64 / offered.max(1) as f64,
                ok as f64 / (phase_ns(secs) as f64 / 1e9),
                ms(percentile(&mut lat.clone(), 0.5)),
                ms(percentile(&mut lat, 0.99)),
            );
        }
    }
    let _ = writeln!(out, "\n### Per class at 3× capacity\n");
    let _ = writeln!(
        out,
        "| strategy | class | success | shed | admitted p50 | admitted p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (name, o) in strategies {
        for class in Class::ALL.iter().rev() {
            let cell = &o.cells[3][class.index()];
            let mut lat = cell.latencies.clone();
            let _ = writeln!(
                out,
                "| {name} | {} | {:.2} % | {:.1} % | {} ms | {} ms |",
                class.name(),
                100.0 * cell.succeeded as f64 / cell.offered.max(1) as f64,
                100.0 * cell.shed as f64 / cell.offered.max(1) as f64,
                ms(percentile(&mut lat.clone(), 0.5)),
                ms(percentile(&mut lat, 0.99)),
            );
        }
    }
    let _ = writeln!(out, "\n### Recovery after the overload ends\n");
    let _ = writeln!(
        out,
        "| strategy | first full second with nothing shed and p99 ≤ 2× unloaded |"
    );
    let _ = writeln!(out, "|---|---|");
    for (name, o) in strategies {
        let r = o
            .recovery_s
            .map_or("not within 60 s".into(), |s| format!("{s:.0} s after"));
        let _ = writeln!(out, "| {name} | {r} |");
    }
    let unloaded = percentile(&mut all_latencies(&c.cells[0]), 0.99);
    let _ = writeln!(
        out,
        "\nUnloaded admitted p99 (0.5×, this crate): {} ms.",
        ms(unloaded)
    );
    println!("{out}");

    // The goals at 3× capacity, checked in both modes.
    let crit = &c.cells[3][Class::Critical.index()];
    let critical_success = crit.succeeded as f64 / crit.offered as f64;
    assert!(
        critical_success >= 0.999,
        "critical success at 3×: {critical_success}"
    );
    let p99 = percentile(&mut all_latencies(&c.cells[3]), 0.99);
    assert!(
        p99 <= 2 * unloaded,
        "admitted p99 at 3×: {p99} ns vs unloaded {unloaded} ns"
    );
    assert!(
        c.recovery_s.is_some(),
        "full admission returns after the overload"
    );
    if !bench_mode() {
        return;
    }

    sim::write_tables("loadshed-simulation", &out);
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    plot(&docs.join("loadshed-success.svg"), &b, &c).expect("the plot is drawn");
    eprintln!("updated docs/benchmarks.md and wrote docs/loadshed-success.svg");
}

fn plot(
    path: &std::path::Path,
    tower: &Outcome,
    ours: &Outcome,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Success rate per class vs offered load (solid: loadshed-fleet, dashed: tower load_shed)", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0f64..5.5, 0.0f64..105.0)?;
    chart
        .configure_mesh()
        .x_desc("offered load (× capacity)")
        .y_desc("success (%)")
        .draw()?;
    let colors = [RED, BLUE, GREEN, BLACK];
    for class in Class::ALL {
        let color = colors[class.index()];
        let points = |o: &Outcome| -> Vec<(f64, f64)> {
            PHASES[..5]
                .iter()
                .enumerate()
                .map(|(p, &(load, _))| {
                    let cell = &o.cells[p][class.index()];
                    (
                        load,
                        100.0 * cell.succeeded as f64 / cell.offered.max(1) as f64,
                    )
                })
                .collect()
        };
        chart
            .draw_series(LineSeries::new(points(ours), color.stroke_width(3)))?
            .label(class.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(DashedLineSeries::new(
            points(tower),
            6,
            4,
            color.stroke_width(1),
        ))?;
        chart.draw_series(
            points(ours)
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
