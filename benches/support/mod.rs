//! What the end-to-end benchmarks share: a loopback HEC receiver that only reads,
//! un-gzips and counts (so it is never the bottleneck), the release binary run as
//! the service, and readings of a process's CPU time and memory from `/proc`.
#![allow(dead_code)] // each benchmark uses its own part of this

pub mod backend;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const ADMIN: &str = "bench-admin-token-0123456789abcdef";
pub const INGEST: &str = "bench-ingest-token-0123456789abcdef";

#[derive(Default)]
pub struct Counts {
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub posts: AtomicU64,
    /// The un-gzipped body of the first post of at least 100 events: real HEC
    /// bytes, to time gzip levels on.
    pub sample: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Counts {
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Waits until `n` events have arrived; panics after `limit`.
    pub fn wait_for(&self, n: u64, limit: Duration) -> Duration {
        let t0 = Instant::now();
        while self.events() < n {
            assert!(
                t0.elapsed() < limit,
                "only {} of {n} events arrived in {limit:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t0.elapsed()
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, counts: web::Data<Counts>) -> HttpResponse {
    let mut plain = Vec::new();
    let text: &[u8] = if req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain);
        &plain
    } else {
        &body
    };
    let events = text.iter().filter(|b| **b == b'\n').count();
    // The first batch: an integration created through the API first posts a
    // connection check of one small event, which says nothing of gzip on batches.
    if events >= 100 {
        if let Ok(mut sample) = counts.sample.lock() {
            sample.get_or_insert_with(|| text.to_vec());
        }
    }
    counts.events.fetch_add(events as u64, Ordering::Relaxed);
    counts.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
    counts.posts.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().json(json!({"text": "Success", "code": 0}))
}

/// Starts the counting receiver on its own thread; returns its port.
pub fn receiver(counts: Arc<Counts>) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let data = web::Data::from(counts);
            let srv = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(64 << 20))
                    .default_service(web::to(receive))
            })
            .workers(1)
            .backlog(16_384)
            .max_connections(100_000)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind");
            tx.send(srv.addrs()[0].port()).expect("port");
            actix_rt::spawn(srv.run());
        });
        sys.run().ok();
    });
    rx.recv().expect("receiver port")
}

/// One audit event as the platform sends it, every field set.
pub fn audit_event(i: usize) -> Value {
    json!({"id": format!("evt-{i}"), "time": "2026-11-25T10:00:00.123Z", "connector": "m365-1",
           "acl": "admin", "method": "POST", "user": "ann@example.com", "ip": "192.0.2.7",
           "metadata": {"target": "mailbox", "n": i}, "event": "Restore started"})
}

pub fn shipped_config() -> PathBuf {
    siemsync::testkit::service::shipped_config()
}

/// The release binary, run as an operator would, on `data_dir`, through the
/// launcher the tests use.
pub struct Service {
    pub child: Child,
    pub url: String,
}

impl Service {
    pub fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Service {
        let mut all: Vec<(String, String)> = [
            ("SIEMSYNC_LISTEN", "127.0.0.1:0"),
            ("SIEMSYNC_ADMIN_TOKEN", ADMIN),
            ("SIEMSYNC_INGEST_TOKEN", INGEST),
            ("SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.push(("SIEMSYNC_DATA_DIR".into(), data_dir.display().to_string()));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (child, url) = siemsync::testkit::service::spawn_process(
            Path::new(env!("CARGO_BIN_EXE_siemsync")),
            &shipped_config(),
            &all,
            None,
        )
        .expect("spawning siemsync");
        Service { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` of the API.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("http://").trim_end_matches('/')
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// User plus system CPU seconds of process `pid` ("self" for this one,
/// "thread-self" for the calling thread alone).
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of a PostgreSQL postmaster and all its children (the backends).
pub fn postgres_cpu(postmaster: u32) -> f64 {
    let mut total = cpu_secs(&postmaster.to_string());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        if ppid == Some(&postmaster.to_string()) {
            total += cpu_secs(pid);
        }
    }
    total
}

/// A memory figure of process `pid` in MiB: `VmRSS` (now) or `VmHWM` (peak).
pub fn mem_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// A minimal HTTP/1.1 client on one keep-alive connection, so the benchmark's own
/// cost stays small beside the service's.
pub struct Http {
    stream: BufReader<std::net::TcpStream>,
}

impl Http {
    pub fn connect(authority: &str) -> Http {
        let stream = std::net::TcpStream::connect(authority).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Http {
            stream: BufReader::new(stream),
        }
    }

    /// Sends one request and returns the status and body of the answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        use std::io::Write;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(body).expect("write");
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).expect("read");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("read");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("length");
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).expect("body");
        (status, body)
    }
}

/// Posts every `(path, body)` of `bodies` once, as ingest requests over
/// `connections` keep-alive connections each, taking them in order and the nodes at
/// `authorities` in turn; asserts every answer is 200 and answers the events
/// accepted.
pub fn post_all(
    bodies: &Arc<Vec<(String, Vec<u8>)>>,
    authorities: &Arc<Vec<String>>,
    connections: usize,
) -> u64 {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let (bodies, next, authorities) = (bodies.clone(), next.clone(), authorities.clone());
            std::thread::spawn(move || {
                let mut http: Vec<Http> = authorities.iter().map(|a| Http::connect(a)).collect();
                let mut accepted = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, body)) = bodies.get(i) else {
                        break;
                    };
                    let node = i % http.len();
                    let (status, answer) = http[node].request("POST", path, INGEST, body);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                    let v: serde_json::Value = serde_json::from_slice(&answer).expect("json");
                    accepted += v["accepted"].as_u64().expect("accepted");
                }
                accepted
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().expect("client")).sum()
}

/// The size of the files under `dir`, in MiB.
pub fn dir_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        match std::fs::read_dir(p) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum(),
            Err(_) => 0,
        }
    }
    walk(dir) as f64 / 1_048_576.0
}

/// Per channel: the next ack id, and when each unconfirmed id was issued.
type AckChannels = std::sync::Mutex<
    std::collections::HashMap<String, (u64, std::collections::HashMap<u64, Instant>)>,
>;

struct AckReceiver {
    counts: Arc<Counts>,
    channels: AckChannels,
    delay: Duration,
}

async fn receive_with_ack(
    req: HttpRequest,
    body: web::Bytes,
    r: web::Data<AckReceiver>,
) -> HttpResponse {
    let channel = req
        .headers()
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut channels = r.channels.lock().unwrap_or_else(|p| p.into_inner());
    let (next, pending) = channels.entry(channel).or_default();
    if req.path().ends_with("/ack") {
        #[derive(serde::Deserialize)]
        struct Query {
            acks: Vec<u64>,
        }
        let q: Query = serde_json::from_slice(&body).expect("ack query");
        let mut out = serde_json::Map::new();
        for id in q.acks {
            // Splunk forgets an id once it answered true.
            let done = pending.get(&id).is_some_and(|at| at.elapsed() >= r.delay);
            if done {
                pending.remove(&id);
            }
            out.insert(id.to_string(), Value::Bool(done));
        }
        return HttpResponse::Ok().json(json!({ "acks": out }));
    }
    let id = *next;
    *next += 1;
    pending.insert(id, Instant::now());
    drop(channels);
    let mut plain = Vec::new();
    let text: &[u8] = if req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain);
        &plain
    } else {
        &body
    };
    let events = text.iter().filter(|b| **b == b'\n').count();
    r.counts.events.fetch_add(events as u64, Ordering::Relaxed);
    r.counts
        .bytes
        .fetch_add(text.len() as u64, Ordering::Relaxed);
    r.counts.posts.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().json(json!({"text": "Success", "code": 0, "ackId": id}))
}

/// A counting receiver with indexer acknowledgement: every post gets an ack id, and
/// an ack poll answers `true` for an id once `delay` has passed since its post (as a
/// Splunk whose indexers confirm slowly). Returns its port.
pub fn ack_receiver(counts: Arc<Counts>, delay: Duration) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let data = web::Data::new(AckReceiver {
                counts,
                channels: Default::default(),
                delay,
            });
            let srv = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(64 << 20))
                    .default_service(web::to(receive_with_ack))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind");
            tx.send(srv.addrs()[0].port()).expect("port");
            actix_rt::spawn(srv.run());
        });
        sys.run().ok();
    });
    rx.recv().expect("receiver port")
}

/// A whole number from the environment variable `name`, else `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: {v:?} is not a whole number"))
    })
}

/// The machine's load average over 1, 5 and 15 minutes, as `uptime` shows it: the
/// machine is shared, and every figure is noted with it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
