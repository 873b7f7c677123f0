//! The MBR and the EBR chain of logical partitions, with `mbrman`.
//!
//! mbrman 0.6 does support logical partitions (`MBR::logical_partitions`,
//! `MBR::push`, and `MBR::write_into` writes the EBR chain), but
//! `MBR::write_into` seeks to each EBR at `u64::from(absolute_ebr_lba *
//! sector_size)`, a product of two `u32`s: for an EBR at or beyond 4 GiB it
//! overflows, which panics in debug builds and writes the EBR to the wrong
//! offset in release builds. Any image whose extended partition starts past
//! 4 GiB (2 GiB root partitions are enough) hits it. So this module builds
//! each EBR as an `mbrman::MBRHeader` (an EBR has exactly an MBR's 512-byte
//! layout: boot code, four entries, 0x55AA) and lets mbrman serialize it
//! through a writer that shifts offsets by the EBR's position in 64-bit
//! arithmetic. The primary table is mbrman's `MBRHeader::write_into` as is.
//!
//! CHS fields are left zero, as mbrman writes them without a geometry:
//! everything that boots these images (Linux, U-Boot, GRUB, the Raspberry
//! Pi firmware) uses the LBA fields.

use std::io::{self, Seek, SeekFrom, Write};

use mbrman::{MBRHeader, MBRPartitionEntry, BOOT_ACTIVE, BOOT_INACTIVE, CHS};

use crate::error::{DiskError, LayoutError};
use crate::ids::DiskIds;
use crate::layout::{Layout, PartitionType, MBR_EXTENDED_LBA, SECTOR};

pub(crate) fn write<W: Write + Seek>(
    layout: &Layout,
    ids: &DiskIds,
    out: &mut W,
) -> Result<(), DiskError> {
    let mut header = MBRHeader::new(ids.mbr_signature.to_le_bytes());
    for p in layout.partitions.iter().filter(|p| p.number <= 4) {
        let e = entry(mbr_type(&p.ptype), p.start, p.sectors, p.bootable)?;
        match p.number {
            1 => header.partition_1 = e,
            2 => header.partition_2 = e,
            3 => header.partition_3 = e,
            _ => header.partition_4 = e,
        }
    }
    let Some(ext) = &layout.extended else {
        header.write_into(out)?;
        return Ok(());
    };
    header.partition_4 = entry(MBR_EXTENDED_LBA, ext.start, ext.sectors, false)?;
    header.write_into(out)?;

    let logical: Vec<_> = layout.partitions.iter().filter(|p| p.number >= 5).collect();
    for (i, p) in logical.iter().enumerate() {
        // Layout::validate guarantees every logical partition has its EBR
        // inside the extended partition, before the partition.
        let ebr_lba = p.ebr.unwrap_or(p.start.saturating_sub(1));
        let mut ebr = MBRHeader::new([0; 4]);
        // The partition, relative to its own EBR.
        ebr.partition_1 = entry(mbr_type(&p.ptype), p.start - ebr_lba, p.sectors, p.bootable)?;
        // The link to the next EBR, relative to the extended partition,
        // covering the next EBR through the end of its partition.
        if let Some(next) = logical.get(i + 1) {
            let next_ebr = next.ebr.unwrap_or(next.start.saturating_sub(1));
            ebr.partition_2 = entry(
                MBR_EXTENDED_LBA,
                next_ebr - ext.start,
                next.end() - next_ebr,
                false,
            )?;
        }
        ebr.write_into(&mut Shifted {
            inner: &mut *out,
            base: ebr_lba * SECTOR,
        })?;
    }
    Ok(())
}

fn mbr_type(t: &PartitionType) -> u8 {
    match t {
        PartitionType::Mbr(t) => *t,
        // Refused by Layout::validate.
        PartitionType::Gpt(_) => 0,
    }
}

fn entry(
    sys: u8,
    start: u64,
    sectors: u64,
    bootable: bool,
) -> Result<MBRPartitionEntry, DiskError> {
    // Layout::validate already refuses these; this keeps a bug from
    // truncating a number silently.
    let too_big = || {
        DiskError::Layout(LayoutError::MbrLimit {
            label: format!("an entry of type {sys:#04x}"),
            start,
            end: start.saturating_add(sectors),
            max: u64::from(u32::MAX),
        })
    };
    Ok(MBRPartitionEntry {
        boot: if bootable { BOOT_ACTIVE } else { BOOT_INACTIVE },
        first_chs: CHS::empty(),
        sys,
        last_chs: CHS::empty(),
        starting_lba: u32::try_from(start).map_err(|_| too_big())?,
        sectors: u32::try_from(sectors).map_err(|_| too_big())?,
    })
}

/// A writer whose offset 0 is `base` in `inner`, so mbrman's "seek to 0,
/// write 512 bytes" lands on an EBR.
struct Shifted<'a, W> {
    inner: &'a mut W,
    base: u64,
}

impl<W: Write> Write for Shifted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for Shifted<'_, W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let abs = match pos {
            SeekFrom::Start(n) => self.inner.seek(SeekFrom::Start(
                self.base
                    .checked_add(n)
                    .ok_or_else(|| io::Error::other("EBR offset overflows"))?,
            ))?,
            SeekFrom::Current(d) => self.inner.seek(SeekFrom::Current(d))?,
            SeekFrom::End(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "an EBR writer has no end",
                ))
            }
        };
        abs.checked_sub(self.base)
            .ok_or_else(|| io::Error::other("seek before the EBR"))
    }
}
