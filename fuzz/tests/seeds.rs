//! The seed corpus through every fuzz target's checks, with plain `cargo test` (stable Rust,
//! no libFuzzer): the checks cannot rot, and what the fuzzers once found stays fixed.

fn each_seed(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        seeds += 1;
    }
    assert!(seeds >= 3, "{}: only {seeds} seeds", dir.display());
}

#[test]
fn frame_decoder_seeds() {
    each_seed("frame_decoder", grpcproxy_fuzz::frame_decoder);
}

#[test]
fn config_parser_seeds() {
    each_seed("config_parser", grpcproxy_fuzz::config_parser);
}

#[test]
fn header_filter_seeds() {
    each_seed("header_filter", grpcproxy_fuzz::header_filter);
}
