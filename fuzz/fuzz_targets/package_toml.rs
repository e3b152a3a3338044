//! `package.toml`: any text, parsed as a package manifest.
#![no_main]

use agora_protocol::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Manifest::parse(text);
    }
});
