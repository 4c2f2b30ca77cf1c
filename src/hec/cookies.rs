//! The cookies a load balancer in front of Splunk sets (`AWSELB` on a classic AWS
//! ELB, `AWSALB`, a BIG-IP's…), kept per HEC client and sent back on its posts and
//! ack polls, so that its channel stays on the indexer that issued its ack ids
//! (Splunk itself sets no cookie). Bounded, since the answers come from outside:
//! a server setting absurdly many or large cookies gets the first few, each small.

use awc::http::header::{HeaderMap, HeaderValue, SET_COOKIE};
use std::sync::Mutex;

/// Cookies kept at most; a load balancer needs one or two.
pub const MAX_COOKIES: usize = 8;
/// Largest `name=value` kept (RFC 6265 asks clients to support at least 4096 bytes).
pub const MAX_COOKIE_BYTES: usize = 4096;

/// One client's cookies, in the order first set.
#[derive(Debug, Default)]
pub struct CookieJar {
    cookies: Mutex<Vec<(String, String)>>,
}

impl CookieJar {
    /// Takes the `Set-Cookie` headers of an answer: a new name is added (while fewer
    /// than [`MAX_COOKIES`] are kept), a known one replaced, an expired one removed.
    /// Domain, path and flags are not needed: the jar belongs to one HEC URI.
    pub fn take(&self, headers: &HeaderMap) {
        let mut jar = self.lock();
        for value in headers.get_all(SET_COOKIE) {
            let Some(c) = value
                .to_str()
                .ok()
                .and_then(|v| cookie::Cookie::parse(v).ok())
            else {
                continue;
            };
            let pair = format!("{}={}", c.name(), c.value());
            if c.name().is_empty()
                || pair.len() > MAX_COOKIE_BYTES
                || HeaderValue::from_str(&pair).is_err()
            {
                continue;
            }
            let expired = c
                .max_age()
                .is_some_and(|age| age.is_zero() || age.is_negative())
                || c.expires_datetime()
                    .is_some_and(|at| at <= cookie::time::OffsetDateTime::now_utc());
            let known = jar.iter().position(|(name, _)| name == c.name());
            match (known, expired) {
                (Some(i), true) => {
                    jar.remove(i);
                }
                (Some(i), false) => jar[i].1 = c.value().to_owned(),
                (None, false) if jar.len() < MAX_COOKIES => {
                    jar.push((c.name().to_owned(), c.value().to_owned()))
                }
                (None, _) => {}
            }
        }
    }

    /// The `Cookie` header to send, when any cookie is kept.
    pub fn header(&self) -> Option<String> {
        let jar = self.lock();
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Whether any cookie is kept (the status's stickiness advice says so).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        self.cookies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(set: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for s in set {
            h.append(SET_COOKIE, HeaderValue::from_str(s).unwrap());
        }
        h
    }

    #[test]
    fn a_load_balancer_cookie_is_kept_replaced_and_expired() {
        let jar = CookieJar::default();
        assert_eq!(jar.header(), None);
        jar.take(&answer(&[
            "AWSELB=ABC123; PATH=/; MAX-AGE=3600",
            "other=1; HttpOnly",
        ]));
        assert_eq!(jar.header().as_deref(), Some("AWSELB=ABC123; other=1"));
        jar.take(&answer(&["AWSELB=DEF456; Path=/"]));
        assert_eq!(jar.header().as_deref(), Some("AWSELB=DEF456; other=1"));
        jar.take(&answer(&["other=; Max-Age=0"]));
        jar.take(&answer(&[
            "AWSELB=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ]));
        assert_eq!(jar.header(), None);
        assert!(jar.is_empty());
    }

    #[test]
    fn absurdly_many_or_large_cookies_are_bounded() {
        let jar = CookieJar::default();
        let many: Vec<String> = (0..100).map(|i| format!("c{i}=v")).collect();
        jar.take(&answer(
            &many.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        let huge = format!("big={}", "x".repeat(MAX_COOKIE_BYTES));
        jar.take(&answer(&[&huge, "not a cookie", "=novalue"]));
        let header = jar.header().unwrap();
        assert_eq!(header.split("; ").count(), MAX_COOKIES);
        assert!(!header.contains("big="));
        assert!(header.len() < MAX_COOKIES * 16);
    }
}
