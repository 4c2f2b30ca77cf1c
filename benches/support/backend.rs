//! The store the end-to-end benchmarks run on, from `SIEMSYNC_BENCH_STORE`: `sled`
//! (the default: the embedded store in a temp dir) or `postgres` (a throwaway
//! PostgreSQL 15 of the test kit on loopback, `fsync`, `full_page_writes` and
//! `synchronous_commit` on, as production pays). The release binary runs on it as
//! one or several nodes (`SIEMSYNC_STORE=postgres`), and the benchmark prepares its
//! data through the same `Store` the service uses.

use super::{Http, Service, ADMIN};
use siemsync::store::postgres::PgOptions;
use siemsync::store::Store;
use siemsync::testkit::postgres::{ClusterOptions, PgCluster};
use std::time::{Duration, Instant};

/// A throwaway PostgreSQL and the database the nodes share.
struct Pg {
    cluster: PgCluster,
    db: String,
    postmaster: u32,
}

/// Where the benchmark's service keeps its data.
pub struct Backend {
    dir: tempfile::TempDir,
    pg: Option<Pg>,
    /// The database's shard count, read while preparing (0 on sled).
    shards: std::cell::Cell<u64>,
}

impl Backend {
    /// The store `SIEMSYNC_BENCH_STORE` names; `None` (after saying why) when it is
    /// PostgreSQL and its binaries are not installed.
    pub fn from_env() -> Option<Backend> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = std::env::var("SIEMSYNC_BENCH_STORE").unwrap_or_else(|_| "sled".into());
        let pg = match store.as_str() {
            "sled" => None,
            "postgres" => {
                let cluster = PgCluster::start_or_skip(ClusterOptions {
                    durable: true,
                    ..Default::default()
                })?;
                let db = cluster.create_database().expect("database");
                let postmaster = cluster.primary_pid().expect("postmaster pid");
                Some(Pg {
                    cluster,
                    db,
                    postmaster,
                })
            }
            other => panic!("SIEMSYNC_BENCH_STORE: {other:?} is neither sled nor postgres"),
        };
        Some(Backend {
            dir,
            pg,
            shards: Default::default(),
        })
    }

    pub fn name(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "sled"
        }
    }

    /// The store, opened as a tool would, to prepare the benchmark's data. On
    /// PostgreSQL this registers a node of its own: hand its shards back with
    /// [`Backend::done_preparing`] before the service's nodes start.
    pub fn open(&self) -> Store {
        match &self.pg {
            None => Store::open(self.dir.path()).expect("store"),
            Some(pg) => {
                Store::connect_postgres(PgOptions::new(pg.cluster.url(&pg.db), "bench-prepare"))
                    .expect("connecting to PostgreSQL")
            }
        }
    }

    /// Makes the prepared data durable and lets go of the store.
    pub fn done_preparing(&self, store: Store) {
        store.flush_now().expect("flush");
        if let Some(pg) = store.postgres() {
            self.shards.set(u64::try_from(pg.shards()).expect("shards"));
        }
        // The nodes claim the shards at once instead of after the lease.
        store.leave().expect("leave");
        drop(store);
        if self.pg.is_none() {
            // sled's flush thread lets go of the database a moment after the last handle.
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Starts `n` nodes of the release binary on this store, all at once (as a
    /// deployment restarts), each named `bench-{i}`; on PostgreSQL waits until the
    /// shards are spread evenly over them. sled has one node only.
    pub fn spawn_nodes(&self, n: usize, env: &[(&str, &str)]) -> Vec<Service> {
        assert!(
            n == 1 || self.pg.is_some(),
            "several nodes need SIEMSYNC_BENCH_STORE=postgres"
        );
        let nodes: Vec<Service> = std::thread::scope(|s| {
            let started: Vec<_> = (0..n)
                .map(|i| {
                    let name = format!("bench-{i}");
                    let mut all: Vec<(&str, String)> =
                        env.iter().map(|(k, v)| (*k, v.to_string())).collect();
                    let dir = match &self.pg {
                        None => self.dir.path().to_owned(),
                        Some(pg) => {
                            all.push(("SIEMSYNC_STORE", "postgres".into()));
                            all.push(("SIEMSYNC_POSTGRES_URL", pg.cluster.url(&pg.db)));
                            all.push(("SIEMSYNC_NODE_NAME", name.clone()));
                            let dir = self.dir.path().join(&name);
                            std::fs::create_dir_all(&dir).expect("node dir");
                            dir
                        }
                    };
                    s.spawn(move || {
                        let all: Vec<(&str, &str)> =
                            all.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        Service::spawn(&dir, &all)
                    })
                })
                .collect();
            started
                .into_iter()
                .map(|t| t.join().expect("node start"))
                .collect()
        });
        if self.pg.is_some() {
            assert!(self.shards.get() > 0, "open() and done_preparing() first");
            wait_balanced(&nodes, self.shards.get(), Duration::from_secs(120));
        }
        nodes
    }

    /// CPU seconds of PostgreSQL's processes (0 on sled).
    pub fn postgres_cpu(&self) -> f64 {
        self.pg
            .as_ref()
            .map_or(0.0, |pg| super::postgres_cpu(pg.postmaster))
    }

    /// The database's committed and rolled-back transactions so far
    /// (`pg_stat_database`); `None` on sled. PostgreSQL publishes these counters
    /// about once a second, so a delta over a minute is exact to about a second.
    pub fn transactions(&self) -> Option<(u64, u64)> {
        let pg = self.pg.as_ref()?;
        let out = pg
            .cluster
            .psql(
                pg.cluster.primary_port(),
                "postgres",
                &format!(
                    "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = '{}'",
                    pg.db
                ),
            )
            .expect("pg_stat_database");
        let (commit, rollback) = out.trim().split_once('|').expect("two columns");
        Some((
            commit.parse().expect("xact_commit"),
            rollback.parse().expect("xact_rollback"),
        ))
    }
}

/// Waits until every node is live in the nodes view and the shards are spread
/// evenly (at most one apart), so a figure is not the hand-over's.
fn wait_balanced(nodes: &[Service], total: u64, limit: Duration) {
    let t0 = Instant::now();
    let mut http = Http::connect(nodes[0].authority());
    loop {
        let (status, body) = http.request("GET", "/api/v1/nodes", ADMIN, b"");
        let view: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let shards: Vec<u64> = view
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["shards"].as_u64()).collect())
            .unwrap_or_default();
        let (min, max) = (
            shards.iter().min().copied().unwrap_or(0),
            shards.iter().max().copied().unwrap_or(0),
        );
        if status == 200
            && shards.len() == nodes.len()
            && shards.iter().sum::<u64>() == total
            && max - min <= 1
        {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "the shards were not spread over {} nodes within {limit:?}: {status} {}",
            nodes.len(),
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each node's CPU seconds so far.
pub fn nodes_cpu(nodes: &[Service]) -> Vec<f64> {
    nodes
        .iter()
        .map(|s| super::cpu_secs(&s.pid().to_string()))
        .collect()
}

/// CPU seconds per million events since a starting point, the nodes' and
/// PostgreSQL's.
pub struct CpuMeter {
    nodes: Vec<f64>,
    postgres: f64,
}

/// What a [`CpuMeter`] read: CPU seconds per million events.
pub struct PerMillion {
    /// All the nodes together.
    pub siemsync: f64,
    /// Each node's, as "a / b / c".
    pub per_node: String,
    pub postgres: f64,
}

impl CpuMeter {
    pub fn start(backend: &Backend, nodes: &[Service]) -> CpuMeter {
        CpuMeter {
            nodes: nodes_cpu(nodes),
            postgres: backend.postgres_cpu(),
        }
    }

    pub fn per_million(&self, backend: &Backend, nodes: &[Service], events: usize) -> PerMillion {
        let millions = events as f64 / 1e6;
        let per_node: Vec<f64> = nodes_cpu(nodes)
            .iter()
            .zip(&self.nodes)
            .map(|(b, a)| (b - a) / millions)
            .collect();
        PerMillion {
            siemsync: per_node.iter().sum(),
            per_node: per_node
                .iter()
                .map(|c| format!("{c:.2}"))
                .collect::<Vec<_>>()
                .join(" / "),
            postgres: (backend.postgres_cpu() - self.postgres) / millions,
        }
    }
}

impl std::fmt::Display for PerMillion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "siemsync {:.2} (per node {}), postgres {:.2}",
            self.siemsync, self.per_node, self.postgres
        )
    }
}
