//! The end-to-end suite, one test binary: one link instead of one per file, and
//! the tests of every file run side by side (they mostly wait on the service).
//! Each module is one area of promises; `common` is the harness (the service in
//! this process or as the binary, the API client, waiting without fixed sleeps).

// libtest starts tests in the order of their names, 8 at a time: the browser tests,
// the longest, are named to start first instead of last (`ui` sorts after every
// other module, and the walk then ended the run alone on an idle machine).
#[path = "ui.rs"]
mod browser_ui;
mod catch_up;
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
mod postgres_control;
mod postgres_failover;
mod postgres_migrate;
mod postgres_nodes;
mod postgres_service;
mod postgres_store;
mod postgres_tls;
mod reload;
mod security;
mod service;
mod shutdown;
mod storage_fault;
mod supervision;

/// The service-level promises again, with the service on PostgreSQL (one database
/// per test on a cluster the binary shares): the same source files, whose
/// `super::common` is here the plain one with `Siemsync` started on PostgreSQL.
/// A test whose promise is the embedded store's own (its files, its test hooks,
/// its backlog quota) says so and returns at once on PostgreSQL; one with only a
/// part that is (fairness.rs's three accounts) leaves out that part there.
// `path = "."`: the modules inside are this directory's files — loaded twice on
// purpose, which is what `duplicate_mod` warns of. Not here: isolation.rs (200
// integrations syncing twice a second is a load test of the actors; on
// PostgreSQL, a few round trips per idle sync, it alone added about half a
// minute to the suite; it passes there), storage_fault.rs (sled's disk:
// PostgreSQL's outage is postgres_service.rs), ui.rs's browser walk and
// contract.rs's schema checks (they exercise the page and the HTTP layer, the
// same on both), and the postgres_* files (PostgreSQL only).
#[path = "."]
#[allow(clippy::duplicate_mod)]
mod on_postgres {
    mod common {
        pub use crate::common::*;
        // An explicit name wins over the glob's.
        pub use crate::common::PgSiemsync as Siemsync;
        pub const BACKEND: Backend = Backend::Postgres;
    }
    #[path = "catch_up.rs"]
    mod catch_up;
    #[path = "consistency.rs"]
    mod consistency;
    #[path = "control_plane.rs"]
    mod control_plane;
    #[path = "crash.rs"]
    mod crash;
    #[path = "delivery_policy.rs"]
    mod delivery_policy;
    #[path = "delivery_threads.rs"]
    mod delivery_threads;
    #[path = "fairness.rs"]
    mod fairness;
    #[path = "hec_delivery.rs"]
    mod hec_delivery;
    #[path = "history.rs"]
    mod history;
    #[path = "hostile_input.rs"]
    mod hostile_input;
    #[path = "isolation.rs"]
    mod isolation;
    #[path = "operability.rs"]
    mod operability;
    #[path = "outage.rs"]
    mod outage;
    #[path = "page_api.rs"]
    mod page_api;
    #[path = "panic_restart.rs"]
    mod panic_restart;
    #[path = "reload.rs"]
    mod reload;
    #[path = "security.rs"]
    mod security;
    #[path = "service.rs"]
    mod service;
    #[path = "shutdown.rs"]
    mod shutdown;
    #[path = "supervision.rs"]
    mod supervision;
}
