//! The product's nouns, validated at the edge: once built, a value is known good.
//! This module imports nothing else of siemsync's, so every other layer can use it.

pub mod account;
pub mod audit;
pub mod audit_parts;
pub mod ca;
pub mod failure;
pub mod fields;
pub mod hec_uri;
pub mod ids;
pub mod integration;
pub mod job;

pub use audit::AuditEvent;
pub use failure::{Failure, FailureKind};
pub use fields::FieldError;
pub use hec_uri::HecUri;
pub use ids::AccountId;
pub use integration::{Integration, IntegrationChange, IntegrationPolicy, Source};
pub use job::JobSnapshot;
