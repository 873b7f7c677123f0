//! The three phases of writing an image.
//!
//! 1. Plan (no writes): geometry, inode numbers, a BLAKE3 hash of the
//!    options and all metadata (which gives the htree hash seed, so
//!    directory indexes and sizes are known), fixed metadata and journal
//!    placement, and the capacity check with needed-vs-available numbers.
//! 2. Data: file contents are streamed into blocks allocated in inode order,
//!    and fed to the same hash.
//! 3. Metadata: the final hash gives the UUID (unless fixed); the UUID seeds
//!    every metadata checksum, so directories, extent trees, xattr blocks,
//!    inodes, bitmaps, descriptors and superblocks are encoded and written
//!    only now.

use std::io::{Seek, Write};

use kiln_fstree::Tree;

use crate::alloc::{Blocks, Run};
use crate::data;
use crate::dir;
use crate::error::Ext4Error;
use crate::extent::{self, Extent, MAX_LEN};
use crate::geometry::{
    has_super, Geometry, BLOCK_SIZE, DESC_SIZE, FIRST_INO, INODES_PER_BLOCK, INODE_SIZE,
    LOG_GROUPS_PER_FLEX,
};
use crate::htree::INDEX_FL;
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
        Body::Dir { entries, .. } => {
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

/// The identity hash over the options and every inode's metadata. Its
/// value here seeds the htree hash; content is added by the data pass and
/// the final value gives the UUID.
fn identity(opts: &Options, geo: &Geometry, plan: &Plan) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_derive_key(IDENTITY_CONTEXT);
    h.update(&opts.size_bytes.to_le_bytes());
    h.update(&(opts.label.len() as u64).to_le_bytes());
    h.update(opts.label.as_bytes());
    h.update(&opts.uuid.unwrap_or_default());
    h.update(&opts.epoch.to_le_bytes());
    h.update(&geo.journal_blocks.to_le_bytes());
    h.update(&opts.inode_ratio.to_le_bytes());
    h.update(&[opts.reserved_percent]);
    for p in &plan.inodes {
        hash_inode(&mut h, p);
    }
    h
}

/// Allocates the journal right after the first flex group's metadata.
fn place_journal(
    geo: &Geometry,
    size_bytes: u64,
    blocks: &mut Blocks,
) -> Result<Option<JournalPlan>, Ext4Error> {
    if geo.journal_blocks == 0 {
        return Ok(None);
    }
    let n = u64::from(geo.journal_blocks);
    let metadata = blocks.used();
    let too_small = |extra: u64| Ext4Error::TooSmall {
        size_bytes,
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
    Ok(Some(JournalPlan { extents, tree }))
}

pub(crate) fn write<W: Write + Seek>(
    tree: &Tree,
    opts: &Options,
    out: &mut W,
) -> Result<Summary, Ext4Error> {
    // Phase 1: plan and check capacity.
    if opts.uuid == Some([0; 16]) {
        return Err(Ext4Error::InvalidOption {
            option: "uuid",
            reason: "the nil UUID makes e2fsck generate a random one".into(),
        });
    }
    let geo = Geometry::new(opts)?;
    let mut plan = plan::plan(tree)?;
    let needed_inodes = u64::from(FIRST_INO) + plan.inodes.len() as u64 - 2;
    if needed_inodes > geo.inodes() {
        return Err(Ext4Error::NoInodes {
            needed: needed_inodes,
            available: geo.inodes(),
            inode_ratio: opts.inode_ratio,
        });
    }
    let mut hasher = identity(opts, &geo, &plan);
    let mut hash_seed = [0u8; 16];
    hash_seed.copy_from_slice(&hasher.clone().finalize().as_bytes()[..16]);
    plan.index_dirs(&std::array::from_fn(|i| {
        u32::from_le_bytes([
            hash_seed[4 * i],
            hash_seed[4 * i + 1],
            hash_seed[4 * i + 2],
            hash_seed[4 * i + 3],
        ])
    }))?;
    let mut blocks = Blocks::new(geo.blocks);
    let groups = layout::place(&geo, opts.size_bytes, &mut blocks)?;
    let journal = place_journal(&geo, opts.size_bytes, &mut blocks)?;
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
    let mut sink = Sink::new(out);
    let mut xattr_at = vec![None; plan.xattr_blocks.len()];
    let mut stored = Vec::with_capacity(plan.inodes.len());
    let mut pass = DataPass {
        blocks: &mut blocks,
        sink: &mut sink,
        hasher: &mut hasher,
        cap: &cap,
    };
    for p in &plan.inodes {
        stored.push(pass.inode(p, &mut xattr_at)?);
    }

    // Phase 3: metadata, now that the UUID (checksum seed) is known.
    let uuid = opts.uuid.unwrap_or_else(|| {
        let mut u = [0u8; 16];
        u.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        u[6] = (u[6] & 0x0f) | 0x40; // version 4 layout, as mke2fs's
        u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
        u
    });
    let fs_seed = crate::crc32c::update(!0, &uuid);
    let mut meta = Vec::new();
    let i_blocks = encode_blocks(&plan, &stored, &xattr_at, fs_seed, &mut meta);
    let journal_inode = journal.map(|j| {
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
    meta.sort_by_key(|m| m.0);
    for (at, bytes) in &meta {
        sink.write_at(at * BLOCK_SIZE, bytes)?;
    }
    let inodes = Inodes {
        plan: &plan,
        stored: &stored,
        i_blocks: &i_blocks,
        journal: journal_inode.as_ref(),
        epoch: opts.epoch,
        fs_seed,
    };
    let counts = write_inode_tables(&geo, &groups, &inodes, &mut sink)?;
    let (descs, free_blocks) =
        write_group_metadata(&geo, &groups, &blocks, &counts, fs_seed, &mut sink)?;
    let free_inodes = geo.inodes() - u64::from(plan.max_ino());
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
        sink.write_at(geo.group_start(g) * BLOCK_SIZE, &head)?;
        sink.write_at((geo.group_start(g) + 1) * BLOCK_SIZE, &gdt)?;
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

/// Encodes directory, extent-tree and xattr blocks into `meta` (block
/// number, bytes) and returns every planned inode's `i_block`.
fn encode_blocks(
    plan: &Plan,
    stored: &[Stored],
    xattr_at: &[Option<u64>],
    fs_seed: u32,
    meta: &mut Vec<(u64, Vec<u8>)>,
) -> Vec<[u8; 60]> {
    let mut i_blocks = Vec::with_capacity(plan.inodes.len());
    for (p, s) in plan.inodes.iter().zip(stored) {
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
        if let Body::Dir {
            entries,
            blocks,
            htree,
        } = &p.body
        {
            let bytes = match htree {
                Some(h) => h.encode(entries, seed),
                None => dir::encode(entries, *blocks, seed),
            };
            for e in &s.extents {
                let from = e.logical as usize * BS;
                meta.push((e.physical, bytes[from..from + e.len as usize * BS].to_vec()));
            }
        }
        i_blocks.push(i_block);
    }
    for (shared, at) in plan.xattr_blocks.iter().zip(xattr_at) {
        if let Some(at) = at {
            meta.push((
                *at,
                xattr::finish_block(&shared.body, shared.refcount, *at, fs_seed),
            ));
        }
    }
    i_blocks
}

/// Everything needed to encode any inode by number.
struct Inodes<'a> {
    plan: &'a Plan<'a>,
    stored: &'a [Stored],
    i_blocks: &'a [[u8; 60]],
    journal: Option<&'a Inode>,
    epoch: u32,
    fs_seed: u32,
}

impl Inodes<'_> {
    fn encode(&self, ino: u32) -> Vec<u8> {
        match (ino, index_of(ino)) {
            (JOURNAL_INO, _) => match self.journal {
                Some(j) => inode::encode(ino, j, self.epoch, self.fs_seed),
                None => inode::encode_reserved(ino, self.fs_seed),
            },
            (_, Some(i)) if ino == ROOT_INO || ino >= FIRST_INO => {
                let planned =
                    planned_inode(&self.plan.inodes[i], &self.stored[i], self.i_blocks[i]);
                inode::encode(ino, &planned, self.epoch, self.fs_seed)
            }
            _ => inode::encode_reserved(ino, self.fs_seed),
        }
    }
}

/// Writes each group's inode table up to its last used inode (the rest
/// stays a hole behind `bg_itable_unused`) and returns per-group counts.
fn write_inode_tables<W: Write + Seek>(
    geo: &Geometry,
    groups: &[layout::GroupMeta],
    inodes: &Inodes,
    sink: &mut Sink<W>,
) -> Result<GroupCounts, Ext4Error> {
    let ipg = geo.inodes_per_group;
    let max_ino = inodes.plan.max_ino();
    let mut counts = GroupCounts {
        used_inodes: Vec::with_capacity(groups.len()),
        dirs: vec![0; groups.len()],
    };
    for p in &inodes.plan.inodes {
        if matches!(p.body, Body::Dir { .. }) {
            counts.dirs[((p.ino - 1) / ipg) as usize] += 1;
        }
    }
    for (g, gm) in groups.iter().enumerate() {
        let first = g as u32 * ipg + 1;
        let used = max_ino.saturating_sub(first - 1).min(ipg);
        counts.used_inodes.push(used);
        if used == 0 {
            continue;
        }
        let slots = used.div_ceil(INODES_PER_BLOCK) * INODES_PER_BLOCK;
        let mut table = vec![0u8; slots as usize * INODE_SIZE as usize];
        for k in 0..used {
            let at = k as usize * INODE_SIZE as usize;
            table[at..at + INODE_SIZE as usize].copy_from_slice(&inodes.encode(first + k));
        }
        sink.write_at(gm.inode_table * BLOCK_SIZE, &table)?;
    }
    Ok(counts)
}

/// Per-group inode usage, from the inode numbering.
struct GroupCounts {
    used_inodes: Vec<u32>,
    dirs: Vec<u32>,
}

/// Writes every group's block and inode bitmap, a flex group at a time
/// (their bitmaps are adjacent), and returns the encoded descriptors and
/// the total of free blocks. The block bitmap must be final.
fn write_group_metadata<W: Write + Seek>(
    geo: &Geometry,
    groups: &[layout::GroupMeta],
    blocks: &Blocks,
    counts: &GroupCounts,
    fs_seed: u32,
    sink: &mut Sink<W>,
) -> Result<(Vec<[u8; DESC_SIZE as usize]>, u64), Ext4Error> {
    let ipg = geo.inodes_per_group;
    let mut descs = Vec::with_capacity(groups.len());
    let mut free_blocks = 0;
    let per_flex = 1usize << LOG_GROUPS_PER_FLEX;
    for (f, flex) in groups.chunks(per_flex).enumerate() {
        let mut bitmaps: Vec<(u64, Vec<u8>)> = Vec::with_capacity(2 * flex.len());
        for (k, gm) in flex.iter().enumerate() {
            let g = f * per_flex + k;
            let g32 = g as u32;
            let (start, len) = (geo.group_start(g32), geo.group_len(g32));
            let bb = blocks.bitmap_block(start, len, BS);
            let used = counts.used_inodes[g];
            let mut ib = vec![0xffu8; BS];
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
                used_dirs: counts.dirs[g],
                flags: if used == 0 { BG_INODE_UNINIT } else { 0 },
                itable_unused: ipg - used,
                block_bitmap_csum: crate::crc32c::update(fs_seed, &bb),
                inode_bitmap_csum: crate::crc32c::update(fs_seed, &ib[..(ipg / 8) as usize]),
            };
            descs.push(desc.encode(g32, fs_seed));
            bitmaps.push((gm.block_bitmap, bb));
            bitmaps.push((gm.inode_bitmap, ib));
        }
        bitmaps.sort_by_key(|m| m.0);
        for (at, bytes) in &bitmaps {
            sink.write_at(at * BLOCK_SIZE, bytes)?;
        }
    }
    Ok((descs, free_blocks))
}

fn planned_inode(p: &Planned, s: &Stored, i_block: [u8; 60]) -> Inode {
    let (size, flags) = match &p.body {
        Body::Dir { blocks, htree, .. } => (
            blocks * BLOCK_SIZE,
            EXTENTS_FL | if htree.is_some() { INDEX_FL } else { 0 },
        ),
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
