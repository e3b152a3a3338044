//! Durable state of a node: a redb database (the catalog log, owner pins, the highest version
//! seen per name, equivocation evidence, package heads, peer reputation, blob metadata) and
//! the content-addressed blob store beside it ([`blobs`]), the journal of this node's own records
//! ([`journal`]) and the key files ([`key_files`]).
//!
//! Every write here has committed with `Durability::Immediate` when the call returns, so the
//! registry acknowledges nothing before it is on disk. Transactions that carry data a peer sent
//! use two-phase commit (see redb's design notes: a single-phase commit trusts a checksum that
//! a peer who controls the bytes could try to collide). Never called from the event loop.

pub mod blobs;
pub(crate) mod download;
pub(crate) mod journal;
pub mod key_files;

use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_protocol::codec::{self, DecodeError};
use agora_protocol::limits::{MAX_RECORD_BYTES, MAX_TAGGED_RECORD_BYTES};
use agora_protocol::records::{CatalogRecord, PackageHead, RecordId};
use agora_protocol::{PackageName, PublisherKey, Version};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

pub use blobs::{BlobKind, BlobMeta, BlobStore};

/// Every admitted catalog record, in the order it was admitted (replaying the log in this
/// order rebuilds the trust state exactly).
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("catalog_log");
/// Record id → its position in the log.
pub(crate) const IDS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("catalog_ids");
/// Owner pin per name (trust on first use, moved only by a rotation).
const OWNERS: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("owner_pins");
/// Highest version ever admitted per name: it never goes down.
const HIGHEST: TableDefinition<&str, &str> = TableDefinition::new("highest_version");
/// `name@version` → the ids of every record seen for a version that has more than one.
const EVIDENCE: TableDefinition<&str, &[u8]> = TableDefinition::new("equivocation_evidence");
/// Latest accepted package head per name (re-served on the DHT after a restart).
const HEADS: TableDefinition<&str, &[u8]> = TableDefinition::new("package_heads");
/// Peer id bytes → encoded reputation entry.
const REPUTATION: TableDefinition<&[u8], &[u8]> = TableDefinition::new("reputation");
/// Content id → encoded [`BlobMeta`].
pub(crate) const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// Id of a record refused for good → its age (u64, little-endian) and its name
/// (`registry::refusals`).
const REFUSED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("refused_records");
/// Small values about the store itself, by name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The [`META`] key of the trust policy the refusals were decided under.
const REFUSAL_POLICY: &str = "refusal_policy";

/// How long opening the database waits for another process to let go of it: a daemon
/// restarted right after a stop may find the old one still exiting.
pub const DB_LOCK_WAIT: Duration = Duration::from_secs(10);
const DB_LOCK_POLL: Duration = Duration::from_millis(50);
/// redb's page cache. Its default (1 GiB) keeps every page read or written on the heap until
/// it is full, so a daemon's memory grew with its catalog; the catalog is replayed into
/// memory at start-up and the tables are read by key, which the OS page cache serves well.
const DB_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Largest reputation or blob metadata entry we decode from our own database.
const MAX_META_BYTES: usize = 1024;
/// Records per batch while the catalog loads.
const LOAD_BATCH: usize = 512;
/// Batches that may wait for the replay.
const LOAD_BATCHES_AHEAD: usize = 4;

/// Records read from the log at start-up, on their way to the replay.
enum LoadBatch {
    Decoded(Vec<(CatalogRecord, RecordId)>),
    /// Encoded records one after another, and where each ends.
    Encoded {
        bytes: Vec<u8>,
        ends: Vec<usize>,
    },
}

/// Every stored package head, with its bytes as stored (its DHT value's encoding).
fn read_heads(txn: &ReadTransaction) -> Result<Vec<(PackageHead, Vec<u8>)>, StoreError> {
    let mut heads = Vec::new();
    for entry in txn.open_table(HEADS)?.iter()? {
        let (_, bytes) = entry?;
        // Verified when admitted, so not again; `Catalog::open` still checks each against
        // the trust rules of the replayed catalog.
        let bytes = bytes.value();
        let head = codec::decode_own::<
            PackageHead,
            MAX_RECORD_BYTES,
            { codec::claims(MAX_RECORD_BYTES) },
        >(bytes)
        .map_err(|e| StoreError::Corrupt(format!("package head: {e}")))?;
        heads.push((head, bytes.to_vec()));
    }
    Ok(heads)
}

/// Decodes a record of the log, with its id.
fn decode_logged(bytes: &[u8]) -> Result<(CatalogRecord, RecordId), StoreError> {
    Ok(CatalogRecord::decode_stored(bytes)?)
}

/// Decodes a record of the log (written by this node: [`codec::decode_own`]).
fn decode_record(bytes: &[u8]) -> Result<CatalogRecord, StoreError> {
    Ok(codec::decode_own::<
        CatalogRecord,
        MAX_TAGGED_RECORD_BYTES,
        { codec::claims(MAX_TAGGED_RECORD_BYTES) },
    >(bytes)?)
}

/// Replays the log of `txn` in order. A second thread reads the log while this one replays
/// it, in batches. Decoding a record (and hashing it for its id) costs more than replaying it,
/// so the reader decodes a batch only while `reader_decodes(batches waiting)` says the replay
/// is behind; otherwise the replay gets the batch undecoded and decodes it itself. The two
/// threads share the work without a fixed split, whatever the machine, and the replay
/// rarely waits for the reader.
fn replay_log(
    txn: &ReadTransaction,
    reader_decodes: impl Fn(usize) -> bool + Sync,
    replay: &mut impl FnMut(RecordId, CatalogRecord) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    // Batches sent and not yet taken by the replay.
    let waiting = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(LOAD_BATCHES_AHEAD);
        let (waiting_ref, reader_decodes) = (&waiting, &reader_decodes);
        scope.spawn(move || {
            let read_all = || -> Result<(), StoreError> {
                let table = txn.open_table(LOG)?;
                let mut log = table.iter()?.peekable();
                while log.peek().is_some() {
                    let batch = if reader_decodes(waiting_ref.load(Ordering::Acquire)) {
                        let mut decoded = Vec::with_capacity(LOAD_BATCH);
                        for entry in log.by_ref().take(LOAD_BATCH) {
                            decoded.push(decode_logged(entry?.1.value())?);
                        }
                        LoadBatch::Decoded(decoded)
                    } else {
                        let (mut bytes, mut ends) = (Vec::new(), Vec::with_capacity(LOAD_BATCH));
                        for entry in log.by_ref().take(LOAD_BATCH) {
                            bytes.extend_from_slice(entry?.1.value());
                            ends.push(bytes.len());
                        }
                        LoadBatch::Encoded { bytes, ends }
                    };
                    waiting_ref.fetch_add(1, Ordering::AcqRel);
                    if tx.send(Ok(batch)).is_err() {
                        return Ok(()); // the replay stopped
                    }
                }
                Ok(())
            };
            if let Err(e) = read_all() {
                let _ = tx.send(Err(e));
            }
        });
        let mut n = 0;
        for batch in rx {
            let batch = batch?;
            waiting.fetch_sub(1, Ordering::AcqRel);
            match batch {
                LoadBatch::Decoded(records) => {
                    for (record, id) in records {
                        replay(id, record)?;
                        n += 1;
                    }
                }
                LoadBatch::Encoded { bytes, ends } => {
                    let mut start = 0;
                    for end in ends {
                        let (record, id) = decode_logged(&bytes[start..end])?;
                        replay(id, record)?;
                        start = end;
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is in use by another process (is another agorad using this data directory?)", .0.display())]
    InUse(PathBuf),
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    /// A file of the store is damaged (the disk changed it under us, or it was cut short):
    /// `agora node repair` sets it aside and rebuilds it.
    #[error("{} is damaged: {cause}", .file.display())]
    Damaged { file: PathBuf, cause: String },
    #[error("content hashes to {got}, expected {expected}")]
    HashMismatch {
        expected: agora_protocol::ContentId,
        got: agora_protocol::ContentId,
    },
    #[error("blob {0} is not in the store")]
    MissingBlob(agora_protocol::ContentId),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::SetDurabilityError,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<DecodeError> for StoreError {
    fn from(e: DecodeError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A raw key and value: peer id bytes and an encoded reputation entry.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// One atomic change to the catalog tables.
#[derive(Default)]
pub struct CatalogWrite {
    pub records: Vec<(RecordId, CatalogRecord)>,
    pub owners: Vec<(PackageName, PublisherKey)>,
    pub highest: Vec<(PackageName, Version)>,
    pub evidence: Vec<(PackageName, Version, Vec<RecordId>)>,
    /// Refusals to remember (id, name, age) and to forget.
    pub refused: Vec<(RecordId, PackageName, u64)>,
    pub unrefused: Vec<RecordId>,
}

impl CatalogWrite {
    /// Whether the catalog itself is unchanged (refusals aside).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.owners.is_empty()
            && self.highest.is_empty()
            && self.evidence.is_empty()
    }
}

/// What the catalog tables held at start-up.
pub struct CatalogSnapshot {
    /// How many records the log holds (each went to the replay, in admission order).
    pub records: u64,
    /// Each stored package head with its bytes as stored (its DHT value's encoding).
    pub heads: Vec<(PackageHead, Vec<u8>)>,
}

/// The redb database of one node.
pub struct Db {
    db: Database,
}

impl Db {
    /// Opens (or creates) the database at `path`, checks every page it uses against its
    /// checksum and makes sure every table exists. If another process holds it (a daemon that
    /// is still exiting), waits up to [`DB_LOCK_WAIT`]. A file the disk changed or cut short is
    /// [`StoreError::Damaged`], whatever way it shows (redb panics on some damaged pages).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        catch_panic(path, || Self::open_checked(path)).map_err(|e| damage(path, e))
    }

    fn open_checked(path: &Path) -> Result<Self, StoreError> {
        let started = Instant::now();
        let damaged = |cause: String| StoreError::Damaged {
            file: path.to_owned(),
            cause,
        };
        let mut db = loop {
            match Database::builder()
                .set_cache_size(DB_CACHE_BYTES)
                .create(path)
            {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if started.elapsed() < DB_LOCK_WAIT =>
                {
                    std::thread::sleep(DB_LOCK_POLL);
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::InUse(path.to_owned()));
                }
                Err(redb::DatabaseError::Storage(e)) if is_damage(&e) => {
                    return Err(damaged(e.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        };
        // The page checksums are otherwise only read after a crash: a page the disk changed
        // since a clean shutdown would be read as it is, or make redb panic mid-query.
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                file = %path.display(),
                "the database was repaired by its storage engine; what it lost comes back from \
                 this node's journal and its peers"
            ),
            Err(redb::DatabaseError::Storage(e)) if is_damage(&e) => {
                return Err(damaged(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        let txn = db.begin_write()?;
        {
            txn.open_table(LOG)?;
            txn.open_table(IDS)?;
            txn.open_table(OWNERS)?;
            txn.open_table(HIGHEST)?;
            txn.open_table(EVIDENCE)?;
            txn.open_table(HEADS)?;
            txn.open_table(REPUTATION)?;
            txn.open_table(BLOBS)?;
            txn.open_table(REFUSED)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(Self { db })
    }

    /// The refusals stored (id, name, age), after forgetting them all if they were decided
    /// under another trust policy than `policy` (a fingerprint of it).
    pub fn refusals(&self, policy: &[u8]) -> Result<Vec<(RecordId, PackageName, u64)>, StoreError> {
        let same = {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            meta.get(REFUSAL_POLICY)?
                .is_some_and(|v| v.value() == policy)
        };
        if !same {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(redb::Durability::Immediate)?;
            txn.delete_table(REFUSED)?;
            txn.open_table(REFUSED)?;
            txn.open_table(META)?.insert(REFUSAL_POLICY, policy)?;
            txn.commit()?;
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(REFUSED)?.iter()? {
            let (id, value) = entry?;
            let value = value.value();
            let corrupt = || StoreError::Corrupt("a refused record's entry does not decode".into());
            let (age, name) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let name = std::str::from_utf8(name)
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(corrupt)?;
            out.push((
                RecordId::from_bytes(*id.value()),
                name,
                u64::from_le_bytes(*age),
            ));
        }
        Ok(out)
    }

    pub(crate) fn raw(&self) -> &Database {
        &self.db
    }

    /// Appends records and the trust changes they caused in one durable transaction. Changes
    /// to the remembered refusals alone commit without waiting for the disk: losing them in a
    /// crash costs a record's check again, never a wrong decision.
    pub fn write_catalog(&self, w: &CatalogWrite) -> Result<(), StoreError> {
        if w.is_empty() && w.refused.is_empty() && w.unrefused.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        if w.is_empty() {
            txn.set_durability(redb::Durability::None)?;
        } else {
            txn.set_two_phase_commit(true);
        }
        {
            let mut refused = txn.open_table(REFUSED)?;
            for id in &w.unrefused {
                refused.remove(id.as_bytes())?;
            }
            for (id, name, age) in &w.refused {
                let value = [&age.to_le_bytes()[..], name.as_str().as_bytes()].concat();
                refused.insert(id.as_bytes(), value.as_slice())?;
            }
        }
        {
            let mut log = txn.open_table(LOG)?;
            let mut ids = txn.open_table(IDS)?;
            let mut next = log.last()?.map_or(0, |(k, _)| k.value() + 1);
            for (id, record) in &w.records {
                if ids.get(id.as_bytes())?.is_some() {
                    continue;
                }
                log.insert(next, codec::encode(record).as_slice())?;
                ids.insert(id.as_bytes(), next)?;
                next += 1;
            }
            let mut owners = txn.open_table(OWNERS)?;
            for (name, key) in &w.owners {
                owners.insert(name.as_str(), key.as_bytes())?;
            }
            let mut highest = txn.open_table(HIGHEST)?;
            for (name, version) in &w.highest {
                highest.insert(name.as_str(), version.to_string().as_str())?;
            }
            let mut evidence = txn.open_table(EVIDENCE)?;
            for (name, version, list) in &w.evidence {
                let bytes: Vec<u8> = list.iter().flat_map(|id| *id.as_bytes()).collect();
                evidence.insert(format!("{name}@{version}").as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn put_head(&self, head: &PackageHead) -> Result<(), StoreError> {
        self.put_heads(std::slice::from_ref(head))
    }

    /// Stores these package heads (each replacing its name's) in one durable transaction.
    pub fn put_heads(&self, heads: &[PackageHead]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_two_phase_commit(true);
        {
            let mut table = txn.open_table(HEADS)?;
            for head in heads {
                table.insert(head.body.name.as_str(), head.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// How many records the log holds, and how many names have their owner pinned (every
    /// name a release was admitted for).
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read()?;
        Ok((txn.open_table(IDS)?.len()?, txn.open_table(OWNERS)?.len()?))
    }

    /// Reads every catalog table back, checking each entry decodes; the log's records go to
    /// `replay` one by one, in admission order, as they are decoded (never all in memory).
    pub fn load_catalog(
        &self,
        mut replay: impl FnMut(RecordId, CatalogRecord) -> Result<(), StoreError>,
    ) -> Result<CatalogSnapshot, StoreError> {
        let txn = self.db.begin_read()?;
        // The heads are read and decoded beside the replay: with a head for every name that
        // is as much work as the replay.
        let (records, heads) = std::thread::scope(|scope| {
            let heads = scope.spawn(|| read_heads(&txn));
            // The batch sent last counts until the replay takes it: more than one waiting
            // means the replay is behind.
            let records = replay_log(&txn, |waiting| waiting > 1, &mut replay);
            let heads = heads
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (records, heads)
        });
        let (records, heads) = (records?, heads?);
        let ids = txn.open_table(IDS)?.len()?;
        if ids != records {
            return Err(StoreError::Corrupt(format!(
                "the catalog log has {records} records but its id index has {ids}"
            )));
        }
        Ok(CatalogSnapshot { records, heads })
    }

    /// Reads the whole log in order, checking that each record decodes, that the id index
    /// names it at its position, and `check` (its signature), while `go_on` says so; the first
    /// that fails is [`StoreError::Corrupt`]. Returns how many records were checked. One read
    /// transaction: writers go on meanwhile.
    pub fn scrub(
        &self,
        mut check: impl FnMut(&CatalogRecord) -> Result<(), String>,
        go_on: impl Fn() -> bool,
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let ids = txn.open_table(IDS)?;
        let mut checked = 0;
        for entry in txn.open_table(LOG)?.iter()? {
            if !go_on() {
                break;
            }
            let (seq, bytes) = entry?;
            let seq = seq.value();
            let (record, id) = decode_logged(bytes.value())?;
            if ids.get(id.as_bytes())?.map(|s| s.value()) != Some(seq) {
                return Err(StoreError::Corrupt(format!(
                    "record {seq} of the log is not the one its id index names"
                )));
            }
            check(&record).map_err(|why| {
                StoreError::Corrupt(format!("record {id} (number {seq} of the log): {why}"))
            })?;
            checked += 1;
        }
        Ok(checked)
    }

    /// Calls `check` with the owner pin of each name in `names` and the highest version pinned
    /// for it, as stored (the caller compares them with the replayed catalog), and returns how
    /// many names in the range have an owner pin. Both tables are sorted by name and read side
    /// by side: one call per name. A highest version pinned for a name without an owner pin is
    /// a corrupt store.
    pub fn each_pin<'a>(
        &self,
        names: (Bound<&'a str>, Bound<&'a str>),
        mut check: impl FnMut(&str, &[u8; 32], Option<&str>) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let highest = txn.open_table(HIGHEST)?;
        let mut highest = highest.range::<&str>(names)?;
        let unpinned = |name: &str| {
            StoreError::Corrupt(format!(
                "highest version pinned for '{name}', which has no owner pin"
            ))
        };
        let mut next_highest = highest.next().transpose()?;
        let mut pins = 0;
        for entry in txn.open_table(OWNERS)?.range::<&str>(names)? {
            let (name, owner) = entry?;
            let name = name.value();
            let pinned = match &next_highest {
                Some((other, _)) if other.value() < name => return Err(unpinned(other.value())),
                Some((other, version)) if other.value() == name => Some(version.value()),
                _ => None,
            };
            let matched = pinned.is_some();
            check(name, owner.value(), pinned)?;
            if matched {
                next_highest = highest.next().transpose()?;
            }
            pins += 1;
        }
        match next_highest {
            Some((other, _)) => Err(unpinned(other.value())),
            None => Ok(pins),
        }
    }

    /// The record with this id, if the catalog has it.
    pub fn record(&self, id: &RecordId) -> Result<Option<CatalogRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(seq) = txn.open_table(IDS)?.get(id.as_bytes())?.map(|v| v.value()) else {
            return Ok(None);
        };
        let log = txn.open_table(LOG)?;
        let bytes = log
            .get(seq)?
            .ok_or_else(|| StoreError::Corrupt(format!("record {id} is indexed but not logged")))?;
        Ok(Some(decode_record(bytes.value())?))
    }

    /// Several records by id, in the order asked, skipping ids we do not have.
    pub fn records(&self, wanted: &[RecordId]) -> Result<Vec<CatalogRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let ids = txn.open_table(IDS)?;
        let log = txn.open_table(LOG)?;
        let mut out = Vec::with_capacity(wanted.len());
        for id in wanted {
            if let Some(seq) = ids.get(id.as_bytes())?
                && let Some(bytes) = log.get(seq.value())?
            {
                out.push(decode_record(bytes.value())?);
            }
        }
        Ok(out)
    }

    /// Reads the records with the ids in `wanted` (sorted and deduplicated here) and passes
    /// each to `each`, in log order, until it breaks; returns how many it passed (ids the
    /// catalog lacks are skipped). It reads the id index and then the log in order instead of
    /// looking each id up: for one record of every name (a search index rebuild), about five
    /// times faster than as many lookups, whose random walks down the id index dominate.
    pub fn scan_records(
        &self,
        wanted: &mut Vec<RecordId>,
        mut each: impl FnMut(CatalogRecord) -> ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        wanted.sort_unstable();
        wanted.dedup();
        let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
            return Ok(0);
        };
        let txn = self.db.begin_read()?;
        let mut seqs = Vec::with_capacity(wanted.len());
        let mut ahead = wanted.iter().map(RecordId::as_bytes).peekable();
        for entry in txn
            .open_table(IDS)?
            .range::<&[u8; 32]>(first.as_bytes()..=last.as_bytes())?
        {
            let (id, seq) = entry?;
            let id = id.value();
            while ahead.next_if(|w| *w < id).is_some() {}
            if ahead.next_if(|w| *w == id).is_some() {
                seqs.push(seq.value());
            }
            if ahead.peek().is_none() {
                break;
            }
        }
        seqs.sort_unstable();
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Ok(0);
        };
        let mut ahead = seqs.iter().copied().peekable();
        let unlogged = |seq: u64| {
            StoreError::Corrupt(format!(
                "record {seq} is in the id index but not in the log"
            ))
        };
        for entry in txn.open_table(LOG)?.range(first..=last)? {
            let (seq, bytes) = entry?;
            let seq = seq.value();
            match ahead.peek() {
                Some(&next) if next < seq => return Err(unlogged(next)),
                Some(&next) if next == seq => ahead.next(),
                _ => continue,
            };
            let record = decode_record(bytes.value())?;
            if each(record).is_break() {
                return Ok(seqs.len() - ahead.len());
            }
            if ahead.peek().is_none() {
                break;
            }
        }
        if let Some(next) = ahead.next() {
            return Err(unlogged(next));
        }
        Ok(seqs.len())
    }

    /// The ids of the log's records in log order (what a search index's seal is made of), if
    /// the log holds exactly `records` records (what memory holds: a write that failed leaves
    /// memory ahead of the log, and then no seal can be true).
    pub fn log_ids(&self, records: u64) -> Result<Option<Vec<RecordId>>, StoreError> {
        let txn = self.db.begin_read()?;
        if txn.open_table(LOG)?.len()? != records {
            return Ok(None);
        }
        let mut logged = Vec::with_capacity(records as usize);
        for entry in txn.open_table(IDS)?.iter()? {
            let (id, seq) = entry?;
            logged.push((seq.value(), RecordId::from_bytes(*id.value())));
        }
        logged.sort_unstable();
        let one_to_one = logged.len() as u64 == records
            && logged
                .iter()
                .zip(0..)
                .all(|((seq, _), expected)| *seq == expected);
        if !one_to_one {
            return Err(StoreError::Corrupt(format!(
                "the catalog's id index does not map its ids one to one onto the log's {records} \
                 records"
            )));
        }
        Ok(Some(logged.into_iter().map(|(_, id)| id).collect()))
    }

    /// Saves reputation entries (peer id bytes, encoded entry) in one transaction.
    /// Writes reputation `entries` and deletes the entries of `forgotten` peers.
    pub fn save_reputation(
        &self,
        entries: &[RawEntry],
        forgotten: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        if entries.is_empty() && forgotten.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(REPUTATION)?;
            for peer in forgotten {
                table.remove(peer.as_slice())?;
            }
            for (peer, entry) in entries {
                table.insert(peer.as_slice(), entry.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn load_reputation(&self) -> Result<Vec<RawEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(REPUTATION)?.iter()? {
            let (k, v) = entry?;
            if v.value().len() > MAX_META_BYTES {
                return Err(StoreError::Corrupt("oversized reputation entry".into()));
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

/// Where a damaged `file` is set aside: its name with `.{what}-{UTC time}` appended (and a
/// number, if that is taken). Nothing is deleted: what it still holds may be wanted.
pub fn aside_name(file: &Path, what: &str) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let base = format!("{}.{what}-{stamp}", file.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = PathBuf::from(format!("{base}-{n}"));
    }
    aside
}

/// Syncs the directory holding `file`, so that a rename or creation in it is durable.
pub fn sync_dir(file: &Path) -> Result<(), StoreError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Whether redb failed because its file is damaged (not because of the disk being full, a
/// permission, or another process).
fn is_damage(e: &redb::StorageError) -> bool {
    match e {
        redb::StorageError::Corrupted(_) => true,
        redb::StorageError::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        _ => false,
    }
}

/// Runs `work` on the store at `file`, turning a panic of the storage engine (redb panics on
/// some damaged pages) into [`StoreError::Damaged`].
pub fn catch_panic<T, E: From<StoreError>>(
    file: &Path,
    work: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(StoreError::Damaged {
            file: file.to_owned(),
            cause: format!("the storage engine failed reading it ({message})"),
        }
        .into())
    })
}

/// `e`, or [`StoreError::Damaged`] naming `file` if `e` shows the store at `file` is damaged:
/// an entry that does not decode or a check of Agora's own that fails, or redb reporting
/// corruption or a file cut short.
pub fn damage(file: &Path, e: StoreError) -> StoreError {
    let damaged = |cause: String| StoreError::Damaged {
        file: file.to_owned(),
        cause,
    };
    match e {
        StoreError::Corrupt(cause) => damaged(cause),
        StoreError::Db(redb::Error::Corrupted(cause)) => damaged(cause),
        StoreError::Db(redb::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            damaged(e.to_string())
        }
        other => other,
    }
}

/// Encodes a small metadata value of our own (reputation, blob metadata).
pub(crate) fn encode_meta<T: serde::Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value)
}

pub(crate) fn decode_meta<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(codec::decode_own::<
        T,
        MAX_META_BYTES,
        { codec::claims(MAX_META_BYTES) },
    >(bytes)?)
}

#[cfg(test)]
mod tests {
    use agora_protocol::PublisherSecret;
    use agora_protocol::records::{ArchiveInfo, ReleaseBody, Signed};

    use super::*;

    /// `n` releases of distinct names, in the log's order.
    fn releases(n: usize) -> Vec<(RecordId, CatalogRecord)> {
        let key = PublisherSecret::from_bytes([7; 32]);
        (0..n)
            .map(|i| {
                let body = ReleaseBody {
                    name: format!("pkg-{i}").parse().unwrap(),
                    version: Version::new(1, 0, i as u64),
                    meta: Default::default(),
                    dependencies: vec![],
                    archive: ArchiveInfo::describe(&(i as u64).to_le_bytes(), 16 * 1024),
                    published_at: i as u64,
                    publisher: key.public(),
                    previous: None,
                };
                let record = CatalogRecord::Release(Signed::sign(body, &key).unwrap());
                (record.id(), record)
            })
            .collect()
    }

    /// A store whose log holds `n` releases, and them.
    fn store_with(n: usize) -> (tempfile::TempDir, Db, Vec<(RecordId, CatalogRecord)>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("catalog.redb")).unwrap();
        let written = releases(n);
        db.write_catalog(&CatalogWrite {
            records: written.clone(),
            ..Default::default()
        })
        .unwrap();
        (dir, db, written)
    }

    #[test]
    fn the_log_ids_come_in_log_order_if_the_log_holds_what_memory_does() {
        let (_dir, db, written) = store_with(5);
        let in_log_order: Vec<RecordId> = written.iter().map(|(id, _)| *id).collect();
        assert_eq!(db.log_ids(5).unwrap(), Some(in_log_order));
        assert_eq!(db.log_ids(6).unwrap(), None, "the log holds fewer");
        assert_eq!(db.log_ids(4).unwrap(), None, "the log holds more");
    }

    #[test]
    fn a_scan_passes_the_records_asked_for_in_log_order_and_stops_when_told() {
        let (_dir, db, written) = store_with(40);
        // Asked for out of order, twice over, with an id the catalog lacks.
        let picked = [33, 2, 17, 2, 39, 0];
        let mut wanted: Vec<RecordId> = picked.iter().map(|&i| written[i].0).collect();
        wanted.push(RecordId::of(b"not in the catalog"));
        let mut passed = Vec::new();
        let found = db
            .scan_records(&mut wanted, |record| {
                passed.push(record);
                ControlFlow::Continue(())
            })
            .unwrap();
        let in_log_order: Vec<CatalogRecord> =
            [0, 2, 17, 33, 39].map(|i| written[i].1.clone()).into();
        assert_eq!((found, wanted.len()), (5, 6));
        assert!(
            passed == in_log_order,
            "not the records asked for, in log order"
        );

        let mut first_two = 0;
        let found = db
            .scan_records(&mut wanted, |_| {
                first_two += 1;
                if first_two == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!((found, first_two), (2, 2));

        // An id the index maps to a record the log lacks is a corrupt store.
        let txn = db.db.begin_write().unwrap();
        txn.open_table(LOG).unwrap().remove(17).unwrap();
        txn.commit().unwrap();
        let err = db
            .scan_records(&mut wanted, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the store is corrupt: record 17 is in the id index but not in the log"
        );
        assert_eq!(
            db.scan_records(&mut Vec::new(), |_| ControlFlow::Break(()))
                .unwrap(),
            0
        );
    }

    #[test]
    fn the_log_replays_in_order_whichever_thread_decodes_each_batch() {
        let (_dir, db, written) = store_with(3 * LOAD_BATCH + 7);
        let txn = db.db.begin_read().unwrap();
        let sent = AtomicUsize::new(0);
        let policies: [(&str, &(dyn Fn(usize) -> bool + Sync)); 4] = [
            ("the reader decodes all", &|_| true),
            ("the replay decodes all", &|_| false),
            ("alternately", &|_| {
                sent.fetch_add(1, Ordering::Relaxed).is_multiple_of(2)
            }),
            ("as at start-up", &|waiting| waiting > 1),
        ];
        for (how, reader_decodes) in policies {
            let mut replayed = Vec::new();
            let n = replay_log(&txn, reader_decodes, &mut |id, record| {
                replayed.push((id, record));
                Ok(())
            })
            .unwrap();
            assert_eq!(n, written.len() as u64, "{how}");
            assert!(
                replayed == written,
                "{how}: the replay differs from the log"
            );
        }
        // A record that no longer decodes fails the load, on either thread.
        drop(txn);
        let txn = db.db.begin_write().unwrap();
        txn.open_table(LOG)
            .unwrap()
            .insert(2 * LOAD_BATCH as u64 + 1, [1u8, 9, 9].as_slice())
            .unwrap();
        txn.commit().unwrap();
        let txn = db.db.begin_read().unwrap();
        for reader_decodes in [true, false] {
            let err = replay_log(&txn, |_| reader_decodes, &mut |_, _| Ok(())).unwrap_err();
            assert_eq!(
                err.to_string(),
                "the store is corrupt: malformed message: OtherString(\"invalid value: integer \
                 `9`, expected variant index 0 <= i < 4\")",
                "reader decodes {reader_decodes}"
            );
        }
    }
}
