//! The library side of the `courseway` binary: what the commands, the demo and the end-to-end
//! tests share.
//!
//! - [`admin_client`]: a client of the origin's admin API (resumable streamed uploads).
//! - [`config`]: node config files (TOML) into the libraries' config structs.
//! - [`enrol`]: enrolment tokens (`token create`) and enrolling a node (`enroll`).
//! - [`keys`]: a deployment's key files and node credentials.
//! - [`topology`]: a whole tree in one process, for the demo and the tests.

pub mod admin_client;
pub mod config;
pub mod enrol;
pub mod keys;
pub mod live;
pub mod topology;
