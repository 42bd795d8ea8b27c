//! `bottle`, the launcher's library: what `bottle run` and its subcommands are made of.
//!
//! Hazard: this is the host side, where the user's secrets live. Nothing here prints,
//! exits the process or puts a secret in an error; `main` parses arguments, decides what
//! to show and maps outcomes to exit codes.
//! - [`manifest`]: bottle files (Markdown with YAML frontmatter), their search path in the
//!   user's home and their `extends` merge.
//! - [`launch`]: launch steps as actors under one supervisor, torn down in reverse.
//! - [`state`]: the per-bottle state folders and the allocation lock.
//! - [`manage`]: `ps`, `stop`, `cleanup` over the state folders.
//! - [`run`]: `bottle run` on the local backend.
//! - [`doctor`]: which backends work here.
//! - [`demo`]: the real-bottle demo and its fake API.

#![forbid(unsafe_code)]

pub mod demo;
pub mod doctor;
pub mod exit;
pub mod launch;
pub mod manage;
pub mod manifest;
pub mod run;
pub mod state;
