//! Plain data that flows from evaluation to the graph and the builder.
//!
//! Nothing here knows about Rhai, the store or the sandbox: these types are
//! what a recipe or board *is* once its script has run. Keeping them dumb is
//! what lets the key be a hash of a canonical encoding of them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a value came from in a `.rhai` file, for error messages.
///
/// Never part of a key: moving a recipe inside its file, or the checkout on
/// disk, must not change what it builds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The file as the user named it (relative to the project root when possible).
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

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
    /// Extra environment for every build with this toolchain.
    pub env: BTreeMap<String, String>,
}

/// One input tarball, file or directory of a recipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Downloaded from `url` (or a mirror) and verified against `hash`.
    Remote {
        url: String,
        hash: SourceHash,
        /// Debian source package that carries the same bytes, for `scripts/seed-sources`.
        debian: Option<String>,
        /// Leading path components to drop when unpacking (tar `--strip-components`).
        strip: u32,
        /// Directory below `/build/src` to unpack into ("" for the top).
        dest: String,
        /// Whether to unpack it (archives) or copy it as a file.
        unpack: bool,
        span: Span,
    },
    /// A file or directory that lives next to the recipe.
    Local {
        /// Path relative to the recipe's files directory (or to `base`).
        path: String,
        /// blake3 of the content (for directories, of a canonical listing).
        blake3: String,
        /// Where it lands below `/build/src`.
        dest: String,
        span: Span,
        /// The directory `path` is relative to when it is not the recipe's
        /// own: a board's kernel fragments live next to the board. Never
        /// hashed (the content is), so moving the checkout changes nothing.
        #[serde(skip)]
        base: Option<PathBuf>,
    },
}

/// An expected digest of a remote source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "algo", content = "hex", rename_all = "snake_case")]
pub enum SourceHash {
    Sha256(String),
    Blake3(String),
}

impl fmt::Display for SourceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceHash::Sha256(h) => write!(f, "sha256:{h}"),
            SourceHash::Blake3(h) => write!(f, "blake3:{h}"),
        }
    }
}

/// A patch applied with `patch -p<strip>` in list order after unpacking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    pub path: String,
    pub blake3: String,
    pub strip: u32,
    pub span: Span,
}

/// One build step: a command line, run in the sandbox with `/build/src` as cwd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Short name shown in progress and errors (`configure`, `step 2`, ...).
    pub name: String,
    /// argv; a step written as a string becomes `["/bin/sh", "-euc", text]`.
    pub argv: Vec<String>,
    /// Environment added for this step only.
    pub env: BTreeMap<String, String>,
    pub span: Span,
}

/// Ownership/mode/capabilities an unprivileged build cannot set itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Absolute path inside the output (`/usr/bin/ping`).
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Text form of file capabilities (`cap_net_raw+ep`).
    pub caps: Option<String>,
    pub span: Span,
}

/// A recipe after evaluation and after the board's overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub version: String,
    pub description: String,
    pub license: String,
    pub homepage: String,
    pub cpe: String,
    pub purl: String,
    pub sources: Vec<Source>,
    pub patches: Vec<Patch>,
    /// Recipes whose outputs must be present while building (`/deps/<name>`, `/sysroot`).
    pub build_deps: Vec<String>,
    /// Recipes that must be in the image when this one is.
    pub runtime_deps: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// Paths the output must contain; the build fails if one is missing.
    pub installs: Vec<String>,
    /// Absolute paths persisted on the state partition.
    pub state: Vec<String>,
    /// systemd units (file names) the output ships.
    pub units: Vec<String>,
    pub permissions: Vec<Permission>,
    /// Capabilities a board can require of the recipe (a bootloader's
    /// `ab-boot`, `table:mbr`); checked at evaluation, never hashed.
    pub provides: Vec<String>,
    /// Where the script lives; never hashed.
    pub span: Span,
    /// The recipe's files directory (`recipes/<stem>/`); never hashed.
    #[serde(skip)]
    pub files_dir: PathBuf,
    /// Where each dependency name was written, for "missing dependency" errors.
    #[serde(skip)]
    pub dep_spans: BTreeMap<String, Span>,
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

/// Sizes of the disk image's parts, in MiB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLayout {
    /// `mbr` or `gpt`.
    pub table: String,
    pub gap_mib: u64,
    pub align_mib: u64,
    pub boot_mib: u64,
    pub root_mib: u64,
    pub state_mib: u64,
    pub data_mib: u64,
    /// The whole disk; 0 makes it as small as the partitions allow.
    pub disk_mib: u64,
}

impl Default for PartitionLayout {
    fn default() -> Self {
        PartitionLayout {
            table: "mbr".into(),
            gap_mib: 4,
            align_mib: 4,
            boot_mib: 40,
            root_mib: 320,
            state_mib: 20,
            data_mib: 192,
            disk_mib: 0,
        }
    }
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
