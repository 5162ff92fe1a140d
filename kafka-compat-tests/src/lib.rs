//! Compatibility tests that start a Chorus broker and drive it with third-party Kafka
//! clients (kafka-python and kafkajs so far; librdkafka and kcat are exercised by the
//! broker's own tests).
//!
//! The clients' scripts live in `clients/` (one per client and feature); the Rust tests in
//! `tests/it/` start a broker on 127.0.0.1:0, run a script against it with a timeout and
//! check its exit status. `test-all.sh` installs the clients into `target/compat/`
//! (a Python venv and a node_modules) and sets `CHORUS_REQUIRE_COMPAT=1`, so a missing
//! client fails the run there instead of being skipped.
