//! The `cgroup` workload attestor: container and Kubernetes pod identity read from the cgroup
//! path of the process (`/proc/<pid>/cgroup`), cgroup v2 and v1.
//!
//! Selectors: `container:id:<64 hex>` (type `container`) and `k8s:pod-uid:<uid>` (type `k8s`).
//!
//! Recognised layouts (one path component each, `<id>` being 64 lowercase hex digits):
//!
//! | runtime | systemd cgroup driver | cgroupfs driver |
//! | --- | --- | --- |
//! | Docker | `docker-<id>.scope` | `/docker/<id>` |
//! | containerd (CRI) | `cri-containerd-<id>.scope` | under a pod: `<id>` |
//! | CRI-O | `crio-<id>.scope` (not `crio-conmon-<id>.scope`) | under a pod: `<id>` |
//! | Podman | `libpod-<id>.scope` (not `libpod-conmon-<id>.scope`) | `/libpod_parent/libpod-<id>` |
//! | nerdctl | `nerdctl-<id>.scope` | |
//! | Kubernetes pod | `kubepods[-<qos>]-pod<uid with _>.slice` | `/kubepods[/<qos>]/pod<uid>` |
//!
//! The path is trusted only as far as the host created it. Below a container's own cgroup, and
//! below a systemd unit that delegates its subtree (`user@<uid>.service` above all, where any user
//! can create cgroups with any name), names are chosen by the workload. So the first
//! identity-bearing component wins, and the walk gives up (no selectors) at any component it
//! does not know to be created by the host: an unknown plain directory, or a unit other than
//! [`CgroupConfig::trusted_units`]. See docs/attestors/cgroup.md.

use std::fmt;

use serde::Deserialize;

use super::{AttestError, PinnedProcess, Selector, WorkloadAttestor};

/// Selector type of container identities.
pub const CONTAINER_SELECTOR_TYPE: &str = "container";
/// Selector type of Kubernetes pod identities.
pub const K8S_SELECTOR_TYPE: &str = "k8s";

/// Container runtimes' prefixes of transient scope units, `<prefix>-<id>.scope`.
const SCOPE_PREFIXES: &[&str] = &["docker", "cri-containerd", "crio", "libpod", "nerdctl"];

/// Plain (cgroupfs) directories that container runtimes and the kubelet create as root.
const HOST_DIRECTORIES: &[&str] = &[
    "docker",
    "kubepods",
    "besteffort",
    "burstable",
    "libpod_parent",
];

/// Unit types that hold processes.
const PROCESS_UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".swap"];

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupEntry {
    /// Hierarchy id; `0` for the unified (v2) hierarchy.
    pub hierarchy_id: u32,
    /// Controllers bound to the hierarchy (v1), e.g. `cpu`, `cpuacct`, `name=systemd`; empty for
    /// the unified hierarchy.
    pub controllers: Vec<String>,
    /// The cgroup path, relative to the reader's cgroup namespace root (may start with `/..`).
    pub path: String,
}

impl CgroupEntry {
    /// Whether this is the unified (cgroup v2) hierarchy.
    pub fn is_unified(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }

    /// Whether this is systemd's named v1 hierarchy (`name=systemd`).
    pub fn is_named_systemd(&self) -> bool {
        self.controllers.iter().any(|c| c == "name=systemd")
    }
}

/// Parses the text of `/proc/<pid>/cgroup`.
pub fn parse_cgroup_file(text: &str) -> Result<Vec<CgroupEntry>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("line {}: expected id:controllers:path", n + 1));
        };
        let hierarchy_id = id
            .parse::<u32>()
            .map_err(|_| format!("line {}: hierarchy id {id:?} is not a number", n + 1))?;
        if !path.starts_with('/') {
            return Err(format!("line {}: path {path:?} is not absolute", n + 1));
        }
        let controllers = if controllers.is_empty() {
            Vec::new()
        } else {
            controllers.split(',').map(str::to_owned).collect()
        };
        entries.push(CgroupEntry {
            hierarchy_id,
            controllers,
            path: path.to_owned(),
        });
    }
    if entries.is_empty() {
        return Err("no cgroup lines".into());
    }
    Ok(entries)
}

/// The components of a cgroup path, after the `..` components a cgroup namespace puts in front
/// of paths outside it. `None` for a path with `..` anywhere else or a non-absolute path.
pub(crate) fn components(path: &str) -> Option<(bool, Vec<&str>)> {
    let rest = path.strip_prefix('/')?;
    let mut parts = rest.split('/').filter(|c| !c.is_empty()).peekable();
    let mut above_namespace = false;
    while parts.peek() == Some(&"..") {
        parts.next();
        above_namespace = true;
    }
    let parts: Vec<&str> = parts.collect();
    if parts.iter().any(|c| *c == ".." || *c == ".") {
        return None;
    }
    Some((above_namespace, parts))
}

/// Whether `name` is a valid systemd unit name of a type that holds processes.
pub(crate) fn is_process_unit(name: &str) -> bool {
    is_unit_name(name)
        && PROCESS_UNIT_SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
}

/// Whether `name` is a valid systemd slice name.
pub(crate) fn is_slice(name: &str) -> bool {
    is_unit_name(name) && name.len() > ".slice".len() && name.ends_with(".slice")
}

fn is_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

/// The container (and pod) a process belongs to, as named by its cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// The container id: 64 lowercase hex digits.
    pub container_id: String,
    /// The Kubernetes pod UID, with dashes (`8-4-4-4-12` hex, or 32 hex for static pods).
    pub pod_uid: Option<String>,
}

impl ContainerIdentity {
    /// `container:id:<id>`, and `k8s:pod-uid:<uid>` for a pod.
    pub fn selectors(&self) -> Vec<Selector> {
        let mut out = vec![Selector::new(
            CONTAINER_SELECTOR_TYPE,
            format!("id:{}", self.container_id),
        )];
        if let Some(uid) = &self.pod_uid {
            out.push(Selector::new(K8S_SELECTOR_TYPE, format!("pod-uid:{uid}")));
        }
        out
    }
}

impl fmt::Display for ContainerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container {}", self.container_id)?;
        if let Some(uid) = &self.pod_uid {
            write!(f, " in pod {uid}")?;
        }
        Ok(())
    }
}

/// What one path component says.
#[derive(Debug, PartialEq, Eq)]
enum Component<'a> {
    /// A container's own cgroup (`docker-<id>.scope`, `libpod-<id>`, ...).
    Container(&'a str),
    /// A bare container id (cgroupfs drivers).
    BareId(&'a str),
    /// A pod's cgroup (`pod<uid>`, `kubepods-burstable-pod<uid>.slice`), canonical uid.
    Pod(String),
    /// Pod and container in one component, `kubepods-...-pod<uid>.slice:<runtime>:<id>`: what
    /// appears when the kubelet and the runtime disagree on the cgroup driver.
    PodAndContainer(String, &'a str),
    /// A systemd slice (transparent: slices are created by systemd or the kubelet).
    Slice,
    /// Another systemd unit.
    Unit(&'a str),
    /// Anything else.
    Dir(&'a str),
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Validates a pod UID with dashes (`8-4-4-4-12`) or a static pod's 32 hex digits.
fn pod_uid(uid: &str) -> Option<String> {
    if uid.len() == 32 && is_lower_hex(uid) {
        return Some(uid.to_owned());
    }
    let groups: Vec<&str> = uid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lens == [8, 4, 4, 4, 12] && groups.iter().all(|g| is_lower_hex(g))).then(|| uid.to_owned())
}

/// `kubepods-pod<uid>.slice`, `kubepods-besteffort-pod<uid>.slice`,
/// `kubepods-burstable-pod<uid>.slice`, with `_` for the dashes of the uid.
fn systemd_pod_slice(name: &str) -> Option<String> {
    let rest = name.strip_prefix("kubepods-")?.strip_suffix(".slice")?;
    let rest = rest
        .strip_prefix("besteffort-")
        .or_else(|| rest.strip_prefix("burstable-"))
        .unwrap_or(rest);
    let uid = rest.strip_prefix("pod")?;
    if uid.contains('-') {
        return None;
    }
    pod_uid(&uid.replace('_', "-"))
}

fn classify(name: &str) -> Component<'_> {
    if let Some(uid) = name.strip_prefix("pod").and_then(pod_uid) {
        return Component::Pod(uid);
    }
    if let Some(uid) = systemd_pod_slice(name) {
        return Component::Pod(uid);
    }
    if let Some((slice, rest)) = name.split_once(':')
        && let Some(uid) = systemd_pod_slice(slice)
        && let Some((runtime, id)) = rest.rsplit_once(':')
        && !runtime.is_empty()
        && is_container_id(id)
    {
        return Component::PodAndContainer(uid, id);
    }
    if let Some(stem) = name.strip_suffix(".scope") {
        for prefix in SCOPE_PREFIXES {
            if let Some(id) = stem
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('-'))
                .filter(|id| is_container_id(id))
            {
                return Component::Container(id);
            }
        }
    }
    if let Some(id) = name
        .strip_prefix("libpod-")
        .filter(|id| is_container_id(id))
    {
        return Component::Container(id);
    }
    if is_container_id(name) {
        return Component::BareId(name);
    }
    if is_slice(name) {
        return Component::Slice;
    }
    if is_process_unit(name) {
        return Component::Unit(name);
    }
    Component::Dir(name)
}

/// The container identity one cgroup path names, if any. `trusted_units` are the systemd units
/// (container runtimes running as root) below which the walk may continue.
pub fn identity_from_path(path: &str, trusted_units: &[String]) -> Option<ContainerIdentity> {
    let (_, parts) = components(path)?;
    let mut previous: Option<&str> = None;
    for (i, part) in parts.iter().enumerate() {
        match classify(part) {
            Component::Container(id) => return Some(identity(id, None)),
            Component::PodAndContainer(uid, id) => return Some(identity(id, Some(uid))),
            Component::Pod(uid) => {
                // A pod's processes all live in its containers' cgroups; anything else in the
                // pod (a runtime's conmon, say) is not one of its containers.
                return match parts.get(i + 1).map(|next| classify(next)) {
                    Some(Component::Container(id) | Component::BareId(id)) => {
                        Some(identity(id, Some(uid)))
                    }
                    _ => None,
                };
            }
            Component::BareId(id) if previous == Some("docker") => return Some(identity(id, None)),
            Component::BareId(_) => return None,
            Component::Slice => {}
            Component::Unit(name) if trusted_units.iter().any(|u| u == name) => {}
            Component::Unit(_) => return None,
            Component::Dir(name) if HOST_DIRECTORIES.contains(&name) => {}
            Component::Dir(_) => return None,
        }
        previous = Some(part);
    }
    None
}

fn identity(id: &str, pod_uid: Option<String>) -> ContainerIdentity {
    ContainerIdentity {
        container_id: id.to_owned(),
        pod_uid,
    }
}

/// The container identity named by the cgroup lines of one process. Hierarchies that name
/// nothing are ignored; two that name different containers or pods are a conflict, returned as
/// the two identities. A pod UID seen in one hierarchy completes the same container seen
/// without it in another (a cgroup namespace can hide the pod level).
pub fn identity_from_entries(
    entries: &[CgroupEntry],
    trusted_units: &[String],
) -> Result<Option<ContainerIdentity>, (ContainerIdentity, ContainerIdentity)> {
    let mut found: Option<ContainerIdentity> = None;
    for candidate in entries
        .iter()
        .filter_map(|e| identity_from_path(&e.path, trusted_units))
    {
        let Some(current) = found.as_mut() else {
            found = Some(candidate);
            continue;
        };
        if current.container_id != candidate.container_id {
            return Err((current.clone(), candidate));
        }
        match (&current.pod_uid, &candidate.pod_uid) {
            (Some(a), Some(b)) if a != b => return Err((current.clone(), candidate)),
            (None, Some(b)) => current.pod_uid = Some(b.clone()),
            _ => {}
        }
    }
    Ok(found)
}

/// Configuration of the `cgroup` attestor (agent config: `[workload_attestors.cgroup]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// Systemd units below which container cgroups may be found: root-owned container runtimes
    /// with `Delegate=yes`. Default `containerd.service`, `crio.service`, `docker.service`.
    /// Never list a unit that runs untrusted code (`user@<uid>.service`, a systemd-nspawn
    /// machine): it could name its sub-cgroups after any container.
    pub trusted_units: Vec<String>,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            trusted_units: ["containerd.service", "crio.service", "docker.service"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The `cgroup` workload attestor.
#[derive(Clone, Debug)]
pub struct CgroupAttestor {
    config: CgroupConfig,
}

impl CgroupAttestor {
    /// Builds the attestor; every trusted unit must be a valid unit name of a process-holding
    /// type, and none a user manager (`user@<uid>.service`).
    pub fn new(config: CgroupConfig) -> Result<Self, AttestError> {
        for unit in &config.trusted_units {
            if !is_process_unit(unit) {
                return Err(AttestError::Config(format!(
                    "cgroup.trusted_units: {unit:?} is not a systemd service or scope name"
                )));
            }
            if unit.starts_with("user@") {
                return Err(AttestError::Config(format!(
                    "cgroup.trusted_units: {unit:?} is a user manager, whose cgroups its user \
                     names freely"
                )));
            }
        }
        Ok(Self { config })
    }

    /// Reads and interprets `/proc/<pid>/cgroup` of the pinned process.
    pub fn identity(
        &self,
        process: &PinnedProcess,
    ) -> Result<Option<ContainerIdentity>, AttestError> {
        let entries = read_cgroups(process)?;
        identity_from_entries(&entries, &self.config.trusted_units).map_err(|(first, second)| {
            AttestError::ConflictingCgroups {
                pid: process.pid(),
                first: first.to_string(),
                second: second.to_string(),
            }
        })
    }
}

/// Reads and parses `/proc/<pid>/cgroup` of a pinned process.
pub(crate) fn read_cgroups(process: &PinnedProcess) -> Result<Vec<CgroupEntry>, AttestError> {
    let text = process.read_to_string("cgroup")?;
    parse_cgroup_file(&text).map_err(|reason| AttestError::ProcMalformed {
        path: process.path_of("cgroup"),
        reason,
    })
}

#[async_trait::async_trait]
impl WorkloadAttestor for CgroupAttestor {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    async fn attest(&self, process: &PinnedProcess) -> Result<Vec<Selector>, AttestError> {
        Ok(self
            .identity(process)?
            .map(|id| id.selectors())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4b1c2d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";

    fn trusted() -> Vec<String> {
        CgroupConfig::default().trusted_units
    }

    fn id(path: &str) -> Option<ContainerIdentity> {
        identity_from_path(path, &trusted())
    }

    #[test]
    fn docker_layouts() {
        let want = Some(identity(ID, None));
        assert_eq!(id(&format!("/system.slice/docker-{ID}.scope")), want);
        assert_eq!(id(&format!("/docker/{ID}")), want);
        assert_eq!(id(&format!("/docker/{ID}/nested/whatever")), want);
    }

    #[test]
    fn pod_layouts_and_uid_canonicalisation() {
        let want = Some(identity(ID, Some(UID.into())));
        let sd = UID.replace('-', "_");
        assert_eq!(id(&format!("/kubepods/burstable/pod{UID}/{ID}")), want);
        assert_eq!(id(&format!("/kubepods/pod{UID}/{ID}")), want);
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{sd}.slice/crio-{ID}.scope"
            )),
            want
        );
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-pod{sd}.slice/cri-containerd-{ID}.scope"
            )),
            want
        );
        assert_eq!(id(&format!("/../../pod{UID}/{ID}")), want);
        assert_eq!(
            id(&format!(
                "/kubepods-burstable-pod{sd}.slice:cri-containerd:{ID}"
            )),
            want
        );
    }

    #[test]
    fn malformed_ids_are_not_identities() {
        // 63 hex digits, uppercase, a truncated pod uid.
        assert_eq!(id(&format!("/docker/{}", &ID[1..])), None);
        assert_eq!(id(&format!("/docker/{}", ID.to_uppercase())), None);
        assert_eq!(id(&format!("/kubepods/pod{}/{ID}", &UID[1..])), None);
        // A dashed uid is not systemd's escaping: that slice is not a pod, just a slice, and the
        // runtime's scope below it still names the container.
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-pod{UID}.slice/cri-containerd-{ID}.scope"
            )),
            Some(identity(ID, None))
        );
    }

    #[test]
    fn pod_without_container_component_is_nothing() {
        let sd = UID.replace('-', "_");
        assert_eq!(id(&format!("/kubepods/besteffort/pod{UID}")), None);
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-pod{sd}.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
    }

    #[test]
    fn delegated_and_unknown_subtrees_stop_the_walk() {
        assert_eq!(
            id(&format!(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope"
            )),
            None
        );
        assert_eq!(
            id(&format!("/machine.slice/machine-web.scope/docker/{ID}")),
            None
        );
        assert_eq!(id(&format!("/lxc.payload.web/docker/{ID}")), None);
        assert_eq!(
            id(&format!("/system.slice/sshd.service/docker-{ID}.scope")),
            None
        );
        // A bare id under an unknown parent (docker --cgroup-parent=/apps) is not recognised.
        assert_eq!(id(&format!("/apps/{ID}")), None);
        // But trusted runtimes' own units are walked through.
        assert_eq!(
            id(&format!(
                "/system.slice/containerd.service/docker-{ID}.scope"
            )),
            Some(identity(ID, None))
        );
    }

    #[test]
    fn cgroup_file_parsing() {
        let entries = parse_cgroup_file("12:cpu,cpuacct:/a\n1:name=systemd:/b\n0::/c:d\n").unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].controllers, ["cpu", "cpuacct"]);
        assert!(entries[1].is_named_systemd());
        assert!(entries[2].is_unified());
        assert_eq!(entries[2].path, "/c:d");

        assert!(
            parse_cgroup_file("")
                .unwrap_err()
                .contains("no cgroup lines")
        );
        assert!(
            parse_cgroup_file("x::/")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_cgroup_file("0:/")
                .unwrap_err()
                .contains("id:controllers:path")
        );
        assert!(
            parse_cgroup_file("0::relative")
                .unwrap_err()
                .contains("not absolute")
        );
    }

    #[test]
    fn components_strip_namespace_prefix_only() {
        assert_eq!(components("/../../a/b"), Some((true, vec!["a", "b"])));
        assert_eq!(components("/"), Some((false, vec![])));
        assert_eq!(components("/a/../b"), None);
        assert_eq!(components("a"), None);
    }

    #[test]
    fn conflicting_hierarchies_are_an_error_and_pod_uids_merge() {
        let other = ID.replace('3', "4");
        let entries =
            parse_cgroup_file(&format!("2:cpu:/docker/{ID}\n1:memory:/docker/{other}\n")).unwrap();
        assert!(identity_from_entries(&entries, &trusted()).is_err());

        let entries = parse_cgroup_file(&format!(
            "2:cpu:/kubepods/pod{UID}/{ID}\n0::/../crio-{ID}.scope\n"
        ))
        .unwrap();
        assert_eq!(
            identity_from_entries(&entries, &trusted()).unwrap(),
            Some(identity(ID, Some(UID.into())))
        );
    }

    #[test]
    fn config_validation() {
        for bad in ["user@1000.service", "not a unit", "kubepods.slice"] {
            let err = CgroupAttestor::new(CgroupConfig {
                trusted_units: vec![bad.into()],
            })
            .unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(CgroupAttestor::new(CgroupConfig::default()).is_ok());
    }
}
