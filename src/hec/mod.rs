//! Talking to Splunk's HTTP Event Collector: URI normalisation, encoding,
//! the client, and the classification of its answers.

pub mod check;
pub mod client;
pub mod destination;
pub mod encode;
pub mod response;
pub mod tls;
pub mod uri;
