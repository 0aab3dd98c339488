//! Benchmarks live in the bench targets of this package; see docs/benchmarks.md.
