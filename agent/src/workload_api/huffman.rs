//! HPACK Huffman decoding (RFC 7541 §5.2 and Appendix B), with the code's decoding tree built
//! once per process.
//!
//! `loona-hpack` builds its Huffman table (hash maps of 257 codes) again for every Huffman-coded
//! string it decodes (~18 µs in a debug build, most of the cost of decoding a header block), and
//! does not let a caller supply one. The `:authority` rewriter therefore decodes Huffman-coded
//! strings itself, before handing the block to `loona-hpack` (see
//! [`super::authority`]): same results, errors included, checked against `loona-hpack`'s
//! decoder for every input of up to two bytes.
//!
//! The code is canonical (codes of one length are consecutive, in symbol order, after all shorter
//! codes; RFC 7541 Appendix B lists it so), so the code lengths alone define it.

use std::sync::LazyLock;

/// Code length in bits of each symbol: the 256 octets, then EOS (RFC 7541 Appendix B).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];
/// The EOS symbol.
const EOS: u16 = 256;
/// Marks a tree child that is a symbol (the low bits), not a node.
const LEAF: u16 = 0x8000;
/// A child not set (no node points back to the root, node 0).
const NONE: u16 = 0;

/// The decoding tree: node `i` has children `[bit 0, bit 1]`, each a node index or
/// `LEAF | symbol`. The code is complete, so every child is set (256 nodes for 257 symbols).
static TREE: LazyLock<Vec<[u16; 2]>> = LazyLock::new(build_tree);

/// The canonical code of each symbol, `(code, length)`, in symbol order.
fn canonical_codes() -> Vec<(u32, u8)> {
    let mut order: Vec<u16> = (0..=EOS).collect();
    order.sort_by_key(|&s| (CODE_LENGTHS[usize::from(s)], s));
    let mut codes = vec![(0, 0); CODE_LENGTHS.len()];
    let (mut code, mut previous_len) = (0u32, 0u8);
    for symbol in order {
        let len = CODE_LENGTHS[usize::from(symbol)];
        code <<= len - previous_len;
        previous_len = len;
        codes[usize::from(symbol)] = (code, len);
        code += 1;
    }
    codes
}

fn build_tree() -> Vec<[u16; 2]> {
    let mut nodes = vec![[NONE; 2]];
    for (symbol, (code, len)) in (0u16..).zip(canonical_codes()) {
        let mut node = 0;
        for i in (1..len).rev() {
            let bit = usize::from(code >> i & 1 == 1);
            node = match nodes[node][bit] {
                NONE => {
                    nodes.push([NONE; 2]);
                    let next = nodes.len() - 1;
                    // At most 256 nodes: fits.
                    nodes[node][bit] = u16::try_from(next).unwrap_or(NONE);
                    next
                }
                next => usize::from(next),
            };
        }
        nodes[node][usize::from(code & 1 == 1)] = LEAF | symbol;
    }
    nodes
}

/// Why a Huffman-coded string does not decode (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HuffmanError {
    /// The EOS symbol inside the string.
    #[error("Huffman: EOS in string")]
    EosInString,
    /// More than 7 bits of padding.
    #[error("Huffman: padding longer than 7 bits")]
    PaddingTooLong,
    /// Padding that is not a prefix of EOS (all ones).
    #[error("Huffman: padding is not a prefix of EOS")]
    BadPadding,
}

/// Appends the decoding of the Huffman-coded string `src` to `out` (on error, `out` may hold
/// part of it).
pub(crate) fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let tree = &*TREE;
    let mut node = 0;
    // Bits read since the last symbol, and whether they are all ones.
    let mut pending = 0u8;
    let mut all_ones = true;
    for &byte in src {
        for shift in (0..8).rev() {
            let bit = byte >> shift & 1;
            pending += 1;
            all_ones &= bit == 1;
            let next = tree.get(node).map_or(NONE, |n| n[usize::from(bit)]);
            if next & LEAF != 0 {
                let symbol = u8::try_from(next & !LEAF).map_err(|_| HuffmanError::EosInString)?;
                out.push(symbol);
                (node, pending, all_ones) = (0, 0, true);
            } else if next == NONE {
                // Not reached: the code is complete (a 30-bit run of ones is EOS).
                return Err(HuffmanError::EosInString);
            } else {
                node = usize::from(next);
            }
        }
    }
    if pending > 7 {
        Err(HuffmanError::PaddingTooLong)
    } else if !all_ones {
        Err(HuffmanError::BadPadding)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use loona_hpack::huffman::{HuffmanDecoder, HuffmanDecoderError};

    use super::*;

    /// Huffman-codes `s` with the canonical codes (padding with ones).
    fn encode(s: &[u8]) -> Vec<u8> {
        let codes = canonical_codes();
        let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
        for &b in s {
            let (code, len) = codes[usize::from(b)];
            acc = acc << len | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push((acc << (8 - bits) | (0xff >> bits)) as u8);
        }
        out
    }

    fn ours(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    fn loona(decoder: &mut HuffmanDecoder, src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        decoder.decode(src).map_err(|e| match e {
            HuffmanDecoderError::EOSInString => HuffmanError::EosInString,
            HuffmanDecoderError::PaddingTooLarge => HuffmanError::PaddingTooLong,
            HuffmanDecoderError::InvalidPadding => HuffmanError::BadPadding,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn the_tree_is_complete() {
        assert_eq!(TREE.len(), 256);
        let leaves: Vec<u16> = TREE
            .iter()
            .flatten()
            .filter(|&&c| c & LEAF != 0)
            .map(|&c| c & !LEAF)
            .collect();
        assert_eq!(leaves.len(), 257);
        assert!(TREE.iter().flatten().all(|&c| c != NONE));
    }

    #[test]
    fn rfc_7541_examples_decode() {
        let cases: [(&[u8], &[u8]); 4] = [
            (
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
                b"www.example.com",
            ),
            (&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], b"no-cache"),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
                b"custom-key",
            ),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
                b"custom-value",
            ),
        ];
        for (coded, plain) in cases {
            assert_eq!(ours(coded).unwrap(), plain);
            assert_eq!(encode(plain), coded);
        }
        assert_eq!(ours(&[]).unwrap(), b"");
    }

    #[test]
    fn every_octet_decodes_as_loona_hpack_decodes_it() {
        let mut decoder = HuffmanDecoder::new();
        for b in 0..=255u8 {
            for s in [vec![b], vec![b, b'a', b], vec![0xff, b, 0]] {
                let coded = encode(&s);
                assert_eq!(ours(&coded).unwrap(), s, "{s:x?}");
                assert_eq!(loona(&mut decoder, &coded).unwrap(), s, "{s:x?}");
            }
        }
    }

    #[test]
    fn every_input_of_up_to_two_bytes_decodes_or_fails_as_with_loona_hpack() {
        let mut decoder = HuffmanDecoder::new();
        for i in 0..=0xffffu16 {
            let [a, b] = i.to_be_bytes();
            for src in [&[a][..], &[a, b][..]] {
                assert_eq!(ours(src), loona(&mut decoder, src), "{src:x?}");
            }
        }
        // Each error, once by name.
        assert_eq!(ours(&[0xff]), Err(HuffmanError::PaddingTooLong));
        assert_eq!(ours(&[0x00]), Err(HuffmanError::BadPadding));
        assert_eq!(ours(&[0xff; 4]), Err(HuffmanError::EosInString));
    }

    #[test]
    fn longer_inputs_decode_or_fail_as_with_loona_hpack() {
        let mut decoder = HuffmanDecoder::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let src: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert_eq!(ours(&src), loona(&mut decoder, &src), "{src:x?}");
            let coded = encode(&src);
            assert_eq!(ours(&coded).unwrap(), src);
        }
    }
}
