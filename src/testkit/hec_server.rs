//! A strict HEC test server: it checks the authorization header and the body the
//! way Splunk does (docs/hec.md), records what it accepted, and can be told to
//! fail with a given status and code, to hang, or to be slow. It also plays the
//! Splunks that differ: Splunk Cloud (an oversized body refused as bad event 0,
//! code 28 for a missing channel), a per-event size limit, a sticky-session load
//! balancer in front of several indexers, and indexers that acknowledge slowly.
//!
//! It rejects what Splunk rejects — and one thing Splunk only mis-files: a `time`
//! in milliseconds, which would land events in the far future — so it cannot make
//! a wrong client look right.

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the server answers event posts.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Check and accept like Splunk.
    Normal,
    /// Answer every post with this status and HEC code (nothing is accepted).
    Fail {
        /// The HTTP status.
        status: u16,
        /// HEC's `code`; `None` answers a bare status without HEC's JSON (as a proxy would).
        code: Option<i64>,
        /// HEC's `text`, or the whole body without a code.
        text: String,
    },
    /// Accept the connection and never answer.
    Hang,
    /// Answer normally after a delay.
    Slow(Duration),
    /// Answer every post with `307 Temporary Redirect` to this URL.
    Redirect(String),
    /// Take the first `n` events of each post, then answer 503 "Server is busy"
    /// with `invalid-event-number` n, as Splunk does when its queue fills mid-post.
    BusyAfter(usize),
    /// Answer the next `times` posts with this status, HEC code and `Retry-After`
    /// header (nothing is accepted), then behave normally.
    FailTimes {
        /// The HTTP status.
        status: u16,
        /// HEC's `code`; `None` answers a bare status without HEC's JSON.
        code: Option<i64>,
        /// HEC's `text`, or the whole body without a code.
        text: String,
        /// The `Retry-After` header's value, sent as given (so a bad one can be tested).
        retry_after: Option<String>,
        /// How many posts get this answer.
        times: u32,
    },
    /// Accept like Splunk, but answer with this HEC code (24 or 25: a queue is
    /// approaching its capacity) instead of 0, as Splunk 10 does under load.
    NearCapacity(i64),
    /// Answer the next post as the first, then behave as the second: a change
    /// of behaviour at an exact post, whatever the retry's timing.
    Once(Box<Behaviour>, Box<Behaviour>),
}

impl Behaviour {
    /// Refuse every post as a Splunk under load does: 503, code 9, "Server is
    /// busy" (what is sent is retried, and a replay stays running).
    pub fn busy() -> Behaviour {
        Behaviour::Fail {
            status: 503,
            code: Some(9),
            text: "Server is busy".into(),
        }
    }
}

/// How the server answers indexer-acknowledgement polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AckMode {
    /// Indexed by the first poll.
    Immediate,
    /// Indexed once this many polls asked about it.
    AfterPolls(u32),
    /// Never confirmed (a lost ack): the client must re-send.
    Never,
    /// Indexed once this long has passed since the post was answered (slow indexers).
    AfterDelay(Duration),
}

/// A load balancer in front of `indexers` Splunk indexers. Each indexer keeps its
/// own ack ids per channel (counting from 0, as real ones do), so an ack poll must
/// reach the indexer that took the post. A request with the balancer's `AWSELB`
/// cookie goes to that indexer; one without goes to the next indexer in turn, and
/// the answer sets the cookie (as a classic AWS ELB with stickiness does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadBalancer {
    /// How many indexers stand behind it (0 counts as 1).
    pub indexers: usize,
}

/// The Splunk-side settings of the test server.
#[derive(Debug, Clone)]
pub struct HecServerConfig {
    /// Enabled tokens.
    pub tokens: Vec<String>,
    /// Tokens that exist but are disabled (code 1).
    pub disabled_tokens: Vec<String>,
    /// Indexes the tokens may write to; `None` allows any.
    pub indexes: Option<Vec<String>>,
    /// `max_content_length`: larger bodies get 413.
    pub max_content_length: usize,
    /// Tokens with indexer acknowledgement (`useACK`) on: they need a channel.
    pub ack_tokens: Vec<String>,
    /// When the indexers report an acknowledged post as indexed.
    pub ack_mode: AckMode,
    /// An event whose JSON contains one of these strings is refused as invalid data
    /// (code 6), as Splunk refuses an event it cannot index.
    pub reject_events_containing: Vec<String>,
    /// Whether a refusal names the bad event (`invalid-event-number`), as Splunk does.
    /// Without it nothing of the post is taken.
    pub name_invalid_event: bool,
    /// Splunk Cloud's answers: a body over `max_content_length` gets 400 code 6 with
    /// `invalid-event-number` 0 (not 413), and a missing channel code 28 (not 10).
    pub cloud: bool,
    /// The per-event size limit: a larger event (its JSON text) is refused with
    /// code 6 pointing at it; the events before it are kept.
    pub max_event_bytes: Option<usize>,
    /// A sticky-session load balancer in front of several indexers.
    pub load_balancer: Option<LoadBalancer>,
}

impl HecServerConfig {
    /// Splunk's defaults with one enabled token: any index, an 800 MB body limit, no
    /// acknowledgement, bad events named; tests change only what they are about.
    pub fn token(token: &str) -> HecServerConfig {
        HecServerConfig {
            tokens: vec![token.to_owned()],
            disabled_tokens: Vec::new(),
            indexes: None,
            max_content_length: 800 * 1024 * 1024,
            ack_tokens: Vec::new(),
            ack_mode: AckMode::Immediate,
            reject_events_containing: Vec::new(),
            name_invalid_event: true,
            cloud: false,
            max_event_bytes: None,
            load_balancer: None,
        }
    }
}

/// One post the server saw.
#[derive(Debug, Clone)]
pub struct Post {
    /// When the server finished answering it.
    pub at: Instant,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The body's size as sent (compressed when gzip).
    pub bytes: usize,
    /// Events accepted from this post.
    pub accepted: usize,
    /// Whether the body came gzip-encoded.
    pub gzip: bool,
    /// The `Cookie` header the post carried.
    pub cookie: Option<String>,
}

/// One ack id an indexer issued and has not yet reported indexed.
#[derive(Debug, Clone, Copy)]
struct Pending {
    polls: u32,
    issued: Instant,
}

/// One indexer's state of one channel: the next ack id and the ids not yet confirmed.
#[derive(Default)]
struct Channel {
    next: u64,
    pending: std::collections::HashMap<u64, Pending>,
}

#[derive(Default)]
struct Recorded {
    events: Vec<Value>,
    /// When each accepted event arrived (same order as `events`).
    received: Vec<Instant>,
    posts: Vec<Post>,
    /// Per (indexer, channel): ack ids issued and not yet confirmed.
    channels: std::collections::HashMap<(usize, String), Channel>,
    acks_confirmed: usize,
    ack_polls: usize,
    /// The most ack ids of one channel issued and not yet confirmed at one moment.
    max_unconfirmed: usize,
    /// Ack polls that reached an indexer other than the one holding the ids asked about.
    misrouted_polls: usize,
    /// Requests so far without the load balancer's cookie (they are spread in turn).
    unrouted: usize,
}

struct Shared {
    config: Mutex<HecServerConfig>,
    behaviour: Mutex<Behaviour>,
    recorded: Mutex<Recorded>,
    /// Event posts that arrived, answered or not (a slow or hung one counts at once).
    arrived: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running test server on a loopback address (127.0.0.1 unless asked); stops when dropped.
pub struct HecServer {
    /// Where it listens (port chosen by the system).
    pub addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    system: actix_rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HecServer {
    /// A server that accepts one token, on a free port.
    pub fn start(token: &str) -> HecServer {
        Self::start_with(HecServerConfig::token(token))
    }

    /// A server with these Splunk-side settings, on a free port.
    pub fn start_with(config: HecServerConfig) -> HecServer {
        Self::start_inner(config, None, LOOPBACK_V4)
    }

    /// A server on another loopback address, e.g. `::1` to test IPv6 literals;
    /// with `tls` (certificate chain and key, PEM) it speaks HTTPS.
    pub fn start_on(
        ip: std::net::IpAddr,
        config: HecServerConfig,
        tls: Option<(&str, &str)>,
    ) -> HecServer {
        Self::start_inner(config, tls.map(|(c, k)| server_tls(c, k)), ip)
    }

    /// A server that speaks HTTPS with this certificate chain and key (PEM).
    pub fn start_tls(config: HecServerConfig, cert_chain_pem: &str, key_pem: &str) -> HecServer {
        Self::start_inner(
            config,
            Some(server_tls(cert_chain_pem, key_pem)),
            LOOPBACK_V4,
        )
    }

    fn start_inner(
        config: HecServerConfig,
        tls: Option<rustls::ServerConfig>,
        ip: std::net::IpAddr,
    ) -> HecServer {
        let is_tls = tls.is_some();
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            behaviour: Mutex::new(Behaviour::Normal),
            recorded: Mutex::new(Recorded::default()),
            arrived: Default::default(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            let started = system.block_on(async move {
                let data = web::Data::from(s);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(answer))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(0);
                let server = match tls {
                    Some(tls) => server.bind_rustls_0_23((ip, 0), tls)?,
                    None => server.bind((ip, 0))?,
                };
                let addr = server.addrs()[0];
                actix_rt::spawn(server.run());
                Ok::<_, std::io::Error>(addr)
            });
            let _ = tx.send(started.map(|a| (a, actix_rt::System::current())));
            system.run().ok();
        });
        let (addr, system) = rx
            .recv()
            .expect("test HEC server thread")
            .expect("test HEC server could not bind its loopback address");
        HecServer {
            addr,
            tls: is_tls,
            shared,
            system,
            thread: Some(thread),
        }
    }

    /// `http(s)://127.0.0.1:port`: what an integration's `hec_uri` is set to.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Changes how the next posts are answered, while running: an outage, a hang,
    /// a recovery at the moment the test chooses.
    pub fn set_behaviour(&self, b: Behaviour) {
        *lock(&self.shared.behaviour) = b;
    }

    /// Changes the Splunk-side settings (tokens, indexes, body limit) while running.
    pub fn configure(&self, f: impl FnOnce(&mut HecServerConfig)) {
        f(&mut lock(&self.shared.config));
    }

    /// Every event accepted so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared.recorded).events.clone()
    }

    /// Every accepted event with the moment it arrived.
    pub fn events_with_arrival(&self) -> Vec<(Value, Instant)> {
        let r = lock(&self.shared.recorded);
        r.events
            .iter()
            .cloned()
            .zip(r.received.iter().copied())
            .collect()
    }

    /// How many events were accepted so far (duplicates counted: delivery is
    /// at-least-once).
    pub fn event_count(&self) -> usize {
        lock(&self.shared.recorded).events.len()
    }

    /// How many event posts have arrived, including those not answered yet: a
    /// test sees a post in flight.
    pub fn posts_arrived(&self) -> usize {
        self.shared
            .arrived
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every post answered so far, refused ones included, in the order answered.
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.shared.recorded).posts.clone()
    }

    /// Acknowledgements confirmed to the client, and polls answered.
    pub fn acks(&self) -> (usize, usize) {
        let r = lock(&self.shared.recorded);
        (r.acks_confirmed, r.ack_polls)
    }

    /// The most posts of one channel that were waiting for their acknowledgement at
    /// one moment (issued an ack id, not yet reported indexed).
    pub fn max_unconfirmed(&self) -> usize {
        lock(&self.shared.recorded).max_unconfirmed
    }

    /// Ack polls the load balancer sent to an indexer that did not hold the ids asked about.
    pub fn misrouted_polls(&self) -> usize {
        lock(&self.shared.recorded).misrouted_polls
    }
}

const LOOPBACK_V4: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The server side of TLS, from a certificate chain and key in PEM.
fn server_tls(cert_chain_pem: &str, key_pem: &str) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("test certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("test key PEM");
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("test certificate and key")
}

impl Drop for HecServer {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hec(status: u16, code: i64, text: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .json(json!({"text": text, "code": code}))
}

fn hec_at(status: u16, code: i64, text: &str, invalid: usize) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
        .json(json!({"text": text, "code": code, "invalid-event-number": invalid}))
}

async fn answer(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let path = req.path().trim_end_matches('/');
    let behaviour = lock(&shared.behaviour).clone();
    match (req.method().as_str(), path) {
        ("GET", "/services/collector/health" | "/services/collector/health/1.0") => {
            return match behaviour {
                Behaviour::Fail { status: 503, .. } => {
                    hec(503, 18, "HEC is unhealthy, queues are full")
                }
                _ => hec(200, 17, "HEC is healthy"),
            }
        }
        ("POST", "/services/collector/ack") => {
            let (indexer, cookie) = route(&req, &shared);
            return with_cookie(answer_ack(&req, &body, &shared, indexer), cookie);
        }
        (
            "POST",
            "/services/collector" | "/services/collector/event" | "/services/collector/event/1.0",
        ) => {}
        _ => return HttpResponse::NotFound().body("Not Found"),
    }
    shared
        .arrived
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (indexer, cookie) = route(&req, &shared);
    with_cookie(answer_post(&req, &body, &shared, indexer).await, cookie)
}

/// The behaviour for this post; a `FailTimes` counts down and then turns normal.
fn next_behaviour(shared: &Shared) -> Behaviour {
    let mut b = lock(&shared.behaviour);
    if let Behaviour::Once(first, then) = &*b {
        let first = (**first).clone();
        *b = (**then).clone();
        return first;
    }
    if let Behaviour::FailTimes { times, .. } = &mut *b {
        if *times == 0 {
            *b = Behaviour::Normal;
        } else {
            *times -= 1;
        }
    }
    b.clone()
}

/// What `behaviour` does before the post is read: a refusal (status, answer), or
/// `None` once the delay it asks for has passed.
async fn before_reading(behaviour: &Behaviour) -> Option<(u16, HttpResponse)> {
    match behaviour {
        Behaviour::Hang => {
            actix_rt::time::sleep(Duration::from_secs(24 * 3600)).await;
            None
        }
        Behaviour::Slow(d) => {
            actix_rt::time::sleep(*d).await;
            None
        }
        Behaviour::Fail { status, code, text } => {
            Some((*status, failure(*status, *code, text, None)))
        }
        Behaviour::FailTimes {
            status,
            code,
            text,
            retry_after,
            times: _,
        } => Some((*status, failure(*status, *code, text, retry_after.clone()))),
        Behaviour::Redirect(to) => Some((
            307,
            HttpResponse::TemporaryRedirect()
                .insert_header(("Location", to.as_str()))
                .finish(),
        )),
        Behaviour::Normal
        | Behaviour::BusyAfter(_)
        | Behaviour::NearCapacity(_)
        | Behaviour::Once(..) => None,
    }
}

async fn answer_post(
    req: &HttpRequest,
    body: &web::Bytes,
    shared: &Shared,
    indexer: usize,
) -> HttpResponse {
    let cookie = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let behaviour = next_behaviour(shared);
    if let Some((status, resp)) = before_reading(&behaviour).await {
        record(shared, status, body.len(), false, cookie, Vec::new());
        return resp;
    }
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let config = lock(&shared.config).clone();
    let (resp, mut accepted) = match check_post(req, body, &config) {
        Ok(()) => check_events(req, body, gzip, &config),
        Err(refusal) => (refusal.response(), Vec::new()),
    };
    let status = resp.status().as_u16();
    let (status, resp) = match behaviour {
        Behaviour::BusyAfter(n) if status == 200 && accepted.len() > n => {
            accepted.truncate(n);
            (503, hec_at(503, 9, "Server is busy", n))
        }
        _ => (status, resp),
    };
    let resp = match (status, behaviour) {
        (200, Behaviour::NearCapacity(code)) => success(
            req,
            shared,
            indexer,
            code,
            "HEC queue is approaching its capacity limit",
        ),
        (200, _) => success(req, shared, indexer, 0, "Success"),
        _ => resp,
    };
    record(shared, status, body.len(), gzip, cookie, accepted);
    resp
}

/// A failure answer: with HEC's code as JSON, or a bare status; with `Retry-After` when given.
fn failure(
    status: u16,
    code: Option<i64>,
    text: &str,
    retry_after: Option<String>,
) -> HttpResponse {
    let mut resp = match code {
        Some(code) => hec(status, code, text),
        None => HttpResponse::build(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .body(text.to_owned()),
    };
    if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
        resp.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, value);
    }
    resp
}

/// Which indexer a request reaches, and the cookie the load balancer sets for it.
fn route(req: &HttpRequest, shared: &Shared) -> (usize, Option<String>) {
    let Some(lb) = lock(&shared.config).load_balancer else {
        return (0, None);
    };
    let n = lb.indexers.max(1);
    let sticky = req
        .headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix("AWSELB=indexer-")?
                .parse::<usize>()
                .ok()
        })
        .filter(|k| *k < n);
    let indexer = sticky.unwrap_or_else(|| {
        let mut r = lock(&shared.recorded);
        r.unrouted += 1;
        (r.unrouted - 1) % n
    });
    (indexer, Some(format!("AWSELB=indexer-{indexer}; Path=/")))
}

fn with_cookie(mut resp: HttpResponse, cookie: Option<String>) -> HttpResponse {
    if let Some(value) = cookie.and_then(|c| c.parse().ok()) {
        resp.headers_mut()
            .append(actix_web::http::header::SET_COOKIE, value);
    }
    resp
}

/// A refusal before any event is read: HTTP status, HEC's code (none for a bare
/// 413) and text, and the event it names (Splunk Cloud's oversized body).
struct Refusal(u16, Option<i64>, &'static str, Option<usize>);

impl Refusal {
    fn response(&self) -> HttpResponse {
        match (self.1, self.3) {
            (Some(code), Some(i)) => hec_at(self.0, code, self.2, i),
            (Some(code), None) => hec(self.0, code, self.2),
            (None, _) => {
                HttpResponse::build(StatusCode::from_u16(self.0).unwrap_or(StatusCode::BAD_REQUEST))
                    .body(self.2)
            }
        }
    }
}

fn token_of(req: &HttpRequest) -> Result<&str, Refusal> {
    match req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        None => Err(Refusal(401, Some(2), "Token is required", None)),
        Some(a) => {
            a.strip_prefix("Splunk ")
                .ok_or(Refusal(401, Some(3), "Invalid authorization", None))
        }
    }
}

fn channel_of(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
}

/// A success (HEC `code`, usually 0); with acknowledgement on for the token, it
/// carries the next ack id of the channel on the indexer that took the post.
fn success(
    req: &HttpRequest,
    shared: &Shared,
    indexer: usize,
    code: i64,
    text: &str,
) -> HttpResponse {
    let config = lock(&shared.config);
    let acknowledged = token_of(req).is_ok_and(|t| config.ack_tokens.iter().any(|a| a == t));
    if !acknowledged {
        return hec(200, code, text);
    }
    let channel = channel_of(req).unwrap_or_default().to_owned();
    let mut r = lock(&shared.recorded);
    let ch = r.channels.entry((indexer, channel)).or_default();
    let id = ch.next;
    ch.next += 1;
    ch.pending.insert(
        id,
        Pending {
            polls: 0,
            issued: Instant::now(),
        },
    );
    let waiting = ch.pending.len();
    r.max_unconfirmed = r.max_unconfirmed.max(waiting);
    HttpResponse::Ok().json(json!({"text": text, "code": code, "ackId": id}))
}

fn answer_ack(req: &HttpRequest, body: &[u8], shared: &Shared, indexer: usize) -> HttpResponse {
    let config = lock(&shared.config).clone();
    let token = match token_of(req) {
        Ok(t) => t,
        Err(refusal) => return refusal.response(),
    };
    if !config.tokens.iter().any(|t| t == token) {
        return hec(403, 4, "Invalid token");
    }
    if !config.ack_tokens.iter().any(|t| t == token) {
        return hec(400, 14, "ACK is disabled");
    }
    let Some(channel) = channel_of(req) else {
        return channel_refusal(&config).response();
    };
    #[derive(serde::Deserialize)]
    struct Query {
        acks: Vec<u64>,
    }
    let Ok(q) = serde_json::from_slice::<Query>(body) else {
        return hec(400, 6, "Invalid data format");
    };
    let mut r = lock(&shared.recorded);
    r.ack_polls += 1;
    let elsewhere = q.acks.iter().any(|id| {
        r.channels
            .iter()
            .any(|((k, c), ch)| *k != indexer && c == channel && ch.pending.contains_key(id))
    });
    let here_unknown = q.acks.iter().any(|id| {
        !r.channels
            .get(&(indexer, channel.to_owned()))
            .is_some_and(|ch| ch.pending.contains_key(id))
    });
    if elsewhere && here_unknown {
        r.misrouted_polls += 1;
    }
    let mut confirmed = 0;
    let mut out = serde_json::Map::new();
    // Ids this indexer never issued (or already confirmed) are answered false, as Splunk does.
    if let Some(ch) = r.channels.get_mut(&(indexer, channel.to_owned())) {
        for id in q.acks {
            let done = match ch.pending.get_mut(&id) {
                None => false,
                Some(p) => {
                    p.polls += 1;
                    match config.ack_mode {
                        AckMode::Immediate => true,
                        AckMode::AfterPolls(n) => p.polls >= n,
                        AckMode::Never => false,
                        AckMode::AfterDelay(d) => p.issued.elapsed() >= d,
                    }
                }
            };
            if done {
                // Splunk forgets an ack id once it has reported it true.
                ch.pending.remove(&id);
                confirmed += 1;
            }
            out.insert(id.to_string(), Value::Bool(done));
        }
    } else {
        for id in q.acks {
            out.insert(id.to_string(), Value::Bool(false));
        }
    }
    r.acks_confirmed += confirmed;
    HttpResponse::Ok().json(json!({ "acks": out }))
}

/// No channel although the token has acknowledgement on: code 10 on Splunk
/// Enterprise, 28 on Splunk Cloud.
fn channel_refusal(config: &HecServerConfig) -> Refusal {
    if config.cloud {
        Refusal(
            400,
            Some(28),
            "Data channel is missing. Sticky-session load balancers must be provisioned",
            None,
        )
    } else {
        Refusal(400, Some(10), "Data channel is missing", None)
    }
}

fn record(
    shared: &Shared,
    status: u16,
    bytes: usize,
    gzip: bool,
    cookie: Option<String>,
    accepted: Vec<Value>,
) {
    let mut r = lock(&shared.recorded);
    r.posts.push(Post {
        at: Instant::now(),
        status,
        bytes,
        accepted: accepted.len(),
        gzip,
        cookie,
    });
    let now = Instant::now();
    r.received.extend(std::iter::repeat_n(now, accepted.len()));
    r.events.extend(accepted);
}

/// Splunk's checks before it reads any event: the token, then the size and channel.
fn check_post(req: &HttpRequest, body: &[u8], config: &HecServerConfig) -> Result<(), Refusal> {
    let reject =
        |status: u16, code: i64, text: &'static str| Err(Refusal(status, Some(code), text, None));
    let token = token_of(req)?;
    if config.disabled_tokens.iter().any(|t| t == token) {
        return reject(403, 1, "Token disabled");
    }
    if !config.tokens.iter().any(|t| t == token) {
        return reject(403, 4, "Invalid token");
    }
    if body.len() > config.max_content_length {
        // Splunk Cloud names the first event of an oversized body as the bad one.
        return Err(if config.cloud {
            Refusal(400, Some(6), "Invalid data format", Some(0))
        } else {
            Refusal(
                413,
                None,
                "Content-Length of request exceeds max_content_length",
                None,
            )
        });
    }
    if config.ack_tokens.iter().any(|t| t == token) {
        match channel_of(req) {
            None => return Err(channel_refusal(config)),
            Some(c) if uuid::Uuid::parse_str(c).is_err() => {
                return reject(400, 11, "Invalid data channel")
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Splunk's checks of each event. Events before the first bad one are accepted, as
/// Splunk indexes them.
fn check_events(
    req: &HttpRequest,
    body: &[u8],
    gzip: bool,
    config: &HecServerConfig,
) -> (HttpResponse, Vec<Value>) {
    let reject = |status: u16, code: i64, text: &str| (hec(status, code, text), Vec::new());
    let decoded;
    let body = if gzip {
        use std::io::Read;
        let mut out = Vec::new();
        let limit = config.max_content_length as u64 * 4;
        if flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)
            .is_err()
        {
            return reject(400, 6, "Invalid data format");
        }
        decoded = out;
        &decoded[..]
    } else {
        match req.headers().get("content-encoding") {
            Some(enc) if enc.as_bytes() != b"identity" => {
                return reject(400, 6, "Invalid data format")
            }
            _ => body,
        }
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return reject(400, 5, "No data");
    }
    let mut accepted = Vec::new();
    let mut items = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    for i in 0.. {
        let start = items.byte_offset();
        let Some(item) = items.next() else { break };
        let size = items.byte_offset() - start;
        let bad = |code: i64, text: &str, accepted: Vec<Value>| {
            if config.name_invalid_event {
                (hec_at(400, code, text, i), accepted)
            } else {
                (hec(400, code, text), Vec::new())
            }
        };
        let Ok(Value::Object(obj)) = item else {
            return bad(6, "Invalid data format", accepted);
        };
        if let Some((code, text)) = event_refusal(&obj, size, config) {
            return bad(code, text, accepted);
        }
        accepted.push(Value::Object(obj));
    }
    (hec(200, 0, "Success"), accepted)
}

/// Why Splunk would refuse this one event object of `size` bytes (HEC code and
/// text), or `None` when it would take it.
fn event_refusal(
    obj: &serde_json::Map<String, Value>,
    size: usize,
    config: &HecServerConfig,
) -> Option<(i64, &'static str)> {
    const FORMAT: Option<(i64, &str)> = Some((6, "Invalid data format"));
    if config.max_event_bytes.is_some_and(|max| size > max) {
        return FORMAT;
    }
    match obj.get("event") {
        None => return Some((12, "Event field is required")),
        Some(Value::Null) => return Some((13, "Event field cannot be blank")),
        Some(Value::String(s)) if s.is_empty() => return Some((13, "Event field cannot be blank")),
        Some(_) => {}
    }
    if let Some(t) = obj.get("time") {
        let secs = match t {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse::<f64>().ok(),
            _ => None,
        };
        // Stricter than Splunk: epoch milliseconds are a client bug Splunk files in the year 57000.
        if !secs.is_some_and(|s| (0.0..1e11).contains(&s)) {
            return FORMAT;
        }
    }
    if let Some(fields) = obj.get("fields") {
        let flat = fields
            .as_object()
            .is_some_and(|m| m.values().all(|v| !v.is_object()));
        if !flat {
            return Some((15, "Error in handling indexed fields"));
        }
    }
    if ["host", "source", "sourcetype", "index"]
        .iter()
        .any(|key| obj.get(*key).is_some_and(|v| !v.is_string()))
    {
        return FORMAT;
    }
    if let (Some(allowed), Some(Value::String(index))) = (&config.indexes, obj.get("index")) {
        if !allowed.contains(index) {
            return Some((7, "Incorrect index"));
        }
    }
    if !config.reject_events_containing.is_empty() {
        let text = Value::Object(obj.clone()).to_string();
        if config
            .reject_events_containing
            .iter()
            .any(|m| text.contains(m.as_str()))
        {
            return FORMAT;
        }
    }
    None
}
