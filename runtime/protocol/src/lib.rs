//! The typed values that cross between the launcher (`bottle`) and the sidecar
//! (`bottle-init`): one schema, used by both ends.
//!
//! Hazard: two hand-kept copies of a schema drift, and the copy that accepts a key the
//! other ignores is how a typo becomes a half-configured sidecar. Every value here is a
//! serde type with `deny_unknown_fields`; the "did you mean" suggestions come from the
//! types themselves (serde's list of expected fields), never from a second list; nothing
//! in this crate does I/O, no error quotes a configured value, and no type that can hold
//! a secret prints it through `Debug`.

#![forbid(unsafe_code)]

pub mod control;
pub mod egress;
pub mod exit;
pub mod git_gate;
pub mod init;
mod schema;
pub mod secrets;

pub use schema::ProtocolError;
