//! libFuzzer target: [`retry_safe_fuzz::tracestate`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retry_safe_fuzz::tracestate(data));
