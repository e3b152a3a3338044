//! IPC: `agora status` round trips to a real in-process daemon (node, registry, IPC server)
//! against a bare Unix-socket echo of the same frames, measured in the same run.
//!
//! - round trip, one client: criterion, then a percentile pass of `ROUNDS` requests;
//! - throughput with 1 and 8 concurrent clients (one connection each), requests per second;
//! - a huge length prefix (a 4 GiB frame claimed): connect, send the header, until the daemon
//!   has closed the connection.
//!
//! The baseline is a tokio Unix-socket server that reads one frame (4-byte length + payload)
//! and writes it back, driven by the same blocking client code path: what any IPC over this
//! socket costs before Agora does anything. Run: `cargo bench --bench ipc`.

/// The allocator agorad runs with, so the numbers are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_daemon::Config;
use agora_daemon::Daemon;
use agora_daemon::network::NetworkConfig;
use agora_daemon::store::key_files as keys;
use agora_protocol::codec::Wire;
use agora_protocol::ipc::{self, ClientMessage, FRAME_HEADER_LEN, Request};
use criterion::{Criterion, criterion_group};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests in each percentile pass.
const ROUNDS: usize = 20_000;
/// Requests per client in a throughput pass.
const PER_CLIENT: usize = 5_000;

struct Running {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    _daemon: Daemon,
}

fn start_daemon(rt: &tokio::runtime::Runtime) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::local(dir.path()).unwrap();
    std::fs::create_dir_all(&config.paths.data_dir).unwrap();
    let keypair = keys::node_identity(&config.paths.keys_dir).unwrap();
    let daemon = rt
        .block_on(Daemon::start(&config, NetworkConfig::new(keypair), None))
        .unwrap();
    Running {
        socket: config.paths.socket.clone(),
        _dir: dir,
        _daemon: daemon,
    }
}

/// A Unix-socket server that echoes each frame back.
fn start_echo(rt: &tokio::runtime::Runtime, path: &Path) {
    let listener = {
        let _guard = rt.enter();
        tokio::net::UnixListener::bind(path).unwrap()
    };
    rt.spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut header = [0u8; FRAME_HEADER_LEN];
                let mut buf = Vec::new();
                loop {
                    if s.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes(header) as usize;
                    buf.resize(len, 0);
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + len);
                    out.extend_from_slice(&header);
                    out.extend_from_slice(&buf);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The same echo with a plain thread per connection and blocking I/O: the floor of a round
/// trip between two threads over a Unix socket on this machine.
fn start_thread_echo(path: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut header = [0u8; FRAME_HEADER_LEN];
                let mut buf = Vec::new();
                loop {
                    if s.read_exact(&mut header).is_err() {
                        return;
                    }
                    buf.resize(u32::from_be_bytes(header) as usize, 0);
                    if s.read_exact(&mut buf).is_err() {
                        return;
                    }
                    let mut out = header.to_vec();
                    out.extend_from_slice(&buf);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A blocking echo client sending what `agora status` sends.
struct Echo {
    stream: UnixStream,
    frame: Vec<u8>,
    reply: Vec<u8>,
}

impl Echo {
    fn connect(path: &Path) -> Self {
        let frame = ipc::frame(
            &ClientMessage::Request {
                id: 1,
                request: Request::Status,
            }
            .to_wire(),
        )
        .unwrap();
        Self {
            stream: UnixStream::connect(path).unwrap(),
            reply: vec![0; frame.len()],
            frame,
        }
    }

    fn round_trip(&mut self) {
        self.stream.write_all(&self.frame).unwrap();
        self.stream.read_exact(&mut self.reply).unwrap();
    }
}

fn percentiles(mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.99))
}

/// Requests per second with `clients` connections working at once.
fn throughput<C: Send>(clients: usize, connect: impl Fn() -> C, call: fn(&mut C)) -> f64 {
    let mut conns: Vec<C> = (0..clients).map(|_| connect()).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in conns.iter_mut() {
            s.spawn(move || {
                for _ in 0..PER_CLIENT {
                    call(c);
                }
            });
        }
    });
    (clients * PER_CLIENT) as f64 / started.elapsed().as_secs_f64()
}

fn bench_ipc(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let daemon = start_daemon(&rt);
    let echo_dir = tempfile::tempdir().unwrap();
    let echo_path = echo_dir.path().join("echo.sock");
    start_echo(&rt, &echo_path);
    let thread_echo_path = echo_dir.path().join("thread-echo.sock");
    start_thread_echo(&thread_echo_path);

    let mut client = Client::connect(&daemon.socket).unwrap();
    let mut echo = Echo::connect(&echo_path);
    let mut group = c.benchmark_group("ipc");
    group.bench_function("status", |b| b.iter(|| client.status().unwrap()));
    group.bench_function("echo baseline", |b| b.iter(|| echo.round_trip()));
    group.finish();

    let (s50, s99) = percentiles(|| {
        client.status().unwrap();
    });
    let (e50, e99) = percentiles(|| echo.round_trip());
    let mut thread_echo = Echo::connect(&thread_echo_path);
    let (t50, t99) = percentiles(|| thread_echo.round_trip());
    println!(
        "ipc round trip over {ROUNDS} requests: status p50 {s50:?} p99 {s99:?}; \
         tokio echo p50 {e50:?} p99 {e99:?}; thread echo p50 {t50:?} p99 {t99:?}; \
         status / tokio echo at p50 = {:.2}x",
        s50.as_secs_f64() / e50.as_secs_f64()
    );
    // A client claiming a 4 GiB frame: from sending the header to the daemon closing the
    // connection (it reads 4 bytes and refuses before allocating anything).
    let (h50, h99) = percentiles(|| {
        let mut s = UnixStream::connect(&daemon.socket).unwrap();
        s.write_all(&[0xff; FRAME_HEADER_LEN]).unwrap();
        let mut rest = Vec::new();
        // Closed: end of stream, or a reset if our bytes were still unread.
        let _ = s.read_to_end(&mut rest);
    });
    client.status().expect("the daemon still answers");
    println!(
        "ipc huge length prefix over {ROUNDS} connections: connect, send, closed by the daemon \
         p50 {h50:?} p99 {h99:?}"
    );
    for clients in [1, 8] {
        let status = throughput(
            clients,
            || Client::connect(&daemon.socket).unwrap(),
            |c| {
                c.status().unwrap();
            },
        );
        let echo = throughput(clients, || Echo::connect(&echo_path), Echo::round_trip);
        println!(
            "ipc throughput, {clients} client(s): status {status:.0} req/s, echo {echo:.0} req/s \
             ({:.0}% of echo)",
            100.0 * status / echo
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_ipc
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
