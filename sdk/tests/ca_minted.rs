//! The whole path with the real Signet code on both ends: a WIT-SVID minted by the CA's WIT keys
//! for a workload key, the key handed over as the Workload API's private JWK, a WPT minted with it,
//! and the server's verification against the bundle as a verifier would fetch it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use signet_ca::KeyType;
use signet_ca::jwt::{JwtKeyConfig, JwtKeyManager, TokenKind};
use signet_sdk::wpt::WptError;
use signet_sdk::{BoundTokens, WitKey, WptRequest, WptVerifier, mint_wpt};
use signet_spiffe::jwt::Algorithm;
use signet_spiffe::wit::WitSvidError;
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};

const AUD: &str = "https://orders.example.org/v1/orders";

fn keys(tmp: &tempfile::TempDir, kind: TokenKind, name: &str) -> JwtKeyManager {
    JwtKeyManager::open_for(
        kind,
        JwtKeyConfig {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            key_type: KeyType::EcP256,
            key_ttl: Duration::from_secs(24 * 3600),
            max_token_ttl: Duration::from_secs(3600),
            key_dir: tmp.path().join(name),
        },
        None,
        SystemTime::now(),
    )
    .unwrap()
}

/// The issuer's own bundle with JWT and WIT authorities, through JSON.
fn bundle(jwt: &JwtKeyManager, wit: &JwtKeyManager) -> Bundle {
    let td = TrustDomain::new("example.org").unwrap();
    let mut b = Bundle::new(td.clone());
    b.jwt_authorities = jwt.authorities();
    b.wit_authorities = wit.authorities();
    Bundle::from_json(&td, b.to_json().unwrap().as_bytes()).unwrap()
}

/// An issuer's JWT and WIT keys, its bundle, the time and a workload's SPIFFE ID.
struct Issuer {
    _tmp: tempfile::TempDir,
    jwt: JwtKeyManager,
    wit_keys: JwtKeyManager,
    bundle: Bundle,
    now: SystemTime,
    id: SpiffeId,
}

impl Issuer {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let jwt = keys(&tmp, TokenKind::JwtSvid, "jwt");
        let wit_keys = keys(&tmp, TokenKind::WitSvid, "wit");
        let bundle = bundle(&jwt, &wit_keys);
        Issuer {
            _tmp: tmp,
            jwt,
            wit_keys,
            bundle,
            now: SystemTime::now(),
            id: SpiffeId::parse("spiffe://example.org/agents/planner").unwrap(),
        }
    }
}

#[test]
fn ca_minted_wit_svid_with_a_wpt_verifies() {
    let Issuer {
        _tmp,
        wit_keys,
        bundle,
        now,
        id,
        ..
    } = Issuer::new();

    for alg in [Algorithm::Es256, Algorithm::Es384] {
        // The agent generates the key and has the issuer bind its public half.
        let agent_side = WitKey::generate(alg).unwrap();
        let wit = wit_keys
            .mint_wit_svid(
                &id,
                &agent_side.public_spki_der().unwrap(),
                Duration::from_secs(3600),
                now,
            )
            .unwrap()
            .token;
        // The workload receives WIT-SVID and key (`wit_svid_key`) from the Workload API.
        let jwk = agent_side.to_private_jwk().unwrap();
        let workload_key = WitKey::from_private_jwk(&jwk).unwrap();
        let txn = BoundTokens {
            txn_token: Some("txn-token"),
            ..BoundTokens::default()
        };
        let wpt = mint_wpt(&wit, &workload_key, AUD, Duration::from_secs(30), now, &txn).unwrap();

        let verifier = WptVerifier::new();
        let request = WptRequest {
            wit: &wit,
            wpt: &wpt,
            audience: AUD,
            bound: txn,
        };
        let caller = verifier
            .verify(&request, |_: &TrustDomain| Some(&bundle), now)
            .unwrap();
        assert_eq!(caller.spiffe_id, id);
        assert_eq!(caller.wit.confirmation.algorithm, alg);
        assert_eq!(caller.wit.key_id, wit_keys.authorities()[0].key_id);
        // Once only.
        assert!(matches!(
            verifier.verify(&request, |_: &TrustDomain| Some(&bundle), now),
            Err(WptError::Replayed { .. })
        ));
    }
}

#[test]
fn a_jwt_svid_with_a_wpt_is_no_wit_svid() {
    // The WIT keys exist (and are in the bundle), but this token comes from the JWT keys.
    let Issuer {
        _tmp,
        jwt,
        bundle,
        now,
        id,
        ..
    } = Issuer::new();
    let token = jwt
        .mint_jwt_svid(&id, &[AUD.into()], Duration::from_secs(300), now, None)
        .unwrap()
        .token;
    let key = WitKey::generate(Algorithm::Es256).unwrap();
    // No cnf: the client cannot mint, and a server refuses it by its typ first.
    assert!(matches!(
        mint_wpt(
            &token,
            &key,
            AUD,
            Duration::from_secs(30),
            now,
            &BoundTokens::default()
        ),
        Err(WptError::Wit(WitSvidError::MissingConfirmation))
    ));
    let request = WptRequest {
        wit: &token,
        wpt: "e30.e30.e30",
        audience: AUD,
        bound: BoundTokens::default(),
    };
    assert_eq!(
        WptVerifier::new().verify(&request, |_: &TrustDomain| Some(&bundle), now),
        Err(WptError::Wit(WitSvidError::UnsupportedType("JWT".into())))
    );
}
