//! A dependency: a package name and a semver requirement, written `name` or `name@REQ`.

use std::fmt;
use std::str::FromStr;

use semver::VersionReq;
use serde::{Deserialize, Serialize};

use crate::limits::MAX_VERSION_LEN;
use crate::name::{NameError, PackageName};

/// `name@req`; a bare name means any version (`*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dependency {
    pub name: PackageName,
    pub req: VersionReq,
}

/// Why a dependency string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DependencyError {
    #[error("bad dependency name: {0}")]
    Name(#[from] NameError),
    #[error("version requirement is {len} bytes long; the limit is {MAX_VERSION_LEN}")]
    ReqTooLong { len: usize },
    #[error("bad version requirement {req:?}: {reason}")]
    Req { req: String, reason: String },
}

impl FromStr for Dependency {
    type Err = DependencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, req) = match s.split_once('@') {
            Some((name, req)) => (name, Some(req)),
            None => (s, None),
        };
        let name = PackageName::new(name.trim())?;
        let req = match req {
            None => VersionReq::STAR,
            Some(r) => parse_req(r.trim())?,
        };
        Ok(Self { name, req })
    }
}

/// Parses a semver requirement with Agora's length limit.
pub fn parse_req(r: &str) -> Result<VersionReq, DependencyError> {
    if r.len() > MAX_VERSION_LEN {
        return Err(DependencyError::ReqTooLong { len: r.len() });
    }
    VersionReq::parse(r).map_err(|e| DependencyError::Req {
        req: r.to_owned(),
        reason: e.to_string(),
    })
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.req == VersionReq::STAR {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}@{}", self.name, self.req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let d: Dependency = "base".parse().unwrap();
        assert_eq!((d.name.as_str(), d.req.clone()), ("base", VersionReq::STAR));
        assert_eq!(d.to_string(), "base");
        let d: Dependency = "base@^1.2".parse().unwrap();
        assert_eq!(d.req, VersionReq::parse("^1.2").unwrap());
        assert_eq!(d.to_string(), "base@^1.2");
    }

    #[test]
    fn refuses_bad_parts() {
        assert!(matches!(
            "Base".parse::<Dependency>(),
            Err(DependencyError::Name(_))
        ));
        assert!(matches!(
            "base@nope".parse::<Dependency>(),
            Err(DependencyError::Req { .. })
        ));
        let long = format!("base@{}", "1".repeat(200));
        assert_eq!(
            long.parse::<Dependency>(),
            Err(DependencyError::ReqTooLong { len: 200 })
        );
    }
}
