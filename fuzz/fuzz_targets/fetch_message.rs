//! Fetch: requests and responses of `/agora/fetch/1`.
#![no_main]

use agora_protocol::codec::Wire;
use agora_protocol::messages::{FetchRequest, FetchResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = FetchRequest::from_wire(data);
    let _ = FetchResponse::from_wire(data);
});
