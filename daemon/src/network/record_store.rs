//! Kademlia's record store: each record as its key and value bytes only, provider records in
//! libp2p's [`MemoryStore`].
//!
//! libp2p's memory store keeps a whole [`Record`] per key, about 600 bytes each with the
//! table (the optional publisher alone is 80 bytes), and a node of a network of 20 or fewer
//! holds a head for every name. Agora's records never expire and are replicated by every
//! holder alike, so the key and the value are all a record is here: a record put keeps
//! neither its publisher nor its expiry. Kademlia's local copy of this node's own put, the
//! one record that would carry a publisher, is then replicated hourly like the rest instead
//! of republished daily, as it already was after a restart.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use libp2p::PeerId;
use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

pub struct DhtStore {
    records: HashMap<Box<[u8]>, Box<[u8]>>,
    max_records: usize,
    max_value_bytes: usize,
    max_providers_per_key: usize,
    local: PeerId,
    providers: MemoryStore,
}

impl DhtStore {
    /// `config` bounds the records as it would bound libp2p's memory store, which keeps the
    /// provider records.
    pub fn new(local: PeerId, config: MemoryStoreConfig) -> Self {
        Self {
            records: HashMap::new(),
            max_records: config.max_records,
            max_value_bytes: config.max_value_bytes,
            max_providers_per_key: config.max_providers_per_key,
            local,
            providers: MemoryStore::with_config(local, config),
        }
    }

    /// How many records are stored.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The value stored under `key`, without the copy [`RecordStore::get`] makes.
    pub fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.records.get(key).map(|v| &v[..])
    }
}

fn record(key: &[u8], value: &[u8]) -> Record {
    Record::new(RecordKey::new(&key), value.to_vec())
}

impl RecordStore for DhtStore {
    type RecordsIter<'a> = Box<dyn Iterator<Item = Cow<'a, Record>> + 'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.records
            .get(k.as_ref())
            .map(|v| Cow::Owned(record(k.as_ref(), v)))
    }

    /// The publisher and the expiry of `r` are not kept.
    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > self.max_value_bytes {
            return Err(Error::ValueTooLarge);
        }
        let full = self.records.len() >= self.max_records;
        match self.records.entry(r.key.to_vec().into_boxed_slice()) {
            Entry::Occupied(mut e) => {
                e.insert(r.value.into_boxed_slice());
            }
            Entry::Vacant(_) if full => return Err(Error::MaxRecords),
            Entry::Vacant(e) => {
                e.insert(r.value.into_boxed_slice());
            }
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        self.records.remove(k.as_ref());
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        Box::new(self.records.iter().map(|(k, v)| Cow::Owned(record(k, v))))
    }

    /// Past the bound of providers per key, libp2p's memory store ignores every new one, so
    /// whoever announced first (a few peer ids near the key cost nothing) kept the place for
    /// good. Here a new provider takes the place of one drawn at random (never this node's
    /// own): no set of early announcers holds the key against later ones.
    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let known = self.providers.providers(&record.key);
        if known.len() >= self.max_providers_per_key
            && !known.iter().any(|p| p.provider == record.provider)
        {
            let others: Vec<&ProviderRecord> =
                known.iter().filter(|p| p.provider != self.local).collect();
            if others.is_empty() {
                return Ok(());
            }
            let out = others[rand::random_range(0..others.len())];
            self.providers.remove_provider(&record.key, &out.provider);
        }
        self.providers.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.providers.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.providers.remove_provider(k, p)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn store(max_records: usize) -> DhtStore {
        DhtStore::new(
            PeerId::random(),
            MemoryStoreConfig {
                max_records,
                max_value_bytes: 8,
                ..MemoryStoreConfig::default()
            },
        )
    }

    #[test]
    fn a_record_is_kept_as_its_key_and_value() {
        let mut s = store(2);
        let mut r = record(b"a", b"one");
        r.publisher = Some(PeerId::random());
        r.expires = Some(Instant::now());
        s.put(r).unwrap();
        assert_eq!(
            s.get(&RecordKey::new(b"a")).unwrap().into_owned(),
            record(b"a", b"one")
        );
        assert!(s.get(&RecordKey::new(b"b")).is_none());
        assert_eq!(s.value(b"a"), Some(&b"one"[..]));
        assert_eq!(s.value(b"b"), None);

        s.put(record(b"a", b"two")).unwrap();
        s.put(record(b"b", b"three")).unwrap();
        let mut all: Vec<Record> = s.records().map(Cow::into_owned).collect();
        all.sort_by(|x, y| x.key.as_ref().cmp(y.key.as_ref()));
        assert_eq!(all, [record(b"a", b"two"), record(b"b", b"three")]);

        assert_eq!(s.len(), 2);
        s.remove(&RecordKey::new(b"a"));
        assert!(s.get(&RecordKey::new(b"a")).is_none());
        assert_eq!(s.records().count(), 1);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_bounds_refuse_and_change_nothing() {
        let mut s = store(1);
        s.put(record(b"a", b"one")).unwrap();
        assert!(matches!(
            s.put(record(b"b", b"two")),
            Err(Error::MaxRecords)
        ));
        assert!(matches!(
            s.put(record(b"a", b"123456789")),
            Err(Error::ValueTooLarge)
        ));
        // A full store still replaces a record it holds, with a value of exactly the largest
        // size (the size DHT validation allows).
        s.put(record(b"a", b"12345678")).unwrap();
        let all: Vec<Record> = s.records().map(Cow::into_owned).collect();
        assert_eq!(all, [record(b"a", b"12345678")]);
    }

    #[test]
    fn provider_records_are_kept_and_listed() {
        let local = PeerId::random();
        let mut s = DhtStore::new(local, MemoryStoreConfig::default());
        let key = RecordKey::new(b"content");
        let mine = ProviderRecord::new(key.clone(), local, Vec::new());
        let theirs = ProviderRecord::new(key.clone(), PeerId::random(), Vec::new());
        s.add_provider(mine.clone()).unwrap();
        s.add_provider(theirs.clone()).unwrap();
        assert_eq!(s.providers(&key).len(), 2);
        assert_eq!(
            s.provided().map(Cow::into_owned).collect::<Vec<_>>(),
            std::slice::from_ref(&mine)
        );
        s.remove_provider(&key, &local);
        assert_eq!(s.providers(&key), [theirs]);
        assert_eq!(s.provided().count(), 0);
    }

    #[test]
    fn past_the_bound_a_new_provider_takes_a_place_and_this_nodes_own_is_kept() {
        let local = PeerId::random();
        let mut s = DhtStore::new(
            local,
            MemoryStoreConfig {
                max_providers_per_key: 2,
                ..MemoryStoreConfig::default()
            },
        );
        let key = RecordKey::new(b"content");
        let add = |s: &mut DhtStore, p: PeerId| {
            s.add_provider(ProviderRecord::new(key.clone(), p, Vec::new()))
                .unwrap()
        };
        let early = PeerId::random();
        add(&mut s, local);
        add(&mut s, early);
        for _ in 0..5 {
            let late = PeerId::random();
            add(&mut s, late);
            let now: Vec<PeerId> = s.providers(&key).iter().map(|p| p.provider).collect();
            assert_eq!(now.len(), 2);
            assert!(now.contains(&local) && now.contains(&late), "{now:?}");
        }
        // A provider already listed is updated in place, taking no one's place.
        let listed = s.providers(&key)[1].provider;
        add(&mut s, listed);
        assert_eq!(s.providers(&key).len(), 2);
    }
}
