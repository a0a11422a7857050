//! Replays, on stable, every input committed for each fuzz target: the corpus `cargo xtask fuzz`
//! grew (`fuzz/corpus/<target>/`) and the crashes it found, kept as regressions
//! (`fuzz/regressions/<target>/`). A target without inputs fails: nothing is skipped.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    found.sort();
    found
}

#[test]
fn every_committed_input_of_every_target_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, run) in retry_safe_fuzz::TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "no corpus for {target}: run `cargo xtask fuzz`"
        );
        let regressions = inputs(&root.join("regressions").join(target));
        for (path, data) in corpus.iter().chain(&regressions) {
            let outcome = std::panic::catch_unwind(|| run(data));
            assert!(outcome.is_ok(), "{target} fails on {path}");
        }
        println!(
            "{target}: {} corpus inputs, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
}
