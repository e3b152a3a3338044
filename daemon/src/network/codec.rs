//! Request-response codec for Agora's own protocols (`/agora/sync/1`, `/agora/fetch/1`).
//!
//! On the stream each message is a 4-byte big-endian length and then a [`Wire`] encoding.
//! The length is checked against the message type's limit before a byte of the body is
//! read or allocated, so an oversized or lying peer costs four bytes of reading. A chunk's
//! data is neither copied into an encoding to be sent nor out of the buffer it is read into
//! ([`Wire::to_wire_parts`], [`Wire::from_wire_owned`]).

use std::io;
use std::marker::PhantomData;

use agora_protocol::codec::Wire;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// A length-prefixed codec for one request type and one response type.
pub struct WireCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Default for WireCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Clone for WireCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

async fn read_message<T: Wire, R: AsyncRead + Unpin + Send>(io: &mut R) -> io::Result<T> {
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > T::MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "message of {len} bytes exceeds the {}-byte limit",
                T::MAX_BYTES
            ),
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    T::from_wire_owned(body.into()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_message<T: Wire, W: AsyncWrite + Unpin + Send>(
    io: &mut W,
    value: &T,
) -> io::Result<()> {
    let (head, payload) = value.to_wire_parts();
    let len = head.len() + payload.len();
    if len > T::MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to send {len} bytes; the limit is {}",
                T::MAX_BYTES
            ),
        ));
    }
    io.write_all(&[&(len as u32).to_be_bytes()[..], &head].concat())
        .await?;
    io.write_all(&payload).await?;
    io.close().await
}

impl<Req, Resp> libp2p::request_response::Codec for WireCodec<Req, Resp>
where
    Req: Wire + Send + Sync + 'static,
    Resp: Wire + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::messages::{FetchRequest, FetchResponse};
    use futures::io::Cursor;

    #[test]
    fn oversized_length_prefix_is_refused_before_reading() {
        futures::executor::block_on(async {
            let mut io = Cursor::new(u32::MAX.to_be_bytes().to_vec());
            let err = read_message::<FetchResponse, _>(&mut io).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("exceeds"), "{err}");
        });
    }

    #[test]
    fn round_trips_through_a_stream() {
        futures::executor::block_on(async {
            let req = FetchRequest {
                content: agora_protocol::ContentId::of(b"x"),
                chunk_size: agora_protocol::limits::MIN_CHUNK_SIZE,
                index: 3,
            };
            let mut buf = Cursor::new(Vec::new());
            write_message(&mut buf, &req).await.unwrap();
            let mut rd = Cursor::new(buf.into_inner());
            assert_eq!(read_message::<FetchRequest, _>(&mut rd).await.unwrap(), req);
        });
    }

    #[test]
    fn a_chunk_goes_out_in_two_parts_as_one_message() {
        futures::executor::block_on(async {
            let data: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
            let chunk = FetchResponse::Chunk(data.clone().into());
            let mut buf = Cursor::new(Vec::new());
            write_message(&mut buf, &chunk).await.unwrap();
            let sent = buf.into_inner();
            let encoding = chunk.to_wire();
            assert_eq!(&sent[..4], &(encoding.len() as u32).to_be_bytes());
            assert_eq!(&sent[4..], &encoding[..]);
            let mut rd = Cursor::new(sent);
            assert_eq!(
                read_message::<FetchResponse, _>(&mut rd).await.unwrap(),
                FetchResponse::Chunk(data.into())
            );
        });
    }
}
