use super::*;

fn peers(n: usize) -> Vec<PeerId> {
    (0..n).map(|_| PeerId::random()).collect()
}

#[test]
fn a_provider_not_known_to_be_reachable_is_asked_one_chunk_at_a_time() {
    let [far, near] = peers(2)[..] else {
        unreachable!()
    };
    let mut schedule = Schedule::new(vec![far, near], &[near], vec![false; 6]);
    let ask = |s: &mut Schedule, index| {
        let pick = s.pick(index);
        if let Pick::Ask(peer) = pick {
            s.sent(index, peer);
        }
        pick
    };
    assert_eq!(ask(&mut schedule, 0), Pick::Ask(far));
    assert_eq!(ask(&mut schedule, 1), Pick::Ask(near));
    assert_eq!(ask(&mut schedule, 2), Pick::Ask(near));
    // The connected provider fails chunk 1: it is asked nothing more, and the other is
    // still proving itself.
    schedule.returned(1, near);
    schedule.drop_provider(near);
    assert_eq!(schedule.pick(1), Pick::Wait);
    assert_eq!(schedule.pick(3), Pick::Wait);
    // Chunk 0 comes: the far provider is proven and takes as many as it is given.
    schedule.returned(0, far);
    schedule.served(0, far);
    assert_eq!(ask(&mut schedule, 1), Pick::Ask(far));
    assert_eq!(ask(&mut schedule, 3), Pick::Ask(far));
    assert_eq!(ask(&mut schedule, 4), Pick::Ask(far));
    // Chunk 2 is still out at the dropped provider; no one else is left for it.
    assert_eq!(schedule.pick(2), Pick::Ask(far));
    schedule.sent(2, far);
    schedule.returned(2, far);
    schedule.drop_provider(far);
    assert_eq!(schedule.pick(2), Pick::NoneLeft);
    assert!(
        schedule.is_asked(2),
        "the dropped provider still has chunk 2 in hand"
    );
    assert_eq!(schedule.remaining, 5);
}

#[test]
fn at_the_end_a_chunk_only_unproven_providers_hold_is_asked_of_a_proven_one() {
    let [far, near, other] = peers(3)[..] else {
        unreachable!()
    };
    let mut schedule = Schedule::new(vec![far, near, other], &[near], vec![false; 4]);
    for (index, peer) in [(0, far), (1, near), (2, near), (3, other)] {
        schedule.sent(index, peer);
    }
    assert_eq!(schedule.endgame(), vec![(0, near), (3, near)]);
    schedule.sent(0, near);
    schedule.sent(3, near);
    assert_eq!(
        schedule.endgame(),
        vec![],
        "each is asked of a proven provider once"
    );
    // Both copies of chunk 0 come, the duplicate's arrival first: the chunk is done
    // when the stored copy's arrival is counted, and once.
    schedule.returned(0, far);
    schedule.duplicate(far);
    assert_eq!(schedule.remaining, 4, "done only with the stored copy");
    schedule.returned(0, near);
    schedule.served(0, near);
    assert_eq!(schedule.remaining, 3);
    assert!(!schedule.is_asked(0));
    // A proven provider already tried for a chunk is not asked again.
    let mut tried = Schedule::new(vec![far, near], &[near], vec![false; 1]);
    tried.sent(0, near);
    tried.returned(0, near);
    tried.sent(0, far);
    assert_eq!(tried.endgame(), vec![]);
}

/// 10 chunks of 16 KiB and a short last one.
fn archive() -> (Vec<u8>, ArchiveInfo) {
    let data: Vec<u8> = (0..10 * 16 * 1024 + 100u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let info = ArchiveInfo::describe(&data, 16 * 1024);
    assert_eq!(info.chunks.len(), 11);
    (data, info)
}

fn chunk(data: &[u8], info: &ArchiveInfo, index: u32) -> (u64, Bytes) {
    let (start, size) = info.chunk_range(index).unwrap();
    (
        start,
        Bytes::copy_from_slice(&data[start as usize..start as usize + size]),
    )
}

/// (done, total) each time a sink reported progress.
type Reported = Arc<Mutex<Vec<(u64, u64)>>>;

/// A sink at `path` and the progress it reports.
fn recording(path: &Path, info: &ArchiveInfo) -> (FileSink, Reported) {
    let reported = Arc::new(Mutex::new(Vec::new()));
    let seen = reported.clone();
    let progress: ProgressFn = Box::new(move |done, total| lock(&seen).push((done, total)));
    (
        FileSink::open(path, info, Some(progress)).unwrap(),
        reported,
    )
}

#[test]
fn chunks_in_any_order_from_many_threads_give_the_whole_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    let (data, info) = archive();
    let (sink, reported) = recording(&path, &info);
    let sink = Arc::new(sink);
    // Last chunk first, then the rest from four threads at once.
    let (offset, last) = chunk(&data, &info, 10);
    sink.put(10, offset, last).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (sink, data, info) = (&sink, &data, &info);
            s.spawn(move || {
                for index in (0..10).rev().filter(|i| i % 4 == t) {
                    let (offset, bytes) = chunk(data, info, index);
                    sink.put(index, offset, bytes).unwrap();
                }
            });
        }
    });
    assert_eq!(sink.close().unwrap(), Some(info.id));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let reported = lock(&reported).clone();
    assert_eq!(reported.first(), Some(&(0, info.size)));
    assert_eq!(reported.last(), Some(&(info.size, info.size)));
    assert_eq!(reported.len(), 12, "once at open, once per chunk");
    assert!(reported.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn a_chunk_sent_by_several_providers_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    let (data, info) = archive();
    let (sink, reported) = recording(&path, &info);
    // Three threads put every chunk, each in its own order.
    let stored: Vec<Vec<u32>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..3u32)
            .map(|t| {
                let (sink, data, info) = (&sink, &data, &info);
                s.spawn(move || {
                    (0..11u32)
                        .map(|i| (i * 7 + t * 5) % 11)
                        .filter(|index| {
                            let (offset, bytes) = chunk(data, info, *index);
                            sink.put(*index, offset, bytes).unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut all: Vec<u32> = stored.concat();
    all.sort_unstable();
    assert_eq!(all, (0..11).collect::<Vec<_>>(), "each chunk stored once");
    assert_eq!(sink.close().unwrap(), Some(info.id));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let reported = lock(&reported).clone();
    assert_eq!(reported.len(), 12, "once at open, once per chunk");
    assert_eq!(reported.last(), Some(&(info.size, info.size)));
}

#[test]
fn chunks_resumed_from_the_file_are_hashed_in_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    let (data, info) = archive();
    // An earlier try left chunks 0..4, chunk 2 damaged.
    let mut earlier = data[..4 * 16 * 1024].to_vec();
    earlier[2 * 16 * 1024 + 7] ^= 1;
    std::fs::write(&path, earlier).unwrap();
    let sink = FileSink::open(&path, &info, None).unwrap();
    let had: Vec<u32> = (0..11).filter(|i| sink.has(*i)).collect();
    assert_eq!(had, [0, 1, 3]);
    let (offset, again) = chunk(&data, &info, 1);
    assert_eq!(sink.put(1, offset, again), Ok(false), "chunk 1 is there");
    for index in (0..11).filter(|i| !had.contains(i)) {
        let (offset, bytes) = chunk(&data, &info, index);
        sink.put(index, offset, bytes).unwrap();
    }
    assert_eq!(sink.close().unwrap(), Some(info.id));
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn too_many_chunks_waiting_leaves_the_hash_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    let (data, info) = archive();
    let mut sink = FileSink::open(&path, &info, None).unwrap();
    sink.waiting_limit = 3 * 16 * 1024;
    // Chunk 0 comes last: chunks 1..=3 fit in the limit, chunk 4 does not.
    for index in (1..11).chain([0]) {
        let (offset, bytes) = chunk(&data, &info, index);
        sink.put(index, offset, bytes).unwrap();
    }
    assert_eq!(sink.close().unwrap(), None, "the file must be hashed again");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data,
        "every chunk was still written"
    );
}

#[test]
fn the_download_is_synced_behind_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    let (data, info) = archive();
    let mut sink = FileSink::open(&path, &info, None).unwrap();
    sink.sync_every = 3 * 16 * 1024;
    for index in 0..11 {
        let (offset, bytes) = chunk(&data, &info, index);
        sink.put(index, offset, bytes).unwrap();
    }
    // After chunks 2, 5 and 8; chunks 9 and 10 wait for the sync that adopts the file.
    assert_eq!(lock(&sink.sync_behind).done, 3);
    assert_eq!(lock(&sink.sync_behind).unsynced, 16 * 1024 + 100);
    assert_eq!(sink.close().unwrap(), Some(info.id));
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn nothing_is_written_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    let (data, info) = archive();
    let sink = FileSink::open(&path, &info, None).unwrap();
    let (offset, bytes) = chunk(&data, &info, 0);
    sink.put(0, offset, bytes.clone()).unwrap();
    assert_eq!(sink.close().unwrap(), None, "ten chunks are missing");
    let (offset, late) = chunk(&data, &info, 1);
    assert_eq!(
        sink.put(1, offset, late),
        Err(FetchError::Io("the download was closed".into()))
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}
