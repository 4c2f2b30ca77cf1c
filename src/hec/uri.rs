//! The HEC URI lives in the model ([`crate::model::hec_uri`]); this path remains
//! for code written against it before the move.

pub use crate::model::hec_uri::{HecUri, HecUriError, DEFAULT_HEC_PORT};
