//! balenaOS, as Kiln's images follow it: the choices that make a disk a
//! balenaOS disk, each written once, here. The writers below this crate
//! know formats, not policy; what they need of it is passed down from here
//! (sizes, the epoch, the boot files), except where a format and its
//! balenaOS name are one thing: the partition roles and their labels are
//! [`kiln_disk::Role`] (`resin-boot`, `resin-rootA`, ...), and the mount
//! points and state overlay of the root filesystem are `kiln_rootfs`'s.

use kiln_disk::{LayoutSpec, TableKind, MIB};
use kiln_model::PartitionLayout;
use serde::Serialize;

pub use kiln_disk::Role;
pub use kiln_rootfs::OVERLAY;

/// The partition table a board gets unless it says otherwise.
pub const DEFAULT_TABLE: &str = "mbr";

/// balenaOS's default layout in MiB: a 4 MiB gap and alignment, boot 40,
/// each root 320, state 20, data 192, and a disk as small as that allows.
pub const DEFAULT_SIZES: Sizes = Sizes {
    gap_mib: 4,
    align_mib: 4,
    boot_mib: 40,
    root_mib: 320,
    state_mib: 20,
    data_mib: 192,
    disk_mib: 0,
};

/// Partition sizes in MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sizes {
    pub gap_mib: u64,
    pub align_mib: u64,
    pub boot_mib: u64,
    /// Root A; root B is the same size, so an update always fits.
    pub root_mib: u64,
    pub state_mib: u64,
    pub data_mib: u64,
    /// 0: as small as the partitions allow.
    pub disk_mib: u64,
}

/// A board's partitions with the defaults filled in, as the disk crate's
/// layout spec. This is what the image key covers, so a board that spells
/// out a default gets the same key as one that leaves it out.
pub fn layout(p: &PartitionLayout) -> LayoutSpec {
    let d = DEFAULT_SIZES;
    let mib = |v: Option<u64>, default: u64| v.unwrap_or(default).saturating_mul(MIB);
    let table = p.table.as_deref().unwrap_or(DEFAULT_TABLE);
    let disk_mib = p.disk_mib.unwrap_or(d.disk_mib);
    LayoutSpec {
        table: if table == "gpt" {
            TableKind::Gpt
        } else {
            TableKind::Mbr
        },
        gap_bytes: mib(p.gap_mib, d.gap_mib),
        alignment_bytes: mib(p.align_mib, d.align_mib),
        boot_bytes: mib(p.boot_mib, d.boot_mib),
        root_bytes: mib(p.root_mib, d.root_mib),
        state_bytes: mib(p.state_mib, d.state_mib),
        data_bytes: mib(p.data_mib, d.data_mib),
        disk_bytes: (disk_mib > 0).then(|| disk_mib.saturating_mul(MIB)),
        boot_fat: None,
    }
}

/// The A/B boot environment on the boot partition, read and written by
/// the bootloader (`env import -t` format). A fresh image boots root A
/// with no update pending.
pub const BOOT_ENV_FILE: &str = "resinOS_uEnv.txt";
pub const BOOT_ENV: &str = "resin_root_part=A\nupgrade_available=0\nbootcount=0\n";

/// The factory-reset marker: if it is missing from a partition at boot,
/// that partition's contents are wiped and re-seeded.
pub const RESET_MARKER: &str = "/remove_me_to_reset";

/// [`OVERLAY`] as seen from the state partition's root.
pub const STATE_OVERLAY: &str = "/root-overlay";

/// The boot partition's directory of NetworkManager connection files.
pub const SYSTEM_CONNECTIONS: &str = "/system-connections";

/// What a board's bootloader recipe must `provide`: the balenaOS A/B root
/// selection with boot counting, and reading the board's partition table
/// (`table:mbr`, `table:gpt`). Each with what it means, for the message.
pub fn bootloader_needs(layout: &LayoutSpec) -> Vec<(String, String)> {
    let table = layout.table.name();
    vec![
        (
            "ab-boot".into(),
            "the balenaOS A/B root selection with boot counting".into(),
        ),
        (
            format!("table:{table}"),
            format!("a {table} partition table"),
        ),
    ]
}

/// config.json on a fresh image: Kiln's defaults, then the board's own.
pub fn config_json(
    device_type: &str,
    board: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut config = serde_json::Map::new();
    config.insert("deviceType".into(), device_type.into());
    config.insert("developmentMode".into(), false.into());
    config.insert("persistentLogging".into(), false.into());
    config.extend(board.clone());
    config
}

/// The root filesystem's compression: lz4hc at liblz4's default level,
/// what `mkfs.erofs -zlz4hc` uses.
pub const ROOT_COMPRESSION: kiln_erofs::Compression = kiln_erofs::Compression::Lz4hc { level: 9 };

/// How the root's compression is named in the image manifest.
pub const ROOT_COMPRESSION_NAME: &str = "lz4hc-9";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_that_spells_out_the_defaults_has_the_default_layout() {
        let spelled = PartitionLayout {
            table: Some("mbr".into()),
            gap_mib: Some(4),
            align_mib: Some(4),
            boot_mib: Some(40),
            root_mib: Some(320),
            state_mib: Some(20),
            data_mib: Some(192),
            disk_mib: Some(0),
        };
        let default = layout(&PartitionLayout::default());
        assert_eq!(layout(&spelled), default);
        assert_eq!(default.root_bytes, 320 * MIB);
        assert_eq!(default.table, TableKind::Mbr);
        assert_eq!(default.disk_bytes, None);
    }
}
