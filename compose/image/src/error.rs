//! What can stop an image, with the numbers and the fix.

use std::path::PathBuf;

use kiln_store::StoreError;

/// An image that cannot be made. Every variant says which input is wrong;
/// [`ImageError::help`] says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "package `{package}` has no output (it failed or was skipped), so the image cannot be made"
    )]
    NotBuilt { package: String },

    #[error("a file tree: {0}")]
    Tree(#[from] kiln_fstree::TreeError),

    #[error("`{0}` is not a digest")]
    BadDigest(String),

    #[error("the store: {0}")]
    Store(#[from] StoreError),

    #[error("root filesystem: {0}")]
    Rootfs(#[from] kiln_rootfs::RootfsError),

    #[error(
        "the root filesystem is {needed} bytes ({needed_mib} MiB, EROFS {compression}) but \
         partition resin-rootA is {available} bytes ({available_mib} MiB)"
    )]
    RootTooLarge {
        needed: u64,
        needed_mib: u64,
        available: u64,
        available_mib: u64,
        compression: &'static str,
    },

    #[error("boot partition: {0}")]
    Fat(#[from] kiln_disk::FatError),

    #[error("partition layout: {0}")]
    Layout(#[from] kiln_disk::LayoutError),

    #[error("root filesystem (EROFS): {0}")]
    Erofs(#[from] kiln_erofs::ErofsError),

    #[error("{label} (ext4): {source}")]
    Ext4 {
        label: String,
        source: kiln_ext4::Ext4Error,
    },

    #[error("disk image: {0}")]
    Disk(#[from] kiln_disk::DiskError),

    #[error("`{path}` goes on the boot partition from both `{first}` and `{second}`")]
    BootConflict {
        path: String,
        first: String,
        second: String,
    },

    #[error("reading {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        source: kiln_fstree::TreeError,
    },

    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },

    #[error(transparent)]
    Atomic(#[from] kiln_atomic::Error),

    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ImageError {
    /// What to do about it, for the error's `help:` line.
    pub fn help(&self, board_file: &str) -> Option<String> {
        use kiln_rootfs::RootfsError as R;
        Some(match self {
            ImageError::NotBuilt { .. } => "fix the package's build first (see the errors above)".into(),
            ImageError::RootTooLarge { needed, .. } => format!(
                "raise `partitions.root_mib` in {board_file} to at least {}, or remove packages",
                needed.div_ceil(kiln_disk::MIB).next_multiple_of(4)
            ),
            ImageError::Layout(_) => format!("fix `partitions` in {board_file}"),
            ImageError::Fat(kiln_disk::FatError::NoSpace { needed_bytes, .. }) => format!(
                "raise `partitions.boot_mib` in {board_file} to at least {}",
                (needed_bytes + needed_bytes / 16).div_ceil(kiln_disk::MIB)
            ),
            ImageError::Ext4 { label, .. } => format!(
                "raise `partitions.{}_mib` in {board_file}",
                if *label == "resin-state" { "state" } else { "data" }
            ),
            ImageError::BootConflict { .. } => {
                "the kernel and the bootloader recipes must install different files under /boot".into()
            }
            ImageError::Rootfs(R::Conflict { .. }) => {
                "make one of the packages install the path elsewhere, or drop one package from the board".into()
            }
            ImageError::Rootfs(R::Unresolved(_)) => format!(
                "add the package that provides the library to `packages` in {board_file} (or to the needing recipe's `runtime_deps`)"
            ),
            ImageError::Rootfs(R::Generated { .. }) => {
                "Kiln generates this file from the board; remove it from the package's output".into()
            }
            ImageError::Rootfs(R::MissingUnit { .. }) => {
                "install the unit file or remove it from the recipe's `units`".into()
            }
            ImageError::Rootfs(R::StatePath { .. }) => {
                "state paths are absolute paths like /var/lib/chrony".into()
            }
            _ => return None,
        })
    }
}
