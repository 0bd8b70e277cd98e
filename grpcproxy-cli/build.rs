//! Links the `grpcproxy` binary's hot functions side by side (release builds).
//!
//! `hot-functions.ld` is a linker script (written by `scripts/symbol-order.sh` from
//! callgrind profiles) that collects the functions a proxied call runs, most executed
//! first, at the start of `.text`: a call then touches fewer pages of code, and costs
//! 5–10 % less CPU at one stream and at low load (BENCHMARKS.md, "#24, eleventh slice").
//! Its patterns leave the symbols' hashes out (but for instances of generic functions that
//! have many), so they match whatever the features; a function no pattern matches is
//! linked where it would be anyway.
//!
//! Only where it was measured: x86_64 Linux with Rust 1.90 or later (which links with its
//! own lld), and no linker named in `RUSTFLAGS`. `GRPCPROXY_SYMBOL_ORDER=0` turns it off.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-functions.ld");
    println!("cargo:rerun-if-env-changed=GRPCPROXY_SYMBOL_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").unwrap_or_default();
    let off = env::var("GRPCPROXY_SYMBOL_ORDER").is_ok_and(|v| v == "0");
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let other_linker = flags.contains("linker") || flags.contains("link-self-contained");
    if !release || off || other_linker || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    if !lld_by_default() {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = format!("{dir}/hot-functions.ld");
    // `-Wl,` splits its argument at commas.
    if std::path::Path::new(&script).exists() && !script.contains(',') {
        println!("cargo:rustc-link-arg-bin=grpcproxy=-Wl,-T,{script}");
    }
}

/// Whether rustc is 1.90 or later, the first to link with its own lld on x86_64 Linux.
fn lld_by_default() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release.split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (1, 90)
}
