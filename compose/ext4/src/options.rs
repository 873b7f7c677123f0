//! What the caller chooses about the filesystem; everything else is fixed
//! (see the crate docs for the feature set) so that images depend only on
//! the tree and these options.

/// Filesystem parameters. Start from [`Options::new`] and override fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The partition size in bytes. The filesystem uses whole 4 KiB blocks
    /// of it; like mke2fs, a last block group too small to hold its own
    /// metadata plus 50 blocks is left out, so the filesystem can end a
    /// little before the partition (see [`crate::Summary::blocks`]). The
    /// output is always extended to exactly this size.
    pub size_bytes: u64,
    /// Volume label, at most 16 bytes (`/dev/disk/by-label/...`).
    pub label: String,
    /// The filesystem UUID. `None` derives it from a hash of the tree
    /// (content included) and these options, so the same inputs give the
    /// same UUID and different content a different one.
    pub uuid: Option<[u8; 16]>,
    /// Every timestamp in the image: inode times and the superblock's
    /// creation, write and last-check times (usually `SOURCE_DATE_EPOCH`).
    /// Values from 2038 on use ext4's extra epoch bits.
    pub epoch: u32,
    /// Journal size in 4 KiB blocks. `None` picks mke2fs's default for the
    /// filesystem size (4 MiB up to 128 MiB, 16 MiB up to 1 GiB, ... 1 GiB
    /// from 128 GiB; none below 8 MiB). `Some(0)` makes a filesystem without
    /// a journal (fine for a read-only root); otherwise 1024..=10_240_000.
    pub journal_blocks: Option<u32>,
    /// Bytes of filesystem per inode (mke2fs `-i`). The default 16384
    /// matches mke2fs; trees of many small files (a rootfs) may need 4096.
    /// At most 32768 inodes fit a block group, which caps the count for
    /// ratios below 4096.
    pub inode_ratio: u32,
    /// Percent of blocks only root may allocate at run time (mke2fs `-m`).
    /// Defaults to 0: Kiln's ext4 partitions hold state and data written by
    /// services that run as various users, where a root-only reserve just
    /// hides free space; set 5 for a general-purpose root filesystem. The
    /// writer itself may fill reserved blocks (it writes as root).
    pub reserved_percent: u8,
}

impl Options {
    /// Defaults for a partition of `size_bytes`: no label, content-derived
    /// UUID, epoch 0, default journal, 16 KiB per inode, no reserve.
    pub fn new(size_bytes: u64) -> Options {
        Options {
            size_bytes,
            label: String::new(),
            uuid: None,
            epoch: 0,
            journal_blocks: None,
            inode_ratio: 16384,
            reserved_percent: 0,
        }
    }
}
