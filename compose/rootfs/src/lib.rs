//! From package outputs to the root filesystem tree the image writers
//! consume.
//!
//! [`assemble`] runs the steps in order, each failing with an error that
//! names the packages and paths involved:
//!
//! 1. **merge** every package's manifest into one [`Tree`] (file contents
//!    stay in the packages' materialized outputs; capability text becomes
//!    the kernel's binary xattr). A path two packages install must be
//!    identical in both, directories included.
//! 2. **declared units** must be shipped by the package declaring them.
//! 3. **generated files**: `/etc/os-release`, `/etc/fstab`, an empty
//!    `/etc/machine-id`, mount points. A package shipping one of them is an
//!    error.
//! 4. **state binds**: one mount unit per declared state path, enabled, plus
//!    the service creating missing sources on the state partition.
//! 5. **ELF closure**: every program and library is for the target and
//!    finds its interpreter and libraries inside the tree.
//!
//! [`strip()`] is separate: it runs the target toolchain's `strip` and is
//! only wanted for some images.
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_rootfs::RootfsError> {
//! # let packages: Vec<kiln_rootfs::Package> = vec![];
//! use kiln_rootfs::{assemble, strip, OsInfo, Options};
//! let os = OsInfo {
//!     id: "kiln".into(),
//!     name: "Kiln".into(),
//!     version: "1.0.0".into(),
//!     board: "raspberrypi4-64".into(),
//!     arch: "aarch64".into(),
//! };
//! let opts = Options::default();
//! let mut rootfs = assemble(&packages, &os, &opts)?;
//! strip(&mut rootfs.tree, "aarch64-linux-gnu-strip", "/tmp/strip".as_ref(), &opts.elf_skip)?;
//! # Ok(()) }
//! ```

mod caps;
mod closure;
mod elf;
mod error;
pub mod escape;
mod generate;
mod merge;
mod staging;
mod state;
mod strip;
mod units;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use kiln_fstree::{Kind, Tree};
use kiln_store::Manifest;

pub use caps::{encode as encode_capabilities, CapError, FileCaps, CAP_NAMES};
pub use error::{RootfsError, Unresolved};
pub use generate::{os_release, FSTAB, FSTAB_TEXT, MACHINE_ID, OS_RELEASE};
pub use staging::GENERATED;
pub use state::{
    mount_unit, prepare_unit, BindKind, BindUnit, MACHINE_ID_SOURCE, OVERLAY, PREPARE_CONF,
    PREPARE_UNIT, UNIT_DIR,
};
pub use strip::{strip, StripReport, Tool};
pub use units::UNIT_DIRS;

/// One built package, as the image needs it.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub manifest: Manifest,
    /// The materialized output (`Store::materialize`): manifest paths are
    /// found under it.
    pub files: PathBuf,
    /// Absolute paths to persist on the state partition.
    pub state: Vec<String>,
    /// systemd unit file names the package ships.
    pub units: Vec<String>,
}

/// What the OS calls itself; becomes `/etc/os-release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsInfo {
    /// `ID`, e.g. `kiln` or `balena-os`.
    pub id: String,
    /// `NAME`, free text.
    pub name: String,
    /// `VERSION_ID`.
    pub version: String,
    /// The board (device type); `VARIANT_ID`.
    pub board: String,
    /// `aarch64` or `x86_64`.
    pub arch: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Run the ELF architecture and closure check.
    pub check_elf: bool,
    /// Path prefixes whose ELF files are neither checked nor stripped.
    /// By default the firmware directories: firmware is often ELF built for
    /// another processor (a modem, a GPU), never run by this kernel's
    /// dynamic linker.
    pub elf_skip: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            check_elf: true,
            elf_skip: vec!["/lib/firmware".into(), "/usr/lib/firmware".into()],
        }
    }
}

/// The assembled root filesystem.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub tree: Tree,
    /// Every generated bind mount, sorted by unit name.
    pub bind_units: Vec<BindUnit>,
    pub report: Report,
}

/// What went into the tree, for logs and `kiln show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub hardlinks: usize,
    /// Sum of regular file sizes (hard links counted once).
    pub file_bytes: u64,
    /// ELF files checked (0 when the check is off).
    pub elf_checked: usize,
    /// Path → the packages that install it ([`GENERATED`] for Kiln's own).
    pub owners: BTreeMap<String, Vec<String>>,
    /// Paths packages ship at or under a state bind target: hidden at
    /// runtime by the bind (nothing is copied to the state partition).
    pub shadowed: Vec<String>,
    /// Declared units: (package, path in the image).
    pub units: Vec<(String, String)>,
}

/// Builds the root filesystem tree from `packages` (see the crate docs for
/// the steps). The result depends only on the inputs, not on package order
/// (except which package an error names first).
pub fn assemble(
    packages: &[Package],
    os: &OsInfo,
    opts: &Options,
) -> Result<Assembled, RootfsError> {
    generate::check(os)?;
    let mut seen = HashSet::new();
    if let Some(dup) = packages.iter().find(|p| !seen.insert(p.name.as_str())) {
        return Err(RootfsError::DuplicatePackage(dup.name.clone()));
    }

    let mut staging = staging::Staging::new(packages.iter().map(|p| p.name.as_str()).collect());
    merge::merge(&mut staging, packages)?;
    let units = units::check(&staging, packages)?;
    generate::add(&mut staging, os)?;
    let binds = state::add(&mut staging, packages)?;
    let elf_checked = if opts.check_elf {
        closure::check(&staging.tree, &os.arch, &opts.elf_skip)?
    } else {
        0
    };

    let mut report = Report {
        elf_checked,
        owners: staging.owner_names(),
        shadowed: binds.shadowed,
        units,
        ..Report::default()
    };
    for (path, node) in staging.tree.iter() {
        match &node.kind {
            Kind::Dir => report.dirs += 1,
            Kind::File(data) => {
                report.files += 1;
                report.file_bytes += data.len().map_err(|source| RootfsError::Io {
                    path: elf::host_path(path, data),
                    source,
                })?;
            }
            Kind::Symlink(_) => report.symlinks += 1,
            Kind::Hardlink(_) => report.hardlinks += 1,
            _ => {}
        }
    }
    Ok(Assembled {
        tree: staging.tree,
        bind_units: binds.units,
        report,
    })
}
