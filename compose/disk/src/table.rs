//! Writing a layout's partition table.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::error::DiskError;
use crate::ids::DiskIds;
use crate::layout::{Layout, TableKind};
use crate::{gpt, mbr};

/// Writes `layout`'s partition table (MBR with its EBRs, or protective MBR
/// plus primary and backup GPT) into `out`, which must already be
/// exactly [`Layout::disk_bytes`] long (GPT puts its backup at the end). Only table sectors are written; partition
/// contents are left alone.
pub fn write_partition_table<W: Read + Write + Seek>(
    layout: &Layout,
    ids: &DiskIds,
    out: &mut W,
) -> Result<(), DiskError> {
    layout.validate()?;
    let len_bytes = out.seek(SeekFrom::End(0)).map_err(DiskError::Table)?;
    if len_bytes != layout.disk_bytes() {
        return Err(DiskError::OutputSize {
            len_bytes,
            disk_bytes: layout.disk_bytes(),
        });
    }
    match layout.table {
        TableKind::Mbr => mbr::write(layout, ids, out),
        TableKind::Gpt => gpt::write(layout, ids, out),
    }
}
