//! The station node (planner, fetcher, LAN HLS and web page, report outbox).
//!
//! Empty by design until the delivery (#3) and station (#5) issues land. See
//! docs/ARCHITECTURE.md, "What is deliberately absent".
