//! Catalog sync: requests and responses of `/agora/sync/1`.
#![no_main]

use agora_protocol::codec::Wire;
use agora_protocol::messages::{SyncRequest, SyncResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SyncRequest::from_wire(data);
    let _ = SyncResponse::from_wire(data);
});
