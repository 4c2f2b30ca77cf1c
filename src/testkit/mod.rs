//! Test support shipped with the library, so integration tests and benchmarks
//! use the same strict Splunk stand-in.

pub mod hec_server;

pub use hec_server::{AckMode, Behaviour, HecServer, HecServerConfig, LoadBalancer};
/// A throwaway PostgreSQL (primary, optional standby) for the tests and benchmarks
/// of the PostgreSQL store; only in builds with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub mod postgres;
