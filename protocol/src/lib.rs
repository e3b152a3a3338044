//! Agora's shared language: package names, versions, content ids, publisher keys, the
//! `package.toml` manifest, the signed records that make up the catalog, and the byte-exact
//! wire codecs for gossip, DHT values, catalog sync, chunk fetch and the local IPC socket.
//!
//! This crate never does I/O and never depends on an async runtime: every function here is a
//! pure transformation that the daemon, the client, tests and fuzzers can call directly.
//! Every decoder is bounded (see [`limits`]) and requires the whole input to be consumed.

pub mod codec;
pub mod content;
pub mod dependency;
pub mod dht;
pub mod ipc;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod messages;
pub mod name;
pub mod paths;
pub mod records;
pub mod search;
pub mod sparql;

pub use content::{ContentHasher, ContentId};
pub use dependency::Dependency;
pub use keys::{PublisherKey, PublisherSecret, Signature};
pub use manifest::{Manifest, PackageMeta};
pub use name::PackageName;
pub use records::{CatalogRecord, KeyRotation, PackageHead, RecordId, ReleaseRecord, Unyank, Yank};
pub use semver::{Version, VersionReq};
