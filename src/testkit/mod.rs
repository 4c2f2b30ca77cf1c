//! Test support shipped with the library, so integration tests and benchmarks
//! use the same strict Splunk stand-in.

pub mod hec_server;

pub use hec_server::{AckMode, Behaviour, HecServer, HecServerConfig};
