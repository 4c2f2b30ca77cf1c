//! The one launcher of siemsync for tests and benchmarks, two ways:
//! - [`InProcess`]: `siemsync::start` on a thread of its own with its own actix
//!   System, as `main.rs` runs it, configured from a config file and a list of
//!   `SIEMSYNC_*` overrides (never the process environment, so tests running at
//!   once do not see each other's settings). Most tests use it: no process to
//!   spawn, and every interval can be set in fractions of a second.
//! - [`spawn_process`]: the real binary as a child process, for what only a
//!   process shows: signals, SIGKILL, its log, its CPU and memory.

use crate::actors::Supervisor;
use crate::config::Config;
use crate::store::Store;
use actix::Addr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which store a service under test runs on: the same tests run on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store in the test's data directory (the default).
    Sled,
    /// A fresh database on this test binary's shared PostgreSQL cluster.
    Postgres,
}

impl Backend {
    /// The `SIEMSYNC_*` overrides that put a service on this backend: none for
    /// sled; for PostgreSQL a new database of its own (the harness's cluster,
    /// started on first use). `None` only where PostgreSQL is not installed outside
    /// CI: the caller skips the test (the harness said why).
    pub fn env(self) -> Option<Vec<(String, String)>> {
        match self {
            Backend::Sled => Some(Vec::new()),
            Backend::Postgres => {
                let cluster = super::postgres::shared()?;
                let db = cluster
                    .create_database()
                    .unwrap_or_else(|e| panic!("creating a test database: {e}"));
                Some(vec![
                    ("SIEMSYNC_STORE".into(), "postgres".into()),
                    ("SIEMSYNC_POSTGRES_URL".into(), cluster.url(&db)),
                    ("SIEMSYNC_NODE_NAME".into(), format!("node-{db}")),
                ])
            }
        }
    }
}

/// The config file the service ships with.
pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/siemsync.toml")
}

/// The service running in this process, on a thread of its own; stopped by
/// `Service::shutdown` (HTTP server, actors, loops, store flushed) when dropped.
pub struct InProcess {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The Supervisor of its delivery actors, for tests that must order messages
    /// to it exactly (a race made deterministic) or force faults on its actors.
    pub supervisor: Addr<Supervisor>,
    /// Its store, until it is stopped (a handle kept open would hold sled's lock).
    store: Option<Store>,
    data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// How long `stop` waits for the service to end before it gives up on it.
    stop_deadline: Duration,
}

/// What the service's thread hands back once it listens.
struct Started {
    addr: SocketAddr,
    supervisor: Addr<Supervisor>,
    store: Store,
}

/// Why an in-process service did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The config file or an override was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `siemsync::start` refused.
    #[error("{0}")]
    Start(String),
    /// The previous service on the same data directory did not release it.
    #[error("the data directory {0} is still locked by a service that was stopped")]
    StillLocked(PathBuf),
}

/// The config of `config_file` with `env`'s overrides applied, as `siemsync run` reads it.
pub fn config(config_file: &Path, env: &[(String, String)]) -> Result<Config, LaunchError> {
    let text = std::fs::read_to_string(config_file).map_err(|source| {
        crate::config::ConfigError::Read {
            path: config_file.to_owned(),
            source,
        }
    })?;
    Ok(Config::from_toml(&text, config_file, |k| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    })?)
}

impl InProcess {
    /// Starts the service with `config`; returns once it listens.
    pub fn start(config: Config) -> Result<InProcess, LaunchError> {
        if std::env::var_os("SIEMSYNC_TEST_LOG").is_some() {
            let _ = env_logger::builder().is_test(true).try_init();
        }
        wait_unlocked(&config.data_dir)?;
        let data_dir = config.data_dir.clone();
        // The HTTP server's 5 s for requests in flight, the actors' grace twice (to
        // finish their posts, then to be gone), and room for the store's flush on a
        // loaded machine: a service that takes longer is hung.
        let stop_deadline = config.shutdown_grace() * 2 + Duration::from_secs(15);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("siemsync-under-test".into())
            .spawn(move || run(config, ready_tx, stop_rx))
            .map_err(|e| LaunchError::Start(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(started)) => Ok(InProcess {
                addr: started.addr,
                supervisor: started.supervisor,
                store: Some(started.store),
                data_dir,
                stop: Some(stop_tx),
                thread: Some(thread),
                stop_deadline,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(LaunchError::Start(e))
            }
            Err(_) => Err(LaunchError::Start(
                "the service's thread ended before it listened (it panicked)".into(),
            )),
        }
    }

    /// The service's store, for tests that slow it down (`Store::set_pace`).
    /// Panics once the service is stopped.
    pub fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("the store of a service that was stopped")
    }

    /// `http://addr` of the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service and waits until its thread ended and its store is closed
    /// (another service, or a test, may then open the data directory). Panics if
    /// it has not ended within twice its shutdown grace and 15 s: it is hung.
    pub fn stop(&mut self) {
        self.stop_within(self.stop_deadline);
    }

    /// Like `stop`, giving up after `deadline`: a hung service fails the test with
    /// a message naming what did not stop, instead of hanging it for ever. Its
    /// thread is then left running (a thread cannot be killed).
    pub fn stop_within(&mut self, deadline: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.store = None;
        let Some(thread) = self.thread.take() else {
            return;
        };
        let until = Instant::now() + deadline;
        while !thread.is_finished() {
            if Instant::now() >= until {
                let hung = format!(
                    "the in-process siemsync on {} (data directory {}) did not stop within {deadline:?} of being told: its `Service::shutdown` (HTTP server, actors, background loops, store flush) has not returned on thread `siemsync-under-test`, which is left running",
                    self.addr,
                    self.data_dir.display()
                );
                // A second panic while the test unwinds would abort every test.
                if std::thread::panicking() {
                    log::error!("{hung}");
                    eprintln!("{hung}");
                    return;
                }
                panic!("{hung}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        if let Err(e) = wait_unlocked(&self.data_dir) {
            log::error!("{e}");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The service's thread: starts it, reports where it listens, runs until told to stop.
fn run(
    config: Config,
    ready: std::sync::mpsc::Sender<Result<Started, String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    actix_rt::System::new().block_on(async move {
        let service = match crate::start(config) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let _ = ready.send(Ok(Started {
            addr: service.addr,
            supervisor: service.supervisor.clone(),
            store: service.store.clone(),
        }));
        // A dropped sender (the test panicked) stops the service too.
        let _ = stop.await;
        if let Err(e) = service.shutdown().await {
            log::error!("shutting down the service at the end of a test: {e}");
        }
    });
}

/// Waits (up to 10 s) until no stopped service holds `data_dir`'s lock: the
/// collectors' threads drop their store handles a moment after the System ends,
/// and sled refuses a second open while they hold it.
fn wait_unlocked(data_dir: &Path) -> Result<(), LaunchError> {
    use std::os::fd::AsRawFd;
    let db = data_dir.join("db");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Ok(file) = std::fs::File::open(&db) else {
            return Ok(()); // a new data directory
        };
        // SAFETY: flock on a descriptor this function owns; released when `file` closes.
        let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        drop(file);
        if free {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LaunchError::StillLocked(data_dir.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The real binary (`binary`: a test's `env!("CARGO_BIN_EXE_siemsync")`) run with
/// `siemsync run --config config_file` and `env` added to its environment; its
/// stderr goes to `log` (None: discarded). Returns it once it listens, with its URL.
pub fn spawn_process(
    binary: &Path,
    config_file: &Path,
    env: &[(String, String)],
    log: Option<&Path>,
) -> Result<(Child, String), LaunchError> {
    let stderr = match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .map_err(|e| LaunchError::Start(format!("log file {}: {e}", path.display())))?,
        None => Stdio::null(),
    };
    let mut cmd = Command::new(binary);
    cmd.arg("run")
        .arg("--config")
        .arg(config_file)
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| LaunchError::Start(format!("spawning {}: {e}", binary.display())))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("siemsync listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => Ok((child, url)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(LaunchError::Start(
                "siemsync did not say it listens within 30 s".into(),
            ))
        }
    }
}
