//! The GPT (primary and backup) and its protective MBR, with `gptman`.
//!
//! 128 entries of 128 bytes, as every partitioning tool writes, so the
//! first usable sector is 34 and the backup table takes the disk's last 33
//! sectors (the layout keeps partitions clear of both).

use std::io::{Read, Seek, SeekFrom, Write};

use gptman::{GPTPartitionEntry, GPT};

use crate::error::DiskError;
use crate::ids::DiskIds;
use crate::layout::{Layout, PartitionType, SECTOR};

/// GPT attribute bit 2, "legacy BIOS bootable": what U-Boot's distro boot
/// (`part list -bootable`) and syslinux's gptmbr look for.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

pub(crate) fn write<W: Read + Write + Seek>(
    layout: &Layout,
    ids: &DiskIds,
    out: &mut W,
) -> Result<(), DiskError> {
    // gptman writes the protective MBR from byte 446 on; clear the boot
    // code and disk signature before it, so nothing stale survives.
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.write_all(&[0u8; 446]))
        .map_err(gptman::Error::Io)?;
    GPT::write_protective_mbr_into(out, SECTOR)?;

    let mut gpt = GPT::new_from(out, SECTOR, ids.disk_guid.to_gpt_bytes())?;
    gpt.align = layout.alignment;
    for p in &layout.partitions {
        let PartitionType::Gpt(ptype) = p.ptype else {
            // Refused by Layout::validate.
            continue;
        };
        let entry = GPTPartitionEntry {
            partition_type_guid: ptype.to_gpt_bytes(),
            unique_partition_guid: ids.partition_guid(p.number).to_gpt_bytes(),
            starting_lba: p.start,
            ending_lba: p.end() - 1,
            attribute_bits: if p.bootable { LEGACY_BIOS_BOOTABLE } else { 0 },
            partition_name: p.label().into(),
        };
        // Layout::validate keeps numbers in 1..=128, which `iter_mut`
        // yields; no panicking `IndexMut`.
        if let Some((_, slot)) = gpt.iter_mut().find(|(n, _)| *n == p.number) {
            *slot = entry;
        }
    }
    gpt.write_into(out)?;
    Ok(())
}
