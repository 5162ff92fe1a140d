//! Broker tests over real sockets: a raw protocol client for exact checks and bad input, and
//! librdkafka (through the `rdkafka` crate) as a real third-party client.

mod common;
mod wire;

mod admin;
mod bad_input;
mod chat_http;
mod chat_plugins;
mod chat_ws;
mod embedded;
mod fetch;
mod group_protocol;
mod groups;
mod idempotence;
mod mutated;
mod protocol;
mod roundtrip;
