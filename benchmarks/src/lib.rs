//! The benchmarks of the example app: `benches/` (end to end in process, Redis Cluster against
//! one node) and the callgrind drivers in `src/bin/` that `cargo xtask instructions` and
//! `cargo xtask bench redis-server` count instructions with. Nothing here is published; the
//! figures are in docs/benchmarks.md.
