//! Where the fixed metadata goes: superblock and descriptor-table copies,
//! and (flex_bg) each flex group's bitmaps and inode tables packed at its
//! start, as mke2fs does. Without resize_inode no descriptor blocks are
//! reserved for growth; resize2fs and online resize still work by moving
//! blocks or switching to meta_bg.

use crate::alloc::Blocks;
use crate::error::Ext4Error;
use crate::geometry::{has_super, Geometry, LOG_GROUPS_PER_FLEX};

#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupMeta {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
}

pub(crate) fn place(
    geo: &Geometry,
    size_bytes: u64,
    blocks: &mut Blocks,
) -> Result<Vec<GroupMeta>, Ext4Error> {
    let backups: u64 = (0..geo.groups).filter(|&g| has_super(g)).count() as u64;
    let needed = backups * (1 + geo.gdt_blocks) + u64::from(geo.groups) * (2 + geo.itable_blocks);
    let too_small = || Ext4Error::TooSmall {
        size_bytes,
        needed_blocks: needed,
        available_blocks: geo.blocks,
    };
    if needed > geo.blocks {
        return Err(too_small());
    }
    for g in 0..geo.groups {
        if has_super(g) {
            blocks.mark(geo.group_start(g), 1 + geo.gdt_blocks);
        }
    }
    let per_flex = 1u32 << LOG_GROUPS_PER_FLEX;
    let mut metas = Vec::with_capacity(geo.groups as usize);
    let mut first = 0;
    while first < geo.groups {
        let members = first..(first + per_flex).min(geo.groups);
        let goal = geo.group_start(first);
        let mut one = |n: u64| -> Result<u64, Ext4Error> {
            let at = if n == 1 {
                blocks.next_free(goal)
            } else {
                blocks.next_free_run(goal, n)
            }
            .ok_or_else(too_small)?;
            blocks.mark(at, n);
            Ok(at)
        };
        let bb: Vec<u64> = members.clone().map(|_| one(1)).collect::<Result<_, _>>()?;
        let ib: Vec<u64> = members.clone().map(|_| one(1)).collect::<Result<_, _>>()?;
        let it: Vec<u64> = members
            .clone()
            .map(|_| one(geo.itable_blocks))
            .collect::<Result<_, _>>()?;
        for i in 0..members.len() {
            metas.push(GroupMeta {
                block_bitmap: bb[i],
                inode_bitmap: ib[i],
                inode_table: it[i],
            });
        }
        first = members.end;
    }
    Ok(metas)
}
