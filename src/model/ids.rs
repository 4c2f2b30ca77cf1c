//! Identifiers that cross the API: validated once at the edge, trusted inside.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused; the caller adds which field it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Nothing was given.
    #[error("must not be empty")]
    Empty,
    /// More than 64 characters (how many).
    #[error("must be at most 64 characters, got {0}")]
    TooLong(usize),
    /// A character outside the rule (the first one).
    #[error("may contain only letters, digits, '.', '_' and '-', found {0:?}")]
    BadChar(char),
}

/// Checks the contract's identifier rule: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn check_identifier(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let n = s.chars().count();
    if n > 64 {
        return Err(IdError::TooLong(n));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

/// The identifier rule as a regular expression, for the API document (`check_identifier`
/// is the rule itself; a test checks that both agree).
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier `s`, if it follows the contract's rule.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_identifier(s)?;
                Ok(Self(s.to_owned()))
            }
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check_identifier(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        /// In the API document: a string that follows the identifier rule.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(IDENTIFIER_PATTERN))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A customer account of the platform (the product page's "Account GUID").
    AccountId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_contract() {
        assert!(AccountId::parse("acme-01.eu_2").is_ok());
        assert_eq!(AccountId::parse(""), Err(IdError::Empty));
        assert_eq!(AccountId::parse(&"a".repeat(65)), Err(IdError::TooLong(65)));
        assert!(AccountId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(AccountId::parse("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(AccountId::parse("a b"), Err(IdError::BadChar(' ')));
    }
}
