//! Benchmarks live in the bench targets of this package (criterion) and in `src/bin/goodput.rs`
//! (goodput over an emulated link between network namespaces); see docs/benchmarks.md.
