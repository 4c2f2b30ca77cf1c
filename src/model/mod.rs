//! The product's nouns, validated at the edge: once built, a value is known good.

pub mod account;
pub mod audit;
pub mod fields;
pub mod ids;
pub mod integration;
pub mod job;

pub use audit::AuditEvent;
pub use fields::FieldError;
pub use ids::AccountId;
pub use integration::{Integration, IntegrationChange, IntegrationPolicy, Source};
pub use job::JobSnapshot;
