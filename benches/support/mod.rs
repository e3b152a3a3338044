//! What the benches share: percentiles, CPU time and resident memory of a process, sizes from
//! the environment, and synthetic signed catalogs for bulk loads.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_protocol::records::{ArchiveInfo, CatalogRecord, ReleaseBody, Signed};
use agora_protocol::{PackageMeta, PublisherSecret, Version};

/// `target/release/NAME`, which `cargo build --release` makes.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built; run 'cargo build --release --workspace' first",
        path.display()
    );
    path
}

/// The `p` quantile (0..=1) of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `label p50 .. p99 .. max ..` of the samples.
pub fn summary(label: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{label} p50 {:.1?} p99 {:.1?} max {:.1?}",
        pct(&v, 0.5),
        pct(&v, 0.99),
        v[v.len() - 1]
    )
}

/// A comma-separated list of numbers from `var`, or `default`.
pub fn env_list(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// CPU time this process has used (every thread), from `/proc/self/stat`.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses: utime and stime are 14 and 15.
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Clock ticks are 100 Hz (USER_HZ) on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// A memory figure of a process in bytes: `field` (`VmRSS`, `VmHWM`, ...) of
/// `/proc/<pid>/status`.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kib * 1024
}

/// Megabytes, for printing.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Words synthetic package names and descriptions are made of.
pub const WORDS: [&str; 16] = [
    "quick", "lazy", "bright", "silent", "rapid", "modern", "classic", "tiny", "secure", "async",
    "simple", "robust", "minimal", "fancy", "solid", "clever",
];
pub const NOUNS: [&str; 16] = [
    "service",
    "template",
    "starter",
    "widget",
    "parser",
    "server",
    "client",
    "cache",
    "router",
    "logger",
    "schema",
    "pipeline",
    "worker",
    "gateway",
    "dashboard",
    "scaffold",
];
pub const CATEGORIES: [&str; 8] = [
    "web", "cli", "data", "ml", "devops", "mobile", "game", "starter",
];

/// Signed releases of distinct packages (`seed-<word>-<noun>-<i>` for each `i` in `numbers`),
/// published by `key`, with varied metadata, as a node would hold them. Their archives exist
/// nowhere: enough for the catalog, search and sync, not for fetch.
pub fn synthetic_releases(numbers: Range<usize>, key: &PublisherSecret) -> Vec<CatalogRecord> {
    numbers
        .map(|i| {
            let (word, noun) = (WORDS[i % 16], NOUNS[(i / 16) % 16]);
            let name = format!("seed-{word}-{noun}-{i}");
            let body = ReleaseBody {
                name: name.parse().unwrap(),
                version: Version::new(1, (i % 10) as u64, 0),
                meta: PackageMeta {
                    description: format!("A {word} {noun} generated as package number {i}"),
                    category: Some(CATEGORIES[i % 8].to_string()),
                    author: Some(format!("author{}", i % 97)),
                    license: Some("MIT".into()),
                    repository: None,
                    tags: vec![noun.to_string()],
                    keywords: vec![word.to_string()],
                },
                dependencies: vec![],
                archive: ArchiveInfo::describe(name.as_bytes(), 1 << 20),
                published_at: 1_700_000_000 + i as u64,
                publisher: key.public(),
                previous: None,
            };
            CatalogRecord::Release(Signed::sign(body, key).unwrap())
        })
        .collect()
}

/// mimalloc, counting the bytes allocated and not yet freed: what a bench's data holds,
/// exactly, where RSS also moves with what the allocator keeps of freed memory. A bench makes
/// it its global allocator and reads [`live_bytes`].
pub struct Counting(pub mimalloc::MiMalloc);

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Bytes allocated through [`Counting`] and not yet freed.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

// SAFETY: every call is passed to mimalloc unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}
