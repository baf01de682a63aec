//! CA rotation of the real `signet-issuer` as its clients see it, with the shortest CA lifetime
//! the configuration allows (`[ca] ttl = "60s"`: prepare at 30 s, activate at 50 s, the old CA
//! pruned at 60 s, each within the issuer's 5 s rotation tick) and 10 s X509-SVIDs.
//!
//! Until one activation and one prune have happened (polling `ca show`, bounded by a deadline),
//! every ~2 s the test fetches the bundle (what a client holds at that moment), mints an SVID and
//! fetches the bundle again. Every SVID must verify (openssl and webpki) against the bundle
//! fetched just before it was minted and the one fetched just after; every SVID still valid must
//! verify against every later bundle; a CA is in a client's bundle before it signs anything;
//! `spiffe_sequence` grows on every change of the trust anchors (and only then). Finally
//! `ca prepare` + `ca activate`, forced through the CLI, keep every SVID minted before valid
//! against the new bundle. Takes a little over a minute: the rotation runs on the real clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use signet_spiffe::{Bundle, TrustDomain};
use signet_tests::{Issuer, IssuerBuilder, have_openssl};
use x509_parser::extensions::ParsedExtension;

/// Pause between two client iterations (pacing only; nothing is asserted on time).
const PACE: Duration = Duration::from_secs(2);
/// Upper bound for the automatic rotation to activate and prune (CA TTL 60 s, 5 s ticks).
const DEADLINE: Duration = Duration::from_secs(80);

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
}

fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.expect("malformed PEM"))
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

/// A CA certificate of the bundle: its subject key identifier, slot id (from `CN=Signet CA <id>`)
/// and notAfter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Anchor {
    ski: Vec<u8>,
    slot: String,
    not_after: i64,
}

fn anchor(der: &[u8]) -> Anchor {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let ski = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("CA certificate without a subject key identifier");
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("CA certificate without a CN")
        .to_owned();
    let slot = cn
        .strip_prefix("Signet CA ")
        .unwrap_or_else(|| panic!("unexpected CA subject CN {cn:?}"))
        .to_owned();
    Anchor {
        ski,
        slot,
        not_after: cert.validity().not_after.timestamp(),
    }
}

/// One fetch of the own bundle: the PEM file a client would use and its SPIFFE form.
#[derive(Debug)]
struct Snapshot {
    pem_path: PathBuf,
    bundle: Bundle,
    anchors: Vec<Anchor>,
    /// Unix seconds right after the fetch.
    fetched_at: i64,
}

impl Snapshot {
    fn has(&self, ski: &[u8]) -> bool {
        self.anchors.iter().any(|a| a.ski == ski)
    }
}

/// An X509-SVID minted by the test.
#[derive(Debug)]
struct Minted {
    name: String,
    chain_path: PathBuf,
    chain: Vec<Vec<u8>>,
    /// Authority key identifier (the signing CA's SKI).
    aki: Vec<u8>,
    not_after: i64,
    /// Unix seconds right before the mint call: within the SVID's validity.
    minted_at: i64,
    /// The snapshot fetched just before the mint (the bundle the client held).
    before: usize,
}

struct Client<'a> {
    issuer: &'a Issuer,
    td: TrustDomain,
    snapshots: Vec<Snapshot>,
    minted: Vec<Minted>,
    openssl: bool,
}

impl<'a> Client<'a> {
    fn new(issuer: &'a Issuer) -> Self {
        let openssl = have_openssl();
        if !openssl {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "the openssl command is required in CI"
            );
            eprintln!("SKIPPED: openssl verify (no openssl binary); webpki only");
        }
        Self {
            issuer,
            td: TrustDomain::new("example.org").unwrap(),
            snapshots: Vec::new(),
            minted: Vec::new(),
            openssl,
        }
    }

    /// Fetches the bundle in both forms (SPIFFE, PEM, SPIFFE again until both SPIFFE reads agree,
    /// so that the PEM belongs to the same state) and records it. Returns its index.
    fn fetch(&mut self) -> usize {
        for _ in 0..5 {
            let spiffe = || {
                self.issuer
                    .cli_ok(&["bundle", "show", "--format", "spiffe"])
                    .unwrap()
            };
            let first = spiffe();
            let pem = self.issuer.bundle_pem().unwrap();
            let second = spiffe();
            if first != second {
                continue;
            }
            let fetched_at = unix_now();
            let bundle = Bundle::from_json(&self.td, second.as_bytes())
                .unwrap_or_else(|e| panic!("invalid SPIFFE bundle ({e}): {second}"));
            let ders = pem_certs(pem.as_bytes());
            assert_eq!(
                ders, bundle.x509_authorities,
                "bundle show --format pem and --format spiffe disagree"
            );
            let index = self.snapshots.len();
            let pem_path = self.issuer.dir().join(format!("bundle-{index}.pem"));
            std::fs::write(&pem_path, &pem).unwrap();
            let anchors = ders.iter().map(|d| anchor(d)).collect();
            self.snapshots.push(Snapshot {
                pem_path,
                bundle,
                anchors,
                fetched_at,
            });
            return index;
        }
        panic!("the bundle kept changing between two reads");
    }

    fn mint(&mut self, ttl: Option<&str>) -> usize {
        let before = self
            .snapshots
            .len()
            .checked_sub(1)
            .expect("fetch a bundle before minting");
        let index = self.minted.len();
        let name = format!("svid-{index}");
        let dir = self.issuer.dir().join(&name);
        let minted_at = unix_now();
        let mut args = vec![
            "x509".to_owned(),
            "mint".to_owned(),
            "--spiffe-id".to_owned(),
            format!("spiffe://example.org/{name}"),
            "--write".to_owned(),
            dir.to_str().unwrap().to_owned(),
        ];
        if let Some(t) = ttl {
            args.extend(["--ttl".to_owned(), t.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.issuer.cli_ok(&args).unwrap();
        let chain_path = dir.join("svid.pem");
        let chain = pem_certs(&std::fs::read(&chain_path).unwrap());
        assert_eq!(chain.len(), 1, "self-signed mode: the chain is the leaf");
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("SVID without an authority key identifier");
        let not_after = leaf.validity().not_after.timestamp();
        self.minted.push(Minted {
            name,
            chain_path,
            chain,
            aki,
            not_after,
            minted_at,
            before,
        });
        index
    }

    /// Asserts that SVID `m` verifies against snapshot `s` at Unix time `t`, with webpki (SPIFFE
    /// X509-SVID rules) and, when `with_openssl`, with `openssl verify`.
    fn assert_verifies(&self, m: usize, s: usize, t: i64, with_openssl: bool) {
        let svid = &self.minted[m];
        let snap = &self.snapshots[s];
        if let Err(e) = signet_spiffe::svid::verify_x509_svid(&svid.chain, &snap.bundle, at(t)) {
            panic!(
                "{} does not verify against bundle {s} at {t} (webpki): {e}\n{}",
                svid.name,
                self.history()
            );
        }
        if with_openssl && self.openssl {
            openssl_verify(&snap.pem_path, &svid.chain_path, t);
        }
    }

    /// The slot ids of each snapshot and the signer of each SVID, for failure messages.
    fn history(&self) -> String {
        let mut out = String::from("bundles:\n");
        for (i, s) in self.snapshots.iter().enumerate() {
            let slots: Vec<&str> = s.anchors.iter().map(|a| a.slot.as_str()).collect();
            out.push_str(&format!(
                "  {i}: at {} seq {} {slots:?}\n",
                s.fetched_at, s.bundle.sequence
            ));
        }
        out.push_str("svids:\n");
        for m in &self.minted {
            out.push_str(&format!(
                "  {}: minted {} not_after {} by {}\n",
                m.name,
                m.minted_at,
                m.not_after,
                self.slot_of(&m.aki)
            ));
        }
        out
    }

    fn slot_of(&self, ski: &[u8]) -> String {
        self.snapshots
            .iter()
            .flat_map(|s| &s.anchors)
            .find(|a| a.ski == ski)
            .map(|a| a.slot.clone())
            .unwrap_or_else(|| "<never in a bundle>".to_owned())
    }

    /// Every SVID minted so far that is still valid when snapshot `s` was fetched verifies
    /// against it (webpki; openssl for the newest only, to keep the run short).
    fn assert_all_valid_verify(&self, s: usize) {
        // A CA is pruned only once its notAfter has passed, and no SVID outlives its CA: an SVID
        // whose notAfter is after the fetch must find its CA in the bundle.
        let t = self.snapshots[s].fetched_at + 1;
        for m in 0..self.minted.len() {
            if self.minted[m].not_after > t {
                self.assert_verifies(m, s, t, false);
            }
        }
    }
}

fn openssl_verify(bundle: &Path, chain: &Path, attime: i64) {
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient"])
        .arg("-attime")
        .arg(attime.to_string())
        .arg("-CAfile")
        .arg(bundle)
        .arg(chain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify -CAfile {} {} at {attime}: {}{}",
        bundle.display(),
        chain.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca show --output json`: slot id -> state.
fn ca_slots(issuer: &Issuer) -> BTreeMap<String, String> {
    let v = issuer
        .cli_json(&["ca", "show", "--output", "json"])
        .unwrap();
    v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn active_slot(slots: &BTreeMap<String, String>) -> String {
    let active: Vec<&String> = slots
        .iter()
        .filter(|(_, state)| *state == "active")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(active.len(), 1, "exactly one active CA: {slots:?}");
    active[0].clone()
}

/// `spiffe_sequence` grows exactly when the set of trust anchors changes.
fn assert_sequence_follows_anchors(client: &Client<'_>) {
    for pair in client.snapshots.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.bundle.x509_authorities == b.bundle.x509_authorities {
            assert_eq!(
                a.bundle.sequence,
                b.bundle.sequence,
                "sequence moved without an anchor change\n{}",
                client.history()
            );
        } else {
            assert!(
                b.bundle.sequence > a.bundle.sequence,
                "anchors changed without a higher spiffe_sequence\n{}",
                client.history()
            );
        }
    }
}

#[test]
fn svids_verify_against_the_bundle_a_client_holds_across_rotation() {
    let issuer = IssuerBuilder::new()
        .set_str("ca.ttl", "60s")
        .set_str("defaults.x509_svid_ttl", "10s")
        .set_str("defaults.agent_ttl", "60s")
        .start()
        .unwrap();
    let started = Instant::now();
    let mut client = Client::new(&issuer);

    let initial = ca_slots(&issuer);
    assert_eq!(initial.values().collect::<Vec<_>>(), vec!["active"]);
    let first_ca = active_slot(&initial);
    let mut seen_prepared = false;
    let mut activated = false;
    let mut pruned = false;

    // --- Automatic rotation, watched by a client that refreshes every ~2 s. ---
    while !(activated && pruned) {
        assert!(
            started.elapsed() < DEADLINE,
            "no activation and prune within {}s (prepared: {seen_prepared}, activated: \
             {activated}, pruned: {pruned})\n{}",
            DEADLINE.as_secs(),
            client.history()
        );
        let round = Instant::now();
        let before = client.fetch();
        let slots = ca_slots(&issuer);
        seen_prepared |= slots.values().any(|s| s == "prepared");
        activated |= active_slot(&slots) != first_ca;
        pruned |= !slots.contains_key(&first_ca);

        let m = client.mint(None);
        let after = client.fetch();
        let svid = &client.minted[m];
        // The client's bundle from before the mint already holds the signing CA.
        assert!(
            client.snapshots[before].has(&svid.aki),
            "{} is signed by a CA that is not in the bundle fetched before it\n{}",
            svid.name,
            client.history()
        );
        let t = svid.minted_at;
        client.assert_verifies(m, before, t, true);
        client.assert_verifies(m, after, t, true);
        client.assert_all_valid_verify(before);
        client.assert_all_valid_verify(after);

        if let Some(rest) = PACE.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    assert!(
        seen_prepared,
        "never saw a prepared CA\n{}",
        client.history()
    );
    assert_sequence_follows_anchors(&client);

    // The old and the new CA both signed SVIDs.
    let old_aki = client.minted[0].aki.clone();
    let first_new = client
        .minted
        .iter()
        .position(|m| m.aki != old_aki)
        .unwrap_or_else(|| panic!("no SVID from the new CA\n{}", client.history()));
    let new_aki = client.minted[first_new].aki.clone();
    // The new CA was published while the old one still signed: some client fetched a bundle
    // holding it and then got an SVID from the old CA.
    assert!(
        client.minted[..first_new]
            .iter()
            .any(|m| client.snapshots[m.before].has(&new_aki)),
        "no client held the new CA while the old one still signed\n{}",
        client.history()
    );
    // Once activated, the old CA signed nothing more.
    assert!(
        client.minted[first_new..].iter().all(|m| m.aki != old_aki),
        "the old CA signed again after the new one\n{}",
        client.history()
    );
    // The old CA left the bundle, and only once every SVID it signed had expired.
    let gone = client
        .snapshots
        .iter()
        .position(|s| !s.has(&old_aki))
        .unwrap_or_else(|| panic!("the old CA never left the bundle\n{}", client.history()));
    for m in client.minted.iter().filter(|m| m.aki == old_aki) {
        assert!(
            m.not_after <= client.snapshots[gone].fetched_at + 1,
            "{} outlived its CA's presence in the bundle\n{}",
            m.name,
            client.history()
        );
    }
    // No SVID outlives its CA.
    for m in &client.minted {
        let ca = client
            .snapshots
            .iter()
            .flat_map(|s| &s.anchors)
            .find(|a| a.ski == m.aki)
            .unwrap();
        assert!(m.not_after <= ca.not_after, "{} outlives its CA", m.name);
    }

    // --- Forced rotation through the CLI. ---
    // A longer-lived SVID from the current CA (capped at that CA's notAfter).
    let long = client.mint(Some("60s"));
    let held = client.fetch();
    client.assert_verifies(long, held, client.minted[long].minted_at, true);
    let existing = client.minted.len();

    let prepared = issuer
        .cli_json(&["ca", "prepare", "--output", "json"])
        .unwrap();
    let prepared_id = prepared["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "prepared")
        .unwrap_or_else(|| panic!("ca prepare shows no prepared slot: {prepared}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let after_prepare = client.fetch();
    assert!(
        client.snapshots[after_prepare]
            .anchors
            .iter()
            .any(|a| a.slot == prepared_id),
        "the prepared CA {prepared_id} is not published\n{}",
        client.history()
    );
    // Prepared, not signing.
    let m = client.mint(None);
    assert_ne!(client.slot_of(&client.minted[m].aki), prepared_id);

    let activated_json = issuer
        .cli_json(&["ca", "activate", "--output", "json"])
        .unwrap();
    let active_now = activated_json["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "active")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(active_now, prepared_id);
    let after_activate = client.fetch();
    // Every SVID minted before the forced rotation, still valid, verifies against the new bundle
    // (openssl too).
    let t = client.snapshots[after_activate].fetched_at + 1;
    let mut checked = 0;
    for i in 0..existing {
        if client.minted[i].not_after > t {
            client.assert_verifies(i, after_activate, t, true);
            checked += 1;
        }
    }
    assert!(checked >= 1, "{}", client.history());
    // And the new CA signs SVIDs that verify against the bundle the client held before.
    let m = client.mint(None);
    assert_eq!(client.slot_of(&client.minted[m].aki), prepared_id);
    let minted_at = client.minted[m].minted_at;
    client.assert_verifies(m, after_prepare, minted_at, true);
    client.assert_verifies(m, after_activate, minted_at, true);
    assert_sequence_follows_anchors(&client);

    let logs = issuer.logs().join("\n");
    assert!(!logs.contains("rotation step failed"), "{logs}");
    eprintln!(
        "rotation observed in {:.0}s over {} bundle fetches and {} SVIDs\n{}",
        started.elapsed().as_secs_f64(),
        client.snapshots.len(),
        client.minted.len(),
        client.history()
    );
}
