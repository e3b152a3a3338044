//! Looking a package up on the DHT when the catalog lacks it: a node that missed its gossip
//! and has not synced since still finds it. The package head (`agora/pkg/<name>`) names the
//! owner and the versions; the release (`agora/rel/<name>/<version>`) is then got by its key
//! and admitted by the same trust rules as gossip and sync. A name the catalog knows keeps its
//! owner. For an unknown name, the heads of the keys this node's policy lets own it count: if
//! they are all one key's, that key's best head decides, as the first gossip would (trust on
//! first use); if several keys' heads are found, nothing here can tell the owner (a head's
//! sequence number is whatever its signer chose, and any peer near the key can hold one), so
//! the lookup admits nothing and says so.

use std::sync::Arc;

use agora_protocol::dht::{self, DhtKey, DhtValue};
use agora_protocol::records::{CatalogRecord, PackageHead, ReleaseRecord};
use agora_protocol::{PackageName, PublisherKey, Version, VersionReq};
use tracing::debug;

use super::{Registry, RegistryError, blocking};
use crate::catalog::{CatalogError, Ingested};
use crate::network::{NetworkError, RecordQuorum};

/// A lookup that found nothing: not an error for the caller, who reports the name as unknown.
fn nothing(e: NetworkError) -> Result<Vec<Vec<u8>>, NetworkError> {
    match e {
        NetworkError::NotFound | NetworkError::Query(_) | NetworkError::NoKnownPeers => {
            Ok(Vec::new())
        }
        other => Err(other),
    }
}

impl Registry {
    /// Makes sure the catalog holds a release of `name` matching `req` when one exists on
    /// the network: if the catalog has none, looks the newest matching one up on the DHT and
    /// admits it (and its head). Returns whether the catalog changed; a refusal by the trust
    /// rules is an error, finding nothing is not.
    #[tracing::instrument(name = "registry.lookup", skip_all, fields(package = %name, %req))]
    pub async fn look_up(
        self: &Arc<Self>,
        name: &PackageName,
        req: &VersionReq,
    ) -> Result<bool, RegistryError> {
        if self.catalog.view().has_match(name, req) {
            return Ok(false);
        }
        let known: Vec<Version> = match self.catalog.view().versions(name) {
            Ok(v) => v.into_iter().map(|v| v.version).collect(),
            Err(CatalogError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let Some(head) = self.best_head(name).await? else {
            debug!(%name, "no head on the DHT");
            return Ok(false);
        };
        let Some(version) = head
            .body
            .versions
            .iter()
            .rev()
            .find(|v| req.matches(v) && !known.contains(v))
            .cloned()
        else {
            return Ok(false);
        };
        let Some(release) = self.owners_release(name, &version, &head).await? else {
            debug!(%name, %version, "the head's release is not on the DHT");
            return Ok(false);
        };
        let reg = self.clone();
        let result = blocking(move || {
            let out = reg
                .catalog
                .ingest(vec![CatalogRecord::Release(release)], true)?;
            if let Err(e) = reg.catalog.admit_head(&head) {
                debug!(error = %e, "head found with the release not admitted");
            }
            Ok(out)
        })
        .await?;
        match result.into_iter().next() {
            Some((_, Ingested::Added(_))) => Ok(true),
            Some((_, Ingested::Refused(e))) => Err(e.into()),
            Some((_, Ingested::Invalid(e))) => Err(e.into()),
            Some((id, Ingested::RefusedBefore)) => Err(RegistryError::RefusedBefore(id)),
            Some((_, Ingested::Duplicate)) | None => Ok(false),
        }
    }

    /// The best valid head of `name` on the DHT. For a name the catalog knows only its
    /// owner's heads count; for an unknown one, those of keys the policy lets own it, and
    /// only while they are all one key's.
    async fn best_head(&self, name: &PackageName) -> Result<Option<PackageHead>, RegistryError> {
        let key = DhtKey::Head(name.clone()).to_bytes();
        let values = self
            .net
            .get_record(key.clone(), RecordQuorum::All)
            .await
            .or_else(nothing)?;
        let owner = self.catalog.view().owner(name);
        let heads: Vec<PackageHead> = values
            .iter()
            .filter_map(|v| match dht::validate(&key, v) {
                Ok(DhtValue::Head(h)) => Some(h),
                _ => None,
            })
            .filter(|h| match owner {
                Some(o) => o == h.body.owner,
                None => self.catalog.view().may_own(&h.body.owner),
            })
            .collect();
        let mut owners: Vec<PublisherKey> = heads.iter().map(|h| h.body.owner).collect();
        owners.sort();
        owners.dedup();
        if owners.len() > 1 {
            return Err(RegistryError::DisputedName {
                name: name.clone(),
                owners,
            });
        }
        Ok(heads.into_iter().max_by(dht::compare_heads))
    }

    /// The release of `name@version` signed by the head's owner: the first answer usually,
    /// every answer if the first is someone else's.
    async fn owners_release(
        &self,
        name: &PackageName,
        version: &Version,
        head: &PackageHead,
    ) -> Result<Option<ReleaseRecord>, RegistryError> {
        let key = DhtKey::Release(name.clone(), version.clone()).to_bytes();
        for quorum in [RecordQuorum::First, RecordQuorum::All] {
            let values = self
                .net
                .get_record(key.clone(), quorum)
                .await
                .or_else(nothing)?;
            let found = values
                .iter()
                .filter_map(|v| match dht::validate(&key, v) {
                    Ok(DhtValue::Release(r)) => Some(r),
                    _ => None,
                })
                .find(|r| r.body.publisher == head.body.owner);
            if found.is_some() || values.is_empty() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}
