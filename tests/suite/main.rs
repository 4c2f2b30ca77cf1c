//! The end-to-end suite, one test binary: one link instead of one per file, and
//! the tests of every file run side by side (they mostly wait on the service).
//! Each module is one area of promises; `common` is the harness (the service in
//! this process or as the binary, the API client, waiting without fixed sleeps).

// libtest starts tests in the order of their names, 8 at a time: the browser tests,
// the longest, are named to start first instead of last (`ui` sorts after every
// other module, and the walk then ended the run alone on an idle machine).
#[path = "ui.rs"]
mod browser_ui;
mod common;
mod consistency;
mod contract;
mod control_plane;
mod crash;
mod delivery_policy;
mod delivery_threads;
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
