//! IPC: a frame header, then a client's message (what the daemon decodes from its socket) and
//! a server's message (what the CLI decodes).
#![no_main]

use agora_protocol::codec::Wire;
use agora_protocol::ipc::{self, ClientMessage, FRAME_HEADER_LEN, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<FRAME_HEADER_LEN>() {
        let _ = ipc::frame_len(*header);
    }
    let _ = ClientMessage::from_wire(data);
    let _ = ServerMessage::from_wire(data);
});
