//! The wire codec: one version byte, then the value in bincode 2's `standard` configuration
//! (little-endian, variable-length integers). Every decode is bounded by a limit on the wire
//! bytes that is checked before anything is decoded, must consume the whole input, and must be
//! canonical (re-encoding gives the same bytes), so one value has exactly one encoding and
//! hashes of encodings identify values.
//!
//! bincode's own limit counts what a decode claims, not what it reads: an integer claims its
//! width in memory (8 bytes for a `u64` written as one varint byte), a string its length. A
//! limit in claims equal to the wire limit would refuse messages the wire limit allows (a
//! release near the record size, full of small integers and short strings). So the claim
//! limit is [`CLAIMS_PER_WIRE_BYTE`] times the wire limit: nothing within the wire limit is
//! refused by it, and a length prefix that lies still cannot make a decode allocate more than
//! that before the bytes run out.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The wire format version this crate speaks: the first byte of every top-level message,
/// DHT value and IPC payload.
pub const WIRE_VERSION: u8 = 1;

/// Most bytes bincode's limit counts for one byte on the wire: a one-byte varint decoded as a
/// `u64`. (No type of this crate holds a 128-bit integer, which would count 16.)
pub const CLAIMS_PER_WIRE_BYTE: usize = 8;

/// The claim limit that goes with a wire limit of `wire` bytes (the second const parameter of
/// every decode function; a mismatched pair does not compile).
pub const fn claims(wire: usize) -> usize {
    wire * CLAIMS_PER_WIRE_BYTE
}

/// Why bytes did not decode. Each variant is a different thing a peer did wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is empty")]
    Empty,
    #[error("message is {len} bytes; the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("wire version {found} is not supported (this node speaks {WIRE_VERSION})")]
    UnsupportedVersion { found: u8 },
    #[error("message is truncated")]
    Truncated,
    #[error("a length inside the message claims more than the {limit} bytes allowed")]
    LimitExceeded { limit: usize },
    #[error("message has {trailing} trailing bytes after the value")]
    TrailingBytes { trailing: usize },
    #[error("message is not in canonical encoding")]
    NonCanonical,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message breaks a rule: {0}")]
    Invalid(String),
}

/// A top-level wire message with its own size limit and structural rules.
pub trait Wire: Serialize + DeserializeOwned + Sized {
    /// Largest encoding accepted, version byte included.
    const MAX_BYTES: usize;

    /// Rules that the type system does not express (counts, lengths); checked after decoding.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    fn to_wire(&self) -> Vec<u8> {
        encode(self)
    }

    /// The encoding as two parts sent back to back: a head, and bytes the value holds already
    /// (a chunk's data), so that a large payload goes out without being copied into an
    /// encoding. By default the head is the whole encoding.
    fn to_wire_parts(&self) -> (Vec<u8>, Bytes) {
        (self.to_wire(), Bytes::new())
    }

    /// Decodes and checks; implemented by [`impl_wire!`](crate::impl_wire) so that the limit
    /// is a compile-time constant for the bounded decoder.
    fn from_wire(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// Decodes a buffer the caller gives up. A type that holds a large payload keeps it as a
    /// slice of `bytes` instead of copying it; by default this is [`from_wire`](Self::from_wire).
    fn from_wire_owned(bytes: Bytes) -> Result<Self, DecodeError> {
        Self::from_wire(&bytes)
    }
}

/// Implements [`Wire::from_wire`] for a concrete type with its limit.
#[macro_export]
macro_rules! impl_wire {
    ($ty:ty, $limit:expr, |$v:ident| $check:expr) => {
        impl $crate::codec::Wire for $ty {
            const MAX_BYTES: usize = $limit;
            fn check(&self) -> Result<(), String> {
                let $v = self;
                $check
            }
            fn from_wire(bytes: &[u8]) -> Result<Self, $crate::codec::DecodeError> {
                let value: Self =
                    $crate::codec::decode::<Self, { $limit }, { $crate::codec::claims($limit) }>(
                        bytes,
                    )?;
                $crate::codec::Wire::check(&value).map_err($crate::codec::DecodeError::Invalid)?;
                Ok(value)
            }
        }
    };
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` without the version byte (the bytes that signatures cover).
pub fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    // Every type in this crate is a plain struct or enum with sized sequences: serde's bincode
    // encoder cannot fail on them.
    bincode::serde::encode_to_vec(value, config()).expect("agora-protocol types always encode")
}

/// Encodes `value` as a versioned wire message (one allocation of the exact size, one pass).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut size = SizeOnly(0);
    bincode::serde::encode_into_writer(value, &mut size, config())
        .expect("agora-protocol types always encode");
    let mut out = Vec::with_capacity(1 + size.0);
    out.push(WIRE_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("agora-protocol types always encode");
    out
}

/// Bytes `value`'s versioned encoding takes ([`encode`]'s length), without writing it.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut size = SizeOnly(0);
    bincode::serde::encode_into_writer(value, &mut size, config())
        .expect("agora-protocol types always encode");
    1 + size.0
}

/// Counts the bytes an encoding would write.
struct SizeOnly(usize);

impl bincode::enc::write::Writer for SizeOnly {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// Checks an encoding against bytes as it is written, instead of writing it anywhere: the
/// canonical-encoding check of a decoded message, without a copy of it.
struct SameAs<'a>(&'a [u8]);

impl bincode::enc::write::Writer for SameAs<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        match self.0.split_at_checked(bytes.len()) {
            Some((head, rest)) if head == bytes => {
                self.0 = rest;
                Ok(())
            }
            _ => Err(bincode::error::EncodeError::UnexpectedEnd),
        }
    }
}

/// Whether `value` encodes to exactly `bytes`.
fn encodes_to<T: Serialize>(value: &T, bytes: &[u8]) -> bool {
    let mut same = SameAs(bytes);
    bincode::serde::encode_into_writer(value, &mut same, config()).is_ok() && same.0.is_empty()
}

/// Decodes a versioned wire message of at most `LIMIT` bytes (`CLAIMS` is [`claims`]`(LIMIT)`).
/// `T` may borrow from `bytes`.
pub fn decode<'de, T: Serialize + Deserialize<'de>, const LIMIT: usize, const CLAIMS: usize>(
    bytes: &'de [u8],
) -> Result<T, DecodeError> {
    let value = decode_versioned::<T, LIMIT, CLAIMS>(bytes)?;
    canonical(value, &bytes[1..])
}

/// Decodes a versioned message this node encoded itself and reads back from its own store:
/// as [`decode`] (size limit, version, every byte consumed), without the check that the
/// bytes are the value's only encoding. That check keeps a peer from sending one value under
/// two encodings (two ids for one signed record); bytes this node wrote are [`encode`]'s
/// output, canonical by construction, and re-encoding every record of the log at each
/// start cost a quarter of decoding it.
pub fn decode_own<'de, T: Deserialize<'de>, const LIMIT: usize, const CLAIMS: usize>(
    bytes: &'de [u8],
) -> Result<T, DecodeError> {
    decode_versioned::<T, LIMIT, CLAIMS>(bytes)
}

/// Decodes an unversioned body of at most `LIMIT` bytes. `T` may borrow from `bytes`.
pub fn decode_body<
    'de,
    T: Serialize + Deserialize<'de>,
    const LIMIT: usize,
    const CLAIMS: usize,
>(
    bytes: &'de [u8],
) -> Result<T, DecodeError> {
    let value = decode_exact::<T, LIMIT, CLAIMS>(bytes)?;
    canonical(value, bytes)
}

fn decode_versioned<'de, T: Deserialize<'de>, const LIMIT: usize, const CLAIMS: usize>(
    bytes: &'de [u8],
) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if bytes.len() > LIMIT {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit: LIMIT,
        });
    }
    if version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    decode_exact::<T, LIMIT, CLAIMS>(body)
}

/// Decodes a body of at most `LIMIT` bytes that must be consumed whole.
fn decode_exact<'de, T: Deserialize<'de>, const LIMIT: usize, const CLAIMS: usize>(
    bytes: &'de [u8],
) -> Result<T, DecodeError> {
    const {
        assert!(
            CLAIMS == claims(LIMIT),
            "the claim limit goes with the wire limit"
        )
    };
    if bytes.len() > LIMIT {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit: LIMIT,
        });
    }
    let cfg = config().with_limit::<CLAIMS>();
    let (value, consumed): (T, usize) = bincode::serde::borrow_decode_from_slice(bytes, cfg)
        .map_err(|e| match e {
            bincode::error::DecodeError::UnexpectedEnd { .. } => DecodeError::Truncated,
            bincode::error::DecodeError::LimitExceeded => {
                DecodeError::LimitExceeded { limit: CLAIMS }
            }
            other => DecodeError::Malformed(other.to_string()),
        })?;
    if consumed != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            trailing: bytes.len() - consumed,
        });
    }
    Ok(value)
}

/// `value` if it encodes to exactly `body`, else [`DecodeError::NonCanonical`].
fn canonical<T: Serialize>(value: T, body: &[u8]) -> Result<T, DecodeError> {
    if !encodes_to(&value, body) {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_inputs_give_specific_errors() {
        type Pair = (u32, String);
        type Decoder = fn(&[u8]) -> Result<Pair, DecodeError>;
        // A peer's bytes (`decode`) and the node's own (`decode_own`) are refused alike for
        // everything but their encoding's canonical form.
        let decoders: [(&str, Decoder, Decoder); 2] = [
            (
                "decode",
                |b| decode::<Pair, 64, { claims(64) }>(b),
                |b| decode::<Pair, 2, { claims(2) }>(b),
            ),
            (
                "decode_own",
                |b| decode_own::<Pair, 64, { claims(64) }>(b),
                |b| decode_own::<Pair, 2, { claims(2) }>(b),
            ),
        ];
        let good = encode(&(7u32, String::from("hi")));
        let mut trailing = good.clone();
        trailing.push(0);
        let mut wrong = good.clone();
        wrong[0] = 2;
        for (what, decode, decode_2) in decoders {
            assert_eq!(decode(&good), Ok((7, "hi".into())), "{what}");
            assert_eq!(decode(&[]), Err(DecodeError::Empty), "{what}");
            assert_eq!(
                decode(&good[..good.len() - 1]),
                Err(DecodeError::Truncated),
                "{what}"
            );
            assert_eq!(
                decode(&trailing),
                Err(DecodeError::TrailingBytes { trailing: 1 }),
                "{what}"
            );
            assert_eq!(
                decode(&wrong),
                Err(DecodeError::UnsupportedVersion { found: 2 }),
                "{what}"
            );
            assert_eq!(
                decode_2(&good),
                Err(DecodeError::TooLarge {
                    len: good.len(),
                    limit: 2
                }),
                "{what}"
            );
        }
        // 7 written as a u16 varint (marker 251) decodes to the same value: refused from a
        // peer, taken from the node's own store.
        let long_seven = [WIRE_VERSION, 251, 7, 0];
        assert_eq!(
            decode::<u32, 64, { claims(64) }>(&long_seven),
            Err(DecodeError::NonCanonical)
        );
        assert_eq!(decode_own::<u32, 64, { claims(64) }>(&long_seven), Ok(7));
    }

    #[test]
    fn a_message_is_the_version_byte_then_the_body() {
        let big = serde_bytes::ByteBuf::from(vec![9u8; 70_000]);
        let mut expected = vec![WIRE_VERSION];
        expected.extend_from_slice(&encode_body(&big));
        assert_eq!(encode(&big), expected);
        assert_eq!(
            expected.len(),
            1 + 5 + 70_000,
            "u32 varint length, then the bytes"
        );
        assert_eq!(
            decode::<serde_bytes::ByteBuf, 80_000, { claims(80_000) }>(&expected),
            Ok(big)
        );
        let small = (7u32, String::from("hi"));
        assert_eq!(encode(&small), [WIRE_VERSION, 7, 2, b'h', b'i']);
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // A Vec<u8> claiming u64::MAX elements.
        let mut evil = vec![WIRE_VERSION, 253];
        evil.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            decode::<Vec<u8>, 1024, { claims(1024) }>(&evil),
            Err(DecodeError::Truncated)
        );
        // The same prefix on a string or byte buffer trips the limit before any allocation.
        assert_eq!(
            decode::<String, 1024, { claims(1024) }>(&evil),
            Err(DecodeError::LimitExceeded {
                limit: claims(1024)
            })
        );
        assert_eq!(
            decode::<serde_bytes::ByteBuf, 1024, { claims(1024) }>(&evil),
            Err(DecodeError::LimitExceeded {
                limit: claims(1024)
            })
        );
    }

    #[test]
    fn a_message_within_the_wire_limit_is_never_refused_for_what_it_claims() {
        // Every element is one wire byte that bincode counts as the 8 bytes of a u64, and
        // every empty string is a one-byte length counted as a u64 too: the most a message
        // can claim per byte it is.
        let zeros = vec![0u64; 200];
        let wire = encode(&zeros);
        assert_eq!(wire.len(), 202, "version, length, a byte per element");
        assert_eq!(decode::<Vec<u64>, 202, { claims(202) }>(&wire), Ok(zeros));
        let empty = vec![String::new(); 200];
        let wire = encode(&empty);
        assert_eq!(
            decode::<Vec<String>, 202, { claims(202) }>(&wire),
            Ok(empty)
        );
        assert_eq!(
            decode::<Vec<String>, 201, { claims(201) }>(&wire),
            Err(DecodeError::TooLarge {
                len: 202,
                limit: 201
            }),
            "the wire bytes decide, before decoding"
        );
    }
}
