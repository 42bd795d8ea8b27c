//! Link flags of bottle-init, PID 1 of every sidecar, whose idle resident size counts.
//!
//! Hazard: the dynamic loader reads every relocation of a position-independent binary
//! at start, so a classic table (24 bytes per pointer: every vtable, panic location and
//! static string table of the linked-in egress proxy) is resident before `main`, whether
//! or not the egress builtin is configured. Packed relative relocations (DT_RELR, glibc
//! 2.36 and later, GNU ld 2.38 / lld 15) encode the same pointers in a few kilobytes.
//! The binary stays position independent (ASLR is kept).

fn main() {
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bin=bottle-init=-Wl,-z,pack-relative-relocs");
    }
}
