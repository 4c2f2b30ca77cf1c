//! Control changes between nodes: a change made on any node (an integration
//! created, changed or deleted, Sync now, a replay, its account's feature switch) is announced with NOTIFY in
//! the transaction that made it, so it reaches every listening node when, and only
//! if, it commits. The owning node acts on it within a second; a periodic re-read
//! stays the safety net, and every (re)connection of the listener says so, since
//! notifications sent while it was away are lost.

use super::error::PgError;
use super::PgStore;
use crate::model::AccountId;
use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

/// The channel control events travel on.
pub const CONTROL_CHANNEL: &str = "siemsync_control";

/// A control change of one integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEvent {
    /// The integration that changed.
    pub integration: Uuid,
    /// Its account.
    pub account: AccountId,
    /// The integration's shard: only the node holding it needs to act.
    pub shard: i32,
    #[serde(flatten)]
    /// What happened to it.
    pub action: ControlAction,
}

/// What happened to the integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// Created or changed: the stored integration is now at `version`.
    Changed {
        /// The version now stored.
        version: u64,
    },
    /// Deleted: its actor stops for good.
    Deleted,
    /// Deliver now instead of at the next tick.
    SyncNow,
    /// A replay was started or cancelled: read its record.
    Replay,
    /// Its account's SIEM feature switch (or limits) changed: read it again, to
    /// start or stop it.
    AccountChanged,
}

/// What a listener receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSignal {
    /// The listener is (again) listening: notifications sent before may have been
    /// missed, so re-read the integrations.
    Listening,
    /// A change of one integration.
    Event(ControlEvent),
}

/// Sends `event` when `tx` commits.
pub(super) async fn notify_in(tx: &Transaction<'_>, event: &ControlEvent) -> Result<(), PgError> {
    let payload = serde_json::to_string(event).expect("serialising a control event");
    tx.execute("SELECT pg_notify($1, $2)", &[&CONTROL_CHANNEL, &payload])
        .await?;
    Ok(())
}

/// Receives control events; stops listening when dropped.
pub struct ControlListener {
    rx: mpsc::UnboundedReceiver<ControlSignal>,
    task: tokio::task::JoinHandle<()>,
}

impl ControlListener {
    /// The next signal; `None` only once the store is gone.
    pub async fn recv(&mut self) -> Option<ControlSignal> {
        self.rx.recv().await
    }

    /// After `recv` answered `None`: whether the store is gone (its runtime
    /// ended the listening task, at shutdown) rather than the task having failed.
    pub async fn store_gone(&mut self) -> bool {
        match (&mut self.task).await {
            Err(e) => e.is_cancelled(),
            Ok(()) => false,
        }
    }

    /// A signal already queued, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<ControlSignal> {
        self.rx.try_recv().ok()
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on one connection until it fails; forwards what arrives.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &super::tls::Tls,
    out: &mpsc::UnboundedSender<ControlSignal>,
    listened: &mut bool,
) -> Result<(), PgError> {
    let (client, mut connection) = super::connect::connect(config, tls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The connection delivers notifications only while it is polled for them.
    let driver = tokio::spawn(async move {
        loop {
            match futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(Ok(n)).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return;
                }
                None => return,
            }
        }
    });
    let result = async {
        // The session only waits for notifications: a server-wide
        // idle_session_timeout (PostgreSQL 14+) must not end it. Older servers do
        // not know the setting, and end no idle session either.
        if let Err(e) = client.batch_execute("SET idle_session_timeout = 0").await {
            log::debug!("postgres: control listener: idle_session_timeout not set ({e})");
        }
        client
            .batch_execute(&format!("LISTEN {CONTROL_CHANNEL}"))
            .await?;
        *listened = true;
        if out.send(ControlSignal::Listening).is_err() {
            return Ok(());
        }
        while let Some(message) = rx.recv().await {
            let n = message?;
            match serde_json::from_str::<ControlEvent>(n.payload()) {
                Ok(event) => {
                    if out.send(ControlSignal::Event(event)).is_err() {
                        return Ok(());
                    }
                }
                // A newer node's action this build does not know: the periodic
                // re-read covers it.
                Err(e) => log::warn!(
                    "postgres: ignoring a control notification ({e}): {}",
                    n.payload()
                ),
            }
        }
        Err(PgError::Unavailable(
            "the control listener's connection closed".into(),
        ))
    }
    .await;
    driver.abort();
    drop(client);
    result
}

impl PgStore {
    /// Announces a control event to every node (for actions that store nothing,
    /// such as Sync now; stored changes announce themselves).
    pub async fn notify(&self, event: &ControlEvent) -> Result<(), PgError> {
        let payload = serde_json::to_string(event).expect("serialising a control event");
        self.run(move |s| async move {
            s.pool
                .get()
                .await?
                .execute("SELECT pg_notify($1, $2)", &[&CONTROL_CHANNEL, &payload])
                .await?;
            Ok(())
        })
        .await
    }

    /// The node holding a live lease on `shard` now, if any: the one a Sync now
    /// asked elsewhere is announced to.
    pub async fn shard_holder(&self, shard: i32) -> Result<Option<String>, PgError> {
        self.run(move |s| async move {
            let row = s
                .pool
                .get()
                .await?
                .query_opt(
                    "SELECT owner FROM shard_leases
                     WHERE shard = $1 AND owner IS NOT NULL AND expires_at > clock_timestamp()",
                    &[&shard],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    /// Starts listening for control events on a connection of its own, which is
    /// made again (finding the writable server) whenever it fails.
    pub fn listen(&self) -> ControlListener {
        let (out, rx) = mpsc::unbounded_channel();
        let config = self.shared.config.clone();
        let tls = self.shared.tls.clone();
        let task = self.handle().spawn(async move {
            const FIRST_PAUSE: Duration = Duration::from_millis(100);
            let mut pause = FIRST_PAUSE;
            // Failures in a row are warned of once a minute, not at every attempt.
            let mut warned: Option<tokio::time::Instant> = None;
            let mut failures = 0u32;
            loop {
                let mut listened = false;
                let result = listen_once(&config, &tls, &out, &mut listened).await;
                if listened {
                    // It listened before this failure: a fresh start of the back-off.
                    pause = FIRST_PAUSE;
                    failures = 0;
                    warned = None;
                }
                match result {
                    Ok(()) => return,
                    Err(e) => {
                        failures += 1;
                        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            log::warn!("postgres: control listener: {e}; listening again ({failures} failures in a row)");
                            warned = Some(tokio::time::Instant::now());
                        }
                    }
                }
                if out.is_closed() {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
        ControlListener { rx, task }
    }
}
