//! `cargo fuzz run config_parser`: see `grpcproxy_fuzz::config_parser` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grpcproxy_fuzz::config_parser(data));
