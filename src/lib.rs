//! The `bottle` launcher as a library: what `bottle run` and its subcommands are made of.
//! The binary (`src/main.rs`) parses arguments and maps outcomes to exit codes; nothing
//! here exits the process.

#![forbid(unsafe_code)]

pub mod demo;
pub mod launch;
pub mod manage;
pub mod state;
