//! A board as data: the machine, its toolchain, its image and its packages.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Source, Span};

/// The machine a board builds for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `aarch64` or `x86_64`.
    pub arch: String,
    /// The GNU triple, e.g. `aarch64-linux-gnu`.
    pub triple: String,
    /// The Rust target triple, e.g. `aarch64-unknown-linux-gnu`.
    pub rust_triple: String,
    /// Extra compiler flags for the CPU (`-mcpu=...`).
    pub cpu_flags: Vec<String>,
}

/// How to compile for a target, as a board's toolchain script describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolchain {
    pub name: String,
    /// C compiler command (looked up on the sandbox PATH).
    pub cc: String,
    pub cxx: String,
    pub ar: String,
    pub ld: String,
    pub nm: String,
    pub objcopy: String,
    pub ranlib: String,
    pub strip: String,
    /// `rustc` and `cargo` to use, and the linker rustc passes to.
    pub rustc: String,
    pub cargo: String,
    pub rust_linker: String,
    /// Host directories mounted read-only in every sandbox.
    pub host_paths: Vec<PathBuf>,
    /// A package set (a recipe with `debs`) whose tree is every sandbox's
    /// `/usr` instead of anything of the host's: the build environment.
    /// Every recipe of the board build-depends on it, so its output digest
    /// is in every key.
    pub usr: Option<String>,
    /// Recipes every recipe of the board builds with (except these
    /// themselves and package sets): the target's C library and the
    /// compiler that knows only `/sysroot`.
    pub build_deps: Vec<String>,
    /// Compilers run with `--sysroot=/sysroot`: the target's headers,
    /// crt files and libraries come from the build dependencies only.
    pub sysroot: bool,
    /// Extra environment for every build with this toolchain.
    pub env: BTreeMap<String, String>,
}

/// Kernel configuration a board asks for.
///
/// Evaluation hands it to the named recipe as data: each fragment becomes a
/// local source at `/build/src/kiln-kconfig/NN-<name>` and the environment
/// gets `KILN_KCONFIG_BASE` and `KILN_KCONFIG_FRAGMENTS`, so the recipe's
/// key covers the exact configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConfig {
    pub recipe: String,
    /// `tinyconfig`, `allnoconfig`, or a defconfig name.
    pub base: String,
    /// Fragment files, relative to the board file's directory.
    pub fragments: Vec<String>,
    /// The fragments as sources for the kernel recipe.
    #[serde(skip)]
    pub sources: Vec<Source>,
    /// Where `recipe` was written.
    #[serde(skip)]
    pub span: Span,
}

/// Bootloader a board asks for; its recipe sees `KILN_BOOTLOADER_CONFIG`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootloaderConfig {
    pub recipe: String,
    pub config: String,
    /// Where `recipe` was written.
    #[serde(skip)]
    pub span: Span,
}

/// The disk image's parts as a board gives them, in MiB. A field the board
/// leaves out is `None`: the image's policy (`kiln_image::policy`) holds
/// the balenaOS defaults, written once, and resolves them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLayout {
    /// `mbr` or `gpt`.
    pub table: Option<String>,
    pub gap_mib: Option<u64>,
    pub align_mib: Option<u64>,
    pub boot_mib: Option<u64>,
    pub root_mib: Option<u64>,
    pub state_mib: Option<u64>,
    pub data_mib: Option<u64>,
    /// The whole disk; 0 makes it as small as the partitions allow.
    pub disk_mib: Option<u64>,
}

/// What the OS calls itself in `/etc/os-release` and on the boot partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    /// `ID`: lower case, digits, `.`, `_`, `-`.
    pub id: String,
    /// `NAME`: free text.
    pub name: String,
    /// `VERSION_ID`.
    pub version: String,
}

impl Default for OsRelease {
    fn default() -> Self {
        OsRelease {
            id: "kiln".into(),
            name: "Kiln OS".into(),
            version: "0.1.0".into(),
        }
    }
}

/// How `kiln run` boots the board's image in QEMU. Board data, so a new
/// board needs no Rust change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`, `qemu-system-aarch64`, ...
    pub binary: String,
    pub machine: String,
    pub cpu: String,
    pub memory_mib: u64,
    /// Firmware (`-bios`), a path inside the bootloader recipe's output;
    /// empty for none.
    pub firmware: String,
    /// `-drive if=` for the disk (`virtio`, `ide`, ...).
    pub drive: String,
    /// The network device model (`virtio-net-pci`, `virtio-net-device`).
    pub net: String,
    /// Anything else, passed as is.
    pub args: Vec<String>,
}

/// A recipe attribute change applied by a board, like a bbappend or overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub recipe: String,
    pub span: Span,
}

/// A board after evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub target: Target,
    pub toolchain: Toolchain,
    pub kernel: Option<KernelConfig>,
    pub bootloader: Option<BootloaderConfig>,
    pub partitions: PartitionLayout,
    pub os: OsRelease,
    pub qemu: Option<QemuConfig>,
    /// The board's `config.json` defaults, merged over Kiln's own
    /// (`deviceType`, `developmentMode: false`, `persistentLogging: false`).
    pub config_json: serde_json::Map<String, serde_json::Value>,
    pub packages: Vec<String>,
    /// Where each package name was written.
    #[serde(skip)]
    pub package_spans: BTreeMap<String, Span>,
    /// Which recipes the board overrides (the changes are already applied to
    /// the recipes); kept so `kiln show` can say where a value came from.
    pub overrides: Vec<Override>,
    pub span: Span,
}
