//! Which provider is asked for which chunk: plain state, tested without a network.
//!
//! A provider is asked nothing until it has said which chunks it holds (a have request: all
//! of them, or a map while it is fetching the archive itself); that answer also proves it
//! reachable, so a peer whose provider record outlives it holds up no chunk. Then:
//!
//! - **Which chunk.** The first few at random, so that a crowd that starts together (before
//!   its fetchers know of each other) does not ask its seed for the same ones; then the
//!   rarest among the providers this fetch knows, so that what only the seed holds is asked
//!   of it while what other fetchers hold is asked of them. While no other fetcher is known,
//!   equally rare chunks go in order (the archive is hashed as its chunks arrive in order);
//!   once one is, at random, for the crowd's reason.
//! - **Whom.** The provider with the fewest requests out, then the fastest measured in this
//!   fetch, then the best ranked (reputation). Each provider has a cap on requests out: two
//!   at first and one more for each chunk it serves, up to the fetch's share, while no other
//!   fetcher is known; two once one is, so that a seed's upload is not spent on copies a
//!   crowd could make.
//! - **How many.** Alone, few requests at first; once chunks come in, enough for half a
//!   second at the rate this fetch measures, plus one, up to the fetch's limit. On a fast
//!   link that is the limit; on a slow one each request takes about that long instead of
//!   all sharing the link to the end, so a chunk whose provider stalls stands out, and the
//!   link carries no more flows than it needs. In a crowd, the fetch's limit: there a
//!   request is slow because its provider serves many, not because this fetch's link is
//!   full, and a window sized by the rate would shrink the rate that sizes it.
//! - **Endgame.** Once every chunk not in is asked for, a provider with nothing out is asked
//!   too for the chunk that has been out longest (one second copy per chunk); whichever
//!   answers first is kept.
//!
//! A provider that sends bad data, refuses or fails a request is asked nothing more in this
//! fetch; one that is busy waits [`BUSY_BACKOFF`] and is asked again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rand::seq::IndexedRandom;

/// Chunks picked at random before rarest-first takes over.
const RANDOM_FIRST: usize = 4;
/// Requests out to one provider at once once other fetchers of the archive are known.
const CROWD_CAP: usize = 2;
/// Most providers one fetch keeps: more add nothing, and fetchers that make themselves
/// known beyond it are not taken in.
const MAX_PROVIDERS: usize = 64;
/// Requests out at once before any chunk has come in.
const FIRST_WINDOW: usize = 2;
/// The time's worth of the measured rate a fetch keeps in flight (plus one chunk).
const WINDOW_TIME: Duration = Duration::from_millis(500);
/// How long a provider that answered `Busy` is left alone.
pub(super) const BUSY_BACKOFF: Duration = Duration::from_millis(250);

/// What a provider holds, as far as this fetch knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Holds {
    /// Its have answer has not come yet.
    Unknown,
    All,
    /// A fetcher itself: the chunks it has verified.
    Some(Vec<bool>),
    /// A seed serving a crowd: it holds everything, and offers these chunks for now.
    Offer(Vec<bool>),
}

struct Provider {
    peer: PeerId,
    holds: Holds,
    /// It was seen fetching the archive itself (holding part of it): once it holds all of
    /// it, its upload is a crowd's, not the original seed's.
    fetched: bool,
    dropped: bool,
    /// Chunks it was ever asked for.
    tried: Vec<u32>,
    in_flight: usize,
    busy_until: Option<Instant>,
    /// Chunks it served first.
    served: usize,
    /// Bytes it served, over the time it had requests out.
    bytes: u64,
    busy: Duration,
    busy_since: Option<Instant>,
}

impl Provider {
    fn new(peer: PeerId) -> Self {
        Self {
            peer,
            holds: Holds::Unknown,
            fetched: false,
            dropped: false,
            tried: Vec::new(),
            in_flight: 0,
            busy_until: None,
            served: 0,
            bytes: 0,
            busy: Duration::ZERO,
            busy_since: None,
        }
    }

    /// Whether it may be asked for chunk `index` now.
    fn holds(&self, index: u32) -> bool {
        match &self.holds {
            Holds::Unknown => false,
            Holds::All => true,
            Holds::Some(held) | Holds::Offer(held) => {
                held.get(index as usize).copied().unwrap_or(false)
            }
        }
    }

    /// Whether it holds chunk `index` at all (a seed does, offered or not).
    fn has(&self, index: u32) -> bool {
        matches!(self.holds, Holds::Offer(_)) || self.holds(index)
    }

    /// A seed that was never seen fetching the archive: a publisher, or a node that had it
    /// before the crowd came.
    fn is_first_seed(&self) -> bool {
        matches!(self.holds, Holds::All | Holds::Offer(_)) && !self.fetched
    }

    /// Alive and known to hold something.
    fn live(&self) -> bool {
        !self.dropped && self.holds != Holds::Unknown
    }

    fn ready(&self, now: Instant) -> bool {
        self.live() && self.busy_until.is_none_or(|t| t <= now)
    }

    /// Bytes per second while it had requests out.
    fn rate(&self, now: Instant) -> f64 {
        let busy = self.busy + self.busy_since.map_or(Duration::ZERO, |s| now - s);
        if busy.is_zero() {
            0.0
        } else {
            self.bytes as f64 / busy.as_secs_f64()
        }
    }
}

/// Whom to ask for which chunk (see the module's notes).
pub(super) struct Schedule {
    providers: Vec<Provider>,
    /// Providers being asked for each chunk now, and since when.
    asking: HashMap<u32, Vec<(PeerId, Instant)>>,
    done: Vec<bool>,
    remaining: usize,
    /// Another fetcher of the archive is known (a provider that holds part of it, or a
    /// peer that told us it fetches it).
    crowd: bool,
    /// The time requests took until they returned, and how many returned.
    round_trips: (Duration, u32),
    /// When the first request went out.
    started: Option<Instant>,
    /// Chunks that came in, first copies or not (their bytes are the providers').
    arrivals: u32,
}

impl Schedule {
    pub(super) fn new(done: Vec<bool>) -> Self {
        Self {
            providers: Vec::new(),
            asking: HashMap::new(),
            remaining: done.iter().filter(|d| !**d).count(),
            done,
            crowd: false,
            round_trips: (Duration::ZERO, 0),
            started: None,
            arrivals: 0,
        }
    }

    /// Requests to keep out at once (see the module's notes), at most `parallel`.
    fn window(&self, parallel: usize, now: Instant) -> usize {
        if self.crowd {
            return parallel;
        }
        let (chunks, bytes) = (
            self.arrivals,
            self.providers.iter().map(|p| p.bytes).sum::<u64>(),
        );
        let Some(started) = self.started.filter(|_| chunks > 0) else {
            return FIRST_WINDOW.min(parallel);
        };
        let elapsed = now.duration_since(started).as_secs_f64().max(1e-3);
        let rate = bytes as f64 / elapsed;
        let chunk = bytes as f64 / f64::from(chunks);
        let wanted = (rate * WINDOW_TIME.as_secs_f64() / chunk).ceil() as usize + 1;
        wanted.clamp(FIRST_WINDOW.min(parallel), parallel)
    }

    fn provider(&mut self, peer: &PeerId) -> Option<&mut Provider> {
        self.providers.iter_mut().find(|p| p.peer == *peer)
    }

    /// Adds a provider, last in rank; its have answer is awaited. False if it is known, or
    /// the fetch has as many as it keeps.
    pub(super) fn add_provider(&mut self, peer: PeerId) -> bool {
        if self.providers.len() >= MAX_PROVIDERS || self.providers.iter().any(|p| p.peer == peer) {
            return false;
        }
        self.providers.push(Provider::new(peer));
        true
    }

    /// `peer` said what it holds (a provider that is new is added, if there is room).
    pub(super) fn learned(&mut self, peer: PeerId, holds: Holds) {
        self.add_provider(peer);
        if matches!(holds, Holds::Some(_) | Holds::Offer(_)) {
            self.crowd = true;
        }
        if let Some(p) = self.provider(&peer) {
            p.fetched |= matches!(holds, Holds::Some(_));
            p.holds = holds;
        }
    }

    /// A peer told us it fetches the archive too.
    pub(super) fn fetcher_seen(&mut self) {
        self.crowd = true;
    }

    /// Whether another fetcher of the archive is known.
    pub(super) fn in_crowd(&self) -> bool {
        self.crowd
    }

    /// What `peer` holds, if it is a provider of this fetch.
    pub(super) fn holds_of(&self, peer: &PeerId) -> Option<&Holds> {
        self.providers
            .iter()
            .find(|p| p.peer == *peer)
            .map(|p| &p.holds)
    }

    /// Up to `room` requests to send now (`parallel` in all), and the endgame's.
    pub(super) fn next(
        &mut self,
        room: usize,
        parallel: usize,
        now: Instant,
    ) -> Vec<(u32, PeerId)> {
        let ready = self.providers.iter().filter(|p| p.ready(now)).count();
        let share = parallel.div_ceil(ready.max(1)).max(CROWD_CAP);
        let crowd = self.crowd;
        // Alone, a provider's cap grows with each chunk it serves, up to its share: a fetch
        // that has not yet learned of the crowd it is in asks the seed for few chunks.
        let cap = |p: &Provider| match crowd {
            true => CROWD_CAP,
            false => share.min(CROWD_CAP + p.served),
        };
        let out: usize = self.providers.iter().map(|p| p.in_flight).sum();
        let room = room.min(self.window(parallel, now).saturating_sub(out));
        let mut asks = Vec::new();
        while asks.len() < room {
            let mut order: Vec<usize> = (0..self.providers.len())
                .filter(|i| {
                    let p = &self.providers[*i];
                    p.ready(now) && p.in_flight < cap(p)
                })
                .collect();
            order.sort_by(|a, b| {
                let (a, b) = (&self.providers[*a], &self.providers[*b]);
                a.in_flight
                    .cmp(&b.in_flight)
                    .then(b.rate(now).total_cmp(&a.rate(now)))
            });
            let Some((index, peer)) = order.iter().find_map(|i| {
                let chunk = self.choose(*i)?;
                Some((chunk, self.providers[*i].peer))
            }) else {
                break;
            };
            self.sent(index, peer, now);
            asks.push((index, peer));
        }
        let unasked = (0..self.done.len() as u32)
            .any(|c| !self.done[c as usize] && !self.asking.contains_key(&c));
        if !unasked {
            asks.extend(self.endgame(now));
        }
        asks
    }

    /// The chunk to ask of provider `i`: not in, not asked, held by it and never asked of
    /// it; random at first, then the rarest.
    fn choose(&self, i: usize) -> Option<u32> {
        let p = &self.providers[i];
        let candidates: Vec<u32> = (0..self.done.len() as u32)
            .filter(|c| {
                !self.done[*c as usize]
                    && !self.asking.contains_key(c)
                    && p.holds(*c)
                    && !p.tried.contains(c)
            })
            .collect();
        let have = self.done.len() - self.remaining;
        let mut rng = rand::rng();
        if have < RANDOM_FIRST {
            return candidates.choose(&mut rng).copied();
        }
        let availability = |c: u32| {
            self.providers
                .iter()
                .filter(|p| p.live() && p.has(c))
                .count()
        };
        let rarest = candidates.iter().map(|c| availability(*c)).min()?;
        let rare: Vec<u32> = candidates
            .into_iter()
            .filter(|c| availability(*c) == rarest)
            .collect();
        if self.crowd {
            rare.choose(&mut rng).copied()
        } else {
            rare.first().copied()
        }
    }

    /// For each provider with nothing out, a chunk already asked of one other, the one out
    /// longest, that it holds and was never asked for, if it has been out twice as long as a
    /// request takes on average. In a crowd the first seed is not asked: its upload is for
    /// chunks the crowd lacks. Fetchers that have finished are: at a crowd's end they are
    /// most of the providers, and the one a late chunk waits on may be a seed that is gone
    /// without a word (a connection whose loss shows only when it times out).
    fn endgame(&mut self, now: Instant) -> Vec<(u32, PeerId)> {
        let (total, count) = self.round_trips;
        let late = total.checked_div(count).unwrap_or(Duration::ZERO) * 2;
        let mut out: Vec<(Instant, u32)> = self
            .asking
            .iter()
            .filter(|(c, askers)| {
                askers.len() == 1
                    && !self.done[**c as usize]
                    && now.duration_since(askers[0].1) >= late
            })
            .map(|(c, askers)| (askers[0].1, *c))
            .collect();
        out.sort_unstable();
        let mut also = Vec::new();
        for i in 0..self.providers.len() {
            let p = &self.providers[i];
            if !p.ready(now) || p.in_flight > 0 || (self.crowd && p.is_first_seed()) {
                continue;
            }
            let Some(pos) = out
                .iter()
                .position(|(_, c)| p.holds(*c) && !p.tried.contains(c))
            else {
                continue;
            };
            let (_, index) = out.remove(pos);
            let peer = p.peer;
            self.sent(index, peer, now);
            also.push((index, peer));
        }
        also
    }

    pub(super) fn sent(&mut self, index: u32, peer: PeerId, now: Instant) {
        self.started.get_or_insert(now);
        self.asking.entry(index).or_default().push((peer, now));
        if let Some(p) = self.provider(&peer) {
            p.tried.push(index);
            if p.in_flight == 0 {
                p.busy_since = Some(now);
            }
            p.in_flight += 1;
        }
    }

    /// A request ended, however it went.
    pub(super) fn returned(&mut self, index: u32, peer: PeerId, now: Instant) {
        if let Some(asked) = self.asking.get_mut(&index) {
            if let Some((_, since)) = asked.iter().find(|(p, _)| *p == peer) {
                self.round_trips.0 += now.duration_since(*since);
                self.round_trips.1 += 1;
            }
            asked.retain(|(p, _)| *p != peer);
            if asked.is_empty() {
                self.asking.remove(&index);
            }
        }
        if let Some(p) = self.provider(&peer) {
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0
                && let Some(since) = p.busy_since.take()
            {
                p.busy += now - since;
            }
        }
    }

    /// `peer` served chunk `index` (first, or after another provider did).
    pub(super) fn served(&mut self, index: u32, peer: PeerId, bytes: u64) {
        let first = !std::mem::replace(&mut self.done[index as usize], true);
        if first {
            self.remaining -= 1;
        }
        self.arrivals += 1;
        if let Some(p) = self.provider(&peer) {
            p.bytes += bytes;
            p.served += usize::from(first);
        }
    }

    /// `peer` sent a good copy of a chunk another provider's copy is stored from; the chunk
    /// is done when that other arrival is counted (its copy won the race to the sink), so
    /// the report credits the provider stored from.
    pub(super) fn duplicate(&mut self, peer: PeerId, bytes: u64) {
        self.arrivals += 1;
        if let Some(p) = self.provider(&peer) {
            p.bytes += bytes;
        }
    }

    /// `peer` was busy: it is left alone for a while, and may be asked for `index` again.
    pub(super) fn busy(&mut self, index: u32, peer: PeerId, now: Instant) {
        if let Some(p) = self.provider(&peer) {
            p.busy_until = Some(now + BUSY_BACKOFF);
            p.tried.retain(|c| *c != index);
        }
    }

    pub(super) fn drop_provider(&mut self, peer: PeerId) {
        if let Some(p) = self.provider(&peer) {
            p.dropped = true;
        }
    }

    /// Whether `peer` has requests out, or holds a chunk not in and not asked for.
    pub(super) fn has_work(&self, peer: &PeerId) -> bool {
        self.providers.iter().any(|p| {
            p.peer == *peer
                && (p.in_flight > 0
                    || (0..self.done.len() as u32).any(|c| {
                        !self.done[c as usize] && !self.asking.contains_key(&c) && p.holds(c)
                    }))
        })
    }

    pub(super) fn is_dropped(&self, peer: &PeerId) -> bool {
        self.providers.iter().any(|p| p.peer == *peer && p.dropped)
    }

    /// Chunks not in yet.
    pub(super) fn remaining(&self) -> usize {
        self.remaining
    }

    /// Whether any provider is known.
    pub(super) fn has_providers(&self) -> bool {
        !self.providers.is_empty()
    }

    /// Providers not dropped whose have answer has not come.
    pub(super) fn unanswered(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.providers
            .iter()
            .filter(|p| !p.dropped && p.holds == Holds::Unknown)
            .map(|p| p.peer)
    }

    /// Live providers that are fetching the archive themselves.
    pub(super) fn partial_holders(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.providers
            .iter()
            .filter(|p| !p.dropped && matches!(p.holds, Holds::Some(_)))
            .map(|p| p.peer)
    }

    /// Chunks not in, not asked, that no live provider holds or may be asked for: they wait
    /// for a provider found later, or for a fetcher to get them.
    pub(super) fn stuck(&self) -> Vec<u32> {
        (0..self.done.len() as u32)
            .filter(|c| {
                !self.done[*c as usize]
                    && !self.asking.contains_key(c)
                    && !self
                        .providers
                        .iter()
                        .any(|p| p.live() && p.has(*c) && !p.tried.contains(c))
            })
            .collect()
    }

    /// The providers being asked for a chunk now, once per chunk.
    pub(super) fn asked(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.asking.values().flatten().map(|(p, _)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn answer(s: &mut Schedule, asks: &[(u32, PeerId)], now: Instant) {
        for (index, peer) in asks {
            s.returned(*index, *peer, now);
            s.served(*index, *peer, 1);
        }
    }

    #[test]
    fn a_provider_is_asked_nothing_until_it_says_what_it_holds() {
        let [far, near] = peers(2)[..] else {
            unreachable!()
        };
        let now = Instant::now();
        let mut s = Schedule::new(vec![false; 6]);
        s.add_provider(far);
        s.add_provider(near);
        assert_eq!(s.next(8, 8, now), vec![]);
        assert_eq!(s.stuck(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(s.unanswered().collect::<Vec<_>>(), vec![far, near]);
        s.learned(near, Holds::All);
        assert!(s.stuck().is_empty());
        // Alone and holding everything, it is asked for two chunks at first and one more
        // for each it serves.
        let mut rounds = Vec::new();
        let mut asked = Vec::new();
        while s.remaining() > 0 {
            let asks = s.next(8, 8, now);
            assert!(asks.iter().all(|(_, p)| *p == near));
            rounds.push(asks.len());
            asked.extend(asks.iter().map(|(c, _)| *c));
            answer(&mut s, &asks, now);
        }
        assert_eq!(rounds, vec![2, 4]);
        asked.sort_unstable();
        assert_eq!(asked, (0..6).collect::<Vec<_>>(), "each chunk once");
    }

    #[test]
    fn the_rarest_chunks_are_asked_of_the_seed_and_the_rest_of_other_fetchers() {
        let [seed, a, b] = peers(3)[..] else {
            unreachable!()
        };
        let now = Instant::now();
        // Four chunks in already: past the random start.
        let mut done = vec![false; 12];
        done[..4].iter_mut().for_each(|d| *d = true);
        let mut s = Schedule::new(done);
        s.learned(seed, Holds::All);
        // Alone, in order; the first chunk in opens the window past its first requests.
        let first = s.next(1, 8, now);
        assert_eq!(first, vec![(4, seed)]);
        answer(&mut s, &first, now);
        // a holds 5..8, b holds 5..10: 10 and 11 only the seed has.
        let held = |n: usize| (0..12).map(|i| (5..n).contains(&i)).collect::<Vec<_>>();
        s.learned(a, Holds::Some(held(8)));
        s.learned(b, Holds::Some(held(10)));
        let asks = s.next(6, 8, now);
        assert_eq!(asks.len(), 6, "{asks:?}");
        let of = |peer: PeerId| -> Vec<u32> {
            let mut v: Vec<u32> = asks
                .iter()
                .filter(|(_, p)| *p == peer)
                .map(|(c, _)| *c)
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(of(seed), vec![10, 11], "only the seed holds these");
        assert_eq!(of(a).len(), 2, "a crowd's cap is 2 requests per provider");
        assert_eq!(of(b).len(), 2);
        // b is asked first for what a lacks (8, 9: held by b and the seed).
        assert!(of(b).iter().all(|c| [8, 9].contains(c)), "{asks:?}");
        assert!(of(a).iter().all(|c| (5..8).contains(c)), "{asks:?}");
    }

    #[test]
    fn a_fetch_keeps_half_a_second_of_its_measured_rate_in_flight() {
        let providers = peers(4);
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![false; 40]);
        for p in &providers {
            s.learned(*p, Holds::All);
        }
        // Before anything came in: two requests, however many providers there are.
        let first = s.next(8, 8, t0);
        assert_eq!(first.len(), 2);
        // Two 1 MiB chunks in 800 ms (2.6 MB/s, a 20 Mbit/s link): 1.25 chunks in half a
        // second, so two out and one more.
        let t1 = t0 + Duration::from_millis(800);
        for (index, peer) in &first {
            s.returned(*index, *peer, t1);
            s.served(*index, *peer, 1 << 20);
        }
        assert_eq!(s.next(8, 8, t1).len(), 3);
        // In a crowd, requests are slow because providers serve many: the fetch's limit.
        s.fetcher_seen();
        assert_eq!(s.next(8, 8, t1).len(), 5);
        // On a fast link the fetch's own limit is the bound: the same two chunks in 2 ms.
        let mut s = Schedule::new(vec![false; 40]);
        for p in &providers {
            s.learned(*p, Holds::All);
        }
        let first = s.next(8, 8, t0);
        let t1 = t0 + Duration::from_millis(2);
        for (index, peer) in &first {
            s.returned(*index, *peer, t1);
            s.served(*index, *peer, 1 << 20);
        }
        assert_eq!(s.next(8, 8, t1).len(), 8);
    }

    #[test]
    fn a_busy_provider_is_left_alone_a_while_and_asked_again() {
        let [seed] = peers(1)[..] else { unreachable!() };
        let now = Instant::now();
        let mut s = Schedule::new(vec![false; 1]);
        s.learned(seed, Holds::All);
        assert_eq!(s.next(1, 1, now), vec![(0, seed)]);
        s.returned(0, seed, now);
        s.busy(0, seed, now);
        assert_eq!(s.next(1, 1, now), vec![]);
        assert_eq!(s.next(1, 1, now + BUSY_BACKOFF / 2), vec![]);
        let later = now + BUSY_BACKOFF;
        assert_eq!(s.next(1, 1, later), vec![(0, seed)]);
    }

    #[test]
    fn in_the_endgame_an_idle_provider_also_gets_the_chunk_out_longest() {
        let [slow, fast] = peers(2)[..] else {
            unreachable!()
        };
        let t0 = Instant::now();
        // Two fetchers that hold every chunk (a seed is not asked in a crowd's endgame).
        let mut s = Schedule::new(vec![false; 5]);
        s.learned(fast, Holds::Some(vec![true; 5]));
        s.learned(slow, Holds::Some(vec![true; 5]));
        // A first chunk, at once, opens the window.
        let first = s.next(1, 4, t0);
        assert_eq!(first.iter().map(|a| a.1).collect::<Vec<_>>(), vec![fast]);
        answer(&mut s, &first, t0);
        let asks = s.next(4, 4, t0);
        assert_eq!(asks.len(), 4);
        // fast answers both of its chunks; slow's two are out, and fast, idle, is also
        // asked for one of them: the one asked first, once.
        let t1 = t0 + Duration::from_millis(10);
        let fast_ones: Vec<_> = asks.iter().filter(|(_, p)| *p == fast).copied().collect();
        let mut slow_ones: Vec<u32> = asks
            .iter()
            .filter(|(_, p)| *p == slow)
            .map(|(c, _)| *c)
            .collect();
        slow_ones.sort_unstable();
        answer(&mut s, &fast_ones, t1);
        assert_eq!(
            s.next(4, 4, t1),
            vec![],
            "not before a chunk is out twice as long as a request takes (13.3 ms)"
        );
        let t1 = t0 + Duration::from_millis(20);
        let again = s.next(4, 4, t1);
        assert_eq!(again, vec![(slow_ones[0], fast)]);
        assert_eq!(s.next(4, 4, t1), vec![], "one copy each, and fast is busy");
        // The copy comes first: the chunk is done; the slow answer is a duplicate.
        answer(&mut s, &again, t1);
        assert_eq!(s.next(4, 4, t1), vec![(slow_ones[1], fast)]);
        s.returned(slow_ones[0], slow, t1);
        s.duplicate(slow, 1);
        assert_eq!(s.remaining(), 1);
    }

    #[test]
    fn at_a_crowds_end_a_fetcher_that_finished_takes_a_late_chunk_but_a_first_seed_does_not() {
        let [seed, other_seed, fetcher] = peers(3)[..] else {
            unreachable!()
        };
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![true, false]);
        s.learned(seed, Holds::All);
        s.learned(other_seed, Holds::All);
        s.learned(fetcher, Holds::Some(vec![true, false]));
        let asks = s.next(1, 2, t0);
        assert_eq!(
            asks,
            vec![(1, seed)],
            "only the seeds hold it, the first is asked"
        );
        // The fetcher finishes; the seed's answer does not come (it is gone).
        s.learned(fetcher, Holds::All);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(s.next(2, 2, t1), vec![(1, fetcher)]);
        assert_eq!(
            s.next(2, 2, t1),
            vec![],
            "one copy; the other first seed is spared"
        );
    }

    #[test]
    fn a_seed_offering_a_crowd_some_chunks_is_asked_only_for_those_and_holds_up_nothing() {
        let [seed, peer] = peers(2)[..] else {
            unreachable!()
        };
        let now = Instant::now();
        let mut s = Schedule::new(vec![false; 4]);
        s.learned(seed, Holds::Offer(vec![false, true, false, false]));
        s.learned(peer, Holds::Some(vec![true, false, false, false]));
        assert!(
            s.stuck().is_empty(),
            "the seed holds what it does not offer"
        );
        let mut asks = s.next(4, 4, now);
        asks.sort_unstable();
        assert_eq!(asks, vec![(0, peer), (1, seed)]);
        answer(&mut s, &asks, now);
        // The seed offers another chunk: it is asked for it.
        s.learned(seed, Holds::Offer(vec![false, false, false, true]));
        assert_eq!(s.next(4, 4, now), vec![(3, seed)]);
        // Lost, it leaves chunk 2 to nobody.
        s.drop_provider(seed);
        assert_eq!(s.stuck(), vec![2]);
    }

    #[test]
    fn a_chunk_no_live_provider_holds_is_stuck() {
        let [seed, partial] = peers(2)[..] else {
            unreachable!()
        };
        let now = Instant::now();
        let mut s = Schedule::new(vec![false; 3]);
        s.learned(partial, Holds::Some(vec![true, false, false]));
        s.learned(seed, Holds::All);
        s.drop_provider(seed);
        assert_eq!(s.stuck(), vec![1, 2]);
        assert_eq!(s.partial_holders().collect::<Vec<_>>(), vec![partial]);
        assert_eq!(s.next(3, 3, now), vec![(0, partial)]);
        // The fetcher got chunk 2 meanwhile.
        s.learned(partial, Holds::Some(vec![true, false, true]));
        assert_eq!(s.stuck(), vec![1]);
    }
}
