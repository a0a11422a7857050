//! libFuzzer target: [`retry_safe_fuzz::webhook_headers`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retry_safe_fuzz::webhook_headers(data));
