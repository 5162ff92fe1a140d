//! Compatibility tests that start a real `chorus serve` process and drive it with
//! third-party Kafka clients: librdkafka (the `rdkafka` crate, confluent-kafka and kcat),
//! kafka-python, aiokafka and kafkajs, and the `chorus` CLI itself.
//!
//! The clients' scripts live in `clients/` (one per client and feature); the Rust tests in
//! `tests/it/` build the `chorus` binary, start it on 127.0.0.1 ports the kernel picks
//! (read back from its startup line) with its own data directory, run a script or command
//! against it with a timeout, and check its exit status and output. Broker restarts are a
//! SIGTERM and a new process on the same data directory.
//!
//! `test-all.sh` is the README's test command: it installs the clients into
//! `target/compat/` (a Python venv and a node_modules) plus kcat, sets
//! `CHORUS_REQUIRE_COMPAT=1` and `CHORUS_REQUIRE_KCAT=1` so a missing client fails the run
//! instead of being skipped, runs every workspace test and prints `N passed, N failed`.
//! What the clients cannot do yet is listed in `FINDINGS.md`.
