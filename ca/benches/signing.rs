//! X509-SVID signing cost next to the raw P-256 signature it contains.
//!
//! Run: `cargo bench -p signet-ca --bench signing -- --warm-up-time 1 --measurement-time 3`
//!
//! - `raw_p256_sign`: one aws-lc-rs ECDSA P-256/SHA-256 signature over a real X509-SVID
//!   TBSCertificate (the floor: what signing an SVID cannot go below).
//! - `x509_svid_sign`: `CertificateAuthority::sign_x509_svid` with a fixed public key (validation
//!   of the key, encoding, serial, signature, chain).
//! - `csr_to_svid`: `public_key_from_csr` (parse + signature check) followed by signing.
//!
//! All single-threaded: 1 / time is the rate per core.

// A benchmark is a test harness: a failed setup should abort it loudly, and criterion's macros
// generate undocumented public functions.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use criterion::{Criterion, criterion_group, criterion_main};
use signet_ca::{
    CaConfig, CertificateAuthority, KeyType, X509SvidRequest, generate_key, public_key_from_csr,
};
use signet_spiffe::{SpiffeId, TrustDomain};
use x509_parser::prelude::FromDer;

fn bench_signing(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let ca = CertificateAuthority::open(
        CaConfig {
            trust_domain: TrustDomain::new("example.org").expect("trust domain"),
            key_type: KeyType::EcP256,
            ttl: Duration::from_secs(24 * 3600),
            upstream: None,
            key_dir: tmp.path().join("ca"),
        },
        None,
        now,
    )
    .expect("open CA");
    let spiffe_id = SpiffeId::parse("spiffe://example.org/ns/default/sa/backend").expect("id");
    let workload = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let spki = rcgen::PublicKeyData::subject_public_key_info(&workload);
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&workload)
        .expect("csr")
        .der()
        .to_vec();
    let req = X509SvidRequest {
        spiffe_id: &spiffe_id,
        public_key_spki_der: &spki,
        ttl: Duration::from_secs(3600),
        dns_names: &[],
    };

    // A real TBSCertificate of the size we sign.
    let sample = ca.sign_x509_svid(&req, now).expect("sign");
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&sample.cert_chain_der[0])
        .expect("parse");
    let tbs = leaf.tbs_certificate.as_ref().to_vec();
    let raw_key_doc = generate_key(KeyType::EcP256).expect("generate");
    let raw_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &raw_key_doc.pkcs8_der)
        .expect("raw key");
    let rng = SystemRandom::new();

    let mut group = c.benchmark_group("signing");
    group.bench_function("raw_p256_sign", |b| {
        b.iter(|| raw_key.sign(&rng, black_box(&tbs)).expect("sign"))
    });
    group.bench_function("x509_svid_sign", |b| {
        b.iter(|| ca.sign_x509_svid(black_box(&req), now).expect("sign"))
    });
    group.bench_function("csr_to_svid", |b| {
        b.iter(|| {
            let spki = public_key_from_csr(black_box(&csr)).expect("csr");
            ca.sign_x509_svid(
                &X509SvidRequest {
                    spiffe_id: &spiffe_id,
                    public_key_spki_der: &spki,
                    ttl: Duration::from_secs(3600),
                    dns_names: &[],
                },
                now,
            )
            .expect("sign")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_signing);
criterion_main!(benches);
