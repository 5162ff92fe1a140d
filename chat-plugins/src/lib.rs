//! The Chorus chat fabric: HTTP write path, WebSocket gateway, CDC ingest, idempotent forwarder.
//!
//! Written against a narrow log trait defined here (append, read from offset, join a consumer
//! group, commit) that the broker implements in-process. This crate must never depend on
//! `chorus-broker`.
//!
//! Not built yet: see the chat fabric issues. The crate exists so the workspace layout is fixed.
