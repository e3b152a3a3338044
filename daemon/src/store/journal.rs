//! The own-records journal: every release, yank and rotation this node signed or announced,
//! kept a second time beside the database. They may not have reached any peer yet, so they
//! are the part of the catalog a damaged database cannot get back from the network.
//!
//! It is written ahead of the catalog: a record is appended and fsynced before the catalog
//! takes it, and cut off again if the catalog does not. Each start takes into the catalog the
//! journal's records the catalog lacks (a crash between the two writes, or a rebuilt
//! database), so what the journal holds the catalog holds.
//!
//! Format: the 8 bytes [`MAGIC`], then one frame per record: its length (u32, little-endian),
//! the SHA-256 of its bytes, its bytes (the record's wire encoding). A frame cut short or not
//! matching its hash at the end of the file is a torn append and is cut off; one in the middle
//! is damage: the file is set aside and rewritten with the frames that are whole.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use agora_protocol::ContentId;
use agora_protocol::codec;
use agora_protocol::limits::MAX_TAGGED_RECORD_BYTES;
use agora_protocol::records::CatalogRecord;

use super::{StoreError, io_err};

/// The first bytes of a journal (its format's version is the last digit).
pub const MAGIC: &[u8; 8] = b"AGORAJ1\n";
/// Length and hash before each record.
const FRAME_HEAD: usize = 4 + 32;
/// Largest journal read: about 80,000 releases of the largest size, far more than one node
/// publishes.
pub const MAX_JOURNAL_BYTES: u64 = 1 << 30;

/// What opening the journal found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalCheck {
    /// Bytes of a torn last append, cut off.
    pub torn_bytes: u64,
    /// Why the journal was damaged, and where its damaged copy was set aside.
    pub damaged: Option<(String, PathBuf)>,
}

pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Opens the journal at `path` (creating it), with the records it holds in the order they
    /// were written.
    pub fn open(path: &Path) -> Result<(Self, Vec<CatalogRecord>, JournalCheck), StoreError> {
        let mut check = JournalCheck::default();
        let existing = match File::open(path) {
            Ok(file) => Some(read_bounded(path, file)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(path)(e)),
        };
        let records = match existing {
            None => {
                write_whole(path, &[])?;
                Vec::new()
            }
            Some(bytes) => {
                let read = parse(&bytes);
                if let Some(cause) = read.damage {
                    let aside = super::aside_name(path, "damaged");
                    fs::rename(path, &aside).map_err(io_err(path))?;
                    write_whole(path, &read.records)?;
                    tracing::warn!(
                        file = %path.display(),
                        kept = read.records.len(),
                        set_aside = %aside.display(),
                        "the own-records journal was damaged ({cause}); rewritten with its whole records"
                    );
                    check.damaged = Some((cause, aside));
                } else if read.end < bytes.len() {
                    check.torn_bytes = (bytes.len() - read.end) as u64;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io_err(path))?;
                    file.set_len(read.end as u64).map_err(io_err(path))?;
                    file.sync_all().map_err(io_err(path))?;
                }
                read.records
            }
        };
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        let journal = Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        };
        Ok((journal, records, check))
    }

    /// Appends `record` durably, then runs `admit`, which says whether the catalog took it;
    /// if it did not (or failed), the record is cut off the journal again. Appends are one at
    /// a time, so a record cut off is always the last.
    pub fn write_ahead<T, E: From<StoreError>>(
        &self,
        record: &CatalogRecord,
        admit: impl FnOnce() -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        let mut file = crate::lock(&self.file);
        let start = file.metadata().map_err(io_err(&self.path))?.len();
        let write = |file: &mut File| -> std::io::Result<()> {
            file.write_all(&frame(record))?;
            file.sync_data()
        };
        if let Err(e) = write(&mut file) {
            // What part of the frame reached the file is cut off: the journal stays readable.
            let _ = file.set_len(start).and_then(|()| file.sync_data());
            return Err(io_err(&self.path)(e).into());
        }
        let admitted = admit();
        if !matches!(admitted, Ok((_, true))) {
            file.set_len(start)
                .and_then(|()| file.sync_data())
                .map_err(io_err(&self.path))?;
        }
        admitted.map(|(value, _)| value)
    }
}

/// One record's frame.
fn frame(record: &CatalogRecord) -> Vec<u8> {
    let bytes = codec::encode(record);
    let mut out = Vec::with_capacity(FRAME_HEAD + bytes.len());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(ContentId::of(&bytes).as_bytes());
    out.extend_from_slice(&bytes);
    out
}

struct Parsed {
    records: Vec<CatalogRecord>,
    /// Where the whole frames end.
    end: usize,
    damage: Option<String>,
}

/// Reads the frames of a journal's bytes.
fn parse(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed {
        records: Vec::new(),
        end: MAGIC.len(),
        damage: None,
    };
    if bytes.len() < MAGIC.len() {
        // A journal is created with its magic in one synced write: shorter is a cut file.
        parsed.end = 0;
        if !MAGIC.starts_with(bytes) {
            parsed.damage = Some("it does not start as a journal does".into());
        }
        return parsed;
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        parsed.end = 0;
        parsed.damage = Some("it does not start as a journal does".into());
        return parsed;
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let frame = frame_at(&bytes[at..]);
        match frame {
            Ok((record, len)) => {
                parsed.records.push(record);
                at += len;
                parsed.end = at;
            }
            // A torn append: the last frame, cut short or not yet all on disk.
            Err(FrameError::Short) => break,
            Err(FrameError::Bad(_)) if next_is_end(bytes, at) => break,
            Err(FrameError::Bad(cause)) => {
                parsed.damage = Some(format!("the record at byte {at} {cause}"));
                break;
            }
        }
    }
    parsed
}

/// Whether the frame at `at` claims to reach exactly the end of the file (a torn last append).
fn next_is_end(bytes: &[u8], at: usize) -> bool {
    bytes[at..]
        .first_chunk::<4>()
        .is_some_and(|len| at + FRAME_HEAD + u32::from_le_bytes(*len) as usize == bytes.len())
}

enum FrameError {
    Short,
    Bad(&'static str),
}

/// The record of the frame at the start of `bytes`, and the frame's length.
fn frame_at(bytes: &[u8]) -> Result<(CatalogRecord, usize), FrameError> {
    let head = bytes.first_chunk::<FRAME_HEAD>().ok_or(FrameError::Short)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_TAGGED_RECORD_BYTES {
        return Err(FrameError::Bad("claims a length no record has"));
    }
    let body = bytes
        .get(FRAME_HEAD..FRAME_HEAD + len)
        .ok_or(FrameError::Short)?;
    if ContentId::of(body).as_bytes() != &head[4..] {
        return Err(FrameError::Bad("does not match its hash"));
    }
    let record = codec::decode::<
        CatalogRecord,
        MAX_TAGGED_RECORD_BYTES,
        { codec::claims(MAX_TAGGED_RECORD_BYTES) },
    >(body)
    .map_err(|_| FrameError::Bad("does not decode"))?;
    Ok((record, FRAME_HEAD + len))
}

fn read_bounded(path: &Path, file: File) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    file.take(MAX_JOURNAL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_JOURNAL_BYTES {
        return Err(StoreError::Damaged {
            file: path.to_owned(),
            cause: format!("it is larger than a journal may be ({MAX_JOURNAL_BYTES} bytes)"),
        });
    }
    Ok(bytes)
}

/// Writes a journal of `records` at `path` in place of any there, durably: a temporary file,
/// synced, renamed into place, the directory synced.
fn write_whole(path: &Path, records: &[CatalogRecord]) -> Result<(), StoreError> {
    let tmp = path.with_extension("new");
    let mut bytes = MAGIC.to_vec();
    for record in records {
        bytes.extend_from_slice(&frame(record));
    }
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    super::sync_dir(path)
}

#[cfg(test)]
mod tests {
    use agora_protocol::records::{Signed, YankBody};
    use agora_protocol::{PublisherSecret, Version};

    use super::*;

    fn yank(n: u64) -> CatalogRecord {
        let key = PublisherSecret::from_bytes([3; 32]);
        let body = YankBody {
            name: "pkg".parse().unwrap(),
            version: Version::new(1, 0, n),
            publisher: key.public(),
            yanked_at: n,
            reason: String::new(),
        };
        CatalogRecord::Yank(Signed::sign(body, &key).unwrap())
    }

    fn admit(keep: bool) -> impl FnOnce() -> Result<((), bool), StoreError> {
        move || Ok(((), keep))
    }

    #[test]
    fn records_the_catalog_took_are_kept_in_order_and_the_others_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("own.journal");
        let (journal, read, check) = Journal::open(&path).unwrap();
        assert_eq!((read, check), (vec![], JournalCheck::default()));
        journal.write_ahead(&yank(1), admit(true)).unwrap();
        journal.write_ahead(&yank(2), admit(false)).unwrap();
        let failed: Result<(), StoreError> = journal.write_ahead(&yank(3), || {
            Err(StoreError::Corrupt("the catalog write failed".into()))
        });
        assert!(failed.is_err());
        journal.write_ahead(&yank(4), admit(true)).unwrap();
        drop(journal);
        let (_, read, check) = Journal::open(&path).unwrap();
        assert_eq!(read, vec![yank(1), yank(4)]);
        assert_eq!(check, JournalCheck::default());
    }

    #[test]
    fn a_torn_last_append_is_cut_off_and_damage_sets_the_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("own.journal");
        let (journal, _, _) = Journal::open(&path).unwrap();
        for n in 1..=3 {
            journal.write_ahead(&yank(n), admit(true)).unwrap();
        }
        drop(journal);
        let whole = fs::read(&path).unwrap();
        let frame_len = frame(&yank(1)).len();

        // The last append cut short, or on disk with its length but not all its bytes.
        for (torn, left) in [
            (whole[..whole.len() - 5].to_vec(), frame_len - 5),
            ([&whole[..whole.len() - 9], &[0; 9][..]].concat(), frame_len),
        ] {
            fs::write(&path, &torn).unwrap();
            let (_, read, check) = Journal::open(&path).unwrap();
            assert_eq!(read, vec![yank(1), yank(2)]);
            assert_eq!(check.torn_bytes, left as u64);
            assert_eq!(check.damaged, None);
            assert_eq!(fs::read(&path).unwrap().len(), MAGIC.len() + 2 * frame_len);
        }

        // A byte flipped in the middle record: the two whole ones are kept, the file aside.
        let mut flipped = whole.clone();
        flipped[MAGIC.len() + frame_len + FRAME_HEAD + 10] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let (journal, read, check) = Journal::open(&path).unwrap();
        assert_eq!(read, vec![yank(1)]);
        let (cause, aside) = check.damaged.unwrap();
        assert_eq!(
            cause,
            format!(
                "the record at byte {} does not match its hash",
                MAGIC.len() + frame_len
            )
        );
        assert!(
            fs::read(&aside).unwrap() == flipped,
            "the damaged copy is kept"
        );
        journal.write_ahead(&yank(5), admit(true)).unwrap();
        drop(journal);
        let (_, read, check) = Journal::open(&path).unwrap();
        assert_eq!(
            (read, check),
            (vec![yank(1), yank(5)], JournalCheck::default())
        );

        fs::write(&path, b"not a journal at all").unwrap();
        let (_, read, check) = Journal::open(&path).unwrap();
        assert_eq!(read, vec![]);
        assert_eq!(
            check.damaged.unwrap().0,
            "it does not start as a journal does"
        );
    }
}
