//! Benchmarks live in the bench targets of this package (criterion), in `src/bin/goodput.rs`
//! (goodput over an emulated link between network namespaces) and in `src/bin/fleet.rs` (a city
//! of stations beside an nginx cache tier, whose core is [`fleet`]); see docs/benchmarks.md.

pub mod fleet;
