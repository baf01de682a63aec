//! The `cgroup` and `systemd` workload attestors on recorded cgroup files
//! (`testdata/cgroup/*.cgroup`), read through a pinned process of a fixture procfs root.
//!
//! Every fixture must appear in [`CASES`]: a new file without expectations fails
//! `every_fixture_has_expectations`.

// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{fs, path::PathBuf};

use signet_attestors::workload::{
    AttestError, CgroupAttestor, CgroupConfig, PeerCredentials, PinnedProcess, SystemdAttestor,
    WorkloadAttestor,
};

/// (fixture name without `.cgroup`, expected `container`/`k8s` selectors, expected `systemd`
/// selectors).
const CASES: &[(&str, &[&str], &[&str])] = &[
    (
        "v2-docker-systemd",
        &["container:id:0aedad1ba1a75154a2bc3e30d9a62f44e9d9de7d184694dfbcb4cc1e410b325c"],
        &[
            "systemd:id:docker-0aedad1ba1a75154a2bc3e30d9a62f44e9d9de7d184694dfbcb4cc1e410b325c.scope",
        ],
    ),
    (
        "v2-docker-cgroupfs",
        &["container:id:f68802dacd234d0c600f2434221bed146911ecf482d5aac36e54b41c2c489757"],
        &[],
    ),
    // hybrid host: the unified hierarchy still shows containerd.service while the v1
    // hierarchies show the container, so systemd claims nothing
    (
        "v1-docker-cgroupfs",
        &["container:id:94b31676f29b9bca383b2ff9b93d172c2f007e1e765cf5c1d436c96c24a1e19c"],
        &[],
    ),
    (
        "v2-k8s-containerd-burstable",
        &[
            "container:id:b50ba3efb5f4aa1cb0e0bdb82d0e52bea4d9346c4ad1a57da878af4bb9e8ce87",
            "k8s:pod-uid:f68a4e8e-9421-4931-a6f0-0a8de9f49c16",
        ],
        &[
            "systemd:id:cri-containerd-b50ba3efb5f4aa1cb0e0bdb82d0e52bea4d9346c4ad1a57da878af4bb9e8ce87.scope",
        ],
    ),
    (
        "v1-k8s-crio-besteffort",
        &[
            "container:id:7fbc5b2b7040f75e5224da5123f6493b96b5e5aabcb732a8281a602605d79262",
            "k8s:pod-uid:ec1967af-4ca7-4a78-a7a2-848e2c0779d6",
        ],
        &["systemd:id:crio-7fbc5b2b7040f75e5224da5123f6493b96b5e5aabcb732a8281a602605d79262.scope"],
    ),
    // guaranteed QoS pods sit right under kubepods
    (
        "v1-k8s-docker-cgroupfs-guaranteed",
        &[
            "container:id:49e0c2d428e75a12b2920b3a4dfb26dfd0580a234901ddf349f7d778e6f897fd",
            "k8s:pod-uid:92a89529-35bf-4c6f-b91c-dc8cfe272ed7",
        ],
        &[],
    ),
    // agent in its own cgroup namespace: the path starts with /..
    (
        "v2-k8s-containerd-cgroupns",
        &[
            "container:id:03041e9f9d678e524532868814ed6ba47af5c18a579d8b176719df458bf993fa",
            "k8s:pod-uid:1915a62e-7c86-4205-9434-7a296b957ce9",
        ],
        &[],
    ),
    // CRI-O's conmon lives in the pod but is no container of it
    (
        "v2-k8s-crio-conmon",
        &[],
        &[
            "systemd:id:crio-conmon-4b48ef9d5efc85eb4aceaea0a406710d847c3cbd037bfcf21473ff6f34e5ad58.scope",
        ],
    ),
    (
        "v2-k8s-containerd-static-pod",
        &[
            "container:id:7c12101ea4b8d14c8a6103b78878209b846c71194a02a07a7e6404ae94ba67da",
            "k8s:pod-uid:a5962f46763ed09435eb3f6bd64848cb",
        ],
        &[
            "systemd:id:cri-containerd-7c12101ea4b8d14c8a6103b78878209b846c71194a02a07a7e6404ae94ba67da.scope",
        ],
    ),
    (
        "v2-podman",
        &["container:id:7084bd399769ec34be3524f43c8e5df6435dd0abc95d106d05eb03566e8adea6"],
        &[
            "systemd:id:libpod-7084bd399769ec34be3524f43c8e5df6435dd0abc95d106d05eb03566e8adea6.scope",
        ],
    ),
    // rootless: under the user's manager, whose cgroups the user names freely
    (
        "v2-podman-rootless",
        &[],
        &[
            "systemd:id:user@1000.service",
            "systemd:user_unit:1000:libpod-89f7490d4d908dcd39816ceb4bb9cf33b154f13ecf2dd7147c51890b29397fb3.scope",
        ],
    ),
    ("v2-not-a-container", &[], &["systemd:id:nginx.service"]),
    (
        "v2-systemd-user-session",
        &[],
        &["systemd:id:session-3.scope"],
    ),
    (
        "v2-systemd-user-service",
        &[],
        &[
            "systemd:id:user@1000.service",
            "systemd:user_unit:1000:backup.service",
        ],
    ),
    ("v2-host-root", &[], &[]),
    // a user names a cgroup after someone else's container
    (
        "v2-spoof-docker-scope-in-user-manager",
        &[],
        &[
            "systemd:id:user@1001.service",
            "systemd:user_unit:1001:docker-0aedad1ba1a75154a2bc3e30d9a62f44e9d9de7d184694dfbcb4cc1e410b325c.scope",
        ],
    ),
    // a container creates pod-like cgroups below its own: the outer one wins
    (
        "v2-spoof-pod-nested-in-container",
        &["container:id:0aedad1ba1a75154a2bc3e30d9a62f44e9d9de7d184694dfbcb4cc1e410b325c"],
        &[
            "systemd:id:docker-0aedad1ba1a75154a2bc3e30d9a62f44e9d9de7d184694dfbcb4cc1e410b325c.scope",
        ],
    ),
    // kind on v1 without cgroup namespaces: only the node container is provable
    (
        "v1-kind-node-docker",
        &["container:id:f17ee212856f6d5ec8c570c1e23d68a43ae4335bd638649d7d8c4d68564780a7"],
        &[],
    ),
    // kubelet and containerd disagree on the cgroup driver
    (
        "v1-k8s-containerd-driver-mismatch",
        &[
            "container:id:962542ebd3f0408077efea579f140b2c3aead6e4add7a366ae1aa575ef8625e1",
            "k8s:pod-uid:313e7cb9-5255-4335-ab56-6cf8b8b36abe",
        ],
        &["systemd:id:containerd.service"],
    ),
];

const PID: u32 = 4242;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/cgroup")
}

/// A procfs root holding one process, `PID`, with the given cgroup file.
fn proc_root(cgroup: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(PID.to_string());
    fs::create_dir(&dir).unwrap();
    fs::write(
        dir.join("stat"),
        format!(
            "{PID} (app) S 1 {PID} {PID} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 100 \
             18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("cgroup"), cgroup).unwrap();
    root
}

fn pin(root: &tempfile::TempDir) -> PinnedProcess {
    PinnedProcess::pin_in(
        root.path(),
        PeerCredentials {
            pid: PID,
            uid: 1000,
            gid: 1000,
        },
    )
    .unwrap()
}

async fn selectors(attestor: &dyn WorkloadAttestor, process: &PinnedProcess) -> Vec<String> {
    let mut out: Vec<String> = attestor
        .attest(process)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    out.sort();
    out
}

fn sorted(values: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
    out.sort();
    out
}

#[tokio::test]
async fn fixtures_give_the_expected_selectors() {
    let cgroup = CgroupAttestor::new(CgroupConfig::default()).unwrap();
    let systemd = SystemdAttestor::new();
    for (name, want_container, want_systemd) in CASES {
        let text = fs::read_to_string(fixture_dir().join(format!("{name}.cgroup"))).unwrap();
        let root = proc_root(&text);
        let process = pin(&root);
        assert_eq!(
            selectors(&cgroup, &process).await,
            sorted(want_container),
            "cgroup attestor on {name}"
        );
        assert_eq!(
            selectors(&systemd, &process).await,
            sorted(want_systemd),
            "systemd attestor on {name}"
        );
        process.ensure_same().unwrap();
    }
}

#[test]
fn every_fixture_has_expectations() {
    for entry in fs::read_dir(fixture_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let stem = name
            .strip_suffix(".cgroup")
            .unwrap_or_else(|| panic!("{name}: not .cgroup"));
        assert!(
            CASES.iter().any(|(case, _, _)| *case == stem),
            "{name} has no expectations in CASES"
        );
    }
}

#[tokio::test]
async fn hierarchies_naming_different_containers_are_refused() {
    let text = fs::read_to_string(fixture_dir().join("v1-docker-cgroupfs.cgroup")).unwrap();
    // One v1 hierarchy moved to another container: no way to tell which one is right.
    let other = "1111111111111111111111111111111111111111111111111111111111111111";
    let tampered: String = text
        .lines()
        .map(|line| {
            if line.starts_with("9:memory:") {
                format!("9:memory:/docker/{other}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let root = proc_root(&tampered);
    let err = CgroupAttestor::new(CgroupConfig::default())
        .unwrap()
        .attest(&pin(&root))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AttestError::ConflictingCgroups { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_cgroup_file_is_an_error_naming_the_file() {
    let root = proc_root("this is not a cgroup file\n");
    let err = SystemdAttestor::new()
        .attest(&pin(&root))
        .await
        .unwrap_err();
    assert!(matches!(err, AttestError::ProcMalformed { .. }), "{err}");
    assert!(err.to_string().contains("cgroup"), "{err}");
}

#[tokio::test]
async fn missing_cgroup_file_is_unreadable() {
    let root = proc_root("0::/\n");
    fs::remove_file(root.path().join(PID.to_string()).join("cgroup")).unwrap();
    let err = CgroupAttestor::new(CgroupConfig::default())
        .unwrap()
        .attest(&pin(&root))
        .await
        .unwrap_err();
    assert!(matches!(err, AttestError::ProcUnreadable { .. }), "{err}");
}

#[tokio::test]
async fn trusted_units_are_configurable() {
    let text =
        fs::read_to_string(fixture_dir().join("v1-k8s-containerd-driver-mismatch.cgroup")).unwrap();
    let root = proc_root(&text);
    let strict = CgroupAttestor::new(CgroupConfig {
        trusted_units: vec![],
    })
    .unwrap();
    assert!(strict.attest(&pin(&root)).await.unwrap().is_empty());
}

/// The attestors read this very process without error and agree with a direct parse of
/// `/proc/self/cgroup`.
#[tokio::test]
async fn live_process_cgroups() {
    let me = PeerCredentials {
        pid: std::process::id(),
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    };
    let process = PinnedProcess::pin(me).unwrap();
    let text = fs::read_to_string("/proc/self/cgroup").unwrap();
    let entries = signet_attestors::workload::cgroup::parse_cgroup_file(&text).unwrap();
    let config = CgroupConfig::default();
    let want =
        signet_attestors::workload::cgroup::identity_from_entries(&entries, &config.trusted_units)
            .unwrap();
    let got = CgroupAttestor::new(config)
        .unwrap()
        .identity(&process)
        .unwrap();
    assert_eq!(got, want);
    let want = signet_attestors::workload::systemd::units_from_entries(&entries);
    assert_eq!(SystemdAttestor::new().units(&process).unwrap(), want);
}
