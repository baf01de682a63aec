//! `signet-issuer audit verify | trace | list` against the real binary: a tampered SQLite
//! database (an attacker with file access drops the append-only triggers) is caught and the seq
//! named; delegation chains written as the delegation code writes them are traced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use signet_tests::Issuer;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

/// Runs SQL on the issuer's database, as someone with access to the file would.
async fn sql(issuer: &Issuer, statements: &[&str]) {
    let path = issuer.data_dir().join("datastore.sqlite3");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for s in statements {
        sqlx::query(s).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

fn create_entries(issuer: &Issuer, prefix: &str, n: usize) {
    for i in 0..n {
        issuer
            .cli_ok(&[
                "entry",
                "create",
                "--spiffe-id",
                &format!("spiffe://example.org/{prefix}{i}"),
                "--parent-id",
                "spiffe://example.org/node/a",
                "--selector",
                &format!("unix:user:{prefix}{i}"),
            ])
            .unwrap();
    }
}

/// `audit verify --output json [ARGS]`: exit success and the report.
fn verify(issuer: &Issuer, args: &[&str]) -> (bool, Value, String) {
    let mut all = vec!["audit", "verify", "--output", "json"];
    all.extend_from_slice(args);
    let out = issuer.cli(&all).unwrap();
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", out.stdout, out.stderr));
    assert_eq!(v["ok"].as_bool().unwrap(), out.success(), "{v}");
    if !out.success() {
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    }
    (out.success(), v, out.stderr)
}

#[tokio::test]
async fn verify_detects_an_edited_row_a_deleted_row_and_a_truncated_tail() {
    let issuer = Issuer::start().unwrap();
    create_entries(&issuer, "w", 4);
    let events = issuer.audit_log().await.unwrap();
    let n = events.len() as i64;
    assert!(n >= 5, "ca.init and 4 entry.create");
    let head = events.last().unwrap().hash.clone();

    // Text output of a good log.
    let text = issuer.cli_ok(&["audit", "verify"]).unwrap();
    assert!(
        text.starts_with(&format!("ok: {n} events, head seq {n} hash {head}\n")),
        "{text}"
    );
    let (ok, v, _) = verify(&issuer, &[]);
    assert!(ok);
    assert_eq!(v["events"], json!(n));
    assert_eq!(v["head"], json!({"seq": n, "hash": head}));
    assert_eq!(v["anchors"], json!([]));

    // The triggers refuse edits: the attacker drops them first.
    let path = issuer.data_dir().join("datastore.sqlite3");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let refused = sqlx::query("UPDATE audit_events SET subject = 'x' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    conn.close().await.unwrap();
    sql(
        &issuer,
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        ],
    )
    .await;

    // 1. One row altered by hand.
    let original = &events[2];
    sql(
        &issuer,
        &["UPDATE audit_events SET actor = 'admin:uid=4242' WHERE seq = 3"],
    )
    .await;
    let out = issuer.cli(&["audit", "verify"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout
            .starts_with("FAILED: audit event seq 3 was modified: stored hash"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("audit verify: FAILED: audit event seq 3"),
        "{}",
        out.stderr
    );
    let (ok, v, _) = verify(&issuer, &[]);
    assert!(!ok);
    assert_eq!(v["chain_break"]["seq"], json!(3));
    assert_eq!(v["chain_break"]["kind"], json!("hash_mismatch"));
    assert_eq!(v["events"], json!(2));
    assert_eq!(v["head"]["seq"], json!(2));
    // Re-hashing the edited row does not help: the next row's link breaks.
    let fake = signet_store::audit_hash(
        &original.prev_hash,
        &signet_store::NewAuditEvent {
            actor: "admin:uid=4242".into(),
            ..original.event.clone()
        },
    );
    sql(
        &issuer,
        &[&format!(
            "UPDATE audit_events SET hash = '{fake}' WHERE seq = 3"
        )],
    )
    .await;
    let (ok, v, _) = verify(&issuer, &[]);
    assert!(!ok);
    assert_eq!(v["chain_break"]["seq"], json!(4));
    assert_eq!(v["chain_break"]["kind"], json!("broken_link"));
    // Restored: the log verifies again.
    sql(
        &issuer,
        &[&format!(
            "UPDATE audit_events SET actor = '{}', hash = '{}' WHERE seq = 3",
            original.event.actor, original.hash
        )],
    )
    .await;
    assert!(verify(&issuer, &[]).0);

    // 2. A deleted middle row.
    sql(&issuer, &["DELETE FROM audit_events WHERE seq = 2"]).await;
    let (ok, v, _) = verify(&issuer, &[]);
    assert!(!ok);
    assert_eq!(v["chain_break"]["seq"], json!(3));
    assert_eq!(v["chain_break"]["kind"], json!("seq_gap"));
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("audit chain broken at seq 3: expected seq 2"),
        "{v}"
    );
    // An anchor past the break is not compared.
    let (_, v, _) = verify(&issuer, &["--expect-head", &n.to_string()]);
    assert_eq!(v["anchors"][0]["status"], json!("unchecked"));
    let e = &events[1];
    sql(
        &issuer,
        &[&format!(
            "INSERT INTO audit_events (seq, time_ms, kind, actor, subject, outcome, details, prev_hash, hash) VALUES ({}, {}, '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
            e.seq,
            e.event.time_ms,
            e.event.kind,
            e.event.actor,
            e.event.subject,
            e.event.outcome,
            signet_store::canonical_json(&e.event.details).replace('\'', "''"),
            e.prev_hash,
            e.hash
        )],
    )
    .await;
    let (ok, v, _) = verify(&issuer, &[&format!("--expect-head={n}:{head}")]);
    assert!(ok, "{v}");
    assert_eq!(v["anchors"][0]["status"], json!("matched"));

    // 3. A truncated tail: the rest is a valid chain, only an anchor shows it.
    sql(
        &issuer,
        &[&format!("DELETE FROM audit_events WHERE seq >= {}", n - 1)],
    )
    .await;
    let (ok, v, _) = verify(&issuer, &[]);
    assert!(ok, "without an anchor the cut is invisible: {v}");
    assert_eq!(v["head"]["seq"], json!(n - 2));
    let (ok, v, stderr) = verify(&issuer, &["--expect-head", &format!("{n}:{head}")]);
    assert!(!ok);
    assert_eq!(v["chain_break"], Value::Null);
    assert_eq!(v["anchors"][0]["status"], json!("truncated"));
    let want = format!(
        "FAILED: the audit log ends at seq {}, but the --expect-head recorded seq {n} (hash {head}): events {}..{n} are missing (truncated)",
        n - 2,
        n - 1
    );
    assert_eq!(v["summary"], json!(want));
    assert!(stderr.contains(&want), "{stderr}");
    // New events after the cut take the removed seqs: the anchor's hash no longer matches.
    create_entries(&issuer, "after-cut-", 2);
    let (ok, v, _) = verify(&issuer, &["--expect-head", &format!("{n}:{head}")]);
    assert!(!ok);
    assert_eq!(v["anchors"][0]["status"], json!("hash_mismatch"));
    // Bad --expect-head values are refused before any call.
    for bad in ["0", "abc", "3:123"] {
        let err = issuer
            .cli_err(&["audit", "verify", "--expect-head", bad])
            .unwrap();
        assert!(err.contains("--expect-head"), "{bad}: {err}");
    }
}

const ALICE: &str = "https://idp.example.com#alice";
const PLANNER: &str = "spiffe://example.org/planner";
const SEARCH: &str = "spiffe://example.org/search";

/// Appends an event through the store, as `issuer::audit::record` would.
async fn append(
    store: &dyn signet_store::Store,
    kind: &str,
    actor: &str,
    outcome: &str,
    details: Value,
) {
    store
        .append_audit_event(signet_store::NewAuditEvent {
            time_ms: 1_900_000_000_000,
            kind: kind.into(),
            actor: actor.into(),
            subject: ALICE.into(),
            outcome: outcome.into(),
            details,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn trace_and_list_delegation_events() {
    let issuer = Issuer::start().unwrap();
    // The delegation code's events, written into the running issuer's store.
    let store = signet_store::open(&issuer.sqlite_url()).await.unwrap();
    let s = store.as_ref();
    append(
        s,
        "delegation.mint",
        PLANNER,
        "ok",
        json!({"token_id": "tok-1", "parent_token_id": null, "chain": [PLANNER], "authorized_by": PLANNER,
               "rights": ["flights:read", "flights:book"], "revocation_ids": ["aa01"], "expires_at": 1_900_003_600, "root_key_id": 1}),
    )
    .await;
    append(
        s,
        "delegation.hop",
        PLANNER,
        "ok",
        json!({"token_id": "tok-2", "parent_token_id": "tok-1", "chain": [PLANNER, SEARCH], "authorized_by": PLANNER,
               "rights": ["flights:read"], "revocation_ids": ["aa01", "bb02"], "expires_at": 1_900_001_800, "root_key_id": 1}),
    )
    .await;
    append(
        s,
        "delegation.denied",
        SEARCH,
        "denied",
        json!({"token_id": null, "parent_token_id": "tok-2", "chain": [PLANNER, SEARCH, "spiffe://example.org/booker"],
               "authorized_by": SEARCH, "rights": ["flights:book"], "reason": "right flights:book is not held by tok-2"}),
    )
    .await;
    append(
        s,
        "delegation.revoke",
        "admin:uid=0",
        "ok",
        json!({"token_id": "tok-2", "revoked_token_ids": ["tok-2"], "revocation_ids": ["bb02"], "reason": "search agent retired"}),
    )
    .await;

    let text = issuer
        .cli_ok(&["audit", "trace", "--token-id", "tok-2"])
        .unwrap();
    for needle in [
        "Delegation chain of token tok-2 (2 tokens, complete)",
        &format!("Subject: {ALICE}"),
        "└── delegation.mint 2030-03-17T17:46:40.000Z",
        "    └── delegation.hop 2030-03-17T17:46:40.000Z",
        "token          tok-2 (from tok-1)",
        &format!("authorized by  {PLANNER}"),
        &format!("holder         {SEARCH}"),
        "rights         flights:read, flights:book",
        "rights         flights:read\n",
        "DENIED",
        "right flights:book is not held by tok-2",
        "REVOKED",
        "search agent retired",
        &format!("Current holder: {SEARCH}"),
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains("Warnings"), "{text}");

    let v = issuer
        .cli_json(&["audit", "trace", "--token-id", "tok-2", "--output", "json"])
        .unwrap();
    assert_eq!(v["holder"], json!(SEARCH));
    assert_eq!(v["complete"], json!(true));
    let hops = v["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 2);
    assert_eq!(hops[0]["token_id"], json!("tok-1"));
    assert_eq!(hops[0]["parent_token_id"], Value::Null);
    assert_eq!(hops[0]["revoked"], json!(false));
    assert_eq!(hops[1]["authorized_by"], json!(PLANNER));
    assert_eq!(hops[1]["time"], json!("2030-03-17T17:46:40.000Z"));
    assert_eq!(hops[1]["expires"], json!("2030-03-17T18:16:40Z"));
    assert_eq!(hops[1]["revoked"], json!(true));
    let kinds: Vec<&str> = hops[1]["related"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["delegation.denied", "delegation.revoke"]);

    let err = issuer
        .cli_err(&["audit", "trace", "--token-id", "tok-404"])
        .unwrap();
    assert!(
        err.contains("audit trace: no delegation token \"tok-404\" in the audit log"),
        "{err}"
    );
    let err = issuer
        .cli_err(&["audit", "trace", "--token-id", ""])
        .unwrap();
    assert!(err.contains("invalid token id: must not be empty"), "{err}");

    // audit list: filters, paging, JSON.
    let v = issuer
        .cli_json(&[
            "audit",
            "list",
            "--kind",
            "delegation.*",
            "--output",
            "json",
        ])
        .unwrap();
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "delegation.mint",
            "delegation.hop",
            "delegation.denied",
            "delegation.revoke"
        ]
    );
    assert_eq!(v[1]["details"]["parent_token_id"], json!("tok-1"));
    assert_eq!(v[1]["hash"].as_str().unwrap().len(), 64);
    let v = issuer
        .cli_json(&[
            "audit",
            "list",
            "--kind",
            "delegation.hop",
            "--output",
            "json",
        ])
        .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let all = issuer
        .cli_json(&["audit", "list", "--limit", "0", "--output", "json"])
        .unwrap();
    let n = all.as_array().unwrap().len();
    let two = issuer
        .cli_json(&[
            "audit", "list", "--after", "1", "--limit", "2", "--output", "json",
        ])
        .unwrap();
    let seqs: Vec<i64> = two
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    let text = issuer.cli_ok(&["audit", "list"]).unwrap();
    assert_eq!(text.lines().count(), n + 1, "{text}");
    assert!(text.contains("delegation.revoke"), "{text}");
    let err = issuer.cli_err(&["audit", "list", "--kind", "a*b"]).unwrap();
    assert!(err.contains("`*` is only allowed at the end"), "{err}");
    // The events written this way are part of the verified chain.
    assert!(
        issuer
            .cli_ok(&["audit", "verify"])
            .unwrap()
            .starts_with("ok: ")
    );
}
