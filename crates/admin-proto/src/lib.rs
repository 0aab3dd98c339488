//! What a client sends the origin's admin API, parsed without IO, so that every decoder of
//! untrusted admin input is a pure function that property tests and fuzz targets can drive.
//!
//! - [`body`]: the JSON request bodies (uploads, lessons, metadata, workflow steps, schedule
//!   entries, revocations) and [`body::parse`], the one way they are read (size-limited, unknown
//!   fields refused).
//! - [`query`]: query strings (`a=1&b=%E5%86%9C+x`) and schedule targets (`district:NAME`).
//! - [`enrol`]: enrolment tokens (`cwe_…`), the enrolment request and answer, the pin that lets
//!   an enrolling node trust the answer, and the request's MAC.
//!
//! No IO, no clock, no randomness: tokens are made from bytes the caller provides.

pub mod body;
pub mod enrol;
pub mod query;
