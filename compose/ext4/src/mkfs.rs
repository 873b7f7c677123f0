//! The three phases of writing an image.
//!
//! 1. Plan (no writes): geometry, inode numbers, fixed metadata and journal
//!    placement, and the capacity check with needed-vs-available numbers.
//! 2. Data: file contents are streamed into blocks allocated in inode order,
//!    while a BLAKE3 hash runs over the whole tree (metadata and content).
//! 3. Metadata: the hash gives the UUID (unless fixed) and the htree hash
//!    seed; the UUID seeds every metadata checksum, so directories, extent
//!    trees, xattr blocks, inodes, bitmaps, descriptors and superblocks are
//!    encoded and written only now.

use std::io::{Seek, Write};

use kiln_fstree::Tree;

use crate::alloc::{Blocks, Run};
use crate::data;
use crate::dir;
use crate::error::Ext4Error;
use crate::extent::{self, Extent, MAX_LEN};
use crate::geometry::{has_super, Geometry, BLOCK_SIZE, FIRST_INO, INODES_PER_BLOCK, INODE_SIZE};
use crate::inode::{self, Inode, EXTENTS_FL, S_IFREG};
use crate::journal;
use crate::layout;
use crate::options::Options;
use crate::plan::{self, index_of, Body, Plan, Planned, ROOT_INO};
use crate::sink::Sink;
use crate::superblock::{self, Desc, Super, BG_INODE_UNINIT, JOURNAL_INO};
use crate::xattr;
use crate::Summary;

const BS: usize = BLOCK_SIZE as usize;
/// Bumped whenever the same inputs would produce different bytes, so that
/// derived UUIDs never collide across writer versions.
const IDENTITY_CONTEXT: &str = "kiln-ext4 2025-01 filesystem identity v1";

/// Where an inode's blocks ended up.
#[derive(Default)]
struct Stored {
    extents: Vec<Extent>,
    tree: Vec<u64>,
    xattr_block: Option<u64>,
}

impl Stored {
    fn data_blocks(&self) -> u64 {
        self.extents.iter().map(|e| u64::from(e.len)).sum()
    }
}

/// Numbers for a [`Ext4Error::NoSpace`].
struct Capacity {
    size_bytes: u64,
    overhead: u64,
    available: u64,
}

impl Capacity {
    fn error(&self, needed: u64) -> Ext4Error {
        let mib = |b: u64| (b * BLOCK_SIZE).div_ceil(1 << 20);
        Ext4Error::NoSpace {
            size_bytes: self.size_bytes,
            needed_blocks: needed,
            needed_mib: mib(needed),
            available_blocks: self.available,
            available_mib: mib(self.available),
            overhead_blocks: self.overhead,
        }
    }
}

fn extents_of(runs: &[Run], first_logical: u32, out: &mut Vec<Extent>) {
    let mut logical = first_logical;
    for r in runs {
        extent::push(out, logical, r.start, r.len as u32);
        logical += r.len as u32;
    }
}

fn flatten(runs: &[Run]) -> Vec<u64> {
    runs.iter().flat_map(|r| r.start..r.start + r.len).collect()
}

/// An upper bound on the blocks the tree needs beyond fixed metadata:
/// data assuming no holes, and extent tree blocks assuming each file may be
/// split at every piece of fixed metadata (`free_runs`).
fn blocks_bound(plan: &Plan, free_runs: u64) -> u64 {
    let with_tree = |n: u64| {
        let extents = n.min(n.div_ceil(u64::from(MAX_LEN)) + free_runs);
        n + extent::tree_blocks(extents)
    };
    let per_inode: u64 = plan
        .inodes
        .iter()
        .map(|p| match &p.body {
            Body::Dir { blocks, .. } => with_tree(*blocks),
            Body::File { size, .. } => with_tree(size.div_ceil(BLOCK_SIZE)),
            Body::SlowSymlink(_) => 1,
            _ => 0,
        })
        .sum();
    per_inode + plan.xattr_blocks.len() as u64
}

fn hash_inode(h: &mut blake3::Hasher, p: &Planned) {
    let bytes = |h: &mut blake3::Hasher, b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    h.update(&p.ino.to_le_bytes());
    bytes(h, p.path.as_bytes());
    h.update(&p.mode.to_le_bytes());
    h.update(&p.uid.to_le_bytes());
    h.update(&p.gid.to_le_bytes());
    h.update(&p.links.to_le_bytes());
    match &p.body {
        Body::Dir { entries, blocks } => {
            h.update(&blocks.to_le_bytes());
            for e in entries {
                bytes(h, &e.name);
                h.update(&e.ino.to_le_bytes());
            }
        }
        // The content follows, from the data pass.
        Body::File { size, .. } => {
            h.update(&size.to_le_bytes());
        }
        Body::FastSymlink(t) | Body::SlowSymlink(t) => bytes(h, t.as_bytes()),
        Body::Device { major, minor, .. } => {
            h.update(&major.to_le_bytes());
            h.update(&minor.to_le_bytes());
        }
        Body::Special => {}
    }
    for a in &p.xattrs {
        h.update(&[a.index]);
        bytes(h, &a.name);
        bytes(h, &a.value);
    }
}

/// Phase 2 state: the allocator, the output and the identity hash.
struct DataPass<'s, 'w, W: Write + Seek> {
    blocks: &'s mut Blocks,
    sink: &'s mut Sink<'w, W>,
    hasher: &'s mut blake3::Hasher,
    cap: &'s Capacity,
}

impl<W: Write + Seek> DataPass<'_, '_, W> {
    fn take(&mut self, n: u64) -> Result<Vec<Run>, Ext4Error> {
        self.blocks.take(n).map_err(|full| {
            let needed = self.blocks.used() - self.cap.overhead + (n - full.got);
            self.cap.error(needed.max(self.cap.available + 1))
        })
    }

    /// Writes `bytes` (padded to whole blocks) at `runs`.
    fn write_runs(&mut self, runs: &[Run], bytes: &[u8]) -> Result<(), Ext4Error> {
        let mut at = 0;
        for r in runs {
            let len = (r.len as usize) * BS;
            let end = (at + len).min(bytes.len());
            let offset = r.start * BLOCK_SIZE;
            self.sink.write_at(offset, &bytes[at.min(end)..end])?;
            let pad = len - (end - at.min(end));
            if pad > 0 {
                self.sink
                    .write_at(offset + (end - at.min(end)) as u64, &vec![0u8; pad])?;
            }
            at += len;
        }
        Ok(())
    }

    fn file(
        &mut self,
        p: &Planned,
        data: &kiln_fstree::Data,
        size: u64,
        out: &mut Vec<Extent>,
    ) -> Result<(), Ext4Error> {
        data::for_each_chunk(p.path, data, size, |first, chunk| {
            self.hasher.update(chunk);
            for (start, n) in data::data_runs(chunk) {
                let runs = self.take(n as u64)?;
                let from = start * BS;
                let to = ((start + n) * BS).min(chunk.len());
                self.write_runs(&runs, &chunk[from..to])?;
                extents_of(&runs, (first + start as u64) as u32, out);
            }
            Ok(())
        })
    }

    fn inode(&mut self, p: &Planned, xattr_at: &mut [Option<u64>]) -> Result<Stored, Ext4Error> {
        hash_inode(self.hasher, p);
        let mut s = Stored::default();
        match &p.body {
            Body::Dir { blocks, .. } => {
                let runs = self.take(*blocks)?;
                extents_of(&runs, 0, &mut s.extents);
            }
            Body::File { data, size } => self.file(p, data, *size, &mut s.extents)?,
            Body::SlowSymlink(target) => {
                let runs = self.take(1)?;
                self.write_runs(&runs, target.as_bytes())?;
                extents_of(&runs, 0, &mut s.extents);
            }
            Body::FastSymlink(_) | Body::Device { .. } | Body::Special => {}
        }
        let tree = extent::tree_blocks(s.extents.len() as u64);
        if tree > 0 {
            s.tree = flatten(&self.take(tree)?);
        }
        if let Some(idx) = p.xattr_block {
            let at = match xattr_at[idx] {
                Some(at) => at,
                None => {
                    let at = self.take(1)?[0].start;
                    xattr_at[idx] = Some(at);
                    at
                }
            };
            s.xattr_block = Some(at);
        }
        Ok(s)
    }
}

struct JournalPlan {
    extents: Vec<Extent>,
    tree: Vec<u64>,
}

pub(crate) fn write<W: Write + Seek>(
    tree: &Tree,
    opts: &Options,
    out: &mut W,
) -> Result<Summary, Ext4Error> {
    if opts.uuid == Some([0; 16]) {
        return Err(Ext4Error::InvalidOption {
            option: "uuid",
            reason: "the nil UUID makes e2fsck generate a random one".into(),
        });
    }
    let geo = Geometry::new(opts)?;
    let plan = plan::plan(tree)?;

    // Phase 1: capacity.
    let needed_inodes = FIRST_INO as u64 + plan.inodes.len() as u64 - 2;
    if needed_inodes > geo.inodes() {
        return Err(Ext4Error::NoInodes {
            needed: needed_inodes,
            available: geo.inodes(),
            inode_ratio: opts.inode_ratio,
        });
    }
    let mut blocks = Blocks::new(geo.blocks);
    let groups = layout::place(&geo, opts.size_bytes, &mut blocks)?;
    let journal = if geo.journal_blocks > 0 {
        let n = u64::from(geo.journal_blocks);
        let metadata = blocks.used();
        let too_small = |extra: u64| Ext4Error::TooSmall {
            size_bytes: opts.size_bytes,
            needed_blocks: metadata + n + extra,
            available_blocks: geo.blocks,
        };
        let runs = blocks.take(n).map_err(|_| too_small(0))?;
        let mut extents = Vec::new();
        extents_of(&runs, 0, &mut extents);
        let tree_n = extent::tree_blocks(extents.len() as u64);
        let tree = if tree_n > 0 {
            flatten(&blocks.take(tree_n).map_err(|_| too_small(tree_n))?)
        } else {
            Vec::new()
        };
        Some(JournalPlan { extents, tree })
    } else {
        None
    };
    let cap = Capacity {
        size_bytes: opts.size_bytes,
        overhead: blocks.used(),
        available: blocks.free(),
    };
    let needed = blocks_bound(&plan, blocks.free_runs());
    if needed > cap.available {
        return Err(cap.error(needed));
    }

    // Phase 2: data.
    let mut hasher = blake3::Hasher::new_derive_key(IDENTITY_CONTEXT);
    hasher.update(&opts.size_bytes.to_le_bytes());
    hasher.update(&(opts.label.len() as u64).to_le_bytes());
    hasher.update(opts.label.as_bytes());
    hasher.update(&opts.uuid.unwrap_or_default());
    hasher.update(&opts.epoch.to_le_bytes());
    hasher.update(&geo.journal_blocks.to_le_bytes());
    hasher.update(&opts.inode_ratio.to_le_bytes());
    hasher.update(&[opts.reserved_percent]);
    let mut sink = Sink::new(out);
    let mut xattr_at = vec![None; plan.xattr_blocks.len()];
    let mut stored = Vec::with_capacity(plan.inodes.len());
    {
        let mut pass = DataPass {
            blocks: &mut blocks,
            sink: &mut sink,
            hasher: &mut hasher,
            cap: &cap,
        };
        for p in &plan.inodes {
            stored.push(pass.inode(p, &mut xattr_at)?);
        }
    }

    // Phase 3: metadata.
    let mut digest = [0u8; 32];
    hasher.finalize_xof().fill(&mut digest);
    let uuid = opts.uuid.unwrap_or_else(|| {
        let mut u = [0u8; 16];
        u.copy_from_slice(&digest[..16]);
        u[6] = (u[6] & 0x0f) | 0x40; // version 4 layout, as mke2fs's
        u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
        u
    });
    let mut hash_seed = [0u8; 16];
    hash_seed.copy_from_slice(&digest[16..]);
    let fs_seed = crate::crc32c::update(!0, &uuid);

    let mut meta: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut i_blocks: Vec<[u8; 60]> = Vec::with_capacity(plan.inodes.len());
    for (p, s) in plan.inodes.iter().zip(&stored) {
        let seed = inode::seed(fs_seed, p.ino);
        let i_block = match &p.body {
            Body::Dir { .. } | Body::File { .. } | Body::SlowSymlink(_) => {
                let enc = extent::encode(&s.extents, &s.tree, seed);
                meta.extend(enc.blocks);
                enc.i_block
            }
            Body::FastSymlink(t) => {
                let mut b = [0u8; 60];
                b[..t.len()].copy_from_slice(t.as_bytes());
                b
            }
            Body::Device { i_block, .. } => *i_block,
            Body::Special => [0u8; 60],
        };
        if let Body::Dir { entries, blocks: n } = &p.body {
            let bytes = dir::encode(entries, *n, seed);
            for e in &s.extents {
                let from = e.logical as usize * BS;
                meta.push((e.physical, bytes[from..from + e.len as usize * BS].to_vec()));
            }
        }
        i_blocks.push(i_block);
    }
    for (shared, at) in plan.xattr_blocks.iter().zip(&xattr_at) {
        if let Some(at) = at {
            meta.push((
                *at,
                xattr::finish_block(&shared.body, shared.refcount, *at, fs_seed),
            ));
        }
    }
    let journal_inode = journal.as_ref().map(|j| {
        let enc = extent::encode(&j.extents, &j.tree, inode::seed(fs_seed, JOURNAL_INO));
        meta.extend(enc.blocks);
        if let Some(first) = j.extents.first() {
            meta.push((
                first.physical,
                journal::superblock(geo.journal_blocks, &uuid),
            ));
        }
        Inode {
            mode: S_IFREG | 0o600,
            size: u64::from(geo.journal_blocks) * BLOCK_SIZE,
            links: 1,
            blocks: u64::from(geo.journal_blocks) + j.tree.len() as u64,
            flags: EXTENTS_FL,
            i_block: enc.i_block,
            ..Default::default()
        }
    });

    // Inode tables, group by group: only blocks up to the last used inode
    // are written; the rest stay holes behind `bg_itable_unused`.
    let max_ino = plan.max_ino();
    let ipg = geo.inodes_per_group;
    let mut dirs_in_group = vec![0u32; geo.groups as usize];
    for p in &plan.inodes {
        if matches!(p.body, Body::Dir { .. }) {
            dirs_in_group[((p.ino - 1) / ipg) as usize] += 1;
        }
    }
    let inode_bytes = |ino: u32| -> Vec<u8> {
        match (ino, index_of(ino)) {
            (JOURNAL_INO, _) => match &journal_inode {
                Some(j) => inode::encode(ino, j, opts.epoch, fs_seed),
                None => inode::encode_reserved(ino, fs_seed),
            },
            (_, Some(i)) if ino == ROOT_INO || ino >= FIRST_INO => {
                let (p, s) = (&plan.inodes[i], &stored[i]);
                inode::encode(ino, &planned_inode(p, s, i_blocks[i]), opts.epoch, fs_seed)
            }
            _ => inode::encode_reserved(ino, fs_seed),
        }
    };
    meta.sort_by_key(|m| m.0);
    for (at, bytes) in &meta {
        sink.write_at(at * BLOCK_SIZE, bytes)?;
    }
    let mut used_in_group = Vec::with_capacity(geo.groups as usize);
    for (g, gm) in groups.iter().enumerate() {
        let first = g as u32 * ipg + 1;
        let used = max_ino.saturating_sub(first - 1).min(ipg);
        used_in_group.push(used);
        if used == 0 {
            continue;
        }
        let slots = used.div_ceil(INODES_PER_BLOCK) * INODES_PER_BLOCK;
        let mut table = vec![0u8; slots as usize * INODE_SIZE as usize];
        for k in 0..used {
            let at = k as usize * INODE_SIZE as usize;
            table[at..at + INODE_SIZE as usize].copy_from_slice(&inode_bytes(first + k));
        }
        sink.write_at(gm.inode_table * BLOCK_SIZE, &table)?;
    }

    // Bitmaps and descriptors, from the final block bitmap.
    let mut descs = Vec::with_capacity(geo.groups as usize);
    let mut bitmaps: Vec<(u64, Vec<u8>)> = Vec::with_capacity(2 * geo.groups as usize);
    let mut free_blocks = 0;
    for (g, gm) in groups.iter().enumerate() {
        let g32 = g as u32;
        let (start, len) = (geo.group_start(g32), geo.group_len(g32));
        let bb = blocks.bitmap_block(start, len, BS);
        let mut ib = vec![0xffu8; BS];
        let used = used_in_group[g];
        for i in used..ipg {
            ib[(i / 8) as usize] &= !(1 << (i % 8));
        }
        let free = blocks.free_in(start, len);
        free_blocks += free;
        let desc = Desc {
            block_bitmap: gm.block_bitmap,
            inode_bitmap: gm.inode_bitmap,
            inode_table: gm.inode_table,
            free_blocks: free as u32,
            free_inodes: ipg - used,
            used_dirs: dirs_in_group[g],
            flags: if used == 0 { BG_INODE_UNINIT } else { 0 },
            itable_unused: ipg - used,
            block_bitmap_csum: crate::crc32c::update(fs_seed, &bb),
            inode_bitmap_csum: crate::crc32c::update(fs_seed, &ib[..(ipg / 8) as usize]),
        };
        descs.push(desc.encode(g32, fs_seed));
        bitmaps.push((gm.block_bitmap, bb));
        bitmaps.push((gm.inode_bitmap, ib));
    }
    let free_inodes = geo.inodes() - u64::from(max_ino);
    let sup = Super {
        geo: &geo,
        free_blocks,
        free_inodes,
        uuid,
        hash_seed,
        label: &opts.label,
        epoch: opts.epoch,
        journal: journal_inode.as_ref().map(|j| (j.i_block, j.size)),
    };
    let gdt = superblock::table(&descs, geo.gdt_blocks);
    for g in (0..geo.groups).filter(|&g| has_super(g)) {
        let mut head = vec![0u8; BS];
        let sb = sup.encode(g);
        // The primary sits at byte 1024 (after the boot sector area); a
        // backup at the start of its group's first block.
        let at = if g == 0 { 1024 } else { 0 };
        head[at..at + sb.len()].copy_from_slice(&sb);
        head.extend_from_slice(&gdt);
        bitmaps.push((geo.group_start(g), head));
    }
    bitmaps.sort_by_key(|m| m.0);
    for (at, bytes) in &bitmaps {
        sink.write_at(at * BLOCK_SIZE, bytes)?;
    }
    let bytes_written = sink.written();
    sink.finish(opts.size_bytes)?;
    Ok(Summary {
        uuid,
        blocks: geo.blocks,
        free_blocks,
        inodes: geo.inodes(),
        free_inodes,
        groups: geo.groups,
        journal_blocks: geo.journal_blocks,
        bytes_written,
    })
}

fn planned_inode(p: &Planned, s: &Stored, i_block: [u8; 60]) -> Inode {
    let (size, flags) = match &p.body {
        Body::Dir { blocks, .. } => (blocks * BLOCK_SIZE, EXTENTS_FL),
        Body::File { size, .. } => (*size, EXTENTS_FL),
        Body::SlowSymlink(t) => (t.len() as u64, EXTENTS_FL),
        Body::FastSymlink(t) => (t.len() as u64, 0),
        Body::Device { .. } | Body::Special => (0, 0),
    };
    Inode {
        mode: p.mode,
        uid: p.uid,
        gid: p.gid,
        size,
        links: p.links,
        blocks: s.data_blocks() + s.tree.len() as u64 + u64::from(s.xattr_block.is_some()),
        flags,
        i_block,
        xattr_block: s.xattr_block.unwrap_or(0),
        ibody: p.ibody.clone(),
    }
}
