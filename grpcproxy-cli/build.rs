//! Links the `grpcproxy` binary's hot functions side by side (release builds with lld).
//!
//! `hot-symbols.txt` lists the functions a proxied call runs, most executed first
//! (written by `scripts/symbol-order.sh` from callgrind profiles). Given to lld as its
//! `--symbol-ordering-file`, they are placed together at the start of `.text`: a call then
//! touches about half as many pages of code, which is what it pays for at low load, when
//! every call starts with cold caches (BENCHMARKS.md, "#24, eleventh slice").
//!
//! Only where lld links by default: x86_64 Linux with Rust 1.90 or later, and no linker
//! named in `RUSTFLAGS`. `GRPCPROXY_SYMBOL_ORDER=0` turns it off (for a linker set in a
//! cargo config, which a build script cannot see). Names missing from the binary are
//! skipped without a warning.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
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
    let file = format!("{dir}/hot-symbols.txt");
    if std::path::Path::new(&file).exists() {
        println!("cargo:rustc-link-arg-bin=grpcproxy=-Wl,--symbol-ordering-file={file}");
        println!("cargo:rustc-link-arg-bin=grpcproxy=-Wl,--no-warn-symbol-ordering");
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
