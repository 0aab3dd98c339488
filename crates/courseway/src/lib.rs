//! The library side of the `courseway` binary: what the demo and the end-to-end tests share.

pub mod topology;
