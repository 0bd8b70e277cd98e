//! `cargo fuzz run frame_decoder`: see `grpcproxy_fuzz::frame_decoder` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grpcproxy_fuzz::frame_decoder(data));
