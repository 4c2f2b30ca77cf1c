//! Control on any node (PostgreSQL): a change made through another node reaches
//! the node that runs the integration within a second, by LISTEN/NOTIFY, well
//! before the periodic re-read (set to an hour here). Until several full nodes
//! share the shards, "another node" is a `PgStore` in the test process under
//! another node name, writing through the same store calls a node's HTTP handlers
//! make (which send the NOTIFY in their transaction).

use crate::common::*;
use siemsync::actors::messages::Window;
use siemsync::actors::observation::{Observation, Published, State};
use siemsync::actors::replay::{ReplayState, StoredReplay};
use siemsync::actors::replays::{cancel_elsewhere, request_elsewhere, ReplayRefused, RequestError};
use siemsync::http::status::published_elsewhere;
use siemsync::model::{AccountId, HecUri, Integration, Source};
use siemsync::store::postgres::{
    ControlAction, ControlEvent, Expected, PgOptions, PgStore, CONTROL_CHANNEL,
};
use siemsync::store::Account;
use siemsync::testkit::{Behaviour, HecServer};
use std::time::{Duration, Instant};
use uuid::Uuid;

const TOKEN: &str = "dddddddd-0000-0000-0000-00000000000d";
const OTHER_TOKEN: &str = "eeeeeeee-0000-0000-0000-00000000000e";
/// How soon a change made elsewhere must show: a second for the NOTIFY, plus the
/// restarted actor's first post, on a 2-core machine other builds share (the
/// tests print what they measured; far below the hour-long re-read either way).
const PROMPT: Duration = Duration::from_secs(15);
const T: Duration = Duration::from_secs(30);

/// A running node whose control re-read is an hour away, "another node" on its
/// database, and one integration of account `acme` posting to `hec`.
struct Setup {
    api: Api,
    other: PgStore,
    /// The database's URL, for more "other nodes".
    url: String,
    hec: HecServer,
    account: AccountId,
    id: Uuid,
    // Stopped before its data directory goes (fields drop in this order).
    _svc: Siemsync,
    _dir: tempfile::TempDir,
}

async fn setup(sync_interval: &str) -> Option<Setup> {
    setup_with(sync_interval, "3600").await
}

/// `setup` with the control re-read every `reread` seconds.
async fn setup_with(sync_interval: &str, reread: &str) -> Option<Setup> {
    let pg_env = siemsync::testkit::service::Backend::Postgres.env()?;
    let url = pg_env
        .iter()
        .find(|(k, _)| k == "SIEMSYNC_POSTGRES_URL")
        .map(|(_, v)| v.clone())
        .expect("the PostgreSQL backend's URL");
    let mut env: Vec<(&str, &str)> = pg_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("SIEMSYNC_SYNC_INTERVAL_SECS", sync_interval));
    env.push(("SIEMSYNC_TIMING_RETRY_BACKOFF_BASE_SECS", "0.1"));
    env.push(("SIEMSYNC_TIMING_CONTROL_REREAD_SECS", reread));
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOKEN);
    api.enable_account("acme").await;
    // Ingested first: the new actor's first sync, at its start, delivers them also
    // when the next scheduled sync is an hour away.
    api.post_audit("acme", &audit_events("e", 0, 5)).await;
    let id = api.add_integration("acme", TOKEN, &hec.base_url()).await;
    eventually(T, "the first 5 delivered", || {
        audit_ids(&hec.events()).len() >= 5
    })
    .await;
    let other = PgStore::connect(PgOptions::new(url.as_str(), "other-node"))
        .await
        .unwrap();
    Some(Setup {
        api,
        other,
        url,
        hec,
        account: AccountId::parse("acme").unwrap(),
        id: id.parse().unwrap(),
        _svc: svc,
        _dir: dir,
    })
}

impl Setup {
    /// Events e-5..e-9 ingested while the receiver refuses: retried without end
    /// while the actor runs.
    async fn refused_and_retried(&self) {
        self.busy();
        self.api.post_audit("acme", &audit_events("e", 5, 5)).await;
        let retried = self.hec.posts_arrived();
        eventually(T, "the refused post retried", || {
            self.hec.posts_arrived() >= retried + 2
        })
        .await;
    }

    /// Splunk refuses every post from now on (503, code 9, busy): what is sent is
    /// retried, and a replay stays running.
    fn busy(&self) {
        self.hec.set_behaviour(Behaviour::busy());
    }

    async fn stored(&self) -> (Integration, u64) {
        let v = self
            .other
            .integration(&self.account, &self.id)
            .await
            .unwrap()
            .expect("the integration is stored");
        (v.value, v.version)
    }
}

/// Polls until `count()` has not changed for `quiet`, or panics after `limit`.
async fn settles(limit: Duration, quiet: Duration, what: &str, count: impl Fn() -> usize) {
    let start = Instant::now();
    let mut last = count();
    let mut since = Instant::now();
    loop {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return;
        }
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
    }
}

#[actix_rt::test]
async fn a_hec_change_made_on_another_node_moves_the_posts_within_a_second() {
    let Some(s) = setup("0.25").await else {
        return;
    };
    // The old receiver refuses from now on: what is ingested waits for the new one.
    s.busy();
    s.api.post_audit("acme", &audit_events("e", 5, 5)).await;
    let new_hec = HecServer::start(OTHER_TOKEN);
    let (mut it, version) = s.stored().await;
    it.hec_uri = HecUri::parse(&new_hec.base_url()).unwrap();
    it.hec_token = OTHER_TOKEN.into();
    let changed = Instant::now();
    s.other
        .put_integration(&it, Expected::Version(version))
        .await
        .unwrap();
    eventually(
        PROMPT,
        "the waiting events posted to the new receiver",
        || audit_ids(&new_hec.events()).len() >= 5,
    )
    .await;
    eprintln!(
        "changed on another node: posting to the new receiver after {:?}",
        changed.elapsed()
    );
    let want: Vec<String> = (5..10).map(|i| format!("e-{i}")).collect();
    assert_eq!(first_arrivals(audit_ids(&new_hec.events())), want);
}

#[actix_rt::test]
async fn an_integration_deleted_on_another_node_stops_posting() {
    let Some(s) = setup("0.25").await else {
        return;
    };
    s.refused_and_retried().await;
    assert!(s.other.delete_integration(&s.account, &s.id).await.unwrap());
    settles(
        PROMPT,
        Duration::from_secs(1),
        "no more posts after the deletion",
        || s.hec.posts_arrived(),
    )
    .await;
}

#[actix_rt::test]
async fn an_integration_created_on_another_node_starts_delivering() {
    let Some(s) = setup("0.25").await else {
        return;
    };
    let new_hec = HecServer::start(OTHER_TOKEN);
    let (template, _) = s.stored().await;
    let it = Integration {
        id: Uuid::new_v4(),
        name: "made elsewhere".into(),
        hec_uri: HecUri::parse(&new_hec.base_url()).unwrap(),
        hec_token: OTHER_TOKEN.into(),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        version: 0,
        ..template
    };
    s.other.put_integration(&it, Expected::New).await.unwrap();
    // The new integration starts from the account's first retained event.
    eventually(PROMPT, "the new integration delivering", || {
        audit_ids(&new_hec.events()).len() >= 5
    })
    .await;
}

#[actix_rt::test]
async fn sync_now_asked_on_another_node_syncs_at_once() {
    // The next scheduled sync is an hour away: only Sync now delivers.
    let Some(s) = setup("3600").await else {
        return;
    };
    // The first sync is over before more events come, and they wait.
    settles(T, Duration::from_secs(1), "the first sync to end", || {
        s.hec.posts_arrived()
    })
    .await;
    s.api.post_audit("acme", &audit_events("e", 5, 5)).await;
    settles(
        T,
        Duration::from_secs(1),
        "nothing posted before Sync now",
        || s.hec.posts_arrived(),
    )
    .await;
    let early: Vec<String> = audit_ids(&s.hec.events())
        .into_iter()
        .filter(|id| (5..10).any(|i| *id == format!("e-{i}")))
        .collect();
    assert!(early.is_empty(), "posted before Sync now: {early:?}");
    let asked = Instant::now();
    s.other
        .notify(&ControlEvent {
            integration: s.id,
            account: s.account.clone(),
            shard: s.other.shard_of(&s.id),
            action: ControlAction::SyncNow,
        })
        .await
        .unwrap();
    eventually(PROMPT, "the new events delivered by Sync now", || {
        let ids = audit_ids(&s.hec.events());
        (5..10).all(|i| ids.contains(&format!("e-{i}")))
    })
    .await;
    eprintln!(
        "Sync now asked on another node: delivered after {:?}",
        asked.elapsed()
    );
}

/// The window `audit_events` puts its events in.
fn window() -> Window {
    Window {
        from: "2026-11-25T09:00:00Z".parse().unwrap(),
        to: "2026-11-25T11:00:00Z".parse().unwrap(),
    }
}

#[actix_rt::test]
async fn a_replay_asked_on_another_node_is_run_by_the_node_running_the_integration() {
    // The next scheduled sync is an hour away: only the replay posts.
    let Some(s) = setup("3600").await else {
        return;
    };
    let before = audit_ids(&s.hec.events()).len();
    let asked = request_elsewhere(&s.other, &s.account, &s.id, window(), vec![Source::Audit])
        .await
        .unwrap();
    assert_eq!(asked.state, ReplayState::Running);
    assert_eq!(asked.sent, 0);
    // A second request while the first has not ended is refused, on any node.
    let again = request_elsewhere(&s.other, &s.account, &s.id, window(), vec![Source::Audit]).await;
    assert!(
        matches!(again, Err(RequestError::Refused(ReplayRefused::Running))),
        "{again:?}"
    );
    eventually(PROMPT, "the window re-sent by the running node", || {
        audit_ids(&s.hec.events()).len() >= before + 5
    })
    .await;
    let st = status_until(&s.api, "acme", &s.id.to_string(), "the replay done", |st| {
        st["replay"]["state"] == "done"
    })
    .await;
    assert_eq!(st["replay"]["id"], asked.id.to_string(), "{st:#}");
    assert_eq!(st["replay"]["sent"], 5, "{st:#}");
}

#[actix_rt::test]
async fn a_replay_cancelled_on_another_node_stops_on_the_node_running_it() {
    let Some(s) = setup("0.25").await else {
        return;
    };
    // Splunk refuses from now on: the replay retries and stays running.
    s.busy();
    let path = format!("/api/v1/accounts/acme/integrations/{}/replay", s.id);
    let body = serde_json::json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"});
    let (code, v) = s.api.admin("POST", &path, Some(body)).await;
    assert_eq!(code, 202, "{v}");
    let retried = s.hec.posts_arrived();
    eventually(T, "the replay's post retried", || {
        s.hec.posts_arrived() >= retried + 2
    })
    .await;
    let cancelled = cancel_elsewhere(&s.other, &s.account, &s.id)
        .await
        .unwrap()
        .expect("a running replay to cancel");
    assert_eq!(cancelled.state, ReplayState::Cancelled);
    assert_eq!(cancelled.id.to_string(), v["id"].as_str().unwrap());
    // The running node stopped its replay actor: its status answers from the record.
    let started = Instant::now();
    status_until(
        &s.api,
        "acme",
        &s.id.to_string(),
        "the replay cancelled",
        |st| st["replay"]["state"] == "cancelled",
    )
    .await;
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    // Splunk takes posts again: live delivery posts what it has (the "replay
    // requested" event), but the window is not re-sent, and the replay stays cancelled.
    let replayed = || {
        audit_ids(&s.hec.events())
            .iter()
            .filter(|id| id.starts_with("e-"))
            .count()
    };
    let before = replayed();
    s.hec.set_behaviour(Behaviour::Normal);
    settles(
        PROMPT,
        Duration::from_secs(1),
        "no more posts after the cancel",
        || s.hec.posts_arrived(),
    )
    .await;
    assert_eq!(replayed(), before, "the cancelled window was re-sent");
    let stored: StoredReplay = s.other.replay(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.progress.state, ReplayState::Cancelled);
}

/// A connection of its own to the test database; its driver runs until the client drops.
async fn connection(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_rt::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Starts a replay of `window()` through the node's API; answers its status and body.
async fn start_replay(s: &Setup) -> (u16, serde_json::Value) {
    let path = format!("/api/v1/accounts/acme/integrations/{}/replay", s.id);
    let body = serde_json::json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"});
    s.api.admin("POST", &path, Some(body)).await
}

#[actix_rt::test]
async fn a_running_replay_whose_record_cannot_be_read_for_a_moment_runs_on() {
    let Some(s) = setup("3600").await else {
        return;
    };
    // Splunk refuses from now on: the replay retries and stays running.
    s.busy();
    let (code, v) = start_replay(&s).await;
    assert_eq!(code, 202, "{v}");
    let retried = s.hec.posts_arrived();
    eventually(T, "the replay's post retried", || {
        s.hec.posts_arrived() >= retried + 2
    })
    .await;
    // The replay records are locked; the node hears that the replay changed (a
    // NOTIFY as another node sends), and its read of the record waits on the lock
    // until it is cancelled: a transient read error, not "no record".
    let locker = connection(&s.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE replays IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let admin = connection(&s.url).await;
    let event = ControlEvent {
        integration: s.id,
        account: s.account.clone(),
        shard: s.other.shard_of(&s.id),
        action: ControlAction::Replay,
    };
    admin
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&CONTROL_CHANNEL, &serde_json::to_string(&event).unwrap()],
        )
        .await
        .unwrap();
    let waiting = "SELECT pid FROM pg_locks WHERE relation = 'replays'::regclass AND NOT granted";
    // Every read of the records fails while the lock is held (each waits and is
    // cancelled), this node's reading of the changed record first.
    let cancel_waiting = || async {
        let pids: Vec<i32> = admin
            .query(waiting, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for pid in &pids {
            admin
                .execute("SELECT pg_cancel_backend($1)", &[pid])
                .await
                .unwrap();
        }
        !pids.is_empty()
    };
    let started = Instant::now();
    while !cancel_waiting().await {
        assert!(
            started.elapsed() < PROMPT,
            "the node never read the replay record"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Still under the lock, the node answers that the replay runs (the Supervisor
    // asks its replay actor, which it answers after the record's change).
    let id = s.id.to_string();
    let status = s.api.status("acme", &id);
    tokio::pin!(status);
    let st = loop {
        tokio::select! {
            st = &mut status => break st,
            _ = actix_rt::time::sleep(Duration::from_millis(20)) => {
                cancel_waiting().await;
            }
        }
    };
    assert_eq!(st["replay"]["id"], v["id"], "{st:#}");
    assert_eq!(st["replay"]["state"], "running", "{st:#}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    // Splunk takes posts again: the replay, still running, re-sends the window.
    s.hec.set_behaviour(Behaviour::Normal);
    let st = status_until(&s.api, "acme", &s.id.to_string(), "the replay done", |st| {
        st["replay"]["state"] == "done"
    })
    .await;
    assert_eq!(st["replay"]["id"], v["id"], "{st:#}");
    assert_eq!(st["replay"]["sent"], 5, "{st:#}");
}

#[actix_rt::test]
async fn a_replay_whose_record_the_store_refuses_is_not_answered_as_started() {
    let Some(s) = setup("3600").await else {
        return;
    };
    // PostgreSQL refuses every write of a replay record from now on.
    sql(
        &s.url,
        "CREATE FUNCTION refuse_replays() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'replay records are refused in this test'; END $$;
         CREATE TRIGGER refuse_replays BEFORE INSERT OR UPDATE ON replays
           FOR EACH ROW EXECUTE FUNCTION refuse_replays();",
    )
    .await;
    let (code, v) = start_replay(&s).await;
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("refused in this test"),
        "{v}"
    );
    // No replay runs: none was recorded.
    let st = s.api.status("acme", &s.id.to_string()).await;
    assert!(st["replay"].is_null(), "{st:#}");
    assert_eq!(
        s.other
            .replay::<StoredReplay>(&s.id)
            .await
            .unwrap()
            .map(|r| r.progress.id),
        None
    );
}

#[actix_rt::test]
async fn a_replay_asked_for_elsewhere_and_not_picked_up_yet_is_cancelled_where_its_integration_runs(
) {
    let Some(s) = setup("3600").await else {
        return;
    };
    // A replay ran here and ended: its actor stays to say how.
    let (code, v) = start_replay(&s).await;
    assert_eq!(code, 202, "{v}");
    status_until(&s.api, "acme", &s.id.to_string(), "the replay done", |st| {
        st["replay"]["state"] == "done"
    })
    .await;
    // Another node asks for a replay, and its NOTIFY is lost (the record is
    // written directly): this node has not picked it up.
    let pending = StoredReplay::new(window(), vec![Source::Audit]);
    let doc = serde_json::to_string(&pending).unwrap().replace('\'', "''");
    sql(
        &s.url,
        &format!(
            "UPDATE replays SET doc = '{doc}' WHERE integration = '{}'",
            s.id
        ),
    )
    .await;
    let path = format!("/api/v1/accounts/acme/integrations/{}/replay", s.id);
    let (code, v) = s.api.admin("DELETE", &path, None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["id"], pending.progress.id.to_string(), "{v}");
    assert_eq!(v["state"], "cancelled", "{v}");
    let stored: StoredReplay = s.other.replay(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.progress.id, pending.progress.id);
    assert_eq!(stored.progress.state, ReplayState::Cancelled);
}

#[actix_rt::test]
async fn a_cancel_kept_waiting_by_a_locked_integration_answers_503_cancelling_nothing_and_then_cancels(
) {
    let Some(s) = setup("3600").await else {
        return;
    };
    // Splunk refuses from now on: should this node pick the replay up (it may,
    // once a cancel failed), it stays running.
    s.busy();
    // A replay asked for on another node and not picked up here (its NOTIFY lost):
    // the record says running, no actor here runs it.
    let pending = StoredReplay::new(window(), vec![Source::Audit]);
    let doc = serde_json::to_string(&pending).unwrap().replace('\'', "''");
    sql(
        &s.url,
        &format!(
            "INSERT INTO replays (integration, doc) VALUES ('{}', '{doc}')
             ON CONFLICT (integration) DO UPDATE SET doc = excluded.doc",
            s.id
        ),
    )
    .await;
    // A change elsewhere stalls holding the integration locked.
    let holder = connection(&s.url).await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM integrations WHERE id = '{}' FOR UPDATE",
            s.id
        ))
        .await
        .unwrap();
    let path = format!("/api/v1/accounts/acme/integrations/{}/replay", s.id);
    let asked = Instant::now();
    let (code, v) = s.api.admin("DELETE", &path, None).await;
    let waited = asked.elapsed();
    println!("the cancel answered {code} after {waited:?}");
    // Not 404 ("none running": the record says one runs), not a request that
    // hangs as long as the lock: 503, retry.
    assert_eq!(code, 503, "{v}");
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    let stored: StoredReplay = s.other.replay(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.progress.id, pending.progress.id);
    assert_eq!(
        stored.progress.state,
        ReplayState::Running,
        "cancelled anyway"
    );
    // The lock gone, the retry cancels it (in its record, or in the actor that
    // picked it up after the failed cancel).
    holder.batch_execute("ROLLBACK").await.unwrap();
    let (code, v) = s.api.admin("DELETE", &path, None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["id"], pending.progress.id.to_string(), "{v}");
    assert_eq!(v["state"], "cancelled", "{v}");
}

#[actix_rt::test]
async fn a_replays_total_is_recorded_once_counted_before_anything_is_posted() {
    let Some(s) = setup("3600").await else {
        return;
    };
    // Splunk refuses: nothing of the replay is ever posted.
    s.busy();
    let (code, v) = start_replay(&s).await;
    assert_eq!(code, 202, "{v}");
    // Every other node answers from the record: it shows the window's total.
    let started = Instant::now();
    loop {
        let stored: StoredReplay = s.other.replay(&s.id).await.unwrap().unwrap();
        if stored.progress.total == 5 {
            assert_eq!(stored.progress.sent, 0);
            assert_eq!(stored.progress.state, ReplayState::Running);
            break;
        }
        assert!(
            started.elapsed() < PROMPT,
            "the record's total is still {}",
            stored.progress.total
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `node` last published about integration `id`, if it did.
async fn published_by(store: &PgStore, id: &Uuid, node: &str) -> Option<Published> {
    let record = store.delivery_status(id).await.unwrap()?;
    (record.node == node).then(|| serde_json::from_value(record.status).unwrap())
}

#[actix_rt::test]
async fn the_node_running_an_integration_publishes_its_live_status_when_it_changes() {
    let Some(s) = setup("0.25").await else {
        return;
    };
    let st = s.api.status("acme", &s.id.to_string()).await;
    let node = st["node"]
        .as_str()
        .expect("the node running it")
        .to_string();
    let started = Instant::now();
    loop {
        let p = published_by(&s.other, &s.id, &node).await;
        if p.is_some_and(|p| p.observation.is_some_and(|o| o.state == State::Healthy)) {
            break;
        }
        assert!(started.elapsed() < PROMPT, "no healthy status published");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Splunk refuses from now on: the failure is published within a second or so.
    s.busy();
    s.api.post_audit("acme", &audit_events("e", 5, 5)).await;
    let started = Instant::now();
    loop {
        let p = published_by(&s.other, &s.id, &node).await;
        if let Some(o) = p.and_then(|p| p.observation) {
            if o.state == State::Failing {
                assert_eq!(
                    o.last_error.expect("the error published").http_status,
                    Some(503)
                );
                break;
            }
        }
        assert!(started.elapsed() < PROMPT, "the failure was not published");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn an_idle_integrations_status_is_published_again_every_reread_and_stays_an_answer() {
    // Re-read every second; the integration idles an hour after its first sync, so
    // its actor shows nothing new: its record is still renewed every re-read, or
    // another node would take it for one a stopped node left.
    let Some(s) = setup_with("3600", "1").await else {
        return;
    };
    // What the status route itself allows: two re-reads and a look.
    let fresh = Duration::from_secs(2) + siemsync::control::PUBLISH_EVERY;
    let started = Instant::now();
    while published_elsewhere(&s.other, &s.id, fresh)
        .await
        .unwrap()
        .is_none()
    {
        assert!(started.elapsed() < PROMPT, "no status published");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Five re-reads of idleness: every look finds a record the route still takes.
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(5) {
        let answered = published_elsewhere(&s.other, &s.id, fresh).await.unwrap();
        let (_, published) = answered.expect("the idle integration's record renewed");
        let observed = published.observation.expect("an observation");
        assert!(!observed.syncing, "idle: {observed:?}");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_rt::test]
async fn an_integration_another_node_runs_is_answered_from_what_that_node_published() {
    let Some(s) = setup("3600").await else {
        return;
    };
    // An integration this node does not run (disabled), published as if the node
    // holding its shard ran it: a store under that node's name (the running node
    // holds every shard here).
    let st = s.api.status("acme", &s.id.to_string()).await;
    let holder_name = st["node"]
        .as_str()
        .expect("the node running it")
        .to_string();
    let holder = PgStore::connect(PgOptions::new(s.url.as_str(), holder_name.as_str()))
        .await
        .unwrap();
    let (template, _) = s.stored().await;
    let it = Integration {
        id: Uuid::new_v4(),
        name: "run elsewhere".into(),
        enabled: false,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        version: 0,
        ..template
    };
    s.other.put_integration(&it, Expected::New).await.unwrap();
    let observation: Observation = serde_json::from_value(serde_json::json!({
        "state": "failing", "started_at": "2026-11-27T08:00:00Z", "config_version": 1,
        "last_attempt": "2026-11-27T08:00:01Z", "retries": 3, "syncing": false,
        "next_sync": "2026-11-27T08:00:05Z", "progress": null, "error_kind": "transient",
        "retry_after_secs": null, "slow_down": null, "sync_started_at": null, "last_sync": null,
        "last_error": {"http_status": 503, "code": 9, "text": "Server is busy",
                       "advice": "Splunk is busy"}
    }))
    .unwrap();
    let published = Published {
        observation: Some(observation),
        restarts: Default::default(),
    };
    let doc = serde_json::to_value(&published).unwrap();
    // A node that does not hold the shard publishes nothing.
    s.other
        .publish_statuses(vec![(it.id, doc.clone())])
        .await
        .unwrap();
    assert_eq!(s.other.delivery_status(&it.id).await.unwrap(), None);
    holder.publish_statuses(vec![(it.id, doc)]).await.unwrap();
    let third = PgStore::connect(PgOptions::new(s.url.as_str(), "third-node"))
        .await
        .unwrap();
    let fresh = Duration::from_secs(60);
    let answered = published_elsewhere(&third, &it.id, fresh).await.unwrap();
    assert_eq!(answered, Some((holder_name, published)));
    // The publishing node's own old record is not an answer: it runs it no more.
    assert_eq!(
        published_elsewhere(&holder, &it.id, fresh).await.unwrap(),
        None
    );
    // Nor is a record older than a live node leaves it (any age is, here).
    let stale = published_elsewhere(&third, &it.id, Duration::ZERO).await;
    assert_eq!(stale.unwrap(), None);
}

#[actix_rt::test]
async fn an_account_switched_off_and_on_on_another_node_stops_and_starts_its_integrations() {
    let Some(s) = setup("0.25").await else {
        return;
    };
    s.refused_and_retried().await;
    let switch = |on: bool| Account {
        siem_enabled: on,
        updated_at: chrono::Utc::now(),
        ingest_events_per_sec: None,
        ingest_burst: None,
        max_backlog_bytes: None,
    };
    s.other
        .put_account(&s.account, &switch(false))
        .await
        .unwrap();
    settles(
        PROMPT,
        Duration::from_secs(1),
        "no more posts after the account was switched off",
        || s.hec.posts_arrived(),
    )
    .await;
    s.hec.set_behaviour(Behaviour::Normal);
    s.other
        .put_account(&s.account, &switch(true))
        .await
        .unwrap();
    eventually(
        PROMPT,
        "the waiting events delivered once switched on",
        || audit_ids(&s.hec.events()).len() >= 10,
    )
    .await;
}

/// Runs `sql` on the test database directly: a change no node announces.
async fn sql(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = actix_rt::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// Moves integration `id` to `hec` in the database directly: a change no node
/// announces, which only a re-read finds.
fn moved_to(id: &Uuid, hec: &HecServer) -> String {
    format!(
        "UPDATE integrations SET doc = jsonb_set(doc, '{{hec_uri}}', to_jsonb('{}'::text)),
                version = version + 1
         WHERE id = '{id}'",
        hec.base_url()
    )
}

/// The backend pids of the node's control listener sessions.
async fn listener_pids(url: &str) -> Vec<i32> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = actix_rt::spawn(connection);
    let pids = client
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'siemsync node-%'
               AND query = 'LISTEN siemsync_control'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let _ = driver.await;
    pids
}

#[actix_rt::test]
async fn a_periodic_re_read_applies_a_change_nobody_announced() {
    let Some(s) = setup_with("0.25", "1").await else {
        return;
    };
    s.refused_and_retried().await;
    // Nothing is cut: the listener keeps its session throughout, so no
    // reconnection's re-read can be what applies the change, only the periodic one.
    let listening = listener_pids(&s.url).await;
    assert_eq!(listening.len(), 1, "the node's listener found");
    let new_hec = HecServer::start(TOKEN);
    sql(&s.url, &moved_to(&s.id, &new_hec)).await;
    eventually(T, "the waiting events posted to the new receiver", || {
        audit_ids(&new_hec.events()).len() >= 5
    })
    .await;
    assert_eq!(
        listener_pids(&s.url).await,
        listening,
        "the listener was never reconnected"
    );
}

#[actix_rt::test]
async fn sync_now_on_a_node_without_the_shard_is_passed_on_only_when_another_node_holds_it() {
    let Some(s) = setup("3600").await else {
        return;
    };
    // 256 live nodes named before this one take every shard: its fair share is
    // none, so it claims nothing back, whoever holds the shards.
    sql(
        &s.url,
        "INSERT INTO nodes (name, started_at, heartbeat_at, expires_at)
           SELECT 'a' || lpad(n::text, 3, '0'), now(), now(), now() + interval '1 hour'
           FROM generate_series(0, 255) n;
         UPDATE shard_leases SET owner = 'a000', epoch = epoch + 1,
           expires_at = now() + interval '1 hour';",
    )
    .await;
    let id = s.id.to_string();
    status_until(
        &s.api,
        "acme",
        &id,
        "the node to stop the lost shard's actor",
        |st| st["state"] == "pending" && st["started_at"].is_null(),
    )
    .await;
    let path = format!("/api/v1/accounts/acme/integrations/{id}/sync");
    let (code, body) = s.api.admin("POST", &path, None).await;
    assert_eq!(code, 202, "another node holds the shard: {body}");
    // Nobody holds it now: nothing would sync it.
    sql(
        &s.url,
        "UPDATE shard_leases SET owner = NULL, expires_at = NULL",
    )
    .await;
    let (code, body) = s.api.admin("POST", &path, None).await;
    assert_eq!(code, 409, "no node holds the shard: {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("no node holds shard"), "{body}");
}

#[actix_rt::test]
async fn a_change_missed_while_the_listener_was_cut_off_is_applied_after_it_reconnects() {
    // The periodic re-read is an hour away: only the reconnection's re-read can
    // find the change, which no node announced.
    let Some(s) = setup_with("0.25", "3600").await else {
        return;
    };
    s.refused_and_retried().await;
    let new_hec = HecServer::start(TOKEN);
    let (client, connection) = tokio_postgres::connect(&s.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_rt::spawn(connection);
    client
        .batch_execute(&moved_to(&s.id, &new_hec))
        .await
        .unwrap();
    let cut = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'siemsync node-%'
               AND query = 'LISTEN siemsync_control'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 1, "the node's listener found");
    assert!(cut[0].get::<_, bool>(0), "the node's listener cut off");
    let switched = Instant::now();
    eventually(T, "the waiting events posted to the new receiver", || {
        audit_ids(&new_hec.events()).len() >= 5
    })
    .await;
    eprintln!(
        "applied after the reconnection within {:?}",
        switched.elapsed()
    );
}
