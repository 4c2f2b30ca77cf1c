//! Reading one JSON object of an ingest or API body field by field, so that every
//! refusal names the array index and the field the caller has to fix.

use super::ids::check_identifier;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::fmt;

/// What is wrong with one body, naming where: `item 3: `time` is not …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Position in the posted array, when the body is an array.
    pub index: Option<usize>,
    /// The field at fault, when one is.
    pub field: Option<String>,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "item {i}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "`{field}` ")?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for FieldError {}

/// One JSON object being read: tracks which keys were used so unknown ones are refused.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    index: Option<usize>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub fn new(value: &'a Value, index: Option<usize>) -> Result<Self, FieldError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                index,
                known: Vec::new(),
            }),
            other => Err(FieldError {
                index,
                field: None,
                problem: format!("must be a JSON object, got {}", kind(other)),
            }),
        }
    }

    pub fn error(&self, field: &str, problem: impl Into<String>) -> FieldError {
        FieldError {
            index: self.index,
            field: Some(field.to_owned()),
            problem: problem.into(),
        }
    }

    /// The value of `field`, treating an explicit `null` like an absent key.
    pub fn get(&mut self, field: &'static str) -> Option<&'a Value> {
        self.known.push(field);
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    pub fn required<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self, &'static str) -> Result<Option<T>, FieldError>,
    ) -> Result<T, FieldError> {
        read(self, field)?.ok_or_else(|| self.error(field, "is required"))
    }

    pub fn string(&mut self, field: &'static str) -> Result<Option<String>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(field, format!("must be a string, got {}", kind(other)))),
        }
    }

    /// A string that must not be empty or only whitespace.
    pub fn text(&mut self, field: &'static str) -> Result<Option<String>, FieldError> {
        match self.string(field)? {
            Some(s) if s.trim().is_empty() => Err(self.error(field, "must not be empty")),
            other => Ok(other),
        }
    }

    pub fn identifier(&mut self, field: &'static str) -> Result<Option<String>, FieldError> {
        match self.string(field)? {
            None => Ok(None),
            Some(s) => match identifier(&s) {
                Ok(()) => Ok(Some(s)),
                Err(problem) => Err(self.error(field, problem)),
            },
        }
    }

    pub fn time(&mut self, field: &'static str) -> Result<Option<DateTime<Utc>>, FieldError> {
        match self.string(field)? {
            None => Ok(None),
            Some(s) => parse_time(&s)
                .map(Some)
                .map_err(|problem| self.error(field, problem)),
        }
    }

    pub fn bool(&mut self, field: &'static str) -> Result<Option<bool>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                Err(self.error(field, format!("must be true or false, got {}", kind(other))))
            }
        }
    }

    pub fn number(&mut self, field: &'static str) -> Result<Option<f64>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.error(field, format!("must be a number, got {}", kind(other)))),
        }
    }

    pub fn object(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Map<String, Value>>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(other) => {
                Err(self.error(field, format!("must be a JSON object, got {}", kind(other))))
            }
        }
    }

    pub fn string_list(&mut self, field: &'static str) -> Result<Option<Vec<String>>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.error(
                        field,
                        format!("must hold only strings, found {}", kind(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.error(
                field,
                format!("must be an array of strings, got {}", kind(other)),
            )),
        }
    }

    /// Refuses keys nobody asked for: a typo must not be silently dropped.
    pub fn finish(self) -> Result<(), FieldError> {
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(k) => Err(FieldError {
                index: self.index,
                field: Some((*k).clone()),
                problem: format!("is not a known field (known: {})", self.known.join(", ")),
            }),
        }
    }
}

/// Reads a body that must be a JSON array, each item with `read` (given its index).
pub fn read_array<T>(
    body: &[u8],
    now: DateTime<Utc>,
    read: fn(&Value, usize, DateTime<Utc>) -> Result<T, FieldError>,
) -> Result<Vec<T>, FieldError> {
    parse_array(body)?
        .iter()
        .enumerate()
        .map(|(i, v)| read(v, i, now))
        .collect()
}

/// Whether `s` is a valid identifier, or what is wrong with it.
pub fn identifier(s: &str) -> Result<(), String> {
    check_identifier(s).map_err(|e| format!("is not a valid identifier: {e}"))
}

/// An RFC 3339 timestamp that RFC 3339 can also write in UTC (the form it is stored
/// and sent in), or what is wrong with it.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    use chrono::{Datelike, Timelike};
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "is not an RFC 3339 timestamp ({e}): {s:?}, expected e.g. \"2026-11-25T10:00:00Z\""
            )
        })?;
    // RFC 3339 has four-digit years: converted to UTC, a time at either end of year
    // 0000..=9999 would be sent as `+10000-…` or `-0001-…`, which Splunk cannot read.
    if t.year() > 9999 {
        return Err(format!("is after 9999-12-31T23:59:59Z in UTC: {s:?}"));
    }
    if t.year() < 0 {
        return Err(format!("is before 0000-01-01T00:00:00Z in UTC: {s:?}"));
    }
    // A leap second exists only as the last second of a UTC day (RFC 3339, 5.7).
    if t.nanosecond() >= 1_000_000_000 && (t.hour(), t.minute()) != (23, 59) {
        return Err(format!(
            "has a leap second (:60) that is not at 23:59:60 UTC: {s:?}"
        ));
    }
    Ok(t)
}

/// A JSON value's kind in words, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a request body that must be a JSON array, naming what it got otherwise.
pub fn parse_array(body: &[u8]) -> Result<Vec<Value>, FieldError> {
    let whole = |problem: String| FieldError {
        index: None,
        field: None,
        problem,
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(other) => Err(whole(format!(
            "the body must be a JSON array, got {}",
            kind(&other)
        ))),
        Err(e) => Err(whole(format!("the body is not valid JSON: {e}"))),
    }
}

/// Parses a request body that must be one JSON object.
pub fn parse_object(body: &[u8]) -> Result<Value, FieldError> {
    let whole = |problem: String| FieldError {
        index: None,
        field: None,
        problem,
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(whole(format!(
            "the body must be a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(whole(format!("the body is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_that_rfc_3339_utc_cannot_write_are_refused() {
        for (bad, why) in [
            ("9999-12-31T23:30:00-01:00", "after 9999-12-31T23:59:59Z"),
            ("0000-01-01T00:30:00+01:00", "before 0000-01-01T00:00:00Z"),
            ("2026-11-25T10:00:60Z", "leap second"),
            ("2016-12-31T23:59:60+01:00", "leap second"),
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for good in [
            "9999-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T22:30:00-01:00",
            "2016-12-31T23:59:60Z",
            "2017-01-01T00:59:60+01:00",
            "1960-01-01T00:00:00.250Z",
        ] {
            let t = parse_time(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            let text = serde_json::to_value(t).unwrap();
            assert_eq!(
                parse_time(text.as_str().unwrap()),
                Ok(t),
                "{good} round trip"
            );
        }
        let body = serde_json::json!({"time": "9999-12-31T23:30:00-01:00"});
        let mut f = Fields::new(&body, Some(3)).unwrap();
        let e = f.time("time").unwrap_err().to_string();
        assert!(e.starts_with("item 3: `time` "), "{e}");
    }
}
