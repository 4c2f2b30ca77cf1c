//! Every answer HEC can give, classified in one place: a pure function from
//! (HTTP status, body) to what delivery must do, with the advice a customer
//! needs in their own words.

use serde::Deserialize;
use std::time::{Duration, SystemTime};

pub use crate::model::{Failure, FailureKind};

/// What delivery does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// HEC took the batch; `ack_id` when indexer acknowledgement is on. `slow_down`
    /// when Splunk said a queue approaches its capacity (codes 24, 25): delivered,
    /// but the next post should wait a little.
    Delivered {
        /// The id to poll the ack endpoint with; `None` without acknowledgement.
        ack_id: Option<u64>,
        /// Splunk's warning that a queue is filling; shown, and the next post waits.
        slow_down: Option<Failure>,
    },
    /// HEC took the batch but gave no ack id although the integration asked for
    /// acknowledgement: delivered without confirmation; the failure says what to fix.
    Unconfirmed(Failure),
    /// Splunk is briefly unable: retry with back-off, nothing is wrong with our data or
    /// config. `accepted`: Splunk stopped part-way and took the events before this one.
    /// `retry_after`: how long Splunk asked to wait (429 and 503 `Retry-After`).
    Transient {
        /// What Splunk or the network said, with the advice.
        failure: Failure,
        /// How many events at the start of the post Splunk took (not sent again).
        accepted: Option<usize>,
        /// The wait Splunk asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The customer must change something in Splunk or in the integration.
    Config(Failure),
    /// Splunk refused event `invalid_event` of the batch; those before it were accepted.
    /// `maybe_size`: the refusal (code 6) is also how Splunk Cloud refuses a body over
    /// its size cap, and how any Splunk refuses an event over its per-event limit, so
    /// the event is to blame only once it is refused alone.
    Data {
        /// Splunk's refusal, with the advice.
        failure: Failure,
        /// The refused event's index in the post; `None` when Splunk did not say.
        invalid_event: Option<usize>,
        /// The refusal may be about size, not this event.
        maybe_size: bool,
    },
    /// The body is larger than the server accepts.
    TooLarge(Failure),
}

impl Outcome {
    /// What went wrong, for the status and the log; `None` for a clean delivery.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Config(f) | Outcome::TooLarge(f) | Outcome::Unconfirmed(f) => Some(f),
            Outcome::Transient { failure, .. } => Some(failure),
            Outcome::Data { failure, .. } => Some(failure),
        }
    }

    /// A transient outcome without partial acceptance or requested wait.
    fn transient(failure: Failure) -> Outcome {
        Outcome::Transient {
            failure,
            accepted: None,
            retry_after: None,
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
        10 | 28 => "Indexer acknowledgement is on for this token: turn it off for the token in Splunk, or turn on indexer acknowledgement in this integration.",
        11 => "Splunk refused the data channel id; this is a siemsync fault and is retried.",
        12 | 13 => "Splunk refused an event without content; it is set aside and the rest is delivered.",
        14 => "Indexer acknowledgement is off on this token: turn it on in Splunk or turn it off here.",
        15 => "Splunk refused an event's indexed fields; it is set aside and the rest is delivered.",
        16 => "Splunk does not allow the token in the query string; siemsync sends it in the header, so check the HEC URI has no query string.",
        18..=20 => "Splunk's HTTP Event Collector is unhealthy (its queues are full or its acknowledgement service is down); siemsync retries with back-off. If this persists, raise queueSize (50MB recommended).",
        21 | 22 => "Splunk refused the token on its health endpoint: check the HEC token value and that it is enabled.",
        23 => "Splunk is shutting down; siemsync retries once it is back.",
        24 => "Splunk's HEC queue is approaching its capacity: the events were delivered, and siemsync slows down. If this persists, raise queueSize (50MB recommended).",
        25 => "Splunk's acknowledgement queue is approaching its capacity: the events were delivered, and siemsync slows down.",
        26 | 27 => "Splunk's HEC queue is at capacity; siemsync waits as long as Splunk asks (Retry-After) and retries. If this persists, raise queueSize (50MB recommended).",
        _ => return None,
    })
}

/// Classifies one answer from the collector endpoint, without headers, for a client
/// that does not ask for acknowledgement.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    classify_post(
        &HecAnswer {
            status,
            body,
            retry_after: None,
        },
        false,
        SystemTime::now(),
    )
}

/// One HTTP answer to a post: what the classifier reads of it.
#[derive(Debug, Clone, Copy)]
pub struct HecAnswer<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The body as read (HEC's JSON, or whatever a proxy sent).
    pub body: &'a [u8],
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<&'a str>,
}

/// Classifies one answer to a post. `acknowledges`: the client sent a channel and
/// expects an ack id; `now` reads a `Retry-After` given as a date.
pub fn classify_post(a: &HecAnswer<'_>, acknowledges: bool, now: SystemTime) -> Outcome {
    let status = a.status;
    let answer: Answer = serde_json::from_slice(a.body).unwrap_or_default();
    let text = answer.text.clone().unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(a.body);
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
    let delivered = || {
        match (answer.ack_id, acknowledges) {
        (None, true) => Outcome::Unconfirmed(Failure {
            http_status: Some(status),
            code: Some(14),
            text: "Splunk returned no ackId".into(),
            advice: "Indexer acknowledgement is off on this token: turn it on in Splunk or turn it off here. Events are delivered without confirmation meanwhile.".into(),
        }),
        (ack_id, _) => Outcome::Delivered {
            ack_id,
            slow_down: matches!(answer.code, Some(24 | 25)).then(|| failure(advice(""))),
        },
    }
    };
    match (status, answer.code) {
        // Codes 24/25 (capacity warnings) also come with 200: delivered, slow down.
        (200..=299, Some(_)) => delivered(),
        // A 2xx that is not a HEC answer (a login page, a proxy's placeholder) is no
        // proof of delivery: counting it would lose the events.
        (200..=299, None) if answer.text.as_deref() == Some("Success") => delivered(),
        (200..=299, None) => Outcome::Config(failure(
            "The HEC URI answered, but not like Splunk's HTTP Event Collector: check the host, port (usually 8088) and path.".into(),
        )),
        (_, Some(1..=4 | 21 | 22)) => Outcome::Config(failure(advice(""))),
        (_, Some(7 | 10 | 14 | 16 | 28)) => Outcome::Config(failure(advice(""))),
        (_, Some(code @ (6 | 12 | 13 | 15))) => Outcome::Data {
            failure: failure(advice("")),
            invalid_event: answer.invalid_event,
            maybe_size: code == 6,
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
            // Splunk documents Retry-After for 429 and 503 only.
            retry_after: matches!(status, 429 | 503)
                .then(|| a.retry_after.and_then(|v| retry_after(v, now)))
                .flatten(),
        },
        _ => Outcome::Config(failure(advice(
            "Splunk refused the post; check the integration's HEC URI and token.",
        ))),
    }
}

/// Reads a `Retry-After` header: seconds, or an HTTP date (a date already past
/// means now). Anything else — a negative number, a fraction, garbage — is no
/// request to wait. A number too large to read is as long as can be: the delivery
/// policy bounds every wait by its `max_retry_after` anyway.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether an answer needs the health endpoint's opinion before it is believed: a
/// bare 404 on the collector path is a wrong path, or Splunk Cloud in maintenance.
pub fn needs_health_probe(o: &Outcome) -> bool {
    matches!(o, Outcome::Config(f) if f.http_status == Some(404) && f.code.is_none())
}

/// A bare 404 seen again in the light of the health endpoint: Splunk Cloud answers
/// 404 for a moment during maintenance, and if the health endpoint still answers
/// 200, this is that moment, not a wrong path.
pub fn after_health_probe(o: Outcome, healthy: bool) -> Outcome {
    match o {
        Outcome::Config(f) if healthy && needs_health_probe(&Outcome::Config(f.clone())) => {
            Outcome::transient(Failure {
                advice: "Splunk answered 404 while its health endpoint is up (Splunk Cloud maintenance); siemsync retries.".into(),
                ..f
            })
        }
        other => other,
    }
}

/// An answer whose body could not be read. A body over `limit` bytes is no HEC
/// answer (they are a few dozen bytes): it is judged by its status alone. A body cut
/// short says nothing about what Splunk took: retried (at-least-once).
pub fn classify_unreadable(status: u16, too_large: bool, error: &str, limit: usize) -> Outcome {
    if too_large {
        let mut o = classify(status, b"");
        if let Some(f) = match &mut o {
            Outcome::Config(f) | Outcome::TooLarge(f) => Some(f),
            Outcome::Transient { failure, .. } | Outcome::Data { failure, .. } => Some(failure),
            Outcome::Unconfirmed(f) => Some(f),
            Outcome::Delivered { .. } => None,
        } {
            f.text = format!("HTTP {status} with an answer over {limit} bytes");
        }
        return o;
    }
    Outcome::transient(Failure {
        http_status: Some(status),
        code: None,
        text: format!("HTTP {status}, but its answer could not be read: {error}"),
        advice:
            "The connection to Splunk broke while it answered; siemsync sends the events again."
                .into(),
    })
}

/// A post that could not even be built (its body could not be compressed).
pub fn unsendable(error: &str) -> Outcome {
    Outcome::transient(Failure {
        http_status: None,
        code: None,
        text: format!("the post could not be compressed: {error}"),
        advice: "This is a siemsync fault and is retried; tell the operator if it persists (turning gzip off for the integration avoids it).".into(),
    })
}

/// Splunk gave the same ack id to two posts of one channel that both wait for it:
/// one confirmation could not tell which post is indexed, so the later one is sent again.
pub fn ack_id_reused(id: u64) -> Outcome {
    Outcome::transient(Failure {
        http_status: Some(200),
        code: None,
        text: format!("Splunk gave ack id {id} to two posts waiting for acknowledgement"),
        advice: "Splunk's acknowledgement ids for this channel repeat: behind a load balancer, make sure it keeps each channel on one indexer (sticky sessions). siemsync sends the events again.".into(),
    })
}

/// No acknowledgement within the timeout. Once it keeps happening, the likeliest
/// cause is a load balancer that does not keep the channel on one indexer (the
/// other indexers answer `false` for ids they never issued), so the advice says so.
pub fn ack_timeout(timeout: Duration, in_a_row: u32, cookies_seen: bool) -> Failure {
    let advice = if in_a_row >= 2 {
        format!(
            "Splunk has not confirmed {in_a_row} batches in a row within {} s. Behind a load balancer, indexer acknowledgement needs sticky sessions: make the balancer keep each channel on one indexer (e.g. a cookie such as AWSELB; siemsync sends back the cookies it is given, and {}). siemsync sends the events again.",
            timeout.as_secs(),
            if cookies_seen { "it was given some" } else { "it was given none" }
        )
    } else {
        "Splunk took the events but did not confirm they were indexed in time; siemsync sends them again. Behind a load balancer, make sure it keeps each channel on one indexer.".into()
    };
    Failure {
        http_status: None,
        code: None,
        text: format!("no indexer acknowledgement within {} s", timeout.as_secs()),
        advice,
    }
}

/// A lone event refused as too large (413). When Splunk took a post at least as
/// large before, the event is not the cause: the limit was lowered, or a proxy in
/// between limits bodies — a configuration error, not a bad event.
pub fn too_large_alone(f: Failure, bytes: usize, largest_accepted: usize) -> Outcome {
    if bytes <= largest_accepted {
        return Outcome::Config(Failure {
            advice: format!(
                "Splunk refused a {bytes}-byte post although it accepted {largest_accepted} bytes before: its max_content_length was lowered, or a proxy in between limits request bodies."
            ),
            ..f
        });
    }
    Outcome::TooLarge(Failure {
        advice: format!(
            "This event alone ({bytes} bytes) is larger than Splunk accepts (max_content_length); it is kept in the dead letters."
        ),
        ..f
    })
}

/// Splunk refuses event after event on its own, with nothing accepted in between:
/// the cause is not the events.
pub fn refuses_every_event(f: Failure) -> Failure {
    Failure {
        advice: format!(
            "Splunk refuses every event it is sent, one after another ({}); this is not about the events: check that the token's source type is _json and that no proxy alters the posts. The events are kept and sent once Splunk takes them.",
            f.text
        ),
        ..f
    }
}

/// An event larger than the largest post siemsync sends (stored before
/// `max_event_bytes` existed): it is never posted.
pub fn larger_than_any_post(bytes: usize, limit: usize) -> Failure {
    Failure {
        http_status: None,
        code: None,
        text: format!("event of {bytes} bytes, larger than max_batch_bytes ({limit})"),
        advice: "This event is larger than the largest post siemsync sends (max_batch_bytes), so it was never sent; it is kept in the dead letters.".into(),
    }
}

/// What polling for acknowledgements found.
#[derive(Debug, Clone, PartialEq)]
pub enum AckAnswer {
    /// Per ack id: indexed or not yet.
    Status(Vec<(u64, bool)>),
    /// The poll itself failed (ack disabled on the token, Splunk unreachable...).
    Failed(Outcome),
}

/// Classifies an answer of the ack endpoint: `{"acks": {"0": true, …}}`, or a refusal.
/// Keys that are not ack ids are ignored.
pub fn classify_acks(status: u16, body: &[u8]) -> AckAnswer {
    #[derive(Deserialize)]
    struct Acks {
        acks: std::collections::HashMap<String, bool>,
    }
    if status == 200 {
        if let Ok(a) = serde_json::from_slice::<Acks>(body) {
            return AckAnswer::Status(
                a.acks
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
                    .collect(),
            );
        }
    }
    // Not a status answer, even with 200: never taken as a confirmation.
    AckAnswer::Failed(classify(status.max(400), body))
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
        Transport::Timeout => Outcome::transient(failure("Splunk did not answer in time; siemsync retries. Check that the HEC endpoint is reachable and not overloaded.")),
        Transport::Connection => Outcome::transient(failure("siemsync could not connect to the HEC URI: check the host and port, and that Splunk's HTTP Event Collector is enabled and reachable. siemsync retries.")),
    }
}

/// Sorts an awc error into DNS, TLS, timeout or connection trouble. The
/// certificate and plain-HTTP cases are told apart here, from rustls's error where
/// awc keeps it, else from the words of the error chain.
pub fn classify_send_error(e: &awc::error::SendRequestError) -> Outcome {
    use awc::error::{ConnectError, SendRequestError};
    let text = describe(e);
    let kind = match e {
        SendRequestError::Connect(ConnectError::Resolver(inner))
            if inner
                .downcast_ref::<super::destination::Refused>()
                .is_some() =>
        {
            return Outcome::Config(Failure {
                http_status: None,
                code: None,
                text: inner.to_string(),
                advice: "The HEC URI leads to an internal network address, which this service does not send to: use your Splunk's public address.".into(),
            });
        }
        SendRequestError::Connect(
            ConnectError::Resolver(_) | ConnectError::NoRecords | ConnectError::Unresolved,
        ) => Transport::Dns,
        SendRequestError::Connect(ConnectError::Timeout) | SendRequestError::Timeout => {
            Transport::Timeout
        }
        SendRequestError::Connect(ConnectError::Io(io)) => {
            match io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                // The first bytes back were no TLS record: a plain-HTTP server's
                // answer ("HTTP/1.1 400 …") to our handshake.
                Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                    Transport::NotTls
                }
                Some(_) => Transport::Tls,
                None if text.contains("certificate") || text.contains("handshake") => {
                    Transport::Tls
                }
                None => Transport::Connection,
            }
        }
        _ if text.contains("certificate") || text.contains("handshake") => Transport::Tls,
        _ => Transport::Connection,
    };
    classify_transport(kind, &text)
}

/// An error with its causes, which is where "certificate" or "refused" appear.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i64, text: &str) -> Vec<u8> {
        format!(r#"{{"text":"{text}","code":{code}}}"#).into_bytes()
    }

    fn post(status: u16, body: &[u8], retry_after: Option<&str>) -> Outcome {
        classify_post(
            &HecAnswer {
                status,
                body,
                retry_after,
            },
            false,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
    }

    #[test]
    fn success_with_or_without_ack_is_delivered() {
        assert_eq!(
            classify(200, &body(0, "Success")),
            Outcome::Delivered {
                ack_id: None,
                slow_down: None
            }
        );
        assert_eq!(
            classify(200, br#"{"text":"Success","code":0,"ackId":7}"#),
            Outcome::Delivered {
                ack_id: Some(7),
                slow_down: None
            }
        );
    }

    #[test]
    fn a_success_without_ack_id_while_acknowledgement_is_expected_is_unconfirmed() {
        let a = HecAnswer {
            status: 200,
            body: &body(0, "Success"),
            retry_after: None,
        };
        let Outcome::Unconfirmed(f) = classify_post(&a, true, SystemTime::now()) else {
            panic!()
        };
        assert!(f.advice.contains("acknowledgement is off on this token"));
        let a = HecAnswer {
            body: br#"{"text":"Success","code":0,"ackId":0}"#,
            ..a
        };
        assert!(matches!(
            classify_post(&a, true, SystemTime::now()),
            Outcome::Delivered {
                ack_id: Some(0),
                ..
            }
        ));
    }

    #[test]
    fn capacity_warnings_24_and_25_are_delivered_with_a_request_to_slow_down() {
        for code in [24, 25] {
            let Outcome::Delivered {
                ack_id: Some(3),
                slow_down: Some(f),
            } = classify(
                200,
                format!(r#"{{"text":"approaching capacity","code":{code},"ackId":3}}"#).as_bytes(),
            )
            else {
                panic!("{code}")
            };
            assert_eq!(f.code, Some(code));
            assert!(f.advice.contains("slows down"), "{}", f.advice);
        }
    }

    #[test]
    fn token_problems_are_configuration_errors_with_advice() {
        for (status, code) in [(403, 1), (401, 2), (401, 3), (403, 4), (400, 21), (400, 22)] {
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
    fn a_missing_channel_is_code_10_on_enterprise_and_28_on_cloud_with_the_same_advice() {
        let Outcome::Config(ten) = classify(400, &body(10, "Data channel is missing")) else {
            panic!()
        };
        let Outcome::Config(cloud) = classify(400, &body(28, "Data channel is missing…")) else {
            panic!()
        };
        assert_eq!(ten.advice, cloud.advice);
        assert!(cloud.advice.contains("turn on indexer acknowledgement"));
    }

    #[test]
    fn busy_shutting_down_and_server_errors_are_transient() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    classify(status, b"oops"),
                    Outcome::Transient { accepted: None, .. }
                ),
                "{status}"
            );
        }
        for (status, code, says) in [
            (503, 9, "queueSize"),
            (503, 23, "shutting down"),
            (429, 26, "Retry-After"),
            (429, 27, "Retry-After"),
            (503, 18, "unhealthy"),
        ] {
            let Outcome::Transient { failure, .. } = classify(status, &body(code, "x")) else {
                panic!("{code}")
            };
            assert!(failure.advice.contains(says), "{code}: {}", failure.advice);
        }
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
    fn retry_after_is_read_on_429_and_503_only() {
        let wait = |status, v| match post(status, &body(26, "x"), Some(v)) {
            Outcome::Transient { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(429, "5"), Some(Duration::from_secs(5)));
        assert_eq!(wait(503, " 120 "), Some(Duration::from_secs(120)));
        assert_eq!(wait(500, "5"), None, "not documented for other statuses");
        assert_eq!(wait(502, "5"), None);
    }

    #[test]
    fn a_retry_after_that_is_negative_garbage_a_date_or_huge_is_read_safely() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        // Wed, 21 Oct 2015 07:28:00 GMT is now + 0.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date past is now"
        );
        for bad in ["-5", "1.5", "", "soon", "5s", "0x10"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX)),
            "too large to read is as long as can be (the policy bounds it)"
        );
    }

    #[test]
    fn every_listed_code_has_its_class() {
        for code in [6, 12, 13, 15] {
            assert!(
                matches!(classify(400, &body(code, "x")), Outcome::Data { maybe_size, .. } if maybe_size == (code == 6)),
                "{code}"
            );
        }
        for code in [1, 2, 3, 4, 7, 10, 14, 16, 21, 22, 28] {
            assert!(
                matches!(classify(400, &body(code, "x")), Outcome::Config(_)),
                "{code}"
            );
        }
        for (status, code) in [(503, 8), (503, 9), (503, 23), (429, 26), (429, 27)] {
            assert!(
                matches!(
                    classify(status, &body(code, "x")),
                    Outcome::Transient { .. }
                ),
                "{code}"
            );
        }
        for code in [0, 17, 24, 25] {
            assert!(
                matches!(classify(200, &body(code, "x")), Outcome::Delivered { .. }),
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
                maybe_size: true,
                ..
            }
        ));
        assert!(matches!(classify(413, b""), Outcome::TooLarge(_)));
    }

    #[test]
    fn a_bare_404_is_maintenance_only_while_the_health_endpoint_is_up() {
        let wrong_path = classify(404, b"Not Found");
        assert!(needs_health_probe(&wrong_path));
        assert!(matches!(
            after_health_probe(wrong_path.clone(), false),
            Outcome::Config(_)
        ));
        let Outcome::Transient { failure, .. } = after_health_probe(wrong_path, true) else {
            panic!()
        };
        assert!(failure.advice.contains("maintenance"));
        // Splunk's own 404 answer carries a code: a wrong path, whatever health says.
        let splunk = classify(404, &body(404, "The requested URL was not found"));
        assert!(!needs_health_probe(&splunk));
    }

    #[test]
    fn an_unreadable_answer_is_never_an_empty_one() {
        assert!(matches!(
            classify_unreadable(200, false, "connection reset", 65536),
            Outcome::Transient { .. }
        ));
        let Outcome::Config(f) = classify_unreadable(200, true, "overflow", 65536) else {
            panic!()
        };
        assert!(f.text.contains("over 65536 bytes"), "{}", f.text);
        assert!(matches!(
            classify_unreadable(503, true, "overflow", 65536),
            Outcome::Transient { .. }
        ));
    }

    #[test]
    fn a_lone_413_is_a_bad_event_unless_splunk_took_as_much_before() {
        let f = Failure::default();
        assert!(matches!(
            too_large_alone(f.clone(), 5000, 4096),
            Outcome::TooLarge(f) if f.advice.contains("5000 bytes")
        ));
        assert!(matches!(
            too_large_alone(f, 3000, 4096),
            Outcome::Config(f) if f.advice.contains("proxy")
        ));
    }

    #[test]
    fn repeated_ack_timeouts_point_at_load_balancer_stickiness() {
        let t = Duration::from_secs(300);
        assert!(!ack_timeout(t, 1, false).advice.contains("in a row"));
        let f = ack_timeout(t, 3, false);
        assert!(f.advice.contains("3 batches in a row"), "{}", f.advice);
        assert!(f.advice.contains("sticky") && f.advice.contains("given none"));
        assert!(ack_timeout(t, 2, true).advice.contains("given some"));
    }

    #[test]
    fn ack_answers_count_only_as_status_when_they_read_as_one() {
        let AckAnswer::Status(mut v) =
            classify_acks(200, br#"{"acks":{"0":true,"7":false,"x":true}}"#)
        else {
            panic!()
        };
        v.sort();
        assert_eq!(v, vec![(0, true), (7, false)]);
        assert!(matches!(
            classify_acks(200, b"<html>ok</html>"),
            AckAnswer::Failed(Outcome::Config(_))
        ));
        assert!(matches!(
            classify_acks(400, &body(14, "ACK is disabled")),
            AckAnswer::Failed(Outcome::Config(f)) if f.code == Some(14)
        ));
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
