//! `bottle`, the launcher's library: what its commands share.
//!
//! Hazard: this is the host side, where the user's secrets live. Nothing here prints,
//! exits the process or puts a secret in an error; `main` decides what to show.
//! - [`manifest`]: bottle files (Markdown with YAML frontmatter), their search path in the
//!   user's home and their `extends` merge.

#![forbid(unsafe_code)]

pub mod manifest;
