//! `PackageName`: the only way to hold a package name is to have validated it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_NAME_LEN;

/// A package name: `[a-z0-9][a-z0-9._-]{0,63}` (the ggen marketplace rule).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

/// Why a string is not a package name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("package name is empty")]
    Empty,
    #[error("package name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong { len: usize },
    #[error("package name must start with a lowercase letter or a digit, not {found:?}")]
    BadStart { found: char },
    #[error("package name contains {found:?} at byte {at}; allowed are a-z, 0-9, '.', '_' and '-'")]
    BadChar { found: char, at: usize },
}

impl PackageName {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        Self::check(&s)?;
        Ok(Self(s))
    }

    fn check(s: &str) -> Result<(), NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: s.len() });
        }
        for (at, c) in s.char_indices() {
            let ok = c.is_ascii_lowercase() || c.is_ascii_digit();
            if at == 0 && !ok {
                return Err(NameError::BadStart { found: c });
            }
            if !(ok || matches!(c, '.' | '_' | '-')) {
                return Err(NameError::BadChar { found: c, at });
            }
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name is looked up by its text: it hashes and compares exactly as its `String` does.
impl std::borrow::Borrow<str> for PackageName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for PackageName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for PackageName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<PackageName> for String {
    fn from(n: PackageName) -> String {
        n.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PackageName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_marketplace_names() {
        for ok in ["hello-world", "a", "0", "rust.axum_api-2", &"x".repeat(64)] {
            assert_eq!(PackageName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_each_bad_shape_precisely() {
        assert_eq!(PackageName::new(""), Err(NameError::Empty));
        assert_eq!(
            PackageName::new("x".repeat(65)),
            Err(NameError::TooLong { len: 65 })
        );
        assert_eq!(
            PackageName::new("-x"),
            Err(NameError::BadStart { found: '-' })
        );
        assert_eq!(
            PackageName::new("Hello"),
            Err(NameError::BadStart { found: 'H' })
        );
        assert_eq!(
            PackageName::new("a/b"),
            Err(NameError::BadChar { found: '/', at: 1 })
        );
        assert_eq!(
            PackageName::new("ab é"),
            Err(NameError::BadChar { found: ' ', at: 2 })
        );
    }
}
