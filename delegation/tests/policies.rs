//! The policy files shipped in `policies/` load (a syntax error or an undefined predicate in a
//! shipped file fails CI) and mean what their comments say: `default.datalog` denies every
//! request, `examples/travel.datalog` lets the planner act for the IdP's users and hand
//! `flights:read` (never `flights:book`) to the search agent, `examples/workloads.datalog` lets a
//! service act for itself and delegate to its worker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use signet_delegation::policy::{Operation, PolicyOutcome, PolicyRequest, PolicySet};
use signet_delegation::{Subject, SubjectKind};

const PLANNER: &str = "spiffe://example.org/planner";
const SEARCH: &str = "spiffe://example.org/search";
const REPORTS: &str = "spiffe://example.org/reports";
const WORKER: &str = "spiffe://example.org/reports-worker";

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn rights(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn alice() -> Subject {
    Subject {
        id: "https://idp.example.com#alice".into(),
        kind: SubjectKind::User,
        issuer: "https://idp.example.com".into(),
        name: "alice@example.com".into(),
    }
}

fn workload(id: &str) -> Subject {
    Subject {
        id: id.into(),
        kind: SubjectKind::Workload,
        issuer: "example.org".into(),
        name: String::new(),
    }
}

/// Loads one shipped file alone, through `load_dir` as the issuer does.
fn load_file(relative: &str) -> PolicySet {
    let src = policies_dir().join(relative);
    let dir = tempfile::tempdir().unwrap();
    let name = src.file_name().unwrap();
    std::fs::copy(&src, dir.path().join(name)).unwrap();
    PolicySet::load_dir(dir.path()).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn mint(p: &PolicySet, subject: &Subject, actor: &str, asked: &[&str]) -> PolicyOutcome {
    let asked = rights(asked);
    p.evaluate(&PolicyRequest {
        operation: Operation::Mint,
        subject,
        actor,
        next_actor: None,
        chain: &[],
        depth: 0,
        requested_rights: &asked,
        requested_ttl: 300,
    })
    .unwrap()
}

fn delegate(
    p: &PolicySet,
    subject: &Subject,
    chain: &[&str],
    next: &str,
    asked: &[&str],
) -> PolicyOutcome {
    let asked = rights(asked);
    let chain: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
    p.evaluate(&PolicyRequest {
        operation: Operation::Delegate,
        subject,
        actor: chain.last().map_or("", String::as_str),
        next_actor: Some(next),
        chain: &chain,
        depth: u32::try_from(chain.len()).unwrap(),
        requested_rights: &asked,
        requested_ttl: 60,
    })
    .unwrap()
}

#[test]
fn every_shipped_policy_file_loads() {
    // The directory itself, as an issuer with `policies_dir = "policies"` loads it: default only.
    let top = PolicySet::load_dir(&policies_dir()).unwrap();
    assert_eq!(top.files().len(), 1, "{:?}", top.files());
    assert!(top.files()[0].ends_with("default.datalog"));
    // The examples together (they are written to compose) and each alone.
    let examples = PolicySet::load_dir(&policies_dir().join("examples")).unwrap();
    assert_eq!(examples.files().len(), 2, "{:?}", examples.files());
    for f in [
        "default.datalog",
        "examples/travel.datalog",
        "examples/workloads.datalog",
    ] {
        assert!(!load_file(f).is_empty(), "{f}");
    }
    // Every .datalog file under policies/ is covered by the loads above.
    let mut all = Vec::new();
    for dir in [policies_dir(), policies_dir().join("examples")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "datalog") {
                all.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    all.sort();
    assert_eq!(
        all,
        ["default.datalog", "travel.datalog", "workloads.datalog"]
    );
}

#[test]
fn the_default_policy_denies_everything() {
    let p = PolicySet::load_dir(&policies_dir()).unwrap();
    for (subject, actor) in [(alice(), PLANNER), (workload(REPORTS), REPORTS)] {
        let out = mint(&p, &subject, actor, &["flights:read"]);
        assert!(!out.allowed, "{out}");
        assert!(out.grants.is_empty());
        let out = mint(&p, &subject, actor, &[]);
        assert!(!out.allowed, "{out}");
    }
    let out = delegate(&p, &alice(), &[PLANNER], SEARCH, &["flights:read"]);
    assert!(!out.allowed, "{out}");
    assert!(out.grants.is_empty());
}

fn check_travel(p: &PolicySet) {
    let ok = mint(p, &alice(), PLANNER, &["flights:read", "flights:book"]);
    assert!(ok.allowed, "{ok}");
    assert_eq!(ok.grants, rights(&["flights:book", "flights:read"]));
    assert_eq!((ok.max_ttl, ok.max_depth), (Some(600), Some(2)));
    // Another agent, another IdP's user.
    assert!(!mint(p, &alice(), SEARCH, &["flights:read"]).allowed);
    let mallory = Subject {
        issuer: "https://idp.evil.example".into(),
        id: "https://idp.evil.example#mallory".into(),
        ..alice()
    };
    assert!(!mint(p, &mallory, PLANNER, &["flights:read"]).allowed);

    // planner -> search: allowed, with flights:read and never flights:book.
    let hop = delegate(p, &alice(), &[PLANNER], SEARCH, &["flights:read"]);
    assert!(hop.allowed, "{hop}");
    assert!(hop.grants.contains("flights:read"));
    assert!(!hop.grants.contains("flights:book"), "{:?}", hop.grants);
    let book = delegate(p, &alice(), &[PLANNER], SEARCH, &["flights:book"]);
    assert!(!book.grants.contains("flights:book"), "{:?}", book.grants);
    // Search may not hand it on, and the planner only to search.
    assert!(
        !delegate(
            p,
            &alice(),
            &[PLANNER, SEARCH],
            "spiffe://example.org/x",
            &[]
        )
        .allowed
    );
    assert!(!delegate(p, &alice(), &[PLANNER], "spiffe://example.org/x", &[]).allowed);
}

fn check_workloads(p: &PolicySet) {
    let me = workload(REPORTS);
    let ok = mint(p, &me, REPORTS, &[]);
    assert!(ok.allowed, "{ok}");
    assert_eq!(ok.grants, rights(&["invoices:read", "reports:render"]));
    assert_eq!((ok.max_ttl, ok.max_depth), (Some(300), Some(1)));
    // Not for another workload, and no user subjects.
    assert!(!mint(p, &workload(WORKER), REPORTS, &[]).allowed);
    assert!(!mint(p, &alice(), REPORTS, &[]).allowed);

    let hop = delegate(p, &me, &[REPORTS], WORKER, &["invoices:read"]);
    assert!(hop.allowed, "{hop}");
    assert_eq!(hop.grants, rights(&["invoices:read"]));
    assert!(!delegate(p, &me, &[REPORTS, WORKER], SEARCH, &[]).allowed);
    // A chain that does not start at the subject itself.
    assert!(!delegate(p, &me, &[PLANNER, REPORTS], WORKER, &[]).allowed);
}

#[test]
fn the_travel_example_allows_planner_to_search_with_read_only() {
    check_travel(&load_file("examples/travel.datalog"));
}

#[test]
fn the_workloads_example_lets_a_service_delegate_to_its_worker() {
    check_workloads(&load_file("examples/workloads.datalog"));
}

#[test]
fn the_examples_keep_their_meaning_when_loaded_together() {
    let p = PolicySet::load_dir(&policies_dir().join("examples")).unwrap();
    check_travel(&p);
    check_workloads(&p);
}
