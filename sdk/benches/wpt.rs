//! WPT minting (client side) and WIT-SVID + WPT verification (server side), with a WIT-SVID
//! minted by the real Signet CA code.
//!
//! Run: `cargo bench -p signet-sdk --bench wpt -- --warm-up-time 1 --measurement-time 3`
//!
//! - `wpt_mint_es256`: `mint_wpt` (reading the WIT's `cnf`, claims, `jti`, hashes, signature).
//! - `wit_svid_validate_es256`: `validate_wit_svid` alone (one ECDSA verification).
//! - `wit_wpt_verify_es256`: `WptVerifier::verify` (the WIT-SVID, then the WPT: two ECDSA
//!   verifications, the SHA-256 of the WIT and the replay cache), each iteration with a fresh WPT
//!   minted outside the measurement (a WPT verifies once).
//!
//! All single-threaded: 1 / time is the rate per core.

// A benchmark is a test harness: a failed setup should abort it loudly, and criterion's macros
// generate undocumented public functions.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use signet_ca::KeyType;
use signet_ca::jwt::{JwtKeyConfig, JwtKeyManager, TokenKind};
use signet_sdk::wpt::DEFAULT_MAX_WPT_LIFETIME;
use signet_sdk::{BoundTokens, WitKey, WptRequest, WptVerifier, mint_wpt};
use signet_spiffe::jwt::Algorithm;
use signet_spiffe::wit::validate_wit_svid;
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};

const AUD: &str = "https://orders.example.org/v1/orders";

fn bench_wpt(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let trust_domain = TrustDomain::new("example.org").expect("trust domain");
    let issuer = JwtKeyManager::open_for(
        TokenKind::WitSvid,
        JwtKeyConfig {
            trust_domain: trust_domain.clone(),
            key_type: KeyType::EcP256,
            key_ttl: Duration::from_secs(24 * 3600),
            max_token_ttl: Duration::from_secs(3600),
            key_dir: tmp.path().join("wit"),
        },
        None,
        now,
    )
    .expect("WIT keys");
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.wit_authorities = issuer.authorities();
    let bundle = Bundle::from_json(&trust_domain, bundle.to_json().expect("encode").as_bytes())
        .expect("decode");
    let key = WitKey::generate(Algorithm::Es256).expect("WIT key");
    let id = SpiffeId::parse("spiffe://example.org/agents/planner").expect("id");
    let wit = issuer
        .mint_wit_svid(
            &id,
            &key.public_spki_der().expect("spki"),
            Duration::from_secs(3600),
            now,
        )
        .expect("WIT-SVID")
        .token;
    let mint = || {
        mint_wpt(
            &wit,
            &key,
            AUD,
            Duration::from_secs(60),
            now,
            &BoundTokens::default(),
        )
        .expect("WPT")
    };
    // Replay protection sized for the whole run (every WPT verifies once).
    let verifier = WptVerifier::new()
        .with_max_lifetime(DEFAULT_MAX_WPT_LIFETIME)
        .with_replay_capacity(50_000_000);

    let mut group = c.benchmark_group("wpt");
    group.bench_function("wpt_mint_es256", |b| b.iter(|| black_box(mint())));
    group.bench_function("wit_svid_validate_es256", |b| {
        b.iter(|| {
            validate_wit_svid(
                black_box(&wit),
                |_: &TrustDomain| Some(&bundle),
                now,
                Duration::ZERO,
            )
            .expect("validate")
        })
    });
    group.bench_function("wit_wpt_verify_es256", |b| {
        b.iter_batched(
            mint,
            |wpt| {
                let request = WptRequest {
                    wit: &wit,
                    wpt: &wpt,
                    audience: AUD,
                    bound: BoundTokens::default(),
                };
                verifier
                    .verify(&request, |_: &TrustDomain| Some(&bundle), now)
                    .expect("verify")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_wpt);
criterion_main!(benches);
