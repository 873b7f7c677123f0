//! FAT type and cluster size for a volume size.
//!
//! FAT's type is not a flag: it follows from the number of data clusters
//! (FAT16 has 4085..=65524, FAT32 at least 65525), so whether a size can
//! be FAT32 depends on the cluster size and on how many sectors the FATs
//! take. The cluster count is computed here with fatfs's own formula
//! (`determine_sectors_per_fat` in fatfs 0.3: 8 reserved sectors for
//! FAT32, 1 plus a 512-entry root directory for FAT16, two FATs), so the
//! layout can pick the matching MBR type before anything is formatted;
//! [`super::write`] checks the formatted volume against it.

use crate::error::FatError;
use crate::layout::SECTOR;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

pub(crate) const FAT16_MIN_CLUSTERS: u64 = 4085;
pub(crate) const FAT32_MIN_CLUSTERS: u64 = 65525;
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;
/// fatfs's default (and the usual) root directory size on FAT12/16.
pub(crate) const FAT16_ROOT_ENTRIES: u64 = 512;
const FATS: u64 = 2;

/// The FAT variants Kiln writes. FAT12 is left out: no boot partition is
/// that small, and the reference layout only allows 0x0c and 0x0e.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum FatKind {
    Fat16,
    Fat32,
}

impl FatKind {
    pub fn name(self) -> &'static str {
        match self {
            FatKind::Fat16 => "FAT16",
            FatKind::Fat32 => "FAT32",
        }
    }

    /// The MBR partition type: the LBA variants, since boot partitions
    /// start beyond what CHS addressing reaches usefully.
    pub fn mbr_type(self) -> u8 {
        match self {
            FatKind::Fat16 => crate::layout::MBR_FAT16_LBA,
            FatKind::Fat32 => crate::layout::MBR_FAT32_LBA,
        }
    }

    /// FAT32 when the size allows it (about 33 MiB and up with 512-byte
    /// clusters), else FAT16.
    pub fn for_size(size_bytes: u64) -> Result<FatKind, FatError> {
        match Geometry::new(size_bytes, FatKind::Fat32) {
            Ok(_) => Ok(FatKind::Fat32),
            Err(_) => Geometry::new(size_bytes, FatKind::Fat16).map(|g| g.kind),
        }
    }

    pub(crate) fn fatfs(self) -> fatfs::FatType {
        match self {
            FatKind::Fat16 => fatfs::FatType::Fat16,
            FatKind::Fat32 => fatfs::FatType::Fat32,
        }
    }
}

/// A volume's shape, as fatfs will format it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub kind: FatKind,
    pub total_sectors: u32,
    pub cluster_bytes: u32,
    pub clusters: u64,
}

impl Geometry {
    pub fn new(size_bytes: u64, kind: FatKind) -> Result<Geometry, FatError> {
        let total = size_bytes / SECTOR;
        let bad = |clusters: u64, cluster_bytes: u32| {
            let (min, max) = match kind {
                FatKind::Fat16 => (FAT16_MIN_CLUSTERS, FAT32_MIN_CLUSTERS - 1),
                FatKind::Fat32 => (FAT32_MIN_CLUSTERS, FAT32_MAX_CLUSTERS),
            };
            FatError::BadSize {
                size_bytes,
                kind: kind.name(),
                clusters,
                cluster_bytes,
                min,
                max,
            }
        };
        let total_sectors = u32::try_from(total).map_err(|_| FatError::TooLarge {
            size_bytes,
            max_bytes: u64::from(u32::MAX) * SECTOR,
        })?;
        match kind {
            FatKind::Fat32 => {
                // Microsoft's FAT32 cluster-size table, which fatfs also
                // uses; 512-byte clusters up to 260 MiB are what make
                // 40 MiB boot partitions FAT32.
                let cluster_bytes: u32 = match size_bytes {
                    s if s <= 260 * MIB => 512,
                    s if s <= 8 * GIB => 4096,
                    s if s <= 16 * GIB => 8192,
                    s if s <= 32 * GIB => 16384,
                    _ => 32768,
                };
                let clusters = clusters(total, cluster_bytes, 8, 0, 32);
                if !(FAT32_MIN_CLUSTERS..=FAT32_MAX_CLUSTERS).contains(&clusters) {
                    return Err(bad(clusters, cluster_bytes));
                }
                Ok(Geometry {
                    kind,
                    total_sectors,
                    cluster_bytes,
                    clusters,
                })
            }
            FatKind::Fat16 => {
                // The smallest cluster that keeps the count in FAT16's
                // range: small clusters waste the least space.
                let root = FAT16_ROOT_ENTRIES * 32 / SECTOR;
                let mut cluster_bytes = 512u32;
                let mut n = clusters(total, cluster_bytes, 1, root, 16);
                while n >= FAT32_MIN_CLUSTERS && cluster_bytes < 32768 {
                    cluster_bytes *= 2;
                    n = clusters(total, cluster_bytes, 1, root, 16);
                }
                if !(FAT16_MIN_CLUSTERS..FAT32_MIN_CLUSTERS).contains(&n) {
                    return Err(bad(n, cluster_bytes));
                }
                Ok(Geometry {
                    kind,
                    total_sectors,
                    cluster_bytes,
                    clusters: n,
                })
            }
        }
    }
}

/// Data clusters of a volume of `total` sectors: fatfs's
/// `determine_sectors_per_fat`, then what is left after the reserved
/// sectors, root directory and both FATs. 0 when nothing is left.
fn clusters(total: u64, cluster_bytes: u32, reserved: u64, root: u64, bits: u64) -> u64 {
    let spc = u64::from(cluster_bytes) / SECTOR;
    // fatfs refuses volumes without room for 8 sectors of FAT and data.
    if total <= reserved + root + 8 {
        return 0;
    }
    let t0 = total - reserved - root;
    let t1 = t0 + 2 * spc;
    let t2 = spc * SECTOR * 8 / bits + FATS;
    let per_fat = t1.div_ceil(t2);
    t0.saturating_sub(FATS * per_fat) / spc
}

/// The FAT width (12, 16 or 32 bits) of the filesystem whose boot sector
/// is `sector`, from its cluster count as the FAT specification defines
/// it; `None` when the sector is not a FAT boot sector.
pub fn detect_fat_bits(sector: &[u8]) -> Option<u8> {
    if sector.len() < 512 || sector[510..512] != [0x55, 0xAA] {
        return None;
    }
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([sector[o], sector[o + 1]]));
    let u32_at = |o: usize| {
        u64::from(u32::from_le_bytes([
            sector[o],
            sector[o + 1],
            sector[o + 2],
            sector[o + 3],
        ]))
    };
    let bytes_per_sector = u16_at(11);
    let spc = u64::from(sector[13]);
    let reserved = u16_at(14);
    let fats = u64::from(sector[16]);
    let root_entries = u16_at(17);
    let total = match u16_at(19) {
        0 => u32_at(32),
        n => n,
    };
    let per_fat = match u16_at(22) {
        0 => u32_at(36),
        n => n,
    };
    if !bytes_per_sector.is_power_of_two()
        || !(512..=4096).contains(&bytes_per_sector)
        || !spc.is_power_of_two()
        || reserved == 0
        || fats == 0
    {
        return None;
    }
    let root = (root_entries * 32).div_ceil(bytes_per_sector);
    let data = total.checked_sub(reserved + fats * per_fat + root)?;
    Some(match data / spc {
        n if n < FAT16_MIN_CLUSTERS => 12,
        n if n < FAT32_MIN_CLUSTERS => 16,
        _ => 32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_follows_size() {
        assert_eq!(FatKind::for_size(40 * MIB).unwrap(), FatKind::Fat32);
        assert_eq!(FatKind::for_size(100 * MIB).unwrap(), FatKind::Fat32);
        assert_eq!(FatKind::for_size(32 * MIB).unwrap(), FatKind::Fat16);
        assert_eq!(FatKind::for_size(4 * MIB).unwrap(), FatKind::Fat16);
        assert!(matches!(
            FatKind::for_size(MIB),
            Err(FatError::BadSize { kind: "FAT16", .. })
        ));
        let e = Geometry::new(20 * MIB, FatKind::Fat32).unwrap_err();
        assert!(
            matches!(e, FatError::BadSize { clusters, cluster_bytes: 512, min: 65525, .. } if clusters < 65525 && clusters > 40000),
            "{e}"
        );
    }

    #[test]
    fn fat16_cluster_count_stays_in_range() {
        for mib in [4, 16, 32, 64, 256, 1024, 2047] {
            let g = Geometry::new(mib * MIB, FatKind::Fat16).unwrap();
            assert!(
                (FAT16_MIN_CLUSTERS..FAT32_MIN_CLUSTERS).contains(&g.clusters),
                "{mib}: {g:?}"
            );
        }
    }
}
