//! The adversary's suite: each finding of the audit in issue 32, tried as an attacker would
//! against real nodes, with what the node must do instead. docs/SECURITY.md maps each threat
//! to its defense and to the test here.

#[path = "../common/mod.rs"]
mod common;

mod budgets;
mod records;

use agora_daemon::Node;
use agora_daemon::catalog::trust::TrustPolicy;
use agora_protocol::codec::Wire;
use agora_protocol::dht::DhtValue;
use agora_protocol::limits::{
    MAX_CHUNKS, MAX_DEPENDENCIES, MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MAX_RECORD_BYTES,
    MAX_SHORT_FIELD_LEN, MAX_TAG_LEN, MAX_TAGS, MAX_URL_LEN, MAX_VERSION_LEN, MIN_CHUNK_SIZE,
};
use agora_protocol::messages::GossipMessage;
use agora_protocol::records::{ArchiveInfo, CatalogRecord, ReleaseBody, ReleaseRecord, Signed};
use agora_protocol::search::SearchQuery;
use agora_protocol::{ContentId, Dependency, PackageMeta, PublisherSecret, Version, VersionReq};
use common::hostile::Hostile;
use common::*;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
const DEADLINE: Duration = Duration::from_secs(20);

/// A string of exactly `len` bytes that starts with `prefix`.
fn padded(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_owned();
    while s.len() < len {
        s.push('x');
    }
    s.truncate(len);
    s
}

/// The largest release a record may be: every field at its limit (64 dependencies with the
/// longest names and requirements, full metadata, 512 chunks of 16 KiB), then the description
/// cut until the record's encoding is at most [`MAX_RECORD_BYTES`].
fn largest_release(name: &str, key: &PublisherSecret) -> ReleaseRecord {
    let dependencies = (0..MAX_DEPENDENCIES)
        .map(|i| {
            // `>=1.0.0-aaa…`: semver prints it back as written, so its length is what we chose.
            let req = padded(&format!(">={i}.0.0-a"), MAX_VERSION_LEN).replace('x', "a");
            Dependency {
                name: padded(&format!("dep-{i:02}-"), MAX_NAME_LEN)
                    .parse()
                    .unwrap(),
                req: req.parse().unwrap(),
            }
        })
        .collect();
    let short = |what: &str| Some(padded(what, MAX_SHORT_FIELD_LEN));
    let meta = PackageMeta {
        description: padded("the largest release ", MAX_DESCRIPTION_LEN),
        category: short("category"),
        author: short("author"),
        license: short("license"),
        repository: Some(padded("https://example.com/", MAX_URL_LEN)),
        tags: (0..MAX_TAGS)
            .map(|i| padded(&format!("tag{i}"), MAX_TAG_LEN))
            .collect(),
        keywords: (0..MAX_TAGS)
            .map(|i| padded(&format!("kw{i}"), MAX_TAG_LEN))
            .collect(),
    };
    let archive = ArchiveInfo {
        id: ContentId::of(b"an archive nobody fetches here"),
        size: MAX_CHUNKS as u64 * u64::from(MIN_CHUNK_SIZE),
        chunk_size: MIN_CHUNK_SIZE,
        chunks: (0..MAX_CHUNKS as u32)
            .map(|i| ContentId::of(&i.to_le_bytes()))
            .collect(),
    };
    let mut body = ReleaseBody {
        name: name.parse().unwrap(),
        version: Version::parse(&padded("1.0.0-", MAX_VERSION_LEN)).unwrap(),
        meta,
        dependencies,
        archive,
        published_at: u64::MAX,
        publisher: key.public(),
        previous: Some(ContentId::of(b"a predecessor")),
    };
    loop {
        let record = Signed::sign(body.clone(), key).expect("every field within its limit");
        if record.encode().len() <= MAX_RECORD_BYTES {
            return record;
        }
        body.meta.description.pop();
    }
}

fn names(node: &Node, q: &str) -> Vec<String> {
    match node
        .registry
        .blocking_catalog()
        .search(&SearchQuery::text(q))
    {
        Ok(results) => results.hits.into_iter().map(|h| h.name).collect(),
        Err(e) => vec![format!("search failed: {e}")],
    }
}

/// A bare Kademlia peer holding `values`, driven in the background; its address and stop.
async fn holder(
    values: &[DhtValue],
) -> (
    libp2p::Multiaddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Hostile>,
) {
    let mut h = Hostile::new();
    let addr = h.listen().await;
    for v in values {
        h.hold(v.key().to_bytes(), v.encode());
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    (addr, stop, h.drive(stopped))
}

/// A release of `name@version` chained to `previous`, claimed made at `at`.
fn chained(
    name: &str,
    version: &str,
    previous: Option<agora_protocol::records::RecordId>,
    at: u64,
    key: &PublisherSecret,
    salt: u64,
) -> ReleaseRecord {
    let mut body = release(
        name,
        version.parse().unwrap(),
        &noise(100, salt),
        16 * 1024,
        key,
    )
    .body;
    body.previous = previous;
    body.published_at = at;
    Signed::sign(body, key).unwrap()
}

/// Gossips `messages` from a new hostile peer into the node at `addr` and waits until the
/// node has decided on them all; returns its counts so far: (accepted, ignored, rejected,
/// over a key's budget).
async fn gossip_and_count(
    addr: &libp2p::Multiaddr,
    messages: Vec<Vec<u8>>,
    stats: &agora_daemon::obs::RegistryStats,
) -> (u64, u64, u64, u64) {
    let counts = || {
        (
            stats.gossip_accepted.load(Ordering::Relaxed),
            stats.gossip_ignored.load(Ordering::Relaxed),
            stats.gossip_rejected.load(Ordering::Relaxed),
            stats.publisher_over_budget.load(Ordering::Relaxed),
        )
    };
    let (a, i, r, _) = counts();
    let expected = a + i + r + messages.len() as u64;
    let mut hostile = Hostile::new();
    hostile.connect(std::slice::from_ref(addr)).await;
    for m in messages {
        hostile.publish_raw(m).await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let driver = hostile.drive(stopped);
    converge("every message decided", DEADLINE, || async {
        let (a, i, r, _) = counts();
        if a + i + r == expected {
            Ok(())
        } else {
            Err(format!("{} of {expected} decided", a + i + r))
        }
    })
    .await;
    let _ = stop.send(());
    driver.await.unwrap();
    counts()
}
