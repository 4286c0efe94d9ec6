//! Integration tests: the real `logektor` binary on a loopback port with a temporary data
//! folder, driven over HTTP. One test binary (it links once), one module per concern.

mod access;
mod bad_input;
mod compat;
mod durability;
mod ingest_query;
mod offline;
mod reliability;
mod reports;
mod sdk;
mod support;
mod upkeep;
