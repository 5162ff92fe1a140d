//! Third-party clients against a Chorus broker.

mod basics;
mod chat;
mod cli;
mod clients;
mod email;
mod gateway;
mod groups;
mod groups_rdkafka;
mod kcat;
