//! The web page, driven in Debian's headless Chromium through chromedriver:
//! sign in, add an integration through the form, watch it turn healthy, break it,
//! turn it off, delete it, and the "feature not enabled" page.
//! `.ci/run` installs chromium and chromium-driver.

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use siemsync::testkit::HecServer;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOK: &str = "0badc0de-0000-4000-8000-00000000beef";

struct ChromeDriver(Child, u16);

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free port; `None` (with a note) where it is not installed,
/// except under CI, where its absence is a failure.
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
                 "--disable-sync", "--window-size=1100,900", format!("--user-data-dir={}", profile.display())]
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
        actix_rt::time::sleep(Duration::from_millis(200)).await;
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
        .unwrap();
}

fn artifact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[actix_rt::test]
async fn a_customer_manages_an_integration_in_the_browser() {
    let Some(driver) = chromedriver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(&dir.path().join("data"), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let token = api
        .ok(
            "POST",
            "/api/v1/accounts/acme/tokens",
            Some(json!({"name": "browser"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = browser(&driver, &dir.path().join("profile")).await;

    // Sign in with the account's token.
    c.goto(&svc.url).await.unwrap();
    type_into(&c, "signin-token", &token).await;
    click(&c, "#signin-form button[type=submit]").await;
    until_text(&c, "#who-text", "the account name", |t| t.contains("acme")).await;
    until_text(&c, "#empty", "the empty list", |t| {
        t.contains("No SIEM integration yet")
    })
    .await;

    // Add one through the form; a wrong URI is answered beside the URI field.
    click(&c, "#add").await;
    type_into(&c, "f-name", "Main Splunk").await;
    type_into(&c, "f-hec_token", TOK).await;
    type_into(&c, "f-hec_uri", "ftp://splunk.example.com").await;
    click(&c, "#f-enabled").await;
    assert!(text(&c, "#note-token")
        .await
        .contains("source type must be _json"));
    click(&c, "#save").await;
    let err = until_text(&c, "#err-hec_uri", "the URI error", |t| !t.is_empty()).await;
    assert!(err.contains("must use https://"), "{err}");
    assert_eq!(
        c.find(Locator::Id("f-hec_uri"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert_eq!(text(&c, "#err-name").await, "", "other fields stay quiet");
    std::fs::write(artifact("ui-form.png"), c.screenshot().await.unwrap()).unwrap();
    type_into(&c, "f-hec_uri", &hec.base_url()).await;
    click(&c, "#save").await;
    until_text(&c, ".integration h3", "the new card", |t| {
        t == "Main Splunk"
    })
    .await;

    // Events posted by the platform arrive; the badge turns healthy and the count rises.
    api.post_audit("acme", &audit_events("e", 0, 25)).await;
    until_text(&c, ".integration .badge", "healthy", |t| t == "healthy").await;
    until_text(
        &c,
        ".integration [data-f=delivered]",
        "delivered count",
        |t| t.parse::<u64>().unwrap_or(0) >= 25,
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
    until_text(&c, ".integration [data-f=last_success]", "last sync", |t| {
        t == "just now"
    })
    .await;
    std::fs::write(artifact("ui-list.png"), c.screenshot().await.unwrap()).unwrap();

    // Test connection shows its result.
    click(&c, ".integration [data-a=test]").await;
    until_text(&c, ".integration [data-f=result]", "the test result", |t| {
        t.contains("The connection works")
    })
    .await;

    // Break the token: the badge turns failing, with the advice.
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
    type_into(&c, "f-hec_token", "99999999-0000-4000-8000-000000000000").await;
    click(&c, "#save").await;
    api.post_audit("acme", &audit_events("e", 25, 5)).await;
    until_text(&c, ".integration .badge", "failing", |t| t == "failing").await;
    until_text(&c, ".integration [data-f=advice]", "the advice", |t| {
        t.contains("does not know this HEC token")
    })
    .await;

    // Toggle it off.
    click(&c, ".integration [data-a=edit]").await;
    click(&c, "#f-enabled").await;
    click(&c, "#save").await;
    until_text(&c, ".integration .badge", "disabled", |t| t == "disabled").await;
    assert_eq!(text(&c, ".integration [data-f=enabled]").await, "No");

    // Readable at 400 px: nothing wider than the window.
    c.set_window_size(400, 900).await.unwrap();
    let overflow = c
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap();
    let inner = c.execute("return window.innerWidth", vec![]).await.unwrap();
    assert!(
        overflow.as_f64().unwrap() <= inner.as_f64().unwrap(),
        "page wider than 400 px: {overflow} > {inner}"
    );
    std::fs::write(artifact("ui-narrow.png"), c.screenshot().await.unwrap()).unwrap();
    // Every control has a label.
    let unlabeled = c
        .execute(
            "return [...document.querySelectorAll('input, button')].filter(e => e.offsetParent !== null && \
             !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabeled, json!(0));
    c.set_window_size(1100, 900).await.unwrap();

    // Delete, after confirming.
    click(&c, ".integration [data-a=delete]").await;
    c.accept_alert().await.unwrap();
    until_text(&c, "#empty", "the list empty again", |t| {
        t.contains("No SIEM integration yet")
    })
    .await;
    assert_eq!(
        api.ok("GET", "/api/v1/accounts/acme/integrations", None)
            .await,
        json!([])
    );

    // An account without the feature is told to contact support.
    click(&c, "#signout").await;
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
    c.close().await.unwrap();
}
