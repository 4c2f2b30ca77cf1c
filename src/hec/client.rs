//! One integration's connection to its Splunk: its own awc client (and so its
//! own connection pool), TLS settings and timeouts. Every post is classified
//! by `response::classify`, the one place that decides what an answer means.

use super::destination;
use super::response::{classify, classify_transport, Failure, Outcome, Transport};
use super::tls::{tls_config, Ipv6LiteralConnector};
use crate::model::{HecUri, Integration};
use actix_web::web::Bytes;
use awc::http::header;
use std::time::Duration;

/// Connect, request and acknowledgement limits, from the operator's config.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    pub connect: Duration,
    pub request: Duration,
    /// Longest wait between two ack polls.
    pub ack_poll: Duration,
    /// When an ack that has not come makes the batch be re-sent.
    pub ack_timeout: Duration,
    /// Whether internal addresses may be reached (the SSRF guard is off).
    pub allow_internal: bool,
}

/// Largest HEC answer we read; real ones are a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct HecClient {
    client: awc::Client,
    uri: HecUri,
    authorization: String,
    gzip: bool,
    /// `X-Splunk-Request-Channel`, when indexer acknowledgement is on.
    channel: Option<String>,
}

/// What polling for acknowledgements found.
#[derive(Debug, Clone, PartialEq)]
pub enum AckAnswer {
    /// Per ack id: indexed or not yet.
    Status(Vec<(u64, bool)>),
    /// The poll itself failed (ack disabled on the token, Splunk unreachable...).
    Failed(Outcome),
}

/// What `GET /services/collector/health` said.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Answered; `code` is HEC's (17 healthy, 18–20 unhealthy).
    Answered {
        status: u16,
        code: Option<i64>,
        text: String,
    },
    /// No HTTP answer.
    Unreachable(Outcome),
}

impl HecClient {
    /// A client for one integration; the error says what in its settings cannot be used.
    pub fn new(it: &Integration, timeouts: ClientSettings) -> Result<HecClient, Failure> {
        let unusable = |text: String, advice: &str| Failure {
            http_status: None,
            code: None,
            text,
            advice: advice.to_owned(),
        };
        let uri = it.hec_uri.clone();
        // IPv4 literals skip the resolver, so the guard checks them here.
        if let Ok(ip) = destination::bare_host(uri.host()).parse() {
            destination::check(&[std::net::SocketAddr::new(ip, 0)], timeouts.allow_internal).map_err(|e| {
                unusable(
                    e.to_string(),
                    "The HEC URI leads to an internal network address, which this service does not send to: use your Splunk's public address.",
                )
            })?;
        }
        let resolver = actix_tls::connect::Resolver::custom(destination::GuardedResolver {
            allow_internal: timeouts.allow_internal,
        });
        let connector = awc::Connector::new()
            .connector(Ipv6LiteralConnector {
                tcp: actix_tls::connect::Connector::new(resolver).service(),
            })
            .rustls_0_23(tls_config(it).map_err(|e| {
                unusable(
                    e.to_string(),
                    "The integration's TLS settings cannot be used: check ca_pem.",
                )
            })?)
            .timeout(timeouts.connect)
            .handshake_timeout(timeouts.connect)
            // A few connections per integration: Splunk's maxSockets is shared by everyone.
            .limit(4);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(timeouts.request)
            .disable_redirects()
            .finish();
        Ok(HecClient {
            client,
            uri,
            authorization: format!("Splunk {}", it.hec_token),
            gzip: it.gzip,
            channel: it.indexer_ack.then(|| uuid::Uuid::new_v4().to_string()),
        })
    }

    pub fn acknowledges(&self) -> bool {
        self.channel.is_some()
    }

    fn request(&self, url: String) -> awc::ClientRequest {
        let mut req = self
            .client
            .post(url)
            .insert_header((header::AUTHORIZATION, self.authorization.as_str()))
            .insert_header((header::CONTENT_TYPE, "application/json"));
        if let Some(ch) = &self.channel {
            req = req.insert_header(("X-Splunk-Request-Channel", ch.as_str()));
        }
        req
    }

    /// Posts one batch of concatenated event envelopes and classifies the answer.
    pub async fn post_events(&self, body: Bytes) -> Outcome {
        let mut req = self.request(self.uri.event_url());
        let body = if self.gzip {
            req = req.insert_header((header::CONTENT_ENCODING, "gzip"));
            gzip(&body)
        } else {
            body
        };
        let outcome = match answer(req.send_body(body)).await {
            Ok((status, body)) => classify(status, &body),
            Err(unanswered) => unanswered,
        };
        match outcome {
            // Splunk Cloud answers 404 for a moment during maintenance; if the health
            // endpoint still answers, this is that moment, not a wrong path.
            Outcome::Config(f) if f.http_status == Some(404) && f.code.is_none() => match self.health().await {
                Health::Answered { status: 200, .. } => Outcome::Transient {
                    failure: Failure {
                        advice: "Splunk answered 404 while its health endpoint is up (Splunk Cloud maintenance); siemsync retries.".into(),
                        ..f
                    },
                    accepted: None,
                },
                _ => Outcome::Config(f),
            },
            other => other,
        }
    }

    /// Asks which of `ids` are indexed (indexer acknowledgement).
    pub async fn poll_acks(&self, ids: &[u64]) -> AckAnswer {
        let body = serde_json::json!({ "acks": ids }).to_string();
        match answer(self.request(self.uri.ack_url()).send_body(body)).await {
            Ok((status, answer)) => {
                if status == 200 {
                    #[derive(serde::Deserialize)]
                    struct Acks {
                        acks: std::collections::HashMap<String, bool>,
                    }
                    if let Ok(a) = serde_json::from_slice::<Acks>(&answer) {
                        return AckAnswer::Status(
                            a.acks
                                .iter()
                                .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
                                .collect(),
                        );
                    }
                }
                AckAnswer::Failed(classify(status.max(400), &answer))
            }
            Err(unanswered) => AckAnswer::Failed(unanswered),
        }
    }

    /// HEC's health endpoint: is the collector up (it says nothing about the token).
    pub async fn health(&self) -> Health {
        match answer(self.client.get(self.uri.health_url()).send()).await {
            Ok((status, answer)) => {
                #[derive(serde::Deserialize, Default)]
                struct A {
                    code: Option<i64>,
                    text: Option<String>,
                }
                let a: A = serde_json::from_slice(&answer).unwrap_or_default();
                Health::Answered {
                    status,
                    code: a.code,
                    text: a.text.unwrap_or_else(|| format!("HTTP {status}")),
                }
            }
            Err(unanswered) => Health::Unreachable(unanswered),
        }
    }
}

/// Waits for an answer and reads its (short) body; no answer at all is classified here.
async fn answer(sent: awc::SendClientRequest) -> Result<(u16, Bytes), Outcome> {
    match sent.await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .limit(MAX_ANSWER_BYTES)
                .await
                .unwrap_or_default();
            Ok((status, body))
        }
        Err(e) => Err(transport_outcome(&e)),
    }
}

fn gzip(body: &[u8]) -> Bytes {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default().into()
}

/// Sorts an awc error into DNS, TLS, timeout or connection trouble.
fn transport_outcome(e: &awc::error::SendRequestError) -> Outcome {
    use awc::error::{ConnectError, SendRequestError};
    let text = describe(e);
    let kind = match e {
        SendRequestError::Connect(ConnectError::Resolver(inner))
            if inner.downcast_ref::<destination::Refused>().is_some() =>
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

/// awc's error with its causes, which is where "certificate" or "refused" appear.
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
