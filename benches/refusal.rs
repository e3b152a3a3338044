//! How fast, and with how little memory, a huge length prefix is refused on every protocol.
//!
//! A peer (or a local client) that claims a message of gigabytes must cost a few bytes of
//! reading and no allocation of that size. Each case feeds the decoder exactly what such a
//! peer sends and checks it is refused:
//!
//! - IPC: a frame header of `u32::MAX` (`ipc::frame_len`);
//! - sync and fetch streams: a 4-byte length of `u32::MAX` read by the request-response codec;
//! - gossip and DHT values: a wire encoding whose first length prefix claims `u64::MAX`
//!   elements (bincode's varint: 253 then eight bytes).
//!
//! For each: criterion's time per refusal, then the most bytes the process had allocated
//! while refusing (a counting allocator; the limit checks run before any buffer is sized).
//! The end-to-end refusal by a running daemon's IPC socket is in the `ipc` bench.
//! Run: `cargo bench --bench refusal`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use agora_daemon::network::codec::WireCodec;
use agora_protocol::codec::{WIRE_VERSION, Wire};
use agora_protocol::dht;
use agora_protocol::ipc::{self, FRAME_HEADER_LEN};
use agora_protocol::messages::{
    FETCH_PROTOCOL, FetchRequest, FetchResponse, GossipMessage, SYNC_PROTOCOL, SyncRequest,
    SyncResponse,
};
use criterion::{Criterion, criterion_group};
use futures::io::Cursor;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated beyond what was live before, at the worst moment of `f`.
fn peak_extra(f: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - before
}

/// A wire encoding whose first length prefix claims `u64::MAX` elements.
fn huge_prefix_wire(variant: u8) -> Vec<u8> {
    let mut bytes = vec![WIRE_VERSION, variant, 253];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes
}

fn refuse_ipc_header() {
    let header = [0xff; FRAME_HEADER_LEN];
    assert!(ipc::frame_len(std::hint::black_box(header)).is_err());
}

fn refuse_stream<Req, Resp>(protocol: &'static str)
where
    Req: Wire + Send + Sync + std::fmt::Debug + 'static,
    Resp: Wire + Send + Sync + std::fmt::Debug + 'static,
{
    let mut codec = WireCodec::<Req, Resp>::default();
    let protocol = StreamProtocol::new(protocol);
    let mut io = Cursor::new(vec![0xff; 4]);
    let refused = futures::executor::block_on(codec.read_request(&protocol, &mut io));
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    let mut io = Cursor::new(vec![0xff; 4]);
    let refused = futures::executor::block_on(codec.read_response(&protocol, &mut io));
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
}

fn refuse_gossip(bytes: &[u8]) {
    assert!(GossipMessage::from_wire(std::hint::black_box(bytes)).is_err());
}

fn refuse_dht(key: &[u8], bytes: &[u8]) {
    assert!(dht::validate(key, std::hint::black_box(bytes)).is_err());
}

fn bench(c: &mut Criterion) {
    let gossip = huge_prefix_wire(0);
    let dht_key = dht::DhtKey::Head("victim".parse().unwrap()).to_bytes();
    let dht_value = huge_prefix_wire(0);
    let mut g = c.benchmark_group("huge_length_prefix");
    g.bench_function("ipc_frame_header", |b| b.iter(refuse_ipc_header));
    g.bench_function("sync_stream", |b| {
        b.iter(|| refuse_stream::<SyncRequest, SyncResponse>(SYNC_PROTOCOL))
    });
    g.bench_function("fetch_stream", |b| {
        b.iter(|| refuse_stream::<FetchRequest, FetchResponse>(FETCH_PROTOCOL))
    });
    g.bench_function("gossip_message", |b| b.iter(|| refuse_gossip(&gossip)));
    g.bench_function("dht_value", |b| b.iter(|| refuse_dht(&dht_key, &dht_value)));
    g.finish();

    println!("\nmost bytes allocated while refusing (beyond what was live before):");
    let sync = || refuse_stream::<SyncRequest, SyncResponse>(SYNC_PROTOCOL);
    let fetch = || refuse_stream::<FetchRequest, FetchResponse>(FETCH_PROTOCOL);
    let gossip_case = || refuse_gossip(&gossip);
    let dht_case = || refuse_dht(&dht_key, &dht_value);
    let cases: [(&str, &dyn Fn()); 5] = [
        ("ipc_frame_header", &refuse_ipc_header),
        ("sync_stream", &sync),
        ("fetch_stream", &fetch),
        ("gossip_message", &gossip_case),
        ("dht_value", &dht_case),
    ];
    for (name, f) in cases {
        println!("  {name:<18} {:>6} bytes", peak_extra(f));
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
