//! `cargo fuzz run header_filter`: see `grpcproxy_fuzz::header_filter` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grpcproxy_fuzz::header_filter(data));
