//! Opening the store, and recovering it when it is damaged.
//!
//! Opening checks the database (redb's page checksums, then the catalog's own checks as it is
//! replayed) and turns whatever shows damage, a panic of the storage engine included, into
//! [`StoreError::Damaged`] naming the file. A damaged database is recoverable because little
//! of it is this node's alone: the records it signed or announced are in the own-records
//! journal beside it, the archives are files named by their hash, the keys are files, and the
//! rest of the catalog is held by its peers. A repair sets the database aside (never deletes
//! it), starts a new one, takes back every archive file that still matches its hash, then
//! opens as usual: the journal's records go back into the catalog, the search index is rebuilt,
//! and the first sync with each peer brings back the rest.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use agora_protocol::ipc::RepairInfo;
use agora_protocol::records::CatalogRecord;
use tracing::{info, warn};

use super::{Ingested, RegistryConfig, RegistryError, RegistryStats, now};
use crate::catalog::{Catalog, Opened};
use crate::index::SearchIndex;
use crate::store::blobs::BlobCheck;
use crate::store::journal::Journal;
use crate::store::{self, BlobStore, Db, StoreError};

/// The database in a data directory.
pub const DB_FILE: &str = "catalog.redb";
/// The own-records journal beside it.
pub const JOURNAL_FILE: &str = "own-records.journal";
/// Left beside the database when a check while the node ran found a record damaged: what it
/// found. The next start treats the database as damaged; a repair removes it.
pub const CHECK_FAILED_FILE: &str = "catalog.redb.check-failed";

/// What a node does when it finds its store damaged at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RepairMode {
    /// Repair it and start (what a background node wants: nobody is there to answer).
    #[default]
    Auto,
    /// Refuse to start, naming the file, the damage and the command that repairs it.
    Off,
}

impl FromStr for RepairMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "'{other}' is not a repair mode: use \"auto\" or \"off\""
            )),
        }
    }
}

/// A store opened and checked.
pub(super) struct Store {
    pub db: Arc<Db>,
    pub blobs: BlobStore,
    pub blob_check: BlobCheck,
    pub catalog: Catalog,
    pub opened: Opened,
    pub journal: Journal,
    pub stats: Arc<RegistryStats>,
    /// Records of the journal the catalog lacked and took.
    pub from_journal: u64,
}

/// Opens the store under `config.data_dir`, repairing it first if it is damaged and
/// `config.repair` allows; returns the repair made, if one was.
pub(super) fn open(config: &RegistryConfig) -> Result<(Store, Option<RepairInfo>), RegistryError> {
    match open_checked(config) {
        Err(RegistryError::Store(damage @ StoreError::Damaged { .. }))
            if config.repair == RepairMode::Auto =>
        {
            warn!(
                error = %damage,
                "the store is damaged; setting it aside and rebuilding it from this node's \
                 journal, its archives and its peers"
            );
            let report = repair(config, &damage)?;
            Ok(report)
        }
        other => Ok((other?, None)),
    }
}

/// Repairs the store under `config.data_dir` if it is damaged (whatever `config.repair`
/// says: this is what `agorad --repair` runs). `None` if it was sound.
pub fn repair_offline(config: &RegistryConfig) -> Result<Option<RepairInfo>, RegistryError> {
    match open_checked(config) {
        Ok(_) => Ok(None),
        Err(RegistryError::Store(damage @ StoreError::Damaged { .. })) => {
            Ok(repair(config, &damage)?.1)
        }
        Err(e) => Err(e),
    }
}

fn repair(
    config: &RegistryConfig,
    damage: &StoreError,
) -> Result<(Store, Option<RepairInfo>), RegistryError> {
    let mut report = set_aside(&config.data_dir, damage)?;
    let store = open_checked(config)?;
    report.from_journal = store.from_journal;
    info!(
        set_aside = report
            .set_aside
            .as_deref()
            .unwrap_or("(the database was missing)"),
        from_journal = report.from_journal,
        blobs_kept = report.blobs_kept,
        blobs_dropped = report.blobs_dropped,
        "store repaired; the rest of the catalog comes back from peers as they sync"
    );
    Ok((store, Some(report)))
}

/// Opens the store and checks it; damage of any kind is [`StoreError::Damaged`].
fn open_checked(config: &RegistryConfig) -> Result<Store, RegistryError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(store::io_err(dir))?;
    let db_path = dir.join(DB_FILE);
    let journal_path = dir.join(JOURNAL_FILE);
    // A new database beside an old journal is one that was lost: opening it as new would
    // delete every archive file as owned by nothing.
    if !db_path.exists() && journal_path.exists() {
        return Err(StoreError::Damaged {
            file: db_path,
            cause: format!("it is missing, while {} is there", journal_path.display()),
        }
        .into());
    }
    let marked = dir.join(CHECK_FAILED_FILE);
    if let Ok(found) = std::fs::read(&marked) {
        let found = String::from_utf8_lossy(&found[..found.len().min(4096)]).into_owned();
        return Err(StoreError::Damaged {
            file: db_path,
            cause: format!("a check while the node ran found: {found}"),
        }
        .into());
    }
    let opened = store::catch_panic(&db_path, || {
        // The saved search index is read (and checked) while the database is: each takes
        // tens of milliseconds at 100k releases, and they share nothing.
        let (db, saved_index) = std::thread::scope(|scope| {
            let saved = scope.spawn(|| SearchIndex::load_saved(&dir.join("index")));
            let db = Db::open(&db_path);
            (db, saved.join())
        });
        let saved_index = saved_index.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let db = Arc::new(db?);
        let (blobs, blob_check) = BlobStore::open(dir, db.clone(), config.cache_quota)?;
        let stats = Arc::new(RegistryStats::default());
        let (catalog, opened) = Catalog::open(
            db.clone(),
            dir,
            &config.trust,
            &blobs.published(),
            &blobs.ids().into_iter().collect(),
            saved_index,
            stats.clone(),
        )?;
        Ok::<_, RegistryError>((db, blobs, blob_check, catalog, opened, stats))
    });
    let (db, blobs, blob_check, catalog, opened, stats) = opened.map_err(|e| match e {
        RegistryError::Store(e) => store::damage(&db_path, e).into(),
        other => other,
    })?;
    let (journal, own, check) = Journal::open(&journal_path)?;
    if check.torn_bytes > 0 {
        info!(
            bytes = check.torn_bytes,
            "cut off a torn append at the end of the journal"
        );
    }
    for info in &opened.archives {
        blobs.describe(info);
    }
    let from_journal = take_journal(&catalog, &blobs, own)?;
    Ok(Store {
        db,
        blobs,
        blob_check,
        catalog,
        opened,
        journal,
        stats,
        from_journal,
    })
}

/// Sets the damaged database aside, creates a new one and takes back into it the archive
/// files that still match their hash.
fn set_aside(dir: &Path, damage: &StoreError) -> Result<RepairInfo, StoreError> {
    let db_path = dir.join(DB_FILE);
    let set_aside = if db_path.exists() {
        let aside = store::aside_name(&db_path, "damaged");
        std::fs::rename(&db_path, &aside).map_err(store::io_err(&db_path))?;
        store::sync_dir(&db_path)?;
        Some(aside.display().to_string())
    } else {
        None
    };
    let marked = dir.join(CHECK_FAILED_FILE);
    if marked.exists() {
        std::fs::remove_file(&marked).map_err(store::io_err(&marked))?;
        store::sync_dir(&marked)?;
    }
    let db = Db::open(&db_path)?;
    let (blobs_kept, blobs_dropped) = BlobStore::readopt(dir, &db)?;
    Ok(RepairInfo {
        at: now(),
        cause: damage.to_string(),
        set_aside,
        blobs_kept,
        blobs_dropped,
        ..RepairInfo::default()
    })
}

/// Takes into the catalog the journal's records it lacks, and keeps the archives of the
/// releases among them as published here. Returns how many records it took.
fn take_journal(
    catalog: &Catalog,
    blobs: &BlobStore,
    own: Vec<CatalogRecord>,
) -> Result<u64, RegistryError> {
    for record in &own {
        if let CatalogRecord::Release(r) = record {
            blobs.keep_as_published(&r.body.archive.id)?;
            blobs.describe(&r.body.archive);
        }
    }
    let missing: Vec<CatalogRecord> = own
        .into_iter()
        .filter(|r| !catalog.view().knows(&r.id()))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let mut taken = 0;
    for (id, outcome) in catalog.ingest(missing, false)? {
        match outcome {
            Ingested::Added(_) => taken += 1,
            Ingested::Duplicate => {}
            other => warn!(%id, ?other, "a record of the journal was not taken back"),
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use agora_protocol::records::{ArchiveInfo, ReleaseBody, Signed};
    use agora_protocol::{PublisherSecret, RecordId, Version};

    use agora_protocol::ipc::StoreCheck;

    use super::*;
    use crate::ops::damaged;
    use crate::store::BlobKind;

    /// `n` releases of distinct names signed by `key`.
    fn releases(key: &PublisherSecret, prefix: &str, n: usize) -> Vec<CatalogRecord> {
        (0..n)
            .map(|i| {
                let body = ReleaseBody {
                    name: format!("{prefix}-{i}").parse().unwrap(),
                    version: Version::new(1, 0, 0),
                    meta: Default::default(),
                    dependencies: vec![],
                    archive: ArchiveInfo::describe(format!("{prefix}{i}").as_bytes(), 16 * 1024),
                    published_at: i as u64,
                    publisher: key.public(),
                    previous: None,
                };
                CatalogRecord::Release(Signed::sign(body, key).unwrap())
            })
            .collect()
    }

    fn ids(records: &[CatalogRecord]) -> BTreeSet<RecordId> {
        records.iter().map(CatalogRecord::id).collect()
    }

    fn held(store: &Store) -> BTreeSet<RecordId> {
        store.catalog.view().record_ids().into_iter().collect()
    }

    fn copy_dir(from: &Path, to: &Path) {
        for entry in walkdir::WalkDir::new(from) {
            let entry = entry.unwrap();
            let dest = to.join(entry.path().strip_prefix(from).unwrap());
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
            } else {
                std::fs::copy(entry.path(), &dest).unwrap();
            }
        }
    }

    /// A record whose signature no longer holds, in a database whose pages are all sound (as
    /// a bug or a hand could leave it): the check after the start finds it and leaves its
    /// mark; the next start refuses (repair off) or repairs.
    #[test]
    fn a_record_whose_signature_fails_the_check_is_repaired_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RegistryConfig::new(dir.path());
        let own = releases(&PublisherSecret::from_bytes([1; 32]), "own", 3);
        let foreign = releases(&PublisherSecret::from_bytes([2; 32]), "theirs", 3);
        let (store, _) = open(&config).unwrap();
        for record in &own {
            store
                .journal
                .write_ahead(record, || {
                    store.catalog.ingest(vec![record.clone()], false)?;
                    Ok::<_, RegistryError>(((), true))
                })
                .unwrap();
        }
        store.catalog.ingest(foreign.clone(), false).unwrap();
        assert_eq!(
            damaged::check_stored(dir.path(), &store.db, || true),
            StoreCheck::Sound { records: 6 }
        );

        // The fourth record (the first foreign one) with the last byte of its signature
        // changed, under its new id.
        let txn = store.db.raw().begin_write().unwrap();
        let (tampered_id, why) = {
            use redb::ReadableTable;
            let mut log = txn.open_table(crate::store::LOG).unwrap();
            let mut bytes = log.get(3).unwrap().unwrap().value().to_vec();
            *bytes.last_mut().unwrap() ^= 1;
            log.insert(3, bytes.as_slice()).unwrap();
            let (tampered, id) = CatalogRecord::decode_stored(&bytes).unwrap();
            let mut ids = txn.open_table(crate::store::IDS).unwrap();
            ids.remove(foreign[0].id().as_bytes()).unwrap();
            ids.insert(id.as_bytes(), 3).unwrap();
            (id, tampered.verify().unwrap_err())
        };
        txn.commit().unwrap();
        let expected = format!("record {tampered_id} (number 3 of the log): {why}");
        assert_eq!(
            damaged::check_stored(dir.path(), &store.db, || true),
            StoreCheck::Damaged(expected.clone())
        );
        assert_eq!(
            damaged::check_stored(dir.path(), &store.db, || false),
            StoreCheck::Sound { records: 0 },
            "stopped before the first"
        );
        drop(store);

        config.repair = RepairMode::Off;
        let refused = open(&config).err().unwrap().to_string();
        assert_eq!(
            refused,
            format!(
                "{} is damaged: a check while the node ran found: {expected}",
                dir.path().join(DB_FILE).display()
            )
        );
        config.repair = RepairMode::Auto;
        let (store, repaired) = open(&config).unwrap();
        assert_eq!(repaired.unwrap().from_journal, 3);
        assert_eq!(held(&store), ids(&own));
        assert!(!dir.path().join(CHECK_FAILED_FILE).exists());
        assert_eq!(
            damaged::check_stored(dir.path(), &store.db, || true),
            StoreCheck::Sound { records: 3 }
        );
    }

    /// A byte flipped in each page of the database in turn: the store opens as it was, or is
    /// found damaged (never a panic), and then either refuses to open (repair off) or is
    /// repaired with this node's own records and archives (repair auto).
    #[test]
    fn every_damaged_page_is_found_and_the_own_records_and_archives_come_back() {
        let original = tempfile::tempdir().unwrap();
        let mut config = RegistryConfig::new(original.path());
        let (own, foreign) = (
            releases(&PublisherSecret::from_bytes([1; 32]), "own", 12),
            releases(&PublisherSecret::from_bytes([2; 32]), "theirs", 12),
        );
        // The archive of the first own release.
        let archive = b"own0".to_vec();
        let archive_id = {
            let (store, repaired) = open(&config).unwrap();
            assert!(repaired.is_none());
            let (id, _) = store
                .blobs
                .insert(&archive, None, BlobKind::Published)
                .unwrap();
            for record in &own {
                store
                    .journal
                    .write_ahead(record, || {
                        let added = store.catalog.ingest(vec![record.clone()], false)?;
                        Ok::<_, RegistryError>(((), matches!(added[0].1, Ingested::Added(_))))
                    })
                    .unwrap();
            }
            store.catalog.ingest(foreign.clone(), false).unwrap();
            assert_eq!(held(&store), &ids(&own) | &ids(&foreign));
            id
        };
        let db_bytes = std::fs::read(original.path().join(DB_FILE)).unwrap();
        let (mut sound, mut damaged) = (0, 0);
        for page in 0..db_bytes.len() / 4096 {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(original.path(), dir.path());
            let mut flipped = db_bytes.clone();
            flipped[page * 4096 + 100] ^= 0x5a;
            std::fs::write(dir.path().join(DB_FILE), &flipped).unwrap();
            config.data_dir = dir.path().to_owned();

            config.repair = RepairMode::Off;
            match open(&config) {
                Ok((store, None)) => {
                    assert_eq!(held(&store), &ids(&own) | &ids(&foreign), "page {page}");
                    sound += 1;
                    continue;
                }
                Ok((_, Some(_))) => panic!("page {page}: repaired though repair is off"),
                Err(RegistryError::Store(StoreError::Damaged { file, .. })) => {
                    assert_eq!(file, dir.path().join(DB_FILE), "page {page}");
                }
                Err(e) => panic!("page {page}: {e}"),
            }
            damaged += 1;
            // redb marks the file open in its header, so the bytes may change; the refusal
            // does not: the file is still found damaged.
            assert!(
                matches!(
                    open(&config),
                    Err(RegistryError::Store(StoreError::Damaged { .. }))
                ),
                "page {page}: found damaged once only"
            );
            let refused = std::fs::read(dir.path().join(DB_FILE)).unwrap();

            config.repair = RepairMode::Auto;
            let (store, repaired) = open(&config).unwrap();
            let report = repaired.unwrap_or_else(|| panic!("page {page}: not repaired"));
            assert_eq!(held(&store), ids(&own), "page {page}");
            assert_eq!(
                (report.from_journal, report.blobs_kept, report.blobs_dropped),
                (own.len() as u64, 1, 0),
                "page {page}"
            );
            assert_eq!(
                store.blobs.meta(&archive_id).map(|m| m.kind),
                Some(BlobKind::Published),
                "page {page}"
            );
            let aside = report.set_aside.unwrap();
            assert!(
                std::fs::read(&aside).unwrap() == refused,
                "page {page}: the damaged file is set aside as it was"
            );
            drop(store);
            // The repaired store opens as it is, with nothing to take from the journal.
            let (store, repaired) = open(&config).unwrap();
            assert!(repaired.is_none(), "page {page}");
            assert_eq!((held(&store), store.from_journal), (ids(&own), 0));
        }
        // Of this store's 258 pages, these are the 10 its tables use.
        assert!(
            damaged >= 10 && sound >= 1,
            "{damaged} damaged pages found, {sound} pages unused"
        );
    }
}
