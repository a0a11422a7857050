//! What the load-shedding simulations share: the seeded generator, the per-phase cells, the run
//! length of the two modes, percentiles, and writing their tables into docs/benchmarks.md.

/// splitmix64: a seeded, deterministic source of uniforms.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn exp_ns(&mut self, mean_s: f64) -> u64 {
        (-self.next().ln() * mean_s * 1e9) as u64
    }
}

/// Per phase and class: offered, shed, succeeded, admitted latencies (ns).
#[derive(Default, Clone)]
pub struct Cell {
    pub offered: u64,
    pub shed: u64,
    pub succeeded: u64,
    pub latencies: Vec<u64>,
}

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs the binary without it, and
/// then the simulation runs at a tenth of the phase lengths, checks the goals, and writes nothing.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A phase of `secs` seconds in nanoseconds (a tenth of it outside bench mode).
pub fn phase_ns(secs: u64) -> u64 {
    if bench_mode() {
        secs * 1_000_000_000
    } else {
        secs * 100_000_000
    }
}

pub fn all_latencies(cells: &[Cell; 4]) -> Vec<u64> {
    cells
        .iter()
        .flat_map(|c| c.latencies.iter().copied())
        .collect()
}

pub fn percentile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

pub fn ms(ns: u64) -> String {
    format!("{:.0}", ns as f64 / 1e6)
}

/// Replaces what stands between `<!-- {marker}:start -->` and `<!-- {marker}:end -->` in
/// docs/benchmarks.md with `tables` (appends the block when the markers are missing).
pub fn write_tables(marker: &str, tables: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
    let doc = std::fs::read_to_string(&path).expect("docs/benchmarks.md exists");
    let (start, end) = (
        format!("<!-- {marker}:start -->"),
        format!("<!-- {marker}:end -->"),
    );
    let updated = match (doc.find(&start), doc.find(&end)) {
        (Some(i), Some(j)) if i < j => format!("{}{start}\n{tables}{}", &doc[..i], &doc[j..]),
        _ => format!("{doc}\n{start}\n{tables}{end}\n"),
    };
    std::fs::write(&path, updated).expect("docs/ is writable");
}
