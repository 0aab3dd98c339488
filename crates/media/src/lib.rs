//! GStreamer media pipeline (probe, transcode to renditions, segment live feeds).
//!
//! Empty by design until the ingest issue (#4) lands: the crate exists so the workspace has its
//! final shape and the dependency direction (content ← media ← origin) is fixed. Nothing here
//! pretends to work; see docs/ARCHITECTURE.md, "What is deliberately absent".
