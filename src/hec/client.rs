//! One integration's connection to its Splunk: its own awc client (and so its
//! own connection pool), timeouts, channel and load-balancer cookies, and the TLS
//! config it shares with the integrations of the same trust setting (`tls`). Every answer is classified by `response`, the one place that decides
//! what an answer means; the client only gathers what it needs to read.

use super::cookies::CookieJar;
use super::destination;
pub use super::response::AckAnswer;
use super::response::{
    after_health_probe, classify_acks, classify_post, classify_send_error, classify_unreadable,
    needs_health_probe, unsendable, Failure, HecAnswer, Outcome,
};
use super::tls::{tls_config, Ipv6LiteralConnector};
use crate::model::{HecUri, Integration};
use actix_web::web::Bytes;
use awc::http::header;
use rustls::ClientConfig;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

/// Connect, request and acknowledgement limits, from the operator's config.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    /// Longest wait to connect and finish the TLS handshake.
    pub connect: Duration,
    /// Longest wait for a whole answer: a Splunk that hangs must not stall the integration.
    pub request: Duration,
    /// Longest wait between two ack polls.
    pub ack_poll: Duration,
    /// When an ack that has not come makes the batch be re-sent.
    pub ack_timeout: Duration,
    /// How long a pooled connection stays reusable after its last use: an
    /// integration whose next sync is further away closes it at once
    /// ([`HecClient::close_idle`]).
    pub keep_alive: Duration,
    /// Whether internal addresses may be reached (the SSRF guard is off).
    pub allow_internal: bool,
}

/// Largest HEC answer we read; real ones are a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The one way an integration talks to its Splunk: posts, ack polls and health
/// checks, each answer classified; one per integration, owned by its actor.
pub struct HecClient {
    /// The connection pool: built on first use, dropped by [`HecClient::close_idle`]
    /// when the integration goes idle, so no socket waits out the interval.
    pool: RefCell<Option<awc::Client>>,
    tls: Arc<ClientConfig>,
    timeouts: ClientSettings,
    uri: HecUri,
    authorization: String,
    gzip: bool,
    /// `X-Splunk-Request-Channel`, when indexer acknowledgement is on.
    channel: Option<String>,
    /// A load balancer's cookies, sent back so the channel stays on one indexer.
    cookies: CookieJar,
    /// Whether Splunk has answered a post or poll yet (so its cookies are known).
    answered: std::sync::atomic::AtomicBool,
    /// Test builds only: requests wait a day instead of the configured timeout.
    #[cfg(feature = "test-hooks")]
    no_timeout: std::cell::Cell<bool>,
}

/// What `GET /services/collector/health` said.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Answered; `code` is HEC's (17 healthy, 18–20 unhealthy).
    Answered {
        /// The HTTP status.
        status: u16,
        /// HEC's code; `None` when the body was not HEC's JSON (a proxy answered).
        code: Option<i64>,
        /// HEC's text; else the status, and why the body could not be read.
        text: String,
    },
    /// No HTTP answer.
    Unreachable(Outcome),
}

/// A connection pool to one Splunk, through the SSRF guard's resolver.
fn connect(tls: Arc<ClientConfig>, timeouts: ClientSettings) -> awc::Client {
    let resolver = actix_tls::connect::Resolver::custom(destination::GuardedResolver {
        allow_internal: timeouts.allow_internal,
    });
    let connector = awc::Connector::new()
        .connector(Ipv6LiteralConnector {
            tcp: actix_tls::connect::Connector::new(resolver).service(),
        })
        .rustls_0_23(tls)
        .timeout(timeouts.connect)
        .handshake_timeout(timeouts.connect)
        .conn_keep_alive(timeouts.keep_alive)
        // A few connections per integration: Splunk's maxSockets is shared by everyone.
        .limit(4);
    awc::Client::builder()
        .connector(connector)
        .timeout(timeouts.request)
        .disable_redirects()
        .finish()
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
        let tls = tls_config(it).map_err(|e| {
            unusable(
                e.to_string(),
                "The integration's TLS settings cannot be used: check ca_pem.",
            )
        })?;
        Ok(HecClient {
            pool: RefCell::new(None),
            tls,
            timeouts,
            uri,
            authorization: format!("Splunk {}", it.hec_token),
            gzip: it.gzip,
            channel: it.indexer_ack.then(|| uuid::Uuid::new_v4().to_string()),
            cookies: CookieJar::default(),
            answered: Default::default(),
            #[cfg(feature = "test-hooks")]
            no_timeout: Default::default(),
        })
    }

    /// The connection pool, built when there is none (first use, or after
    /// [`HecClient::close_idle`]). Requests in flight keep the pool they started on.
    fn client(&self) -> awc::Client {
        self.pool
            .borrow_mut()
            .get_or_insert_with(|| connect(self.tls.clone(), self.timeouts))
            .clone()
    }

    /// Closes the connections kept for reuse. Called when the next use is further
    /// away than a connection stays reusable: awc would not reuse it then anyway
    /// (its keep-alive is 15 s), and Splunk closes its end long before — each such
    /// socket would sit in CLOSE-WAIT for the whole interval, one per integration,
    /// until the process runs out of file descriptors.
    pub fn close_idle(&self) {
        self.pool.borrow_mut().take();
    }

    /// Whether the integration asked for indexer acknowledgement: then posts carry
    /// a channel and are committed only once Splunk confirms them indexed.
    pub fn acknowledges(&self) -> bool {
        self.channel.is_some()
    }

    /// Whether Splunk (or a load balancer in front) has answered this client yet:
    /// before that, a second request in flight would not carry its cookies.
    pub fn has_answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a load balancer set a cookie that this client sends back.
    pub fn has_cookies(&self) -> bool {
        !self.cookies.is_empty()
    }

    fn request(&self, url: String) -> awc::ClientRequest {
        let mut req = self
            .client()
            .post(url)
            .insert_header((header::AUTHORIZATION, self.authorization.as_str()))
            .insert_header((header::CONTENT_TYPE, "application/json"));
        if let Some(ch) = &self.channel {
            req = req.insert_header(("X-Splunk-Request-Channel", ch.as_str()));
        }
        if let Some(cookies) = self.cookies.header() {
            req = req.insert_header((header::COOKIE, cookies));
        }
        #[cfg(feature = "test-hooks")]
        if self.no_timeout.get() {
            req = req.timeout(Duration::from_secs(86_400));
        }
        req
    }

    /// Test builds only: from now on requests outlive the configured timeout, as a
    /// hung connection the timeout misses would.
    #[cfg(feature = "test-hooks")]
    pub fn ignore_timeout(&self) {
        self.no_timeout.set(true);
    }

    /// Waits for an answer, keeps the cookies it sets, and reads its (short) body.
    async fn answer(&self, sent: awc::SendClientRequest) -> Result<Answered, Outcome> {
        // awc's request timeout ends at the headers: a Splunk (or proxy) that then
        // stalls the body is given the same time again, and fails like a timeout.
        let mut resp = sent
            .await
            .map_err(|e| classify_send_error(&e))?
            .timeout(self.timeouts.request);
        self.answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cookies.take(resp.headers());
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match resp.body().limit(MAX_ANSWER_BYTES).await {
            Ok(body) => Ok(Answered {
                status,
                retry_after,
                body,
            }),
            Err(e) => Err(classify_unreadable(
                status,
                matches!(e, awc::error::PayloadError::Overflow),
                &e.to_string(),
                MAX_ANSWER_BYTES,
            )),
        }
    }

    /// Posts one batch of concatenated event envelopes and classifies the answer.
    pub async fn post_events(&self, body: Bytes) -> Outcome {
        let mut req = self.request(self.uri.event_url());
        let body = if self.gzip {
            req = req.insert_header((header::CONTENT_ENCODING, "gzip"));
            match gzip(&body) {
                Ok(zipped) => zipped,
                Err(e) => return unsendable(&e.to_string()),
            }
        } else {
            body
        };
        let outcome = match self.answer(req.send_body(body)).await {
            Ok(a) => classify_post(
                &HecAnswer {
                    status: a.status,
                    body: &a.body,
                    retry_after: a.retry_after.as_deref(),
                },
                self.acknowledges(),
                std::time::SystemTime::now(),
            ),
            Err(unanswered) => unanswered,
        };
        if needs_health_probe(&outcome) {
            let healthy = matches!(self.health().await, Health::Answered { status: 200, .. });
            return after_health_probe(outcome, healthy);
        }
        outcome
    }

    /// Asks which of `ids` are indexed (indexer acknowledgement).
    pub async fn poll_acks(&self, ids: &[u64]) -> AckAnswer {
        let body = serde_json::json!({ "acks": ids }).to_string();
        match self
            .answer(self.request(self.uri.ack_url()).send_body(body))
            .await
        {
            Ok(a) => classify_acks(a.status, &a.body),
            Err(unanswered) => AckAnswer::Failed(unanswered),
        }
    }

    /// HEC's health endpoint: is the collector up (it says nothing about the token).
    pub async fn health(&self) -> Health {
        let mut resp = match self.client().get(self.uri.health_url()).send().await {
            Ok(resp) => resp.timeout(self.timeouts.request),
            Err(e) => return Health::Unreachable(classify_send_error(&e)),
        };
        let status = resp.status().as_u16();
        #[derive(serde::Deserialize, Default)]
        struct A {
            code: Option<i64>,
            text: Option<String>,
        }
        // The status decides; a body that is not HEC's JSON (a proxy's HTML page) says
        // no more than the status, and one that cannot be read says so.
        let (a, unreadable): (A, _) = match resp.body().limit(MAX_ANSWER_BYTES).await {
            Ok(body) => (serde_json::from_slice(&body).unwrap_or_default(), None),
            Err(e) => (A::default(), Some(e)),
        };
        let text = match (a.text, unreadable) {
            (Some(text), _) => text,
            (None, Some(e)) => format!("HTTP {status} (its body could not be read: {e})"),
            (None, None) => format!("HTTP {status}"),
        };
        Health::Answered {
            status,
            code: a.code,
            text,
        }
    }
}

/// What the client read of an answer.
struct Answered {
    status: u16,
    retry_after: Option<String>,
    body: Bytes,
}

thread_local! {
    /// One deflate state per delivery thread, reset for each post: building a new one
    /// zeroes a few hundred KiB, which cost more than compressing a post of a few
    /// events (8 % of the first tick's CPU at 20,000 integrations, in `perf`).
    static DEFLATE: RefCell<Option<flate2::Compress>> = const { RefCell::new(None) };
}

/// `body` gzipped (RFC 1952: header, raw deflate, CRC-32 and length), at the fast level.
fn gzip(body: &[u8]) -> std::io::Result<Bytes> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    // No name, no time; XFL 4 (fastest level), OS 255 (unknown), as flate2's GzEncoder writes.
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    DEFLATE.with(|state| -> std::io::Result<()> {
        let mut state = state.borrow_mut();
        let deflate = state.get_or_insert_with(|| Compress::new(Compression::fast(), false));
        deflate.reset();
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let (read, written) = (deflate.total_in(), deflate.total_out());
            let status = deflate
                .compress_vec(&body[read as usize..], &mut out, FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == Status::StreamEnd {
                return Ok(());
            }
            if (read, written) == (deflate.total_in(), deflate.total_out())
                && out.len() < out.capacity()
            {
                // Room to write, yet nothing read or written: never loop on it.
                return Err(std::io::Error::other("deflate made no progress"));
            }
        }
    })?;
    // crc32fast picks the CPU's carry-less multiply (PCLMULQDQ) at run time: about 12×
    // faster than flate2's `Crc` on zlib-rs, whose portable loop was 10 % of a
    // catch-up's delivery-thread samples in `perf` (BENCHMARKS.md).
    let mut crc = crc32fast::Hasher::new();
    crc.update(body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::gzip;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut plain)
            .expect("a valid gzip stream");
        plain
    }

    #[test]
    fn gzipped_posts_one_after_another_each_decode_to_their_own_body() {
        // Pseudo-random bytes compress badly: the output outgrows its first buffer.
        let noise: Vec<u8> = (0..300_000u64)
            .map(|i| (i.wrapping_mul(6364136223846793005) >> 33) as u8)
            .collect();
        let events = br#"{"event":{"id":"e-1"}}"#.repeat(5_000);
        for body in [&b""[..], b"{}", &events, &noise, b"{\"event\":1}"] {
            assert_eq!(gunzip(&gzip(body).expect("gzip")), body);
        }
    }
}
