//! Coordinator tests: every state transition with injected time (no sleeping), the offset
//! store, replay equivalence, bad input and the assignors' properties.

mod assignors;
mod bad_input;
mod consumer;
mod harness;
mod membership;
mod offsets;
mod replay;
