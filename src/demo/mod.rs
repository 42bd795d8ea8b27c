//! `bottle demo`: a real bottle on the local backend, pointed at a fake API this command
//! starts itself, with a scripted agent that shows what the sidecar allows and refuses.

pub mod fake_api;
