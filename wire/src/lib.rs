//! The framed serial protocol between a board running `infer` (the `app` firmware) and the host
//! (`cargo xtask classify`): no `std`, no heap, the same code on both ends.
//!
//! A frame is `MAGIC (2 bytes) | kind (1) | length (2, little-endian) | payload (length) |
//! CRC-32 (4, little-endian, of kind, length and payload)`. The host sends [`CLASSIFY`] frames
//! (784 pixel bytes, as stored in the IDX files); the board answers each with a [`RESULT`]
//! (the CRC-32 of the frame it answers, the class, then the 10 logits as little-endian f32
//! bits) or an [`ERROR`] (one [`Fault`] byte). The echoed CRC lets the host tell the answer to
//! the image it sent from a late or repeated one. Every frame is read whole by its length before it is judged, so a bad frame never
//! leaves the stream misaligned; a frame that stops arriving is ended by [`Decoder::timeout`].
#![cfg_attr(not(test), no_std)]

use infer::crc32::{self, crc32};

/// The two bytes that open every frame.
pub const MAGIC: [u8; 2] = [0xF5, 0x4D];
/// Magic, kind and length.
pub const HEADER: usize = 5;
/// The CRC-32 after the payload.
pub const TRAILER: usize = 4;
/// Host to board: classify the image in the payload.
pub const CLASSIFY: u8 = 0x01;
/// Board to host: the CRC-32 of the frame answered (4 bytes, little-endian), then a
/// [`RECORD_LEN`] record: the class (1 byte) and the logits (10 × f32, little-endian).
pub const RESULT: u8 = 0x81;
/// Board to host: one [`Fault`] byte.
pub const ERROR: u8 = 0xE1;
/// One image's result: the class and the logits (also the measuring firmware's record).
pub const RECORD_LEN: usize = 1 + 4 * infer::NUM_CLASSES;
/// A [`RESULT`] payload's length.
pub const RESULT_LEN: usize = 4 + RECORD_LEN;
/// The longest frame the board builds: a [`RESULT`].
pub const MAX_REPLY: usize = HEADER + RESULT_LEN + TRAILER;

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// The CRC-32 does not match the frame.
    BadChecksum = 1,
    /// A [`CLASSIFY`] payload that is not 784 bytes.
    WrongSize = 2,
    /// The frame stopped arriving before its end.
    Truncated = 3,
    /// A kind the receiver does not know.
    UnknownKind = 4,
    /// A payload longer than the receiver's buffer (read and dropped).
    TooLong = 5,
    /// The board's model does not decode (its flash is damaged).
    BadModel = 6,
}

impl Fault {
    /// The fault a reply's byte names.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::BadChecksum,
            2 => Self::WrongSize,
            3 => Self::Truncated,
            4 => Self::UnknownKind,
            5 => Self::TooLong,
            6 => Self::BadModel,
            _ => return None,
        })
    }

    /// What went wrong, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::BadChecksum => "the frame's checksum does not match (corrupted on the line)",
            Self::WrongSize => "the image is not 28x28 = 784 bytes",
            Self::Truncated => "the frame stopped before its end",
            Self::UnknownKind => "the frame's kind is not one this end knows",
            Self::TooLong => "the frame is longer than the receiver's buffer",
            Self::BadModel => "the board's model does not decode (its flash is damaged)",
        }
    }
}

/// Writes a frame of `kind` around `payload` into `out`; returns its length.
///
/// # Panics
/// When `out` is shorter than `HEADER + payload.len() + TRAILER` or the payload is over 65,535
/// bytes: a caller's mistake, not the line's.
pub fn encode(kind: u8, payload: &[u8], out: &mut [u8]) -> usize {
    let length = u16::try_from(payload.len()).expect("a payload of at most 65,535 bytes");
    let end = HEADER + payload.len();
    out[..2].copy_from_slice(&MAGIC);
    out[2] = kind;
    out[3..5].copy_from_slice(&length.to_le_bytes());
    out[HEADER..end].copy_from_slice(payload);
    let crc = crc32(&out[2..end]);
    out[end..end + TRAILER].copy_from_slice(&crc.to_le_bytes());
    end + TRAILER
}

/// A frame that arrived whole and checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the frame asks or answers.
    pub kind: u8,
    /// Its payload.
    pub payload: &'a [u8],
    /// Its CRC-32 (what [`encode`] put in its trailer), which a [`RESULT`] echoes.
    pub crc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the magic: `matched` of its bytes seen.
    Hunting { matched: usize },
    /// Reading kind and length: `got` of their 3 bytes.
    Header { got: usize },
    /// Reading the payload, then the CRC: `got` bytes of `length + TRAILER`.
    Body { got: usize },
}

/// Reads frames one byte at a time, with a buffer of `N` payload bytes.
#[derive(Debug, Clone)]
pub struct Decoder<const N: usize> {
    state: State,
    header: [u8; 3],
    length: usize,
    crc: [u8; TRAILER],
    /// CRC-32 state over kind, length and every payload byte (kept when they are dropped).
    running: u32,
    payload: [u8; N],
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    /// A decoder looking for a frame.
    pub const fn new() -> Self {
        Self {
            state: State::Hunting { matched: 0 },
            header: [0; 3],
            length: 0,
            crc: [0; TRAILER],
            running: 0,
            payload: [0; N],
        }
    }

    /// The line went quiet: a frame that had begun is [`Fault::Truncated`].
    pub fn timeout(&mut self) -> Option<Fault> {
        let begun = matches!(self.state, State::Header { .. } | State::Body { .. });
        self.state = State::Hunting { matched: 0 };
        begun.then_some(Fault::Truncated)
    }

    /// Takes one byte; answers when it ends a frame: the frame, or why it is refused.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame<'_>, Fault>> {
        match self.state {
            State::Hunting { matched } => {
                self.state = if byte == MAGIC[matched] {
                    if matched + 1 == MAGIC.len() {
                        State::Header { got: 0 }
                    } else {
                        State::Hunting {
                            matched: matched + 1,
                        }
                    }
                } else {
                    State::Hunting {
                        matched: usize::from(byte == MAGIC[0]),
                    }
                };
                None
            }
            State::Header { got } => {
                self.header[got] = byte;
                if got + 1 < self.header.len() {
                    self.state = State::Header { got: got + 1 };
                } else {
                    self.length = usize::from(u16::from_le_bytes([self.header[1], self.header[2]]));
                    self.running = crc32::update(crc32::START, &self.header);
                    self.state = State::Body { got: 0 };
                }
                None
            }
            State::Body { got } => {
                if got < self.length {
                    if got < N {
                        self.payload[got] = byte;
                    }
                    self.running = crc32::update(self.running, &[byte]);
                } else {
                    self.crc[got - self.length] = byte;
                }
                if got + 1 < self.length + TRAILER {
                    self.state = State::Body { got: got + 1 };
                    return None;
                }
                self.state = State::Hunting { matched: 0 };
                Some(self.judge())
            }
        }
    }

    fn judge(&self) -> Result<Frame<'_>, Fault> {
        if !self.running != u32::from_le_bytes(self.crc) {
            return Err(Fault::BadChecksum);
        }
        if self.length > N {
            return Err(Fault::TooLong);
        }
        Ok(Frame {
            kind: self.header[0],
            payload: &self.payload[..self.length],
            crc: u32::from_le_bytes(self.crc),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0; HEADER + payload.len() + TRAILER];
        let n = encode(kind, payload, &mut out);
        assert_eq!(n, out.len());
        out
    }

    /// Everything the decoder answers for `bytes`: frames as (kind, payload), or faults.
    fn decode<const N: usize>(bytes: &[u8]) -> Vec<Result<(u8, Vec<u8>), Fault>> {
        let mut decoder = Decoder::<N>::new();
        bytes
            .iter()
            .filter_map(|&b| {
                decoder
                    .push(b)
                    .map(|r| r.map(|f| (f.kind, f.payload.to_vec())))
            })
            .collect()
    }

    #[test]
    fn frames_come_back_whole_after_noise() {
        let image: Vec<u8> = (0..784).map(|i| (i % 251) as u8).collect();
        let mut line = vec![0x00, 0xF5, 0xF5, 0x13];
        line.extend(frame(CLASSIFY, &image));
        line.extend(frame(ERROR, &[3]));
        assert_eq!(
            decode::<784>(&line),
            vec![Ok((CLASSIFY, image)), Ok((ERROR, vec![3]))]
        );
    }

    #[test]
    fn a_flipped_bit_is_refused_and_the_stream_recovers() {
        let good = frame(CLASSIFY, &[7; 784]);
        for at in 0..good.len() {
            for bit in [0x01, 0x10, 0x80] {
                let mut decoder = Decoder::<784>::new();
                let mut answers = Vec::new();
                let mut line = good.clone();
                line[at] ^= bit;
                line.extend(&good);
                for &b in &line {
                    answers.extend(decoder.push(b).map(|r| r.map(|f| f.payload.len())));
                }
                if (3..5).contains(&at) {
                    // A corrupted length ends the frame elsewhere: it swallows (part of) the next
                    // one or ends early, and the line's timeout resynchronises.
                    answers.extend(decoder.timeout().map(Err));
                    for &b in &good {
                        answers.extend(decoder.push(b).map(|r| r.map(|f| f.payload.len())));
                    }
                    assert!(answers[0].is_err(), "flip {bit:#x} at {at}: {answers:?}");
                    assert_eq!(answers.last(), Some(&Ok(784)), "flip {bit:#x} at {at}");
                } else if at < 2 {
                    // A damaged magic: that frame is never seen, the next one is.
                    assert_eq!(answers, vec![Ok(784)], "flip {bit:#x} at {at}");
                } else {
                    let want = vec![Err(Fault::BadChecksum), Ok(784)];
                    assert_eq!(answers, want, "flip {bit:#x} at {at}");
                }
            }
        }
    }

    #[test]
    fn a_longer_payload_is_read_and_refused_as_too_long() {
        let mut line = frame(CLASSIFY, &[1; 900]);
        line.extend(frame(CLASSIFY, &[2; 784]));
        assert_eq!(
            decode::<784>(&line),
            vec![Err(Fault::TooLong), Ok((CLASSIFY, vec![2; 784]))]
        );
    }

    #[test]
    fn a_frame_cut_short_is_truncated_at_the_timeout_and_the_next_one_is_read() {
        let good = frame(CLASSIFY, &[9; 784]);
        let mut decoder = Decoder::<784>::new();
        for &b in &good[..300] {
            assert!(decoder.push(b).is_none());
        }
        assert_eq!(decoder.timeout(), Some(Fault::Truncated));
        assert_eq!(
            decoder.timeout(),
            None,
            "a quiet line between frames is no fault"
        );
        let answers: Vec<_> = good
            .iter()
            .filter_map(|&b| decoder.push(b).map(|r| r.map(|f| f.payload.len())))
            .collect();
        assert_eq!(answers, vec![Ok(784)]);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking_and_good_frames_after_them_still_arrive(
            noise in proptest::collection::vec(any::<u8>(), 0..2000),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut decoder = Decoder::<64>::new();
            for &b in &noise {
                let _ = decoder.push(b);
            }
            decoder.timeout();
            let good = frame(RESULT, &payload);
            let answers: Vec<_> = good
                .iter()
                .filter_map(|&b| decoder.push(b).map(|r| r.map(|f| f.payload.to_vec())))
                .collect();
            let expected = if payload.len() > 64 { Err(Fault::TooLong) } else { Ok(payload) };
            prop_assert_eq!(answers, vec![expected]);
        }
    }
}
