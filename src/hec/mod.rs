//! Talking to Splunk's HTTP Event Collector: URI normalisation, encoding,
//! the client, the classification of its answers, and the delivery policy that
//! decides what each answer means for the events posted.

pub mod check;
pub mod client;
pub mod cookies;
pub mod destination;
pub mod encode;
pub mod policy;
pub mod response;
pub mod tls;
pub mod uri;
