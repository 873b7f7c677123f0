//! Persistent state on a read-only root: one bind mount unit per path the
//! packages declare, from `/mnt/state/root-overlay<path>` over `<path>`.
//!
//! The bind list is derived from the recipes, never kept by hand. Each bind
//! is its own early mount unit, enabled by a symlink in
//! `local-fs.target.wants` (the root is read-only, so nothing can run
//! `systemctl enable` on the device). A mount unit can't create its source,
//! so one oneshot service, `kiln-state-prepare.service`, runs
//! `systemd-tmpfiles` on a generated config first: it creates each missing
//! backing path (a directory, or an empty file when the rootfs path is a
//! file), with the rootfs path's mode and owner, and copies nothing: first
//! boot defaults come from the services, as in balenaOS. The `:` prefixes
//! (systemd ≥ 250) apply mode and owner only when creating, so later changes
//! a service makes to its own state are kept.
//!
//! `/etc/machine-id` is bound the same way, from `/mnt/state/machine-id`.

use std::collections::BTreeMap;

use kiln_fstree::{parent, Kind, Node};

use crate::error::RootfsError;
use crate::escape;
use crate::generate::MACHINE_ID;
use crate::staging::{Owner, Staging};
use crate::Package;

/// Where the state partition is mounted.
pub const STATE_MOUNT: &str = "/mnt/state";
/// Where bind sources live on the state partition.
pub const OVERLAY: &str = "/mnt/state/root-overlay";
/// The machine id's backing file.
pub const MACHINE_ID_SOURCE: &str = "/mnt/state/machine-id";
/// Where generated units go.
pub const UNIT_DIR: &str = "/usr/lib/systemd/system";
/// The service creating missing bind sources.
pub const PREPARE_UNIT: &str = "kiln-state-prepare.service";
/// Its `systemd-tmpfiles` config. Not in a `tmpfiles.d` directory: it must
/// only run once `/mnt/state` is mounted, not with the early tmpfiles pass.
pub const PREPARE_CONF: &str = "/usr/lib/kiln/state-prepare.conf";

/// Whether a bind mounts a directory or a single file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    Dir,
    File,
}

/// One generated bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindUnit {
    /// The unit's file name, e.g. `var-lib-chrony.mount`.
    pub unit: String,
    /// The source on the state partition.
    pub what: String,
    /// The path in the root filesystem.
    pub target: String,
    pub kind: BindKind,
    /// Packages that asked for it (empty for the built-in machine-id bind).
    pub declared_by: Vec<String>,
}

/// What [`add`] generated.
pub(crate) struct Binds {
    pub units: Vec<BindUnit>,
    /// Paths packages ship at or under a bind target: at runtime the bind
    /// hides them.
    pub shadowed: Vec<String>,
}

/// Trees whose contents are not on the root filesystem at runtime (API
/// filesystems, tmpfs, the partitions themselves), so binding there means
/// nothing.
const FORBIDDEN: [&str; 6] = ["/dev", "/mnt", "/proc", "/run", "/sys", "/tmp"];

/// Checks a declared state path; the reason if it's refused.
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if path == "/" {
        return Err("the whole root can't be a state path".into());
    }
    if path.ends_with('/')
        || path[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be normalized (no `//`, `.`, `..` or trailing `/`)".into());
    }
    // Unit files and tmpfiles.d expand `%` specifiers and split on
    // whitespace, and `\` and quotes are escapes there: keep paths plain
    // rather than escape them three different ways.
    if let Some(c) = path
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '%' | '\\' | '"' | '\''))
    {
        return Err(format!(
            "contains {c:?}: state paths are limited to printable ASCII without whitespace, \
             `%`, `\\` and quotes"
        ));
    }
    if let Some(top) = FORBIDDEN
        .iter()
        .find(|t| path == **t || path.starts_with(&format!("{t}/")))
    {
        return Err(format!(
            "{top} is not part of the root filesystem at runtime; nothing can be bound there"
        ));
    }
    if path == MACHINE_ID {
        return Err(format!(
            "{MACHINE_ID} is always persisted (from {MACHINE_ID_SOURCE}); don't declare it"
        ));
    }
    let name = escape::path(path);
    if name.len() + ".mount".len() > 255 {
        return Err(format!(
            "its unit name {name}.mount is longer than 255 bytes"
        ));
    }
    Ok(())
}

/// Validates every package's state paths and adds the bind units, their
/// wants symlinks, the tmpfiles config and the prepare service.
pub(crate) fn add(staging: &mut Staging<'_>, packages: &[Package]) -> Result<Binds, RootfsError> {
    // path → declaring packages; sorted, so output order never depends on
    // package order.
    let mut declared: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for pkg in packages {
        for path in &pkg.state {
            check_path(path).map_err(|reason| RootfsError::StatePath {
                package: pkg.name.clone(),
                path: path.clone(),
                reason,
            })?;
            let by = declared.entry(path.as_str()).or_default();
            if !by.contains(&pkg.name) {
                by.push(pkg.name.clone());
            }
        }
    }

    let mut units = Vec::new();
    let mut tmpfiles = String::from(
        "# Generated by Kiln: state partition sources of the bind mounts.\n\
         # Created when missing, never overwritten.\n",
    );
    let mut shadowed = Vec::new();
    for (path, by) in &declared {
        let (kind, mode, uid, gid) = target(staging, path, by)?;
        shadowed.extend(
            staging
                .owners
                .range(path.to_string()..)
                .take_while(|(p, _)| p.starts_with(*path))
                .filter(|(p, _)| p.as_str() == *path || p.starts_with(&format!("{path}/")))
                .filter(|(_, o)| o.iter().any(|o| matches!(o, Owner::Package(_))))
                .filter(|(p, _)| {
                    // An empty directory hides nothing.
                    p.as_str() != *path
                        || !matches!(staging.tree.get(p).map(|n| &n.kind), Some(Kind::Dir))
                })
                .map(|(p, _)| p.clone()),
        );
        let what = format!("{OVERLAY}{path}");
        tmpfiles.push_str(&tmpfiles_line(kind, &what, mode, uid, gid));
        units.push(BindUnit {
            unit: format!("{}.mount", escape::path(path)),
            what,
            target: path.to_string(),
            kind,
            declared_by: by.clone(),
        });
    }
    tmpfiles.push_str(&tmpfiles_line(
        BindKind::File,
        MACHINE_ID_SOURCE,
        0o444,
        0,
        0,
    ));
    units.push(BindUnit {
        unit: format!("{}.mount", escape::path(MACHINE_ID)),
        what: MACHINE_ID_SOURCE.into(),
        target: MACHINE_ID.into(),
        kind: BindKind::File,
        declared_by: Vec::new(),
    });
    units.sort_by(|a, b| a.unit.cmp(&b.unit));

    let text = |s: String| Node::file(kiln_fstree::Data::Bytes(s.into_bytes()), 0o644);
    let wants = format!("{UNIT_DIR}/local-fs.target.wants");
    staging.ensure_dir(&wants, &wants)?;
    for u in &units {
        staging.add_generated(
            &format!("{UNIT_DIR}/{}", u.unit),
            text(mount_unit(u)),
            "a state bind mount unit",
        )?;
        staging.add_generated(
            &format!("{wants}/{}", u.unit),
            Node::symlink(format!("../{}", u.unit)),
            "enables a state bind mount unit",
        )?;
    }
    staging.add_generated(
        &format!("{UNIT_DIR}/{PREPARE_UNIT}"),
        text(prepare_unit(&units)),
        "creates the state bind sources",
    )?;
    staging.add_generated(PREPARE_CONF, text(tmpfiles), "the state bind sources")?;
    Ok(Binds { units, shadowed })
}

/// Makes sure the bind target exists in the tree and says what it is: the
/// kind, mode and owner the backing path gets. A path no package ships
/// becomes an empty directory (0755, root): most state is a directory a
/// service fills, and a file bind needs the service's package to ship the
/// file anyway.
fn target(
    staging: &mut Staging<'_>,
    path: &str,
    by: &[String],
) -> Result<(BindKind, u16, u32, u32), RootfsError> {
    let err = |reason: String| RootfsError::StatePath {
        package: by.join("`, `"),
        path: path.to_string(),
        reason,
    };
    // A symlink anywhere on the way would make the mount land elsewhere.
    let mut at = parent(path);
    while at != "/" {
        if let Some(n) = staging.tree.get(at) {
            if !matches!(n.kind, Kind::Dir) {
                return Err(err(format!(
                    "`{at}` is not a directory in the root filesystem (installed by `{}`)",
                    staging.first_owner(at)
                )));
            }
        }
        at = parent(at);
    }
    match staging.tree.get(path) {
        None => {
            staging.ensure_dir(path, path)?;
            Ok((BindKind::Dir, 0o755, 0, 0))
        }
        Some(n) => match &n.kind {
            Kind::Dir => Ok((BindKind::Dir, n.mode, n.uid, n.gid)),
            Kind::File(_) | Kind::Hardlink(_) => Ok((BindKind::File, n.mode, n.uid, n.gid)),
            Kind::Symlink(t) => Err(err(format!(
                "is a symlink to `{t}` in the root filesystem (installed by `{}`); declare \
                 the path it points to",
                staging.first_owner(path)
            ))),
            _ => Err(err(format!(
                "is a special file in the root filesystem (installed by `{}`)",
                staging.first_owner(path)
            ))),
        },
    }
}

/// One `systemd-tmpfiles` line: `d` creates a directory, `f` an empty file,
/// both only if missing (with their parents); `:` applies mode and owner
/// only on creation.
fn tmpfiles_line(kind: BindKind, path: &str, mode: u16, uid: u32, gid: u32) -> String {
    let t = match kind {
        BindKind::Dir => 'd',
        BindKind::File => 'f',
    };
    format!("{t} {path} :{mode:04o} :{uid} :{gid} -\n")
}

/// The mount unit for one bind.
pub fn mount_unit(u: &BindUnit) -> String {
    format!(
        "# Generated by Kiln: keeps {target} on the state partition.\n\
         [Unit]\n\
         Description=State bind mount for {target}\n\
         DefaultDependencies=no\n\
         RequiresMountsFor={STATE_MOUNT}\n\
         Requires={PREPARE_UNIT}\n\
         After=mnt-state.mount {PREPARE_UNIT}\n\
         Before=local-fs.target umount.target\n\
         Conflicts=umount.target\n\
         \n\
         [Mount]\n\
         What={what}\n\
         Where={target}\n\
         Type=none\n\
         Options=bind\n\
         \n\
         [Install]\n\
         WantedBy=local-fs.target\n",
        target = u.target,
        what = u.what,
    )
}

/// The service creating missing bind sources before any bind mount. It is
/// not enabled: every bind unit `Requires=` it.
pub fn prepare_unit(units: &[BindUnit]) -> String {
    let names: Vec<&str> = units.iter().map(|u| u.unit.as_str()).collect();
    format!(
        "# Generated by Kiln: creates missing state partition sources for the bind mounts.\n\
         [Unit]\n\
         Description=Prepare state partition bind mount sources\n\
         DefaultDependencies=no\n\
         RequiresMountsFor={STATE_MOUNT}\n\
         After=mnt-state.mount\n\
         Before=local-fs.target shutdown.target {}\n\
         Conflicts=shutdown.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart=systemd-tmpfiles --create {PREPARE_CONF}\n",
        names.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_paths_are_checked() {
        for ok in ["/var/lib/chrony", "/home/root/.ssh", "/etc/a-b:c_d.e"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("var/lib/x", "absolute"),
            ("/", "whole root"),
            ("/var//lib", "normalized"),
            ("/var/lib/", "normalized"),
            ("/var/../etc", "normalized"),
            ("/var/lib/a b", "' '"),
            ("/var/lib/%h", "'%'"),
            ("/run/x", "/run is not part"),
            ("/mnt/state", "/mnt is not part"),
            ("/tmp", "/tmp is not part"),
            ("/etc/machine-id", "always persisted"),
        ] {
            match check_path(bad) {
                Err(reason) => assert!(reason.contains(why), "{bad}: {reason}"),
                Ok(()) => panic!("{bad} accepted"),
            }
        }
        assert!(check_path(&format!("/{}", "x".repeat(250))).is_err());
    }

    #[test]
    fn tmpfiles_lines() {
        assert_eq!(
            tmpfiles_line(
                BindKind::Dir,
                "/mnt/state/root-overlay/home/root/.ssh",
                0o700,
                0,
                0
            ),
            "d /mnt/state/root-overlay/home/root/.ssh :0700 :0 :0 -\n"
        );
        assert_eq!(
            tmpfiles_line(BindKind::File, "/mnt/state/machine-id", 0o444, 0, 0),
            "f /mnt/state/machine-id :0444 :0 :0 -\n"
        );
    }
}
