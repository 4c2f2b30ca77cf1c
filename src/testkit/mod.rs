//! Test support, so integration tests and benchmarks use the same strict Splunk
//! stand-in and the same launcher. Built only with the `test-hooks` feature, which
//! `cargo test` and `cargo bench` turn on (Cargo.toml's dev-dependency on this
//! crate), so the release library does not carry it.

pub mod hec_server;
pub mod service;

pub use hec_server::{AckMode, Behaviour, HecServer, HecServerConfig, LoadBalancer};
/// A throwaway PostgreSQL (primary, optional standby) for the tests and benchmarks
/// of the PostgreSQL store.
pub mod postgres;
