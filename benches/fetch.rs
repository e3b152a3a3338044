//! Fetch throughput: an archive of 10 MB and of 100 MB (incompressible payload) fetched by a
//! node that has only its record, from 1 provider and from 3, over each transport a daemon
//! listens on (TCP + Noise + yamux, and QUIC), through `Registry::fetch` (find
//! providers on the DHT, chunks in parallel, each chunk verified, written to a partial file,
//! synced, the whole archive hashed again, moved into the store, then provided). Every run
//! uses a fresh fetcher. Baselines in the same run, over the same bytes:
//!
//! - a plain loopback TCP connection between two threads, memory to memory;
//! - libp2p's transport alone, built as Agora's swarm builds it, one substream, memory to
//!   memory, no swarm: what any protocol over that transport can move here;
//! - a durable write of the archive's bytes to a new file where the fetchers keep their data,
//!   1 MiB at a time, then `fdatasync`: what the disk takes in, since a fetch is done only once
//!   its archive is on disk. One such write follows each fetch, so both meet the disk in the
//!   same state (a VM's disk may run fast for a burst and then at its sustained rate, and may
//!   write data it has seen before faster: both write the same bytes);
//! - the CPU floor: the CPU any encrypted and verified fetch of the archive must spend (the
//!   sender's seal and the fetcher's open, in the transport's frames and with its cipher:
//!   ChaCha20-Poly1305 for Noise, AES-128-GCM for QUIC; the fetcher's SHA-256 of each chunk
//!   and of the whole archive), spread over every core: how fast such a fetch could go here
//!   if nothing else cost anything.
//!
//! From the baselines, the ceiling of any fetch here: the slower of the disk write and the CPU
//! floor (a fetch is done only once its archive is durable, and cannot spend less CPU), and,
//! with one libp2p connection's copy as a third bound, the ceiling of a fetch over libp2p.
//!
//! Provider and fetcher share this machine's cores, so every byte is encrypted, decrypted and
//! hashed on the same two vCPUs.
//!
//! Sizes in MB from `AGORA_BENCH_SIZES` (default `10,100`), runs per case from
//! `AGORA_BENCH_RUNS` (default 3), transports from `AGORA_BENCH_TRANSPORTS` (default
//! `tcp,quic`); `AGORA_BENCH_FETCH_DIR` is where fetchers keep their data (default: under
//! `target/`; `/dev/shm` takes the disk out of the measure). Run: `cargo bench --bench fetch`.
//!
//! `AGORA_BENCH_PERF_CTL` names a `perf` control FIFO: the bench writes `enable` to it just
//! before each timed fetch and `disable` just after, so that a `perf stat -D -1 --control
//! fifo:<path> ...` or `perf record` run of this bench counts the fetches alone (setting up
//! nodes and the baselines left out). See BENCHMARKS.md for the command.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_daemon::Node;
use agora_daemon::network::NetworkError;
use agora_protocol::ContentId;
use agora_protocol::dht::DhtKey;
use agora_protocol::records::{ArchiveInfo, ReleaseRecord};
use futures::future::poll_fn;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt};
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, PortUse, Transport, TransportEvent};
use libp2p::core::{Endpoint, upgrade};
use libp2p::{Multiaddr, PeerId, identity, noise, tcp, yamux};
use support::{env_list, pct};

/// Longest wait for a fetcher to learn the release by sync.
const DEADLINE: Duration = Duration::from_secs(60);

fn write_package(dir: &std::path::Path, name: &str, bytes: usize) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"bench\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("assets/payload.bin"), common::noise(bytes, 7)).unwrap();
}

/// MB/s of moving `bytes` in `took`.
fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// A node with a fresh data directory listening on `kind`.
async fn start(kind: Kind) -> (Node, Multiaddr) {
    let config = common::node_config(&common::data_dir());
    Node::start_listening(config, kind.listen()).await.unwrap()
}

/// Where fetchers keep their data: `AGORA_BENCH_FETCH_DIR`, else a fresh directory under
/// `target/`.
fn fetch_root() -> PathBuf {
    std::env::var_os("AGORA_BENCH_FETCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(common::data_dir)
}

/// A fresh node joined to `seed` that has the release in its catalog (by sync), its data in
/// `dir`. Like agorad, it goes on if its DHT bootstrap does not complete: over QUIC, dialling
/// the earlier fetchers (gone, but still in the others' routing tables) waits out the
/// handshake timeout of each, and the bootstrap refreshes bucket after bucket.
async fn fetcher(kind: Kind, dir: &Path, seed: &Multiaddr, release: &ReleaseRecord) -> Node {
    let (node, _) = Node::start_listening(common::node_config(dir), kind.listen())
        .await
        .unwrap();
    node.network.dial(seed.clone()).await.unwrap();
    if let Err(e) = node.network.bootstrap().await {
        assert!(
            matches!(e, NetworkError::Query(_) | NetworkError::Timeout(_)),
            "bootstrap: {e}"
        );
    }
    synced(&node, release).await;
    node
}

/// Waits until `node`'s catalog holds `release` (it arrives by sync or gossip).
async fn synced(node: &Node, release: &ReleaseRecord) {
    let started = Instant::now();
    while !node.registry.view().has_record(&release.id()) {
        assert!(started.elapsed() < DEADLINE, "release not synced");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fetches the release on a fresh node whose data is in a new directory in `root` (removed
/// afterwards); returns the time and the providers that served it. Reads the fetched archive
/// into `archive` if that is empty.
async fn timed_fetch(
    kind: Kind,
    root: &Path,
    seed: &Multiaddr,
    release: &ReleaseRecord,
    archive: &mut Vec<u8>,
) -> (Duration, usize) {
    let dir = tempfile::tempdir_in(root).unwrap();
    let node = fetcher(kind, dir.path(), seed, release).await;
    let b = &release.body;
    perf_control("enable");
    let started = Instant::now();
    let fetched = node.registry.fetch(&b.name, &b.version).await.unwrap();
    let took = started.elapsed();
    perf_control("disable");
    assert!(!fetched.cached);
    assert_eq!(fetched.size, b.archive.size);
    let served = fetched.served_by.len();
    if archive.is_empty() {
        *archive = std::fs::read(&fetched.path).unwrap();
    }
    node.shutdown().await;
    (took, served)
}

/// Sends `command` to the `perf` control FIFO named by `AGORA_BENCH_PERF_CTL`, if any. Blocks
/// until perf reads it, so the counting window starts and ends where the fetch does.
fn perf_control(command: &str) {
    if let Some(fifo) = std::env::var_os("AGORA_BENCH_PERF_CTL") {
        std::fs::write(&fifo, format!("{command}\n"))
            .unwrap_or_else(|e| panic!("writing to the perf control FIFO {fifo:?}: {e}"));
    }
}

/// Writes `data` to a new file in `root`, 1 MiB at a time, and syncs it (removed afterwards).
fn disk_write(root: &Path, data: &[u8]) -> Duration {
    let mut file = tempfile::NamedTempFile::new_in(root).unwrap();
    let started = Instant::now();
    for piece in data.chunks(1 << 20) {
        file.write_all(piece).unwrap();
    }
    file.as_file().sync_data().unwrap();
    started.elapsed()
}

/// Copies `bytes` over a loopback TCP connection, memory to memory, in 1 MiB writes.
fn tcp_copy(bytes: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early");
            got += n;
        }
        s.write_all(b"k").unwrap();
    });
    let data = common::noise(1 << 20, 3);
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    let mut sent = 0;
    while sent < bytes {
        let n = (bytes - sent).min(data.len());
        s.write_all(&data[..n]).unwrap();
        sent += n;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    let took = started.elapsed();
    reader.join().unwrap();
    took
}

/// Stream bytes a QUIC packet carries here (quinn's path MTU of 1,452 bytes less the short
/// header, the frame header and the AEAD tag).
const QUIC_PACKET_PAYLOAD: usize = 1_400;
/// Bytes a Noise frame carries (libp2p-noise's largest frame).
const NOISE_FRAME_PAYLOAD: usize = 65_535 - 1_024;

/// CPU that any encrypted and verified fetch of `data` must spend, measured here: the
/// provider's seal and the fetcher's open in the transport's frames, with the cipher two
/// Agora nodes negotiate on it (Noise: ChaCha20-Poly1305; QUIC: AES-128-GCM, as the patched
/// libp2p-tls orders it, vendor/README.md), and the fetcher's two SHA-256 passes (each chunk
/// against its hash, the whole archive against its id). ring's assembly stands in for
/// aws-lc's, which QUIC uses (the same BoringSSL-derived code). No copy, syscall, framing or
/// disk is counted, so the real floor is higher.
fn cpu_floor(kind: Kind, data: &[u8], info: &ArchiveInfo) -> Floor {
    use ring::aead::{AES_128_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let (frame, key) = match kind {
        Kind::Tcp => (
            NOISE_FRAME_PAYLOAD,
            UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]),
        ),
        Kind::Quic => (
            QUIC_PACKET_PAYLOAD,
            UnboundKey::new(&AES_128_GCM, &[7u8; 16]),
        ),
    };
    let key = LessSafeKey::new(key.unwrap());
    let nonce = |n: usize| {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&(n as u64).to_le_bytes());
        Nonce::assume_unique_for_key(bytes)
    };
    let mut buf = data.to_vec();
    let started = Instant::now();
    let tags: Vec<_> = buf
        .chunks_mut(frame)
        .enumerate()
        .map(|(n, f)| {
            key.seal_in_place_separate_tag(nonce(n), Aad::empty(), f)
                .unwrap()
        })
        .collect();
    for (n, (f, tag)) in buf.chunks_mut(frame).zip(tags).enumerate() {
        key.open_in_place_separate_tag(nonce(n), Aad::empty(), tag, f, 0..)
            .unwrap();
    }
    let aead = started.elapsed();
    assert_eq!(buf, data, "the sealed frames opened to something else");
    let started = Instant::now();
    let chunks: Vec<ContentId> = data
        .chunks(info.chunk_size as usize)
        .map(ContentId::of)
        .collect();
    let whole = ContentId::of(data);
    let hashes = started.elapsed();
    assert_eq!((chunks, whole), (info.chunks.clone(), info.id));
    Floor { aead, hashes }
}

/// [`cpu_floor`]'s parts.
#[derive(Clone, Copy)]
struct Floor {
    /// Sealing and opening every frame.
    aead: Duration,
    /// The chunk hashes and the whole-archive hash.
    hashes: Duration,
}

impl Floor {
    fn cpu(&self) -> Duration {
        self.aead + self.hashes
    }
}

/// The transports a daemon listens on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Quic,
}

impl Kind {
    fn listen(self) -> Multiaddr {
        match self {
            Kind::Tcp => "/ip4/127.0.0.1/tcp/0",
            Kind::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        }
        .parse()
        .unwrap()
    }

    /// The transport alone, upgraded as Agora's swarm does it (`agora_daemon::network`).
    fn transport(self) -> Boxed<(PeerId, StreamMuxerBox)> {
        let id = identity::Keypair::generate_ed25519();
        match self {
            Kind::Tcp => tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .upgrade(upgrade::Version::V1)
                .authenticate(noise::Config::new(&id).unwrap())
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed(),
            Kind::Quic => libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&id))
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed(),
        }
    }
}

/// Keeps a connection's muxer running (it moves frames between the socket and substreams).
fn drive(mut muxer: StreamMuxerBox) {
    tokio::spawn(async move { while poll_fn(|cx| muxer.poll_unpin(cx)).await.is_ok() {} });
}

/// Copies `bytes` over one substream of a libp2p connection on loopback, memory to memory.
async fn libp2p_copy(kind: Kind, bytes: usize) -> Duration {
    let mut listener = kind.transport();
    listener
        .listen_on(ListenerId::next(), kind.listen())
        .unwrap();
    let addr = loop {
        if let TransportEvent::NewAddress { listen_addr, .. } = listener.select_next_some().await {
            break listen_addr;
        }
    };
    let reader = tokio::spawn(async move {
        let upgrade = loop {
            if let TransportEvent::Incoming { upgrade, .. } = listener.select_next_some().await {
                break upgrade;
            }
        };
        let (_, mut muxer) = upgrade.await.unwrap();
        let mut stream = poll_fn(|cx| {
            let _ = muxer.poll_unpin(cx);
            muxer.poll_inbound_unpin(cx)
        })
        .await
        .unwrap();
        drive(muxer);
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "substream closed early");
            got += n;
        }
        stream.write_all(b"k").await.unwrap();
        stream.flush().await.unwrap();
    });
    let dial = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    };
    let (_, mut muxer) = kind.transport().dial(addr, dial).unwrap().await.unwrap();
    let mut stream = poll_fn(|cx| muxer.poll_outbound_unpin(cx)).await.unwrap();
    drive(muxer);
    let data = common::noise(1 << 20, 5);
    let started = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        let n = (bytes - sent).min(data.len());
        stream.write_all(&data[..n]).await.unwrap();
        sent += n;
    }
    stream.flush().await.unwrap();
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await.unwrap();
    let took = started.elapsed();
    reader.await.unwrap();
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    pct(&v, 0.5)
}

async fn run(kind: Kind, mb: usize, runs: usize) {
    let bytes = mb * 1_000_000;
    let mut net = vec![start(kind).await];
    let seed = net[0].1.clone();
    for _ in 1..3 {
        let (node, addr) = start(kind).await;
        common::join(&node, &seed).await;
        net.push((node, addr));
    }
    let src = tempfile::tempdir().unwrap();
    write_package(src.path(), &format!("fetch-{mb}"), bytes);
    let release = net[0]
        .0
        .registry
        .publish(src.path().to_owned(), &common::publisher(3))
        .await
        .unwrap()
        .record;
    let size = release.body.archive.size;
    let root = fetch_root();
    let mut disk = Vec::new();
    let mut archive = Vec::new();

    let mut one = Vec::new();
    for _ in 0..runs {
        let (took, served) = timed_fetch(kind, &root, &seed, &release, &mut archive).await;
        assert_eq!(served, 1);
        one.push(took);
        disk.push(disk_write(&root, &archive));
    }
    // Nodes 1 and 2 fetch it too and become providers (a fetch announces its archive in the
    // background: wait until the DHT lists all three).
    for (node, _) in &net[1..] {
        synced(node, &release).await;
        let b = &release.body;
        node.registry.fetch(&b.name, &b.version).await.unwrap();
    }
    let content = DhtKey::Content(release.body.archive.id).to_bytes();
    let started = Instant::now();
    while common::all_providers(&net[0].0, content.clone())
        .await
        .len()
        < 3
    {
        assert!(started.elapsed() < DEADLINE, "three providers not listed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The fetch starts on the providers in the DHT search's first answer; one found later
    // serves only chunks not yet asked for, so not every provider may serve.
    let mut three = Vec::new();
    let mut served_by = Vec::new();
    for _ in 0..runs {
        let (took, served) = timed_fetch(kind, &root, &seed, &release, &mut archive).await;
        assert!((1..=3).contains(&served), "{served} providers served");
        three.push(took);
        served_by.push(served);
        disk.push(disk_write(&root, &archive));
    }
    let tcp: Vec<Duration> = (0..runs).map(|_| tcp_copy(size as usize)).collect();
    let mut floors: Vec<Floor> = (0..runs)
        .map(|_| cpu_floor(kind, &archive, &release.body.archive))
        .collect();
    floors.sort_by_key(Floor::cpu);
    let floor = floors[runs / 2];
    let mut transport = Vec::new();
    for _ in 0..runs {
        transport.push(libp2p_copy(kind, size as usize).await);
    }
    let (one, three) = (median(one), median(three));
    let (tcp, transport, disk) = (median(tcp), median(transport), median(disk));
    let best = rate(size, one).max(rate(size, three));
    // Provider and fetcher share the cores: at best the floor's work is spread over all.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (floor_cpu, aead, hashes) = (floor.cpu(), floor.aead, floor.hashes);
    let floor = floor_cpu / cores as u32;
    // Two things no fetch here can beat: it ends only once the archive is durable (the disk
    // write), and it spends at least the CPU floor on these cores. Over libp2p, one
    // connection's copy is a third, practical one (3 providers use three connections).
    let ceiling = rate(size, disk).min(rate(size, floor));
    let over_libp2p = ceiling.min(rate(size, transport));
    println!(
        "fetch over {kind:?}, {:.1} MB archive, median of {runs}: 1 provider {one:.1?} = {:.0} MB/s; \
         3 providers {three:.1?} = {:.0} MB/s (providers that served, per run: {served_by:?}); \
         plain TCP copy {tcp:.1?} = {:.0} MB/s; libp2p {kind:?} transport copy {transport:.1?} = {:.0} MB/s; \
         durable write to {} {disk:.1?} = {:.0} MB/s (median of {}); CPU floor {floor_cpu:.1?} of CPU \
         (seal and open {aead:.1?}, two SHA-256 passes {hashes:.1?}), over {cores} cores {floor:.1?} = {:.0} MB/s \
         = {:.0}% of the TCP copy; best fetch = {:.0}% of the TCP copy, {:.0}% of the libp2p \
         transport, {:.0}% of the disk write, {:.0}% of the CPU floor; ceiling (the slower of the \
         disk write and the CPU floor) {ceiling:.0} MB/s = {:.0}% of the TCP copy, {over_libp2p:.0} MB/s \
         = {:.0}% with the libp2p transport copy as a third bound",
        size as f64 / 1e6,
        rate(size, one),
        rate(size, three),
        rate(size, tcp),
        rate(size, transport),
        root.display(),
        rate(size, disk),
        2 * runs,
        rate(size, floor),
        100.0 * rate(size, floor) / rate(size, tcp),
        100.0 * best / rate(size, tcp),
        100.0 * best / rate(size, transport),
        100.0 * best / rate(size, disk),
        100.0 * best / rate(size, floor),
        100.0 * ceiling / rate(size, tcp),
        100.0 * over_libp2p / rate(size, tcp),
    );
    for (n, _) in net {
        n.shutdown().await;
    }
}

fn main() {
    common::init_tracing();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runs = env_list("AGORA_BENCH_RUNS", &[3])[0];
    let kinds = std::env::var("AGORA_BENCH_TRANSPORTS").unwrap_or_else(|_| "tcp,quic".into());
    for kind in kinds.split(',').map(|k| match k.trim() {
        "tcp" => Kind::Tcp,
        "quic" => Kind::Quic,
        other => panic!("AGORA_BENCH_TRANSPORTS: unknown transport {other:?} (tcp, quic)"),
    }) {
        for mb in env_list("AGORA_BENCH_SIZES", &[10, 100]) {
            rt.block_on(run(kind, mb, runs));
        }
    }
}
