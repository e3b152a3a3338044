//! `agora.lock`: any bytes in a project's lockfile.
#![no_main]

use agora_client::lockfile::Lockfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agora.lock");
    std::fs::write(&path, data).unwrap();
    let _ = Lockfile::read(&path);
});
