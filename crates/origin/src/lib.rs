//! The origin node (ingest jobs, review, catalog signing, admin API, mirroring).
//!
//! Empty by design until the delivery (#3) and ingest (#4) issues land. See
//! docs/ARCHITECTURE.md, "What is deliberately absent".
