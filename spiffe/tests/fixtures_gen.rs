//! The checked-in generator of the test fixtures in `spiffe/testdata/`.
//!
//! The fixtures are committed; the normal tests only read them. To regenerate them (new keys, same
//! names and properties), run
//!
//! ```text
//! cargo nextest run -p signet-spiffe --test fixtures_gen --run-ignored only
//! ```
//!
//! Every certificate is valid from 2025-01-01; leaves until 2035-01-01 and CAs until 2045-01-01, so
//! the tests verify at a fixed time (2030-01-01) and never depend on the clock. No private key is
//! written: keys live only for the run.
//!
//! The JWK parameters in the bundle vectors are computed here from rcgen's raw public keys (and a
//! small DER reader for RSA), independently of the code under test, so that the vectors check the
//! encoder and not only the decoder against itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    SignatureAlgorithm, date_time_ymd,
};
use serde_json::{Value, json};

const TD: &str = "example.org";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn write(path: PathBuf, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
}

fn write_json(name: &str, value: &Value) {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    write(testdata().join("bundle").join(name), text.as_bytes());
}

struct Gen {
    serial: u64,
}

impl Gen {
    fn serial(&mut self) -> SerialNumber {
        self.serial += 1;
        // Positive, 8 bytes, distinct per certificate.
        SerialNumber::from(0x1000_0000_0000_0000 + self.serial)
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Signet test");
    dn.push(DnType::CommonName, cn);
    dn
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).unwrap()
}

fn p256() -> KeyPair {
    key(&rcgen::PKCS_ECDSA_P256_SHA256)
}

fn ca_params(g: &mut Gen, cn: &str, id: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.subject_alt_names = id.map(uri).into_iter().collect();
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2045, 1, 1);
    p.serial_number = Some(g.serial());
    p
}

fn leaf_params(g: &mut Gen, id: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn("workload");
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.subject_alt_names = vec![uri(id)];
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2035, 1, 1);
    p.serial_number = Some(g.serial());
    p.use_authority_key_identifier_extension = true;
    p
}

/// A DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_SAN: &[u64] = &[2, 5, 29, 17];

/// A non-critical key usage extension with the given KeyUsage BIT STRING content.
fn key_usage_ext(bit_string_content: &[u8], critical: bool) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(OID_KEY_USAGE, tlv(0x03, bit_string_content));
    ext.set_criticality(critical);
    ext
}

/// A SAN extension with one URI.
fn uri_san_ext(u: &str, critical: bool) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(OID_SAN, tlv(0x30, &tlv(0x86, u.as_bytes())));
    ext.set_criticality(critical);
    ext
}

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn self_signed_ca(params: CertificateParams, key: KeyPair) -> Ca {
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Ca { params, key, der }
}

fn sign(params: &CertificateParams, ca: &Ca) -> Vec<u8> {
    sign_with_key(params, &p256(), ca)
}

fn sign_with_key(params: &CertificateParams, key: &KeyPair, ca: &Ca) -> Vec<u8> {
    params.signed_by(key, &ca.issuer()).unwrap().der().to_vec()
}

fn svid(name: &str, der: &[u8]) {
    write(testdata().join("x509svid").join(name), der);
}

// ---------------------------------------------------------------------------------------------
// JWK parameters computed independently of the crate under test.

fn b64u(bytes: &[u8]) -> Value {
    Value::String(URL_SAFE_NO_PAD.encode(bytes))
}

/// Reads one DER TLV, returning (tag, content, rest).
fn read_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        l if l < 0x80 => (l as usize, 2),
        0x81 => (input[2] as usize, 3),
        0x82 => (((input[2] as usize) << 8) | input[3] as usize, 4),
        other => panic!("unexpected DER length byte {other:#x}"),
    };
    (tag, &input[header..header + len], &input[header + len..])
}

fn strip_zeros(mut b: &[u8]) -> &[u8] {
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    b
}

/// The JWK key parameters (`kty` and the rest) of a public key, from rcgen's raw key bytes.
fn jwk_params(key: &KeyPair) -> serde_json::Map<String, Value> {
    let raw = key.public_key_raw();
    let alg = key.algorithm();
    let mut m = serde_json::Map::new();
    let ec = |crv: &str, len: usize, m: &mut serde_json::Map<String, Value>| {
        assert_eq!(raw.len(), 1 + 2 * len);
        assert_eq!(raw[0], 4);
        m.insert("kty".into(), json!("EC"));
        m.insert("crv".into(), json!(crv));
        m.insert("x".into(), b64u(&raw[1..=len]));
        m.insert("y".into(), b64u(&raw[1 + len..]));
    };
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        ec("P-256", 32, &mut m);
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        ec("P-384", 48, &mut m);
    } else if alg == &rcgen::PKCS_ED25519 {
        m.insert("kty".into(), json!("OKP"));
        m.insert("crv".into(), json!("Ed25519"));
        m.insert("x".into(), b64u(raw));
    } else if alg == &rcgen::PKCS_RSA_SHA256 {
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
        let (tag, seq, _) = read_tlv(raw);
        assert_eq!(tag, 0x30);
        let (tag, n, rest) = read_tlv(seq);
        assert_eq!(tag, 0x02);
        let (tag, e, _) = read_tlv(rest);
        assert_eq!(tag, 0x02);
        m.insert("kty".into(), json!("RSA"));
        m.insert("n".into(), b64u(strip_zeros(n)));
        m.insert("e".into(), b64u(strip_zeros(e)));
    } else {
        panic!("unsupported algorithm");
    }
    m
}

fn x509_jwk(key: &KeyPair, der: &[u8]) -> Value {
    let mut m = jwk_params(key);
    m.insert("use".into(), json!("x509-svid"));
    m.insert("x5c".into(), json!([STANDARD.encode(der)]));
    Value::Object(m)
}

fn jwt_jwk(key: &KeyPair, kid: &str) -> Value {
    let mut m = jwk_params(key);
    m.insert("use".into(), json!("jwt-svid"));
    m.insert("kid".into(), json!(kid));
    Value::Object(m)
}

/// `base` with `f` applied to its key at `index`.
fn with_key(
    base: &Value,
    index: usize,
    f: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Value {
    let mut v = base.clone();
    f(v["keys"][index].as_object_mut().unwrap());
    v
}

#[test]
#[ignore = "writes spiffe/testdata; run on purpose to regenerate the committed fixtures"]
fn regenerate_fixtures() {
    let mut g = Gen { serial: 0 };
    let td_id = format!("spiffe://{TD}");
    let wl = format!("spiffe://{TD}/workload");

    // ----- signing certificates -----
    let root = self_signed_ca(
        ca_params(&mut g, "Signet test root CA", Some(&td_id)),
        p256(),
    );
    svid("ca-good.der", &root.der);

    let untrusted = self_signed_ca(
        ca_params(&mut g, "Signet untrusted CA", Some(&td_id)),
        p256(),
    );
    svid("ca-untrusted.der", &untrusted.der);

    let mut p = ca_params(&mut g, "Signet test intermediate CA", Some(&td_id));
    p.use_authority_key_identifier_extension = true;
    let inter_key = p256();
    let inter_der = sign_with_key(&p, &inter_key, &root);
    svid("intermediate-good.der", &inter_der);
    let intermediate = Ca {
        params: p,
        key: inter_key,
        der: inter_der,
    };

    let p = ca_params(&mut g, "CA without SPIFFE ID", None);
    svid("ca-good-no-spiffe-id.der", &self_signed_ca(p, p256()).der);

    let mut p = ca_params(&mut g, "CA with cA=false", Some(&td_id));
    p.is_ca = IsCa::ExplicitNoCa;
    svid("ca-not-ca.der", &self_signed_ca(p, p256()).der);

    let mut p = ca_params(&mut g, "CA without basic constraints", Some(&td_id));
    p.is_ca = IsCa::NoCa;
    svid(
        "ca-no-basic-constraints.der",
        &self_signed_ca(p, p256()).der,
    );

    let mut p = ca_params(&mut g, "CA without key usage", Some(&td_id));
    p.key_usages = vec![];
    svid("ca-no-key-usage.der", &self_signed_ca(p, p256()).der);

    let mut p = ca_params(&mut g, "CA with non-critical key usage", Some(&td_id));
    p.key_usages = vec![];
    // keyCertSign (bit 5) and cRLSign (bit 6): 0b0000_0110, one unused bit.
    p.custom_extensions = vec![key_usage_ext(&[0x01, 0x06], false)];
    svid(
        "ca-key-usage-not-critical.der",
        &self_signed_ca(p, p256()).der,
    );

    let mut p = ca_params(&mut g, "CA without keyCertSign", Some(&td_id));
    p.key_usages = vec![KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    svid("ca-no-keycertsign.der", &self_signed_ca(p, p256()).der);

    let p = ca_params(
        &mut g,
        "CA whose ID has a path",
        Some(&format!("{td_id}/ca")),
    );
    svid("ca-id-with-path.der", &self_signed_ca(p, p256()).der);

    // The example of the SPIFFE Trust Domain and Bundle standard, appendix A, uses this form.
    let p = ca_params(
        &mut g,
        "CA whose ID ends with a slash",
        Some(&format!("{td_id}/")),
    );
    svid("ca-id-trailing-slash.der", &self_signed_ca(p, p256()).der);

    let mut p = ca_params(&mut g, "CA with two URI SANs", Some(&td_id));
    p.subject_alt_names.push(uri("spiffe://other.org"));
    svid("ca-two-uri-sans.der", &self_signed_ca(p, p256()).der);

    let mut p = ca_params(&mut g, "", Some(&td_id));
    p.distinguished_name = DistinguishedName::new();
    svid("ca-empty-subject.der", &self_signed_ca(p, p256()).der);

    // ----- leaves: valid -----
    svid("leaf-good.der", &sign(&leaf_params(&mut g, &wl), &root));

    let p = leaf_params(&mut g, &format!("spiffe://{TD}/ns/prod/sa/api"));
    svid("leaf-good-via-intermediate.der", &sign(&p, &intermediate));

    let mut p = leaf_params(&mut g, &wl);
    p.extended_key_usages = vec![];
    svid("leaf-good-no-eku.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.is_ca = IsCa::NoCa;
    svid("leaf-good-no-basic-constraints.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.distinguished_name = DistinguishedName::new(); // rcgen then marks the SAN critical
    svid("leaf-good-empty-subject-critical-san.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.subject_alt_names
        .push(SanType::DnsName("workload.example.org".try_into().unwrap()));
    svid("leaf-good-with-dns-san.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    let rsa = key(&rcgen::PKCS_RSA_SHA256);
    svid(
        "leaf-good-rsa-key-encipherment.der",
        &sign_with_key(&p, &rsa, &root),
    );

    // ----- leaves: one broken rule each -----
    let mut p = leaf_params(&mut g, &wl);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    svid("leaf-ca-true.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.subject_alt_names = vec![SanType::DnsName("workload.example.org".try_into().unwrap())];
    svid("leaf-no-uri-san.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.subject_alt_names = vec![];
    svid("leaf-no-san-extension.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.subject_alt_names
        .push(uri(&format!("spiffe://{TD}/other")));
    svid("leaf-two-uri-sans.der", &sign(&p, &root));

    let p = leaf_params(&mut g, "https://example.org/workload");
    svid("leaf-non-spiffe-uri.der", &sign(&p, &root));

    let p = leaf_params(&mut g, "spiffe://EXAMPLE.org/workload");
    svid("leaf-uppercase-trust-domain.der", &sign(&p, &root));

    let p = leaf_params(&mut g, &td_id);
    svid("leaf-id-without-path.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.key_usages = vec![];
    svid("leaf-no-key-usage.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.key_usages = vec![];
    // digitalSignature (bit 0): 0b1000_0000, seven unused bits.
    p.custom_extensions = vec![key_usage_ext(&[0x07, 0x80], false)];
    svid("leaf-key-usage-not-critical.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    svid("leaf-no-digital-signature.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    svid("leaf-keycertsign.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    svid("leaf-crlsign.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    svid("leaf-eku-server-auth-only.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    svid("leaf-eku-client-auth-only.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![];
    p.custom_extensions = vec![uri_san_ext(&wl, false)];
    svid("leaf-empty-subject-san-not-critical.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.custom_extensions = vec![uri_san_ext(&wl, false)];
    svid("leaf-duplicate-san-extension.der", &sign(&p, &root));

    let mut p = leaf_params(&mut g, &wl);
    p.is_ca = IsCa::NoCa;
    // basicConstraints whose value is a NULL instead of a SEQUENCE: must not read as "absent".
    let mut bc = CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x05, 0x00]);
    bc.set_criticality(true);
    p.custom_extensions = vec![bc];
    svid("leaf-malformed-basic-constraints.der", &sign(&p, &root));

    // ----- leaves for chain verification -----
    let p = leaf_params(&mut g, "spiffe://other.org/workload");
    svid("leaf-other-trust-domain.der", &sign(&p, &root));

    svid(
        "leaf-untrusted.der",
        &sign(&leaf_params(&mut g, &wl), &untrusted),
    );

    let mut bad_sig = sign(&leaf_params(&mut g, &wl), &root);
    // The last byte is inside the signature's `s` INTEGER: the DER stays valid, the signature not.
    *bad_sig.last_mut().unwrap() ^= 0x01;
    svid("leaf-bad-signature.der", &bad_sig);

    // ----- bundle vectors -----
    let root_key_jwk = x509_jwk(&root.key, &root.der);

    let p384 = self_signed_ca(
        ca_params(&mut g, "P-384 root CA", Some(&td_id)),
        key(&rcgen::PKCS_ECDSA_P384_SHA384),
    );
    let rsa_ca = self_signed_ca(
        ca_params(&mut g, "RSA root CA", Some(&td_id)),
        key(&rcgen::PKCS_RSA_SHA256),
    );
    let ed_ca = self_signed_ca(
        ca_params(&mut g, "Ed25519 root CA", Some(&td_id)),
        key(&rcgen::PKCS_ED25519),
    );
    write(testdata().join("bundle/ca-ec-p384.der"), &p384.der);
    write(testdata().join("bundle/ca-rsa-2048.der"), &rsa_ca.der);
    write(testdata().join("bundle/ca-ed25519.der"), &ed_ca.der);

    write_json(
        "good-x509-ec-p256.json",
        &json!({"keys": [root_key_jwk], "spiffe_sequence": 1, "spiffe_refresh_hint": 300}),
    );
    write_json(
        "good-x509-all-key-types.json",
        &json!({
            "keys": [
                root_key_jwk,
                x509_jwk(&p384.key, &p384.der),
                x509_jwk(&rsa_ca.key, &rsa_ca.der),
                x509_jwk(&ed_ca.key, &ed_ca.der),
            ],
            "spiffe_sequence": 2,
            "spiffe_refresh_hint": 3600,
        }),
    );
    let jwt_ec = p256();
    let jwt_rsa = key(&rcgen::PKCS_RSA_SHA256);
    let jwt_ed = key(&rcgen::PKCS_ED25519);
    let jwt_p384 = key(&rcgen::PKCS_ECDSA_P384_SHA384);
    let jwt_all = json!({
        "keys": [
            jwt_jwk(&jwt_ec, "jwt-ec-p256"),
            jwt_jwk(&jwt_p384, "jwt-ec-p384"),
            jwt_jwk(&jwt_rsa, "jwt-rsa-2048"),
            jwt_jwk(&jwt_ed, "jwt-ed25519"),
        ],
        "spiffe_sequence": 3,
    });
    write_json("good-jwt-all-key-types.json", &jwt_all);
    write_json(
        "good-mixed-with-ignored-elements.json",
        &json!({
            "keys": [
                root_key_jwk,
                {"kty": "EC", "use": "future-svid", "crv": "P-256", "kid": "future-use"},
                jwt_jwk(&jwt_ec, "jwt-ec-p256"),
                {"kty": "ML-DSA-65", "use": "x509-svid", "pub": "AAAA"},
                {"kty": "AKP", "use": "jwt-svid", "kid": "future-kty"},
            ],
            "spiffe_sequence": 4,
            "spiffe_refresh_hint": 60,
            "signet_extension": {"ignored": true},
        }),
    );
    write_json(
        "good-empty-keys.json",
        &json!({"keys": [], "spiffe_sequence": 9, "spiffe_refresh_hint": 60}),
    );
    write_json(
        "good-no-sequence-no-hint.json",
        &json!({"keys": [root_key_jwk]}),
    );
    write_json(
        "good-x509-rsa-n-leading-zero.json",
        &with_key(
            &json!({"keys": [x509_jwk(&rsa_ca.key, &rsa_ca.der)]}),
            0,
            |k| {
                let mut n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
                n.insert(0, 0);
                k.insert("n".into(), b64u(&n));
            },
        ),
    );

    // Bad vectors: a good x509 key at index 0, the broken key at index 1 (the error must say 1).
    let two = |bad: Value| json!({"keys": [root_key_jwk, bad], "spiffe_sequence": 5});
    let x509_p384 = x509_jwk(&p384.key, &p384.der);
    let jwt_good = jwt_jwk(&jwt_ec, "jwt-ec-p256");
    let modify = |base: &Value, f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = base.clone();
        f(v.as_object_mut().unwrap());
        v
    };

    write(
        testdata().join("bundle/bad-not-json.json"),
        b"{\"keys\": [\n",
    );
    write_json("bad-not-an-object.json", &json!([root_key_jwk]));
    write_json("bad-missing-keys.json", &json!({"spiffe_sequence": 1}));
    write_json(
        "bad-keys-not-array.json",
        &json!({"keys": {"0": root_key_jwk}}),
    );
    write_json(
        "bad-negative-sequence.json",
        &json!({"keys": [], "spiffe_sequence": -1}),
    );
    write_json(
        "bad-fractional-refresh-hint.json",
        &json!({"keys": [], "spiffe_refresh_hint": 1.5}),
    );
    write_json("bad-key-not-an-object.json", &two(json!("x509-svid")));
    write_json(
        "bad-key-missing-use.json",
        &two(modify(&x509_p384, &|k| {
            k.remove("use");
        })),
    );
    write_json(
        "bad-key-missing-kty.json",
        &two(modify(&x509_p384, &|k| {
            k.remove("kty");
        })),
    );
    write_json(
        "bad-x509-no-x5c.json",
        &two(modify(&x509_p384, &|k| {
            k.remove("x5c");
        })),
    );
    write_json(
        "bad-x509-empty-x5c.json",
        &two(modify(&x509_p384, &|k| {
            k.insert("x5c".into(), json!([]));
        })),
    );
    write_json(
        "bad-x509-two-x5c.json",
        &two(modify(&x509_p384, &|k| {
            k.insert(
                "x5c".into(),
                json!([STANDARD.encode(&p384.der), STANDARD.encode(&root.der)]),
            );
        })),
    );
    write_json(
        "bad-x509-x5c-not-base64.json",
        &two(modify(&x509_p384, &|k| {
            k.insert("x5c".into(), json!(["not base64!"]));
        })),
    );
    write_json(
        "bad-x509-x5c-not-a-certificate.json",
        &two(modify(&x509_p384, &|k| {
            k.insert("x5c".into(), json!([STANDARD.encode(b"not a certificate")]));
        })),
    );
    write_json(
        "bad-x509-x-mismatch.json",
        &two(modify(&x509_p384, &|k| {
            let other = jwk_params(&key(&rcgen::PKCS_ECDSA_P384_SHA384));
            k.insert("x".into(), other["x"].clone());
        })),
    );
    write_json(
        "bad-x509-kty-mismatch.json",
        &two(modify(&x509_p384, &|k| {
            let rsa = jwk_params(&rsa_ca.key);
            k.retain(|name, _| name == "use" || name == "x5c");
            k.extend(rsa);
        })),
    );
    write_json(
        "bad-x509-crv-mismatch.json",
        &two(modify(&x509_p384, &|k| {
            k.insert("crv".into(), json!("P-256"));
        })),
    );
    write_json(
        "bad-x509-missing-y.json",
        &two(modify(&x509_p384, &|k| {
            k.remove("y");
        })),
    );
    write_json(
        "bad-x509-private-key-parameter.json",
        &two(modify(&x509_p384, &|k| {
            // A placeholder, not a real private scalar: the parameter's presence is the error.
            k.insert("d".into(), json!("AAAA"));
        })),
    );
    write_json(
        "bad-jwt-no-kid.json",
        &two(modify(&jwt_good, &|k| {
            k.remove("kid");
        })),
    );
    write_json(
        "bad-jwt-empty-kid.json",
        &two(modify(&jwt_good, &|k| {
            k.insert("kid".into(), json!(""));
        })),
    );
    write_json(
        "bad-jwt-duplicate-kid.json",
        &json!({"keys": [jwt_good, jwt_jwk(&jwt_rsa, "jwt-ec-p256")]}),
    );
    write_json(
        "bad-jwt-point-not-on-curve.json",
        &two(modify(&jwt_good, &|k| {
            let mut y = URL_SAFE_NO_PAD.decode(k["y"].as_str().unwrap()).unwrap();
            y[31] ^= 0x01;
            k.insert("y".into(), b64u(&y));
        })),
    );
    write_json(
        "bad-jwt-x-wrong-length.json",
        &two(modify(&jwt_good, &|k| {
            k.insert("x".into(), b64u(&[7u8; 31]));
        })),
    );
    write_json(
        "bad-jwt-unsupported-curve.json",
        &two(modify(&jwt_good, &|k| {
            k.insert("crv".into(), json!("secp256k1"));
        })),
    );
    write_json(
        "bad-jwt-symmetric-key.json",
        &two(json!({"kty": "oct", "use": "jwt-svid", "kid": "hmac", "k": "c2VjcmV0"})),
    );
    write_json(
        "bad-jwt-x-not-base64url.json",
        &two(modify(&jwt_good, &|k| {
            k.insert("x".into(), json!("not+base64/url="));
        })),
    );

    // PEM vectors.
    let cert_pem = |der: &[u8]| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    let two_certs = format!(
        "subject=O=Signet test, CN=Signet test root CA\n{}\nsubject=O=Signet test, CN=P-384 root CA\n{}",
        cert_pem(&root.der),
        cert_pem(&p384.der)
    );
    write(
        testdata().join("bundle/good-two-certs.pem"),
        two_certs.as_bytes(),
    );
    let key_block = format!(
        "{}{}",
        cert_pem(&root.der),
        pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            b"placeholder, not a key".to_vec()
        ))
    );
    write(
        testdata().join("bundle/bad-private-key-block.pem"),
        key_block.as_bytes(),
    );
    let truncated = cert_pem(&p384.der);
    let truncated = format!(
        "{}{}",
        cert_pem(&root.der),
        &truncated[..truncated.find("-----END").unwrap()]
    );
    write(
        testdata().join("bundle/bad-unterminated-block.pem"),
        truncated.as_bytes(),
    );
    write(
        testdata().join("bundle/bad-certificate-block-not-der.pem"),
        cert_pem(b"not a certificate").as_bytes(),
    );
}
