//! DHT: a value stored or returned under a key; the first byte chooses the key's length, the
//! rest is split into key and value.
#![no_main]

use agora_protocol::dht;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let (key, value) = rest.split_at(usize::from(n).min(rest.len()));
    let _ = dht::validate(key, value);
    let _ = dht::validate(b"agora/pkg/fuzz", rest);
});
