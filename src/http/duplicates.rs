//! The warning that another integration of the same account already sends the same
//! data to the same collector with the same token: while both are enabled, Splunk
//! receives those events twice. Computed here, since tokens never reach a caller.

use crate::model::Integration;
use serde_json::{json, Value};

/// The warnings about `it` among the account's integrations (`all` may include `it`).
pub fn warnings(all: &[Integration], it: &Integration) -> Vec<Value> {
    let uri = &it.hec_uri;
    let same: Vec<&Integration> = all
        .iter()
        .filter(|o| {
            o.id != it.id
                && o.account == it.account
                && o.hec_token == it.hec_token
                && o.sources.iter().any(|s| it.wants(*s))
                && o.hec_uri.same_collector(uri)
        })
        .collect();
    if same.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = same.iter().map(|o| format!("{:?}", o.name)).collect();
    let who = match names.as_slice() {
        [one] => format!("The integration {one}"),
        many => format!("The integrations {}", many.join(", ")),
    };
    let verb = if same.len() == 1 { "sends" } else { "send" };
    vec![json!({
        "kind": "duplicate",
        "message": format!("{who} of this account already {verb} to this HEC URI with this token: while both are enabled, Splunk receives the same events twice. Delete or disable one of them, or use another token."),
        "integrations": same.iter().map(|o| json!({"id": o.id, "name": o.name})).collect::<Vec<_>>(),
    })]
}

/// An integration's API view, with its `warnings`.
pub fn view(all: &[Integration], it: &Integration) -> Value {
    let mut v = it.to_view();
    v["warnings"] = Value::Array(warnings(all, it));
    v
}
