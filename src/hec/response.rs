//! Every answer HEC can give, classified in one place: a pure function from
//! (HTTP status, body) to what delivery must do, with the advice a customer
//! needs in their own words.

use serde::{Deserialize, Serialize};

/// Why a post did not deliver, as the status API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// HTTP status, when Splunk answered at all.
    pub http_status: Option<u16>,
    /// HEC's `code`, when the body carried one.
    pub code: Option<i64>,
    /// Splunk's own `text`, or the transport error.
    pub text: String,
    /// What to do about it, in the customer's words.
    pub advice: String,
}

/// What delivery does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// HEC took the batch; `ack_id` when indexer acknowledgement is on.
    Delivered { ack_id: Option<u64> },
    /// Splunk is briefly unable: retry with back-off, nothing is wrong with our data or
    /// config. `accepted`: Splunk stopped part-way and took the events before this one.
    Transient {
        failure: Failure,
        accepted: Option<usize>,
    },
    /// The customer must change something in Splunk or in the integration.
    Config(Failure),
    /// Splunk refused event `invalid_event` of the batch; those before it were accepted.
    Data {
        failure: Failure,
        invalid_event: Option<usize>,
    },
    /// The body is larger than the server accepts.
    TooLarge(Failure),
}

impl Outcome {
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Config(f) | Outcome::TooLarge(f) => Some(f),
            Outcome::Transient { failure, .. } => Some(failure),
            Outcome::Data { failure, .. } => Some(failure),
        }
    }
}

#[derive(Deserialize, Default)]
struct Answer {
    text: Option<String>,
    code: Option<i64>,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

/// Advice for a HEC code, where the code says more than the HTTP status.
fn advice_for_code(code: i64) -> Option<&'static str> {
    Some(match code {
        1 => "The HEC token is disabled in Splunk: enable it under Settings > Data inputs > HTTP Event Collector.",
        2 | 3 => "Splunk did not accept the token as sent: enter the HEC token value again in this integration.",
        4 => "Splunk does not know this HEC token: copy the token value from Splunk (Settings > Data inputs > HTTP Event Collector) into this integration.",
        5 => "Splunk received an empty post; this is a siemsync fault and is retried.",
        6 => "Splunk could not read an event; it is set aside and the rest is delivered.",
        7 => "The index is missing in Splunk or not allowed for this token: add it to the token's allowed indexes, or change the index of this integration.",
        8 => "Splunk had an internal error; siemsync retries.",
        9 => "Splunk's HEC queue is full; siemsync retries with back-off. If this persists, raise queueSize (50MB recommended).",
        10 => "Indexer acknowledgement is on for this token: turn it off for the token in Splunk, or turn on indexer acknowledgement in this integration.",
        11 => "Splunk refused the data channel id; this is a siemsync fault and is retried.",
        12 | 13 => "Splunk refused an event without content; it is set aside and the rest is delivered.",
        14 => "Indexer acknowledgement is off on this token: turn it on in Splunk or turn it off here.",
        15 => "Splunk refused an event's indexed fields; it is set aside and the rest is delivered.",
        16 => "Splunk does not allow the token in the query string; siemsync sends it in the header, so check the HEC URI has no query string.",
        _ => return None,
    })
}

/// Classifies one answer from the collector endpoint.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    let text = answer.text.clone().unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(body);
        let raw = raw.trim();
        if raw.is_empty() {
            format!("HTTP {status}")
        } else {
            raw.chars().take(200).collect()
        }
    });
    let failure = |advice: String| Failure {
        http_status: Some(status),
        code: answer.code,
        text: text.clone(),
        advice,
    };
    let advice = |fallback: &str| {
        answer
            .code
            .and_then(advice_for_code)
            .unwrap_or(fallback)
            .to_owned()
    };
    match (status, answer.code) {
        // Codes 24/25 (capacity warnings) also come with 200: delivered.
        (200..=299, Some(_)) => Outcome::Delivered { ack_id: answer.ack_id },
        // A 2xx that is not a HEC answer (a login page, a proxy's placeholder) is no
        // proof of delivery: counting it would lose the events.
        (200..=299, None) if answer.text.as_deref() == Some("Success") => {
            Outcome::Delivered { ack_id: answer.ack_id }
        }
        (200..=299, None) => Outcome::Config(failure(
            "The HEC URI answered, but not like Splunk's HTTP Event Collector: check the host, port (usually 8088) and path.".into(),
        )),
        (_, Some(1..=4)) => Outcome::Config(failure(advice(""))),
        (_, Some(7 | 10 | 14 | 16)) => Outcome::Config(failure(advice(""))),
        (_, Some(6 | 12 | 13 | 15)) => Outcome::Data {
            failure: failure(advice("")),
            invalid_event: answer.invalid_event,
        },
        (413, _) => Outcome::TooLarge(failure(
            "The post was larger than Splunk accepts (max_content_length); siemsync sends smaller posts.".into(),
        )),
        (401 | 403, _) => Outcome::Config(failure(
            "Splunk refused the token: check the HEC token value and that it is enabled.".into(),
        )),
        (404, _) => Outcome::Config(failure(
            "Nothing answers at the HEC path on this server: check the HEC URI (usually https://<your-splunk>:8088, or https://http-inputs-<stack>.splunkcloud.com for Splunk Cloud).".into(),
        )),
        (408 | 429 | 500..=599, _) => Outcome::Transient {
            failure: failure(advice(
                "Splunk is temporarily unable to take events; siemsync retries with back-off.",
            )),
            accepted: answer.invalid_event,
        },
        _ => Outcome::Config(failure(advice(
            "Splunk refused the post; check the integration's HEC URI and token.",
        ))),
    }
}

/// Whether a failure clears by itself or needs the customer: the status says
/// "retrying" (Splunk busy or unreachable, nothing to do) or "needs action" (token,
/// URI, index, acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Retried with back-off; nothing for the customer to do.
    Transient,
    /// The customer must change something in Splunk or in the integration.
    Configuration,
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The host name does not resolve.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// An https:// URI, but the server answered the TLS handshake in plain HTTP:
    /// the scheme is wrong, not the certificate.
    NotTls,
    /// Connecting or answering took longer than the configured timeout.
    Timeout,
    /// Refused, reset, or closed before answering.
    Connection,
}

/// Classifies a request that got no HTTP answer. DNS and TLS failures need the
/// customer (a wrong host, a certificate); the rest is retried.
pub fn classify_transport(kind: Transport, error: &str) -> Outcome {
    let failure = |advice: &str| Failure {
        http_status: None,
        code: None,
        text: error.to_owned(),
        advice: advice.to_owned(),
    };
    match kind {
        Transport::Dns => Outcome::Config(failure(
            "The host name of the HEC URI does not resolve: check the HEC URI.",
        )),
        Transport::Tls => Outcome::Config(failure(
            "The TLS connection to Splunk failed: the HEC endpoint's certificate is not trusted or not valid for its host name. Use a certificate from a public CA, or give your private CA's certificate in the integration's CA certificate (ca_pem, under Advanced on the page).",
        )),
        Transport::NotTls => Outcome::Config(failure(
            "The HEC URI starts with https://, but the server at that address speaks plain HTTP: change the HEC URI to start with http://, or turn on SSL for HEC in Splunk (Settings > Data inputs > HTTP Event Collector > Global Settings).",
        )),
        Transport::Timeout => Outcome::Transient {
            failure: failure("Splunk did not answer in time; siemsync retries. Check that the HEC endpoint is reachable and not overloaded."),
            accepted: None,
        },
        Transport::Connection => Outcome::Transient {
            failure: failure("siemsync could not connect to the HEC URI: check the host and port, and that Splunk's HTTP Event Collector is enabled and reachable. siemsync retries."),
            accepted: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i64, text: &str) -> Vec<u8> {
        format!(r#"{{"text":"{text}","code":{code}}}"#).into_bytes()
    }

    #[test]
    fn success_with_or_without_ack_is_delivered() {
        assert_eq!(
            classify(200, &body(0, "Success")),
            Outcome::Delivered { ack_id: None }
        );
        assert_eq!(
            classify(200, br#"{"text":"Success","code":0,"ackId":7}"#),
            Outcome::Delivered { ack_id: Some(7) }
        );
        assert!(matches!(
            classify(200, &body(24, "Queue capacity nearing")),
            Outcome::Delivered { .. }
        ));
    }

    #[test]
    fn token_problems_are_configuration_errors_with_advice() {
        for (status, code) in [(403, 1), (401, 2), (401, 3), (403, 4)] {
            let o = classify(status, &body(code, "x"));
            let Outcome::Config(f) = o else {
                panic!("{code}: {o:?}")
            };
            assert_eq!(f.code, Some(code));
            assert!(f.advice.contains("token"), "{}", f.advice);
        }
        let Outcome::Config(f) = classify(400, &body(14, "ACK is disabled")) else {
            panic!()
        };
        assert!(f.advice.contains("acknowledgement is off"));
        let Outcome::Config(f) = classify(404, b"") else {
            panic!()
        };
        assert!(f.advice.contains("HEC URI"));
        assert_eq!(f.text, "HTTP 404");
    }

    #[test]
    fn busy_and_server_errors_are_transient() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    classify(status, b"oops"),
                    Outcome::Transient { accepted: None, .. }
                ),
                "{status}"
            );
        }
        let Outcome::Transient { failure, .. } = classify(503, &body(9, "Server is busy")) else {
            panic!()
        };
        assert!(failure.advice.contains("queueSize"));
        let partial = classify(
            503,
            br#"{"text":"Server is busy","code":9,"invalid-event-number":4}"#,
        );
        assert!(matches!(
            partial,
            Outcome::Transient {
                accepted: Some(4),
                ..
            }
        ));
    }

    #[test]
    fn every_listed_code_has_its_class() {
        for code in [6, 12, 13, 15] {
            assert!(
                matches!(classify(400, &body(code, "x")), Outcome::Data { .. }),
                "{code}"
            );
        }
        for code in [1, 2, 3, 4, 7, 10, 14, 16] {
            assert!(
                matches!(classify(400, &body(code, "x")), Outcome::Config(_)),
                "{code}"
            );
        }
        // Codes nobody listed: by HTTP status, with Splunk's text shown.
        let Outcome::Config(f) = classify(400, &body(99, "Something new")) else {
            panic!()
        };
        assert_eq!(f.text, "Something new");
        assert!(matches!(
            classify(503, &body(99, "x")),
            Outcome::Transient { .. }
        ));
        assert!(matches!(
            classify(201, &body(99, "x")),
            Outcome::Delivered { .. }
        ));
        let Outcome::Config(f) = classify(200, b"<html>Welcome to nginx</html>") else {
            panic!()
        };
        assert!(f.advice.contains("not like Splunk"));
        let Outcome::Config(f) = classify(400, &body(11, "Invalid data channel")) else {
            panic!()
        };
        assert!(f.advice.contains("siemsync fault"));
    }

    #[test]
    fn data_errors_point_at_the_bad_event() {
        let o = classify(
            400,
            br#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#,
        );
        assert!(matches!(
            o,
            Outcome::Data {
                invalid_event: Some(3),
                ..
            }
        ));
        assert!(matches!(classify(413, b""), Outcome::TooLarge(_)));
    }

    #[test]
    fn transport_failures_say_what_to_check() {
        let refused =
            classify_transport(Transport::Connection, "Connection refused (os error 111)");
        assert!(
            matches!(&refused, Outcome::Transient { failure, .. } if failure.advice.contains("could not connect"))
        );
        let tls = classify_transport(Transport::Tls, "invalid peer certificate: UnknownIssuer");
        assert!(matches!(&tls, Outcome::Config(f) if f.advice.contains("ca_pem")));
        let plain = classify_transport(Transport::NotTls, "corrupt message");
        assert!(
            matches!(&plain, Outcome::Config(f) if f.advice.contains("http://") && !f.advice.contains("ca_pem"))
        );
        assert!(matches!(
            classify_transport(Transport::Dns, "no such host"),
            Outcome::Config(_)
        ));
        assert!(matches!(
            classify_transport(Transport::Timeout, "t"),
            Outcome::Transient { .. }
        ));
    }
}
