//! What the catalog admitted, as it admits it: the releases, yanks, unyanks and key rotations
//! that a subscriber (the gateway's GraphQL subscription) streams to its clients. Sent after
//! the records are durable, in the order of the log.

use agora_protocol::records::{CatalogRecord, RecordId};
use agora_protocol::{PackageName, PublisherKey, Version};
use tokio::sync::broadcast;

/// Admissions a subscriber may fall behind by before it misses some (and is told so).
pub const BACKLOG: usize = 1024;

/// The kind of an admitted record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Release,
    Yank,
    Unyank,
    Rotation,
}

/// One admitted record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub kind: EventKind,
    pub name: PackageName,
    /// The version released, yanked or unyanked (`None` for a rotation).
    pub version: Option<Version>,
    pub record: RecordId,
    /// The key that signed it (a rotation's: the key the name moved from).
    pub signer: PublisherKey,
    /// A rotation's new owner.
    pub to: Option<PublisherKey>,
}

impl Admitted {
    pub fn of(record: &CatalogRecord, id: RecordId) -> Self {
        let (kind, version, signer, to) = match record {
            CatalogRecord::Release(r) => (
                EventKind::Release,
                Some(r.body.version.clone()),
                r.body.publisher,
                None,
            ),
            CatalogRecord::Yank(y) => (
                EventKind::Yank,
                Some(y.body.version.clone()),
                y.body.publisher,
                None,
            ),
            CatalogRecord::Unyank(u) => (
                EventKind::Unyank,
                Some(u.body.version.clone()),
                u.body.publisher,
                None,
            ),
            CatalogRecord::Rotation(r) => (EventKind::Rotation, None, r.body.from, Some(r.body.to)),
        };
        Self {
            kind,
            name: record.name().clone(),
            version,
            record: id,
            signer,
            to,
        }
    }
}

/// The sending side; cheap when nobody listens.
pub struct Events(broadcast::Sender<Admitted>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Events {
    pub fn send(&self, admitted: impl IntoIterator<Item = Admitted>) {
        if self.0.receiver_count() == 0 {
            return;
        }
        for a in admitted {
            // Err: every receiver went away meanwhile; nobody to tell.
            let _ = self.0.send(a);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Admitted> {
        self.0.subscribe()
    }
}
