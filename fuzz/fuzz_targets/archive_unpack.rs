//! Archive unpacking: any bytes as a package archive (gzip of a tar). Whatever happens,
//! nothing is written outside the destination, and a refused archive leaves no destination.
#![no_main]

use agora_client::unpack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("pkg");
    let result = unpack::unpack(data, &dest);
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    match result {
        Ok(_) => assert!(left.len() == 1 && dest.is_dir(), "unpacked beside its destination: {left:?}"),
        Err(_) => assert!(left.is_empty(), "a refused archive left {left:?}"),
    }
});
