//! The search index's copy on disk. The live index is in memory (a commit there creates no
//! files: on this machine's ext4, creating and deleting a dozen files per commit cost more
//! than the commit itself, and fsyncing them more again). It is derived data, so it is
//! written out only at a clean shutdown and when the copy on disk falls far behind, with a
//! seal naming the catalog log records it reflects, and read back at the next start if the
//! log still begins with those records.
//!
//! A save writes a staging directory, syncs every file, writes and syncs the seal last, then
//! removes the saved copy and puts the staging directory in its place. A staging directory
//! with its seal is therefore whole and newer than the saved copy: if a save stopped after
//! sealing it, the next start takes it (see [`recover`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tantivy::directory::{Directory, MmapDirectory, RamDirectory};

/// Written last, synced, in a snapshot directory: its content says what the snapshot holds.
pub const SEAL_FILE: &str = "agora-sealed";
/// Written before the seal: each other file's name, length and CRC-32, one per line. A copy
/// whose files do not match it is not used: tantivy checks a segment file only when a search
/// reads it, and not its metadata files at all.
pub const FILES: &str = "agora-files";

/// tantivy's lock files: held by a live writer, never part of a snapshot.
fn is_lock(name: &str) -> bool {
    name.starts_with(".tantivy-") && name.ends_with(".lock")
}

/// Where a snapshot is written before it replaces the previous one.
fn staging(dir: &Path) -> PathBuf {
    dir.with_extension("new")
}

/// The seal of the snapshot in `dir`, if there is one.
pub fn read_seal(dir: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(dir.join(SEAL_FILE)) {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The snapshot in `dir`, loaded into memory, if its seal reads exactly `seal` (after
/// [`recover`]).
pub fn load(dir: &Path, seal: &str) -> io::Result<Option<RamDirectory>> {
    recover(dir)?;
    if read_seal(dir)?.as_deref() != Some(seal) {
        return Ok(None);
    }
    let listed = fs::read_to_string(dir.join(FILES))?;
    let mut expected: std::collections::HashMap<&str, &str> = listed
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(sum, name)| (name, sum)))
        .collect();
    let ram = RamDirectory::create();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !entry.file_type()?.is_file() || name == SEAL_FILE || name == FILES || is_lock(&name) {
            continue;
        }
        let bytes = fs::read(entry.path())?;
        if expected.remove(name.as_ref()) != Some(summary(&bytes).as_str()) {
            return Err(damaged(format!("{name} is not as it was saved")));
        }
        ram.atomic_write(Path::new(name.as_ref()), &bytes)?;
    }
    if let Some(name) = expected.keys().next() {
        return Err(damaged(format!("{name} is missing")));
    }
    Ok(Some(ram))
}

fn damaged(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// A file's length and CRC-32, as [`FILES`] lists them.
fn summary(bytes: &[u8]) -> String {
    format!("{}:{:08x}", bytes.len(), crc32fast::hash(bytes))
}

/// Finishes or undoes a save that stopped: a staging directory it left is removed, or, if
/// it was sealed, put in the place of the saved copy (or what is left of it).
pub fn recover(dir: &Path) -> io::Result<()> {
    let stale = staging(dir);
    if !stale.exists() {
        return Ok(());
    }
    if read_seal(&stale)?.is_some() {
        if dir.exists() {
            fs::remove_dir_all(dir)?; // what the save had not finished removing
        }
        fs::rename(&stale, dir)?;
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        return Ok(());
    }
    fs::remove_dir_all(&stale)
}

/// Writes `ram` to `dir` durably, sealed with `seal`, replacing what was there: every file
/// is synced before the seal is written, and the new directory replaces the old by rename.
pub fn save(ram: &RamDirectory, dir: &Path, seal: &str) -> Result<(), tantivy::TantivyError> {
    let next = staging(dir);
    if next.exists() {
        fs::remove_dir_all(&next)?;
    }
    fs::create_dir_all(&next)?;
    // MmapDirectory syncs each file it writes.
    ram.persist(&MmapDirectory::open(&next)?)?;
    let mut listed = String::new();
    for entry in fs::read_dir(&next)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_lock(&name) {
            fs::remove_file(entry.path())?;
        } else {
            listed.push_str(&format!("{} {name}\n", summary(&fs::read(entry.path())?)));
        }
    }
    let mut file = File::create(next.join(FILES))?;
    file.write_all(listed.as_bytes())?;
    file.sync_all()?;
    let mut file = File::create(next.join(SEAL_FILE))?;
    file.write_all(seal.as_bytes())?;
    file.sync_all()?;
    File::open(&next)?.sync_all()?;
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&next, dir)?;
    if let Some(parent) = dir.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
