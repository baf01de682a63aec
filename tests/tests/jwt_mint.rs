//! `signet-issuer jwt mint` against the real issuer: the token validates with the issuer's own
//! bundle (as `bundle show --format spiffe` prints it), its claims are exact, it is audited without
//! the token, and every bad argument is refused with an error that names it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use signet_spiffe::jwt::{ValidatedJwtSvid, validate_jwt_svid};
use signet_spiffe::{Bundle, TrustDomain};
use signet_store::AuditEvent;
use signet_tests::{CliOutput, Issuer, IssuerBuilder};

const WORKLOAD: &str = "spiffe://example.org/ns/prod/sa/api";

/// The own bundle, as a verifier would fetch it.
fn own_bundle(issuer: &Issuer) -> Bundle {
    let doc = issuer
        .cli_ok(&["bundle", "show", "--format", "spiffe"])
        .unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    Bundle::from_json(&td, doc.as_bytes()).unwrap()
}

/// Validates `token` for `audience` with `bundle` (the only trusted one).
fn validate(token: &str, audience: &str, bundle: &Bundle) -> ValidatedJwtSvid {
    validate_jwt_svid(
        token,
        audience,
        |td| (*td == bundle.trust_domain).then_some(bundle),
        SystemTime::now(),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("token for {audience:?} does not validate: {e}"))
}

fn mint(issuer: &Issuer, args: &[&str]) -> CliOutput {
    let mut a = vec!["jwt", "mint"];
    a.extend_from_slice(args);
    issuer.cli(&a).unwrap()
}

fn claim_i64(v: &ValidatedJwtSvid, name: &str) -> i64 {
    v.claims[name]
        .as_i64()
        .unwrap_or_else(|| panic!("{name}: {:?}", v.claims))
}

fn jwt_signatures(issuer: &Issuer) -> u64 {
    let (_, metrics) = issuer.http_get("/metrics").unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("signet_signatures_total{kind=\"jwt_svid\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn jwt_mint_tokens_validate_with_the_own_bundle_and_are_audited_without_the_token() {
    let mut issuer = Issuer::start().unwrap();
    let bundle = own_bundle(&issuer);

    // Text: the token alone on one line, for `TOKEN=$(signet-issuer jwt mint ...)`.
    let out = mint(
        &issuer,
        &["--spiffe-id", WORKLOAD, "--audience", "svc", "--ttl", "10m"],
    )
    .ok()
    .unwrap();
    let token = out.strip_suffix('\n').unwrap().to_owned();
    assert!(!token.contains(char::is_whitespace), "{out:?}");
    assert_eq!(token.split('.').count(), 3, "{token}");
    let one = validate(&token, "svc", &bundle);
    assert_eq!(one.spiffe_id.to_string(), WORKLOAD);
    assert_eq!(one.claims["sub"], WORKLOAD);
    // One audience is written as a string.
    assert_eq!(one.claims["aud"], "svc");
    assert_eq!(one.audience, vec!["svc"]);
    assert_eq!(claim_i64(&one, "exp") - claim_i64(&one, "iat"), 600);
    // No `jwt_issuer` configured: no `iss`.
    assert!(!one.claims.contains_key("iss"), "{:?}", one.claims);
    assert!(
        bundle
            .jwt_authorities
            .iter()
            .any(|a| a.key_id == one.key_id),
        "kid {} is not in the bundle",
        one.key_id
    );

    // JSON, several audiences, the default TTL (`[defaults] jwt_svid_ttl`, 5m).
    let json = mint(
        &issuer,
        &[
            "--spiffe-id",
            WORKLOAD,
            "--audience",
            "svc-a",
            "--audience",
            "svc-b",
            "--output",
            "json",
        ],
    )
    .json()
    .unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "audience",
            "expires_at",
            "issued_at",
            "jti",
            "key_id",
            "spiffe_id",
            "token"
        ]
    );
    let token2 = json["token"].as_str().unwrap().to_owned();
    for aud in ["svc-a", "svc-b"] {
        let v = validate(&token2, aud, &bundle);
        assert_eq!(v.claims["sub"], WORKLOAD);
        assert_eq!(v.claims["aud"], serde_json::json!(["svc-a", "svc-b"]));
    }
    let two = validate(&token2, "svc-a", &bundle);
    assert!(
        validate_jwt_svid(
            &token2,
            "svc-c",
            |_| Some(&bundle),
            SystemTime::now(),
            Duration::ZERO
        )
        .is_err()
    );
    assert_eq!(json["spiffe_id"], WORKLOAD);
    assert_eq!(json["audience"], serde_json::json!(["svc-a", "svc-b"]));
    assert_eq!(json["expires_at"], two.claims["exp"]);
    assert_eq!(json["issued_at"], two.claims["iat"]);
    assert_eq!(json["jti"], two.claims["jti"]);
    assert_eq!(json["key_id"], two.key_id.as_str());
    assert_eq!(claim_i64(&two, "exp") - claim_i64(&two, "iat"), 300);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - 60..=now).contains(&claim_i64(&two, "iat")), "{now}");
    // A fresh `jti` per token.
    let jti1 = one.claims["jti"].as_str().unwrap().to_owned();
    let jti2 = two.claims["jti"].as_str().unwrap().to_owned();
    assert_ne!(jti1, jti2);
    assert_eq!(jti1.len(), 22, "{jti1}");

    // Counted like the node API's JWT-SVIDs.
    assert_eq!(jwt_signatures(&issuer), 2);
    // Bearer tokens never reach the issuer's logs.
    let logs = issuer.logs().join("\n");
    assert!(logs.contains("\"method\":\"MintJwtSvid\""), "{logs}");
    for t in [&token, &token2] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token is in the logs");
    }

    issuer.terminate().unwrap();
    let events = issuer.audit_log().await.unwrap();
    let minted: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.event.kind == "jwt.mint")
        .collect();
    assert_eq!(minted.len(), 2, "{events:?}");
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    for (e, v, aud) in [
        (minted[0], &one, serde_json::json!(["svc"])),
        (minted[1], &two, serde_json::json!(["svc-a", "svc-b"])),
    ] {
        assert_eq!(e.event.actor, format!("admin:uid={uid}"));
        assert_eq!(e.event.subject, WORKLOAD);
        assert_eq!(e.event.outcome, "ok");
        assert_eq!(
            e.event.details,
            serde_json::json!({
                "audience": aud,
                "jti": v.claims["jti"],
                "kid": v.key_id,
                "exp": v.claims["exp"],
            })
        );
    }
    let all = serde_json::to_string(&events).unwrap();
    for t in [&token, &token2] {
        for segment in t.split('.').skip(1) {
            assert!(!all.contains(segment), "a token is in the audit log");
        }
    }
}

#[test]
fn jwt_mint_iss_is_the_configured_jwt_issuer() {
    let issuer = IssuerBuilder::new()
        .set_str("jwt_issuer", "https://oidc.example.org")
        .start()
        .unwrap();
    let bundle = own_bundle(&issuer);
    let token = mint(
        &issuer,
        &["--spiffe-id", WORKLOAD, "--audience", "svc", "--ttl", "90s"],
    )
    .ok()
    .unwrap();
    let v = validate(token.trim_end(), "svc", &bundle);
    assert_eq!(v.claims["iss"], "https://oidc.example.org");
    assert_eq!(v.claims["sub"], WORKLOAD);
    assert_eq!(claim_i64(&v, "exp") - claim_i64(&v, "iat"), 90);
}

#[tokio::test]
async fn jwt_mint_refuses_bad_arguments_with_their_reason() {
    let mut issuer = Issuer::start().unwrap();
    let aud = ["--audience", "svc"];
    let id = ["--spiffe-id", WORKLOAD];
    // Refused by the issuer: exit 1, `jwt mint: <reason>`.
    let refused_by_issuer: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--spiffe-id", "spiffe://other.org/w", "--audience", "svc"],
            "spiffe_id \"spiffe://other.org/w\" is outside trust domain example.org",
        ),
        (
            vec!["--spiffe-id", "spiffe://example.org", "--audience", "svc"],
            "spiffe_id \"spiffe://example.org\" has no path",
        ),
        (
            vec!["--spiffe-id", "spiffe://example.org/", "--audience", "svc"],
            "is not a valid SPIFFE ID",
        ),
        (
            vec!["--spiffe-id", "not-an-id", "--audience", "svc"],
            "spiffe_id \"not-an-id\" is not a valid SPIFFE ID",
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://example.org/signet/issuer",
                "--audience",
                "svc",
            ],
            "is reserved: paths under /signet/ belong to the issuer and its agents",
        ),
        (
            [&id[..], &["--audience", ""]].concat(),
            "audience 1 of 1 is empty",
        ),
        (
            [&id[..], &["--audience", "a", "--audience", ""]].concat(),
            "audience 2 of 2 is empty",
        ),
        (
            [&id[..], &aud[..], &["--ttl", "25h"]].concat(),
            "ttl 90000s is out of range: expected 1s to 86400s (the longest JWT-SVID TTL)",
        ),
    ];
    for (args, reason) in refused_by_issuer {
        let out = mint(&issuer, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("jwt mint: "), "{args:?}: {out:?}");
        assert!(out.stderr.contains(reason), "{args:?}: {}", out.stderr);
    }
    // Refused by the command line: exit 2, the flag named.
    let refused_by_cli: Vec<(Vec<&str>, &str)> = vec![
        (
            id.to_vec(),
            "the following required arguments were not provided:\n  --audience <AUD>",
        ),
        (aud.to_vec(), "--spiffe-id <ID>"),
        (
            [&id[..], &aud[..], &["--ttl", "0s"]].concat(),
            "invalid value '0s' for '--ttl <DUR>': \"0s\": a TTL must be at least 1s",
        ),
        (
            [&id[..], &aud[..], &["--ttl", "soon"]].concat(),
            "invalid value 'soon' for '--ttl <DUR>': \"soon\" is not a duration like 90s, 5m, 1h",
        ),
        (
            [&id[..], &aud[..], &["--ttl", "10"]].concat(),
            "invalid value '10' for '--ttl <DUR>'",
        ),
    ];
    for (args, reason) in refused_by_cli {
        let out = mint(&issuer, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert!(out.stderr.contains(reason), "{args:?}: {}", out.stderr);
    }

    // Nothing was signed, nothing audited.
    assert_eq!(jwt_signatures(&issuer), 0);
    issuer.terminate().unwrap();
    let events = issuer.audit_log().await.unwrap();
    assert!(
        !events.iter().any(|e| e.event.kind == "jwt.mint"),
        "{events:?}"
    );
}
