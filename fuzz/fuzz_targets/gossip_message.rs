//! Gossip: a message as it arrives on the releases topic, decoded and its signature checked.
#![no_main]

use agora_protocol::messages::GossipMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = GossipMessage::decode_verified(data);
});
