//! The actors (README.md, "How delivery behaves"): Supervisor, one IntegrationActor
//! per integration, a ReplayActor per replay, and the two collectors that are the
//! only readers of event data; `delivery` is the posting loop live delivery and
//! replays share.

pub mod audit_collector;
pub mod batch;
pub mod delivery;
pub mod gate;
pub mod heartbeat;
pub mod history;
pub mod integration;
pub mod job_collector;
pub mod messages;
pub mod observation;
pub mod replay;
pub mod replays;
pub mod shutdown;
pub mod supervisor;
pub mod threads;

pub use audit_collector::AuditCollector;
pub use integration::{DeliverySettings, IntegrationActor};
pub use job_collector::JobCollector;
pub use supervisor::{Supervision, Supervisor};
