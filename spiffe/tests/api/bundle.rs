//! SPIFFE bundle encoding and decoding, against the vectors in `testdata/bundle/`.

use serde_json::{Value, json};
use signet_spiffe::TrustDomain;
use signet_spiffe::bundle::{Bundle, BundleError, JwtAuthority};

use crate::fixture;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn vector(name: &str) -> Vec<u8> {
    fixture(&format!("bundle/{name}"))
}

fn decode(name: &str) -> Result<Bundle, BundleError> {
    Bundle::from_json(&td(), &vector(name))
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn ca_good() -> Vec<u8> {
    fixture("x509svid/ca-good.der")
}

/// Decoding, then encoding, then decoding again gives the same bundle.
fn assert_round_trips(bundle: &Bundle) {
    let json = bundle.to_json().unwrap();
    let again = Bundle::from_json(&bundle.trust_domain, json.as_bytes()).unwrap();
    assert_eq!(&again, bundle);
    assert_eq!(again.to_json().unwrap(), json, "encoding is deterministic");
}

// ----- good vectors -----

#[test]
fn x509_ec_p256_vector_decodes() {
    let bundle = decode("good-x509-ec-p256.json").unwrap();
    assert_eq!(bundle.trust_domain, td());
    assert_eq!(bundle.x509_authorities, vec![ca_good()]);
    assert!(bundle.jwt_authorities.is_empty());
    assert_eq!(bundle.sequence, 1);
    assert_eq!(bundle.refresh_hint, Some(300));
}

#[test]
fn x509_vectors_are_exactly_what_the_encoder_writes() {
    // The vectors' key parameters were computed by the generator from the raw public keys, not by
    // this crate: equality checks the encoder's EC, RSA and Ed25519 parameters.
    for name in ["good-x509-ec-p256.json", "good-x509-all-key-types.json"] {
        let bundle = decode(name).unwrap();
        assert_eq!(
            json_of(bundle.to_json().unwrap().as_bytes()),
            json_of(&vector(name)),
            "{name}"
        );
        assert_round_trips(&bundle);
    }
}

#[test]
fn encoder_builds_the_vector_from_certificates_alone() {
    let mut bundle = Bundle::new(td());
    bundle.x509_authorities = vec![
        ca_good(),
        vector("ca-ec-p384.der"),
        vector("ca-rsa-2048.der"),
        vector("ca-ed25519.der"),
    ];
    bundle.sequence = 2;
    bundle.refresh_hint = Some(3600);
    assert_eq!(
        json_of(bundle.to_json().unwrap().as_bytes()),
        json_of(&vector("good-x509-all-key-types.json"))
    );
}

#[test]
fn encoded_x509_keys_follow_the_standard() {
    let mut bundle = Bundle::new(td());
    bundle.x509_authorities = vec![ca_good(), vector("ca-rsa-2048.der")];
    let doc = json_of(bundle.to_json().unwrap().as_bytes());
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_eq!(key["use"], "x509-svid");
        assert!(
            key.get("kid").is_none(),
            "x509-svid keys must not have a kid"
        );
        let x5c = key["x5c"].as_array().unwrap();
        assert_eq!(x5c.len(), 1);
    }
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[1]["kty"], "RSA");
    assert_eq!(keys[1]["e"], "AQAB");
    // base64url without padding for key parameters, standard base64 for x5c.
    for p in ["x", "y"] {
        let s = keys[0][p].as_str().unwrap();
        assert!(
            !s.contains('=') && !s.contains('+') && !s.contains('/'),
            "{s}"
        );
        assert_eq!(s.len(), 43, "32 bytes, unpadded");
    }
    assert_eq!(doc["spiffe_sequence"], 0);
    assert!(doc.get("spiffe_refresh_hint").is_none());
}

#[test]
fn jwt_vector_decodes_and_round_trips() {
    let bundle = decode("good-jwt-all-key-types.json").unwrap();
    let kids: Vec<&str> = bundle
        .jwt_authorities
        .iter()
        .map(|a| a.key_id.as_str())
        .collect();
    assert_eq!(
        kids,
        ["jwt-ec-p256", "jwt-ec-p384", "jwt-rsa-2048", "jwt-ed25519"]
    );
    for a in &bundle.jwt_authorities {
        assert_eq!(a.jwk["kid"], a.key_id.as_str());
        assert_eq!(a.jwk["use"], "jwt-svid");
    }
    assert!(bundle.x509_authorities.is_empty());
    assert_eq!(bundle.sequence, 3);
    assert_eq!(bundle.refresh_hint, None);
    assert_eq!(
        json_of(bundle.to_json().unwrap().as_bytes()),
        json_of(&vector("good-jwt-all-key-types.json"))
    );
    assert_round_trips(&bundle);
}

#[test]
fn unknown_uses_kty_and_parameters_are_ignored() {
    let bundle = decode("good-mixed-with-ignored-elements.json").unwrap();
    assert_eq!(bundle.x509_authorities, vec![ca_good()]);
    assert_eq!(bundle.jwt_authorities.len(), 1);
    assert_eq!(bundle.jwt_authorities[0].key_id, "jwt-ec-p256");
    assert_eq!(bundle.sequence, 4);
    assert_eq!(bundle.refresh_hint, Some(60));
    assert_round_trips(&bundle);
}

#[test]
fn empty_keys_means_everything_is_revoked() {
    let bundle = decode("good-empty-keys.json").unwrap();
    assert!(bundle.x509_authorities.is_empty());
    assert!(bundle.jwt_authorities.is_empty());
    assert_eq!(bundle.sequence, 9);
    assert_eq!(bundle.refresh_hint, Some(60));
    assert_round_trips(&bundle);
}

#[test]
fn sequence_and_refresh_hint_are_optional() {
    let bundle = decode("good-no-sequence-no-hint.json").unwrap();
    assert_eq!(bundle.sequence, 0);
    assert_eq!(bundle.refresh_hint, None);
    assert_eq!(bundle.x509_authorities, vec![ca_good()]);
    // null is read as absent.
    let b = Bundle::from_json(
        &td(),
        br#"{"keys": [], "spiffe_sequence": null, "spiffe_refresh_hint": null}"#,
    )
    .unwrap();
    assert_eq!((b.sequence, b.refresh_hint), (0, None));
}

#[test]
fn rsa_modulus_with_a_leading_zero_still_matches() {
    let bundle = decode("good-x509-rsa-n-leading-zero.json").unwrap();
    assert_eq!(bundle.x509_authorities, vec![vector("ca-rsa-2048.der")]);
}

#[test]
fn sequence_uses_the_full_u64_range() {
    let mut bundle = Bundle::new(td());
    bundle.sequence = u64::MAX;
    bundle.refresh_hint = Some(u64::MAX);
    assert_round_trips(&bundle);
    let too_big = br#"{"keys": [], "spiffe_sequence": 18446744073709551616}"#;
    assert_eq!(
        Bundle::from_json(&td(), too_big),
        Err(BundleError::InvalidParameter {
            field: "spiffe_sequence",
            reason: "must be a non-negative integer",
        })
    );
}

#[test]
fn the_trust_domain_comes_from_the_caller() {
    let other = TrustDomain::new("other.org").unwrap();
    let bundle = Bundle::from_json(&other, &vector("good-x509-ec-p256.json")).unwrap();
    assert_eq!(bundle.trust_domain, other);
}

// ----- bad vectors: each with its exact error -----

#[test]
fn bad_vectors_are_rejected_with_the_exact_error() {
    use BundleError as E;
    let cases: Vec<(&str, BundleError)> = vec![
        ("bad-not-an-object.json", E::NotAnObject),
        ("bad-missing-keys.json", E::MissingKeys),
        (
            "bad-keys-not-array.json",
            E::InvalidParameter {
                field: "keys",
                reason: "must be an array",
            },
        ),
        (
            "bad-negative-sequence.json",
            E::InvalidParameter {
                field: "spiffe_sequence",
                reason: "must be a non-negative integer",
            },
        ),
        (
            "bad-fractional-refresh-hint.json",
            E::InvalidParameter {
                field: "spiffe_refresh_hint",
                reason: "must be a non-negative integer",
            },
        ),
        ("bad-key-not-an-object.json", E::KeyNotAnObject { index: 1 }),
        (
            "bad-key-missing-use.json",
            E::KeyMissingParameter {
                index: 1,
                field: "use",
            },
        ),
        (
            "bad-key-missing-kty.json",
            E::KeyMissingParameter {
                index: 1,
                field: "kty",
            },
        ),
        ("bad-x509-no-x5c.json", E::X5cCount { index: 1, count: 0 }),
        (
            "bad-x509-empty-x5c.json",
            E::X5cCount { index: 1, count: 0 },
        ),
        ("bad-x509-two-x5c.json", E::X5cCount { index: 1, count: 2 }),
        (
            "bad-x509-x5c-not-base64.json",
            E::KeyInvalidParameter {
                index: 1,
                field: "x5c",
                reason: "does not hold standard (padded) base64".to_owned(),
            },
        ),
        (
            "bad-x509-x-mismatch.json",
            E::KeyMismatch {
                index: 1,
                field: "x",
            },
        ),
        (
            "bad-x509-kty-mismatch.json",
            E::KeyMismatch {
                index: 1,
                field: "kty",
            },
        ),
        (
            "bad-x509-crv-mismatch.json",
            E::KeyMismatch {
                index: 1,
                field: "crv",
            },
        ),
        (
            "bad-x509-missing-y.json",
            E::KeyMissingParameter {
                index: 1,
                field: "y",
            },
        ),
        (
            "bad-x509-private-key-parameter.json",
            E::PrivateKeyParameter {
                index: 1,
                field: "d",
            },
        ),
        ("bad-jwt-no-kid.json", E::MissingKeyId { index: 1 }),
        ("bad-jwt-empty-kid.json", E::MissingKeyId { index: 1 }),
        (
            "bad-jwt-duplicate-kid.json",
            E::DuplicateKeyId {
                index: 1,
                kid: "jwt-ec-p256".to_owned(),
            },
        ),
        (
            "bad-jwt-point-not-on-curve.json",
            E::KeyInvalidParameter {
                index: 1,
                field: "x",
                reason: "(x, y) is not a point on P-256".to_owned(),
            },
        ),
        (
            "bad-jwt-x-wrong-length.json",
            E::KeyInvalidParameter {
                index: 1,
                field: "x",
                reason: "must be 32 bytes for P-256".to_owned(),
            },
        ),
        (
            "bad-jwt-unsupported-curve.json",
            E::KeyInvalidParameter {
                index: 1,
                field: "crv",
                reason: "names an unsupported curve \"secp256k1\"".to_owned(),
            },
        ),
        (
            "bad-jwt-symmetric-key.json",
            E::PrivateKeyParameter {
                index: 1,
                field: "k",
            },
        ),
        (
            "bad-jwt-x-not-base64url.json",
            E::KeyInvalidParameter {
                index: 1,
                field: "x",
                reason: "is not unpadded base64url".to_owned(),
            },
        ),
    ];
    for (name, expected) in cases {
        assert_eq!(decode(name), Err(expected), "{name}");
    }
}

#[test]
fn not_json_is_rejected() {
    assert!(matches!(
        decode("bad-not-json.json"),
        Err(BundleError::Json(_))
    ));
    assert!(matches!(
        Bundle::from_json(&td(), b""),
        Err(BundleError::Json(_))
    ));
}

#[test]
fn x5c_that_is_not_a_certificate_is_rejected() {
    assert!(matches!(
        decode("bad-x509-x5c-not-a-certificate.json"),
        Err(BundleError::X5cCertificate { index: 1, .. })
    ));
}

#[test]
fn error_messages_name_index_and_field() {
    let msg = decode("bad-x509-x-mismatch.json").unwrap_err().to_string();
    assert!(msg.contains("key 1") && msg.contains("`x`"), "{msg}");
    let msg = decode("bad-x509-two-x5c.json").unwrap_err().to_string();
    assert!(msg.contains("key 1") && msg.contains("found 2"), "{msg}");
    let msg = decode("bad-jwt-no-kid.json").unwrap_err().to_string();
    assert!(msg.contains("key 1") && msg.contains("`kid`"), "{msg}");
}

// ----- encoding errors -----

fn jwt_ec_jwk() -> Value {
    let doc = json_of(&vector("good-jwt-all-key-types.json"));
    doc["keys"][0].clone()
}

#[test]
fn encoder_fills_in_kid_and_use() {
    let mut jwk = jwt_ec_jwk();
    let obj = jwk.as_object_mut().unwrap();
    obj.remove("kid");
    obj.remove("use");
    let mut bundle = Bundle::new(td());
    bundle.jwt_authorities.push(JwtAuthority {
        key_id: "k1".to_owned(),
        jwk,
    });
    let decoded = Bundle::from_json(&td(), bundle.to_json().unwrap().as_bytes()).unwrap();
    assert_eq!(decoded.jwt_authorities[0].key_id, "k1");
    assert_eq!(decoded.jwt_authorities[0].jwk["kid"], "k1");
    assert_eq!(decoded.jwt_authorities[0].jwk["use"], "jwt-svid");
}

#[test]
fn jwt_jwks_holds_the_jwt_authorities_alone() {
    let mut bundle = decode("good-jwt-all-key-types.json").unwrap();
    bundle.x509_authorities.push(ca_good());
    let jwks = json_of(bundle.jwt_jwks_json().unwrap().as_bytes());
    let obj = jwks.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["keys"], "{jwks}");
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);
    for (key, authority) in keys.iter().zip(&bundle.jwt_authorities) {
        assert_eq!(key["use"], "jwt-svid");
        assert_eq!(key["kid"], authority.key_id.as_str());
        assert!(key.get("x5c").is_none());
    }
    // A bundle without JWT authorities gives an empty set; a duplicate key ID is refused.
    assert_eq!(
        json_of(Bundle::new(td()).jwt_jwks_json().unwrap().as_bytes()),
        serde_json::json!({"keys": []})
    );
    let first = bundle.jwt_authorities[0].clone();
    bundle.jwt_authorities.push(first);
    assert!(matches!(
        bundle.jwt_jwks_json(),
        Err(BundleError::JwtAuthority { index: 4, .. })
    ));
}

#[test]
fn encoder_rejects_bad_authorities() {
    let encode_err = |x509: Vec<Vec<u8>>, jwt: Vec<JwtAuthority>| {
        let mut bundle = Bundle::new(td());
        bundle.x509_authorities = x509;
        bundle.jwt_authorities = jwt;
        bundle.to_json().unwrap_err()
    };
    let authority = |key_id: &str, jwk: Value| JwtAuthority {
        key_id: key_id.to_owned(),
        jwk,
    };

    let err = encode_err(vec![ca_good(), b"junk".to_vec()], vec![]);
    assert!(
        matches!(err, BundleError::X509Authority { index: 1, .. }),
        "{err}"
    );

    let err = encode_err(vec![], vec![authority("", jwt_ec_jwk())]);
    assert!(
        matches!(err, BundleError::JwtAuthority { index: 0, .. }),
        "{err}"
    );

    // kid differs from key_id
    let err = encode_err(vec![], vec![authority("other", jwt_ec_jwk())]);
    assert!(
        matches!(err, BundleError::JwtAuthority { index: 0, .. }),
        "{err}"
    );

    let err = encode_err(vec![], vec![authority("k", json!("not an object"))]);
    assert!(
        matches!(err, BundleError::JwtAuthority { index: 0, .. }),
        "{err}"
    );

    let mut private = jwt_ec_jwk();
    private["d"] = json!("AAAA");
    let err = encode_err(vec![], vec![authority("jwt-ec-p256", private)]);
    assert!(err.to_string().contains("`d`"), "{err}");

    let mut wrong_use = jwt_ec_jwk();
    wrong_use["use"] = json!("x509-svid");
    let err = encode_err(vec![], vec![authority("jwt-ec-p256", wrong_use)]);
    assert!(
        matches!(err, BundleError::JwtAuthority { index: 0, .. }),
        "{err}"
    );

    let err = encode_err(
        vec![],
        vec![
            authority("jwt-ec-p256", jwt_ec_jwk()),
            authority("jwt-ec-p256", jwt_ec_jwk()),
        ],
    );
    assert!(
        matches!(err, BundleError::JwtAuthority { index: 1, .. }),
        "{err}"
    );

    let err = encode_err(
        vec![],
        vec![authority("k", json!({"kty": "oct-future", "kid": "k"}))],
    );
    assert!(err.to_string().contains("not supported"), "{err}");
}

// ----- PEM -----

#[test]
fn pem_with_two_certificates_and_openssl_text() {
    let bundle = Bundle::from_pem(&td(), &vector("good-two-certs.pem")).unwrap();
    assert_eq!(
        bundle.x509_authorities,
        vec![ca_good(), vector("ca-ec-p384.der")]
    );
    assert!(bundle.jwt_authorities.is_empty());
    assert_eq!(bundle.sequence, 0);
    let pem = bundle.to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert!(!pem.contains('\r'));
    assert_eq!(Bundle::from_pem(&td(), pem.as_bytes()).unwrap(), bundle);
}

#[test]
fn pem_round_trips_through_json() {
    let from_pem = Bundle::from_pem(&td(), &vector("good-two-certs.pem")).unwrap();
    let json = from_pem.to_json().unwrap();
    assert_eq!(Bundle::from_json(&td(), json.as_bytes()).unwrap(), from_pem);
}

#[test]
fn pem_with_a_private_key_block_is_rejected() {
    assert_eq!(
        Bundle::from_pem(&td(), &vector("bad-private-key-block.pem")),
        Err(BundleError::PemNotCertificate {
            index: 1,
            tag: "PRIVATE KEY".to_owned(),
        })
    );
}

#[test]
fn pem_with_an_unterminated_block_is_rejected() {
    assert!(matches!(
        Bundle::from_pem(&td(), &vector("bad-unterminated-block.pem")),
        Err(BundleError::Pem(_))
    ));
}

#[test]
fn pem_block_that_is_not_a_certificate_is_rejected() {
    assert!(matches!(
        Bundle::from_pem(&td(), &vector("bad-certificate-block-not-der.pem")),
        Err(BundleError::PemCertificate { index: 0, .. })
    ));
}

#[test]
fn pem_without_blocks_is_rejected() {
    assert_eq!(
        Bundle::from_pem(&td(), b""),
        Err(BundleError::NoCertificates)
    );
    assert_eq!(
        Bundle::from_pem(&td(), b"just some text\n"),
        Err(BundleError::NoCertificates)
    );
}

#[test]
fn to_pem_of_an_empty_bundle_is_empty() {
    assert_eq!(Bundle::new(td()).to_pem(), "");
}

// ----- WIT authorities -----

/// The keys of `good-jwt-all-key-types.json` re-marked: the first two as WIT authorities
/// (`wit-ec-p256`, `wit-ec-p384`), the others kept as JWT authorities.
fn jwt_and_wit_document() -> Value {
    let mut doc = json_of(&vector("good-jwt-all-key-types.json"));
    for (i, kid) in [(0, "wit-ec-p256"), (1, "wit-ec-p384")] {
        doc["keys"][i]["use"] = json!("wit-svid");
        doc["keys"][i]["kid"] = json!(kid);
    }
    doc
}

fn decode_doc(doc: &Value) -> Result<Bundle, BundleError> {
    Bundle::from_json(&td(), doc.to_string().as_bytes())
}

fn kids(authorities: &[JwtAuthority]) -> Vec<&str> {
    authorities.iter().map(|a| a.key_id.as_str()).collect()
}

#[test]
fn wit_authorities_decode_apart_from_jwt_authorities_and_round_trip() {
    let bundle = decode_doc(&jwt_and_wit_document()).unwrap();
    assert_eq!(
        kids(&bundle.wit_authorities),
        ["wit-ec-p256", "wit-ec-p384"]
    );
    assert_eq!(
        kids(&bundle.jwt_authorities),
        ["jwt-rsa-2048", "jwt-ed25519"]
    );
    for a in &bundle.wit_authorities {
        assert_eq!(a.jwk["use"], "wit-svid");
    }
    assert_round_trips(&bundle);
    // X.509, then JWT, then WIT authorities.
    let doc = json_of(bundle.to_json().unwrap().as_bytes());
    let uses: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["use"].as_str().unwrap())
        .collect();
    assert_eq!(uses, ["jwt-svid", "jwt-svid", "wit-svid", "wit-svid"]);
}

#[test]
fn wit_key_id_used_by_an_earlier_jwt_key_is_refused() {
    let mut doc = jwt_and_wit_document();
    doc["keys"][1]["kid"] = json!("jwt-rsa-2048");
    // Key 1 (WIT) comes before key 2 (JWT) with the same kid: the JWT key is the second one.
    assert_eq!(
        decode_doc(&doc).unwrap_err(),
        BundleError::KeyIdSharedAcrossUses {
            index: 2,
            kid: "jwt-rsa-2048".to_owned(),
            usage: "jwt-svid",
            other_index: 1,
            other_usage: "wit-svid",
        }
    );
}

#[test]
fn jwt_key_id_used_by_an_earlier_wit_key_is_refused() {
    let mut doc = jwt_and_wit_document();
    doc["keys"][3]["kid"] = json!("wit-ec-p256");
    let err = decode_doc(&doc).unwrap_err();
    assert_eq!(
        err,
        BundleError::KeyIdSharedAcrossUses {
            index: 3,
            kid: "wit-ec-p256".to_owned(),
            usage: "jwt-svid",
            other_index: 0,
            other_usage: "wit-svid",
        }
    );
    assert_eq!(
        err.to_string(),
        "key 3: key ID \"wit-ec-p256\" of this jwt-svid key is already used by the wit-svid key 0"
    );
}

#[test]
fn wit_key_ids_are_unique_among_wit_keys() {
    let mut doc = jwt_and_wit_document();
    doc["keys"][1]["kid"] = json!("wit-ec-p256");
    assert_eq!(
        decode_doc(&doc).unwrap_err(),
        BundleError::DuplicateKeyId {
            index: 1,
            kid: "wit-ec-p256".to_owned(),
        }
    );
}

#[test]
fn wit_keys_need_a_kid_and_no_private_parameters() {
    let mut doc = jwt_and_wit_document();
    doc["keys"][1].as_object_mut().unwrap().remove("kid");
    assert_eq!(
        decode_doc(&doc).unwrap_err(),
        BundleError::MissingKeyId { index: 1 }
    );
    let mut doc = jwt_and_wit_document();
    doc["keys"][1]["kid"] = json!("");
    assert_eq!(
        decode_doc(&doc).unwrap_err(),
        BundleError::MissingKeyId { index: 1 }
    );
    let mut doc = jwt_and_wit_document();
    doc["keys"][0]["d"] = json!("AAAA");
    assert_eq!(
        decode_doc(&doc).unwrap_err(),
        BundleError::PrivateKeyParameter {
            index: 0,
            field: "d"
        }
    );
    let mut doc = jwt_and_wit_document();
    doc["keys"][0]["x"] = json!("AAAA");
    assert!(matches!(
        decode_doc(&doc).unwrap_err(),
        BundleError::KeyInvalidParameter {
            index: 0,
            field: "x",
            ..
        }
    ));
}

#[test]
fn jwks_of_each_kind_hold_that_kind_alone() {
    let mut bundle = decode_doc(&jwt_and_wit_document()).unwrap();
    bundle.x509_authorities.push(ca_good());
    let jwt = json_of(bundle.jwt_jwks_json().unwrap().as_bytes());
    let wit = json_of(bundle.wit_jwks_json().unwrap().as_bytes());
    let kids_of = |set: &Value| -> Vec<String> {
        assert_eq!(set.as_object().unwrap().len(), 1, "only `keys`: {set}");
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kids_of(&jwt), ["jwt-rsa-2048", "jwt-ed25519"]);
    assert_eq!(kids_of(&wit), ["wit-ec-p256", "wit-ec-p384"]);
    for key in wit["keys"].as_array().unwrap() {
        assert_eq!(key["use"], "wit-svid");
    }
    assert_eq!(
        json_of(Bundle::new(td()).wit_jwks_json().unwrap().as_bytes()),
        json!({"keys": []})
    );
}

#[test]
fn encoder_refuses_a_key_id_shared_by_jwt_and_wit_authorities() {
    let mut bundle = decode_doc(&jwt_and_wit_document()).unwrap();
    // Re-key the second WIT authority with the first JWT authority's ID.
    let mut shared = bundle.wit_authorities[1].clone();
    shared.key_id = "jwt-rsa-2048".to_owned();
    shared.jwk["kid"] = json!("jwt-rsa-2048");
    bundle.wit_authorities[1] = shared;
    for result in [
        bundle.to_json(),
        bundle.jwt_jwks_json(),
        bundle.wit_jwks_json(),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, BundleError::WitAuthority { index: 1, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "WIT authority 1: key ID \"jwt-rsa-2048\" is also used by JWT authority 0"
        );
    }
}

#[test]
fn encoder_fills_in_wit_use_and_refuses_another_use() {
    let mut jwk = jwt_ec_jwk();
    let obj = jwk.as_object_mut().unwrap();
    obj.remove("kid");
    obj.remove("use");
    let mut bundle = Bundle::new(td());
    bundle.wit_authorities.push(JwtAuthority {
        key_id: "w1".to_owned(),
        jwk: jwk.clone(),
    });
    let decoded = Bundle::from_json(&td(), bundle.to_json().unwrap().as_bytes()).unwrap();
    assert_eq!(decoded.wit_authorities[0].jwk["use"], "wit-svid");
    assert_eq!(decoded.wit_authorities[0].jwk["kid"], "w1");
    assert!(decoded.jwt_authorities.is_empty());

    jwk["use"] = json!("jwt-svid");
    bundle.wit_authorities[0].jwk = jwk;
    assert!(matches!(
        bundle.to_json().unwrap_err(),
        BundleError::WitAuthority { index: 0, .. }
    ));
}
