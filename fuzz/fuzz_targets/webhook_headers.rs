//! The `webhook_headers` target ([`retry_safe_fuzz::webhook_headers`]): under libFuzzer when cargo-fuzz builds it
//! (`--cfg fuzzing`); otherwise a plain program that runs the target over the files named on
//! its command line (a test build of it runs nothing, so `cargo test --all-targets` does not
//! start a fuzzer).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| retry_safe_fuzz::webhook_headers(data));

#[cfg(not(fuzzing))]
fn main() {
    retry_safe_fuzz::replay_files(retry_safe_fuzz::webhook_headers);
}
