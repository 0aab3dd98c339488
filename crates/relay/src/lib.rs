//! The relay node (tiered cache, coalescing, prefetch, failover, live fan-out).
//!
//! Empty by design until the delivery issue (#3) lands; its cache is `courseway-store`. See
//! docs/ARCHITECTURE.md, "What is deliberately absent".
