//! The event loop's query policies as plain state, with no swarm: what a record lookup
//! collects and when it has enough, how many providers a search hands out, and which copy of a
//! DHT record the store keeps. The event loop drives them; they are tested without a network.

use std::collections::HashSet;

use agora_protocol::codec;
use agora_protocol::dht::{self, DhtKey};
use agora_protocol::limits::MAX_DHT_VALUE_BYTES;
use agora_protocol::records::PackageHead;
use libp2p::PeerId;

use super::{NetworkError, RecordQuorum};

/// Most distinct records a lookup of all records for a key collects.
pub(super) const MAX_RECORDS_PER_GET: usize = 16;
/// Most providers one provider search hands out.
pub(crate) const MAX_PROVIDERS_PER_GET: usize = 20;

/// The distinct valid records a `get_record` query has collected.
#[derive(Debug)]
pub(super) struct RecordLookup {
    quorum: RecordQuorum,
    found: Vec<Vec<u8>>,
}

/// What one record did to a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Taken {
    /// The first record of a lookup that wants them all: its grace period starts now (the rest
    /// of the query may wait on unreachable peers until its timeout).
    pub start_grace: bool,
    /// The lookup has what it wants: its query can stop.
    pub enough: bool,
}

impl RecordLookup {
    pub fn new(quorum: RecordQuorum) -> Self {
        Self {
            quorum,
            found: Vec::new(),
        }
    }

    /// Takes a record a peer answered with (the caller validated it); a copy of one already
    /// taken counts once.
    pub fn take(&mut self, value: Vec<u8>) -> Taken {
        let new = !self.found.contains(&value);
        if new && self.found.len() < MAX_RECORDS_PER_GET {
            self.found.push(value);
        }
        Taken {
            start_grace: new && self.found.len() == 1 && self.quorum == RecordQuorum::All,
            enough: match self.quorum {
                RecordQuorum::First => !self.found.is_empty(),
                RecordQuorum::All => self.found.len() >= MAX_RECORDS_PER_GET,
            },
        }
    }

    /// The answer once the query ended: the records, or that none was found.
    pub fn answer(self) -> Result<Vec<Vec<u8>>, NetworkError> {
        if self.found.is_empty() {
            Err(NetworkError::NotFound)
        } else {
            Ok(self.found)
        }
    }
}

/// The providers a search has handed out: each once, at most [`MAX_PROVIDERS_PER_GET`].
#[derive(Debug, Default)]
pub(super) struct ProviderCap {
    sent: HashSet<PeerId>,
}

impl ProviderCap {
    /// Whether `peer` is to be handed out (new, and the cap not reached).
    pub fn admit(&mut self, peer: PeerId) -> bool {
        !self.full() && self.sent.insert(peer)
    }

    pub fn full(&self) -> bool {
        self.sent.len() >= MAX_PROVIDERS_PER_GET
    }
}

/// Whether the DHT store, holding `existing` under `key`, keeps it rather than take `new`: a
/// release, once stored, is never replaced (releases are immutable; conflicts are the
/// registry's to surface as equivocation); a head is replaced only by a better one, and a
/// stored head that no longer decodes by anything.
pub(super) fn keeps_existing(key: &DhtKey, existing: &[u8], new: &[u8]) -> bool {
    match key {
        DhtKey::Head(_) => match (decode_head(existing), decode_head(new)) {
            (Ok(old), Ok(new)) => dht::compare_heads(&new, &old).is_le(),
            (Ok(_), Err(_)) => true,
            (Err(_), _) => false,
        },
        _ => true,
    }
}

fn decode_head(bytes: &[u8]) -> Result<PackageHead, codec::DecodeError> {
    codec::decode::<PackageHead, MAX_DHT_VALUE_BYTES, { codec::claims(MAX_DHT_VALUE_BYTES) }>(bytes)
}

#[cfg(test)]
mod tests {
    use agora_protocol::PublisherSecret;
    use agora_protocol::records::{HeadBody, Signed};

    use super::*;

    fn values(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i as u8; 3]).collect()
    }

    #[test]
    fn a_lookup_for_the_first_record_has_enough_with_one() {
        let mut lookup = RecordLookup::new(RecordQuorum::First);
        let taken = lookup.take(vec![1]);
        assert_eq!(
            taken,
            Taken {
                start_grace: false,
                enough: true
            }
        );
        assert_eq!(lookup.answer().unwrap(), vec![vec![1]]);
        assert!(matches!(
            RecordLookup::new(RecordQuorum::First).answer(),
            Err(NetworkError::NotFound)
        ));
    }

    #[test]
    fn a_lookup_for_all_records_starts_its_grace_once_and_stops_at_the_cap() {
        let mut lookup = RecordLookup::new(RecordQuorum::All);
        let all = values(MAX_RECORDS_PER_GET + 1);
        let first = lookup.take(all[0].clone());
        assert_eq!(
            first,
            Taken {
                start_grace: true,
                enough: false
            }
        );
        // A copy of it counts once, and starts nothing again.
        assert_eq!(
            lookup.take(all[0].clone()),
            Taken {
                start_grace: false,
                enough: false
            }
        );
        for (i, v) in all[1..MAX_RECORDS_PER_GET].iter().enumerate() {
            let taken = lookup.take(v.clone());
            assert!(!taken.start_grace);
            assert_eq!(
                taken.enough,
                i + 2 == MAX_RECORDS_PER_GET,
                "record {}",
                i + 2
            );
        }
        let past_the_cap = lookup.take(all[MAX_RECORDS_PER_GET].clone());
        assert!(past_the_cap.enough);
        assert_eq!(lookup.answer().unwrap(), all[..MAX_RECORDS_PER_GET]);
    }

    #[test]
    fn a_provider_search_hands_out_each_peer_once_up_to_the_cap() {
        let mut cap = ProviderCap::default();
        let peers: Vec<PeerId> = (0..MAX_PROVIDERS_PER_GET + 2)
            .map(|_| PeerId::random())
            .collect();
        assert!(cap.admit(peers[0]));
        assert!(
            !cap.admit(peers[0]),
            "a peer found twice is handed out once"
        );
        for p in &peers[1..MAX_PROVIDERS_PER_GET] {
            assert!(!cap.full());
            assert!(cap.admit(*p));
        }
        assert!(cap.full());
        assert!(!cap.admit(peers[MAX_PROVIDERS_PER_GET]));
    }

    #[test]
    fn the_store_keeps_releases_and_takes_only_better_heads() {
        let key = PublisherSecret::from_bytes([5; 32]);
        let head = |seq: u64| {
            let body = HeadBody {
                name: "pkg".parse().unwrap(),
                owner: key.public(),
                versions: vec![agora_protocol::Version::new(1, 0, seq)],
                seq,
                updated_at: seq,
            };
            Signed::sign(body, &key).unwrap().encode()
        };
        let name = DhtKey::Head("pkg".parse().unwrap());
        assert!(
            !keeps_existing(&name, &head(1), &head(2)),
            "a newer head wins"
        );
        assert!(
            keeps_existing(&name, &head(2), &head(1)),
            "an older one does not"
        );
        assert!(
            keeps_existing(&name, &head(2), &head(2)),
            "the same is not put again"
        );
        assert!(
            keeps_existing(&name, &head(2), b"junk"),
            "junk never replaces a head"
        );
        assert!(
            !keeps_existing(&name, b"junk", &head(1)),
            "a head replaces junk"
        );
        let release = DhtKey::Release(
            "pkg".parse().unwrap(),
            agora_protocol::Version::new(1, 0, 0),
        );
        assert!(keeps_existing(&release, b"stored", b"another"));
    }
}
