//! A minimal DER writer: just what the certificate builders need.
//!
//! Values are appended to one buffer; [`nested`] writes a constructed value and inserts its length
//! once the content is known, so building a certificate needs no intermediate allocations.

use crate::CaError;

/// Universal tags.
pub(crate) const BOOLEAN: u8 = 0x01;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const OID: u8 = 0x06;
pub(crate) const UTF8_STRING: u8 = 0x0c;
pub(crate) const UTC_TIME: u8 = 0x17;
pub(crate) const GENERALIZED_TIME: u8 = 0x18;
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;
/// `[0] EXPLICIT` (constructed, context-specific 0).
pub(crate) const EXPLICIT_0: u8 = 0xa0;
/// `[3] EXPLICIT` (constructed, context-specific 3).
pub(crate) const EXPLICIT_3: u8 = 0xa3;
/// `[0] IMPLICIT` primitive (AuthorityKeyIdentifier.keyIdentifier).
pub(crate) const IMPLICIT_0: u8 = 0x80;
/// GeneralName dNSName `[2] IMPLICIT IA5String`.
pub(crate) const GN_DNS: u8 = 0x82;
/// GeneralName uniformResourceIdentifier `[6] IMPLICIT IA5String`.
pub(crate) const GN_URI: u8 = 0x86;

/// Object identifier contents (without tag and length).
pub(crate) mod oid {
    /// id-ecPublicKey 1.2.840.10045.2.1
    pub(crate) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// prime256v1 1.2.840.10045.3.1.7
    pub(crate) const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// secp384r1 1.3.132.0.34
    pub(crate) const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// rsaEncryption 1.2.840.113549.1.1.1
    pub(crate) const RSA_ENCRYPTION: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// sha256WithRSAEncryption 1.2.840.113549.1.1.11
    pub(crate) const SHA256_WITH_RSA: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    /// sha384WithRSAEncryption 1.2.840.113549.1.1.12
    pub(crate) const SHA384_WITH_RSA: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    /// sha512WithRSAEncryption 1.2.840.113549.1.1.13
    pub(crate) const SHA512_WITH_RSA: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    /// ecdsa-with-SHA256 1.2.840.10045.4.3.2
    pub(crate) const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    /// ecdsa-with-SHA384 1.2.840.10045.4.3.3
    pub(crate) const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    /// id-Ed25519 1.3.101.112
    pub(crate) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    /// id-at-commonName 2.5.4.3
    pub(crate) const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    /// id-at-organizationName 2.5.4.10
    pub(crate) const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
    /// id-ce-subjectKeyIdentifier 2.5.29.14
    pub(crate) const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    /// id-ce-keyUsage 2.5.29.15
    pub(crate) const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    /// id-ce-subjectAltName 2.5.29.17
    pub(crate) const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    /// id-ce-basicConstraints 2.5.29.19
    pub(crate) const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    /// id-ce-authorityKeyIdentifier 2.5.29.35
    pub(crate) const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
    /// id-ce-extKeyUsage 2.5.29.37
    pub(crate) const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    /// id-kp-serverAuth 1.3.6.1.5.5.7.3.1
    pub(crate) const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
    /// id-kp-clientAuth 1.3.6.1.5.5.7.3.2
    pub(crate) const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
}

/// Complete AlgorithmIdentifier encodings of the signature algorithms we sign with.
pub(crate) mod alg {
    /// ecdsa-with-SHA256 (no parameters).
    pub(crate) const ECDSA_SHA256: &[u8] = &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    /// ecdsa-with-SHA384 (no parameters).
    pub(crate) const ECDSA_SHA384: &[u8] = &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
    ];
    /// sha256WithRSAEncryption (NULL parameters).
    pub(crate) const RSA_PKCS1_SHA256: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
    ];
    /// id-Ed25519 (no parameters).
    pub(crate) const ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
}

/// Appends a DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    let mut buf = [0u8; 9];
    let n = encode_len(len, &mut buf);
    out.extend_from_slice(&buf[..n]);
}

/// Encodes a DER length into `buf`, returning the number of bytes used.
fn encode_len(len: usize, buf: &mut [u8; 9]) -> usize {
    if len < 0x80 {
        buf[0] = len.to_be_bytes()[std::mem::size_of::<usize>() - 1];
        return 1;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let n = bytes.len() - skip;
    // n <= 8, so 0x80 | n fits and never collides with the short form.
    buf[0] = 0x80 | n.to_be_bytes()[std::mem::size_of::<usize>() - 1];
    buf[1..=n].copy_from_slice(&bytes[skip..]);
    n + 1
}

/// Appends a primitive TLV.
pub(crate) fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

/// Appends a constructed value whose content is written by `f`.
pub(crate) fn nested<R>(out: &mut Vec<u8>, tag: u8, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    out.push(tag);
    let start = out.len();
    let r = f(out);
    let len = out.len() - start;
    let mut buf = [0u8; 9];
    let n = encode_len(len, &mut buf);
    out.splice(start..start, buf[..n].iter().copied());
    r
}

/// Appends a BIT STRING with no unused bits.
pub(crate) fn bit_string(out: &mut Vec<u8>, bits: &[u8]) {
    out.push(BIT_STRING);
    push_len(out, bits.len() + 1);
    out.push(0);
    out.extend_from_slice(bits);
}

/// Appends a positive INTEGER given as big-endian magnitude (leading zero bytes are stripped and
/// a zero byte is prepended when the top bit is set, as DER requires).
pub(crate) fn unsigned_integer(out: &mut Vec<u8>, magnitude: &[u8]) {
    let skip = magnitude
        .iter()
        .take_while(|b| **b == 0)
        .count()
        .min(magnitude.len().saturating_sub(1));
    let m = &magnitude[skip..];
    let pad = m.first().is_some_and(|b| b & 0x80 != 0);
    out.push(INTEGER);
    push_len(out, m.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(m);
}

/// Appends one X.509 Extension.
pub(crate) fn extension(
    out: &mut Vec<u8>,
    oid_bytes: &[u8],
    critical: bool,
    value: impl FnOnce(&mut Vec<u8>),
) {
    nested(out, SEQUENCE, |out| {
        tlv(out, OID, oid_bytes);
        if critical {
            tlv(out, BOOLEAN, &[0xff]);
        }
        nested(out, OCTET_STRING, value);
    });
}

/// Appends a Name made of single-valued RDNs `(attribute OID, UTF8String value)`.
pub(crate) fn name(out: &mut Vec<u8>, rdns: &[(&[u8], &str)]) {
    nested(out, SEQUENCE, |out| {
        for (attr, value) in rdns {
            nested(out, SET, |out| {
                nested(out, SEQUENCE, |out| {
                    tlv(out, OID, attr);
                    tlv(out, UTF8_STRING, value.as_bytes());
                });
            });
        }
    });
}

/// Appends an X.509 Time: UTCTime for 1950..=2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5).
pub(crate) fn time(out: &mut Vec<u8>, unix_seconds: i64) -> Result<(), CaError> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .map_err(|_| CaError::InvalidTime(format!("{unix_seconds} is out of range")))?;
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return Err(CaError::InvalidTime(format!(
            "year {year} cannot be encoded in a certificate"
        )));
    }
    let mut buf = [0u8; 15];
    let mut i = 0;
    let mut put2 = |buf: &mut [u8; 15], v: u32| {
        let d = v.to_be_bytes()[3];
        buf[i] = b'0' + d / 10;
        buf[i + 1] = b'0' + d % 10;
        i += 2;
    };
    let year = year.unsigned_abs();
    let utc = (1950..2050).contains(&year);
    if !utc {
        put2(&mut buf, year / 100);
    }
    put2(&mut buf, year % 100);
    put2(&mut buf, u32::from(u8::from(t.month())));
    put2(&mut buf, u32::from(t.day()));
    put2(&mut buf, u32::from(t.hour()));
    put2(&mut buf, u32::from(t.minute()));
    put2(&mut buf, u32::from(t.second()));
    buf[i] = b'Z';
    i += 1;
    tlv(
        out,
        if utc { UTC_TIME } else { GENERALIZED_TIME },
        &buf[..i],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_short_and_long_forms() {
        let mut out = Vec::new();
        tlv(&mut out, OCTET_STRING, &[7; 3]);
        assert_eq!(out, [0x04, 0x03, 7, 7, 7]);
        let mut out = Vec::new();
        tlv(&mut out, OCTET_STRING, &[0; 200]);
        assert_eq!(&out[..3], &[0x04, 0x81, 200]);
        let mut out = Vec::new();
        nested(&mut out, SEQUENCE, |o| tlv(o, OCTET_STRING, &[0; 300]));
        assert_eq!(&out[..4], &[0x30, 0x82, 0x01, 0x30]);
        assert_eq!(&out[4..8], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(out.len(), 4 + 4 + 300);
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        let mut out = Vec::new();
        unsigned_integer(&mut out, &[0x00, 0x00, 0x7f]);
        assert_eq!(out, [0x02, 0x01, 0x7f]);
        let mut out = Vec::new();
        unsigned_integer(&mut out, &[0x80, 0x01]);
        assert_eq!(out, [0x02, 0x03, 0x00, 0x80, 0x01]);
        let mut out = Vec::new();
        unsigned_integer(&mut out, &[0x00]);
        assert_eq!(out, [0x02, 0x01, 0x00]);
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        let mut out = Vec::new();
        time(&mut out, 0).unwrap();
        assert_eq!(out, b"\x17\x0d700101000000Z");
        let mut out = Vec::new();
        // 2049-12-31T23:59:59Z
        time(&mut out, 2_524_607_999).unwrap();
        assert_eq!(out, b"\x17\x0d491231235959Z");
        let mut out = Vec::new();
        // 2050-01-01T00:00:00Z
        time(&mut out, 2_524_608_000).unwrap();
        assert_eq!(out, b"\x18\x0f20500101000000Z");
        assert!(time(&mut Vec::new(), i64::MAX).is_err());
    }
}
