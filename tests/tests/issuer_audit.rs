//! Every admin mutation of the real `signet-issuer` leaves an audit event in the store, with the
//! caller's uid and without secrets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use signet_tests::Issuer;

#[tokio::test]
async fn admin_mutations_are_audited_without_secrets() {
    let mut issuer = Issuer::start().unwrap();
    let entry = issuer
        .cli_json(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/a",
            "--parent-id",
            "spiffe://example.org/node/a",
            "--selector",
            "unix:uid:1",
            "--output",
            "json",
        ])
        .unwrap();
    let id = entry["id"].as_str().unwrap().to_owned();
    issuer
        .cli_ok(&["entry", "update", "--id", &id, "--hint", "h"])
        .unwrap();
    issuer.cli_ok(&["entry", "delete", "--id", &id]).unwrap();
    let token = issuer.join_token(None).unwrap();
    let minted = issuer
        .cli_ok(&["x509", "mint", "--spiffe-id", "spiffe://example.org/m"])
        .unwrap();
    let key_line = minted
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY"))
        .nth(1)
        .unwrap()
        .to_owned();
    issuer.cli_ok(&["ca", "prepare"]).unwrap();
    issuer.cli_ok(&["ca", "activate"]).unwrap();
    // A refused call is not a mutation: nothing is recorded for it.
    issuer
        .cli_err(&["entry", "delete", "--id", "nope"])
        .unwrap();
    issuer.terminate().unwrap();

    let events = issuer.audit_log().await.unwrap();
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let actor = format!("admin:uid={uid}");
    let admin: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.event.actor == actor)
        .map(|e| (e.event.kind.as_str(), e.event.outcome.as_str()))
        .collect();
    assert_eq!(
        admin,
        vec![
            ("entry.create", "ok"),
            ("entry.update", "ok"),
            ("entry.delete", "ok"),
            ("join_token.generate", "ok"),
            ("x509.mint", "ok"),
            ("ca.prepare", "ok"),
            ("ca.activate", "ok"),
        ]
    );
    assert!(events.iter().any(|e| e.event.kind == "ca.init"));
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&token), "the join token is in the audit log");
    assert!(
        !all.contains(&key_line),
        "the minted key is in the audit log"
    );
    let delete = events
        .iter()
        .find(|e| e.event.kind == "entry.delete")
        .unwrap();
    assert_eq!(delete.event.subject, id);
}
