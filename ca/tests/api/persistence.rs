//! Key files, their modes, the journal, and reopening.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use signet_ca::{CaError, CertificateAuthority, KeyType, SlotState};

use crate::common::*;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_files_are_0600_in_a_0700_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let prepared = ca.prepare(at(T0 + 1)).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for slot in ca.slots() {
        let path = dir.join(format!("{}.key", slot.id));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // Only the key files (no temporary files left behind).
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = ca.slots().iter().map(|s| format!("{}.key", s.id)).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(names.contains(&format!("{}.key", prepared.id)));
}

#[test]
fn an_existing_open_directory_is_tightened_to_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let _ca = fresh_ca(&tmp, KeyType::EcP256);
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn journal_and_debug_never_contain_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let id = ca.slots()[0].id.clone();
    let key = fs::read(dir.join(format!("{id}.key"))).unwrap();
    let journal = ca.journal_bytes().unwrap();
    let journal_text = String::from_utf8(journal.clone()).unwrap();
    assert!(!journal_text.contains(&hex::encode(&key)));
    // The private scalar of a P-256 PKCS#8 key: 32 bytes after `04 20` in the ECPrivateKey.
    let pos = key.windows(2).position(|w| w == [0x04, 0x20]).unwrap();
    let scalar = &key[pos + 2..pos + 34];
    assert!(!journal_text.contains(&hex::encode(scalar)));
    assert!(!journal.windows(32).any(|w| w == scalar));
    let debug = format!("{ca:?}");
    assert!(!debug.contains(&hex::encode(scalar)));
    assert!(debug.contains(&id));
    let generated = signet_ca::generate_key(KeyType::EcP256).unwrap();
    let debug = format!("{generated:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(&hex::encode(&generated.pkcs8_der[..])));
}

#[test]
fn reopening_from_the_journal_gives_the_same_ca_and_it_signs() {
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = key_dir(&tmp);
        let ca = fresh_ca(&tmp, kt);
        ca.prepare(at(T0 + 10)).unwrap();
        let journal = ca.journal_bytes().unwrap();
        let reopened = CertificateAuthority::open(
            config(&dir, kt, Duration::from_secs(6 * HOUR)),
            Some(&journal),
            at(T0 + 20),
        )
        .unwrap();
        assert_eq!(reopened.slots(), ca.slots());
        assert_eq!(reopened.trust_anchors(), ca.trust_anchors());
        assert_eq!(reopened.bundle_sequence(), ca.bundle_sequence());
        assert_eq!(reopened.journal_bytes().unwrap(), journal);
        let svid = sign(
            &reopened,
            "/again",
            &p256_spki(),
            Duration::from_secs(60),
            at(T0 + 20),
        );
        verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0 + 20)).unwrap();
        // The prepared CA's key was loaded too: activation works after a restart.
        let active = reopened.activate(at(T0 + 30)).unwrap();
        assert_eq!(active.state, SlotState::Active);
        let svid = sign(
            &reopened,
            "/again",
            &p256_spki(),
            Duration::from_secs(60),
            at(T0 + 30),
        );
        verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0 + 30)).unwrap();
    }
}

#[test]
fn a_changed_key_type_applies_to_the_next_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let journal = ca.journal_bytes().unwrap();
    let reopened = CertificateAuthority::open(
        config(&dir, KeyType::Rsa2048, Duration::from_secs(6 * HOUR)),
        Some(&journal),
        at(T0 + 20),
    )
    .unwrap();
    assert_eq!(reopened.slots()[0].key_type, KeyType::EcP256);
    let next = reopened.prepare(at(T0 + 30)).unwrap();
    assert_eq!(next.key_type, KeyType::Rsa2048);
}

fn reopen(tmp: &tempfile::TempDir, journal: &[u8]) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::open(
        config(
            &key_dir(tmp),
            KeyType::EcP256,
            Duration::from_secs(6 * HOUR),
        ),
        Some(journal),
        at(T0 + 20),
    )
}

#[test]
fn missing_key_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let id = ca.slots()[0].id.clone();
    let journal = ca.journal_bytes().unwrap();
    let path = key_dir(&tmp).join(format!("{id}.key"));
    fs::remove_file(&path).unwrap();
    let err = reopen(&tmp, &journal).unwrap_err();
    assert!(matches!(err, CaError::KeyFileMissing { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&id) && msg.contains(&path.display().to_string()),
        "{msg}"
    );
}

#[test]
fn corrupt_or_foreign_key_files_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let active = ca.slots()[0].id.clone();
    let prepared = ca.prepare(at(T0 + 1)).unwrap().id;
    let journal = ca.journal_bytes().unwrap();
    let active_path = dir.join(format!("{active}.key"));
    let original = fs::read(&active_path).unwrap();

    fs::write(&active_path, b"garbage").unwrap();
    let err = reopen(&tmp, &journal).unwrap_err();
    assert!(matches!(err, CaError::InvalidKeyFile { .. }), "{err}");
    assert!(err.to_string().contains(&active_path.display().to_string()));

    // A valid key of another type.
    let p384 = signet_ca::generate_key(KeyType::EcP384).unwrap();
    fs::write(&active_path, &p384.pkcs8_der[..]).unwrap();
    let err = reopen(&tmp, &journal).unwrap_err();
    assert!(matches!(err, CaError::InvalidKeyFile { .. }), "{err}");

    // The prepared CA's key in the active CA's file.
    fs::copy(dir.join(format!("{prepared}.key")), &active_path).unwrap();
    let err = reopen(&tmp, &journal).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&active));

    fs::write(&active_path, original).unwrap();
    reopen(&tmp, &journal).unwrap();
}

#[test]
fn bad_journals_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let journal = String::from_utf8(ca.journal_bytes().unwrap()).unwrap();
    let id = ca.slots()[0].id.clone();

    let err = reopen(&tmp, b"{not json").unwrap_err();
    assert!(matches!(err, CaError::JournalCorrupt(_)), "{err}");

    let other_td = journal.replace("\"example.org\"", "\"other.org\"");
    let err = reopen(&tmp, other_td.as_bytes()).unwrap_err();
    assert!(
        matches!(err, CaError::JournalTrustDomainMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("other.org"));

    // A slot id that would escape the key directory.
    let escaping = journal.replace(&id, "../../etc/passwd");
    let err = reopen(&tmp, escaping.as_bytes()).unwrap_err();
    assert!(matches!(err, CaError::JournalCorrupt(_)), "{err}");

    let no_active = journal.replace("\"active\"", "\"retired\"");
    let err = reopen(&tmp, no_active.as_bytes()).unwrap_err();
    assert!(matches!(err, CaError::JournalCorrupt(_)), "{err}");
    assert!(err.to_string().contains("active"));

    let bad_version = journal.replace("\"version\": 1", "\"version\": 99");
    let err = reopen(&tmp, bad_version.as_bytes()).unwrap_err();
    assert!(matches!(err, CaError::JournalCorrupt(_)), "{err}");

    let v: serde_json::Value = serde_json::from_str(&journal).unwrap();
    let cert_hex = v["slots"][0]["cert_der"].as_str().unwrap().to_string();
    let bad_cert = journal.replace(&cert_hex, "00ff");
    let err = reopen(&tmp, bad_cert.as_bytes()).unwrap_err();
    assert!(matches!(err, CaError::JournalCorrupt(_)), "{err}");

    // The untouched journal still opens.
    reopen(&tmp, journal.as_bytes()).unwrap();
}

#[test]
fn unwritable_key_dir_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let before = ca.slots();
    let seq = ca.bundle_sequence();
    // Replace the key directory by a plain file: writing any key fails (even as root).
    let moved = tmp.path().join("moved");
    fs::rename(&dir, &moved).unwrap();
    fs::write(&dir, b"not a directory").unwrap();
    let err = ca.prepare(at(T0 + 1)).unwrap_err();
    assert!(matches!(err, CaError::KeyFileWrite { .. }), "{err}");
    assert_eq!(ca.slots(), before);
    assert_eq!(ca.bundle_sequence(), seq);
    assert!(matches!(
        ca.rotate_if_due(at(T0 + 3 * HOUR)).unwrap_err(),
        CaError::KeyFileWrite { .. }
    ));
    assert_eq!(ca.slots(), before);
    fs::remove_file(&dir).unwrap();
    fs::rename(&moved, &dir).unwrap();
    ca.prepare(at(T0 + 1)).unwrap();
}

#[test]
fn ttl_must_be_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let err = CertificateAuthority::open(
        config(&key_dir(&tmp), KeyType::EcP256, Duration::from_millis(10)),
        None,
        at(T0),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::InvalidCaTtl), "{err}");
    assert!(!key_dir(&tmp).exists());
}
