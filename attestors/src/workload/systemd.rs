//! The `systemd` workload attestor: the systemd unit of the process, read from its cgroup path
//! the way systemd itself derives it (skip the slices, take the first unit).
//!
//! Selectors (type `systemd`):
//!
//! - `id:<unit>`: the system unit, e.g. `id:nginx.service`, `id:session-4.scope`,
//!   `id:docker-<id>.scope`, or `id:user@1000.service` for anything a user's service manager runs;
//! - `user_unit:<uid>:<unit>`: for processes under `user@<uid>.service`, the user unit, e.g.
//!   `user_unit:1000:backup.service`. The uid is part of the value because users name their units
//!   freely: `backup.service` of user 1000 has nothing to do with the system's.
//!
//! Only the first unit counts: below a unit, cgroups are the unit's own business when it
//! delegates its subtree (a container with its own systemd, a user manager), so a deeper
//! `*.service` component proves nothing. See docs/attestors/systemd.md.

use super::{
    AttestError, PinnedProcess, Selector, WorkloadAttestor,
    cgroup::{CgroupEntry, components, is_process_unit, is_slice, read_cgroups},
};

/// Selector type of this attestor.
pub const SELECTOR_TYPE: &str = "systemd";

/// The unit a process runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemdUnits {
    /// The system manager's unit, e.g. `nginx.service` or `user@1000.service`.
    pub unit: String,
    /// For a process of a user's service manager, that user's unit.
    pub user_unit: Option<UserUnit>,
}

/// A unit of a user's service manager (`user@<uid>.service`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserUnit {
    /// The user the manager runs for.
    pub uid: u32,
    /// The user unit, e.g. `backup.service`.
    pub unit: String,
}

impl SystemdUnits {
    /// `systemd:id:<unit>`, and `systemd:user_unit:<uid>:<unit>` for a user unit.
    pub fn selectors(&self) -> Vec<Selector> {
        let mut out = vec![Selector::new(SELECTOR_TYPE, format!("id:{}", self.unit))];
        if let Some(user) = &self.user_unit {
            out.push(Selector::new(
                SELECTOR_TYPE,
                format!("user_unit:{}:{}", user.uid, user.unit),
            ));
        }
        out
    }
}

/// The uid of a user manager unit name, `user@<uid>.service`.
fn user_manager_uid(unit: &str) -> Option<u32> {
    let digits = unit.strip_prefix("user@")?.strip_suffix(".service")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The units one cgroup path names. `None` for a path outside systemd's tree (the root, a
/// cgroupfs container runtime's `/docker/...`), and for a path seen from inside a cgroup
/// namespace (`/../...`), whose top is hidden.
pub fn units_from_path(path: &str) -> Option<SystemdUnits> {
    let (above_namespace, parts) = components(path)?;
    if above_namespace {
        return None;
    }
    let mut rest = parts.into_iter().skip_while(|p| is_slice(p));
    let unit = rest.next().filter(|u| is_process_unit(u))?;
    let user_unit = user_manager_uid(unit).and_then(|uid| {
        rest.find(|p| !is_slice(p))
            .filter(|u| is_process_unit(u))
            .map(|u| UserUnit {
                uid,
                unit: u.to_owned(),
            })
    });
    Some(SystemdUnits {
        unit: unit.to_owned(),
        user_unit,
    })
}

/// The units named by the cgroup lines of one process: the unified hierarchy (cgroup v2 and
/// hybrid) and systemd's named v1 hierarchy (`name=systemd`, legacy and hybrid). When both name
/// a cgroup they must agree, or nothing is claimed: a hybrid host whose cgroupfs-driven
/// containers left the unified path at their runtime's service would otherwise hand the
/// runtime's unit to every container.
pub fn units_from_entries(entries: &[CgroupEntry]) -> Option<SystemdUnits> {
    let named = entries.iter().find(|e| e.is_named_systemd());
    // On a legacy (v1) host the unified hierarchy exists but every process sits at its root.
    let unified = entries
        .iter()
        .find(|e| e.is_unified())
        .filter(|e| e.path != "/" || named.is_none());
    match (named, unified) {
        (Some(n), Some(u)) => {
            let units = units_from_path(&n.path);
            (units == units_from_path(&u.path))
                .then_some(units)
                .flatten()
        }
        (Some(only), None) | (None, Some(only)) => units_from_path(&only.path),
        (None, None) => None,
    }
}

/// The `systemd` workload attestor. Reads the cgroup file only; it does not ask systemd over
/// D-Bus.
#[derive(Clone, Debug, Default)]
pub struct SystemdAttestor;

impl SystemdAttestor {
    /// Builds the attestor (it has no configuration).
    pub fn new() -> Self {
        Self
    }

    /// Reads and interprets `/proc/<pid>/cgroup` of the pinned process.
    pub fn units(&self, process: &PinnedProcess) -> Result<Option<SystemdUnits>, AttestError> {
        Ok(units_from_entries(&read_cgroups(process)?))
    }
}

#[async_trait::async_trait]
impl WorkloadAttestor for SystemdAttestor {
    fn name(&self) -> &'static str {
        SELECTOR_TYPE
    }

    async fn attest(&self, process: &PinnedProcess) -> Result<Vec<Selector>, AttestError> {
        Ok(self
            .units(process)?
            .map(|u| u.selectors())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::cgroup::parse_cgroup_file;

    fn unit(path: &str) -> Option<String> {
        units_from_path(path).map(|u| u.unit)
    }

    #[test]
    fn first_unit_after_slices() {
        assert_eq!(
            unit("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(unit("/init.scope").as_deref(), Some("init.scope"));
        assert_eq!(
            unit("/system.slice/system-getty.slice/getty@tty1.service").as_deref(),
            Some("getty@tty1.service")
        );
        // Inside a container that runs its own systemd: the container's scope, not its units.
        assert_eq!(
            unit("/system.slice/docker-abc.scope/system.slice/nginx.service").as_deref(),
            Some("docker-abc.scope")
        );
    }

    #[test]
    fn no_unit_outside_systemd_tree() {
        assert_eq!(unit("/"), None);
        assert_eq!(unit("/system.slice"), None);
        assert_eq!(unit("/docker/abc"), None);
        assert_eq!(unit("/../../system.slice/nginx.service"), None);
        assert_eq!(unit("/system.slice/bad name.service"), None);
    }

    #[test]
    fn user_units_carry_the_uid() {
        let units = units_from_path(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/backup.service",
        )
        .unwrap();
        assert_eq!(units.unit, "user@1000.service");
        assert_eq!(
            units.user_unit,
            Some(UserUnit {
                uid: 1000,
                unit: "backup.service".into()
            })
        );
        let values: Vec<String> = units.selectors().iter().map(ToString::to_string).collect();
        assert_eq!(
            values,
            [
                "systemd:id:user@1000.service",
                "systemd:user_unit:1000:backup.service"
            ]
        );
        // The manager's own processes.
        let manager =
            units_from_path("/user.slice/user-1000.slice/user@1000.service/init.scope").unwrap();
        assert_eq!(manager.user_unit.unwrap().unit, "init.scope");
        assert_eq!(user_manager_uid("user@.service"), None);
        assert_eq!(user_manager_uid("user@x1.service"), None);
    }

    #[test]
    fn hierarchies_must_agree() {
        let both = parse_cgroup_file(
            "1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service\n",
        )
        .unwrap();
        assert_eq!(units_from_entries(&both).unwrap().unit, "a.service");
        let legacy = parse_cgroup_file("1:name=systemd:/system.slice/a.service\n0::/\n").unwrap();
        assert_eq!(units_from_entries(&legacy).unwrap().unit, "a.service");
        let disagree =
            parse_cgroup_file("1:name=systemd:/docker/abc\n0::/system.slice/containerd.service\n")
                .unwrap();
        assert_eq!(units_from_entries(&disagree), None);
    }
}
