//! Interoperability: a token minted and delegated twice by this crate, with real keys, verifies in
//! Python with biscuit-python (`tests/python/biscuit_verify.py`) given only the published keys
//! document, which reads the same subject, actors and rights; a tampered token, a wrong key and an
//! unpublished root key are refused there, and facts of untrusted blocks are ignored there too.
//!
//! The virtualenv is `$SIGNET_VENV` (`scripts/test.sh` creates it from
//! `tests/python/requirements.txt`); without it the test is skipped, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::Algorithm;
use serde_json::Value;
use signet_delegation::{
    Attenuation, Biscuit, DelegationKeys, HopRequest, KeyPair, MintRequest, PublicKey, Subject,
    SubjectKind, append_hop, attenuate, mint, read_chain,
};
use signet_spiffe::SpiffeId;

const PLANNER: &str = "spiffe://example.org/planner";
const SEARCH: &str = "spiffe://example.org/search";
const FLIGHTS: &str = "spiffe://example.org/flights";

fn python() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let Some(venv) = std::env::var_os("SIGNET_VENV").filter(|v| !v.is_empty()) else {
        assert!(!ci, "CI=true but SIGNET_VENV is not set");
        println!(
            "SKIPPED: SIGNET_VENV is not set (scripts/test.sh creates .venv from tests/python/requirements.txt)"
        );
        return None;
    };
    let python = PathBuf::from(venv).join("bin/python");
    assert!(python.exists(), "{} does not exist", python.display());
    Some(python)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/biscuit_verify.py")
}

/// Runs the script; returns its exit code and its JSON document.
fn run(python: &Path, token: &str, keys: &Path, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(python)
        .arg(script())
        .arg(token)
        .arg("--keys")
        .arg(keys)
        .args(extra)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env_remove("PYTHONPATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let doc = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "biscuit_verify.py printed no JSON ({}):\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            )
        });
    (out.status.code().unwrap_or(-1), doc)
}

fn rights(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn hop(token: &Biscuit, signer: &KeyPair, trusted: &[PublicKey], to: &str, tid: &str) -> Biscuit {
    let now = SystemTime::now();
    let chain = read_chain(token, trusted).unwrap();
    append_hop(
        token,
        &chain,
        signer,
        &HopRequest {
            token_id: tid.into(),
            next_actor: SpiffeId::parse(to).unwrap(),
            rights: rights(&["flights:read"]),
            at: now,
            expires_at: now + Duration::from_secs(300),
        },
    )
    .unwrap()
}

#[test]
fn a_minted_and_twice_delegated_token_verifies_in_biscuit_python_with_the_published_keys() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The root key signs the authority block; the issuer's (other) published key signs the hops.
    let root = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let issuer = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let now = SystemTime::now();
    let t0 = mint(
        &root,
        4,
        &MintRequest {
            token_id: "t0".into(),
            subject: Subject {
                id: "https://idp.example.com#alice".into(),
                kind: SubjectKind::User,
                issuer: "https://idp.example.com".into(),
                name: "alice@example.com".into(),
            },
            actor: SpiffeId::parse(PLANNER).unwrap(),
            rights: rights(&["flights:read", "flights:book"]),
            issued_at: now,
            expires_at: now + Duration::from_secs(600),
            max_depth: 2,
        },
    )
    .unwrap();
    let both = [root.public(), issuer.public()];
    let t1 = hop(&t0, &issuer, &both, SEARCH, "t1");
    let t2 = hop(&t1, &issuer, &both, FLIGHTS, "t2");
    let token = t2.to_base64().unwrap();
    let published = DelegationKeys::from_keys([(4, root.public()), (5, issuer.public())]);
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, published.to_json()).unwrap();

    let (code, doc) = run(&python, &token, &keys, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["root_key_id"], 4);
    assert_eq!(doc["subject"], "https://idp.example.com#alice");
    assert_eq!(doc["subject_type"], "user");
    assert_eq!(doc["subject_issuer"], "https://idp.example.com");
    assert_eq!(doc["subject_name"], "alice@example.com");
    assert_eq!(strings(&doc["actors"]), [PLANNER, SEARCH, FLIGHTS]);
    assert_eq!(doc["holder"], FLIGHTS);
    assert_eq!(strings(&doc["rights"]), ["flights:read"]);
    assert_eq!(strings(&doc["granted"]), ["flights:book", "flights:read"]);
    assert_eq!(doc["token_id"], "t2");
    assert_eq!(doc["hops"][2]["delegated_by"], SEARCH);
    assert_eq!(doc["hops"][2]["parent_token_id"], "t1");
    assert_eq!(doc["depth"], 2);
    // The same as the Rust side reads.
    let chain = read_chain(&t2, &[root.public(), issuer.public()]).unwrap();
    assert_eq!(doc["expires_at"], chain.expires_at);
    assert_eq!(
        strings(&doc["revocation_ids"]),
        chain
            .revocation_ids
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    // Authorized there as here: the holder may read, not book; nobody else may read.
    let (code, doc) = run(
        &python,
        &token,
        &keys,
        &["--operation", "flights:read", "--presenter", FLIGHTS],
    );
    assert_eq!((code, &doc["authorized"]), (0, &Value::Bool(true)), "{doc}");
    let (code, doc) = run(
        &python,
        &token,
        &keys,
        &["--operation", "flights:book", "--presenter", FLIGHTS],
    );
    assert_eq!(
        (code, &doc["authorized"]),
        (6, &Value::Bool(false)),
        "{doc}"
    );
    let (code, _) = run(
        &python,
        &token,
        &keys,
        &["--operation", "flights:read", "--presenter", SEARCH],
    );
    assert_eq!(code, 6);
    // After the hop's expiry.
    let later = (chain.expires_at + 10).to_string();
    let (code, _) = run(
        &python,
        &token,
        &keys,
        &["--operation", "flights:read", "--now", &later],
    );
    assert_eq!(code, 6);

    // Untrusted blocks add no actor: an offline attenuation claiming one, and a third-party
    // block signed by a key nobody published.
    let forged = t2
        .append(
            biscuit_auth::BlockBuilder::new()
                .code(r#"actor(3, "spiffe://example.org/evil"); right("admin");"#)
                .unwrap(),
        )
        .unwrap();
    let attacker = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let request = forged.third_party_request().unwrap();
    let block = biscuit_auth::BlockBuilder::new()
        .code(r#"actor(3, "spiffe://example.org/evil"); hop(3, "x", "t2"); delegated_by(3, "spiffe://example.org/flights");"#)
        .unwrap();
    let forged = forged
        .append_third_party(
            attacker.public(),
            request.create_block(&attacker.private(), block).unwrap(),
        )
        .unwrap();
    let narrowed = attenuate(
        &forged,
        &Attenuation {
            rights: Some(rights(&["flights:read"])),
            expires_at: None,
        },
    )
    .unwrap();
    let (code, doc) = run(&python, &narrowed.to_base64().unwrap(), &keys, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(strings(&doc["actors"]), [PLANNER, SEARCH, FLIGHTS]);
    assert_eq!(strings(&doc["rights"]), ["flights:read"]);
    assert_eq!(doc["blocks"], 6);
}

#[test]
fn biscuit_python_refuses_a_tampered_token_a_wrong_key_and_an_unpublished_root_key() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let now = SystemTime::now();
    let t0 = mint(
        &root,
        4,
        &MintRequest {
            token_id: "t0".into(),
            subject: Subject {
                id: "spiffe://example.org/reports".into(),
                kind: SubjectKind::Workload,
                issuer: "example.org".into(),
                name: String::new(),
            },
            actor: SpiffeId::parse(PLANNER).unwrap(),
            rights: rights(&["flights:read"]),
            issued_at: now,
            expires_at: now + Duration::from_secs(600),
            max_depth: 2,
        },
    )
    .unwrap();
    let t1 = hop(&t0, &root, &[root.public()], SEARCH, "t1");
    let token = t1.to_base64().unwrap();
    let write = |name: &str, keys: DelegationKeys| {
        let p = dir.path().join(name);
        std::fs::write(&p, keys.to_json()).unwrap();
        p
    };
    let good = write("good.json", DelegationKeys::from_keys([(4, root.public())]));
    let (code, doc) = run(&python, &token, &good, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["subject"], "spiffe://example.org/reports");
    assert_eq!(doc["subject_type"], "workload");
    assert_eq!(strings(&doc["actors"]), [PLANNER, SEARCH]);

    // One byte of the signed payload flipped.
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE;
    let mut bytes = engine.decode(&token).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    let (code, doc) = run(&python, &engine.encode(&bytes), &good, &[]);
    assert_eq!(code, 4, "{doc}");
    assert_eq!(doc["verified"], false);

    // Another key published under the token's root key id.
    let other = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let wrong = write(
        "wrong.json",
        DelegationKeys::from_keys([(4, other.public())]),
    );
    let (code, doc) = run(&python, &token, &wrong, &[]);
    assert_eq!(
        (code, &doc["stage"]),
        (4, &Value::from("signature")),
        "{doc}"
    );

    // The right key, but under another id: the token's root key id is not published.
    let moved = write(
        "moved.json",
        DelegationKeys::from_keys([(9, root.public())]),
    );
    let (code, doc) = run(&python, &token, &moved, &[]);
    assert_eq!(
        (code, &doc["stage"]),
        (3, &Value::from("root_key")),
        "{doc}"
    );

    // The hop signed by an unpublished key: the chain stops at the first actor, who is no longer
    // the holder... and the signature of the hop block itself still verifies.
    let rogue = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let t1_rogue = hop(&t0, &rogue, &[root.public()], SEARCH, "t1");
    let (code, doc) = run(&python, &t1_rogue.to_base64().unwrap(), &good, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(strings(&doc["actors"]), [PLANNER]);
}
