//! Frames on a distribution connection: a 4-byte big-endian length, then
//! that many bytes.
//!
//! The length is checked against a cap before anything is buffered for it:
//! a peer that announces a huge frame is dropped at once, it never makes us
//! allocate. Before the handshake the cap is tiny ([`HANDSHAKE_MAX_FRAME`]),
//! since nobody is authenticated yet; after it, it is [`MAX_FRAME`].
//!
//! [`FrameDecoder`] does no I/O, so it can be fed arbitrary bytes in tests;
//! [`FrameReader`] reads from a socket through it.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame an authenticated peer may send: a storage batch is at most
/// 16 MiB, and a Raft message carries a few of them or one snapshot chunk.
pub const MAX_FRAME: usize = 40 * 1024 * 1024;
/// Largest frame before the handshake is done.
pub const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

const LENGTH_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the peer announced a frame of {length} bytes; the limit is {limit}{hint}")]
    TooLarge {
        length: usize,
        limit: usize,
        hint: &'static str,
    },
    #[error("the peer closed the connection in the middle of a frame")]
    Truncated,
    #[error("read failed: {0}")]
    Io(String),
}

/// Splits a byte stream into frames, refusing any longer than its cap.
pub struct FrameDecoder {
    buffer: BytesMut,
    limit: usize,
}

impl FrameDecoder {
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            limit,
        }
    }

    /// Raises the cap once the peer is authenticated.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Adds bytes read from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let mut header = [0u8; LENGTH_BYTES];
        header.copy_from_slice(&self.buffer[..LENGTH_BYTES]);
        let length = u32::from_be_bytes(header) as usize;
        if length > self.limit {
            // A TLS record where a frame should be: the peer speaks TLS and
            // we do not (a 0x16 0x03 "handshake, TLS 1.x" header).
            let hint = if header[0] == 0x16 && header[1] == 0x03 {
                " (the peer is speaking TLS: start this node with --tls-cert too)"
            } else {
                ""
            };
            return Err(FrameError::TooLarge {
                length,
                limit: self.limit,
                hint,
            });
        }
        if self.buffer.len() < LENGTH_BYTES + length {
            return Ok(None);
        }
        self.buffer.advance(LENGTH_BYTES);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }
}

/// Reads frames from one side of a connection.
pub struct FrameReader<R> {
    reader: R,
    decoder: FrameDecoder,
    chunk: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, limit: usize) -> Self {
        Self {
            reader,
            decoder: FrameDecoder::new(limit),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.decoder.set_limit(limit);
    }

    /// The next frame; `None` when the peer closed cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let read = self
                .reader
                .read(&mut self.chunk)
                .await
                .map_err(|e| FrameError::Io(e.to_string()))?;
            if read == 0 {
                return if self.decoder.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            self.decoder.extend(&self.chunk[..read]);
        }
    }
}

/// Appends one frame holding `parts` (concatenated) to `out`.
pub fn encode_into(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let length: usize = parts.iter().map(|part| part.len()).sum();
    // Callers never build frames past MAX_FRAME (< 4 GiB).
    out.extend_from_slice(&(length as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// One frame holding `payload`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LENGTH_BYTES + payload.len());
    encode_into(&mut out, &[payload]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_come_back_whole_however_the_bytes_are_split() {
        let mut stream = encode(b"hello");
        stream.extend(encode(b""));
        stream.extend(encode(&[7u8; 300]));
        let mut decoder = FrameDecoder::new(1024);
        let mut frames = Vec::new();
        for byte in stream {
            decoder.extend(&[byte]);
            while let Some(frame) = decoder.next_frame().expect("valid") {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"hello");
        assert!(frames[1].is_empty());
        assert_eq!(frames[2].len(), 300);
    }

    #[test]
    fn an_oversized_length_is_refused_before_anything_is_buffered() {
        let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME);
        decoder.extend(&u32::MAX.to_be_bytes());
        let error = decoder.next_frame().expect_err("too large");
        assert!(matches!(error, FrameError::TooLarge { .. }));
        // A TLS client hello gets a hint.
        let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME);
        decoder.extend(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        let error = decoder.next_frame().expect_err("too large").to_string();
        assert!(error.contains("speaking TLS"), "{error}");
    }

    #[tokio::test]
    async fn a_peer_closing_mid_frame_is_an_error_and_between_frames_is_not() {
        let mut bytes = encode(b"one");
        let mut reader = FrameReader::new(&bytes[..], 1024);
        assert_eq!(reader.next().await, Ok(Some(Bytes::from_static(b"one"))));
        assert_eq!(reader.next().await, Ok(None));
        bytes.truncate(bytes.len() - 1);
        let mut reader = FrameReader::new(&bytes[..], 1024);
        assert_eq!(reader.next().await, Err(FrameError::Truncated));
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and it never holds more
        /// than what it was given: a frame it returns is within the cap.
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
            limit in 0usize..512,
        ) {
            let mut decoder = FrameDecoder::new(limit);
            let mut given = 0usize;
            'outer: for chunk in &chunks {
                given += chunk.len();
                decoder.extend(chunk);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => prop_assert!(frame.len() <= limit),
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
                prop_assert!(decoder.buffered() <= given);
            }
        }

        /// Whatever is framed comes back unchanged.
        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10)) {
            let mut stream = Vec::new();
            for payload in &payloads {
                encode_into(&mut stream, &[payload]);
            }
            let mut decoder = FrameDecoder::new(300);
            decoder.extend(&stream);
            for payload in &payloads {
                let frame = decoder.next_frame().expect("valid").expect("whole");
                prop_assert_eq!(&frame[..], &payload[..]);
            }
            prop_assert_eq!(decoder.next_frame().expect("valid"), None);
        }
    }
}
