//! The checks a catalog makes when it opens: the owner and highest-version pins stored with
//! the records against the replayed trust state, and the newest releases against the log.

use std::ops::Bound;
use std::path::Path;

use agora_protocol::Version;

use super::CatalogError;
use super::trust::Trust;
use crate::index::{SavedIndex, SearchIndex};
use crate::store::{Db, StoreError};

/// Checks the stored owner and highest-version pins against the replayed catalog (they are
/// written with the records, in the same transactions, so any difference is a corrupt store)
/// and returns how many names have an installable release. Two threads check half the names
/// each while a third opens the search index, which is returned too.
pub(super) fn check_pins_and_open_index(
    db: &Db,
    trust: &Trust,
    index_dir: &Path,
    saved: Option<SavedIndex>,
) -> Result<((SearchIndex, bool), u64), CatalogError> {
    // The names come out of their hash map in hash order: a sample's middle name splits the
    // sorted pin tables near their middle ("" when there are none: all in the upper half).
    let mut sample: Vec<&str> = trust.names().take(255).map(|(n, _)| n.as_str()).collect();
    sample.sort_unstable();
    let middle = sample.get(sample.len() / 2).copied().unwrap_or_default();
    let (index, upper, lower) = std::thread::scope(|scope| {
        let index = scope.spawn(|| SearchIndex::open_saved(index_dir, saved));
        let upper =
            scope.spawn(|| check_pin_range(db, trust, (Bound::Included(middle), Bound::Unbounded)));
        let lower = check_pin_range(db, trust, (Bound::Unbounded, Bound::Excluded(middle)));
        (joined(index.join()), joined(upper.join()), lower)
    });
    let (lower, upper) = (lower?, upper?);
    let installable = pins_agree(
        trust,
        PinCount {
            pins: lower.pins + upper.pins,
            installable: lower.installable + upper.installable,
        },
    )?;
    Ok((index?, installable))
}

/// Checks that the log had each of the `wanted` newest releases read from it.
pub(super) fn all_newest_found(found: usize, wanted: usize) -> Result<(), StoreError> {
    if found == wanted {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "{} of {wanted} newest releases are missing from the catalog log",
        wanted - found
    )))
}

/// A thread's result, or its panic passed on.
pub(super) fn joined<T>(result: std::thread::Result<T>) -> T {
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What a range of the pin tables held.
struct PinCount {
    pins: u64,
    installable: u64,
}

/// Checks that every name had its owner pin; returns how many names have an installable
/// release.
fn pins_agree(trust: &Trust, count: PinCount) -> Result<u64, StoreError> {
    let names = trust.name_count() as u64;
    if count.pins != names {
        return Err(StoreError::Corrupt(format!(
            "the catalog has {names} names but {} owner pins",
            count.pins
        )));
    }
    Ok(count.installable)
}

/// Checks the pins of the names in a range against the replayed catalog.
fn check_pin_range(
    db: &Db,
    trust: &Trust,
    names: (Bound<&str>, Bound<&str>),
) -> Result<PinCount, StoreError> {
    let mut installable = 0;
    let pins = db.each_pin(names, |name, owner, highest| {
        let state = trust.name(name).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "owner pin for '{name}', which the catalog does not have"
            ))
        })?;
        if state.owner.as_bytes() != owner {
            return Err(StoreError::Corrupt(format!(
                "owner pin of '{name}' is {} but the catalog says {}",
                hex::encode(owner),
                state.owner
            )));
        }
        let pinned = highest
            .map(|v| {
                Version::parse(v).map_err(|e| {
                    StoreError::Corrupt(format!("highest version pinned for '{name}': {e}"))
                })
            })
            .transpose()?;
        if pinned != state.highest {
            return Err(StoreError::Corrupt(format!(
                "highest version pinned for '{name}' is {} but the catalog says {}",
                shown(pinned.as_ref()),
                shown(state.highest.as_ref())
            )));
        }
        if state.latest().is_some() {
            installable += 1;
        }
        Ok(())
    })?;
    Ok(PinCount { pins, installable })
}

/// A version, or "none".
fn shown(version: Option<&Version>) -> String {
    version.map_or_else(|| "none".to_owned(), Version::to_string)
}
