//! Records and archives the disk damaged after they were stored.
//!
//! Every chunk is checked against its hash before it is served, so a node never sends bad
//! bytes (and is never banned for its own disk); a blob that fails is dropped from the store
//! and from the DHT's provider records, and fetched again from peers if this node published or
//! pinned it.
//!
//! After each start every record of the catalog's log is checked once more ([`Registry::scrub`]:
//! it decodes, the id index names it, its signature holds), beside the node's work rather than
//! before it: verifying every signature takes seconds at 100k records. One that fails leaves a
//! mark beside the database, and the next start treats the database as damaged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_protocol::ContentId;
use agora_protocol::dht::DhtKey;
use agora_protocol::messages::{FetchRequest, HaveRequest, HaveResponse, Refusal};
use libp2p::PeerId;
use tracing::{info, warn};

use agora_protocol::ipc::StoreCheck;

use super::repair::{CHECK_FAILED_FILE, DB_FILE};
use super::{BlobKind, Registry, RegistryError, swarm};
use crate::store::blobs::CheckedReadError;
use crate::store::{self, Db, StoreError};

/// Attempts to fetch again a damaged archive this node keeps, and the waits between them
/// (doubling, then every 3 minutes): about 25 minutes in all.
const REFETCH_ATTEMPTS: u32 = 16;
const REFETCH_FIRST_DELAY: Duration = Duration::from_secs(1);
const REFETCH_MAX_DELAY: Duration = Duration::from_secs(180);

impl Registry {
    /// Checks every record of the catalog's log (see the module's notes) until it is done or
    /// `go_on` says stop; the outcome is [`Registry::store_check`]'s. Blocking.
    pub fn scrub(&self, go_on: impl Fn() -> bool) -> StoreCheck {
        let outcome = check_stored(&self.dir, &self.db, go_on);
        *crate::lock(&self.store_check) = outcome.clone();
        outcome
    }

    /// What the check of every stored record found (running until it ends).
    pub fn store_check(&self) -> StoreCheck {
        crate::lock(&self.store_check).clone()
    }

    /// The chunk `peer` asks for, cut as it asks, each chunk of the archive it falls in
    /// checked against its hash first; or why not (`Busy` for a chunk a crowd on a busy
    /// upload can copy among itself). Blocking (reads the blob file).
    pub(crate) fn chunk(
        self: &Arc<Self>,
        peer: PeerId,
        request: &FetchRequest,
    ) -> Result<Vec<u8>, Refusal> {
        let id = &request.content;
        let Some(meta) = self.blobs.meta(id) else {
            let data = self.downloads.chunk(request)?;
            self.served(&data);
            return Ok(data);
        };
        let (start, len) = request.range(meta.size).ok_or(Refusal::OutOfRange)?;
        if !self.seeding.may_send(peer, request, self.upload_busy()) {
            return Err(Refusal::Busy);
        }
        let data = match self.blobs.read_checked(id, start, len) {
            Ok(data) => data,
            Err(CheckedReadError::Damaged { id, chunk }) => {
                self.blob_damaged(id, Some(chunk));
                return Err(Refusal::NotFound);
            }
            Err(_) => return Err(Refusal::NotFound),
        };
        self.served(&data);
        Ok(data)
    }

    /// Whether answers queue in this node's upload, so that a crowd is super-seeded.
    fn upload_busy(&self) -> bool {
        self.net.uploads_queued() >= swarm::BUSY_UPLOAD
    }

    fn served(&self, data: &[u8]) {
        Self::count(&self.stats.chunks_served);
        self.stats
            .bytes_served
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }

    /// The answer to `peer`'s have request: the whole archive, the chunks of a download
    /// under way (what the peer holds goes to that fetch), or a refusal.
    pub(crate) fn have(&self, peer: PeerId, request: &HaveRequest) -> HaveResponse {
        if self.blobs.has(&request.content) {
            return HaveResponse::Have(self.seeding.offer(peer, request, self.upload_busy()));
        }
        self.downloads
            .have(peer, request)
            .unwrap_or(HaveResponse::Refused(Refusal::NotFound))
    }

    /// Drops blob `id`, found damaged (in `chunk`, if a chunk check found it), from the store
    /// and the provider records; fetches it again if it was published or pinned here. Needs a
    /// tokio runtime (the withdrawal and the fetch run on their own task).
    pub(crate) fn blob_damaged(self: &Arc<Self>, id: ContentId, chunk: Option<u32>) {
        let Some(info) = self.blobs.description(&id) else {
            return;
        };
        let meta = match self.blobs.discard(&id) {
            Ok(Some(meta)) => meta,
            Ok(None) => return, // dropped already
            Err(e) => {
                warn!(content = %id, error = %e, "could not drop a damaged archive");
                return;
            }
        };
        Self::count(&self.stats.blobs_damaged);
        let wanted = meta.kind == BlobKind::Published || meta.pinned;
        warn!(
            content = %id,
            chunk,
            refetch = wanted,
            "an archive's file no longer matches its hash; dropped it"
        );
        let registry = self.clone();
        tokio::runtime::Handle::current().spawn(async move {
            if let Err(e) = registry
                .net
                .stop_providing(DhtKey::Content(id).to_bytes())
                .await
            {
                warn!(content = %id, error = %e, "could not withdraw a damaged archive's provider record");
            }
            if !wanted {
                return;
            }
            // The peers that hold it may be offline now: tried again, less and less often.
            let mut delay = REFETCH_FIRST_DELAY;
            for attempt in 1..=REFETCH_ATTEMPTS {
                let fetched = registry.fetch_archive((*info).clone(), None).await;
                let kept = fetched.map_err(|e| e.to_string()).and_then(|_| {
                    if meta.kind == BlobKind::Published {
                        registry.blobs.keep_as_published(&id).map_err(|e| e.to_string())?;
                    }
                    if meta.pinned {
                        registry.blobs.set_pinned(&id, true).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                });
                match kept {
                    Ok(()) => {
                        info!(content = %id, attempt, "fetched a damaged archive again from peers");
                        return;
                    }
                    Err(e) => {
                        warn!(content = %id, attempt, error = %e, retry_in = ?delay, "could not fetch a damaged archive again")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(REFETCH_MAX_DELAY);
            }
        });
    }
}

/// Checks every record of `db`'s log (in `dir`); one that fails leaves its mark in `dir`.
pub(super) fn check_stored(dir: &std::path::Path, db: &Db, go_on: impl Fn() -> bool) -> StoreCheck {
    let file = dir.join(DB_FILE);
    let checked = store::catch_panic(&file, || {
        db.scrub(|record| record.verify().map_err(|e| e.to_string()), go_on)
    })
    .map_err(|e| store::damage(&file, e));
    match checked {
        Ok(records) => StoreCheck::Sound { records },
        Err(StoreError::Damaged { cause, .. }) => {
            warn!(
                file = %file.display(),
                %cause,
                "a stored record failed its check; the next start repairs the store"
            );
            if let Err(e) = mark_damaged(dir, &cause) {
                warn!(error = %e, "could not leave the mark for the next start");
            }
            StoreCheck::Damaged(cause)
        }
        Err(e) => StoreCheck::Failed(e.to_string()),
    }
}

/// Leaves `cause` beside the database in `dir`, durably: the next start finds the database
/// damaged.
fn mark_damaged(dir: &std::path::Path, cause: &str) -> Result<(), RegistryError> {
    use std::io::Write;
    let path = dir.join(CHECK_FAILED_FILE);
    let mut file = std::fs::File::create(&path).map_err(store::io_err(&path))?;
    file.write_all(cause.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(store::io_err(&path))?;
    Ok(store::sync_dir(&path)?)
}
