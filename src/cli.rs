//! `siemsync status`: the table of every integration, the top accounts and the
//! nodes, from a running service.

use crate::logsafe::clean;
use chrono::{DateTime, Utc};
use serde_json::Value;

fn ago(t: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(t) = t.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return "never".into();
    };
    let s = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// Renders the status list of `GET /api/v1/integrations` as aligned columns.
pub fn status_table(list: &[Value], now: DateTime<Utc>) -> String {
    let mut rows = vec![[
        "ACCOUNT",
        "NAME",
        "STATE",
        "BACKLOG",
        "LAST SUCCESS",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for st in list {
        let err = &st["last_error"];
        let last_error = if err.is_null() {
            "-".to_owned()
        } else {
            let code = err["code"]
                .as_i64()
                .map(|c| format!(" (HEC code {c})"))
                .unwrap_or_default();
            format!(
                "{}{code}: {}",
                clean(err["text"].as_str().unwrap_or("")),
                clean(err["advice"].as_str().unwrap_or(""))
            )
        };
        rows.push(vec![
            st["account"].as_str().unwrap_or("?").to_owned(),
            // Names and Splunk's text come from outside: one row each, no escape sequences.
            clean(st["name"].as_str().unwrap_or("?")).to_string(),
            st["state"].as_str().unwrap_or("?").to_owned(),
            st["backlog"]["events"].as_u64().unwrap_or(0).to_string(),
            ago(st["last_success"].as_str(), now),
            last_error,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[c], w = w));
        }
        out.push_str(&r[5]);
        out.push('\n');
    }
    out
}

/// The `limit` accounts with the largest backlog (from `GET /api/v1/accounts`), as
/// aligned columns under a TOP ACCOUNTS BY BACKLOG heading; accounts without a
/// backlog are left out.
pub fn top_accounts(accounts: &[Value], limit: usize) -> String {
    let bytes = |a: &Value, k: &str| a["usage"][k].as_u64().unwrap_or(0);
    let mut top: Vec<&Value> = accounts
        .iter()
        .filter(|a| bytes(a, "backlog_bytes") > 0)
        .collect();
    top.sort_by_key(|a| std::cmp::Reverse(bytes(a, "backlog_bytes")));
    top.truncate(limit);
    let mut out = String::from("\nTOP ACCOUNTS BY BACKLOG\n");
    if top.is_empty() {
        out.push_str("(no account has a backlog)\n");
        return out;
    }
    out.push_str(&format!(
        "{:<24}  {:>14}  {:>14}  {:>14}  {:>14}  {:>12}\n",
        "ACCOUNT", "BACKLOG BYTES", "STORED BYTES", "QUOTA BYTES", "STORED % QUOTA", "DROPPED"
    ));
    for a in top {
        let (stored, quota) = (bytes(a, "stored_bytes"), bytes(a, "max_backlog_bytes"));
        let drops = &a["usage"]["quota_drops"];
        out.push_str(&format!(
            "{:<24}  {:>14}  {:>14}  {:>14}  {:>13}%  {:>12}\n",
            a["account"].as_str().unwrap_or("?"),
            bytes(a, "backlog_bytes"),
            stored,
            quota,
            // The quota is enforced on the stored bytes, so that is what fills it.
            (stored.saturating_mul(100)).checked_div(quota).unwrap_or(0),
            drops["events"].as_u64().unwrap_or(0) + drops["jobs"].as_u64().unwrap_or(0),
        ));
    }
    out
}

/// The live nodes (from `GET /api/v1/nodes`) as aligned columns under a NODES
/// heading: name (`*`: the node asked), shards, integrations, last lease renewal.
pub fn nodes_table(nodes: &[Value], now: DateTime<Utc>) -> String {
    let mut out = String::from("\nNODES\n");
    out.push_str(&format!(
        "{:<2}{:<32}  {:<8}  {:>7}  {:>12}  {}\n",
        "", "NODE", "STORE", "SHARDS", "INTEGRATIONS", "LAST RENEWAL"
    ));
    for n in nodes {
        let renewal = match n["last_renewal"].as_str() {
            Some(t) => ago(Some(t), now),
            None => "-".into(),
        };
        out.push_str(&format!(
            "{:<2}{:<32}  {:<8}  {:>7}  {:>12}  {}{}\n",
            if n["this_node"].as_bool() == Some(true) {
                "*"
            } else {
                ""
            },
            clean(n["name"].as_str().unwrap_or("?")),
            clean(n["store"].as_str().unwrap_or("?")),
            n["shards"].as_u64().map_or("-".into(), |s| s.to_string()),
            n["integrations"].as_u64().unwrap_or(0),
            renewal,
            if n["stopping"].as_bool() == Some(true) {
                " (stopping)"
            } else {
                ""
            },
        ));
    }
    out
}

/// What `siemsync status` shows instead of the nodes table when the server answers
/// 404 for `GET /api/v1/nodes`: a server older than the nodes view.
pub fn nodes_not_served() -> String {
    "\nNODES\n(not shown: the server answered 404 for /api/v1/nodes, so it is older than the nodes view; upgrade it to see its nodes)\n".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_nodes_table_marks_this_node_and_shows_shards_integrations_and_renewal() {
        let now: DateTime<Utc> = "2026-11-25T10:01:00Z".parse().unwrap();
        let t = nodes_table(
            &[
                json!({"name": "a", "this_node": true, "store": "postgres", "shards": 128,
                    "integrations": 7, "last_renewal": "2026-11-25T10:00:55Z", "stopping": false}),
                json!({"name": "b", "this_node": false, "store": "postgres", "shards": 128,
                    "integrations": 3, "last_renewal": "2026-11-25T10:00:00Z", "stopping": true}),
            ],
            now,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "NODES", "{t}");
        assert!(
            lines[2].contains("SHARDS") && lines[2].contains("LAST RENEWAL"),
            "{t}"
        );
        assert!(
            lines[3].starts_with("* a ")
                && lines[3].contains(" 128 ")
                && lines[3].ends_with(" 7  5s ago"),
            "{t}"
        );
        assert!(
            lines[4].starts_with("  b ") && lines[4].ends_with("1m ago (stopping)"),
            "{t}"
        );
        let sled = nodes_table(
            &[
                json!({"name": "h", "this_node": true, "store": "sled", "shards": null,
                "integrations": 2, "last_renewal": null, "stopping": false}),
            ],
            now,
        );
        assert!(sled.lines().nth(3).unwrap().ends_with("  2  -"), "{sled}");
    }

    #[test]
    fn the_nodes_table_shows_what_the_server_says_on_one_line_without_escapes() {
        let now: DateTime<Utc> = "2026-11-25T10:01:00Z".parse().unwrap();
        let t = nodes_table(
            &[
                json!({"name": "a\nb", "this_node": true, "store": "pg\u{1b}[2J\nsql",
                "shards": 1, "integrations": 2, "last_renewal": null, "stopping": false}),
            ],
            now,
        );
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(!t.contains('\u{1b}'), "{t:?}");
    }

    #[test]
    fn a_server_without_the_nodes_view_gets_a_note_instead_of_the_nodes_table() {
        let t = nodes_not_served();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "NODES", "{t}");
        assert!(
            lines[2].contains("404") && lines[2].contains("older"),
            "{t}"
        );
    }

    #[test]
    fn the_status_table_lines_up_and_explains_errors() {
        let now: DateTime<Utc> = "2026-11-25T10:10:00Z".parse().unwrap();
        let list = vec![
            json!({"account": "acme", "name": "Main", "state": "healthy", "backlog": {"events": 0},
                   "last_success": "2026-11-25T10:07:00Z", "last_error": null}),
            json!({"account": "b", "name": "Other Splunk", "state": "failing", "backlog": {"events": 12},
                   "last_success": null, "last_error": {"code": 4, "text": "Invalid token", "advice": "Copy the token."}}),
        ];
        let t = status_table(&list, now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0]
                .starts_with("ACCOUNT  NAME          STATE    BACKLOG  LAST SUCCESS  LAST ERROR"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("acme     Main          healthy  0        3m ago        -"),
            "{t}"
        );
        assert!(
            lines[2].contains(
                "failing  12       never         Invalid token (HEC code 4): Copy the token."
            ),
            "{t}"
        );
    }

    #[test]
    fn top_accounts_lists_the_largest_backlogs_first_with_how_full_their_quota_is_and_drops() {
        let acct = |name: &str, backlog: u64, dropped: Option<u64>| {
            json!({"account": name, "usage": {"stored_bytes": backlog + 10, "backlog_bytes": backlog,
                   "max_backlog_bytes": 1000, "quota_drops": dropped.map(|d| json!({"events": d}))}})
        };
        let list = vec![
            acct("small", 10, None),
            acct("none", 0, None),
            acct("big", 900, Some(42)),
            acct("mid", 500, None),
        ];
        let t = top_accounts(&list, 2);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "TOP ACCOUNTS BY BACKLOG", "{t}");
        assert!(
            // Stored (910) over the quota (1000): what the quota is enforced on.
            lines[3].starts_with("big ") && lines[3].contains(" 91%") && lines[3].ends_with(" 42"),
            "{t}"
        );
        assert!(lines[4].starts_with("mid "), "{t}");
        assert_eq!(lines.len(), 5, "only the top 2: {t}");
        assert!(top_accounts(&[acct("none", 0, None)], 5).contains("no account has a backlog"));
    }

    #[test]
    fn outside_text_keeps_to_its_row() {
        let list = vec![
            json!({"account": "acme", "name": "Main\nFORGED row", "state": "failing",
            "backlog": {"events": 0}, "last_success": null,
            "last_error": {"text": "bad\r\n\u{1b}[2Jx", "advice": "fix"}}),
        ];
        let t = status_table(&list, Utc::now());
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.contains('\u{1b}') && !t.contains('\r'), "{t}");
    }
}
