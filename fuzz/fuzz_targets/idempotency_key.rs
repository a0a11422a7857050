//! libFuzzer target: [`retry_safe_fuzz::idempotency_key`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retry_safe_fuzz::idempotency_key(data));
