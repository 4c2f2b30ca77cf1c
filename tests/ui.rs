//! The web page, driven in Debian's headless Chromium through chromedriver, the way a
//! security team and an administrator use it: sign in; add an integration with every
//! mistake of a bad form shown at once, a pasted token trimmed and a double-click on
//! Save making one integration; the connection test shown after Save, and in the form
//! when it fails ("save anyway"); a new destination asking for the token again; the
//! duplicate warning; status in UTC with "retrying" told from "needs action"; sync now
//! with its result; dead letters with the event's id; a replay window in UTC with its
//! event count; delete; 400 px and contrast; a revoked token and a stopped service
//! shown as a banner over stale data; the feature-off page; and the administrator's
//! account picker, feature switch and "no such account".
//! `.ci/run` installs chromium and chromium-driver.

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use siemsync::testkit::{Behaviour, HecServer, HecServerConfig};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOK: &str = "0badc0de-0000-4000-8000-00000000beef";
const WRONG_TOK: &str = "99999999-0000-4000-8000-000000000000";

struct ChromeDriver(Child, u16);

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free port; `None` (with a note) where it is not installed,
/// except under CI, where its absence is a failure. The browser runs in New York's
/// time zone, so that a page showing local time as UTC (or the reverse) is caught.
fn chromedriver() -> Option<ChromeDriver> {
    let found = Command::new("chromedriver")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is missing: .ci/run installs chromium-driver"
        );
        eprintln!("SKIPPED: chromedriver not installed (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = closed_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env("TZ", "America/New_York")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(ChromeDriver(child, port))
}

async fn browser(driver: &ChromeDriver, profile: &std::path::Path) -> Client {
    let caps = json!({"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1100,1300", format!("--user-data-dir={}", profile.display())]
    }});
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a chromium session")
}

/// The visible text of the first element matching `css`, or "" when there is none.
async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the element's text satisfies `pred`.
async fn until_text(c: &Client, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let t = text(c, css).await;
        if pred(&t) {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waiting for {what}: {css} says {t:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a script in the page (`return …`) and gives its value.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Waits until a script's value is truthy; returns it.
async fn until_js(c: &Client, what: &str, script: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = js(c, script).await;
        let truthy =
            !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
        if truthy {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waiting for {what}: {script} gives {v}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn type_into(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("no {css}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn visible(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

fn artifact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

async fn screenshot(c: &Client, name: &str) {
    std::fs::write(artifact(name), c.screenshot().await.unwrap()).unwrap();
}

async fn integrations(api: &Api) -> Vec<Value> {
    api.ok("GET", "/api/v1/accounts/acme/integrations", None)
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// How many times `needle` occurs in the card's visible text.
async fn occurrences(c: &Client, needle: &str) -> usize {
    text(c, ".integration").await.matches(needle).count()
}

#[actix_rt::test]
async fn a_security_team_and_an_administrator_use_the_page() {
    let Some(driver) = chromedriver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::start(&dir.path().join("data"), &[]);
    let api = svc.api();
    let mut config = HecServerConfig::token(TOK);
    config.reject_events_containing = vec!["poison".into()];
    let hec = HecServer::start_with(config);
    let elsewhere = HecServer::start(TOK);
    api.enable_account("acme").await;
    let made = api
        .ok(
            "POST",
            "/api/v1/accounts/acme/tokens",
            Some(json!({"name": "browser"})),
        )
        .await;
    let token = made["token"].as_str().unwrap().to_owned();
    let c = browser(&driver, &dir.path().join("profile")).await;

    // Sign in with the account's token.
    c.goto(&svc.url).await.unwrap();
    type_into(&c, "signin-token", &format!("  {token} ")).await;
    click(&c, "#signin-form button[type=submit]").await;
    until_text(&c, "#who-text", "the account name", |t| t.contains("acme")).await;
    until_text(&c, "#empty", "the empty list", |t| {
        t.contains("No SIEM integration yet")
    })
    .await;

    // A bad form: every mistake at once, in plain words, before anything is sent.
    click(&c, "#add").await;
    assert!(text(&c, "#note-token")
        .await
        .contains("source type must be _json"));
    click(&c, "#f-audit").await;
    click(&c, "#f-jobs").await;
    type_into(&c, "f-hec_uri", "splunk.example.com").await;
    click(&c, "#save").await;
    let summary = until_text(&c, "#form-error", "the error summary", |t| !t.is_empty()).await;
    assert!(summary.contains("4"), "{summary}");
    for (field, words) in [
        ("name", "Enter a name"),
        ("hec_token", "Enter the HEC token"),
        ("hec_uri", "must start with https://"),
        ("sources", "Choose at least one data source"),
    ] {
        let err = text(&c, &format!("#err-{field}")).await;
        assert!(err.contains(words), "{field}: {err:?}");
        assert!(!err.contains('`'), "plain words, not API wording: {err}");
    }
    let invalid = js(
        &c,
        "return [...document.querySelectorAll('#editor [aria-invalid=true]')].map(e => e.id)",
    )
    .await;
    assert_eq!(
        invalid,
        json!(["f-name", "f-hec_token", "f-hec_uri", "f-audit"])
    );
    assert_eq!(
        js(&c, "return document.activeElement.id").await,
        "f-name",
        "focus on the first mistake"
    );
    assert!(integrations(&api).await.is_empty(), "nothing was sent");
    screenshot(&c, "ui-form.png").await;

    // Fix it: a token pasted with spaces around it is trimmed (and can be seen).
    type_into(&c, "f-name", "Main Splunk").await;
    type_into(&c, "f-hec_token", &format!("  {TOK}\t")).await;
    click(&c, "#show-token").await;
    assert_eq!(
        js(&c, "return document.getElementById('f-hec_token').type").await,
        "text"
    );
    type_into(&c, "f-hec_uri", &hec.base_url()).await;
    click(&c, "#f-audit").await;
    click(&c, "#f-jobs").await;
    // The Enable toggle is a switch, and works from the keyboard.
    assert_eq!(
        js(&c, "const e = document.getElementById('f-enabled'); return [e.type, e.getAttribute('role')]").await,
        json!(["checkbox", "switch"])
    );
    c.find(Locator::Id("f-enabled"))
        .await
        .unwrap()
        .send_keys(" ")
        .await
        .unwrap();
    assert_eq!(
        js(&c, "return document.getElementById('f-enabled').checked").await,
        true
    );
    // A double-click on Save makes one integration.
    js(
        &c,
        "const b = document.getElementById('save'); b.click(); b.click(); return b.disabled",
    )
    .await;
    until_text(&c, "#notice", "the saved notice", |t| t.contains("Saved")).await;
    // The new card is shown and focused, with the connection test's steps.
    until_js(
        &c,
        "the new card focused",
        "return document.activeElement.matches('.integration') && document.activeElement.textContent.includes('Main Splunk')",
    )
    .await;
    let saved = integrations(&api).await;
    assert_eq!(saved.len(), 1, "one integration after a double-click");
    assert_eq!(saved[0]["hec_token"], "****beef", "the token was trimmed");
    let result = text(&c, ".integration [data-f=result]").await;
    assert!(result.contains("The connection works"), "{result}");
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('.integration [data-f=result] li').length"
        )
        .await,
        3,
        "{result}"
    );

    // Events arrive; the status is in UTC with the relative time beside it.
    api.post_audit("acme", &audit_events("e", 0, 25)).await;
    until_text(&c, ".integration .badge", "healthy", |t| t == "healthy").await;
    until_text(
        &c,
        ".integration [data-f=delivered]",
        "delivered count",
        |t| {
            t.split(' ')
                .next()
                .unwrap_or("")
                .parse::<u64>()
                .unwrap_or(0)
                >= 25
        },
    )
    .await;
    assert_eq!(
        text(&c, ".integration [data-f=host]").await,
        hec.addr.to_string()
    );
    assert_eq!(
        text(&c, ".integration [data-f=sources]").await,
        "Audit log, Job monitor"
    );
    for f in ["last_success", "last_attempt"] {
        let t = text(&c, &format!(".integration [data-f={f}]")).await;
        assert!(utc_with_relative(&t), "{f}: {t:?}");
    }
    assert!(text(&c, "#fresh").await.contains("UTC"));
    screenshot(&c, "ui-list.png").await;

    // The same URI and token again: warned before anything is saved.
    click(&c, "#add").await;
    type_into(&c, "f-name", "Copy").await;
    type_into(&c, "f-hec_token", TOK).await;
    type_into(
        &c,
        "f-hec_uri",
        &format!("{}/services/collector", hec.base_url()),
    )
    .await;
    click(&c, "#save").await;
    let test = until_text(&c, "#form-test", "the duplicate warning", |t| {
        t.contains("twice")
    })
    .await;
    assert!(test.contains("Main Splunk"), "{test}");
    assert!(visible(&c, "#save-anyway").await);
    click(&c, "#cancel").await;
    assert_eq!(integrations(&api).await.len(), 1);

    // A new host needs the token again; a failed test keeps the form open.
    let id = saved[0]["id"].as_str().unwrap().to_owned();
    click(&c, ".integration [data-a=edit]").await;
    let placeholder = c
        .find(Locator::Id("f-hec_token"))
        .await
        .unwrap()
        .attr("placeholder")
        .await
        .unwrap()
        .unwrap();
    assert!(
        placeholder.contains("****beef") && !placeholder.contains(TOK),
        "{placeholder}"
    );
    assert!(!visible(&c, "#token-again").await);
    type_into(&c, "f-hec_uri", &elsewhere.base_url()).await;
    let again = until_text(&c, "#token-again", "the token request", |t| !t.is_empty()).await;
    assert!(
        again.contains("Enter the HEC token again: it is only sent to the host it was entered for"),
        "{again}"
    );
    assert_eq!(
        js(&c, "return document.getElementById('f-hec_token').required").await,
        true
    );
    click(&c, "#save").await;
    until_text(&c, "#err-hec_token", "the token error", |t| {
        t.contains("Enter the HEC token again")
    })
    .await;
    type_into(&c, "f-hec_token", WRONG_TOK).await;
    click(&c, "#save").await;
    let test = until_text(&c, "#form-test", "the failed test", |t| {
        t.contains("does not know this HEC token")
    })
    .await;
    assert!(test.contains('✗'), "{test}");
    assert!(visible(&c, "#editor").await, "the form stays open");
    assert_eq!(
        api.ok(
            "GET",
            &format!("/api/v1/accounts/acme/integrations/{id}"),
            None
        )
        .await["hec_uri"],
        hec.base_url(),
        "nothing saved yet"
    );
    screenshot(&c, "ui-form-test.png").await;
    click(&c, "#save-anyway").await;
    until_text(&c, ".integration .badge", "needs action", |t| {
        t == "needs action"
    })
    .await;
    until_text(&c, ".integration [data-f=problem]", "the advice", |t| {
        t.contains("does not know this HEC token")
    })
    .await;
    assert_eq!(
        occurrences(&c, "Splunk does not know this HEC token").await,
        1,
        "each distinct message once per card"
    );
    screenshot(&c, "ui-needs-action.png").await;

    // Back to the right Splunk (the token again, since the host changes back), with
    // an index from the Advanced settings.
    click(&c, ".integration [data-a=edit]").await;
    type_into(&c, "f-hec_uri", &hec.base_url()).await;
    type_into(&c, "f-hec_token", TOK).await;
    click(&c, "#advanced summary").await;
    type_into(&c, "f-index", "Security Events").await;
    click(&c, "#save").await;
    let err = until_text(&c, "#err-index", "the index error", |t| !t.is_empty()).await;
    assert!(err.contains("lowercase letters"), "{err}");
    type_into(&c, "f-index", "security").await;
    click(&c, "#save").await;
    until_text(&c, "#notice", "saved again", |t| t.contains("Saved")).await;
    until_text(&c, ".integration .badge", "healthy again", |t| {
        t == "healthy"
    })
    .await;
    let saved_again = api
        .ok(
            "GET",
            &format!("/api/v1/accounts/acme/integrations/{id}"),
            None,
        )
        .await;
    assert_eq!(saved_again["index"], "security");
    assert!(hec.events().iter().any(|e| e["index"] == "security"));

    // Splunk busy: retrying, nothing to do — not "needs action".
    hec.set_behaviour(Behaviour::Fail {
        status: 503,
        code: Some(9),
        text: "Server is busy".into(),
    });
    api.post_audit("acme", &audit_events("e", 25, 3)).await;
    until_text(&c, ".integration .badge", "retrying", |t| t == "retrying").await;
    screenshot(&c, "ui-retrying.png").await;
    let problem = text(&c, ".integration [data-f=problem]").await;
    assert!(problem.contains("nothing to do"), "{problem}");
    let retries = text(&c, ".integration [data-f=retries]").await;
    assert!(
        retries.parse::<u32>().is_ok_and(|n| n >= 1),
        "the retry count shows: {retries:?}"
    );
    hec.set_behaviour(Behaviour::Normal);
    until_text(&c, ".integration .badge", "healthy after busy", |t| {
        t == "healthy"
    })
    .await;

    // Sync now says how the sync went.
    click(&c, ".integration [data-a=sync]").await;
    until_text(&c, ".integration [data-f=result]", "the sync result", |t| {
        t.contains("Sync finished")
    })
    .await;

    // Dead letters show which event, and copy it.
    api.post_audit(
        "acme",
        &json!([{"id": "bad-1", "time": "2026-11-25T11:00:00Z", "event": "poison pill", "user": "mallory"}]),
    )
    .await;
    until_text(
        &c,
        ".integration [data-f=extra]",
        "the dead letter count",
        |t| t.contains("1 event in dead letters"),
    )
    .await;
    click(&c, ".integration [data-a=dead]").await;
    let dead = until_text(&c, ".integration .dead-letter", "the dead letter", |t| {
        t.contains("bad-1")
    })
    .await;
    assert!(
        dead.contains("poison pill") && dead.contains("mallory"),
        "{dead}"
    );
    click(&c, ".integration .dead-letter [data-a=copy]").await;
    until_text(
        &c,
        ".integration .dead-letter [data-f=copied]",
        "copied",
        |t| t.contains("Copied"),
    )
    .await;

    // Replay: the window is in UTC (the browser is in New York), counted first.
    click(&c, ".integration [data-a=replay]").await;
    click(&c, ".integration [data-preset=hour]").await;
    let from = js(
        &c,
        "return document.querySelector('.integration [name=from]').value",
    )
    .await;
    let want = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    assert!(
        from.as_str().unwrap().starts_with(&want[..13]),
        "last hour in UTC: {from} vs {want}"
    );
    let set = |name: &str, v: &str| {
        format!("const i = document.querySelector('.integration [name={name}]'); i.value = '{v}'; i.dispatchEvent(new Event('input', {{bubbles: true}})); return true")
    };
    js(&c, &set("from", "2026-11-25T10:00:02")).await;
    js(&c, &set("to", "2026-11-25T10:00:06")).await;
    let preview = until_text(
        &c,
        ".integration [data-f=replay-preview]",
        "the count",
        |t| t.contains("4 audit events"),
    )
    .await;
    assert!(preview.contains("duplicates"), "{preview}");
    assert!(text(&c, ".integration .replay").await.contains("UTC"));
    screenshot(&c, "ui-replay.png").await;
    click(&c, ".integration .replay button[type=submit]").await;
    until_text(&c, ".integration [data-f=result]", "replay started", |t| {
        t.contains("Replay started")
    })
    .await;
    let replay = status_until(&api, "acme", &id, "the replay counted", |s| {
        s["replay"]["total"] == 4
    })
    .await;
    assert_eq!(replay["replay"]["from"], "2026-11-25T10:00:02Z");
    assert_eq!(replay["replay"]["to"], "2026-11-25T10:00:06Z");

    // Readable at 400 px; every control labelled; names per card; contrast ≥ 3:1.
    c.set_window_size(400, 900).await.unwrap();
    fits_and_labelled(&c, "the list").await;
    screenshot(&c, "ui-narrow.png").await;
    let names = js(
        &c,
        "return [...document.querySelectorAll('.integration .actions button')].map(b => b.getAttribute('aria-label') || b.textContent)",
    )
    .await;
    for n in names.as_array().unwrap() {
        assert!(n.as_str().unwrap().contains("Main Splunk"), "{n}");
    }
    click(&c, ".integration [data-a=edit]").await;
    click(&c, "#advanced summary").await;
    fits_and_labelled(&c, "the form").await;
    c.set_window_size(1100, 1300).await.unwrap();
    let contrast = js(&c, CONTRAST).await;
    for (what, ratio) in contrast.as_object().unwrap() {
        assert!(ratio.as_f64().unwrap() >= 3.0, "{what}: {ratio}");
    }
    // Escape leaves the form, and focus goes back to the button that opened it.
    c.find(Locator::Id("f-name"))
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Escape.to_string())
        .await
        .unwrap();
    until_js(
        &c,
        "focus back on Edit",
        "return document.getElementById('editor').hidden && document.activeElement.dataset.a === 'edit'",
    )
    .await;

    // Delete, after confirming.
    click(&c, ".integration [data-a=delete]").await;
    c.accept_alert().await.unwrap();
    until_text(&c, "#empty", "the list empty again", |t| {
        t.contains("No SIEM integration yet")
    })
    .await;
    assert!(integrations(&api).await.is_empty());

    // The token is revoked: a banner says so instead of "healthy · just now".
    let token_id = made["id"].as_str().unwrap();
    api.ok(
        "DELETE",
        &format!("/api/v1/accounts/acme/tokens/{token_id}"),
        None,
    )
    .await;
    let banner = until_text(&c, "#banner", "the refused-token banner", |t| {
        t.contains("refused")
    })
    .await;
    assert!(banner.contains("UTC"), "{banner}");
    click(&c, "#banner-signin").await;

    // An account without the feature is told to contact support.
    let other = api.ok("POST", "/api/v1/accounts/newco/tokens", None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    type_into(&c, "signin-token", &other).await;
    click(&c, "#signin-form button[type=submit]").await;
    until_text(&c, "#disabled-text", "the contact-support notice", |t| {
        t.contains("contact our support team")
    })
    .await;
    assert!(!visible(&c, "#enable-feature").await);
    click(&c, "#signout").await;

    // The administrator lands on every account, picks one, and turns the feature on.
    type_into(&c, "signin-token", ADMIN).await;
    click(&c, "#signin-form button[type=submit]").await;
    until_text(&c, "#accounts", "the accounts", |t| {
        t.contains("acme") && t.contains("newco")
    })
    .await;
    let picker = js(
        &c,
        "return [...document.getElementById('account-picker').options].map(o => o.value)",
    )
    .await;
    assert_eq!(picker, json!(["acme", "newco"]));
    assert_eq!(
        js(&c, "return document.querySelector('#accounts tr[data-account=newco] [role=switch]').getAttribute('aria-checked')").await,
        "false"
    );
    screenshot(&c, "ui-admin.png").await;
    c.set_window_size(400, 900).await.unwrap();
    fits_and_labelled(&c, "the accounts").await;
    c.set_window_size(1100, 1300).await.unwrap();
    js(
        &c,
        "const p = document.getElementById('account-picker'); p.value = 'newco'; return true",
    )
    .await;
    click(&c, "#picker-open").await;
    until_text(&c, "#disabled-text", "feature off for newco", |t| {
        t.contains("newco")
    })
    .await;
    click(&c, "#enable-feature").await;
    until_text(&c, "#empty", "newco's empty list", |t| {
        t.contains("No SIEM integration yet")
    })
    .await;
    assert_eq!(
        api.ok("GET", "/api/v1/accounts/newco", None).await["siem_enabled"],
        true
    );
    // A typo is "no such account", not "contact support".
    c.goto(&format!("{}/#/accounts/acm", svc.url))
        .await
        .unwrap();
    let missing = until_text(&c, "#missing", "no such account", |t| !t.is_empty()).await;
    assert!(missing.contains("No account named \"acm\""), "{missing}");
    assert!(!missing.contains("support"), "{missing}");
    click(&c, "#missing button").await;
    until_text(&c, "#accounts", "the accounts again", |t| {
        t.contains("newco")
    })
    .await;

    // The service stops: the page says it cannot reach it, and since when.
    svc.kill();
    let banner = until_text(&c, "#banner", "the unreachable banner", |t| {
        t.contains("cannot be reached")
    })
    .await;
    assert!(banner.contains("UTC"), "{banner}");
    screenshot(&c, "ui-stale.png").await;
    c.close().await.unwrap();
}

/// Nothing wider than the window, and every visible control has a label.
async fn fits_and_labelled(c: &Client, what: &str) {
    let overflow = js(c, "return document.documentElement.scrollWidth").await;
    let inner = js(c, "return window.innerWidth").await;
    assert!(
        overflow.as_f64().unwrap() <= inner.as_f64().unwrap(),
        "{what}: page wider than the window: {overflow} > {inner}"
    );
    let unlabeled = js(
        c,
        "return [...document.querySelectorAll('input, button, select, textarea')].filter(e => e.offsetParent !== null && \
         !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.outerHTML)",
    )
    .await;
    assert_eq!(unlabeled, json!([]), "{what}");
}

/// Contrast against the background of the focus ring and an input's border (WCAG 1.4.11).
const CONTRAST: &str = r#"
const rgb = (s) => (s.match(/[\d.]+/g) || [0, 0, 0]).slice(0, 3).map(Number);
const lum = (c) => { const [r, g, b] = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const ratio = (a, b) => { const [x, y] = [lum(rgb(a)), lum(rgb(b))].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const input = document.getElementById('f-name');
input.focus();
const bg = getComputedStyle(document.querySelector('#editor .card')).backgroundColor;
const focused = getComputedStyle(input).outlineColor;
const border = getComputedStyle(document.getElementById('f-hec_uri')).borderTopColor;
const sw = getComputedStyle(document.getElementById('f-enabled')).borderTopColor;
return {focus_ring: getComputedStyle(input).outlineStyle === 'none' ? 0 : ratio(focused, bg), input_border: ratio(border, bg), switch_border: ratio(sw, bg)};
"#;

/// `2026-11-25 10:00:00 UTC (12 s ago)`: an absolute time in UTC, the relative one beside it.
fn utc_with_relative(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b' ')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && t.get(19..)
            .is_some_and(|r| r.starts_with(" UTC (") && r.ends_with(')'))
}
