//! The systemd units packages declare: each must be shipped by that
//! package, in a directory systemd loads units from.
//!
//! A recipe's `units` list is what the image and its docs rely on; a unit
//! declared but installed under the wrong name or by another package is a
//! recipe bug best caught when the image is put together.

use kiln_fstree::{name, Kind};

use crate::closure::resolve;
use crate::error::RootfsError;
use crate::staging::{Owner, Staging};
use crate::Package;

/// Where packages may install units (systemd's system unit load path,
/// without the runtime and generator directories).
pub const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Checks every declared unit; returns (package, path in the image) pairs.
pub(crate) fn check(
    staging: &Staging<'_>,
    packages: &[Package],
) -> Result<Vec<(String, String)>, RootfsError> {
    let mut found = Vec::new();
    for (index, pkg) in packages.iter().enumerate() {
        for unit in &pkg.units {
            let path = (!unit.is_empty() && name(unit) == unit && unit != "." && unit != "..")
                .then(|| shipped(staging, index, unit))
                .flatten();
            match path {
                Some(path) => found.push((pkg.name.clone(), path)),
                None => {
                    return Err(RootfsError::MissingUnit {
                        package: pkg.name.clone(),
                        unit: unit.clone(),
                        dirs: UNIT_DIRS.join(", "),
                    })
                }
            }
        }
    }
    Ok(found)
}

/// The path of `unit` if package `index` installs it in a unit directory
/// (following symlinked directories such as `/lib` → `usr/lib`; the unit
/// itself may be a symlink, an alias).
fn shipped(staging: &Staging<'_>, index: usize, unit: &str) -> Option<String> {
    UNIT_DIRS.iter().find_map(|dir| {
        let (dir, node) = resolve(&staging.tree, dir)?;
        if !matches!(node.kind, Kind::Dir) {
            return None;
        }
        let path = format!("{dir}/{unit}");
        let owners = staging.owners.get(&path)?;
        owners.contains(&Owner::Package(index)).then_some(path)
    })
}
