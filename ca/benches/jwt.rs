//! JWT-SVID minting and validation next to the raw ES256 signature and verification they
//! contain.
//!
//! Run: `cargo bench -p signet-ca --bench jwt -- --warm-up-time 1 --measurement-time 3`
//!
//! - `raw_es256_sign`: one aws-lc-rs ECDSA P-256/SHA-256 fixed-size signature over a real
//!   JWT-SVID signing input (the floor of minting).
//! - `raw_es256_verify_parsed`: one verification with a pre-parsed public key (the floor of
//!   validation); `raw_es256_verify_unparsed`: the same, parsing the point each time (what a
//!   verifier without a key cache does).
//! - `jwt_svid_mint_es256`: `JwtKeyManager::mint_jwt_svid` (claims, `jti`, encoding, signature).
//! - `jwt_svid_validate_es256`: `signet_spiffe::jwt::validate_jwt_svid` against a bundle
//!   (parsing, allowlist, key lookup and decoding, signature, claim checks).
//!
//! All single-threaded: 1 / time is the rate per core.

// A benchmark is a test harness: a failed setup should abort it loudly, and criterion's macros
// generate undocumented public functions.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey, UnparsedPublicKey,
};
use criterion::{Criterion, criterion_group, criterion_main};
use signet_ca::KeyType;
use signet_ca::jwt::{JwtKeyConfig, JwtKeyManager};
use signet_spiffe::jwt::validate_jwt_svid;
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};

fn bench_jwt(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let trust_domain = TrustDomain::new("example.org").expect("trust domain");
    let manager = JwtKeyManager::open(
        JwtKeyConfig {
            trust_domain: trust_domain.clone(),
            key_type: KeyType::EcP256,
            key_ttl: Duration::from_secs(24 * 3600),
            max_token_ttl: Duration::from_secs(3600),
            key_dir: tmp.path().join("jwt"),
        },
        None,
        now,
    )
    .expect("open");
    let spiffe_id = SpiffeId::parse("spiffe://example.org/ns/default/sa/backend").expect("id");
    let audience = vec!["https://api.example.org".to_owned()];
    let ttl = Duration::from_secs(300);
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.jwt_authorities = manager.authorities();
    let bundle = Bundle::from_json(&trust_domain, bundle.to_json().expect("encode").as_bytes())
        .expect("decode");
    let token = manager
        .mint_jwt_svid(&spiffe_id, &audience, ttl, now, None)
        .expect("mint")
        .token;

    // The same signing input, signed and verified with a bare aws-lc-rs key.
    let signing_input = token.rsplit_once('.').expect("three segments").0.to_owned();
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let raw =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).expect("key");
    let raw_sig = raw.sign(&rng, signing_input.as_bytes()).expect("sign");
    let point = raw.public_key().as_ref().to_vec();
    let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).expect("public key");

    let mut group = c.benchmark_group("jwt");
    group.bench_function("raw_es256_sign", |b| {
        b.iter(|| {
            raw.sign(&rng, black_box(signing_input.as_bytes()))
                .expect("sign")
        })
    });
    group.bench_function("raw_es256_verify_parsed", |b| {
        b.iter(|| {
            parsed
                .verify_sig(black_box(signing_input.as_bytes()), raw_sig.as_ref())
                .expect("verify")
        })
    });
    group.bench_function("raw_es256_verify_unparsed", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, black_box(&point))
                .verify(signing_input.as_bytes(), raw_sig.as_ref())
                .expect("verify")
        })
    });
    group.bench_function("jwt_svid_mint_es256", |b| {
        b.iter(|| {
            manager
                .mint_jwt_svid(black_box(&spiffe_id), &audience, ttl, now, None)
                .expect("mint")
        })
    });
    group.bench_function("jwt_svid_validate_es256", |b| {
        b.iter(|| {
            validate_jwt_svid(
                black_box(&token),
                "https://api.example.org",
                |_: &TrustDomain| Some(&bundle),
                now,
                Duration::ZERO,
            )
            .expect("validate")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_jwt);
criterion_main!(benches);
