//! The admin CLI of the real `signet-issuer` binary against a real issuer (SQLite store).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;
use signet_tests::{Issuer, IssuerBuilder, have_openssl};

const AGENT: &str = "spiffe://example.org/signet/agent/join_token/abc";

fn create_web_entry(issuer: &Issuer) -> Value {
    issuer
        .cli_json(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--parent-id",
            AGENT,
            "--selector",
            "unix:uid:1000",
            "--selector",
            "docker:label:app=web",
            "--x509-svid-ttl",
            "30m",
            "--jwt-svid-ttl",
            "90s",
            "--dns-name",
            "web.example.org",
            "--hint",
            "frontend",
            "--federates-with",
            "partner.org",
            "--downstream",
            "--output",
            "json",
        ])
        .unwrap()
}

fn entries(issuer: &Issuer, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["entry", "show", "--output", "json"];
    args.extend_from_slice(filter);
    issuer.cli_json(&args).unwrap().as_array().unwrap().clone()
}

#[test]
fn entry_create_then_show_json_round_trip() {
    let issuer = Issuer::start().unwrap();
    let created = create_web_entry(&issuer);
    let id = created["id"].as_str().unwrap();
    assert!(!id.is_empty());

    let all = entries(&issuer, &[]);
    assert_eq!(all.len(), 1);
    let e = &all[0];
    assert_eq!(e, &created);
    assert_eq!(e["spiffe_id"], "spiffe://example.org/web");
    assert_eq!(e["parent_id"], AGENT);
    // Sorted: docker before unix.
    assert_eq!(
        e["selectors"],
        serde_json::json!([
            {"type": "docker", "value": "label:app=web"},
            {"type": "unix", "value": "uid:1000"}
        ])
    );
    assert_eq!(e["x509_svid_ttl"], 1800);
    assert_eq!(e["jwt_svid_ttl"], 90);
    assert_eq!(e["dns_names"], serde_json::json!(["web.example.org"]));
    assert_eq!(e["hint"], "frontend");
    assert_eq!(e["federates_with"], serde_json::json!(["partner.org"]));
    assert_eq!(e["downstream"], true);
    assert_eq!(e["admin"], false);
    assert_eq!(e["expires_at"], Value::Null);

    // Text output names the fields.
    let text = issuer.cli_ok(&["entry", "show", "--id", id]).unwrap();
    assert!(text.starts_with("Found 1 entry\n"), "{text}");
    assert!(
        text.contains("SPIFFE ID        : spiffe://example.org/web"),
        "{text}"
    );
    assert!(text.contains("Selector         : unix:uid:1000"), "{text}");
}

#[test]
fn entry_show_filters() {
    let issuer = Issuer::start().unwrap();
    let web = create_web_entry(&issuer);
    let db = issuer
        .cli_json(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/db",
            "--parent-id",
            "spiffe://example.org/node/b",
            "--selector",
            "unix:uid:1000",
            "--output",
            "json",
        ])
        .unwrap();
    let ids = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(entries(&issuer, &[]).len(), 2);
    assert_eq!(
        ids(entries(
            &issuer,
            &["--spiffe-id", "spiffe://example.org/db"]
        )),
        vec![db["id"].as_str().unwrap()]
    );
    assert_eq!(
        ids(entries(&issuer, &["--parent-id", AGENT])),
        vec![web["id"].as_str().unwrap()]
    );
    assert_eq!(entries(&issuer, &["--selector", "unix:uid:1000"]).len(), 2);
    assert_eq!(
        ids(entries(&issuer, &["--selector", "docker:label:app=web"])),
        vec![web["id"].as_str().unwrap()]
    );
    assert_eq!(
        ids(entries(&issuer, &["--id", db["id"].as_str().unwrap()])),
        vec![db["id"].as_str().unwrap()]
    );
    assert!(entries(&issuer, &["--spiffe-id", "spiffe://example.org/none"]).is_empty());
    let err = issuer
        .cli_err(&["entry", "show", "--id", "no-such-id"])
        .unwrap();
    assert!(
        err.starts_with("entry show: entry \"no-such-id\" not found"),
        "{err}"
    );
}

#[test]
fn entry_update_and_delete() {
    let issuer = Issuer::start().unwrap();
    let created = create_web_entry(&issuer);
    let id = created["id"].as_str().unwrap();
    let updated = issuer
        .cli_json(&[
            "entry",
            "update",
            "--id",
            id,
            "--selector",
            "unix:uid:2000",
            "--x509-svid-ttl",
            "2h",
            "--admin",
            "true",
            "--clear-dns-names",
            "--output",
            "json",
        ])
        .unwrap();
    assert_eq!(
        updated["selectors"],
        serde_json::json!([{"type": "unix", "value": "uid:2000"}])
    );
    assert_eq!(updated["x509_svid_ttl"], 7200);
    assert_eq!(updated["admin"], true);
    assert_eq!(updated["dns_names"], serde_json::json!([]));
    // Untouched fields are kept.
    assert_eq!(updated["hint"], "frontend");
    assert_eq!(updated["spiffe_id"], "spiffe://example.org/web");
    assert!(updated["revision"].as_i64().unwrap() > created["revision"].as_i64().unwrap());
    assert_eq!(entries(&issuer, &[])[0], updated);

    // An invalid update changes nothing.
    let err = issuer
        .cli_err(&[
            "entry",
            "update",
            "--id",
            id,
            "--spiffe-id",
            "spiffe://other.org/x",
        ])
        .unwrap();
    assert_eq!(
        err.trim(),
        "entry update: spiffe_id \"spiffe://other.org/x\" is outside trust domain example.org"
    );
    assert_eq!(entries(&issuer, &[])[0], updated);

    let out = issuer.cli_ok(&["entry", "delete", "--id", id]).unwrap();
    assert_eq!(out, format!("Deleted entry {id}\n"));
    assert!(entries(&issuer, &[]).is_empty());
    let err = issuer.cli_err(&["entry", "delete", "--id", id]).unwrap();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn bad_entries_are_refused_and_nothing_is_stored() {
    let issuer = Issuer::start().unwrap();
    let create = |spiffe_id: &str, parent_id: &str, selector: &str| {
        issuer
            .cli_err(&[
                "entry",
                "create",
                "--spiffe-id",
                spiffe_id,
                "--parent-id",
                parent_id,
                "--selector",
                selector,
            ])
            .unwrap()
    };
    let web = "spiffe://example.org/web";
    for (id, reason) in [
        ("example.org/web", "must start with the lowercase scheme"),
        ("spiffe://Example.org/web", "trust domain contains 'E'"),
        ("spiffe://example.org/a//b", "empty segment"),
        ("spiffe://example.org/a/../b", "'.' or '..'"),
        ("spiffe://example.org/web/", "must not end with '/'"),
        ("spiffe://example.org:8443/web", "must not contain a port"),
        ("spiffe://example.org/web?x=1", "must not contain a query"),
        ("spiffe://example.org/w%41b", "percent-encoded"),
    ] {
        let err = create(id, AGENT, "unix:uid:1");
        assert!(
            err.starts_with(&format!(
                "entry create: spiffe_id {id:?} is not a valid SPIFFE ID: "
            )),
            "{id}: {err}"
        );
        assert!(err.contains(reason), "{id}: {err}");
    }
    assert_eq!(
        create("spiffe://other.org/x", AGENT, "unix:uid:1").trim(),
        "entry create: spiffe_id \"spiffe://other.org/x\" is outside trust domain example.org"
    );
    assert_eq!(
        create(web, "spiffe://other.org/agent", "unix:uid:1").trim(),
        "entry create: parent_id \"spiffe://other.org/agent\" is outside trust domain example.org"
    );
    assert!(
        create("spiffe://example.org/signet/issuer", AGENT, "unix:uid:1")
            .contains("is reserved: paths under /signet/")
    );
    assert_eq!(
        create(web, AGENT, "nocolon").trim(),
        "entry create: --selector \"nocolon\": a selector is TYPE:VALUE"
    );
    assert_eq!(
        create(web, AGENT, ":uid:1").trim(),
        "entry create: --selector \":uid:1\": the type before ':' is empty (a selector is TYPE:VALUE)"
    );
    assert!(create(web, AGENT, "unix:").contains("the value after ':' is empty"));

    let err = issuer
        .cli_err(&["entry", "create", "--spiffe-id", web, "--parent-id", AGENT])
        .unwrap();
    assert_eq!(
        err.trim(),
        "entry create: at least one selector (TYPE:VALUE) is required"
    );
    for (flag, value, reason) in [
        (
            "--dns-name",
            "bad_name.example.org",
            "dns_name \"bad_name.example.org\"",
        ),
        (
            "--dns-name",
            "a.*.example.org",
            "only allowed as the leftmost label",
        ),
        (
            "--federates-with",
            "example.org",
            "is the issuer's own trust domain",
        ),
        (
            "--x509-svid-ttl",
            "48h",
            "x509_svid_ttl 172800s is out of range",
        ),
        (
            "--expires-at",
            "2001-01-01T00:00:00Z",
            "is not in the future",
        ),
    ] {
        let err = issuer
            .cli_err(&[
                "entry",
                "create",
                "--spiffe-id",
                web,
                "--parent-id",
                AGENT,
                "--selector",
                "unix:uid:1",
                flag,
                value,
            ])
            .unwrap();
        assert!(err.contains(reason), "{flag} {value}: {err}");
    }
    let hint = "h".repeat(1025);
    let err = issuer
        .cli_err(&[
            "entry",
            "create",
            "--spiffe-id",
            web,
            "--parent-id",
            AGENT,
            "--selector",
            "a:b",
            "--hint",
            &hint,
        ])
        .unwrap();
    assert!(err.contains("hint is 1025 bytes long"), "{err}");

    assert!(entries(&issuer, &[]).is_empty());

    // The same entry twice is refused.
    create_web_entry(&issuer);
    let err = issuer
        .cli_err(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--parent-id",
            AGENT,
            "--selector",
            "docker:label:app=web",
            "--selector",
            "unix:uid:1000",
        ])
        .unwrap();
    assert!(err.starts_with("entry create: "), "{err}");
    assert_eq!(entries(&issuer, &[]).len(), 1);
}

#[test]
fn token_generate_prints_the_token_once() {
    let issuer = Issuer::start().unwrap();
    let text = issuer.cli_ok(&["token", "generate"]).unwrap();
    let token = text.strip_prefix("Token: ").unwrap().trim();
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );

    let v = issuer
        .cli_json(&[
            "token",
            "generate",
            "--ttl",
            "1h",
            "--spiffe-id",
            "spiffe://example.org/node/rack-1",
            "--output",
            "json",
        ])
        .unwrap();
    let token2 = v["token"].as_str().unwrap();
    assert_ne!(token, token2);
    assert_eq!(
        v["agent_spiffe_id"],
        format!("spiffe://example.org/signet/agent/join_token/{token2}")
    );
    assert_eq!(v["alias_spiffe_id"], "spiffe://example.org/node/rack-1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let exp = v["expires_at"].as_i64().unwrap();
    assert!((now + 3500..=now + 3700).contains(&exp), "{exp} vs {now}");

    // The token never reaches the logs.
    let logs = issuer.logs().join("\n");
    assert!(!logs.contains(token) && !logs.contains(token2));

    for (args, reason) in [
        (
            vec!["--spiffe-id", "spiffe://other.org/node"],
            "is outside trust domain example.org",
        ),
        (
            vec!["--spiffe-id", "spiffe://example.org/signet/agent/x"],
            "is reserved",
        ),
        (vec!["--ttl", "30d"], "ttl 2592000s is out of range"),
        (vec!["--ttl", "soon"], "invalid value 'soon'"),
    ] {
        let mut a = vec!["token", "generate"];
        a.extend(args);
        let err = issuer.cli_err(&a).unwrap();
        assert!(err.contains(reason), "{a:?}: {err}");
    }
}

#[test]
fn x509_mint_write_dir_verifies_with_openssl() {
    let issuer = Issuer::start().unwrap();
    let dir = issuer.dir().join("minted");
    let out = issuer
        .cli_ok(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/tool",
            "--ttl",
            "10m",
            "--dns-name",
            "tool.example.org",
            "--write",
            dir.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        out.contains("X509-SVID for spiffe://example.org/tool"),
        "{out}"
    );
    let key_mode = std::fs::metadata(dir.join("svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let key = std::fs::read_to_string(dir.join("svid.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    // The key is never logged.
    assert!(
        !issuer
            .logs()
            .join("\n")
            .contains(key.lines().nth(1).unwrap())
    );

    // The SVID: one URI SAN with the ID, the DNS name, not a CA.
    let chain = std::fs::read(dir.join("svid.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&chain).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    use x509_parser::extensions::GeneralName;
    let uris: Vec<&str> = san
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec!["spiffe://example.org/tool"]);
    assert!(
        san.general_names
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName("tool.example.org")))
    );
    assert!(!cert.is_ca());
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(lifetime <= 600 + 60, "{lifetime}");

    // bundle.pem is what `bundle show --format pem` prints.
    let bundle = std::fs::read_to_string(dir.join("bundle.pem")).unwrap();
    assert_eq!(bundle, issuer.bundle_pem().unwrap());

    if !have_openssl() {
        eprintln!("SKIPPED: openssl verify (no openssl binary)");
        return;
    }
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("bundle.pem"))
        .arg(dir.join("svid.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn x509_mint_prints_pem_without_write_and_refuses_bad_ids() {
    let issuer = Issuer::start().unwrap();
    let out = issuer
        .cli_ok(&["x509", "mint", "--spiffe-id", "spiffe://example.org/tool"])
        .unwrap();
    assert!(out.starts_with("-----BEGIN CERTIFICATE-----"), "{out}");
    assert!(out.contains("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        out.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "{out}"
    );

    for (id, reason) in [
        (
            "spiffe://other.org/tool",
            "is outside trust domain example.org",
        ),
        ("spiffe://example.org", "has no path"),
        ("spiffe://example.org/signet/issuer", "is reserved"),
        ("not-an-id", "is not a valid SPIFFE ID"),
    ] {
        let err = issuer
            .cli_err(&["x509", "mint", "--spiffe-id", id])
            .unwrap();
        assert!(err.starts_with("x509 mint: "), "{err}");
        assert!(err.contains(reason), "{id}: {err}");
    }
    let err = issuer
        .cli_err(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/t",
            "--ttl",
            "48h",
        ])
        .unwrap();
    assert!(err.contains("ttl 172800s is out of range"), "{err}");
}

#[test]
fn bundle_show_pem_and_spiffe() {
    let issuer = Issuer::start().unwrap();
    let pem = issuer.bundle_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let default = issuer.cli_ok(&["bundle", "show"]).unwrap();
    assert_eq!(default, pem);

    let doc: Value = issuer
        .cli_json(&["bundle", "show", "--format", "spiffe"])
        .unwrap();
    let keys = doc["keys"].as_array().unwrap();
    let x509: Vec<&Value> = keys.iter().filter(|k| k["use"] == "x509-svid").collect();
    assert_eq!(x509.len(), pem.matches("BEGIN CERTIFICATE").count());
    assert_eq!(x509[0]["x5c"].as_array().unwrap().len(), 1);
    // The JWT signing key is published next to the CA.
    let jwt: Vec<&Value> = keys.iter().filter(|k| k["use"] == "jwt-svid").collect();
    assert_eq!(jwt.len(), 1, "{doc}");
    assert!(
        jwt[0]["kid"].as_str().is_some_and(|k| !k.is_empty()),
        "{doc}"
    );
    // So is the WIT-SVID signing key, a key of its own with its own kid.
    let wit: Vec<&Value> = keys.iter().filter(|k| k["use"] == "wit-svid").collect();
    assert_eq!(wit.len(), 1, "{doc}");
    assert!(
        wit[0]["kid"].as_str().is_some_and(|k| !k.is_empty()),
        "{doc}"
    );
    assert_ne!(wit[0]["kid"], jwt[0]["kid"], "{doc}");
    assert_eq!(keys.len(), x509.len() + jwt.len() + wit.len());
    assert!(doc["spiffe_sequence"].as_u64().is_some());
    assert!(doc["spiffe_refresh_hint"].as_u64().unwrap() > 0);
}

/// A PEM file with a self-signed CA certificate of another trust domain.
fn write_partner_pem(issuer: &Issuer) -> std::path::PathBuf {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "partner CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem_path = issuer.dir().join("partner.pem");
    std::fs::write(&pem_path, cert.pem()).unwrap();
    pem_path
}

#[test]
fn federated_bundle_set_list_delete() {
    let issuer = Issuer::start().unwrap();
    let pem_path = write_partner_pem(&issuer);

    let list = issuer
        .cli_json(&["bundle", "list", "--output", "json"])
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["trust_domain"], "example.org");
    assert_eq!(list[0]["own"], true);

    let set = |args: &[&str]| {
        let mut a = vec!["bundle", "set"];
        a.extend_from_slice(args);
        issuer.cli_ok(&a).unwrap()
    };
    let out = set(&[
        "--trust-domain",
        "partner.org",
        "--path",
        pem_path.to_str().unwrap(),
        "--format",
        "pem",
    ]);
    assert!(
        out.contains("Bundle of partner.org set (sequence 1, 1 X.509"),
        "{out}"
    );
    let shown = issuer
        .cli_ok(&[
            "bundle",
            "show",
            "--trust-domain",
            "partner.org",
            "--format",
            "pem",
        ])
        .unwrap();
    assert_eq!(
        shown,
        std::fs::read_to_string(&pem_path)
            .unwrap()
            .replace("\r\n", "\n")
    );

    // The SPIFFE format round-trips, with its sequence.
    let mut doc = issuer
        .cli_json(&[
            "bundle",
            "show",
            "--trust-domain",
            "partner.org",
            "--format",
            "spiffe",
        ])
        .unwrap();
    doc["spiffe_sequence"] = serde_json::json!(7);
    let json_path = issuer.dir().join("partner.json");
    std::fs::write(&json_path, doc.to_string()).unwrap();
    let out = set(&[
        "--trust-domain",
        "partner.org",
        "--path",
        json_path.to_str().unwrap(),
        "--format",
        "spiffe",
    ]);
    assert!(out.contains("(sequence 7, 1 X.509"), "{out}");

    // Replacing it from PEM continues the sequence.
    let out = set(&[
        "--id",
        "spiffe://partner.org",
        "--path",
        pem_path.to_str().unwrap(),
        "--format",
        "pem",
    ]);
    assert!(out.contains("(sequence 8,"), "{out}");

    let list = issuer
        .cli_json(&["bundle", "list", "--output", "json"])
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let partner = list
        .iter()
        .find(|b| b["trust_domain"] == "partner.org")
        .unwrap();
    assert_eq!(partner["own"], false);
    assert_eq!(partner["sequence"], 8);
    assert_eq!(partner["x509_authorities"], 1);
    let text = issuer.cli_ok(&["bundle", "list"]).unwrap();
    assert!(
        text.contains("partner.org") && text.contains("federated"),
        "{text}"
    );

    // The own trust domain is refused, as are bad documents.
    let err = issuer
        .cli_err(&[
            "bundle",
            "set",
            "--trust-domain",
            "example.org",
            "--path",
            pem_path.to_str().unwrap(),
            "--format",
            "pem",
        ])
        .unwrap();
    assert!(err.contains("is the issuer's own trust domain"), "{err}");
    let bad = issuer.dir().join("bad.json");
    std::fs::write(&bad, "{\"spiffe_sequence\": 1}").unwrap();
    let err = issuer
        .cli_err(&[
            "bundle",
            "set",
            "--trust-domain",
            "other.org",
            "--path",
            bad.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        err.contains("bundle of other.org: bundle document has no `keys` parameter"),
        "{err}"
    );
    let err = issuer
        .cli_err(&["bundle", "delete", "--trust-domain", "example.org"])
        .unwrap();
    assert!(err.contains("is the issuer's own trust domain"), "{err}");

    let out = issuer
        .cli_ok(&["bundle", "delete", "--trust-domain", "partner.org"])
        .unwrap();
    assert_eq!(out, "Deleted the bundle of partner.org\n");
    let list = issuer
        .cli_json(&["bundle", "list", "--output", "json"])
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let err = issuer
        .cli_err(&["bundle", "delete", "--trust-domain", "partner.org"])
        .unwrap();
    assert!(
        err.contains("no bundle for trust domain partner.org"),
        "{err}"
    );
}

#[test]
fn agent_commands_on_an_empty_store() {
    let issuer = Issuer::start().unwrap();
    let out = issuer
        .cli_ok(&["agent", "list", "--output", "json"])
        .unwrap();
    assert_eq!(out.trim(), "[]");
    let text = issuer.cli_ok(&["agent", "list"]).unwrap();
    assert_eq!(text, "Found 0 attested agents\n");
    for cmd in ["show", "evict", "ban", "unban"] {
        let err = issuer
            .cli_err(&["agent", cmd, "--spiffe-id", AGENT])
            .unwrap();
        assert!(
            err.starts_with(&format!("agent {cmd}: agent \"{AGENT}\" not found")),
            "{err}"
        );
    }
    let err = issuer
        .cli_err(&["agent", "show", "--spiffe-id", "spiffe://other.org/a"])
        .unwrap();
    assert!(err.contains("is outside trust domain example.org"), "{err}");
}

fn slots(issuer: &Issuer) -> Vec<Value> {
    issuer
        .cli_json(&["ca", "show", "--output", "json"])
        .unwrap()["slots"]
        .as_array()
        .unwrap()
        .clone()
}

fn states(slots: &[Value]) -> Vec<String> {
    let mut s: Vec<String> = slots
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .collect();
    s.sort();
    s
}

#[test]
fn ca_show_prepare_activate() {
    let issuer = Issuer::start().unwrap();
    let before = slots(&issuer);
    assert_eq!(states(&before), vec!["active"]);
    let active = before[0]["fingerprint_sha256"].as_str().unwrap().to_owned();
    let text = issuer.cli_ok(&["ca", "show"]).unwrap();
    assert!(text.contains("State            : active"), "{text}");
    let seq0 = issuer
        .cli_json(&["ca", "show", "--output", "json"])
        .unwrap()["bundle_sequence"]
        .as_u64()
        .unwrap();

    // Activating with nothing prepared is refused.
    let err = issuer.cli_err(&["ca", "activate"]).unwrap();
    assert!(err.starts_with("ca activate: "), "{err}");

    let prepared = issuer
        .cli_json(&["ca", "prepare", "--output", "json"])
        .unwrap();
    assert_eq!(
        states(prepared["slots"].as_array().unwrap()),
        vec!["active", "prepared"]
    );
    assert!(prepared["bundle_sequence"].as_u64().unwrap() > seq0);
    // The prepared CA is published at once.
    assert_eq!(
        issuer
            .bundle_pem()
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );

    let activated = issuer
        .cli_json(&["ca", "activate", "--output", "json"])
        .unwrap();
    let after = activated["slots"].as_array().unwrap();
    assert_eq!(states(after), vec!["active", "retired"]);
    let new_active = after.iter().find(|s| s["state"] == "active").unwrap();
    assert_ne!(new_active["fingerprint_sha256"], active.as_str());

    // Mints now chain to the new CA, and the bundle still holds the old one.
    let dir = issuer.dir().join("after-rotation");
    issuer
        .cli_ok(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/x",
            "--write",
            dir.to_str().unwrap(),
        ])
        .unwrap();
    if have_openssl() {
        let ok = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(dir.join("bundle.pem"))
            .arg(dir.join("svid.pem"))
            .status()
            .unwrap();
        assert!(ok.success());
    }

    // The state survives a restart (journal in the store, keys in data_dir).
    let mut issuer = issuer;
    issuer.restart().unwrap();
    assert_eq!(slots(&issuer), *after);
}

#[test]
fn healthcheck_and_missing_socket() {
    let issuer = Issuer::start().unwrap();
    let out = issuer.cli_ok(&["healthcheck"]).unwrap();
    assert!(
        out.starts_with("Issuer is healthy (trust domain example.org"),
        "{out}"
    );

    let missing = issuer.dir().join("nowhere/admin.sock");
    let out = Command::new(signet_tests::issuer_binary().unwrap())
        .arg("healthcheck")
        .arg("--socket-path")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "healthcheck: cannot connect to the admin socket {}",
            missing.display()
        )),
        "{err}"
    );
}

#[test]
fn admin_socket_directory_is_private() {
    let issuer = Issuer::start().unwrap();
    let dir = issuer.socket_path().parent().unwrap();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let sock = std::fs::metadata(issuer.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(sock & 0o077, 0, "socket mode {sock:o}");
    let data = std::fs::metadata(issuer.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(data & 0o077, 0, "data_dir mode {data:o}");
}

#[test]
fn admin_calls_are_audited_with_the_caller_uid() {
    let issuer = Issuer::start().unwrap();
    create_web_entry(&issuer);
    // Every admin call is logged in its RPC span with the caller's uid.
    let logs = issuer.logs();
    let line = logs
        .iter()
        .find(|l| l.contains("\"method\":\"CreateEntry\""))
        .unwrap_or_else(|| panic!("no CreateEntry log line in:\n{}", logs.join("\n")));
    let v: Value = serde_json::from_str(line).unwrap();
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    assert_eq!(v["span"]["actor"], format!("admin:uid={uid}"));
    assert_eq!(v["code"], "Ok");
    let (_, metrics) = issuer.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("signet_rpcs_total{api=\"admin\",method=\"CreateEntry\",code=\"Ok\"} 1"),
        "{metrics}"
    );
}

#[test]
fn custom_socket_path_via_config() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("sockdir/a.sock");
    let issuer = IssuerBuilder::new()
        .set_str("admin_socket_path", sock.to_str().unwrap())
        .start()
        .unwrap();
    assert_eq!(issuer.socket_path(), sock);
    issuer.cli_ok(&["healthcheck"]).unwrap();
}

#[test]
fn other_users_are_refused_by_peer_credentials() {
    // The 0700 directory already keeps other users out. To test the second line of defence (the
    // SO_PEERCRED check), expose the socket through a hard link in an open directory and call it
    // as `nobody`. Needs root (to switch user) and setpriv.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let have_setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if uid != 0 || !have_setpriv {
        eprintln!("SKIPPED: needs root and setpriv to call the admin API as another user");
        return;
    }
    let issuer = Issuer::start().unwrap();
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = open_dir.path().join("admin.sock");
    std::fs::hard_link(issuer.socket_path(), &link).unwrap();
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o666)).unwrap();
    let binary = signet_tests::issuer_binary().unwrap();
    // The binary must be reachable by nobody: copy it into the open directory.
    let exe = open_dir.path().join("signet-issuer");
    std::fs::copy(&binary, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .arg("--socket-path")
        .arg(&link)
        .args(["entry", "show"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("entry show: the admin API is reserved to root and uid 0"),
        "{err}"
    );
    let logs = issuer.logs().join("\n");
    assert!(logs.contains("admin:uid=65534"), "{logs}");
    assert!(logs.contains("PermissionDenied"), "{logs}");
    // Root itself is served.
    issuer.cli_ok(&["healthcheck"]).unwrap();
}
