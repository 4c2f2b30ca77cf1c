//! The published contract: the OpenAPI document siemsync serves is valid OpenAPI 3.1,
//! describes every route the service registers (and nothing it does not), and the
//! reference page that renders it is served and linked from the web page. What
//! schemathesis found against a live service (`scripts/contract.sh`) has a test here too.

use crate::common::*;
use serde_json::{json, Value};
use siemsync::http::{Verb, ROUTES};

/// The OpenAPI Initiative's JSON Schema of OpenAPI 3.1 documents (2022-10-07), as
/// `openapi-spec-validator` ships it.
const OAS_3_1_SCHEMA: &str = include_str!("data/oas-3.1-schema-2022-10-07.json");

async fn served_document(api: &Api) -> Value {
    // No token: the contract is public.
    let (status, doc) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

fn method_of(verb: Verb) -> &'static str {
    match verb {
        Verb::GetOrHead | Verb::Get => "get",
        Verb::Post => "post",
        Verb::Put => "put",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
    }
}

/// The routes the document lacks, and the operations it has that no route serves.
fn differences(doc: &Value) -> (Vec<String>, Vec<String>) {
    let mut undocumented = Vec::new();
    for r in ROUTES {
        let method = method_of(r.verb);
        if doc["paths"][r.path][method].is_null() {
            undocumented.push(format!("{} {}", method.to_uppercase(), r.path));
        }
    }
    let mut unserved = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "patch", "delete", "head", "options"] {
            if item.get(method).is_some()
                && !ROUTES
                    .iter()
                    .any(|r| r.path == path && method_of(r.verb) == method)
            {
                unserved.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    (undocumented, unserved)
}

#[actix_rt::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let doc = served_document(&svc.api()).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let oas: Value = serde_json::from_str(OAS_3_1_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&oas).expect("the OAS 3.1 schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not valid OpenAPI 3.1: {errors:#?}");
    // The OAS schema leaves Schema Objects to JSON Schema 2020-12: each must be one.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let checked = jsonschema::draft202012::meta::validate(schema);
        assert!(checked.is_ok(), "schema {name}: {checked:?}");
    }
    // Every operation has a unique id (clients are generated from them).
    let mut ids = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().expect("operationId").to_owned();
            assert!(!ids.contains(&id), "operationId {id} twice");
            ids.push(id);
        }
    }
}

#[actix_rt::test]
async fn every_registered_route_is_in_the_document_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let doc = served_document(&svc.api()).await;
    let (undocumented, unserved) = differences(&doc);
    assert!(
        undocumented.is_empty(),
        "routes registered in http/mod.rs but missing from the API document: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "operations in the API document that no route serves: {unserved:?}"
    );
}

#[actix_rt::test]
async fn every_operation_describes_its_errors_with_the_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let doc = served_document(&svc.api()).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r != &json!({})));
            let responses = op["responses"].as_object().unwrap();
            if secured {
                for code in ["401", "403"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path} lacks 404");
            }
            for (code, r) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    let schema = &r["content"]["application/json"]["schema"]["$ref"];
                    // /healthz's 503 is its own degraded answer, not an error.
                    if path != "/healthz" {
                        assert_eq!(
                            schema, "#/components/schemas/ErrorBody",
                            "{method} {path} {code}"
                        );
                    }
                }
            }
        }
    }
    // The three roles, as bearer schemes.
    for role in ["admin", "ingest", "account"] {
        assert_eq!(
            doc["components"]["securitySchemes"][role]["scheme"], "bearer",
            "{role}"
        );
    }
}

#[actix_rt::test]
async fn the_reference_page_is_served_and_linked_from_the_web_page() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let (status, page) = api.call("GET", "/", None, None).await;
    assert_eq!(status, 200);
    assert!(
        page.as_str().unwrap().contains("href=\"/api/v1/docs\""),
        "the footer links the reference"
    );
    let (status, reference) = api.call("GET", "/api/v1/docs", None, None).await;
    assert_eq!(status, 200);
    let reference = reference.as_str().unwrap();
    assert!(
        reference.contains("/api/v1/docs/reference.js"),
        "{reference}"
    );
    assert!(!reference.contains("https://"), "nothing from elsewhere");
    let (status, script) = api
        .call("GET", "/api/v1/docs/reference.js", None, None)
        .await;
    assert_eq!(status, 200);
    assert!(script.as_str().unwrap().contains("/api/v1/openapi.json"));
}

// What schemathesis found against the live service, each kept as a promise here.

#[actix_rt::test]
async fn a_dead_letter_limit_outside_1_to_1000_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    let id = api
        .add_integration(
            "acme",
            "abcdef01-2345-6789-abcd-ef0123456789",
            &format!("http://127.0.0.1:{}", closed_port()),
        )
        .await;
    let path = format!("/api/v1/accounts/acme/integrations/{id}/dead-letters");
    for bad in ["0", "1001", "-1", "many"] {
        let (status, body) = api.admin("GET", &format!("{path}?limit={bad}"), None).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("`limit`"),
            "{body}"
        );
    }
    let (status, body) = api.admin("GET", &format!("{path}?limit=1000"), None).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn a_known_path_asked_with_another_method_answers_405_with_allow() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let client = awc::Client::default();
    for (method, path, allow) in [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/api/v1/accounts/acme", "PUT, GET, HEAD"),
        (
            "PATCH",
            "/api/v1/accounts/acme/integrations",
            "GET, HEAD, POST",
        ),
    ] {
        let mut resp = client
            .request(
                awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", svc.url),
            )
            .insert_header(("Authorization", format!("Bearer {ADMIN}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        assert_eq!(
            resp.headers().get("allow").unwrap(),
            allow,
            "{method} {path}"
        );
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    // An unknown path is still 404.
    let (status, _) = svc.api().admin("GET", "/api/v1/nothing-here", None).await;
    assert_eq!(status, 404);
}
