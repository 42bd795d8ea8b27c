//! `bottle-sandbox`: the single-threaded helper that builds one local sandbox.
//!
//! Spawned by the launcher with its setup channel at fd 3 (see `bottle_local::helper`);
//! it takes no arguments and reads nothing from its environment. Its exit code is the
//! agent's, or 125 when setup failed (the launcher learns why over the channel).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let code = bottle_local::helper::main_from_inherited_fd();
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
