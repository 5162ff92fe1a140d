//! Shared helpers for the Chorus benchmarks in `benches/benches/`.
