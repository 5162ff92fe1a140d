//! Third-party clients against a Chorus broker.

mod clients;
mod groups;
