//! `…/integrations`: create, read, replace, change, remove, status and sync-now.
//! Every change is stored first, then sent to the Supervisor, which restarts only
//! the actor of the integration that changed.

use super::auth::Caller;
use super::bodies::{IntegrationBody, ReplayBody};
use super::duplicates::IntegrationAnswer;
use super::errors::ApiError;
use super::errors::ErrorBody;
use super::status::status_of;
use super::status::IntegrationStatus;
use super::{account_of, duplicates, read_body, AppState};
use crate::actors::messages::{CancelReplay, Refresh, StartReplay, SyncNow, Window};
use crate::actors::replay::ReplayProgress;
use crate::actors::replays::{request_elsewhere, ReplayRefused, RequestError};
use crate::config::Config;
use crate::hec::check::{check_connection, ConnectionReport, Step};
use crate::hec::client::HecClient;
use crate::hec::destination;
use crate::logsafe::clean;
use crate::model::fields::parse_object;
use crate::model::fields::Fields;
use crate::model::integration::read_sources;
use crate::model::{
    AccountId, AuditEvent, FieldError, Integration, IntegrationChange, IntegrationPolicy, Source,
};
use crate::store::DeadLetter;
use crate::store::{Store, StoreError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

type IdPath = web::Path<(String, String)>;

fn feature_on(state: &AppState, account: &AccountId) -> Result<bool, ApiError> {
    Ok(state
        .store
        .account(account)?
        .is_some_and(|a| a.siem_enabled))
}

/// New integrations only on an account whose feature is on: 403 "contact support" otherwise.
pub(super) fn require_feature(state: &AppState, account: &AccountId) -> Result<(), ApiError> {
    if feature_on(state, account)? {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "SIEM integration is not enabled for this account: please contact our support team to have it activated",
    ))
}

/// The integration named by the path, if the caller may see it.
pub(super) fn lookup(
    state: &AppState,
    caller: &Caller,
    path: &(String, String),
) -> Result<Integration, ApiError> {
    let account = account_of(&path.0)?;
    caller.require_account(&account)?;
    let id = Uuid::parse_str(&path.1).map_err(|_| ApiError::not_found("integration"))?;
    state
        .store
        .integration(&account, &id)?
        .ok_or_else(|| ApiError::not_found("integration"))
}

/// What changed from `old` to `new`, in the words the account's audit log uses.
fn changes(old: Option<&Integration>, new: &Integration) -> Vec<&'static str> {
    let Some(old) = old else {
        return vec!["SIEM integration created"];
    };
    let mut out = Vec::new();
    if old.hec_token != new.hec_token {
        out.push("SIEM integration token changed");
    }
    if old.enabled != new.enabled {
        out.push(if new.enabled {
            "SIEM integration enabled"
        } else {
            "SIEM integration disabled"
        });
    }
    let rest = |i: &Integration| Integration {
        hec_token: String::new(),
        enabled: false,
        updated_at: i.created_at,
        version: 0,
        ..i.clone()
    };
    if rest(old) != rest(new) {
        out.push("SIEM integration updated");
    }
    out
}

/// Writes the service's own changes to the account's audit log, so they reach
/// Splunk like every other audit event (who: the token's owner; from: the peer address).
pub async fn audit_change(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    it: &Integration,
    what: &[&str],
) -> Result<(), ApiError> {
    if what.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let events = what
        .iter()
        .map(|event| AuditEvent {
            id: Uuid::new_v4().to_string(),
            time: now,
            connector: None,
            acl: Some("siem-integration:manage".into()),
            method: Some(req.method().as_str().to_owned()),
            user: Some(caller.owner()),
            ip_address: req.peer_addr().map(|a| a.ip()),
            metadata: Some(
                json!({"integration": it.id, "name": it.name, "hec_uri": it.hec_uri, "path": req.path()})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
            event: json!(event),
            ingested_at: now,
        })
        .collect();
    let (store, account) = (state.store.clone(), it.account.clone());
    web::block(move || store.append_audit(&account, events)).await??;
    state.store.flush().await?;
    Ok(())
}

/// Integrations the operator declared in the config file change only there.
pub(super) fn api_managed(it: &Integration) -> Result<(), ApiError> {
    if it.file_managed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this integration is declared in the service's config file and is read-only here: the operator changes it there",
        ));
    }
    Ok(())
}

/// Refuses a HEC URI that leads to an internal address (unless the operator allows them).
pub(super) async fn check_destination(state: &AppState, it: &Integration) -> Result<(), ApiError> {
    let uri = &it.hec_uri;
    let guard = destination::check_host(
        uri.host(),
        uri.port(),
        state.config.allow_private_destinations,
    )
    .await;
    if let Err(refused) = guard {
        // The tenant learns nothing about the operator's network; the operator does.
        log::warn!(
            "SSRF guard: hec_uri of integration {} (account {}) refused: {} {}",
            it.id,
            it.account,
            clean(uri.host()),
            refused.address.map_or_else(
                || "does not resolve".to_owned(),
                |a| format!("leads to the internal address {a}")
            )
        );
        return Err(ApiError::bad_request(
            "`hec_uri` is refused: this service sends only to public addresses, and this host is not one or does not resolve to one. Check the host name, and use your Splunk's public address.",
        ));
    }
    Ok(())
}

/// Stores an integration as the next version after `expected` (`None`: a new one) and
/// tells the Supervisor, so its actor (re)starts without a process restart. A new
/// destination or token is tested at once, in the background. Answers what was
/// stored, or `None` when another change was stored first (the caller reads it again).
async fn save(
    state: &AppState,
    it: &Integration,
    old: Option<&Integration>,
) -> Result<Option<Integration>, ApiError> {
    check_destination(state, it).await?;
    let it = match state.store.put_integration(it, old.map(|o| o.version)) {
        Ok(stored) => stored,
        Err(StoreError::Changed) => return Ok(None),
        Err(StoreError::Gone) => return Err(ApiError::not_found("integration")),
        Err(e) => return Err(e.into()),
    };
    // Told at once, with no await since the write: a request abandoned from here on
    // cannot leave the actor behind the store.
    state.supervisor.do_send(Refresh {
        account: it.account.clone(),
        id: it.id,
    });
    state.store.flush().await?;
    let destination_changed = old.is_none_or(|o| {
        (
            &o.hec_uri,
            &o.hec_token,
            o.tls_verify,
            &o.ca_pem,
            o.indexer_ack,
        ) != (
            &it.hec_uri,
            &it.hec_token,
            it.tls_verify,
            &it.ca_pem,
            it.indexer_ack,
        )
    });
    if destination_changed {
        let (it, store, config) = (it.clone(), state.store.clone(), state.config.clone());
        actix_web::rt::spawn(async move {
            if let Err(e) = test_and_keep(&store, &config, &it).await {
                log::warn!(
                    "integration {}: cannot keep the report of its connection test: {e}",
                    it.id
                );
            }
        });
    }
    Ok(Some(it))
}

async fn change_body(state: &AppState, body: web::Payload) -> Result<IntegrationChange, ApiError> {
    let body = read_body(body, &state.config).await?;
    Ok(IntegrationChange::from_json(&parse_object(&body)?)?)
}

/// The account's integrations.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/integrations", operation_id = "listIntegrations", tag = "integrations",
    params(super::AccountPath), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "The account's integrations", body = Vec<IntegrationAnswer>)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let account = account_of(&path)?;
    caller.require_account(&account)?;
    let all = state.store.integrations_of(&account)?;
    let list: Vec<_> = all.iter().map(|it| duplicates::view(&all, it)).collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Creates an integration; a connection test of its settings runs in the background.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/integrations", operation_id = "createIntegration", tag = "integrations",
    params(super::AccountPath), security(("admin" = []), ("account" = [])),
    request_body(content = IntegrationBody, description = "Needs `name`, `hec_token`, `hec_uri` and `sources`"),
    responses((status = 201, description = "Created", body = IntegrationAnswer,
            links(("get" = (operation_id = "getIntegration", parameters(("account" = "$request.path.account"), ("id" = "$response.body#/id")))),
                ("patch" = (operation_id = "patchIntegration", parameters(("account" = "$request.path.account"), ("id" = "$response.body#/id")))),
                ("status" = (operation_id = "integrationStatus", parameters(("account" = "$request.path.account"), ("id" = "$response.body#/id")))),
                ("delete" = (operation_id = "deleteIntegration", parameters(("account" = "$request.path.account"), ("id" = "$response.body#/id")))))),
        (status = 403, description = "The account's SIEM feature is off: contact support (or the token may not do this)", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let account = account_of(&path)?;
    caller.require_account(&account)?;
    require_feature(&state, &account)?;
    let it = change_body(&state, body)
        .await?
        .create(account, Utc::now(), state.policy())?;
    // A fresh id: no other write can have come first.
    let it = save(&state, &it, None)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, CHANGED_MEANWHILE))?;
    audit_change(&state, &caller, &req, &it, &changes(None, &it)).await?;
    log::info!(
        "integration {} ({:?}) created for account {}",
        it.id,
        clean(&it.name),
        it.account
    );
    let all = state.store.integrations_of(&it.account)?;
    Ok(HttpResponse::Created().json(duplicates::view(&all, &it)))
}

/// One integration.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/integrations/{id}", operation_id = "getIntegration", tag = "integrations",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "The integration", body = IntegrationAnswer)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    let all = state.store.integrations_of(&it.account)?;
    Ok(HttpResponse::Ok().json(duplicates::view(&all, &it)))
}

/// How often a change is combined again with a version stored meanwhile before the
/// request gives up with 409.
const SAVE_ATTEMPTS: usize = 8;

const CHANGED_MEANWHILE: &str = "the integration was changed by other requests while this one was applied, again and again; read it again and retry";

/// A replace or change: the same checks, storage, restart and audit; only how the
/// body combines with the stored integration differs. The body is combined with the
/// stored version and stored only over that version: when another change was stored
/// first, it is combined again with that one (a PATCH changes only its fields of the
/// latest version; a PUT replaces the latest), so no change is lost or applied to a
/// deleted integration.
async fn update(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    path: &(String, String),
    body: web::Payload,
    combine: fn(
        IntegrationChange,
        &Integration,
        DateTime<Utc>,
        IntegrationPolicy,
    ) -> Result<Integration, FieldError>,
) -> Result<HttpResponse, ApiError> {
    let mut old = lookup(state, caller, path)?;
    api_managed(&old)?;
    let change = change_body(state, body).await?;
    for _ in 0..SAVE_ATTEMPTS {
        let it = combine(change.clone(), &old, Utc::now(), state.policy())?;
        if let Some(it) = save(state, &it, Some(&old)).await? {
            audit_change(state, caller, req, &it, &changes(Some(&old), &it)).await?;
            let all = state.store.integrations_of(&it.account)?;
            return Ok(HttpResponse::Ok().json(duplicates::view(&all, &it)));
        }
        old = lookup(state, caller, path)?;
        api_managed(&old)?;
    }
    Err(ApiError::new(StatusCode::CONFLICT, CHANGED_MEANWHILE))
}

/// `PUT`: a whole new integration in place of the old (the token may be left out).
#[utoipa::path(put, path = "/api/v1/accounts/{account}/integrations/{id}", operation_id = "replaceIntegration", tag = "integrations",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    request_body(content = IntegrationBody, description = "Every setting; `hec_token` may be left out to keep the stored one, unless the URI's scheme, host or port changes"),
    responses((status = 200, description = "Stored", body = IntegrationAnswer),
        (status = 409, description = "Declared in the config file (read-only here), or changed by other requests again and again", body = ErrorBody)))]
pub async fn replace(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: IdPath,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(
        &state,
        &caller,
        &req,
        &path,
        body,
        IntegrationChange::replace,
    )
    .await
}

/// `PATCH`: only the fields given change.
#[utoipa::path(patch, path = "/api/v1/accounts/{account}/integrations/{id}", operation_id = "patchIntegration", tag = "integrations",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    request_body(content = IntegrationBody, description = "Only the fields to change (`null` clears `index` and `ca_pem`)",
        example = json!({"enabled": false})),
    responses((status = 200, description = "Stored", body = IntegrationAnswer,
            links(("status" = (operation_id = "integrationStatus", parameters(("account" = "$request.path.account"), ("id" = "$request.path.id")))))),
        (status = 409, description = "Declared in the config file (read-only here), or changed by other requests again and again", body = ErrorBody)))]
pub async fn patch(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: IdPath,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(&state, &caller, &req, &path, body, IntegrationChange::apply).await
}

/// Removes the integration, its checkpoint, history and dead letters.
#[utoipa::path(delete, path = "/api/v1/accounts/{account}/integrations/{id}", operation_id = "deleteIntegration", tag = "integrations",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    responses((status = 204, description = "Removed"),
        (status = 409, description = "Declared in the config file: read-only here", body = ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    api_managed(&it)?;
    // Deleted first, then the actor stopped: the store is what the actor follows. A
    // post still in flight cannot move the deleted checkpoint back (`Store::commit`
    // finds the integration gone), and no change racing this one can store the
    // integration again (`Store::put_integration` finds it gone).
    let removed = state.store.delete_integration(&it.account, &it.id);
    // Also when the removal failed part-way: the Supervisor follows whatever is stored.
    state.supervisor.do_send(Refresh {
        account: it.account.clone(),
        id: it.id,
    });
    let it = removed?.ok_or_else(|| ApiError::not_found("integration"))?;
    audit_change(&state, &caller, &req, &it, &["SIEM integration deleted"]).await?;
    state.store.flush().await?;
    log::info!("integration {} deleted from account {}", it.id, it.account);
    Ok(HttpResponse::NoContent().finish())
}

/// `POST …/sync`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"sync": "started", "requested_at": "2026-11-25T10:01:00Z"}))]
pub struct SyncStarted {
    /// Always `started`.
    pub sync: SyncWord,
    /// The status's `last_sync` whose `started_at` is at or after this is its result.
    pub requested_at: DateTime<Utc>,
}

/// The one word `sync` says.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncWord {
    /// A sync was started.
    Started,
}

/// Sync now.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/integrations/{id}/sync", operation_id = "syncNow", tag = "integrations",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    responses((status = 202, description = "A sync was started", body = SyncStarted),
        (status = 409, description = "The integration is not running (disabled, or its account's feature is off), or on PostgreSQL no node holds its shard now", body = ErrorBody)))]
pub async fn sync_now(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    // The status's `last_sync` whose `started_at` is at or after this is the one asked for.
    let requested_at = Utc::now();
    // Decided by who holds the integration's shard (always this node on sled):
    // here, its actor syncs if it runs; on another node, that node is told.
    let started = if state.store.holds(&it.id) {
        state.supervisor.send(SyncNow { id: it.id }).await?
    } else {
        sync_elsewhere(&state.store, &it).await?
    };
    if started {
        Ok(HttpResponse::Accepted().json(SyncStarted {
            sync: SyncWord::Started,
            requested_at,
        }))
    } else {
        Err(not_running())
    }
}

fn not_running() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "the integration is not running: turn on its Enable toggle (and the account's SIEM feature) first",
    )
}

/// PostgreSQL: Sync now of an integration whose shard another node holds is
/// announced to every node, and the holder syncs it (`control.rs`). Answers
/// whether it should run there (active); refused (409) when no node holds a live
/// lease on its shard (nodes starting, or handing it over), since nothing would
/// sync it.
async fn sync_elsewhere(store: &Store, it: &Integration) -> Result<bool, ApiError> {
    let Some(pg) = store.postgres() else {
        return Ok(false);
    };
    if !store.is_active(it)? {
        return Ok(false);
    }
    let shard = pg.shard_of(&it.id);
    let holder = pg.shard_holder(shard).await.map_err(StoreError::from)?;
    match holder {
        Some(node) if node != pg.node_name() => {}
        // This node's own lease, but it hands the shard over: not run here any more.
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("this node hands shard {shard} of the integration over to another node now: nothing syncs it until that node takes it; try again in a few seconds"),
            ))
        }
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("no node holds shard {shard} of the integration now (nodes starting, or the shard moving between them): nothing would sync it; try again in a few seconds"),
            ))
        }
    }
    let event = crate::store::postgres::ControlEvent {
        integration: it.id,
        account: it.account.clone(),
        shard,
        action: crate::store::postgres::ControlAction::SyncNow,
    };
    pg.notify(&event).await.map_err(StoreError::from)?;
    Ok(true)
}

/// Runs a connection test and keeps its report for the status.
async fn test_and_keep(
    store: &Store,
    config: &Config,
    it: &Integration,
) -> Result<ConnectionReport, ApiError> {
    let report = run_test(config, it).await;
    match store.put_connection_report(&it.account, &it.id, &report) {
        Ok(()) | Err(StoreError::Gone) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(report)
}

/// Tests an integration's settings against its Splunk now.
pub(super) async fn run_test(config: &Config, it: &Integration) -> ConnectionReport {
    match HecClient::new(it, config.client_settings()) {
        Ok(client) => check_connection(&client, it, &config.host).await,
        Err(f) => ConnectionReport {
            ok: false,
            checked_at: Utc::now(),
            summary: f.advice.clone(),
            steps: vec![Step {
                check: "connection".into(),
                ok: false,
                message: format!("{} ({})", f.advice, f.text),
            }],
        },
    }
}

/// Test builds only: forces `fault` on the integration's actor (admin); answers
/// `{name: true}` when an actor runs to take it.
#[cfg(feature = "test-hooks")]
async fn force_fault(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
    fault: crate::actors::supervisor::Fault,
    name: &str,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let it = lookup(&state, &caller, &path)?;
    let sent = state
        .supervisor
        .send(crate::actors::supervisor::ForceFault { id: it.id, fault })
        .await?;
    Ok(HttpResponse::Accepted().json(json!({ name: sent })))
}

/// Test builds only: `POST …/_panic` makes the integration's actor panic (admin).
#[cfg(feature = "test-hooks")]
pub async fn force_panic(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    use crate::actors::supervisor::Fault;
    force_fault(state, caller, path, Fault::Panic, "panic").await
}

/// Test builds only: `POST …/_stall` makes the integration's posts from now on
/// outlive their client's timeout (admin), to prove the heartbeat finds a stuck actor.
#[cfg(feature = "test-hooks")]
pub async fn force_stall(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    use crate::actors::supervisor::Fault;
    force_fault(state, caller, path, Fault::Stall, "stall").await
}

/// `POST …/test`: checks the HEC URI and token now and says what works and what does not.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/integrations/{id}/test", operation_id = "testConnection", tag = "integrations",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "The connection test's report (also kept in the status)", body = ConnectionReport)))]
pub async fn test(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    let report = test_and_keep(&state.store, &state.config, &it).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Reads a replay's `{"from", "to", "sources"?}`: the window, and the sources (the
/// integration's own when not given; only sources it sends).
pub fn replay_request(
    it: &Integration,
    v: &serde_json::Value,
) -> Result<(Window, Vec<Source>), FieldError> {
    let mut f = Fields::new(v, None)?;
    let from = f.required("from", Fields::time)?;
    let to = f.required("to", Fields::time)?;
    let sources = match read_sources(&mut f)? {
        None => it.sources.clone(),
        Some(list) => {
            if let Some(s) = list.iter().find(|s| !it.wants(**s)) {
                return Err(f.error(
                    "sources",
                    format!(
                        "names {:?}, which this integration does not send",
                        s.as_str()
                    ),
                ));
            }
            list
        }
    };
    if from > to {
        return Err(f.error("from", "must not be after `to`"));
    }
    f.finish()?;
    Ok((Window { from, to }, sources))
}

#[utoipa::path(post, path = "/api/v1/accounts/{account}/integrations/{id}/replay", operation_id = "startReplay", tag = "replay",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    request_body(content = ReplayBody),
    responses((status = 202, description = "The replay started (on PostgreSQL, asked of a node that does not run the integration: stored, `running` with `total` 0, and started by the node that runs it within a second)", body = ReplayProgress),
        (status = 409, description = "A replay runs already (on PostgreSQL, also one asked for on another node and not picked up yet), or the integration is not running", body = ErrorBody),
        (status = 503, description = "The store did not record the replay: it was not started; retry later", body = ErrorBody)))]
/// `POST …/replay`: `{"from", "to", "sources"?}` re-sends a retained window beside
/// live delivery, without touching the live checkpoint.
pub async fn replay(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: IdPath,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    let body = read_body(body, &state.config).await?;
    let (window, sources) = replay_request(&it, &parse_object(&body)?)?;
    let started = match state
        .supervisor
        .send(StartReplay {
            id: it.id,
            window,
            sources: sources.clone(),
        })
        .await?
    {
        Ok(p) => p,
        // PostgreSQL: the integration runs on another node, which starts the
        // replay from the stored request.
        Err(RequestError::Refused(ReplayRefused::NotRunning)) => match state.store.postgres() {
            Some(pg) if state.store.is_active(&it)? => {
                match request_elsewhere(pg, &it.account, &it.id, window, sources).await {
                    Ok(p) => p,
                    Err(RequestError::Refused(e)) => {
                        return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
                    }
                    Err(RequestError::Store(e)) => return Err(e.into()),
                }
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ReplayRefused::NotRunning.to_string(),
                ))
            }
        },
        Err(RequestError::Refused(e)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        // Not recorded, so not started.
        Err(RequestError::Store(e)) => return Err(e.into()),
    };
    audit_change(
        &state,
        &caller,
        &req,
        &it,
        &["SIEM integration replay requested"],
    )
    .await?;
    Ok(HttpResponse::Accepted().json(started))
}

/// `DELETE …/replay`: cancels the running replay.
#[utoipa::path(delete, path = "/api/v1/accounts/{account}/integrations/{id}/replay", operation_id = "cancelReplay", tag = "replay",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "Cancelled: the replay as it ended (on PostgreSQL, on a node that does not run it: as last recorded; the node running it stops it within a second)", body = ReplayProgress),
        (status = 404, description = "No replay runs, and none is stored as running (or no such integration)", body = ErrorBody),
        (status = 503, description = "The store could not read or record the cancel (on PostgreSQL: unreachable, or the integration locked by another change for 2 s): nothing was cancelled, retry", body = ErrorBody)))]
pub async fn cancel_replay(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    let cancel = CancelReplay {
        account: it.account.clone(),
        id: it.id,
    };
    match state.supervisor.send(cancel).await?? {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Err(ApiError::not_found("running replay")),
    }
}

/// `…/dead-letters?limit=`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the raw query string, to refuse a bad or unknown parameter.
pub struct DeadLetterQuery {
    /// At most this many, newest first (1–1,000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// `GET …/dead-letters`' answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    /// How many the integration has.
    pub total: usize,
    /// The newest of them.
    pub dead_letters: Vec<DeadLetter>,
}

/// `GET …/dead-letters`: events Splunk refused as bad data, newest first, with the reason.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/integrations/{id}/dead-letters", operation_id = "deadLetters", tag = "integrations",
    params(super::IntegrationPath, DeadLetterQuery), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "The dead letters, newest first", body = DeadLetters)))]
pub async fn dead_letters(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    // Out of range is refused rather than clamped: the caller asked for something else.
    let p = super::history::params(req.query_string(), &["limit"])?;
    let limit = super::history::number(&p, "limit", 100, 1000)? as usize;
    let (total, letters) = state.store.dead_letters(&it.id, limit)?;
    Ok(HttpResponse::Ok().json(DeadLetters {
        total,
        dead_letters: letters,
    }))
}

/// The integration's status: state, last attempt and success, last error with
/// advice, delivered, backlog, gaps, replay, next sync.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/integrations/{id}/status", operation_id = "integrationStatus", tag = "integrations",
    params(super::IntegrationPath), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "Its status", body = IntegrationStatus)))]
pub async fn status(
    state: web::Data<AppState>,
    caller: Caller,
    path: IdPath,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    Ok(HttpResponse::Ok().json(status_of(&state, &it).await?))
}

/// How many integrations' actors `list_all` asks at the same time.
const STATUS_CONCURRENCY: usize = 16;

/// `GET /api/v1/integrations` (admin): every integration of every account with its status.
#[utoipa::path(get, path = "/api/v1/integrations", operation_id = "listAllIntegrations", tag = "integrations", security(("admin" = [])),
    responses((status = 200, description = "Every integration's status", body = Vec<IntegrationStatus>)))]
pub async fn list_all(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    // The actors are asked at once, a bounded number at a time, in the stored order.
    let out: Vec<_> = stream::iter(state.store.all_integrations()?)
        .map(|it| {
            let state = &state;
            async move { status_of(state, &it).await }
        })
        .buffered(STATUS_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(HttpResponse::Ok().json(out))
}
