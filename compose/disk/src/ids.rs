//! Disk and partition identifiers, derived from content.
//!
//! Partitioning tools pick these at random, which makes every image differ.
//! They still have to differ between images with different content: the
//! kernel and bootloaders find partitions by `PARTUUID` (the MBR signature
//! plus the partition number, or the GPT partition GUID), and two disks
//! with the same ids in one machine confuse that lookup. So each id is a
//! keyed hash (BLAKE3 `derive_key`, one context string per id) of a content
//! hash the caller passes: the same content gives the same ids, other
//! content other ids.

use crate::guid::Guid;

const CTX_MBR: &str = "kiln-disk 2025-01 MBR disk signature";
const CTX_DISK_GUID: &str = "kiln-disk 2025-01 GPT disk GUID";
const CTX_PART_GUID: &str = "kiln-disk 2025-01 GPT partition GUID";

/// The identifiers written into the partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskIds {
    /// MBR disk signature (`label-id` in `sfdisk -d`); never 0, which some
    /// tools treat as "no signature" and replace.
    pub mbr_signature: u32,
    /// GPT disk GUID.
    pub disk_guid: Guid,
    content_hash: [u8; 32],
}

impl DiskIds {
    /// Ids for a disk whose content hashes to `content_hash` (for example a
    /// BLAKE3 over the partition images and the layout).
    pub fn derive(content_hash: &[u8; 32]) -> DiskIds {
        let sig = blake3::derive_key(CTX_MBR, content_hash);
        let mut mbr_signature = u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]);
        if mbr_signature == 0 {
            mbr_signature = 1;
        }
        DiskIds {
            mbr_signature,
            disk_guid: Guid::from_hash(first16(&blake3::derive_key(CTX_DISK_GUID, content_hash))),
            content_hash: *content_hash,
        }
    }

    /// The unique GUID of GPT partition `number` (1-based).
    pub fn partition_guid(&self, number: u32) -> Guid {
        let mut material = [0u8; 36];
        material[..32].copy_from_slice(&self.content_hash);
        material[32..].copy_from_slice(&number.to_le_bytes());
        Guid::from_hash(first16(&blake3::derive_key(CTX_PART_GUID, &material)))
    }
}

fn first16(h: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_same_ids_other_content_other_ids() {
        let a = DiskIds::derive(&[1; 32]);
        let b = DiskIds::derive(&[1; 32]);
        let c = DiskIds::derive(&[2; 32]);
        assert_eq!(a, b);
        assert_ne!(a.mbr_signature, c.mbr_signature);
        assert_ne!(a.disk_guid, c.disk_guid);
        assert_ne!(a.partition_guid(1), a.partition_guid(2));
        assert_ne!(a.partition_guid(1), c.partition_guid(1));
        assert_ne!(a.partition_guid(1), a.disk_guid);
    }
}
