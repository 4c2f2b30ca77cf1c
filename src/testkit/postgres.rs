//! A throwaway PostgreSQL for tests and benchmarks: Debian's own server binaries,
//! a primary in a temp dir on a free loopback port, optionally a streaming standby
//! made with `pg_basebackup -R` and kept synchronous, so a test can kill the primary,
//! promote the standby and check that nothing acknowledged was lost. Never a mock.
//!
//! `initdb` refuses to run as root, so when the tests run as root every server
//! command runs as the `postgres` user (`runuser -u postgres --`), in a temp dir
//! handed to that user.
//!
//! Settings: `synchronous_commit` stays on (a commit returns once its WAL is written
//! and, with a standby, once the standby has it: that is the promise under test).
//! `fsync` and `full_page_writes` are off unless
//! [`ClusterOptions::durable`](crate::testkit::postgres::ClusterOptions::durable) asks for them:
//! tests kill PostgreSQL processes, never the machine, and a write that reached the
//! kernel survives a killed process, so commit semantics hold while tests run several
//! times faster. Benchmarks turn both on, to measure what production pays.
//!
//! With [`ClusterOptions::tls`](crate::testkit::postgres::ClusterOptions::tls) the
//! primary speaks TLS with a certificate for `127.0.0.1` and `localhost` signed by
//! a test CA made for the cluster ([`PgCluster::ca_file`]), and its `pg_hba.conf`
//! admits TCP connections over TLS only (`hostssl`): a plaintext connection is
//! refused, so a client that gets in has proved it used TLS.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Why the harness could not give a cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A PostgreSQL tool (initdb, pg_ctl, psql) failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// What it printed.
        detail: String,
    },
    /// Files or processes could not be handled.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A server did not get ready in time.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
}

/// How to start the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions {
    /// Also start a streaming standby (synchronous: a commit waits for it).
    pub standby: bool,
    /// `fsync` and `full_page_writes` on, as in production (benchmarks).
    pub durable: bool,
    /// TLS on, and required for every TCP connection (`hostssl` only).
    pub tls: bool,
}

/// One PostgreSQL server of the cluster.
struct Server {
    data: PathBuf,
    log: PathBuf,
    port: u16,
}

/// A running throwaway cluster; stopped and deleted on drop (and by a watchdog
/// process if the test binary ends without dropping it, e.g. a shared one).
pub struct PgCluster {
    bin: PathBuf,
    root: PathBuf,
    as_postgres: bool,
    primary: Server,
    standby: Option<Server>,
    watchdog: Option<Child>,
    /// The test CA that signed the server's certificate (PEM), with `tls`.
    ca: Option<PathBuf>,
}

/// Where Debian's server binaries are: `SIEMSYNC_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
fn find_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SIEMSYNC_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    // `id -u` rather than a libc call: the harness needs no unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn postgres_ids() -> Result<(u32, u32), HarnessError> {
    let id = |flag: &str| -> Result<u32, HarnessError> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| HarnessError::Command {
                what: "looking up the postgres user".into(),
                detail: "no `postgres` user: install Debian's postgresql package".into(),
            })
    };
    Ok((id("-u")?, id("-g")?))
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The cluster every test of this process shares (a database each): a cluster
/// start costs seconds, a database milliseconds. `None` (the test is skipped) only
/// where PostgreSQL is not installed and `CI` is not set; stopped by the cluster's
/// watchdog when the process ends.
pub fn shared() -> Option<&'static PgCluster> {
    static CLUSTER: std::sync::OnceLock<Option<PgCluster>> = std::sync::OnceLock::new();
    CLUSTER
        .get_or_init(|| PgCluster::start_or_skip(ClusterOptions::default()))
        .as_ref()
}

/// Like [`shared`], a cluster with TLS required (see [`ClusterOptions::tls`]),
/// shared by the TLS tests of this process.
pub fn shared_tls() -> Option<&'static PgCluster> {
    static CLUSTER: std::sync::OnceLock<Option<PgCluster>> = std::sync::OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            PgCluster::start_or_skip(ClusterOptions {
                tls: true,
                ..Default::default()
            })
        })
        .as_ref()
}

impl PgCluster {
    /// Starts a cluster, or returns `None` (after saying why) when the PostgreSQL
    /// binaries are not installed — except in CI (`CI` set), where that is a failure.
    pub fn start_or_skip(options: ClusterOptions) -> Option<PgCluster> {
        let Some(bin) = find_bindir().filter(|b| b.join("initdb").exists()) else {
            let why = "PostgreSQL server binaries not found (install Debian's `postgresql` package, or set SIEMSYNC_PG_BINDIR)";
            if std::env::var_os("CI").is_some() {
                panic!("{why}: CI must run the PostgreSQL tests");
            }
            eprintln!("skipping a PostgreSQL test: {why}");
            return None;
        };
        match PgCluster::start(&bin, options) {
            Ok(c) => Some(c),
            Err(e) => panic!(
                "starting a throwaway PostgreSQL from {}: {e}",
                bin.display()
            ),
        }
    }

    fn start(bin: &Path, options: ClusterOptions) -> Result<PgCluster, HarnessError> {
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(format!(
            "siemsync-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root)?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
        }
        let primary = Server {
            data: root.join("primary"),
            log: root.join("primary.log"),
            port: free_port()?,
        };
        let mut cluster = PgCluster {
            bin: bin.to_owned(),
            root,
            as_postgres,
            primary,
            standby: None,
            watchdog: None,
            ca: None,
        };
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        cluster.initdb(options)?;
        if options.tls {
            cluster.ca = Some(cluster.require_tls()?);
        }
        cluster.pg_ctl_start(&cluster.primary)?;
        if options.standby {
            cluster.start_standby()?;
        }
        Ok(cluster)
    }

    /// A command of the server's, run as the `postgres` user when we are root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<String, HarnessError> {
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                what: what.to_owned(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn initdb(&self, options: ClusterOptions) -> Result<(), HarnessError> {
        self.run(
            "initdb",
            self.command("initdb")
                .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
                .args(["--locale=C", "--no-sync", "-D"])
                .arg(&self.primary.data),
        )?;
        let durable = if options.durable { "on" } else { "off" };
        let conf = format!(
            "\n# siemsync test harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sockets}'\n\
             max_connections = 300\n\
             shared_buffers = 256MB\n\
             fsync = {durable}\n\
             full_page_writes = {durable}\n\
             synchronous_commit = on\n\
             wal_level = replica\n\
             max_wal_senders = 5\n\
             wal_keep_size = 256MB\n\
             hot_standby = on\n\
             max_wal_size = 2GB\n\
             checkpoint_timeout = 15min\n\
             log_min_messages = warning\n\
             log_min_duration_statement = -1\n",
            sockets = self.root.display()
        );
        self.append(&self.primary.data.join("postgresql.conf"), &conf)
    }

    /// Gives the primary a certificate signed by a new test CA, turns TLS on and
    /// lets TCP clients in over TLS only; returns the CA's PEM file.
    fn require_tls(&self) -> Result<PathBuf, HarnessError> {
        let failed = |e: rcgen::Error| HarnessError::Command {
            what: "making the test certificates".into(),
            detail: e.to_string(),
        };
        let ca_key = rcgen::KeyPair::generate().map_err(failed)?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "siemsync test PostgreSQL CA");
        let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(failed)?;
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(failed)?;
        let ca_file = self.root.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem())?;
        let data = &self.primary.data;
        std::fs::write(data.join("server.crt"), cert.pem())?;
        std::fs::write(data.join("server.key"), key.serialize_pem())?;
        // PostgreSQL refuses a key file that others may read, or that is not its own.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )?;
        }
        if self.as_postgres {
            let (uid, gid) = postgres_ids()?;
            for f in ["server.crt", "server.key"] {
                std::os::unix::fs::chown(data.join(f), Some(uid), Some(gid))?;
            }
        }
        self.append(
            &data.join("postgresql.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        // initdb's `host` lines (TCP, also replication) become `hostssl`: a TCP
        // client without TLS finds no line that admits it. The socket's `local`
        // lines stay.
        let hba = data.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)?;
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&hba, text)?;
        Ok(ca_file)
    }

    fn append(&self, file: &Path, text: &str) -> Result<(), HarnessError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }

    fn pg_ctl_start(&self, server: &Server) -> Result<(), HarnessError> {
        self.run(
            "pg_ctl start",
            self.command("pg_ctl")
                .arg("-D")
                .arg(&server.data)
                .arg("-l")
                .arg(&server.log)
                .args(["-o", &format!("-p {}", server.port), "-w", "-t", "60"])
                .arg("start"),
        )
        .map_err(|e| self.with_log(e, server))?;
        Ok(())
    }

    /// Adds the server's log to an error: why it did not start is written there.
    fn with_log(&self, e: HarnessError, server: &Server) -> HarnessError {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        match e {
            HarnessError::Command { what, detail } => HarnessError::Command {
                what,
                detail: format!("{detail}\nserver log:\n{log}"),
            },
            other => other,
        }
    }

    /// A standby streaming from the primary; then the primary waits for it on
    /// every commit, so a promoted standby holds every acknowledged transaction.
    fn start_standby(&mut self) -> Result<(), HarnessError> {
        let standby = Server {
            data: self.root.join("standby"),
            log: self.root.join("standby.log"),
            port: free_port()?,
        };
        self.run(
            "pg_basebackup",
            self.command("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &self.primary.port.to_string()])
                .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(&standby.data),
        )?;
        self.pg_ctl_start(&standby)?;
        self.wait_for("the standby to stream", || {
            Ok(self
                .psql(
                    self.primary.port,
                    "postgres",
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )?
                .trim()
                == "1")
        })?;
        self.psql(
            self.primary.port,
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )?;
        self.psql(self.primary.port, "postgres", "SELECT pg_reload_conf()")?;
        self.wait_for("the standby to be synchronous", || {
            Ok(self
                .psql(
                    self.primary.port,
                    "postgres",
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                )?
                .trim()
                == "1")
        })?;
        self.standby = Some(standby);
        Ok(())
    }

    fn wait_for(
        &self,
        what: &str,
        mut done: impl FnMut() -> Result<bool, HarnessError>,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if done()? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout {
                    what: what.to_owned(),
                    secs: 60,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one SQL command with `psql` and returns its unaligned output.
    pub fn psql(&self, port: u16, db: &str, sql: &str) -> Result<String, HarnessError> {
        self.run(
            "psql",
            Command::new(self.bin.join("psql"))
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
                .args([
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-c",
                    sql,
                ]),
        )
    }

    /// A new, empty database on the primary: one per test, so tests sharing a
    /// cluster never see each other's rows. Returns its name.
    pub fn create_database(&self) -> Result<String, HarnessError> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(
            self.primary.port,
            "postgres",
            &format!("CREATE DATABASE {name}"),
        )?;
        Ok(name)
    }

    /// The process id of the primary's postmaster (its backends are its children).
    pub fn primary_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.primary.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The primary's port.
    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    /// The standby's port, if there is one.
    pub fn standby_port(&self) -> Option<u16> {
        self.standby.as_ref().map(|s| s.port)
    }

    /// A libpq URL of the primary alone.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{db}?connect_timeout=2",
            self.primary.port
        )
    }

    /// The test CA that signed the primary's certificate (a cluster started with
    /// `tls`), as a PEM file.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// A libpq URL of the primary alone, over TLS with `sslmode` and, when
    /// `root_cert` is given, `sslrootcert`.
    pub fn tls_url(&self, db: &str, sslmode: &str, root_cert: Option<&Path>) -> String {
        let mut url = format!("{}&sslmode={sslmode}", self.url(db));
        if let Some(path) = root_cert {
            url.push_str(&format!("&sslrootcert={}", path.display()));
        }
        url
    }

    /// A libpq URL naming the primary and the standby, asking for the writable one:
    /// after a promotion the same URL finds the new primary.
    pub fn multi_host_url(&self, db: &str) -> String {
        let standby = self.standby.as_ref().map_or(0, |s| s.port);
        format!(
            "postgresql://postgres@127.0.0.1:{},127.0.0.1:{standby}/{db}?target_session_attrs=read-write&connect_timeout=2",
            self.primary.port
        )
    }

    /// Kills the primary's postmaster with SIGKILL (its backends follow it), as a
    /// crashed machine would; returns once its port refuses connections.
    pub fn kill_primary(&self) -> Result<(), HarnessError> {
        let pid_file = std::fs::read_to_string(self.primary.data.join("postmaster.pid"))?;
        let pid = pid_file
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        self.run("kill -KILL", Command::new("kill").args(["-KILL", &pid]))?;
        let port = self.primary.port;
        // Its backends exit as soon as they notice it is gone: a client of one sees
        // its connection closed, as after a crash.
        self.wait_for("the killed primary's port to close", || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_err())
        })
    }

    /// Promotes the standby to primary; returns once it takes writes.
    pub fn promote_standby(&self) -> Result<(), HarnessError> {
        let standby = self.standby.as_ref().ok_or_else(|| HarnessError::Command {
            what: "promote".into(),
            detail: "this cluster has no standby".into(),
        })?;
        self.run(
            "pg_ctl promote",
            self.command("pg_ctl")
                .arg("-D")
                .arg(&standby.data)
                .args(["-w", "-t", "60", "promote"]),
        )?;
        self.wait_for("the promoted standby to take writes", || {
            Ok(self
                .psql(standby.port, "postgres", "SELECT pg_is_in_recovery()")?
                .trim()
                == "f")
        })
    }

    /// A process that stops the servers and deletes the temp dir once this process
    /// is gone: a cluster shared by a test binary is never dropped.
    fn spawn_watchdog(&self) -> Result<Child, HarnessError> {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; \
             for d in '{root}/primary' '{root}/standby'; do \
               [ -f \"$d/postmaster.pid\" ] && kill -QUIT \"$(head -1 \"$d/postmaster.pid\")\" 2>/dev/null; \
             done; sleep 1; rm -rf '{root}'",
            parent = std::process::id(),
            root = self.root.display()
        );
        Ok(Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    fn stop(&self, server: &Server) {
        if server.data.join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&server.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(s) = &self.standby {
            self.stop(s);
        }
        self.stop(&self.primary);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
