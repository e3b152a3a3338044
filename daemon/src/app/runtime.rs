//! The tokio runtime a daemon runs on. Its blocking pool (searches, disk reads, durable
//! writes, signature checks of batches) is bounded to a few threads per core: each thread
//! costs its stack and its allocator's thread cache for as long as it lives, and more threads
//! than that add nothing to work that is bound by the CPU or the disk. Work beyond them waits
//! for a thread, in order.

/// Blocking threads per core: enough to keep the cores busy while some threads wait on
/// `fsync` or a cold read.
pub const BLOCKING_THREADS_PER_CORE: usize = 4;

/// A multi-threaded runtime (a worker per core) with the bounded blocking pool.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(max_blocking_threads())
        .build()
}

/// The blocking pool's bound on this machine.
pub fn max_blocking_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores * BLOCKING_THREADS_PER_CORE
}
