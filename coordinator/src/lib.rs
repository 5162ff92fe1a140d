//! Consumer-group coordinator for Chorus.
//!
//! A deterministic, synchronous state machine with injected time: an operation takes `now` and a
//! command and returns the records to persist, the reply and the timers to arm. The broker owns
//! the I/O. This crate must never depend on `chorus-broker`, on tokio, or on the filesystem.
//!
//! Not built yet: see the coordinator issue. The crate exists so the workspace layout is fixed.
