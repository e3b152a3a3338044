//! `package.toml` in the ggen marketplace layout. Known `[package]` fields are parsed and
//! validated with the line and column of the offending value; every other key and table is
//! kept verbatim so that publishing never loses what an author wrote.

use std::fmt;
use std::ops::Range;

use semver::Version;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::dependency::Dependency;
use crate::limits::*;
use crate::name::PackageName;

/// The searchable metadata of a package, carried inside every release record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageMeta {
    pub description: String,
    pub category: Option<String>,
    pub author: Option<String>,
    pub license: Option<String>,
    pub repository: Option<String>,
    pub tags: Vec<String>,
    pub keywords: Vec<String>,
}

/// A parsed and validated `package.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The package's identity: `name`, or ggen's `id` where it gives one.
    pub name: PackageName,
    /// The display name, where `id` is the identity and `name` a title (ggen's layout).
    pub title: Option<String>,
    pub version: Version,
    pub meta: PackageMeta,
    pub dependencies: Vec<Dependency>,
    /// Paths to pack (gitignore patterns); empty packs everything not excluded. A dotfile is
    /// packed only if one of these (or a `!` line of `.agoraignore`) names it.
    pub include: Vec<String>,
    /// Paths not to pack (gitignore patterns).
    pub exclude: Vec<String>,
    /// Keys of `[package]` that Agora does not interpret, in file order.
    pub package_extra: toml::Table,
    /// Every other top-level table (`[install]`, `[files]`, `[variables]`, ...), in file order.
    pub extra: toml::Table,
}

/// A manifest error, with the 1-based line and column it points at when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    fn at(text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        Self {
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize)]
struct RawManifest {
    package: Spanned<RawPackage>,
}

#[derive(Deserialize)]
struct RawPackage {
    name: Spanned<String>,
    version: Spanned<String>,
    description: Spanned<String>,
    category: Option<Spanned<String>>,
    author: Option<Spanned<String>>,
    license: Option<Spanned<String>>,
    repository: Option<Spanned<String>>,
    id: Option<Spanned<String>>,
    tags: Option<Spanned<toml::Value>>,
    keywords: Option<Spanned<toml::Value>>,
    dependencies: Option<Spanned<Vec<Spanned<String>>>>,
    include: Option<Spanned<Vec<Spanned<String>>>>,
    exclude: Option<Spanned<Vec<Spanned<String>>>>,
}

const KNOWN_PACKAGE_KEYS: [&str; 13] = [
    "id",
    "name",
    "version",
    "description",
    "category",
    "author",
    "license",
    "repository",
    "tags",
    "keywords",
    "dependencies",
    "include",
    "exclude",
];

impl Manifest {
    /// Parses and validates `package.toml` text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError {
                line: 1,
                column: 1,
                message: format!(
                    "package.toml is {} bytes; the limit is {MAX_MANIFEST_BYTES}",
                    text.len()
                ),
            });
        }
        let syntax = |e: toml::de::Error| ManifestError::at(text, e.span(), e.message().to_owned());
        let raw: RawManifest = toml::from_str(text).map_err(syntax)?;
        let mut extra: toml::Table = toml::from_str(text).map_err(syntax)?;
        let mut package_extra = match extra.remove("package") {
            Some(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        for k in KNOWN_PACKAGE_KEYS {
            package_extra.remove(k);
        }

        let p = raw.package.into_inner();
        let err = |span: Range<usize>, msg: String| ManifestError::at(text, Some(span), msg);
        let (name, title) = match &p.id {
            Some(id) => {
                let name = PackageName::new(id.get_ref().clone())
                    .map_err(|e| err(id.span(), format!("invalid `id`: {e}")))?;
                check_text(p.name.get_ref(), "name", MAX_SHORT_FIELD_LEN)
                    .map_err(|m| err(p.name.span(), m))?;
                (name, Some(p.name.get_ref().clone()))
            }
            None => {
                let name = PackageName::new(p.name.get_ref().clone())
                    .map_err(|e| err(p.name.span(), format!("invalid `name`: {e}")))?;
                (name, None)
            }
        };
        let version = parse_version(p.version.get_ref())
            .map_err(|e| err(p.version.span(), format!("invalid `version`: {e}")))?;

        let text_field =
            |f: &Spanned<String>, field: &str, max: usize| -> Result<String, ManifestError> {
                check_text(f.get_ref(), field, max).map_err(|m| err(f.span(), m))?;
                Ok(f.get_ref().clone())
            };
        let opt = |f: &Option<Spanned<String>>,
                   field: &str,
                   max: usize|
         -> Result<Option<String>, ManifestError> {
            f.as_ref().map(|f| text_field(f, field, max)).transpose()
        };
        // An array of strings, or ggen's table holding one under the field's own name
        // (`[package.tags] tags = [..]`).
        let list = |f: &Option<Spanned<toml::Value>>,
                    field: &str|
         -> Result<Vec<String>, ManifestError> {
            let Some(f) = f else { return Ok(Vec::new()) };
            let refuse = |m: String| err(f.span(), m);
            let items = match f.get_ref() {
                toml::Value::Array(items) => items,
                toml::Value::Table(t) => match t.get(field) {
                    Some(toml::Value::Array(items)) => items,
                    _ => {
                        return Err(refuse(format!(
                            "`{field}` as a table must hold a `{field}` array"
                        )));
                    }
                },
                _ => {
                    return Err(refuse(format!(
                        "`{field}` must be an array of strings (or a table with a `{field}` array)"
                    )));
                }
            };
            if items.len() > MAX_TAGS {
                return Err(refuse(format!(
                    "`{field}` has {} entries; the limit is {MAX_TAGS}",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|item| {
                    let toml::Value::String(s) = item else {
                        return Err(refuse(format!(
                            "`{field}` holds a {}, not a string",
                            item.type_str()
                        )));
                    };
                    check_text(s, field, MAX_TAG_LEN).map_err(&refuse)?;
                    Ok(s.clone())
                })
                .collect()
        };
        let meta = PackageMeta {
            description: text_field(&p.description, "description", MAX_DESCRIPTION_LEN)?,
            category: opt(&p.category, "category", MAX_SHORT_FIELD_LEN)?,
            author: opt(&p.author, "author", MAX_SHORT_FIELD_LEN)?,
            license: opt(&p.license, "license", MAX_SHORT_FIELD_LEN)?,
            repository: opt(&p.repository, "repository", MAX_URL_LEN)?,
            tags: list(&p.tags, "tags")?,
            keywords: list(&p.keywords, "keywords")?,
        };
        let raw_deps: &[Spanned<String>] = p.dependencies.as_ref().map_or(&[], |d| d.get_ref());
        if raw_deps.len() > MAX_DEPENDENCIES {
            let span = p.dependencies.as_ref().map_or(0..0, |d| d.span());
            return Err(err(
                span,
                format!(
                    "{} dependencies; the limit is {MAX_DEPENDENCIES}",
                    raw_deps.len()
                ),
            ));
        }
        let mut dependencies: Vec<Dependency> = Vec::new();
        for d in raw_deps {
            let dep: Dependency = d.get_ref().parse().map_err(|e| {
                err(
                    d.span(),
                    format!("invalid dependency {:?}: {e}", d.get_ref()),
                )
            })?;
            if dep.name == name {
                return Err(err(d.span(), format!("package {name} depends on itself")));
            }
            if dependencies.iter().any(|x| x.name == dep.name) {
                return Err(err(
                    d.span(),
                    format!("dependency {} is listed twice", dep.name),
                ));
            }
            dependencies.push(dep);
        }
        let patterns = |f: &Option<Spanned<Vec<Spanned<String>>>>,
                        field: &str|
         -> Result<Vec<String>, ManifestError> {
            let Some(f) = f else { return Ok(Vec::new()) };
            if f.get_ref().len() > MAX_PATTERNS {
                return Err(err(
                    f.span(),
                    format!(
                        "`{field}` has {} patterns; the limit is {MAX_PATTERNS}",
                        f.get_ref().len()
                    ),
                ));
            }
            f.get_ref()
                .iter()
                .map(|t| {
                    if t.get_ref().trim().is_empty() || t.get_ref().contains('\n') {
                        return Err(err(
                            t.span(),
                            format!("`{field}` patterns are one non-empty line each"),
                        ));
                    }
                    text_field(t, field, MAX_PATTERN_LEN)
                })
                .collect()
        };
        Ok(Self {
            name,
            title,
            version,
            meta,
            dependencies,
            include: patterns(&p.include, "include")?,
            exclude: patterns(&p.exclude, "exclude")?,
            package_extra,
            extra,
        })
    }

    /// Keys of `[package]` that Agora does not read but that look like a misspelt one it does
    /// (`licence` for `license`), each with that key. Other unknown keys (ggen's `id`,
    /// `[package.metadata]`, ...) are kept without a word.
    pub fn misspelt_keys(&self) -> Vec<(String, &'static str)> {
        self.package_extra
            .keys()
            .filter_map(|key| {
                let (distance, known) = KNOWN_PACKAGE_KEYS
                    .iter()
                    .map(|k| (strsim::damerau_levenshtein(key, k), *k))
                    .min()?;
                (distance > 0 && distance <= 2 && distance < key.len() / 2 + 1)
                    .then(|| (key.clone(), known))
            })
            .collect()
    }

    /// The manifest as TOML again: known fields first, then the preserved keys and tables.
    pub fn to_toml(&self) -> String {
        let mut package = toml::Table::new();
        match &self.title {
            Some(title) => {
                package.insert("id".into(), self.name.to_string().into());
                package.insert("name".into(), title.clone().into());
            }
            None => {
                package.insert("name".into(), self.name.to_string().into());
            }
        }
        package.insert("version".into(), self.version.to_string().into());
        package.insert("description".into(), self.meta.description.clone().into());
        let m = &self.meta;
        for (k, v) in [
            ("category", &m.category),
            ("author", &m.author),
            ("license", &m.license),
            ("repository", &m.repository),
        ] {
            if let Some(v) = v {
                package.insert(k.into(), v.clone().into());
            }
        }
        let strings =
            |v: &[String]| toml::Value::Array(v.iter().map(|s| s.clone().into()).collect());
        package.insert("tags".into(), strings(&m.tags));
        package.insert("keywords".into(), strings(&m.keywords));
        let deps: Vec<String> = self.dependencies.iter().map(|d| d.to_string()).collect();
        package.insert("dependencies".into(), strings(&deps));
        for (key, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            if !patterns.is_empty() {
                package.insert(key.into(), strings(patterns));
            }
        }
        package.extend(self.package_extra.clone());
        let mut doc = toml::Table::new();
        doc.insert("package".into(), package.into());
        doc.extend(self.extra.clone());
        toml::to_string(&doc).unwrap_or_default()
    }
}

/// Parses a semver version with Agora's length limit.
pub fn parse_version(v: &str) -> Result<Version, String> {
    if v.len() > MAX_VERSION_LEN {
        return Err(format!(
            "{} bytes long; the limit is {MAX_VERSION_LEN}",
            v.len()
        ));
    }
    Version::parse(v).map_err(|e| e.to_string())
}

fn check_text(s: &str, field: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "`{field}` is {} bytes; the limit is {max}",
            s.len()
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(format!("`{field}` contains a control character"));
    }
    Ok(())
}

impl PackageMeta {
    /// Checks the limits that `Manifest::parse` enforces, for metadata that arrived from a peer.
    pub fn check(&self) -> Result<(), String> {
        check_text(&self.description, "description", MAX_DESCRIPTION_LEN)?;
        for (field, v, max) in [
            ("category", &self.category, MAX_SHORT_FIELD_LEN),
            ("author", &self.author, MAX_SHORT_FIELD_LEN),
            ("license", &self.license, MAX_SHORT_FIELD_LEN),
            ("repository", &self.repository, MAX_URL_LEN),
        ] {
            if let Some(v) = v {
                check_text(v, field, max)?;
            }
        }
        for (field, list) in [("tags", &self.tags), ("keywords", &self.keywords)] {
            if list.len() > MAX_TAGS {
                return Err(format!(
                    "`{field}` has {} entries; the limit is {MAX_TAGS}",
                    list.len()
                ));
            }
            for t in list {
                check_text(t, field, MAX_TAG_LEN)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"[package]
name = "hello-world"
version = "1.0.0"
description = "A starter"
category = "starter"
author = "ggen"
license = "MIT"
tags = ["starter", "demo"]
keywords = ["rust"]
dependencies = ["base@^1.2", "util"]
homepage = "https://example.org"

[install]
command = "ggen gen"

[variables]
project = { default = "demo" }
"#;

    #[test]
    fn parses_ggen_layout_and_keeps_unknown_tables() {
        let m = Manifest::parse(HELLO).unwrap();
        assert_eq!(m.name.as_str(), "hello-world");
        assert_eq!(m.version, Version::new(1, 0, 0));
        assert_eq!(m.meta.tags, vec!["starter", "demo"]);
        assert_eq!(m.dependencies.len(), 2);
        assert_eq!(m.dependencies[0].to_string(), "base@^1.2");
        assert_eq!(
            m.package_extra.get("homepage").and_then(|v| v.as_str()),
            Some("https://example.org")
        );
        assert_eq!(
            m.extra.keys().collect::<Vec<_>>(),
            vec!["install", "variables"]
        );
        let again = Manifest::parse(&m.to_toml()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn a_misspelt_key_is_pointed_out_and_ggens_own_keys_are_not() {
        let m = Manifest::parse(
            "[package]\nname = \"p\"\nversion = \"1.0.0\"\ndescription = \"d\"\n\
             licence = \"MIT\"\ncatgory = \"web\"\nid = \"io.ggen.p\"\nhomepage = \"x\"\n\
             include = [\"templates/\"]\n\n[package.metadata]\nauthor = \"a\"\n",
        )
        .unwrap();
        assert_eq!(
            m.misspelt_keys(),
            [
                ("licence".to_string(), "license"),
                ("catgory".to_string(), "category")
            ]
        );
        assert_eq!(m.include, ["templates/"]);
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        for bad in ["include = [\"\"]", "exclude = [\"a\\nb\"]"] {
            let e = Manifest::parse(&format!(
                "[package]\nname = \"p\"\nversion = \"1.0.0\"\ndescription = \"d\"\n{bad}\n"
            ))
            .unwrap_err();
            assert!(
                e.message.ends_with("patterns are one non-empty line each"),
                "{e}"
            );
        }
    }

    /// ggen's shapes: `id` as the identity with `name` as a title, tags and keywords as
    /// tables, tables inside `[package]` and beside it kept as written, and TOML 1.1's
    /// multi-line inline tables.
    #[test]
    fn ggens_own_layouts_are_read_as_written() {
        let m = Manifest::parse(
            "[package]\nid = \"io.ggen.crud\"\nname = \"Ontology CRUD\"\nversion = \"1.0.0\"\n\
             description = \"d\"\nlinks = {\n  home = \"https://example.org\",\n}\n\n\
             [package.tags]\ntags = [\"rdf\", \"crud\"]\n\n[package.keywords]\n\
             keywords = [\"ontology\"]\n\n[package.metadata]\nproduction_ready = true\n\n\
             [dependencies]\nserde = { version = \"1\" }\n",
        )
        .unwrap();
        assert_eq!(m.name.as_str(), "io.ggen.crud");
        assert_eq!(m.title.as_deref(), Some("Ontology CRUD"));
        assert_eq!(m.meta.tags, ["rdf", "crud"]);
        assert_eq!(m.meta.keywords, ["ontology"]);
        assert!(
            m.dependencies.is_empty(),
            "a top-level [dependencies] is not Agora's"
        );
        assert!(m.package_extra.contains_key("metadata"));
        assert!(m.package_extra.contains_key("links"));
        assert!(m.extra.contains_key("dependencies"));
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        let e = Manifest::parse(
            "[package]\nname = \"p\"\nversion = \"1.0.0\"\ndescription = \"d\"\n\
             [package.tags]\nlabels = [\"x\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.message, "`tags` as a table must hold a `tags` array");
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let bad = HELLO.replace("version = \"1.0.0\"", "version = \"1.x\"");
        let e = Manifest::parse(&bad).unwrap_err();
        assert_eq!((e.line, e.column), (3, 11));
        assert!(e.message.starts_with("invalid `version`"), "{e}");

        let e = Manifest::parse(
            "[package]\nname = \"Bad\"\nversion = \"1.0.0\"\ndescription = \"d\"\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (2, 8));

        let e = Manifest::parse("[package]\nname = \"x\"\nversion = 3\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");

        let e = Manifest::parse("[package\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");

        let e = Manifest::parse("[package]\nname = \"x\"\nversion = \"1.0.0\"\n").unwrap_err();
        assert!(e.message.contains("description"), "{e}");
    }

    #[test]
    fn limits_hold() {
        let many: Vec<String> = (0..17).map(|i| format!("\"t{i}\"")).collect();
        let text = format!(
            "[package]\nname = \"x\"\nversion = \"1.0.0\"\ndescription = \"d\"\ntags = [{}]\n",
            many.join(", ")
        );
        let e = Manifest::parse(&text).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.message.contains("limit is 16"), "{e}");
        let e = Manifest::parse(&"#".repeat(MAX_MANIFEST_BYTES + 1)).unwrap_err();
        assert!(e.message.contains("limit"), "{e}");
        let e = Manifest::parse("[package]\nname = \"x\"\nversion = \"1.0.0\"\ndescription = \"d\"\ndependencies = [\"x\"]\n").unwrap_err();
        assert!(e.message.contains("depends on itself"), "{e}");
    }
}
