//! The catalog's RDF vocabulary (docs/RDF.md): which terms a package and its releases become.
//! Established vocabularies where one fits (DOAP for projects and versions, Dublin Core terms
//! for description, dates, publisher and licence, schema.org for authors, keywords and code
//! repositories) and the Agora namespace for what they have no term for (owner, newest
//! release, tags, category, archive, yanks, equivocations).
//!
//! Resources are named by URNs, not by this node's HTTP address: every node gives a package
//! the same name, whatever its gateway is called.

use agora_protocol::records::ReleaseBody;
use agora_protocol::{PackageMeta, PackageName, PublisherKey, Version};
use oxrdf::vocab::{rdf, xsd};
use oxrdf::{Literal, NamedNode, Term, Triple};

pub const AGORA: &str = "https://agora.dev/ns#";
pub const DOAP: &str = "http://usefulinc.com/ns/doap#";
pub const DCTERMS: &str = "http://purl.org/dc/terms/";
pub const SCHEMA: &str = "https://schema.org/";

/// The prefixes a Turtle export and docs/RDF.md use.
pub const PREFIXES: &[(&str, &str)] = &[
    ("agora", AGORA),
    ("doap", DOAP),
    ("dcterms", DCTERMS),
    ("schema", SCHEMA),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
];

/// What the graph says of one package: everything is read from the catalog's state of the
/// name and its release records.
#[derive(Clone, Debug)]
pub struct PackageFacts {
    pub name: PackageName,
    pub owner: PublisherKey,
    /// The newest installable version (none: every release is yanked, equivocated or a
    /// pre-release).
    pub latest: Option<Version>,
    pub releases: Vec<ReleaseFacts>,
}

/// One version of a package: the first record admitted for it.
#[derive(Clone, Debug)]
pub struct ReleaseFacts {
    pub body: ReleaseBody,
    /// The reasons of the yanks that stand (`None`: not yanked; a yank may give no reason).
    pub yanks: Option<Vec<String>>,
    /// More than one record exists for this version.
    pub equivocated: bool,
}

pub fn package_iri(name: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("urn:agora:package:{name}"))
}

pub fn release_iri(name: &str, version: &Version) -> NamedNode {
    NamedNode::new_unchecked(format!("urn:agora:release:{name}@{version}"))
}

fn publisher_iri(key: &PublisherKey) -> NamedNode {
    NamedNode::new_unchecked(format!("urn:agora:publisher:{}", key.to_hex()))
}

fn term(namespace: &str, local: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{namespace}{local}"))
}

/// The predicate that ties a release to its package: the subjects of a package's triples are
/// the package and the releases it ties.
pub fn is_version_of() -> NamedNode {
    term(DCTERMS, "isVersionOf")
}

/// Every triple of a package: those whose subject is the package or one of its releases.
pub fn triples(facts: &PackageFacts) -> Vec<Triple> {
    let name = facts.name.as_str();
    let package = package_iri(name);
    let mut out = Vec::with_capacity(6 + facts.releases.len() * 24);
    let mut add = |s: &NamedNode, p: NamedNode, o: Term| {
        out.push(Triple::new(s.clone(), p, o));
    };
    let text = |s: &str| Term::Literal(Literal::new_simple_literal(s));
    add(&package, rdf::TYPE.into(), term(DOAP, "Project").into());
    add(
        &package,
        rdf::TYPE.into(),
        term(SCHEMA, "SoftwareSourceCode").into(),
    );
    add(&package, term(DOAP, "name"), text(name));
    add(
        &package,
        term(AGORA, "owner"),
        publisher_iri(&facts.owner).into(),
    );
    if let Some(latest) = &facts.latest {
        add(
            &package,
            term(AGORA, "latest"),
            release_iri(name, latest).into(),
        );
        // What the package is now, as registries show it: its newest release's words, so that
        // a search by category and tag reads one node per package, not every version.
        if let Some(newest) = facts.releases.iter().find(|r| &r.body.version == latest) {
            describe(&mut add, &package, &newest.body.meta);
        }
    }
    for r in &facts.releases {
        let b = &r.body;
        let release = release_iri(name, &b.version);
        add(&package, term(DOAP, "release"), release.clone().into());
        add(&release, rdf::TYPE.into(), term(DOAP, "Version").into());
        add(&release, is_version_of(), package.clone().into());
        add(
            &release,
            term(DOAP, "revision"),
            text(&b.version.to_string()),
        );
        describe(&mut add, &release, &b.meta);
        if let Some(author) = &b.meta.author {
            add(&release, term(SCHEMA, "author"), text(author));
        }
        if let Some(license) = &b.meta.license {
            add(&release, term(DCTERMS, "license"), text(license));
        }
        if let Some(repository) = &b.meta.repository {
            // A link where it is an IRI; the text as given where it is not.
            let o =
                NamedNode::new(repository.as_str()).map_or_else(|_| text(repository), Term::from);
            add(&release, term(SCHEMA, "codeRepository"), o);
        }
        add(
            &release,
            term(DCTERMS, "created"),
            Literal::new_typed_literal(date_time(b.published_at), xsd::DATE_TIME).into(),
        );
        add(
            &release,
            term(DCTERMS, "publisher"),
            publisher_iri(&b.publisher).into(),
        );
        add(
            &release,
            term(AGORA, "sha256"),
            text(&b.archive.id.to_hex()),
        );
        add(
            &release,
            term(AGORA, "size"),
            Literal::new_typed_literal(b.archive.size.to_string(), xsd::INTEGER).into(),
        );
        for d in &b.dependencies {
            add(
                &release,
                term(AGORA, "dependsOn"),
                package_iri(d.name.as_str()).into(),
            );
            add(&release, term(AGORA, "requires"), text(&d.to_string()));
        }
        add(
            &release,
            term(AGORA, "yanked"),
            Literal::from(r.yanks.is_some()).into(),
        );
        for reason in r.yanks.iter().flatten().filter(|r| !r.is_empty()) {
            add(&release, term(AGORA, "yankReason"), text(reason));
        }
        if r.equivocated {
            add(
                &release,
                term(AGORA, "equivocated"),
                Literal::from(true).into(),
            );
        }
    }
    out
}

/// A package's or a release's description, category, tags and keywords.
fn describe(
    add: &mut impl FnMut(&NamedNode, NamedNode, Term),
    subject: &NamedNode,
    meta: &PackageMeta,
) {
    let text = |s: &str| Term::Literal(Literal::new_simple_literal(s));
    add(
        subject,
        term(DCTERMS, "description"),
        text(&meta.description),
    );
    if let Some(category) = &meta.category {
        add(subject, term(AGORA, "category"), text(category));
    }
    for tag in &meta.tags {
        add(subject, term(AGORA, "tag"), text(tag));
    }
    for keyword in &meta.keywords {
        add(subject, term(SCHEMA, "keywords"), text(keyword));
    }
}

/// The last second an `xsd:dateTime` of four-digit years holds (9999-12-31T23:59:59Z).
const LAST_DATE_TIME: u64 = 253_402_300_799;

/// `xsd:dateTime` of seconds since the Unix epoch, in UTC. A publisher's clock is only its
/// claim: a time past the year 9999 is written as the last second of it.
fn date_time(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(LAST_DATE_TIME));
    humantime::format_rfc3339_seconds(at).to_string()
}
