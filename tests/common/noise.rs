//! Bytes that do not compress, for archives whose size must be what goes over the wire.

/// Deterministic pseudo-random bytes (xorshift), so blobs do not compress or repeat.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}
