//! Integration tests of the storage engine on real files in temporary directories.

mod common;

mod compaction;
mod crash;
mod durability;
mod faults;
mod file_ranges;
mod log_basics;
mod manager;
mod model;
mod nonblocking;
mod recovery;
mod retention;
