//! What the catalog answers from memory: counts, ids, owners, versions, the sync summary.
//! Each of these takes the catalog's lock for a moment and never touches the disk, so async
//! code calls them as they are; everything that reads or writes the disk is a method of
//! [`Catalog`] itself, which async code reaches only through
//! [`Registry::read`](crate::ops::Registry::read), on a blocking thread.

use std::collections::{BTreeMap, BTreeSet};

use agora_protocol::ipc::IndexState;
use agora_protocol::messages::BucketDigest;
use agora_protocol::records::RecordId;
use agora_protocol::{ContentHasher, ContentId, PackageName, PublisherKey, Version, VersionReq};

use super::trust::TrustError;
use super::{Catalog, CatalogError, OVERLAY_MAX, SAVE_BEHIND_FRACTION, VersionInfo};

/// The catalog's answers that never block (see the module's documentation).
#[derive(Clone, Copy)]
pub struct CatalogView<'a>(pub(super) &'a Catalog);

impl CatalogView<'_> {
    /// Records the catalog holds (its log's length).
    pub fn record_count(&self) -> usize {
        self.0.lock().ids.len()
    }

    /// Packages the search index holds (what `search` can find).
    pub fn indexed_count(&self) -> u64 {
        self.0.index.num_docs()
    }

    /// Whether searches are answered now (or wait for a rebuild, or are refused after one
    /// failed).
    pub fn index_state(&self) -> IndexState {
        self.0.index.state()
    }

    /// Number of package names in the catalog.
    pub fn package_count(&self) -> usize {
        self.0.lock().trust.name_count()
    }

    pub fn has_record(&self, id: &RecordId) -> bool {
        self.0.lock().ids.contains(id)
    }

    /// Whether this node has decided on `id` already: it holds it, or refused it for good.
    pub fn knows(&self, id: &RecordId) -> bool {
        let cat = self.0.lock();
        cat.ids.contains(id) || cat.refusals.contains(id)
    }

    /// How many records this node remembers refusing.
    pub fn refusals_remembered(&self) -> usize {
        self.0.lock().refusals.len()
    }

    /// Digest of each of the 256 id buckets of the catalog.
    pub fn summary(&self) -> Vec<BucketDigest> {
        let mut cat = self.0.lock();
        let cat = &mut *cat;
        for (b, slot) in cat.summary.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let mut lo = [0u8; 32];
            lo[0] = b as u8;
            let mut count = 0u32;
            let mut h = ContentHasher::new();
            for id in cat
                .ids
                .range(ContentId::from_bytes(lo)..)
                .take_while(|id| usize::from(id.as_bytes()[0]) == b)
            {
                count += 1;
                h.update(id.as_bytes());
            }
            *slot = Some(if count == 0 {
                BucketDigest::default()
            } else {
                BucketDigest {
                    count,
                    digest: *h.finish().as_bytes(),
                }
            });
        }
        cat.summary.iter().map(|d| d.unwrap_or_default()).collect()
    }

    /// Ids in the given buckets, at most `limit`.
    pub fn ids_in(&self, buckets: &[u8], limit: usize) -> Vec<RecordId> {
        let cat = self.0.lock();
        let mut out = Vec::new();
        let wanted: BTreeSet<u8> = buckets.iter().copied().collect();
        for b in wanted {
            let mut lo = [0u8; 32];
            lo[0] = b;
            let lo = ContentId::from_bytes(lo);
            for id in cat.ids.range(lo..) {
                if id.as_bytes()[0] != b || out.len() >= limit {
                    break;
                }
                out.push(*id);
            }
        }
        out
    }

    /// Whether the catalog knows this name.
    pub fn exists(&self, name: &PackageName) -> bool {
        self.0.lock().trust.name(name).is_some()
    }

    /// Every version of a name, oldest first.
    pub fn versions(&self, name: &PackageName) -> Result<Vec<VersionInfo>, CatalogError> {
        let cat = self.0.lock();
        let state = cat.state(name)?;
        Ok(state
            .releases
            .iter()
            .map(|(v, id)| VersionInfo {
                version: v.clone(),
                record: *id,
                yanked: state.is_yanked(v),
                yank_reason: yank_reason(state.yanks(v)),
                equivocated: state.is_equivocated(v),
            })
            .collect())
    }

    /// The owner of a name on this node, and the record ids of any equivocation.
    pub fn owner(&self, name: &PackageName) -> Option<PublisherKey> {
        self.0.lock().trust.name(name).map(|s| s.owner)
    }

    /// Equivocation evidence: every version with more than one record, per name.
    pub fn equivocations(&self) -> BTreeMap<PackageName, BTreeMap<Version, Vec<RecordId>>> {
        self.0
            .lock()
            .trust
            .names()
            .filter_map(|(n, s)| Some((n.clone(), s.equivocations()?.clone())))
            .collect()
    }

    /// Whether the search index on disk is so far behind the catalog that a crash now would
    /// make the next start rebuild it (see [`save_index`](Self::save_index)).
    pub fn index_far_behind(&self) -> bool {
        let behind = (self.record_count() as u64).saturating_sub(self.0.index.saved_records());
        let due = (self.0.index.num_docs() / SAVE_BEHIND_FRACTION).max(OVERLAY_MAX as u64);
        behind >= due && self.0.index.state() == IndexState::Ready
    }

    /// The release a new version of `name` by `key` chains to (`None` for a new name), or why
    /// `key` may not publish `version` of it here.
    pub fn previous_for(
        &self,
        name: &PackageName,
        version: &Version,
        key: &PublisherKey,
    ) -> Result<Option<RecordId>, CatalogError> {
        let memory = self.0.lock();
        let Some(state) = memory.trust.name(name) else {
            return Ok(None);
        };
        if state.owner != *key {
            return Err(TrustError::NotOwner {
                name: name.clone(),
                owner: state.owner,
                signer: *key,
            }
            .into());
        }
        if let Some(record) = state.releases.get(version) {
            return Err(CatalogError::AlreadyPublished {
                name: name.clone(),
                version: version.clone(),
                record: *record,
            });
        }
        if let Some(h) = &state.highest
            && h > version
        {
            return Err(CatalogError::NotNewer {
                name: name.clone(),
                version: version.clone(),
                highest: h.clone(),
            });
        }
        Ok(state.tip())
    }

    /// What a rotation of `name` hands on: its newest release and the versions yanked.
    pub fn rotation_basis(
        &self,
        name: &PackageName,
    ) -> Result<(RecordId, Vec<Version>), CatalogError> {
        let memory = self.0.lock();
        let state = memory.state(name)?;
        let last = state
            .tip()
            .ok_or_else(|| TrustError::UnknownName { name: name.clone() })?;
        Ok((last, state.yanked().cloned().collect()))
    }

    /// Whether the catalog holds an installable release of `name` matching `req` (what
    /// [`get`](Self::get) would find, without reading it).
    pub fn has_match(&self, name: &PackageName, req: &VersionReq) -> bool {
        let memory = self.0.lock();
        memory
            .trust
            .name(name)
            .is_some_and(|state| state.newest_matching(req).is_some())
    }

    /// Whether the catalog holds a release of `name@version`, or `NotFound` for the name.
    pub fn has_version(&self, name: &PackageName, version: &Version) -> Result<bool, CatalogError> {
        Ok(self.0.lock().state(name)?.releases.contains_key(version))
    }

    /// The yanks of `name@version` that stand (a yank record's id, or that of the rotation that
    /// carried the yank over), oldest first: what an unyank must name.
    pub fn standing_yanks(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Vec<RecordId>, CatalogError> {
        let memory = self.0.lock();
        let state = memory.state(name)?;
        if !state.releases.contains_key(version) {
            return Err(CatalogError::VersionNotFound {
                name: name.clone(),
                version: version.clone(),
            });
        }
        Ok(state.yanks(version).iter().map(|m| m.id).collect())
    }

    /// The ids of every record the catalog holds.
    #[cfg(test)]
    pub fn record_ids(&self) -> Vec<RecordId> {
        self.0.lock().ids.iter().copied().collect()
    }

    /// Whether this node's policy lets `key` own a name it does not know yet.
    pub fn may_own(&self, key: &PublisherKey) -> bool {
        self.0.lock().trust.may_own(key)
    }
}

/// The reasons of a version's standing yanks, joined, or `None` when none gives one. A peer's
/// reason may hold control characters (the record format allows them): they become spaces,
/// so that what a terminal prints is only text.
fn yank_reason(yanks: &[super::trust::YankMark]) -> Option<String> {
    let reasons: Vec<String> = yanks
        .iter()
        .map(|m| {
            let text: String = m
                .reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            text.trim().to_string()
        })
        .filter(|r| !r.is_empty())
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::super::trust::YankMark;
    use super::yank_reason;
    use agora_protocol::ContentId;

    /// Reasons are joined, empty ones left out, and a peer's control characters never reach a
    /// terminal.
    #[test]
    fn a_yank_reason_is_plain_text() {
        let mark = |reason: &str| YankMark {
            id: ContentId::of(reason.as_bytes()),
            reason: reason.into(),
        };
        assert_eq!(yank_reason(&[]), None);
        assert_eq!(yank_reason(&[mark(""), mark(" \n")]), None);
        assert_eq!(
            yank_reason(&[mark("broken\x1b[2J build\n"), mark(""), mark("leaks a key")]),
            Some("broken [2J build; leaks a key".into())
        );
    }
}
