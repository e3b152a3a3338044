//! Publishing: a release packed, signed, stored, put on the DHT and gossiped; yanks and key
//! rotations signed and announced; releases of other publishers announced. The signing time
//! comes from here, the catalog decides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

impl Registry {
    /// Admits a verified release and announces it: DHT record and gossip.
    pub async fn announce(self: &Arc<Self>, record: ReleaseRecord) -> Result<(), RegistryError> {
        self.take_own_checked(CatalogRecord::Release(record.clone()), false)
            .await?;
        self.put_dht(DhtValue::Release(record.clone())).await?;
        self.gossip(GossipMessage::Release(record)).await?;
        Ok(())
    }

    async fn put_dht(&self, value: DhtValue) -> Result<(), RegistryError> {
        self.net
            .put_record(value.key().to_bytes(), value.encode())
            .await
            .or_else(tolerate_lonely)?;
        Ok(())
    }

    /// Publishes on gossip; false when no peer is subscribed yet.
    async fn gossip(&self, msg: GossipMessage) -> Result<bool, RegistryError> {
        match self.net.publish(msg.to_wire()).await {
            Ok(()) => Ok(true),
            Err(NetworkError::NoGossipPeers) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes the package in `dir`: validate its manifest, pack it deterministically, sign
    /// the release, store the archive and the record durably, index it, then gossip the
    /// release and, concurrently, put the release and head records on the DHT and provide the
    /// archive.
    #[tracing::instrument(
        name = "registry.publish",
        skip_all,
        fields(
            dir = %dir.display(),
            package = tracing::field::Empty,
            version = tracing::field::Empty,
            bytes = tracing::field::Empty,
            gossiped = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    )]
    pub async fn publish(
        self: &Arc<Self>,
        dir: PathBuf,
        secret: &PublisherSecret,
    ) -> Result<Published, RegistryError> {
        let started = Instant::now();
        let result = self.publish_inner(dir, secret).await;
        let span = tracing::Span::current();
        match &result {
            Ok(p) => {
                span.record("package", p.record.body.name.as_str());
                span.record("version", p.record.body.version.to_string());
                span.record("bytes", p.record.body.archive.size);
                span.record("gossiped", p.gossiped);
                span.record("outcome", "ok");
                Self::count(&self.stats.publishes);
                self.metrics.observe_publish(started.elapsed());
            }
            Err(e) => {
                span.record("outcome", e.to_string());
            }
        }
        result
    }

    async fn publish_inner(
        self: &Arc<Self>,
        dir: PathBuf,
        secret: &PublisherSecret,
    ) -> Result<Published, RegistryError> {
        let _authoring = self.authoring.lock().await;
        let reg = self.clone();
        let secret_bytes = secret.to_bytes();
        let (record, head, ticket, files) =
            blocking(move || reg.publish_local(&dir, &PublisherSecret::from_bytes(secret_bytes)))
                .await?;
        let id = record.body.archive.id;
        // The release is durable here. Gossip first: it reaches the connected peers at once,
        // while each DHT operation is an iterative query of several round trips. Then the
        // DHT puts and the provider record go out together, not one after another, while the
        // release becomes searchable here (the call returns once it is).
        let gossiped = self.gossip(GossipMessage::Release(record.clone())).await?;
        let reg = self.clone();
        let (r, h) = (record.clone(), head.clone());
        let mut dht = tokio::spawn(
            async move {
                let (release, head_put, provide) = tokio::join!(
                    reg.put_dht(DhtValue::Release(r)),
                    reg.put_dht(DhtValue::Head(h)),
                    reg.net.start_providing(DhtKey::Content(id).to_bytes()),
                );
                release?;
                head_put?;
                provide.or_else(tolerate_lonely)?;
                Ok::<(), RegistryError>(())
            }
            .in_current_span(),
        );
        let reg = self.clone();
        blocking(move || Ok(reg.catalog.flush_index(ticket)?)).await?;
        match tokio::time::timeout(PUBLISH_DHT_WAIT, &mut dht).await {
            Ok(joined) => {
                joined.map_err(|e| RegistryError::Internal(format!("DHT writes: {e}")))??
            }
            Err(_) => info!(
                name = %record.body.name,
                "DHT writes still running after {PUBLISH_DHT_WAIT:?}; they go on in the background"
            ),
        }
        info!(name = %record.body.name, version = %record.body.version, gossiped, "published");
        Ok(Published {
            record,
            head,
            gossiped,
            files,
        })
    }

    /// Takes a record this node signed or was asked to announce: written ahead to the
    /// own-records journal (it may reach no peer before this node's disk fails), then to the
    /// catalog, and cut off the journal again if the catalog did not add it. Blocking.
    fn ingest_own(
        &self,
        record: CatalogRecord,
        verified: bool,
    ) -> Result<((RecordId, Ingested), Ticket), RegistryError> {
        self.journal.write_ahead(&record.clone(), || {
            let (mut decided, ticket) =
                self.catalog
                    .ingest_durable(vec![record], verified, |_| {})?;
            let decided = decided.remove(0);
            let added = matches!(decided.1, Ingested::Added(_));
            Ok(((decided, ticket), added))
        })
    }

    /// [`ingest_own`](Self::ingest_own) on a blocking thread, and the search index brought up
    /// to date; an error unless the catalog holds the record now.
    async fn take_own_checked(
        self: &Arc<Self>,
        record: CatalogRecord,
        verified: bool,
    ) -> Result<(), RegistryError> {
        let reg = self.clone();
        let (id, decided) = blocking(move || {
            let (decided, ticket) = reg.ingest_own(record, verified)?;
            reg.catalog.flush_index(ticket)?;
            Ok(decided)
        })
        .await?;
        match decided {
            Ingested::Added(_) | Ingested::Duplicate => Ok(()),
            Ingested::Invalid(e) => Err(e.into()),
            Ingested::Refused(e) => Err(e.into()),
            Ingested::RefusedBefore => Err(RegistryError::RefusedBefore(id)),
        }
    }

    fn publish_local(
        &self,
        dir: &Path,
        secret: &PublisherSecret,
    ) -> Result<(ReleaseRecord, PackageHead, Ticket, archive::Files), RegistryError> {
        let manifest = archive::read_manifest(dir)?;
        let key = secret.public();
        let previous = self
            .catalog
            .view()
            .previous_for(&manifest.name, &manifest.version, &key)?;
        let (body, data, files) = release_body(dir, manifest, key, now(), previous)?;
        let info = body.archive.clone();
        let record = Signed::sign(body, secret)?;
        // The archive first: a record whose archive cannot be served helps nobody.
        self.blobs.describe(&info);
        self.blobs
            .insert(&data, Some(info.id), BlobKind::Published)?;
        let ((_, result), ticket) =
            self.ingest_own(CatalogRecord::Release(record.clone()), true)?;
        match result {
            Ingested::Added(Admission::Release) => {}
            Ingested::Refused(e) => return Err(e.into()),
            other => {
                return Err(RegistryError::Internal(format!(
                    "own release was not admitted: {other:?}"
                )));
            }
        }
        let head = self.catalog.sign_head(&record.body.name, secret, now())?;
        Ok((record, head, ticket, files))
    }

    /// The release a publish of the package in `dir` by `key` would sign (refused the same
    /// way), unsigned, and the files it would pack: nothing is stored or announced. With no
    /// key (this node has none yet), what only the key decides (that it may publish the name,
    /// the release it chains to) is left out and the body names a throwaway key.
    pub async fn dry_run(
        self: &Arc<Self>,
        dir: PathBuf,
        key: Option<PublisherKey>,
    ) -> Result<DryRun, RegistryError> {
        let reg = self.clone();
        blocking(move || {
            let manifest = archive::read_manifest(&dir)?;
            let previous = match &key {
                Some(key) => {
                    reg.catalog
                        .view()
                        .previous_for(&manifest.name, &manifest.version, key)?
                }
                None => None,
            };
            let key = key.unwrap_or_else(|| PublisherSecret::from_bytes(rand::random()).public());
            let (body, _, files) = release_body(&dir, manifest, key, now(), previous)?;
            Ok(DryRun { body, files })
        })
        .await
    }

    /// Refuses a release whose dependency no catalog this node reaches can meet (the DHT is
    /// asked first): it could not be installed.
    pub async fn check_dependencies(
        self: &Arc<Self>,
        manifest: &agora_protocol::Manifest,
    ) -> Result<(), RegistryError> {
        for d in &manifest.dependencies {
            if self.catalog.view().has_match(&d.name, &d.req) {
                continue;
            }
            // Not found on the DHT either is what the check below says; how the lookup
            // failed (no peers, say) changes nothing about it.
            let _ = self.look_up(&d.name, &d.req).await;
            let view = self.catalog.view();
            if view.has_match(&d.name, &d.req) {
                continue;
            }
            let why = match view.versions(&d.name) {
                Ok(versions) => {
                    let installable: Vec<Version> = versions
                        .into_iter()
                        .filter(|v| !v.yanked && !v.equivocated)
                        .map(|v| v.version)
                        .collect();
                    format!(
                        "no installable version of '{}' matches {} (there are: {})",
                        d.name,
                        d.req,
                        crate::catalog::resolve::fmt_versions(&installable)
                    )
                }
                Err(_) => format!("'{}' is in no catalog this node reaches", d.name),
            };
            return Err(RegistryError::MissingDependency {
                dependency: d.clone(),
                why,
            });
        }
        Ok(())
    }

    /// The manifest of the package in `dir`, read and checked.
    pub async fn manifest(&self, dir: PathBuf) -> Result<agora_protocol::Manifest, RegistryError> {
        blocking(move || Ok(archive::read_manifest(&dir)?)).await
    }

    /// Yanks `name@version` with a record signed by the owner, and gossips it.
    pub async fn yank(
        self: &Arc<Self>,
        name: &PackageName,
        version: &Version,
        reason: String,
        secret: &PublisherSecret,
    ) -> Result<agora_protocol::Yank, RegistryError> {
        let _authoring = self.authoring.lock().await;
        if !self.catalog.view().has_version(name, version)? {
            return Err(CatalogError::VersionNotFound {
                name: name.clone(),
                version: version.clone(),
            }
            .into());
        }
        let yank = Signed::sign(
            YankBody {
                name: name.clone(),
                version: version.clone(),
                publisher: secret.public(),
                yanked_at: now(),
                reason,
            },
            secret,
        )?;
        self.take_own_checked(CatalogRecord::Yank(yank.clone()), true)
            .await?;
        self.gossip(GossipMessage::Yank(yank.clone())).await?;
        Ok(yank)
    }

    /// Takes back every standing yank of `name@version` with unyank records signed by the owner
    /// (one per yank: usually one), and gossips them. Returns how many it undid.
    pub async fn unyank(
        self: &Arc<Self>,
        name: &PackageName,
        version: &Version,
        secret: &PublisherSecret,
    ) -> Result<usize, RegistryError> {
        let _authoring = self.authoring.lock().await;
        let standing = self.catalog.view().standing_yanks(name, version)?;
        if standing.is_empty() {
            return Err(RegistryError::NotYanked {
                name: name.clone(),
                version: version.clone(),
            });
        }
        for undoes in &standing {
            let unyank = Signed::sign(
                UnyankBody {
                    name: name.clone(),
                    version: version.clone(),
                    publisher: secret.public(),
                    undoes: *undoes,
                    unyanked_at: now(),
                },
                secret,
            )?;
            self.take_own_checked(CatalogRecord::Unyank(unyank.clone()), true)
                .await?;
            self.gossip(GossipMessage::Unyank(unyank)).await?;
        }
        Ok(standing.len())
    }

    /// Hands ownership of `name` to `to`, with a rotation record signed by the current owner,
    /// and gossips it.
    pub async fn rotate(
        self: &Arc<Self>,
        name: &PackageName,
        to: PublisherKey,
        secret: &PublisherSecret,
    ) -> Result<agora_protocol::KeyRotation, RegistryError> {
        let _authoring = self.authoring.lock().await;
        // What the new key inherits: the history up to the newest release, and the yanks.
        let (last, yanked) = self.catalog.view().rotation_basis(name)?;
        let rotation = Signed::sign(
            RotationBody {
                name: name.clone(),
                from: secret.public(),
                to,
                last,
                yanked,
                rotated_at: now(),
            },
            secret,
        )?;
        self.take_own_checked(CatalogRecord::Rotation(rotation.clone()), true)
            .await?;
        self.gossip(GossipMessage::Rotation(rotation.clone()))
            .await?;
        Ok(rotation)
    }
}

/// The release body of the package in `dir` (whose manifest is `manifest`), its packed
/// archive and the path and size of each file in it. Blocking.
fn release_body(
    dir: &Path,
    manifest: agora_protocol::Manifest,
    publisher: PublisherKey,
    published_at: u64,
    previous: Option<RecordId>,
) -> Result<(ReleaseBody, Vec<u8>, archive::Files), RegistryError> {
    let (data, files) = archive::pack(dir, &manifest)?;
    let body = ReleaseBody {
        name: manifest.name,
        version: manifest.version,
        meta: manifest.meta,
        dependencies: manifest.dependencies,
        archive: ArchiveInfo::describe(&data, ArchiveInfo::chunk_size_for(data.len() as u64)),
        published_at,
        publisher,
        previous,
    };
    Ok((body, data, files))
}
