//! Connecting to a multi-host URL so that a first host that accepts connections
//! and then never answers (a hung server process, a proxy in front of a dead one)
//! does not keep the next from being tried. tokio-postgres tries the hosts one
//! after the other and times only each TCP handshake (`connect_timeout`): such a
//! host held every attempt for as long as the operation or the lease round around
//! it allowed, and a promoted standby listed after it was never reached. Here the
//! hosts are tried in order as before, but a host that has not finished its
//! connection (TLS, startup, authentication, the read-write check) within the
//! connect timeout no longer holds up the next: the next is tried beside it, and
//! the first to connect is used. A slow host that does answer is not given up
//! (a loaded server may take seconds to start a session; the caller's own time
//! limit bounds the whole), so only a host that fails moves the choice on.

use super::tls::{Tls, TlsStream};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Config, Host};
use tokio_postgres::{Client, Connection, Socket};

/// A connection with its driver, as `Config::connect` answers it.
pub(super) type Connected = (Client, Connection<Socket, TlsStream<Socket>>);

/// Connects to the first host of `config` to take a connection (in order, the
/// next one also tried once the ones before failed or have taken the connect
/// timeout without finishing); the last error when every host failed.
pub(super) async fn connect(
    config: &Config,
    tls: &Tls,
) -> Result<Connected, tokio_postgres::Error> {
    let mut hosts = one_per_host(config).into_iter();
    let Some(first) = hosts.next() else {
        return config.connect(tls.clone()).await;
    };
    let patience = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(std::time::Duration::from_secs(5));
    let attempt = |one: Config| {
        let tls = tls.clone();
        async move { one.connect(tls).await }
    };
    let mut attempts = FuturesUnordered::new();
    attempts.push(attempt(first));
    loop {
        let more = hosts.len() > 0;
        tokio::select! {
            Some(answer) = attempts.next() => match answer {
                Ok(connected) => return Ok(connected),
                // The last host's failure is the answer once none is left to try.
                Err(e) => {
                    if attempts.is_empty() {
                        match hosts.next() {
                            Some(next) => attempts.push(attempt(next)),
                            None => return Err(e),
                        }
                    }
                }
            },
            () = tokio::time::sleep(patience), if more => {
                if let Some(next) = hosts.next() {
                    attempts.push(attempt(next));
                }
            }
        }
    }
}

/// The pools' way of connecting: [`connect`], its connection driven by a task.
pub(super) struct HostByHost(pub Tls);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl deadpool_postgres::Connect for HostByHost {
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let (config, tls) = (config.clone(), self.0.clone());
        Box::pin(async move {
            let (client, connection) = connect(&config, &tls).await?;
            let driver = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    log::debug!("postgres: a pooled connection ended: {e}");
                }
            });
            Ok((client, driver))
        })
    }
}

/// `config` as one config per host, in order (`config` itself when it names at
/// most one). A port given once applies to every host, as in libpq.
fn one_per_host(config: &Config) -> Vec<Config> {
    let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
    if hosts <= 1 {
        return vec![config.clone()];
    }
    (0..hosts).map(|i| with_host(config, i)).collect()
}

/// `config` with only its `i`th host (and host address and port): every other
/// setting copied.
fn with_host(config: &Config, i: usize) -> Config {
    let mut c = Config::new();
    if let Some(user) = config.get_user() {
        c.user(user);
    }
    if let Some(password) = config.get_password() {
        c.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        c.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        c.options(options);
    }
    if let Some(name) = config.get_application_name() {
        c.application_name(name);
    }
    c.ssl_mode(config.get_ssl_mode());
    c.ssl_negotiation(config.get_ssl_negotiation());
    match config.get_hosts().get(i) {
        Some(Host::Tcp(host)) => {
            c.host(host);
        }
        #[cfg(unix)]
        Some(Host::Unix(path)) => {
            c.host_path(path);
        }
        None => {}
    }
    if let Some(addr) = config.get_hostaddrs().get(i) {
        c.hostaddr(*addr);
    }
    let ports = config.get_ports();
    let port = match ports.len() {
        1 => ports.first(),
        _ => ports.get(i),
    };
    if let Some(port) = port {
        c.port(*port);
    }
    if let Some(t) = config.get_connect_timeout() {
        c.connect_timeout(*t);
    }
    if let Some(t) = config.get_tcp_user_timeout() {
        c.tcp_user_timeout(*t);
    }
    c.keepalives(config.get_keepalives());
    c.keepalives_idle(config.get_keepalives_idle());
    if let Some(t) = config.get_keepalives_interval() {
        c.keepalives_interval(t);
    }
    if let Some(n) = config.get_keepalives_retries() {
        c.keepalives_retries(n);
    }
    c.target_session_attrs(config.get_target_session_attrs());
    c.channel_binding(config.get_channel_binding());
    c.load_balance_hosts(config.get_load_balance_hosts());
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parsed(url: &str) -> Config {
        let mut c: Config = url.parse().unwrap();
        c.keepalives_idle(Duration::from_secs(10));
        c.tcp_user_timeout(Duration::from_secs(10));
        c.keepalives_interval(Duration::from_secs(3));
        c.keepalives_retries(4);
        c
    }

    #[test]
    fn a_host_alone_keeps_every_setting_of_the_url() {
        // Everything a URL or the store sets, on a one-host config: `with_host`
        // must make it again exactly (Debug prints every field, the password
        // redacted, so a setting it forgets shows here).
        let c = parsed(
            "postgresql://siemsync:secret@db2:5433/events?connect_timeout=7&sslmode=require&target_session_attrs=read-write&application_name=n1&options=-c%20x%3D1&channel_binding=disable&keepalives=1",
        );
        assert_eq!(format!("{:?}", with_host(&c, 0)), format!("{c:?}"));
        assert_eq!(with_host(&c, 0).get_password(), Some(&b"secret"[..]));
    }

    #[test]
    fn each_host_of_a_multi_host_url_gets_its_own_port_or_the_one_port_given() {
        let c =
            parsed("postgresql://u@db1:5433,db2:5434,db3:5435/d?target_session_attrs=read-write");
        let each: Vec<_> = one_per_host(&c)
            .iter()
            .map(|one| (one.get_hosts().to_vec(), one.get_ports().to_vec()))
            .collect();
        assert_eq!(
            each,
            vec![
                (vec![Host::Tcp("db1".into())], vec![5433]),
                (vec![Host::Tcp("db2".into())], vec![5434]),
                (vec![Host::Tcp("db3".into())], vec![5435]),
            ]
        );
        let c = parsed("host=db1,db2 port=6000 user=u dbname=d");
        assert_eq!(one_per_host(&c).len(), 2);
        assert!(one_per_host(&c).iter().all(|one| one.get_ports() == [6000]));
        let c = parsed("host=db1,db2 user=u dbname=d");
        assert!(one_per_host(&c)
            .iter()
            .all(|one| one.get_ports().is_empty()));
        assert_eq!(one_per_host(&parsed("postgresql://u@db1/d")).len(), 1);
    }
}
