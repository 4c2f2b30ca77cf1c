//! A SIEM integration: where one account's events go, and which of them.

use super::ca::parse_ca_pem;
use super::fields::{FieldError, Fields};
use super::hec_uri::HecUri;
use super::ids::AccountId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A data source an integration can forward.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The platform's audit log.
    Audit,
    /// The platform's job monitor.
    Jobs,
}

impl Source {
    /// Every source, in the order they are delivered.
    pub const ALL: [Source; 2] = [Source::Audit, Source::Jobs];

    /// The source's name in the API and in Splunk's `source` (`siemsync:<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Audit => "audit",
            Source::Jobs => "jobs",
        }
    }
}

/// The longest Splunk index name an integration may set.
pub const MAX_INDEX_LEN: usize = 80;

/// One customer's integration as stored (the HEC token in full: never serialise this to a caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    /// Its id, given by siemsync (or made from account and name for the config file's).
    pub id: Uuid,
    /// The account whose events it sends.
    pub account: AccountId,
    /// The customer's name for it.
    pub name: String,
    /// The HEC token, in full: kept from callers, sealed at rest when a key is set.
    pub hec_token: String,
    /// Parsed when saved; stored and shown as the customer entered it.
    pub hec_uri: HecUri,
    /// What it sends.
    pub sources: Vec<Source>,
    /// The customer's Enable toggle.
    pub enabled: bool,
    /// The Splunk index to write to; `None`: the token's default.
    pub index: Option<String>,
    /// Whether Splunk's certificate is checked (off only where the operator allows it).
    pub tls_verify: bool,
    /// A CA bundle to trust for this Splunk beside the public roots.
    pub ca_pem: Option<String>,
    /// Whether a post counts as delivered only once the indexers acknowledge it.
    pub indexer_ack: bool,
    /// Gzip request bodies (`Content-Encoding: gzip`); on unless a proxy in between cannot take it.
    #[serde(default = "yes")]
    pub gzip: bool,
    /// Declared in the service's config file: changed there (and by reload), not through the API.
    #[serde(default)]
    pub file_managed: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Counts the stored changes: each write is made only over the version it was
    /// based on (see `Store::put_integration`). Records from before versions read as 0.
    #[serde(default)]
    pub version: u64,
}

fn yes() -> bool {
    true
}

/// What the operator's config allows integrations to ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntegrationPolicy {
    /// Whether an integration may turn certificate checks off.
    pub allow_insecure_tls: bool,
}

/// The fields of a create, replace or change body; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct IntegrationChange {
    name: Option<String>,
    hec_token: Option<String>,
    hec_uri: Option<HecUri>,
    sources: Option<Vec<Source>>,
    enabled: Option<bool>,
    index: Option<Option<String>>,
    tls_verify: Option<bool>,
    ca_pem: Option<Option<String>>,
    indexer_ack: Option<bool>,
    gzip: Option<bool>,
}

impl IntegrationChange {
    /// Reads a request body; values are checked here, completeness by the caller.
    pub fn from_json(body: &Value) -> Result<IntegrationChange, FieldError> {
        let mut f = Fields::new(body, None)?;
        let name = match f.text("name")? {
            Some(n) if n.chars().count() > 100 => {
                return Err(f.error("name", "must be at most 100 characters"))
            }
            n => n.map(|n| n.trim().to_owned()),
        };
        let hec_token = match f.string("hec_token")? {
            Some(t) if t.trim().is_empty() => return Err(f.error("hec_token", "must not be empty")),
            Some(t) if t.len() > 256 || t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(f.error(
                    "hec_token",
                    "must be the token value from Splunk, without spaces (at most 256 characters)",
                ))
            }
            t => t,
        };
        let hec_uri = match f.string("hec_uri")? {
            Some(u) => Some(HecUri::parse(&u).map_err(|e| f.error("hec_uri", e.to_string()))?),
            None => None,
        };
        let sources = read_sources(&mut f)?.map(|mut list| {
            list.sort();
            list
        });
        let enabled = f.bool("enabled")?;
        let explicit_null = |f: &Fields, k: &str| f.has(k).then_some(None);
        let index = match f.string("index")? {
            Some(i) => {
                let ok = i.len() <= MAX_INDEX_LEN
                    && i.bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    && i.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !ok {
                    return Err(f.error("index", format!("is not a Splunk index name (lowercase letters, digits, '_' and '-'): {i:?}")));
                }
                Some(Some(i))
            }
            None => explicit_null(&f, "index"),
        };
        let tls_verify = f.bool("tls_verify")?;
        let ca_pem = match f.string("ca_pem")? {
            Some(p) => {
                parse_ca_pem(&p).map_err(|e| f.error("ca_pem", e.to_string()))?;
                Some(Some(p))
            }
            None => explicit_null(&f, "ca_pem"),
        };
        let indexer_ack = f.bool("indexer_ack")?;
        let gzip = f.bool("gzip")?;
        for read_only in [
            "id",
            "created_at",
            "updated_at",
            "account",
            "managed_by",
            "version",
        ] {
            // Echoing back a GET response is fine; changing these is not possible.
            f.get(read_only);
        }
        f.finish()?;
        Ok(IntegrationChange {
            name,
            hec_token,
            hec_uri,
            sources,
            enabled,
            index,
            tls_verify,
            ca_pem,
            indexer_ack,
            gzip,
        })
    }

    /// A new integration from a create body: name, token, URI and sources are required.
    pub fn create(
        self,
        account: AccountId,
        now: DateTime<Utc>,
        policy: IntegrationPolicy,
    ) -> Result<Integration, FieldError> {
        let missing = |f: &str| FieldError {
            index: None,
            field: Some(f.to_owned()),
            problem: "is required".into(),
        };
        let it = Integration {
            id: Uuid::new_v4(),
            account,
            name: self.name.ok_or_else(|| missing("name"))?,
            hec_token: self.hec_token.ok_or_else(|| missing("hec_token"))?,
            hec_uri: self.hec_uri.ok_or_else(|| missing("hec_uri"))?,
            sources: self.sources.ok_or_else(|| missing("sources"))?,
            enabled: self.enabled.unwrap_or(false),
            index: self.index.flatten(),
            tls_verify: self.tls_verify.unwrap_or(true),
            ca_pem: self.ca_pem.flatten(),
            indexer_ack: self.indexer_ack.unwrap_or(false),
            gzip: self.gzip.unwrap_or(true),
            file_managed: false,
            created_at: now,
            updated_at: now,
            version: 0,
        };
        it.check(policy)?;
        Ok(it)
    }

    /// The stored token goes only to the server it was entered for: a change of
    /// the HEC URI's scheme, host or port must give it again (a path may change
    /// without). Otherwise whoever may edit an integration could point it at their
    /// own server and read the token there.
    fn keeps_token_with_its_destination(&self, old: &Integration) -> Result<(), FieldError> {
        let (Some(uri), None) = (&self.hec_uri, &self.hec_token) else {
            return Ok(());
        };
        if uri.same_destination(&old.hec_uri) {
            Ok(())
        } else {
            Err(FieldError {
                index: None,
                field: Some("hec_token".into()),
                problem: "is required when the HEC URI's scheme, host or port changes: the stored token is sent only to the server it was entered for, so enter it again (or a new one)".into(),
            })
        }
    }

    /// A full replacement (PUT). The token may be left out to keep the stored one,
    /// since a client can never read it back, unless the destination changes.
    pub fn replace(
        self,
        old: &Integration,
        now: DateTime<Utc>,
        policy: IntegrationPolicy,
    ) -> Result<Integration, FieldError> {
        self.keeps_token_with_its_destination(old)?;
        let mut fresh = IntegrationChange {
            hec_token: Some(
                self.hec_token
                    .clone()
                    .unwrap_or_else(|| old.hec_token.clone()),
            ),
            ..self
        }
        .create(old.account.clone(), now, policy)?;
        fresh.id = old.id;
        fresh.created_at = old.created_at;
        fresh.version = old.version;
        Ok(fresh)
    }

    /// A partial change (PATCH): only the given fields change; `null` clears `index`
    /// and `ca_pem`. A new destination needs the token too.
    pub fn apply(
        self,
        old: &Integration,
        now: DateTime<Utc>,
        policy: IntegrationPolicy,
    ) -> Result<Integration, FieldError> {
        self.keeps_token_with_its_destination(old)?;
        let mut it = old.clone();
        if let Some(v) = self.name {
            it.name = v;
        }
        if let Some(v) = self.hec_token {
            it.hec_token = v;
        }
        if let Some(v) = self.hec_uri {
            it.hec_uri = v;
        }
        if let Some(v) = self.sources {
            it.sources = v;
        }
        if let Some(v) = self.enabled {
            it.enabled = v;
        }
        if let Some(v) = self.index {
            it.index = v;
        }
        if let Some(v) = self.tls_verify {
            it.tls_verify = v;
        }
        if let Some(v) = self.ca_pem {
            it.ca_pem = v;
        }
        if let Some(v) = self.indexer_ack {
            it.indexer_ack = v;
        }
        if let Some(v) = self.gzip {
            it.gzip = v;
        }
        it.updated_at = now;
        it.check(policy)?;
        Ok(it)
    }
}

impl Integration {
    /// Rules that span fields or depend on the operator's config.
    fn check(&self, policy: IntegrationPolicy) -> Result<(), FieldError> {
        let field = |f: &str, p: &str| FieldError {
            index: None,
            field: Some(f.to_owned()),
            problem: p.to_owned(),
        };
        if !self.tls_verify && !policy.allow_insecure_tls {
            return Err(field(
                "tls_verify",
                "cannot be false on this service: the operator does not allow unverified TLS; give your CA certificate in ca_pem instead",
            ));
        }
        Ok(())
    }

    /// The HEC URI (also the field): kept for callers written before it was typed.
    pub fn hec_uri(&self) -> &HecUri {
        &self.hec_uri
    }

    /// Whether it sends `source`.
    pub fn wants(&self, source: Source) -> bool {
        self.sources.contains(&source)
    }

    /// Whether a change from `self` to `new` needs the integration's actor restarted.
    pub fn delivery_differs(&self, new: &Integration) -> bool {
        let strip = |i: &Integration| Integration {
            name: String::new(),
            updated_at: i.created_at,
            version: 0,
            ..i.clone()
        };
        strip(self) != strip(new)
    }

    /// The API view: everything but the token, which shows only its last 4 characters.
    pub fn to_view(&self) -> IntegrationView {
        IntegrationView {
            id: self.id,
            account: self.account.clone(),
            name: self.name.clone(),
            hec_token: mask_token(&self.hec_token),
            hec_uri: self.hec_uri.clone(),
            sources: self.sources.clone(),
            enabled: self.enabled,
            index: self.index.clone(),
            tls_verify: self.tls_verify,
            ca_pem: self.ca_pem.clone(),
            indexer_ack: self.indexer_ack,
            gzip: self.gzip,
            managed_by: if self.file_managed {
                ManagedBy::ConfigFile
            } else {
                ManagedBy::Api
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

/// Where an integration is managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum ManagedBy {
    /// Made through the API (or the page): changed there.
    #[serde(rename = "api")]
    Api,
    /// Declared by the operator in the config file: read-only in the API.
    #[serde(rename = "config file")]
    ConfigFile,
}

/// An integration as the API shows it: everything but the token, which shows only
/// its last 4 characters.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IntegrationView {
    /// Made by siemsync.
    pub id: Uuid,
    /// The account it belongs to.
    pub account: AccountId,
    /// The name the customer gave it.
    pub name: String,
    /// `****` and the token's last 4 characters (`****` alone for a short token).
    #[schema(example = "****9012")]
    pub hec_token: String,
    /// The HEC URI, as entered.
    #[schema(value_type = String, example = "https://splunk.example.com:8088")]
    pub hec_uri: HecUri,
    /// The data sources it sends.
    pub sources: Vec<Source>,
    /// Its Enable toggle.
    pub enabled: bool,
    /// The Splunk index (`null`: the token's default).
    pub index: Option<String>,
    /// Whether Splunk's certificate is checked.
    pub tls_verify: bool,
    /// The private CA's PEM bundle, if any.
    pub ca_pem: Option<String>,
    /// Whether indexer acknowledgement is on.
    pub indexer_ack: bool,
    /// Whether posts are gzip-compressed.
    pub gzip: bool,
    /// `api`, or `config file` (read-only here).
    pub managed_by: ManagedBy,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// How many stored changes it has had (1 when created).
    pub version: u64,
}

/// Reads a `sources` list: known names only, each once, in the order given, at least one.
pub fn read_sources(f: &mut Fields) -> Result<Option<Vec<Source>>, FieldError> {
    let Some(list) = f.string_list("sources")? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for s in &list {
        let src = Source::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                f.error(
                    "sources",
                    format!("may hold only \"audit\" and \"jobs\", found {s:?}"),
                )
            })?;
        if !out.contains(&src) {
            out.push(src);
        }
    }
    if out.is_empty() {
        return Err(f.error(
            "sources",
            "must name at least one data source: \"audit\", \"jobs\"",
        ));
    }
    Ok(Some(out))
}

/// `****abcd`: enough for a person to recognise their token, never enough to use it.
pub fn mask_token(token: &str) -> String {
    let n = token.chars().count();
    if n >= 12 {
        let tail: String = token.chars().skip(n - 4).collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> Result<Integration, String> {
        IntegrationChange::from_json(&v)
            .and_then(|c| {
                c.create(
                    AccountId::parse("acme").unwrap(),
                    Utc::now(),
                    IntegrationPolicy::default(),
                )
            })
            .map_err(|e| e.to_string())
    }

    fn good() -> Value {
        json!({"name": "Main Splunk", "hec_token": "11111111-2222-3333-4444-555555556789",
               "hec_uri": "https://splunk.example.com:8088", "sources": ["jobs", "audit"], "enabled": true})
    }

    #[test]
    fn an_integration_is_created_from_the_product_page_fields() {
        let it = create(good()).unwrap();
        assert_eq!(it.sources, vec![Source::Audit, Source::Jobs]);
        assert!(it.tls_verify && it.enabled && !it.indexer_ack && it.gzip);
        let view = serde_json::to_value(it.to_view()).unwrap();
        assert_eq!(view["hec_token"], "****6789");
        assert!(!view.to_string().contains("11111111-2222"));
    }

    #[test]
    fn an_incomplete_or_wrong_integration_is_refused_by_field() {
        let without = |k: &str| {
            let mut v = good();
            v.as_object_mut().unwrap().remove(k);
            create(v).unwrap_err()
        };
        assert_eq!(without("hec_token"), "`hec_token` is required");
        assert_eq!(without("hec_uri"), "`hec_uri` is required");
        let with = |k: &str, val: Value| {
            let mut v = good();
            v[k] = val;
            create(v).unwrap_err()
        };
        assert!(with("hec_uri", json!("ftp://splunk.example.com"))
            .starts_with("`hec_uri` must use https://"));
        assert!(with(
            "hec_uri",
            json!("https://s.example.com/services/collector/raw")
        )
        .contains("/raw"));
        assert!(with("sources", json!([])).starts_with("`sources` must name at least one"));
        assert!(with("sources", json!(["audit", "logs"])).contains("\"logs\""));
        assert!(with("tls_verify", json!(false)).starts_with("`tls_verify` cannot be false"));
        assert!(with("index", json!("Main")).starts_with("`index` is not a Splunk index name"));
        assert!(with("ca_pem", json!("not a pem")).starts_with("`ca_pem`"));
    }

    #[test]
    fn a_patch_changes_only_what_it_names_and_null_clears() {
        let mut v = good();
        v["index"] = json!("security");
        let old = create(v).unwrap();
        let new = IntegrationChange::from_json(&json!({"enabled": false, "index": null}))
            .unwrap()
            .apply(&old, Utc::now(), IntegrationPolicy::default())
            .unwrap();
        assert!(!new.enabled);
        assert_eq!(new.index, None);
        assert_eq!(new.hec_token, old.hec_token);
        assert!(old.delivery_differs(&new));
        let renamed = IntegrationChange::from_json(&json!({"name": "Other"}))
            .unwrap()
            .apply(&old, Utc::now(), IntegrationPolicy::default())
            .unwrap();
        assert!(!old.delivery_differs(&renamed));
    }

    #[test]
    fn a_new_destination_needs_the_token_again_but_a_new_path_does_not() {
        let old = create(good()).unwrap();
        let policy = IntegrationPolicy::default();
        let patch = |v: Value| {
            IntegrationChange::from_json(&v)
                .unwrap()
                .apply(&old, Utc::now(), policy)
                .map_err(|e| e.to_string())
        };
        let put = |v: Value| {
            let mut body = good();
            body.as_object_mut().unwrap().remove("hec_token");
            body.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            IntegrationChange::from_json(&body)
                .unwrap()
                .replace(&old, Utc::now(), policy)
                .map_err(|e| e.to_string())
        };
        for uri in [
            "https://attacker.example.net:8088",
            "https://splunk.example.com:9999",
            "http://splunk.example.com:8088",
            // Another path that also changes the port implied (443 instead of 8088).
            "https://splunk.example.com/services/collector",
        ] {
            for result in [patch(json!({"hec_uri": uri})), put(json!({"hec_uri": uri}))] {
                let e = result.unwrap_err();
                assert!(e.starts_with("`hec_token` is required"), "{uri}: {e}");
            }
            let moved =
                patch(json!({"hec_uri": uri, "hec_token": "new-token-value-1234"})).unwrap();
            assert_eq!(moved.hec_uri.as_str(), uri);
            assert_eq!(moved.hec_token, "new-token-value-1234");
        }
        for uri in [
            "https://splunk.example.com:8088/services/collector/event",
            "HTTPS://Splunk.Example.COM:8088",
            "https://splunk.example.com",
            "https://splunk.example.com:8088/proxy/services/collector",
        ] {
            assert_eq!(
                patch(json!({"hec_uri": uri})).unwrap().hec_token,
                old.hec_token
            );
            assert_eq!(
                put(json!({"hec_uri": uri})).unwrap().hec_token,
                old.hec_token
            );
        }
    }

    #[test]
    fn short_tokens_are_masked_entirely() {
        assert_eq!(mask_token("abc"), "****");
        assert_eq!(mask_token("abcdefghijkl"), "****ijkl");
    }
}
