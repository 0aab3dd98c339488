//! QUIC endpoints, TLS identities, connection pool and rate limits.
//!
//! Empty by design until the delivery issue (#3) lands; the wire format it will carry is
//! complete in `courseway-proto`. See docs/ARCHITECTURE.md, "What is deliberately absent".
