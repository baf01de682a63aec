//! HTTP/2 `:authority` repair for the Workload API socket.
//!
//! gRPC clients other than grpc-go (grpc-core, hence Python `grpcio`, and grpc-java, grpc-swift)
//! send the percent-encoded Unix socket path as `:authority` (`%2Frun%2Fsignet%2Fapi.sock`).
//! `h2`, under tonic, parses `:authority` with `http::uri::Authority`, which refuses `%` in a
//! host, and resets such a stream with `PROTOCOL_ERROR` (hyperium/h2 PR #487, not merged). The
//! Workload API has no use for the authority (a Unix socket has one server), so each accepted
//! connection is wrapped in [`Http2Rewrite`], which repairs the client-to-server byte stream
//! before `h2` reads it.
//!
//! **Two modes, chosen by the connection's first header block.** Until its END_HEADERS, the
//! first block is decoded and also kept exactly as received (frame headers, padding and all;
//! at most [`MAX_RAW_BLOCK`] bytes). If its `:authority` is one `h2` accepts, or it has none,
//! those original bytes are forwarded and the connection switches to **pass-through** for the
//! rest of its life: no more parsing, reads go straight into the server's buffer (what Rust and
//! Go clients, which send `localhost` or the like, get). The server's HPACK decoder has then
//! processed the very bytes the client's encoder produced, so its dynamic table equals the
//! client's and later blocks, which may refer to it, decode as the client meant. Otherwise the
//! connection stays in **rewrite** mode, described below, for its whole life. This relies on a
//! client keeping one authority per connection (every gRPC client derives it from the channel
//! target, once); should a pass-through connection later send an authority `h2` refuses, `h2`
//! resets that stream, exactly as it would without this layer, and nothing else is affected.
//! Malformed input in the first block is refused as in rewrite mode (below).
//!
//! Rewrite mode:
//!
//! - the 24-byte client preface passes through; a connection that does not start with it is
//!   passed through untouched for good (the server refuses it itself);
//! - every frame other than HEADERS/CONTINUATION passes through byte-exact (payloads are not
//!   copied when the caller's buffer can take them directly);
//! - a header block (HEADERS plus CONTINUATIONs up to END_HEADERS) is assembled (padding dropped,
//!   the PRIORITY fields kept), HPACK-decoded with a decoder that keeps the connection's dynamic
//!   table ([`loona_hpack`]; Huffman-coded strings are decoded beforehand by
//!   [`super::huffman`], whose table is built once per process), its `:authority` replaced by
//!   `localhost` **when `h2` would refuse it** (same parser, `http::uri::Authority`; a valid
//!   authority is kept), and re-encoded **without the dynamic table** (static-table references
//!   and literals "without indexing"; "never indexed" literals stay "never indexed"). The
//!   server's HPACK decoder therefore never holds an entry, so its state cannot diverge from
//!   ours; the client's dynamic-table size updates act on our decoder only (maximum 4096, h2's
//!   default `SETTINGS_HEADER_TABLE_SIZE`, which the server does not change) and are not
//!   forwarded. The block is re-emitted as HEADERS + CONTINUATION frames of at most 16384 bytes
//!   (`SETTINGS_MAX_FRAME_SIZE` default, which the server keeps), split at field boundaries;
//! - malformed input (a frame other than CONTINUATION inside a header block, CONTINUATION or
//!   PUSH_PROMISE outside one, HEADERS on stream 0, a HEADERS/CONTINUATION frame over 16384
//!   bytes, bad padding, bad HPACK, a size update after a field, a block over
//!   [`MAX_HEADER_BLOCK`] or a list over [`MAX_HEADER_LIST`]) stops the rewriting: the server is
//!   handed one CONTINUATION frame outside any header block, which `h2` answers with
//!   `GOAWAY(PROTOCOL_ERROR)` (what it answers to the malformed input itself), then end of
//!   stream. Nothing panics; every buffer is bounded.
//!
//! Bounds: an encoded header block is at most [`MAX_HEADER_BLOCK`] (128 KiB, above the ~96 KiB
//! that h2's CONTINUATION-flood limit lets through at the server's 16 KiB header list size), and a
//! decoded list at most [`MAX_HEADER_LIST`] (64 KiB in the RFC 9113 measure, name + value + 32
//! per field: h2's own abuse limit, four times its 16 KiB `SETTINGS_MAX_HEADER_LIST_SIZE`, past
//! which h2 fails the connection too). Lists between 16 and 64 KiB pass and h2 refuses the
//! stream itself, as it would without this layer. Per connection in rewrite mode: an 8 KiB read
//! buffer, plus at most one header block in flight (the first one also kept as received); in
//! pass-through mode, none of these. The server-to-client direction is not touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::uri::Authority;

use super::huffman;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
const FRAME_HEADER_LEN: usize = 9;
/// The largest frame the server accepts (`SETTINGS_MAX_FRAME_SIZE`: h2's default, which neither
/// hyper nor tonic change unless told to, and the smallest value HTTP/2 allows).
pub(crate) const MAX_FRAME_SIZE: usize = 16_384;
/// The HPACK dynamic table size the client may use (h2's default `SETTINGS_HEADER_TABLE_SIZE`;
/// the server does not advertise another).
const HEADER_TABLE_SIZE: usize = 4_096;
/// The largest encoded header block (all fragments of one HEADERS + CONTINUATIONs) accepted.
pub(crate) const MAX_HEADER_BLOCK: usize = 8 * MAX_FRAME_SIZE;
/// The largest decoded header list accepted (RFC 9113 measure: name + value + 32 per field).
pub(crate) const MAX_HEADER_LIST: usize = 64 * 1024;
/// What replaces an `:authority` the server would refuse (what grpc-go sends on Unix sockets).
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";
/// Size of the read buffer.
const READ_CHUNK: usize = 8 * 1024;
/// Buffer capacity kept after a large header block has been handled.
const RETAINED_OUTPUT: usize = 2 * READ_CHUNK;
/// The largest first header block kept as received (frame headers, padding and all) while it is
/// checked: [`MAX_HEADER_BLOCK`] plus room for the frames' headers, padding and priority fields
/// (only a flood of empty CONTINUATION frames reaches it; h2 itself refuses more than 5).
const MAX_RAW_BLOCK: usize = MAX_HEADER_BLOCK + MAX_FRAME_SIZE;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Handed to the server when the client's input is malformed: a CONTINUATION that follows no
/// HEADERS (the rewriter only ever emits whole header blocks), a connection error
/// (`PROTOCOL_ERROR`) for any HTTP/2 server.
const POISON: [u8; FRAME_HEADER_LEN] = [0, 0, 0, CONTINUATION, END_HEADERS, 0, 0, 0, 1];

/// Why the client's HTTP/2 input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Malformed {
    /// A frame of this type where HTTP/2 does not allow it.
    #[error("unexpected frame of type {kind:#x}")]
    UnexpectedFrame {
        /// The frame type.
        kind: u8,
    },
    /// HEADERS on stream 0.
    #[error("HEADERS on stream 0")]
    StreamZero,
    /// A CONTINUATION for another stream than its HEADERS.
    #[error("CONTINUATION on another stream than its HEADERS")]
    ContinuationStream,
    /// A HEADERS or CONTINUATION frame larger than the server's maximum frame size.
    #[error("header frame of {len} bytes exceeds the maximum frame size")]
    FrameTooLarge {
        /// The frame's payload length.
        len: usize,
    },
    /// Pad length or PRIORITY fields do not fit in the frame.
    #[error("HEADERS padding or priority fields exceed the frame")]
    BadPadding,
    /// The encoded header block is larger than [`MAX_HEADER_BLOCK`].
    #[error("header block exceeds {MAX_HEADER_BLOCK} bytes")]
    BlockTooLarge,
    /// The decoded header list is larger than [`MAX_HEADER_LIST`].
    #[error("header list exceeds {MAX_HEADER_LIST} bytes")]
    ListTooLarge,
    /// A dynamic table size update after a header field.
    #[error("HPACK dynamic table size update after a header field")]
    SizeUpdatePlacement,
    /// The HPACK block does not decode.
    #[error("HPACK: {0}")]
    Hpack(String),
}

/// Where the rewriter is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of the preface have been seen.
    Preface(usize),
    /// Reading a frame header (`head_len` bytes of it so far).
    Head,
    /// Passing this many payload bytes through.
    Pass(usize),
    /// Collecting the payload of a HEADERS frame (into `payload`).
    Headers {
        remaining: usize,
        flags: u8,
        stream: u32,
    },
    /// Collecting the payload of a CONTINUATION frame (into `block`).
    Continuation { remaining: usize, end_headers: bool },
    /// Everything passes through, for the rest of the connection: not HTTP/2 (no preface), or
    /// the first header block needed no repair (pass-through mode).
    Verbatim,
    /// Malformed input: the poison was emitted, the rest is discarded.
    Failed,
}

/// A header block whose HEADERS frame was seen, waiting for END_HEADERS.
#[derive(Debug, Clone, Copy)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// The client-to-server stream rewriter (no I/O): bytes in, bytes for the server out.
pub(crate) struct Rewriter {
    state: State,
    decoder: Decoder<'static>,
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    /// Payload of the HEADERS frame being collected.
    payload: Vec<u8>,
    /// The header block being assembled.
    block: Vec<u8>,
    /// The block with its Huffman-coded strings decoded (what `decoder` reads).
    plain: Vec<u8>,
    open: Option<OpenBlock>,
    /// Per field of the block being rewritten: whether it was "never indexed".
    never_indexed: Vec<bool>,
    /// The re-encoded block, and the offset after each field in it.
    encoded: Vec<u8>,
    boundaries: Vec<usize>,
    /// How many `:authority` values were replaced.
    replaced: u64,
    /// Until the first header block has been checked: its frames exactly as received, to be
    /// forwarded unchanged if its `:authority` needs no repair. `None` afterwards.
    first_block: Option<Vec<u8>>,
}

impl Rewriter {
    /// A rewriter for a new connection.
    pub(crate) fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            state: State::Preface(0),
            decoder,
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            payload: Vec::new(),
            block: Vec::new(),
            plain: Vec::new(),
            open: None,
            never_indexed: Vec::new(),
            encoded: Vec::new(),
            boundaries: Vec::new(),
            replaced: 0,
            first_block: Some(Vec::new()),
        }
    }

    /// Whether the connection is in pass-through mode (nothing is parsed any more).
    pub(crate) fn is_pass_through(&self) -> bool {
        self.state == State::Verbatim
    }

    /// Whether the input was malformed (the poison has been emitted; the server sees nothing
    /// more).
    pub(crate) fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// How many `:authority` values this connection had replaced.
    #[cfg(test)]
    pub(crate) fn replaced(&self) -> u64 {
        self.replaced
    }

    /// How many of the next input bytes pass through unchanged, so may be read straight into
    /// the server's buffer (and then accounted with [`Self::advance_direct`]).
    pub(crate) fn direct_budget(&self) -> usize {
        match self.state {
            State::Pass(n) => n,
            State::Verbatim => usize::MAX,
            _ => 0,
        }
    }

    /// Accounts for `n` bytes (at most [`Self::direct_budget`]) passed through directly.
    pub(crate) fn advance_direct(&mut self, n: usize) {
        if let State::Pass(remaining) = self.state {
            let left = remaining.saturating_sub(n);
            self.state = if left == 0 {
                State::Head
            } else {
                State::Pass(left)
            };
        }
    }

    /// Consumes all of `input` (client bytes), appending what the server must read to `out`.
    pub(crate) fn process(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.state {
                State::Preface(seen) => {
                    let want = &PREFACE[seen..];
                    let matched = want.iter().zip(input).take_while(|(a, b)| a == b).count();
                    out.extend_from_slice(&input[..matched]);
                    input = &input[matched..];
                    self.state = if matched == want.len() {
                        State::Head
                    } else if input.is_empty() {
                        State::Preface(seen + matched)
                    } else {
                        State::Verbatim
                    };
                }
                State::Verbatim => {
                    out.extend_from_slice(input);
                    input = &[];
                }
                State::Failed => input = &[],
                State::Pass(remaining) => {
                    let n = remaining.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.advance_direct(n);
                }
                State::Head => {
                    let n = (FRAME_HEADER_LEN - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == FRAME_HEADER_LEN {
                        self.head_len = 0;
                        let result = self.on_frame_header(out);
                        self.check(result, out);
                    }
                }
                State::Headers {
                    remaining,
                    flags,
                    stream,
                } => {
                    let n = remaining.min(input.len());
                    self.payload.extend_from_slice(&input[..n]);
                    if let Some(raw) = &mut self.first_block {
                        raw.extend_from_slice(&input[..n]);
                    }
                    input = &input[n..];
                    if n == remaining {
                        let result = self.on_headers_payload(flags, stream, out);
                        self.check(result, out);
                    } else {
                        self.state = State::Headers {
                            remaining: remaining - n,
                            flags,
                            stream,
                        };
                    }
                }
                State::Continuation {
                    remaining,
                    end_headers,
                } => {
                    let n = remaining.min(input.len());
                    self.block.extend_from_slice(&input[..n]);
                    if let Some(raw) = &mut self.first_block {
                        raw.extend_from_slice(&input[..n]);
                    }
                    input = &input[n..];
                    if n == remaining {
                        let result = self.end_of_fragment(end_headers, out);
                        self.check(result, out);
                    } else {
                        self.state = State::Continuation {
                            remaining: remaining - n,
                            end_headers,
                        };
                    }
                }
            }
        }
    }

    /// On malformed input: emit the poison and stop.
    fn check(&mut self, result: Result<(), Malformed>, out: &mut Vec<u8>) {
        if let Err(error) = result {
            tracing::debug!(%error, "workload API: malformed HTTP/2 input, failing the connection");
            out.extend_from_slice(&POISON);
            self.state = State::Failed;
            self.open = None;
            self.payload = Vec::new();
            self.block = Vec::new();
            self.plain = Vec::new();
            self.encoded = Vec::new();
            self.boundaries = Vec::new();
            self.never_indexed = Vec::new();
            self.first_block = None;
        }
    }

    /// Keeps the header of a HEADERS or CONTINUATION frame with a `len`-byte payload while the
    /// first block is being checked.
    fn capture_frame_header(&mut self, len: usize) -> Result<(), Malformed> {
        if let Some(raw) = &mut self.first_block {
            if raw.len() + FRAME_HEADER_LEN + len > MAX_RAW_BLOCK {
                return Err(Malformed::BlockTooLarge);
            }
            raw.extend_from_slice(&self.head);
        }
        Ok(())
    }

    /// The first header block needed no repair: switch to pass-through for good, releasing
    /// everything the rewriting needed (the HPACK decoder's table included).
    fn pass_through(&mut self) {
        self.state = State::Verbatim;
        self.decoder = Decoder::new();
        self.payload = Vec::new();
        self.block = Vec::new();
        self.plain = Vec::new();
        self.encoded = Vec::new();
        self.boundaries = Vec::new();
        self.never_indexed = Vec::new();
    }

    fn on_frame_header(&mut self, out: &mut Vec<u8>) -> Result<(), Malformed> {
        let h = self.head;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if let Some(open) = self.open {
            if kind != CONTINUATION {
                return Err(Malformed::UnexpectedFrame { kind });
            }
            if stream != open.stream {
                return Err(Malformed::ContinuationStream);
            }
            if len > MAX_FRAME_SIZE {
                return Err(Malformed::FrameTooLarge { len });
            }
            if self.block.len() + len > MAX_HEADER_BLOCK {
                return Err(Malformed::BlockTooLarge);
            }
            self.capture_frame_header(len)?;
            let end_headers = flags & END_HEADERS != 0;
            if len == 0 {
                return self.end_of_fragment(end_headers, out);
            }
            self.state = State::Continuation {
                remaining: len,
                end_headers,
            };
            return Ok(());
        }
        match kind {
            HEADERS => {
                if stream == 0 {
                    return Err(Malformed::StreamZero);
                }
                if len > MAX_FRAME_SIZE {
                    return Err(Malformed::FrameTooLarge { len });
                }
                self.capture_frame_header(len)?;
                self.payload.clear();
                if len == 0 {
                    return self.on_headers_payload(flags, stream, out);
                }
                self.state = State::Headers {
                    remaining: len,
                    flags,
                    stream,
                };
            }
            CONTINUATION | PUSH_PROMISE => return Err(Malformed::UnexpectedFrame { kind }),
            _ => {
                out.extend_from_slice(&h);
                self.state = if len == 0 {
                    State::Head
                } else {
                    State::Pass(len)
                };
            }
        }
        Ok(())
    }

    /// A whole HEADERS payload: strip padding, keep priority, start the block.
    fn on_headers_payload(
        &mut self,
        flags: u8,
        stream: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Malformed> {
        let payload = std::mem::take(&mut self.payload);
        let mut body = payload.as_slice();
        let mut pad = 0;
        if flags & PADDED != 0 {
            let (&len, rest) = body.split_first().ok_or(Malformed::BadPadding)?;
            pad = usize::from(len);
            body = rest;
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            let (fields, rest) = body.split_first_chunk::<5>().ok_or(Malformed::BadPadding)?;
            priority = Some(*fields);
            body = rest;
        }
        let fragment = body
            .len()
            .checked_sub(pad)
            .and_then(|end| body.get(..end))
            .ok_or(Malformed::BadPadding)?;
        self.block.clear();
        self.block.extend_from_slice(fragment);
        self.payload = payload;
        self.payload.clear();
        self.open = Some(OpenBlock {
            stream,
            end_stream: flags & END_STREAM != 0,
            priority,
        });
        self.end_of_fragment(flags & END_HEADERS != 0, out)
    }

    fn end_of_fragment(&mut self, end_headers: bool, out: &mut Vec<u8>) -> Result<(), Malformed> {
        self.state = State::Head;
        if end_headers {
            self.rewrite_block(out)?;
        }
        Ok(())
    }

    /// The whole block is in `block`: decode, fix, re-encode, emit.
    fn rewrite_block(&mut self, out: &mut Vec<u8>) -> Result<(), Malformed> {
        let Some(open) = self.open.take() else {
            return Err(Malformed::UnexpectedFrame { kind: CONTINUATION });
        };
        scan_representations(&self.block, &mut self.never_indexed, &mut self.plain)?;
        self.encoded.clear();
        self.boundaries.clear();
        let mut field = 0;
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut replaced = 0;
        let never_indexed = &self.never_indexed;
        let encoded = &mut self.encoded;
        let boundaries = &mut self.boundaries;
        self.decoder
            .decode_with_cb(&self.plain, |name, value| {
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if too_large || list_size > MAX_HEADER_LIST {
                    too_large = true;
                    return;
                }
                let never = never_indexed.get(field).copied().unwrap_or(true);
                field += 1;
                let value: &[u8] = if name.as_ref() == b":authority"
                    && Authority::try_from(value.as_ref()).is_err()
                {
                    replaced += 1;
                    REPLACEMENT_AUTHORITY
                } else {
                    &value
                };
                encode_field(encoded, &name, value, never);
                boundaries.push(encoded.len());
            })
            .map_err(|e| Malformed::Hpack(e.to_string()))?;
        if too_large {
            return Err(Malformed::ListTooLarge);
        }
        if field != self.never_indexed.len() {
            return Err(Malformed::Hpack(format!(
                "{field} fields decoded, {} scanned",
                self.never_indexed.len()
            )));
        }
        if replaced > 0 && self.replaced == 0 {
            tracing::debug!(
                "workload API: a client sent an :authority that h2 refuses; replaced by localhost"
            );
        }
        self.replaced += replaced;
        if let Some(raw) = self.first_block.take()
            && replaced == 0
        {
            // The server's HPACK decoder gets the very bytes the client's encoder produced, so
            // its dynamic table is the client's from here on, and the rest passes through.
            out.extend_from_slice(&raw);
            self.pass_through();
            return Ok(());
        }
        emit_frames(out, open, &self.encoded, &self.boundaries);
        self.block.clear();
        self.plain.clear();
        // Keep little memory per idle connection after an unusually large block.
        for buf in [&mut self.block, &mut self.plain, &mut self.encoded] {
            buf.shrink_to(RETAINED_OUTPUT);
        }
        self.boundaries.shrink_to(64);
        self.never_indexed.shrink_to(64);
        Ok(())
    }
}

/// Checks the representations of an HPACK block (RFC 7541 §6) and copies it to `plain` with
/// every Huffman-coded string decoded ([`huffman`]; `loona-hpack` would rebuild its Huffman
/// table for each): a raw literal of the same octets, so `plain` decodes to the same header list
/// with the same dynamic-table updates. Size updates are allowed only before the first field
/// (§4.2, as h2 requires), and whether each field is a "never indexed" literal is recorded
/// (§6.2.3: an intermediary must keep that representation).
fn scan_representations(
    block: &[u8],
    never_indexed: &mut Vec<bool>,
    plain: &mut Vec<u8>,
) -> Result<(), Malformed> {
    never_indexed.clear();
    plain.clear();
    let mut decoded = Vec::new();
    let mut rest = block;
    while let Some(&first) = rest.first() {
        if first & 0x80 != 0 {
            let (_, n) = decode_int(rest, 7)?;
            plain.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            never_indexed.push(false);
        } else if first & 0xe0 == 0x20 {
            if !never_indexed.is_empty() {
                return Err(Malformed::SizeUpdatePlacement);
            }
            let (_, n) = decode_int(rest, 5)?;
            plain.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        } else {
            let (prefix, never) = if first & 0x40 != 0 {
                (6, false)
            } else {
                (4, first & 0x10 != 0)
            };
            let (name_index, n) = decode_int(rest, prefix)?;
            plain.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if name_index == 0 {
                rest = copy_string(rest, plain, &mut decoded)?;
            }
            rest = copy_string(rest, plain, &mut decoded)?;
            never_indexed.push(never);
        }
    }
    Ok(())
}

/// Copies the HPACK string literal at the start of `buf` to `plain`, Huffman-decoded (through
/// `decoded`) when it is Huffman-coded; returns what follows it.
fn copy_string<'a>(
    buf: &'a [u8],
    plain: &mut Vec<u8>,
    decoded: &mut Vec<u8>,
) -> Result<&'a [u8], Malformed> {
    let (len, n) = decode_int(buf, 7)?;
    let end = n
        .checked_add(len)
        .filter(|&end| end <= buf.len())
        .ok_or_else(|| Malformed::Hpack("truncated string".into()))?;
    if buf.first().is_some_and(|&b| b & 0x80 != 0) {
        decoded.clear();
        huffman::decode(&buf[n..end], decoded).map_err(|e| Malformed::Hpack(e.to_string()))?;
        encode_string(plain, decoded);
    } else {
        plain.extend_from_slice(&buf[..end]);
    }
    Ok(&buf[end..])
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1): (value, bytes used). At most
/// four continuation bytes, as h2 and loona-hpack accept.
fn decode_int(buf: &[u8], prefix: u8) -> Result<(usize, usize), Malformed> {
    let truncated = || Malformed::Hpack("truncated integer".into());
    let mask = (1u8 << prefix) - 1;
    let first = buf.first().ok_or_else(truncated)? & mask;
    let mut value = usize::from(first);
    if first < mask {
        return Ok((value, 1));
    }
    for (i, &b) in buf.iter().skip(1).take(4).enumerate() {
        value += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 2));
        }
    }
    if buf.len() > 5 {
        Err(Malformed::Hpack("integer too long".into()))
    } else {
        Err(truncated())
    }
}

/// Skips an HPACK string literal.
#[cfg(test)]
fn skip_string(buf: &[u8]) -> Result<&[u8], Malformed> {
    let (len, n) = decode_int(buf, 7)?;
    n.checked_add(len)
        .and_then(|end| buf.get(end..))
        .ok_or_else(|| Malformed::Hpack("truncated string".into()))
}

/// Appends an HPACK integer: `flags` in the high bits of the first byte, `prefix` bits for the
/// value.
fn encode_int(out: &mut Vec<u8>, mut value: usize, prefix: u8, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | (value & 0xff) as u8);
        return;
    }
    out.push(flags | (max & 0xff) as u8);
    value -= max;
    while value >= 0x80 {
        out.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    out.push((value & 0x7f) as u8);
}

/// Appends a raw (not Huffman-coded) string literal.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// Appends one field without touching any dynamic table: the static index when name and value
/// match an entry, else a literal without indexing (or never indexed, when it was), naming a
/// static entry when the name has one.
fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    let mut name_index = None;
    for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
        if *n == name {
            if !never_indexed && *v == value {
                encode_int(out, i + 1, 7, 0x80);
                return;
            }
            name_index.get_or_insert(i + 1);
        }
    }
    let flags = if never_indexed { 0x10 } else { 0x00 };
    match name_index {
        Some(i) => encode_int(out, i, 4, flags),
        None => {
            out.push(flags);
            encode_string(out, name);
        }
    }
    encode_string(out, value);
}

/// Emits the re-encoded block as HEADERS + CONTINUATION frames of at most [`MAX_FRAME_SIZE`]
/// bytes, cut at field boundaries when a field fits in a frame (h2 then never has to carry a
/// partial field from one frame to the next).
fn emit_frames(out: &mut Vec<u8>, open: OpenBlock, encoded: &[u8], boundaries: &[usize]) {
    let mut start = 0;
    let mut first = true;
    loop {
        let priority = if first { open.priority } else { None };
        let budget = MAX_FRAME_SIZE - priority.map_or(0, |p| p.len());
        let limit = start + budget;
        let end = if encoded.len() <= limit {
            encoded.len()
        } else {
            let i = boundaries.partition_point(|&b| b <= limit);
            match i.checked_sub(1).map(|i| boundaries[i]) {
                Some(b) if b > start => b,
                _ => limit,
            }
        };
        let last = end == encoded.len();
        let (kind, mut flags) = if first {
            let mut flags = if open.end_stream { END_STREAM } else { 0 };
            if priority.is_some() {
                flags |= PRIORITY;
            }
            (HEADERS, flags)
        } else {
            (CONTINUATION, 0)
        };
        if last {
            flags |= END_HEADERS;
        }
        let len = end - start + priority.map_or(0, |p| p.len());
        out.extend_from_slice(&[
            (len >> 16 & 0xff) as u8,
            (len >> 8 & 0xff) as u8,
            (len & 0xff) as u8,
            kind,
            flags,
        ]);
        out.extend_from_slice(&open.stream.to_be_bytes());
        if let Some(p) = priority {
            out.extend_from_slice(&p);
        }
        out.extend_from_slice(&encoded[start..end]);
        if last {
            return;
        }
        start = end;
        first = false;
    }
}

/// The HPACK static table (RFC 7541 Appendix A); index = position + 1.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// A connection's stream with the client-to-server direction passed through a [`Rewriter`];
/// writes go to the inner stream unchanged.
pub(crate) struct Http2Rewrite<S> {
    io: S,
    rewriter: Rewriter,
    scratch: Box<[u8]>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> Http2Rewrite<S> {
    /// Wraps a freshly accepted stream (nothing read from it yet).
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            rewriter: Rewriter::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Http2Rewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                    if this.out.capacity() > RETAINED_OUTPUT {
                        this.out.shrink_to(RETAINED_OUTPUT);
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 || this.rewriter.is_failed() {
                // Failed: end of stream after the poison (the server has failed the connection).
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.direct_budget() >= buf.remaining() {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                this.rewriter
                    .advance_direct(buf.filled().len().saturating_sub(before));
                return Poll::Ready(Ok(()));
            }
            if this.scratch.is_empty() {
                this.scratch = vec![0; READ_CHUNK].into_boxed_slice();
            }
            let mut chunk = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut chunk))?;
            let n = chunk.filled().len();
            if n == 0 {
                // End of stream (a header block still being assembled is dropped: the client
                // closed before finishing it).
                return Poll::Ready(Ok(()));
            }
            this.rewriter.process(&this.scratch[..n], &mut this.out);
            if this.rewriter.is_pass_through() {
                // Reads go straight into the caller's buffer from now on.
                this.scratch = Box::default();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Http2Rewrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use loona_hpack::Encoder;

    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const WINDOW_UPDATE: u8 = 0x8;
    /// `%2Ftmp%2Fx.sock`, Huffman-coded (RFC 7541 Appendix B), as grpcio sends it.
    const HUFFMAN_SOCKET_PATH: [u8; 11] = [
        0x54, 0x58, 0x53, 0x4d, 0x6a, 0x8b, 0x0f, 0x95, 0xd0, 0x72, 0x75,
    ];
    /// `www.example.com`, Huffman-coded (RFC 7541 C.4.1).
    const HUFFMAN_EXAMPLE: [u8; 12] = [
        0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
    ];

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn settings() -> Vec<u8> {
        // SETTINGS_HEADER_TABLE_SIZE = 8192, SETTINGS_ENABLE_PUSH = 0
        frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x20, 0, 0, 2, 0, 0, 0, 0])
    }

    /// The preface and a SETTINGS frame, as every client starts.
    fn start() -> Vec<u8> {
        let mut v = PREFACE.to_vec();
        v.extend(settings());
        v
    }

    /// Runs `input` through a new rewriter, in one piece and byte by byte (the output must not
    /// depend on how the input is cut).
    fn run(input: &[u8]) -> (Rewriter, Vec<u8>) {
        let mut whole = Rewriter::new();
        let mut out = Vec::new();
        whole.process(input, &mut out);
        let mut bytewise = Rewriter::new();
        let mut out2 = Vec::new();
        for b in input {
            bytewise.process(std::slice::from_ref(b), &mut out2);
        }
        assert_eq!(out, out2, "output depends on input chunking");
        (whole, out)
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    /// Splits the output (after the preface) into frames.
    fn frames(out: &[u8]) -> Vec<Frame> {
        assert_eq!(&out[..24], PREFACE);
        let mut rest = &out[24..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            frames.push(Frame {
                kind: rest[3],
                flags: rest[4],
                stream: u32::from_be_bytes(rest[5..9].try_into().unwrap()),
                payload: rest[9..9 + len].to_vec(),
            });
            rest = &rest[9 + len..];
        }
        frames
    }

    /// What the server decodes from the output's header blocks, checking that they use no
    /// dynamic table (static indexes and literals without indexing only) and respect the frame
    /// size.
    fn server_view(frames: &[Frame]) -> Vec<(u32, u8, Fields)> {
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut open: Option<(u32, u8, Vec<u8>)> = None;
        for f in frames {
            assert!(f.payload.len() <= MAX_FRAME_SIZE, "frame over 16384 bytes");
            match f.kind {
                HEADERS => {
                    assert!(open.is_none());
                    assert_eq!(f.flags & PADDED, 0);
                    let skip = if f.flags & PRIORITY != 0 { 5 } else { 0 };
                    open = Some((f.stream, f.flags, f.payload[skip..].to_vec()));
                }
                CONTINUATION => {
                    let o = open.as_mut().unwrap();
                    assert_eq!(o.0, f.stream);
                    assert_eq!(f.flags & !END_HEADERS, 0);
                    o.2.extend_from_slice(&f.payload);
                }
                _ => assert!(open.is_none(), "frame inside a header block"),
            }
            if matches!(f.kind, HEADERS | CONTINUATION) && f.flags & END_HEADERS != 0 {
                let (stream, flags, block) = open.take().unwrap();
                assert_static_only(&block);
                blocks.push((stream, flags, decoder.decode(&block).unwrap()));
            }
        }
        assert!(open.is_none());
        blocks
    }

    fn assert_static_only(block: &[u8]) {
        let mut rest = block;
        while let Some(&b) = rest.first() {
            if b & 0x80 != 0 {
                let (i, n) = decode_int(rest, 7).unwrap();
                assert!((1..=61).contains(&i), "dynamic index {i}");
                rest = &rest[n..];
            } else {
                assert_eq!(b & 0xe0, 0, "indexing literal or size update: {b:#x}");
                let (i, n) = decode_int(rest, 4).unwrap();
                assert!(i <= 61);
                rest = &rest[n..];
                if i == 0 {
                    rest = skip_string(rest).unwrap();
                }
                rest = skip_string(rest).unwrap();
            }
        }
    }

    fn f(name: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        (name.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    /// A gRPC request's fields after `:authority`.
    fn request_fields() -> Fields {
        vec![
            f(":method", "POST"),
            f(":scheme", "http"),
            f(":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
            f("content-type", "application/grpc"),
            f("te", "trailers"),
            f("workload.spiffe.io", "true"),
        ]
    }

    fn encode(encoder: &mut Encoder<'_>, fields: &Fields) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
    }

    /// `:authority` as a literal with incremental indexing, Huffman-coded (what grpcio sends).
    fn indexed_huffman_authority(huffman: &[u8]) -> Vec<u8> {
        let mut v = vec![0x41, 0x80 | huffman.len() as u8];
        v.extend_from_slice(huffman);
        v
    }

    fn with_authority(authority: &str, rest: Fields) -> Fields {
        let mut v = vec![f(":authority", authority)];
        v.extend(rest);
        v
    }

    fn assert_poisoned(rw: &Rewriter, out: &[u8], before: &[u8]) {
        assert!(rw.is_failed());
        assert_eq!(&out[..out.len() - POISON.len()], before);
        assert_eq!(&out[out.len() - POISON.len()..], POISON);
    }

    #[test]
    fn preface_and_non_header_frames_pass_through_byte_exact() {
        let mut input = start();
        input.extend(frame(SETTINGS, 0x1, 0, &[]));
        input.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0x0f, 0, 0]));
        input.extend(frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]));
        input.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        input.extend(frame(0xfa, 0xff, 7, b"an extension frame"));
        input.extend(frame(DATA, 0, 3, &vec![0xab; 20_000]));
        let (rw, out) = run(&input);
        assert_eq!(out, input);
        assert!(!rw.is_failed());
        assert_eq!(rw.state, State::Head);
    }

    #[test]
    fn a_connection_without_the_preface_passes_through_untouched() {
        let input = b"PRI * HTTP/1.1\r\n\r\n\x00\x00\x00\x01\x00\x00\x00\x00\x00".to_vec();
        let (rw, out) = run(&input);
        assert_eq!(out, input);
        assert_eq!(rw.state, State::Verbatim);
        assert_eq!(rw.direct_budget(), usize::MAX);
    }

    #[test]
    fn headers_padding_is_dropped_and_priority_kept() {
        let mut block = indexed_huffman_authority(&HUFFMAN_SOCKET_PATH);
        block.extend(encode(&mut Encoder::new(), &request_fields()));
        let mut payload = vec![7]; // pad length
        payload.extend([0x80, 0, 0, 3, 15]); // exclusive dependency on 3, weight 16
        payload.extend(&block);
        payload.extend([0; 7]);
        let mut input = start();
        input.extend(frame(
            HEADERS,
            PADDED | PRIORITY | END_HEADERS | END_STREAM,
            5,
            &payload,
        ));
        let (rw, out) = run(&input);
        let frames = frames(&out);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload, settings()[9..]);
        let h = &frames[1];
        assert_eq!(
            (h.kind, h.flags, h.stream),
            (HEADERS, PRIORITY | END_HEADERS | END_STREAM, 5)
        );
        assert_eq!(h.payload[..5], [0x80, 0, 0, 3, 15]);
        let view = server_view(&frames);
        assert_eq!(view[0].2, with_authority("localhost", request_fields()));
        assert_eq!(rw.replaced(), 1);
    }

    #[test]
    fn continuation_frames_are_reassembled() {
        let mut block = indexed_huffman_authority(&HUFFMAN_SOCKET_PATH);
        block.extend(encode(&mut Encoder::new(), &request_fields()));
        let mut input = start();
        // Cut inside the Huffman string and inside `:path`.
        input.extend(frame(HEADERS, 0, 1, &block[..5]));
        input.extend(frame(CONTINUATION, 0, 1, &block[5..20]));
        input.extend(frame(CONTINUATION, 0, 1, &[]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[20..]));
        input.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        let (_, out) = run(&input);
        let frames = frames(&out);
        assert_eq!(
            frames.iter().map(|f| (f.kind, f.flags)).collect::<Vec<_>>(),
            [(SETTINGS, 0), (HEADERS, END_HEADERS), (DATA, END_STREAM)]
        );
        assert_eq!(frames[2].payload, [0, 0, 0, 0, 0]);
        let view = server_view(&frames);
        assert_eq!(view[0].2, with_authority("localhost", request_fields()));
    }

    #[test]
    fn dynamic_table_references_across_requests_are_resolved() {
        let mut encoder = Encoder::new();
        let mut input = start();
        // Request 1 inserts `:authority` (Huffman), `te` and `workload.spiffe.io` into the
        // client's dynamic table; request 2 refers to them (the authority as index 62 + 2).
        let mut block = indexed_huffman_authority(&HUFFMAN_SOCKET_PATH);
        block.extend(encode(&mut encoder, &request_fields()));
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let second = encode(&mut encoder, &request_fields());
        assert!(second.iter().any(|&b| b >= 0x80 | 62), "{second:x?}");
        let mut block = vec![0x80 | 64]; // :authority, now third in the dynamic table
        block.extend(second);
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block));
        let (rw, out) = run(&input);
        let view = server_view(&frames(&out));
        assert_eq!(view.len(), 2);
        for (i, stream) in [1, 3].into_iter().enumerate() {
            assert_eq!(view[i].0, stream);
            assert_eq!(view[i].2, with_authority("localhost", request_fields()));
        }
        assert_eq!(view[1].1, END_HEADERS | END_STREAM);
        assert_eq!(rw.replaced(), 2);
    }

    /// Splits `block` into HEADERS (padded, with priority) + an empty CONTINUATION + a
    /// CONTINUATION, on `stream`.
    fn padded_split_block(block: &[u8], stream: u32) -> Vec<u8> {
        let mut payload = vec![3]; // pad length
        payload.extend([0, 0, 0, 1, 7]); // dependency on 1, weight 8
        payload.extend(&block[..5]);
        payload.extend([0; 3]);
        let mut v = frame(HEADERS, PADDED | PRIORITY, stream, &payload);
        v.extend(frame(CONTINUATION, 0, stream, &[]));
        v.extend(frame(CONTINUATION, END_HEADERS, stream, &block[5..]));
        v
    }

    #[test]
    fn a_valid_first_authority_switches_the_connection_to_byte_exact_pass_through() {
        let mut encoder = Encoder::new();
        let mut input = start();
        // Request 1: a valid authority (Huffman-coded, indexed), `te` and `workload.spiffe.io`
        // indexed too; padded, with priority, cut into three frames.
        let mut first = indexed_huffman_authority(&HUFFMAN_EXAMPLE);
        first.extend(encode(&mut encoder, &request_fields()));
        input.extend(padded_split_block(&first, 1));
        input.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        // Request 2 refers to all three dynamic-table entries (the authority as 62 + 2).
        let mut second = vec![0x80 | 64];
        second.extend(encode(&mut encoder, &request_fields()));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        // Nothing is parsed any more: an authority the rewriter would replace, and a frame it
        // would refuse, pass as they are (h2 answers them itself).
        let third = encode(
            &mut Encoder::new(),
            &with_authority("%2Ftmp%2Fx.sock", request_fields()),
        );
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &third));
        input.extend(frame(CONTINUATION, END_HEADERS, 7, &[0x80]));
        input.extend(frame(DATA, 0, 9, &vec![0xcd; 20_000]));
        let (rw, out) = run(&input);
        assert_eq!(out, input);
        assert!(rw.is_pass_through() && !rw.is_failed());
        assert_eq!(rw.replaced(), 0);
        assert_eq!(rw.direct_budget(), usize::MAX);
        assert!(rw.first_block.is_none());
        assert!(rw.payload.capacity() == 0 && rw.block.capacity() == 0);
        // The server decodes the client's own bytes, so its dynamic table is the client's.
        let mut server = Decoder::new();
        let expected = with_authority("www.example.com", request_fields());
        assert_eq!(server.decode(&first).unwrap(), expected);
        assert_eq!(server.decode(&second).unwrap(), expected);
    }

    /// A tonic 0.14 client's first request block over a Unix socket (h2 Huffman-codes every
    /// string): `:authority` `localhost`, `:path`, `te`, `content-type`, `user-agent`,
    /// `workload.spiffe.io`.
    const TONIC_FIRST_BLOCK: [u8; 91] = [
        0x83, 0x86, 0x41, 0x86, 0xa0, 0xe4, 0x1d, 0x13, 0x9d, 0x09, 0x04, 0x99, 0x63, 0x75, 0x66,
        0x96, 0x52, 0xf2, 0x3d, 0x9d, 0x68, 0x38, 0xe4, 0x87, 0x5e, 0x46, 0x30, 0x95, 0x24, 0x9f,
        0xf1, 0xb0, 0x3f, 0xbb, 0x8e, 0x4b, 0xff, 0x40, 0x8d, 0xf0, 0x7b, 0x3a, 0xd0, 0x71, 0xc8,
        0xba, 0x2b, 0x34, 0xb2, 0x95, 0x73, 0x1f, 0x83, 0x4d, 0x96, 0x97, 0x40, 0x82, 0x49, 0x7f,
        0x86, 0x4d, 0x83, 0x35, 0x05, 0xb1, 0x1f, 0x5f, 0x8b, 0x1d, 0x75, 0xd0, 0x62, 0x0d, 0x26,
        0x3d, 0x4c, 0x4d, 0x65, 0x64, 0x7a, 0x89, 0x49, 0xea, 0x31, 0x18, 0x02, 0xe1, 0x69, 0x77,
        0xff,
    ];

    #[test]
    fn huffman_coded_strings_are_decoded_before_loona_hpack_reads_the_block() {
        let mut never_indexed = Vec::new();
        let mut plain = Vec::new();
        scan_representations(&TONIC_FIRST_BLOCK, &mut never_indexed, &mut plain).unwrap();
        let fields = Decoder::new().decode(&TONIC_FIRST_BLOCK).unwrap();
        assert_eq!(Decoder::new().decode(&plain).unwrap(), fields);
        assert_eq!(never_indexed.len(), fields.len());
        assert_eq!(fields[2], f(":authority", "localhost"));
        assert!(fields.contains(&f(":path", "/SpiffeWorkloadAPI/FetchX509SVID")));
        assert!(fields.contains(&f("workload.spiffe.io", "true")));
        // Same dynamic table afterwards: the entries plain inserted resolve alike.
        let (mut a, mut b) = (Decoder::new(), Decoder::new());
        a.decode(&TONIC_FIRST_BLOCK).unwrap();
        b.decode(&plain).unwrap();
        let refs: Vec<u8> = (62..66).map(|i| 0x80 | i).collect();
        assert_eq!(a.decode(&refs).unwrap(), b.decode(&refs).unwrap());
        // And the rewriter passes this client through.
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS, 1, &TONIC_FIRST_BLOCK));
        let (rw, out) = run(&input);
        assert_eq!(out, input);
        assert!(rw.is_pass_through());
    }

    #[test]
    fn a_first_block_without_authority_switches_to_pass_through() {
        let mut input = start();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &encode(&mut Encoder::new(), &request_fields()),
        ));
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0x80 | 62]));
        let (rw, out) = run(&input);
        assert_eq!(out, input);
        assert!(rw.is_pass_through());
    }

    #[test]
    fn a_repaired_first_block_keeps_the_connection_in_rewrite_mode() {
        let mut input = start();
        let mut block = indexed_huffman_authority(&HUFFMAN_SOCKET_PATH);
        block.extend(encode(&mut Encoder::new(), &request_fields()));
        input.extend(padded_split_block(&block, 1));
        // Valid authorities later on are kept (re-encoded), Huffman-coded or not.
        let mut block = indexed_huffman_authority(&HUFFMAN_EXAMPLE);
        block.extend(encode(&mut Encoder::new(), &request_fields()));
        input.extend(frame(HEADERS, END_HEADERS, 3, &block));
        let fields = with_authority("localhost:8080", request_fields());
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            5,
            &encode(&mut Encoder::new(), &fields),
        ));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            7,
            &encode(
                &mut Encoder::new(),
                &with_authority("%2Ftmp%2Fy.sock", request_fields()),
            ),
        ));
        let (rw, out) = run(&input);
        assert!(!rw.is_pass_through());
        let frames = frames(&out);
        // The first block was re-emitted (padding dropped, priority kept, one frame).
        assert_eq!(
            (frames[1].kind, frames[1].flags, &frames[1].payload[..5]),
            (HEADERS, PRIORITY | END_HEADERS, &[0, 0, 0, 1, 7][..])
        );
        let view = server_view(&frames);
        assert_eq!(view.len(), 4);
        assert_eq!(view[0].2, with_authority("localhost", request_fields()));
        assert_eq!(
            view[1].2,
            with_authority("www.example.com", request_fields())
        );
        assert_eq!(view[2].2, fields);
        assert_eq!(view[3].2, with_authority("localhost", request_fields()));
        assert_eq!(rw.replaced(), 2);
    }

    #[test]
    fn never_indexed_fields_stay_never_indexed() {
        // authorization (static name 23), never indexed, literal value.
        let mut block = encode(
            &mut Encoder::new(),
            &with_authority("%2Frun%2Fapi.sock", request_fields()),
        );
        block.extend([0x1f, 0x08, 6]);
        block.extend(b"secret");
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let (_, out) = run(&input);
        let frames = frames(&out);
        let view = server_view(&frames);
        let mut expected = with_authority("localhost", request_fields());
        expected.push(f("authorization", "secret"));
        assert_eq!(view[0].2, expected);
        assert!(
            frames[1]
                .payload
                .ends_with(&[0x1f, 0x08, 6, b's', b'e', b'c', b'r', b'e', b't'])
        );
    }

    #[test]
    fn a_header_block_over_16_kib_is_resplit_at_field_boundaries() {
        let mut fields = with_authority("%2Ftmp%2Fx.sock", request_fields());
        for i in 0..4 {
            fields.push(f(&format!("x-big-{i}"), &"v".repeat(7_000 + i)));
        }
        // One field larger than a frame: cut inside it.
        fields.push(f("x-huge", &"h".repeat(20_000)));
        let block = encode(&mut Encoder::new(), &fields);
        assert!(block.len() > 2 * MAX_FRAME_SIZE);
        let mut input = start();
        let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME_SIZE).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let (kind, mut flags) = if i == 0 {
                (HEADERS, PRIORITY | END_STREAM)
            } else {
                (CONTINUATION, 0)
            };
            if i + 1 == chunks.len() {
                flags |= END_HEADERS;
            }
            let mut payload = Vec::new();
            if i == 0 {
                payload.extend([0, 0, 0, 0, 200]);
                payload.extend(&chunk[..chunk.len() - 5]);
                input.extend(frame(kind, flags, 9, &payload));
                let rest = &chunk[chunk.len() - 5..];
                input.extend(frame(CONTINUATION, 0, 9, rest));
            } else {
                input.extend(frame(kind, flags, 9, chunk));
            }
        }
        let (_, out) = run(&input);
        let frames = frames(&out);
        let headers: Vec<&Frame> = frames.iter().skip(1).collect();
        assert!(headers.len() >= 3, "{}", headers.len());
        assert_eq!(headers[0].kind, HEADERS);
        assert_eq!(headers[0].flags, PRIORITY | END_STREAM);
        assert_eq!(headers[0].payload[..5], [0, 0, 0, 0, 200]);
        for (i, h) in headers.iter().enumerate().skip(1) {
            assert_eq!(h.kind, CONTINUATION);
            let last = i + 1 == headers.len();
            assert_eq!(h.flags, if last { END_HEADERS } else { 0 });
        }
        // Every frame but the ones carrying `x-huge` holds whole fields.
        let mut expected = fields.clone();
        expected[0] = f(":authority", "localhost");
        let mut decoder = Decoder::new();
        let first = decoder.decode(&headers[0].payload[5..]).unwrap();
        assert!(first.len() >= 8, "{}", first.len());
        assert!(first == expected[..first.len()]);
        let view = server_view(&frames);
        assert!(view[0].2 == expected);
    }

    #[test]
    fn dynamic_table_size_updates_act_on_the_decoder_only() {
        let mut input = start();
        let mut block = vec![0x3f, 0xe1, 0x1f]; // size update to 4096 (the maximum)
        block.extend(indexed_huffman_authority(&HUFFMAN_SOCKET_PATH));
        block.extend(encode(&mut Encoder::new(), &request_fields()));
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        // Size update to 0: the table is emptied (and stays so).
        let mut block = vec![0x20];
        block.extend(encode(
            &mut Encoder::new(),
            &with_authority("%2Ftmp%2Fx.sock", request_fields()),
        ));
        input.extend(frame(HEADERS, END_HEADERS, 3, &block));
        let prefix_len = input.len();
        let (rw, out) = run(&input);
        assert!(!rw.is_failed());
        let view = server_view(&frames(&out));
        assert_eq!(view.len(), 2);
        for (_, _, fields) in &view {
            assert_eq!(*fields, with_authority("localhost", request_fields()));
        }
        // The entry request 1 inserted is gone: referring to it is malformed.
        let mut more = input.clone();
        more.extend(frame(HEADERS, END_HEADERS, 5, &[0x80 | 62]));
        let (rw, out2) = run(&more);
        assert_poisoned(&rw, &out2, &out);
        assert_eq!(prefix_len, input.len());
    }

    /// Each malformed input, after a valid start: the output is the valid part, the poison,
    /// and nothing after it.
    #[test]
    fn malformed_input_fails_the_connection_with_a_poison_frame() {
        let request = encode(
            &mut Encoder::new(),
            &with_authority("%2Ftmp%2Fx.sock", request_fields()),
        );
        let big_ref = {
            // A 4000-byte entry (after an authority that keeps the connection in rewrite mode),
            // then a block referring to it 16384 times: 64 MB decoded.
            let mut first = vec![0x01, 15];
            first.extend(b"%2Ftmp%2Fx.sock");
            first.extend([0x40, 5]);
            first.extend(b"x-big");
            encode_int(&mut first, 4000, 7, 0);
            first.extend(vec![b'b'; 4000]);
            let mut input = frame(HEADERS, END_HEADERS, 1, &first);
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                3,
                &vec![0x80 | 62; MAX_FRAME_SIZE],
            ));
            input
        };
        let too_long_block = {
            let mut input = frame(HEADERS, 0, 1, &vec![0; MAX_FRAME_SIZE]);
            for _ in 0..8 {
                input.extend(frame(CONTINUATION, 0, 1, &vec![0; MAX_FRAME_SIZE]));
            }
            input
        };
        let continuation_flood = {
            // The first block is kept as received while checked: bounded even when its frames
            // carry nothing.
            let mut input = frame(HEADERS, 0, 1, &request[..4]);
            for _ in 0..MAX_RAW_BLOCK / FRAME_HEADER_LEN {
                input.extend(frame(CONTINUATION, 0, 1, &[]));
            }
            input
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "CONTINUATION without HEADERS",
                frame(CONTINUATION, END_HEADERS, 1, &request),
            ),
            (
                "PUSH_PROMISE",
                frame(PUSH_PROMISE, END_HEADERS, 1, &request),
            ),
            (
                "HEADERS on stream 0",
                frame(HEADERS, END_HEADERS, 0, &request),
            ),
            ("DATA inside a header block", {
                let mut v = frame(HEADERS, 0, 1, &request[..4]);
                v.extend(frame(DATA, 0, 1, &[0; 5]));
                v
            }),
            ("CONTINUATION on another stream", {
                let mut v = frame(HEADERS, 0, 1, &request[..4]);
                v.extend(frame(CONTINUATION, END_HEADERS, 3, &request[4..]));
                v
            }),
            (
                "HEADERS over the frame size",
                frame(HEADERS, END_HEADERS, 1, &vec![0x82; MAX_FRAME_SIZE + 1]),
            ),
            ("padding longer than the frame", {
                let mut p = vec![200];
                p.extend(&request);
                frame(HEADERS, END_HEADERS | PADDED, 1, &p)
            }),
            (
                "padded without a pad length",
                frame(HEADERS, PADDED | END_HEADERS, 1, &[]),
            ),
            (
                "PRIORITY fields cut short",
                frame(HEADERS, PRIORITY | END_HEADERS, 1, &[0, 0, 1]),
            ),
            ("HPACK index 0", frame(HEADERS, END_HEADERS, 1, &[0x80])),
            (
                "HPACK index past the tables",
                frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]),
            ),
            (
                "HPACK truncated string",
                frame(HEADERS, END_HEADERS, 1, &request[..request.len() - 1]),
            ),
            (
                "HPACK integer too long",
                frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                ),
            ),
            (
                "Huffman padding not EOS",
                frame(HEADERS, END_HEADERS, 1, &[0x01, 0x81, 0x00]),
            ),
            (
                "size update over 4096",
                frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82]),
            ),
            ("size update after a field", {
                let mut b = request.clone();
                b.push(0x20);
                b.push(0x82);
                frame(HEADERS, END_HEADERS, 1, &b)
            }),
            ("header block over 128 KiB", too_long_block),
            ("header list over 64 KiB", big_ref),
            (
                "empty CONTINUATION flood in the first block",
                continuation_flood,
            ),
        ];
        for (name, case) in cases {
            let mut input = start();
            input.extend(&case);
            // Refused by the case itself, not by what follows.
            assert!(run(&input).0.is_failed(), "{name}: not refused");
            input.extend(frame(DATA, 0, 1, b"ignored"));
            let (rw, out) = run(&input);
            assert!(rw.is_failed(), "{name}: not refused");
            let valid = &out[..out.len() - POISON.len()];
            assert!(valid.starts_with(&start()), "{name}");
            assert_eq!(&out[out.len() - POISON.len()..], POISON, "{name}");
            // The valid part is whole frames (the first HEADERS of `big_ref` was rewritten).
            let frames = frames(valid);
            server_view(&frames);
            assert!(rw.payload.is_empty() && rw.block.capacity() == 0, "{name}");
            assert!(rw.first_block.is_none(), "{name}");
        }
    }

    #[test]
    fn integers_round_trip() {
        for prefix in 1..=7 {
            for value in [0, 1, 30, 31, 126, 127, 128, 255, 4096, 16_383, 1 << 20] {
                let mut out = Vec::new();
                encode_int(&mut out, value, prefix, 0);
                assert_eq!(decode_int(&out, prefix).unwrap(), (value, out.len()));
            }
        }
        assert!(decode_int(&[0x1f], 5).is_err());
        assert!(decode_int(&[], 5).is_err());
    }

    /// Reads everything from a rewriting stream with reads of `size` bytes.
    async fn read_through(input: Vec<u8>, size: usize) -> Vec<u8> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut client, server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            client.write_all(&input).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let mut conn = Http2Rewrite::new(server);
        let mut got = Vec::new();
        let mut buf = vec![0; size];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        got
    }

    #[tokio::test]
    async fn the_stream_wrapper_gives_the_rewriters_output_whatever_the_read_size() {
        let mut input = start();
        let request = encode(
            &mut Encoder::new(),
            &with_authority("%2Ftmp%2Fx.sock", request_fields()),
        );
        input.extend(frame(HEADERS, END_HEADERS, 1, &request));
        input.extend(frame(DATA, 0, 1, &vec![7; 40_000]));
        input.extend(frame(HEADERS, END_HEADERS, 3, &request));
        input.extend(frame(DATA, END_STREAM, 3, &[9; 3]));
        let (_, expected) = run(&input);
        for size in [1, 7, 100, 8 * 1024, 64 * 1024] {
            assert_eq!(read_through(input.clone(), size).await, expected, "{size}");
        }
        // After malformed input: the valid part, the poison, then end of stream.
        let mut bad = input.clone();
        bad.extend(frame(CONTINUATION, END_HEADERS, 5, &request));
        bad.extend(frame(DATA, 0, 5, &[1; 100]));
        let (_, expected) = run(&bad);
        assert!(expected.ends_with(&POISON));
        assert_eq!(read_through(bad, 8 * 1024).await, expected);
    }

    #[tokio::test]
    async fn the_stream_wrapper_passes_a_valid_connection_through_byte_exact() {
        let mut encoder = Encoder::new();
        let mut input = start();
        let mut block = indexed_huffman_authority(&HUFFMAN_EXAMPLE);
        block.extend(encode(&mut encoder, &request_fields()));
        input.extend(padded_split_block(&block, 1));
        // The switch happens inside a read chunk: what follows the block in it passes too.
        input.extend(frame(DATA, 0, 1, &vec![7; 40_000]));
        let mut second = vec![0x80 | 64];
        second.extend(encode(&mut encoder, &request_fields()));
        input.extend(frame(HEADERS, END_HEADERS, 3, &second));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, &[0x80]));
        input.extend(frame(DATA, END_STREAM, 3, &[9; 3]));
        for size in [1, 7, 100, 8 * 1024, 64 * 1024] {
            assert_eq!(read_through(input.clone(), size).await, input, "{size}");
        }
    }
}
