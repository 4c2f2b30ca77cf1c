//! The web page, driven in Debian's headless Chromium through chromedriver, the way a
//! security team and an administrator use it: sign in; add an integration with every
//! mistake of a bad form shown at once, a pasted token trimmed and a double-click on
//! Save making one integration; the connection test shown after Save, and in the form
//! when it fails ("save anyway"); a new destination asking for the token again; the
//! duplicate warning; status in UTC with "retrying" told from "needs action"; sync now
//! with its result; dead letters with the event's id; a replay window in UTC with its
//! event count; delete from the keyboard, its dialog cancelled then confirmed; 400 px
//! and contrast; a revoked token and a stopped service
//! shown as a banner over stale data; the feature-off page; and the administrator's
//! account picker, feature switch and "no such account". In a second test, run beside
//! the first, on a service whose interval never comes: the administrator's overview of every integration (counts per
//! state, sorting and paging by the service), and an integration added and synced with
//! the keyboard alone, whose chart has one point per sync and its failure marked with
//! the advice; the feature switch from the keyboard, its dialog cancelled then
//! confirmed. axe-core checks every view for serious and critical problems.
//! `.ci/run` installs chromium, chromium-driver and axe-core (`npm ci` in tests/ui).

use crate::common::*;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
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
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a chromium session");
    // The page refreshes what it shows every 2 s (`REFRESH_MS`, its only
    // `setInterval`); in this browser every 0.5 s, as the test service syncs every
    // tenth of a second instead of every five minutes: the walk waits on about a
    // dozen refreshes. What each refresh shows is unchanged, and a page that never
    // refreshed still fails every wait for a new state.
    c.issue_cmd(Cdp {
        cmd: "Page.addScriptToEvaluateOnNewDocument",
        params: json!({"source": "{ const every = window.setInterval; \
            window.setInterval = (f, ms, ...rest) => every(f, Math.min(ms, 500), ...rest); }"}),
    })
    .await
    .expect("the page's refresh shortened");
    c
}

/// A Chrome DevTools Protocol command, through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
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
    axe(&c, "the empty list").await;

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
    axe(&c, "the form with its mistakes").await;

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
    // The card draws its syncs, and lists them below the chart.
    until_js(
        &c,
        "the delivery chart",
        "return document.querySelectorAll('.integration .chart svg [data-point]').length",
    )
    .await;
    let caption = text(&c, ".integration .chart figcaption").await;
    assert!(caption.contains("Last 24 hours"), "{caption}");
    until_js(
        &c,
        "the table of syncs",
        "return document.querySelectorAll('.integration table.syncs tbody tr').length",
    )
    .await;
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
    // The failed sync is marked on the chart, with the advice for a screen reader.
    let mark = until_js(
        &c,
        "the failure on the chart",
        "const m = document.querySelector('.integration .chart .fail'); return m && m.getAttribute('aria-label')",
    )
    .await;
    assert!(
        mark.as_str()
            .unwrap()
            .contains("does not know this HEC token"),
        "{mark}"
    );
    screenshot(&c, "ui-needs-action.png").await;
    axe(&c, "an integration that needs action, with its chart").await;

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
    hec.set_behaviour(Behaviour::busy());
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
    axe(&c, "dead letters and the replay form").await;
    click(&c, ".integration .replay button[type=submit]").await;
    until_text(&c, ".integration [data-f=result]", "replay started", |t| {
        t.contains("Replay started")
    })
    .await;
    let replay = status_until(&api, "acme", &id, "the replay counted", |s| {
        s["replay"]["total"] == 4
    })
    .await;
    // The replay form opens and closes from the keyboard, focus going back to its button.
    key_on(&c, ".integration [data-a=replay]", Key::Enter).await;
    until_js(
        &c,
        "focus in the replay form",
        "return document.activeElement.dataset.preset === 'hour'",
    )
    .await;
    press(&c, &[Key::Escape]).await;
    until_js(
        &c,
        "the replay form closed",
        "return document.querySelector('.integration .replay').hidden && document.activeElement.dataset.a === 'replay'",
    )
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

    // Delete, after confirming, from the keyboard: cancelling the dialog keeps the
    // integration and the focus on its Delete button; confirming it deletes, and the
    // focus goes to "Add integration".
    key_on(&c, ".integration [data-a=delete]", Key::Enter).await;
    c.dismiss_alert().await.unwrap();
    assert_eq!(integrations(&api).await.len(), 1, "cancelled: still there");
    until_js(
        &c,
        "the focus back on Delete",
        "return document.activeElement.dataset.a === 'delete' && document.activeElement.closest('.integration') !== null",
    )
    .await;
    press(&c, &[Key::Enter]).await;
    c.accept_alert().await.unwrap();
    until_text(&c, "#empty", "the list empty again", |t| {
        t.contains("No SIEM integration yet")
    })
    .await;
    until_js(
        &c,
        "the focus on Add integration",
        "return document.activeElement.id === 'add'",
    )
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
    axe(&c, "the administrator's overview").await;
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
    svc.stop();
    let banner = until_text(&c, "#banner", "the unreachable banner", |t| {
        t.contains("cannot be reached")
    })
    .await;
    assert!(banner.contains("UTC"), "{banner}");
    screenshot(&c, "ui-stale.png").await;
    axe(&c, "the unreachable banner").await;
    c.close().await.unwrap();
}

/// A test of its own (its own browser and service), so that it runs beside the
/// long walk through the page above instead of after it.
#[actix_rt::test]
async fn the_overview_sorts_and_pages_and_the_keyboard_alone_adds_and_charts() {
    let Some(driver) = chromedriver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let c = browser(&driver, &dir.path().join("profile")).await;
    overview_and_chart(&c, dir.path()).await;
    c.close().await.unwrap();
}

/// On a service whose interval never comes (every sync is asked for): the overview of
/// twelve integrations, sorted and paged by the service; then an integration added and
/// synced with the keyboard alone, whose chart has one point per sync.
async fn overview_and_chart(c: &Client, dir: &std::path::Path) {
    let hec = HecServer::start(TOK);
    seed_a_day(&dir.join("quiet"), &hec.base_url());
    let svc = Siemsync::start(
        &dir.join("quiet"),
        &[("SIEMSYNC_SYNC_INTERVAL_SECS", "3600")],
    );
    let api = svc.api();
    // Besides acme's day: t03, t06, t09 and t12 use a token Splunk does not know, with
    // 3, 6, 9 and 12 events waiting; t04 is turned off; the others are healthy.
    let mut active = Vec::new();
    for i in 1..=12 {
        let account = format!("t{i:02}");
        api.enable_account(&account).await;
        let needs_action = i % 3 == 0;
        if needs_action {
            api.post_audit(&account, &audit_events(&account, 0, i))
                .await;
        }
        let token = if needs_action { WRONG_TOK } else { TOK };
        let id = create_integration(
            &api,
            &account,
            json!({"hec_token": token, "hec_uri": hec.base_url(), "enabled": i != 4}),
        )
        .await;
        if i != 4 {
            active.push((account, id));
        }
    }
    // A sync after siemsync's own "created" event: each backlog is known.
    for (account, id) in &active {
        sync_now(&api, account, id).await;
    }
    api.enable_account("chart").await;

    // The administrator lands on the overview: every integration, worst first.
    c.goto(&svc.url).await.unwrap();
    type_into(c, "signin-token", ADMIN).await;
    click(c, "#signin-form button[type=submit]").await;
    let counts = until_text(c, "#state-counts", "the counts per state", |t| {
        t.contains("4 needs action")
    })
    .await;
    assert!(
        counts.contains("8 healthy") && counts.contains("1 disabled"),
        "{counts}"
    );
    until_text(c, "#fleet-page", "one page", |t| {
        t.contains("13 integrations")
    })
    .await;
    assert_eq!(fleet_rows(c).await.len(), 13);
    assert_eq!(fleet_column(c, 2).await[..4], ["needs action"; 4]);
    // Ten a page: the service sends ten.
    c.find(Locator::Id("fleet-per-page"))
        .await
        .unwrap()
        .select_by_value("10")
        .await
        .unwrap();
    until_text(c, "#fleet-page", "two pages", |t| t.contains("Page 1 of 2")).await;
    assert_eq!(fleet_rows(c).await.len(), 10);
    // Sorted by backlog from the keyboard: the largest first, then the smallest.
    key_on(c, "#fleet [data-sort=backlog]", Key::Enter).await;
    until_js(
        c,
        "sorted by backlog, largest first",
        "return document.querySelector('#fleet th[data-key=backlog]').getAttribute('aria-sort') === 'descending' && document.querySelector('#fleet tbody tr').dataset.account === 't12'",
    )
    .await;
    assert_eq!(fleet_column(c, 0).await[..4], ["t12", "t09", "t06", "t03"]);
    assert_eq!(fleet_column(c, 3).await[0], "13 events");
    screenshot(c, "ui-overview.png").await;
    axe(c, "the overview, sorted").await;
    key_on(c, "#fleet [data-sort=backlog]", Key::Enter).await;
    until_js(
        c,
        "sorted by backlog, smallest first",
        "return document.querySelector('#fleet th[data-key=backlog]').getAttribute('aria-sort') === 'ascending' && document.querySelector('#fleet tbody tr').dataset.account === 't04'",
    )
    .await;
    // The second page is the service's second page.
    key_on(c, "#fleet-next", Key::Enter).await;
    until_text(c, "#fleet-page", "page two", |t| t.contains("Page 2 of 2")).await;
    until_js(
        c,
        "page two's rows",
        "return [...document.querySelectorAll('#fleet tbody tr')].map(r => r.dataset.account).join() === 't06,t09,t12'",
    )
    .await;
    // Never a success first.
    click(c, "#fleet [data-sort=last_success]").await;
    until_js(
        c,
        "sorted by last success",
        "return document.querySelector('#fleet th[data-key=last_success]').getAttribute('aria-sort') === 'ascending' && document.querySelector('#fleet tbody tr').dataset.account === 't03'",
    )
    .await;
    assert!(text(c, "#fleet-page").await.contains("Page 1 of 2"));
    // One state only.
    click(c, "#state-counts [data-state=needs_action]").await;
    until_text(c, "#fleet-page", "needs action only", |t| {
        t.contains("4 of 13 integrations")
    })
    .await;
    assert_eq!(fleet_column(c, 2).await, ["needs action"; 4]);
    click(c, "#state-counts [data-state=needs_action]").await;
    until_text(c, "#fleet-page", "all again", |t| t.contains("Page 1 of 2")).await;
    c.set_window_size(400, 900).await.unwrap();
    fits_and_labelled(c, "the overview").await;
    c.set_window_size(1100, 1300).await.unwrap();

    // The keyboard alone: open the account, add an integration with its Enable toggle on.
    js(
        c,
        "const p = document.getElementById('account-picker'); p.value = 'chart'; return true",
    )
    .await;
    key_on(c, "#picker-open", Key::Enter).await;
    until_text(c, "#empty", "chart's empty list", |t| {
        t.contains("No SIEM integration yet")
    })
    .await;
    key_on(c, "#add", Key::Enter).await;
    until_js(
        c,
        "the form",
        "return document.activeElement.id === 'f-name'",
    )
    .await;
    typing(c, "Chart Splunk").await;
    press(c, &[Key::Tab]).await;
    typing(c, TOK).await;
    press(c, &[Key::Tab]).await;
    press(c, &[Key::Tab]).await;
    typing(c, &hec.base_url()).await;
    for _ in 0..3 {
        press(c, &[Key::Tab]).await;
    }
    assert_eq!(js(c, "return document.activeElement.id").await, "f-enabled");
    press(c, &[Key::Space]).await;
    press(c, &[Key::Tab]).await;
    press(c, &[Key::Tab]).await;
    assert_eq!(js(c, "return document.activeElement.id").await, "save");
    press(c, &[Key::Enter]).await;
    until_text(c, "#notice", "saved from the keyboard", |t| {
        t.contains("Saved")
    })
    .await;
    let saved = api
        .ok("GET", "/api/v1/accounts/chart/integrations", None)
        .await;
    let id = saved[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(saved[0]["enabled"], true);

    // Four syncs: the first at once, then three asked for, the second of them refused.
    history_until(&api, "chart", &id, "the first sync", |h| h.len() == 1).await;
    api.post_audit("chart", &audit_events("c", 0, 5)).await;
    sync_from_card(c, "Sync finished").await;
    hec.set_behaviour(Behaviour::Fail {
        status: 403,
        code: Some(4),
        text: "Invalid token".into(),
    });
    api.post_audit("chart", &audit_events("c", 5, 3)).await;
    sync_from_card(c, "Sync failed").await;
    hec.set_behaviour(Behaviour::Normal);
    sync_from_card(c, "Sync finished").await;
    let syncs = history(&api, "chart", &id).await;
    assert_eq!(syncs.len(), 4, "{syncs:#?}");
    until_js(
        c,
        "four points and one failure on the chart",
        "return document.querySelectorAll('.integration .chart svg [data-point]').length === 4 && document.querySelectorAll('.integration .chart .fail').length === 1",
    )
    .await;
    // The table says the same in words, newest first.
    let rows = js(
        c,
        "return [...document.querySelectorAll('.integration table.syncs tbody tr')].map(r => r.textContent)",
    )
    .await;
    let rows: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows[0].contains("delivered") && rows[0].contains("3 events"),
        "{rows:?}"
    );
    assert!(
        rows[1].contains("failed") && rows[1].contains("HEC token"),
        "{rows:?}"
    );
    assert!(rows[2].contains("delivered"), "{rows:?}");
    // The range switch, then the failure mark, from the keyboard; Escape hides its advice.
    key_on(c, ".integration [data-range='7d']", Key::Enter).await;
    until_text(c, ".integration .chart figcaption", "seven days", |t| {
        t.contains("Last 7 days")
    })
    .await;
    assert_eq!(
        js(c, "return document.querySelector(\".integration [data-range='7d']\").getAttribute('aria-pressed')").await,
        "true"
    );
    press(c, &[Key::Tab]).await;
    let tip = until_js(
        c,
        "the failure's advice on focus",
        "const t = document.querySelector('.integration .chart .tip'); return document.activeElement.classList.contains('fail') && !t.hidden && t.textContent",
    )
    .await;
    assert!(tip.as_str().unwrap().contains("HEC token"), "{tip}");
    screenshot(c, "ui-chart-keyboard.png").await;
    axe(c, "the chart with a failure's advice shown").await;
    press(c, &[Key::Escape]).await;
    until_js(
        c,
        "the advice hidden",
        "return document.querySelector('.integration .chart .tip').hidden",
    )
    .await;
    c.set_window_size(400, 900).await.unwrap();
    fits_and_labelled(c, "the chart").await;
    until_js(
        c,
        "the chart drawn for the narrow window",
        "const p = document.querySelector('.integration .chart .plot'); return Number(p.querySelector('svg').getAttribute('width')) <= p.clientWidth",
    )
    .await;
    js(
        c,
        "document.querySelector('.integration .history').scrollIntoView(); return true",
    )
    .await;
    screenshot(c, "ui-chart-narrow.png").await;
    c.set_window_size(1100, 1300).await.unwrap();

    // A day of acme's syncs, with last night's hour of a busy Splunk: the arrow keys go
    // from the latest failure to the one before.
    c.goto(&format!("{}/#/accounts/acme", svc.url))
        .await
        .unwrap();
    until_js(
        c,
        "a day of syncs",
        "return document.querySelectorAll('.integration .chart svg [data-point]').length > 288",
    )
    .await;
    key_on(c, ".integration [data-range='24h']", Key::Enter).await;
    press(c, &[Key::Tab]).await;
    press(c, &[Key::Tab]).await;
    press(c, &[Key::Left]).await;
    press(c, &[Key::Left]).await;
    let tip = until_js(
        c,
        "a failure's advice",
        "const t = document.querySelector('.integration .chart .tip'); return document.activeElement.classList.contains('fail') && !t.hidden && t.textContent",
    )
    .await;
    assert!(
        tip.as_str().unwrap().contains("Retrying by itself"),
        "{tip}"
    );
    js(
        c,
        "document.querySelector('.integration .history').scrollIntoView(); return true",
    )
    .await;
    screenshot(c, "ui-history.png").await;
    axe(c, "a day of syncs").await;

    // Back on the overview, the feature switch from the keyboard: turning off an
    // account with an integration asks first; cancelling keeps it on.
    key_on(c, "#to-overview", Key::Enter).await;
    let switch = "#accounts tr[data-account=t07] [role=switch]";
    until_js(
        c,
        "t07's switch on",
        &format!("const s = document.querySelector('{switch}'); return s !== null && s.getAttribute('aria-checked') === 'true'"),
    )
    .await;
    key_on(c, switch, Key::Space).await;
    c.dismiss_alert().await.unwrap();
    assert_eq!(
        api.ok("GET", "/api/v1/accounts/t07", None).await["siem_enabled"],
        true,
        "cancelled: still on"
    );
    key_on(c, switch, Key::Space).await;
    c.accept_alert().await.unwrap();
    until_js(
        c,
        "t07's switch off and its integration counted as disabled",
        &format!("return document.querySelector('{switch}').getAttribute('aria-checked') === 'false' && document.getElementById('state-counts').textContent.includes('2 disabled')"),
    )
    .await;
    assert_eq!(
        api.ok("GET", "/api/v1/accounts/t07", None).await["siem_enabled"],
        false
    );
}

/// acme's integration with a day of syncs every 5 minutes, written to the store before
/// the service starts (for the screenshot): events through the day, an hour of a busy
/// Splunk in the night with the backlog growing, a partial sync, and the catch-up.
fn seed_a_day(data: &std::path::Path, hec_uri: &str) {
    use chrono::{Duration as Span, Utc};
    use siemsync::hec::response::{classify, FailureKind};
    use siemsync::model::{AccountId, IntegrationChange, IntegrationPolicy};
    use siemsync::store::{
        Account, Checkpoint, PerSource, Store, SyncError, SyncRecord, SyncResult,
    };
    let store = Store::open(data).unwrap();
    let account = AccountId::parse("acme").unwrap();
    let now = Utc::now();
    store.put_account(&account, &Account::enabled(now)).unwrap();
    let it = IntegrationChange::from_json(&json!({"name": "Main Splunk", "hec_token": TOK,
        "hec_uri": hec_uri, "sources": ["audit", "jobs"], "enabled": true}))
    .and_then(|c| {
        c.create(
            account.clone(),
            now - Span::days(2),
            IntegrationPolicy::default(),
        )
    })
    .unwrap();
    store.put_integration(&it, None).unwrap();
    let busy = classify(503, br#"{"text":"Server is busy","code":9}"#)
        .failure()
        .cloned()
        .unwrap();
    let (mut backlog, start) = (0u64, now - Span::hours(24) + Span::minutes(3));
    for i in 0..288u64 {
        let day = (i as f64 / 288.0 * std::f64::consts::TAU).sin();
        let audit = (14.0 + 10.0 * day).round() as u64 + i * 7 % 5;
        let jobs = 2 + i % 3;
        backlog += audit + jobs;
        let outage = (150..162).contains(&i);
        let (result, sent) = match i {
            _ if outage => (SyncResult::Failed, 0),
            162 => (SyncResult::Partial, 140),
            _ => (SyncResult::Delivered, backlog),
        };
        backlog -= sent;
        let audit_sent = sent * audit / (audit + jobs);
        store
            .record_sync(
                &account,
                &it.id,
                &SyncRecord {
                    started_at: start + Span::minutes(5 * i as i64),
                    duration_ms: 40 + sent * 3 + if outage { 900 } else { 0 },
                    result,
                    events: PerSource {
                        audit: audit_sent,
                        jobs: sent - audit_sent,
                    },
                    bytes: PerSource {
                        audit: audit_sent * 610,
                        jobs: (sent - audit_sent) * 480,
                    },
                    dead_lettered: 0,
                    backlog_after: Some(backlog),
                    error: (result != SyncResult::Delivered).then(|| SyncError {
                        failure: busy.clone(),
                        kind: FailureKind::Transient,
                    }),
                },
            )
            .unwrap();
    }
    // What the checkpoint says after such a day, for the card's figures.
    let day = store.history(&it.id, now - Span::days(2), 1000).unwrap();
    let checkpoint = Checkpoint {
        delivered_audit: day.iter().map(|r| r.events.audit).sum(),
        delivered_jobs: day.iter().map(|r| r.events.jobs).sum(),
        last_success: Some(start + Span::minutes(5 * 287)),
        ..Checkpoint::default()
    };
    store.commit(&account, &it.id, &checkpoint, &[]).unwrap();
    store.flush_now().unwrap();
    drop(store);
    // The store's flush thread lets go of the database a moment after the last handle.
    let start = Instant::now();
    while sled::Config::new().path(data).open().is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the seeded store stays locked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Presses "Sync now" from the keyboard and waits for the card to say how it ended.
async fn sync_from_card(c: &Client, ended: &str) {
    key_on(c, ".integration [data-a=sync]", Key::Enter).await;
    until_text(c, ".integration [data-f=result]", ended, |t| {
        t.contains(ended)
    })
    .await;
}

/// The overview table's rows.
async fn fleet_rows(c: &Client) -> Vec<Value> {
    js(
        c,
        "return [...document.querySelectorAll('#fleet tbody tr')].map(r => r.dataset.account)",
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

/// The text of one column of the overview table, top to bottom.
async fn fleet_column(c: &Client, i: usize) -> Vec<String> {
    js(
        c,
        &format!("return [...document.querySelectorAll('#fleet tbody tr')].map(r => r.cells[{i}].textContent.trim())"),
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_str().unwrap().to_owned())
    .collect()
}

/// Presses keys together (the first ones held, as Shift) on whatever has the focus.
async fn press(c: &Client, keys: &[Key]) {
    let mut seq = KeyActions::new("keyboard".into());
    for k in keys {
        seq = seq.then(KeyAction::Down {
            value: char::from(*k),
        });
    }
    for k in keys.iter().rev() {
        seq = seq.then(KeyAction::Up {
            value: char::from(*k),
        });
    }
    c.perform_actions(seq).await.unwrap();
}

/// Types text into whatever has the focus.
async fn typing(c: &Client, text: &str) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Gives the element the focus and presses a key on it, as a keyboard user would.
async fn key_on(c: &Client, css: &str, key: Key) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("no {css}"))
        .send_keys(&key.to_string())
        .await
        .unwrap_or_else(|e| panic!("{key:?} on {css}: {e}"));
}

/// axe-core, from `npm ci` in tests/ui; `None` (with a note) where it is not installed,
/// except under CI, where its absence is a failure.
fn axe_source() -> Option<&'static str> {
    static SOURCE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/ui/node_modules/axe-core/axe.min.js");
            match std::fs::read_to_string(&path) {
                Ok(s) => Some(s),
                Err(e) => {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "axe-core is missing ({}: {e}): .ci/run installs it with `npm ci --prefix tests/ui`",
                        path.display()
                    );
                    eprintln!("SKIPPED the accessibility checks: axe-core is not installed (npm ci --prefix tests/ui)");
                    None
                }
            }
        })
        .as_deref()
}

/// Runs axe-core on the page as it is: no violation of serious or critical impact.
async fn axe(c: &Client, what: &str) {
    let Some(source) = axe_source() else { return };
    let loaded = js(c, "return typeof window.axe !== 'undefined'").await;
    if loaded != json!(true) {
        c.execute(&format!("{source}\n;return true"), vec![])
            .await
            .unwrap_or_else(|e| panic!("injecting axe-core: {e}"));
    }
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']})
               .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => ({id: v.id, impact: v.impact, help: v.help,
                             nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)}))))
               .catch(e => done([{id: 'axe failed', help: String(e)}]));",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("running axe-core on {what}: {e}"));
    assert_eq!(found, json!([]), "axe-core on {what}: {found:#}");
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
