//! Link flags of bottle-init, PID 1 of every sidecar, whose idle resident size counts.
//!
//! Hazard: the dynamic loader reads every relocation of a position-independent binary
//! at start, so a classic table (24 bytes per pointer: every vtable, panic location and
//! static string table of the linked-in egress proxy) is resident before `main`, whether
//! or not the egress builtin is configured. Packed relative relocations (DT_RELR, glibc
//! 2.36 and later, GNU ld 2.38 / lld 15) encode the same pointers in a few kilobytes.
//! The binary stays position independent (ASLR is kept).
//!
//! Hazard two: the kernel maps code in 64 kB fault-around windows, so the few hundred
//! functions that start and idle run, when scattered over 6 MB of text, keep most of it
//! resident. `bottle-init.order` (written by `scripts/init-order`) lists them; lld places
//! them first and together. Its names are mangled and change with dependencies or the
//! toolchain; a stale name is skipped silently (the layout only gets worse, never wrong),
//! and `scripts/init-order --check` and `bottle-bench init` say how much of it still
//! matches, from the link map written next to the build script's output.

use std::path::Path;

fn main() {
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") != "linux" || target("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bin=bottle-init=-Wl,-z,pack-relative-relocs");
    // The order file and the map are lld options (rust-lld is rustc's default linker
    // for x86_64-unknown-linux-gnu); a build that opts out of lld does without them.
    let flags = target("CARGO_ENCODED_RUSTFLAGS");
    let lld = target("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && !flags.contains("linker-features=-lld")
        && !flags.contains("link-self-contained=-linker");
    if target("PROFILE") != "release" || !lld {
        return;
    }
    let order = Path::new(&target("CARGO_MANIFEST_DIR")).join("bottle-init.order");
    println!("cargo:rerun-if-changed=build.rs");
    if order.exists() {
        println!("cargo:rerun-if-changed={}", order.display());
        println!(
            "cargo:rustc-link-arg-bin=bottle-init=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=bottle-init=-Wl,--no-warn-symbol-ordering");
    } else {
        // A missing file would rerun this script on every build: watch for its creation.
        println!("cargo:rerun-if-changed={}", order.parent().unwrap_or(&order).display());
    }
    let map = Path::new(&target("OUT_DIR")).join("bottle-init.map");
    println!("cargo:rustc-link-arg-bin=bottle-init=-Wl,-Map={}", map.display());
}
