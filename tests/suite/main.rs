//! The end-to-end suite, one test binary: one link instead of one per file, and
//! the tests of every file run side by side (they mostly wait on the service).
//! Each module is one area of promises; `common` is the harness (the service in
//! this process or as the binary, the API client, waiting without fixed sleeps).

mod common;
mod consistency;
mod contract;
mod control_plane;
mod crash;
mod delivery_policy;
mod fairness;
mod hec_delivery;
mod history;
mod hostile_input;
mod isolation;
mod operability;
mod outage;
mod page_api;
mod panic_restart;
mod postgres_failover;
mod postgres_store;
mod reload;
mod security;
mod service;
mod shutdown;
mod storage_fault;
mod supervision;
mod ui;
