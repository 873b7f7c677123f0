//! Repairs the `.` and `..` entries fatfs 0.3.6 writes.
//!
//! fatfs 0.3.6 (the latest release) writes every new directory as
//! `[LFN "."] [.] [LFN ".."] [..]`: a long-name entry before each dot
//! entry, so `.` and `..` are not in the first two slots as FAT requires
//! (rust-fatfs issue #117, fixed in the unreleased 0.4). On FAT32 it also
//! points the `..` of a top-level directory at the root's cluster, where
//! FAT wants 0 (rust-fatfs PR #99). `fsck.vfat` "repairs" both by deleting
//! the directory's links; Linux and firmware may misread them.
//!
//! Nothing in fatfs's public API reaches those entries, so after fatfs is
//! done this walks the directory tree on the raw volume and rewrites the
//! first four slots of each subdirectory as `[.] [..] [deleted]
//! [deleted]`, with `..` = 0 under the root. Deleted slots are ordinary in
//! FAT directories and the children after them are untouched. A directory
//! that already starts with `.` and `..` (a fixed fatfs) is left alone;
//! anything else is an error, so a changed fatfs cannot go unnoticed.

use std::io::{self, Read, Seek, SeekFrom, Write};

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const DELETED: u8 = 0xE5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// What the walk needs from the boot sector.
struct Bpb {
    sector: u64,
    spc: u64,
    reserved: u64,
    fats: u64,
    root_entries: u64,
    per_fat: u64,
    root_cluster: u32,
    fat32: bool,
    clusters: u64,
}

impl Bpb {
    fn read<S: Read + Seek>(io: &mut S) -> io::Result<Bpb> {
        let mut b = [0u8; 512];
        io.seek(SeekFrom::Start(0))?;
        io.read_exact(&mut b)?;
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let per_fat16 = u16_at(22);
        let fat32 = per_fat16 == 0;
        let total = match u16_at(19) {
            0 => u64::from(u32_at(32)),
            n => n,
        };
        let bpb = Bpb {
            sector: u16_at(11),
            spc: u64::from(b[13]),
            reserved: u16_at(14),
            fats: u64::from(b[16]),
            root_entries: u16_at(17),
            per_fat: if fat32 {
                u64::from(u32_at(36))
            } else {
                per_fat16
            },
            root_cluster: if fat32 { u32_at(44) } else { 0 },
            fat32,
            clusters: 0,
        };
        if bpb.sector == 0 || bpb.spc == 0 {
            return Err(io::Error::other("not a FAT boot sector"));
        }
        let data = total.saturating_sub(bpb.data_start());
        Ok(Bpb {
            clusters: data / bpb.spc,
            ..bpb
        })
    }

    fn root_sectors(&self) -> u64 {
        (self.root_entries * ENTRY as u64).div_ceil(self.sector)
    }

    fn data_start(&self) -> u64 {
        self.reserved + self.fats * self.per_fat + self.root_sectors()
    }

    fn cluster_bytes(&self) -> u64 {
        self.spc * self.sector
    }

    fn cluster_offset(&self, c: u32) -> io::Result<u64> {
        if c < 2 || u64::from(c) >= self.clusters + 2 {
            return Err(io::Error::other(format!("cluster {c} is out of range")));
        }
        Ok((self.data_start() + (u64::from(c) - 2) * self.spc) * self.sector)
    }

    /// The next cluster of a chain, `None` at its end.
    fn next<S: Read + Seek>(&self, io: &mut S, c: u32) -> io::Result<Option<u32>> {
        let base = self.reserved * self.sector;
        let (next, end) = if self.fat32 {
            let mut b = [0u8; 4];
            io.seek(SeekFrom::Start(base + 4 * u64::from(c)))?;
            io.read_exact(&mut b)?;
            (u32::from_le_bytes(b) & 0x0FFF_FFFF, 0x0FFF_FFF8)
        } else {
            let mut b = [0u8; 2];
            io.seek(SeekFrom::Start(base + 2 * u64::from(c)))?;
            io.read_exact(&mut b)?;
            (u32::from(u16::from_le_bytes(b)), 0xFFF8)
        };
        Ok((next < end).then_some(next))
    }

    /// The clusters of the chain starting at `first`.
    fn chain<S: Read + Seek>(&self, io: &mut S, first: u32) -> io::Result<Vec<u32>> {
        let mut out = vec![first];
        let mut c = first;
        while let Some(n) = self.next(io, c)? {
            if out.len() as u64 > self.clusters {
                return Err(io::Error::other(format!(
                    "cluster chain from {first} loops"
                )));
            }
            out.push(n);
            c = n;
        }
        Ok(out)
    }

    /// A directory's entries: the root region on FAT16, else its chain.
    fn dir_bytes<S: Read + Seek>(&self, io: &mut S, first: Option<u32>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match first {
            None => {
                let start = (self.reserved + self.fats * self.per_fat) * self.sector;
                out.resize((self.root_entries as usize) * ENTRY, 0);
                io.seek(SeekFrom::Start(start))?;
                io.read_exact(&mut out)?;
            }
            Some(c) => {
                for c in self.chain(io, c)? {
                    let at = out.len();
                    out.resize(at + self.cluster_bytes() as usize, 0);
                    io.seek(SeekFrom::Start(self.cluster_offset(c)?))?;
                    io.read_exact(&mut out[at..])?;
                }
            }
        }
        Ok(out)
    }
}

/// Fixes every subdirectory's dot entries; returns how many were fixed.
pub(super) fn fix<S: Read + Write + Seek>(io: &mut S) -> io::Result<usize> {
    let bpb = Bpb::read(io)?;
    let root = if bpb.fat32 {
        Some(bpb.root_cluster)
    } else {
        None
    };
    let mut fixed = 0;
    // (directory's first cluster or None for the FAT16 root, is root)
    let mut stack = vec![(root, true)];
    while let Some((dir, is_root)) = stack.pop() {
        let bytes = bpb.dir_bytes(io, dir)?;
        for e in bytes.chunks_exact(ENTRY) {
            match e[0] {
                0 => break,
                DELETED => continue,
                _ => {}
            }
            let attr = e[11];
            if attr == ATTR_LFN || attr & ATTR_VOLUME != 0 || attr & ATTR_DIR == 0 {
                continue;
            }
            if &e[..11] == DOT || &e[..11] == DOTDOT {
                continue;
            }
            let hi = if bpb.fat32 {
                u32::from(u16::from_le_bytes([e[20], e[21]]))
            } else {
                0
            };
            let sub = hi << 16 | u32::from(u16::from_le_bytes([e[26], e[27]]));
            let parent = if is_root { 0 } else { dir.unwrap_or(0) };
            if fix_dir(&bpb, io, sub, parent)? {
                fixed += 1;
            }
            stack.push((Some(sub), false));
        }
    }
    Ok(fixed)
}

/// Rewrites the first slots of directory `first` (whose parent's cluster is
/// `parent`, 0 for the root). Returns whether anything changed.
fn fix_dir<S: Read + Write + Seek>(
    bpb: &Bpb,
    io: &mut S,
    first: u32,
    parent: u32,
) -> io::Result<bool> {
    let at = bpb.cluster_offset(first)?;
    let mut s = [0u8; 4 * ENTRY];
    io.seek(SeekFrom::Start(at))?;
    io.read_exact(&mut s)?;
    let slot = |i: usize| &s[i * ENTRY..(i + 1) * ENTRY];
    if &slot(0)[..11] == DOT && &slot(1)[..11] == DOTDOT {
        return Ok(false);
    }
    let lfn_dots = slot(0)[11] == ATTR_LFN
        && &slot(1)[..11] == DOT
        && slot(2)[11] == ATTR_LFN
        && &slot(3)[..11] == DOTDOT;
    if !lfn_dots {
        return Err(io::Error::other(format!(
            "directory at cluster {first} does not start with the dot entries fatfs writes"
        )));
    }
    let mut out = [0u8; 4 * ENTRY];
    out[..ENTRY].copy_from_slice(slot(1));
    out[ENTRY..2 * ENTRY].copy_from_slice(slot(3));
    let dotdot = &mut out[ENTRY..2 * ENTRY];
    dotdot[26..28].copy_from_slice(&((parent & 0xFFFF) as u16).to_le_bytes());
    if bpb.fat32 {
        dotdot[20..22].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
    }
    out[2 * ENTRY] = DELETED;
    out[3 * ENTRY] = DELETED;
    io.seek(SeekFrom::Start(at))?;
    io.write_all(&out)?;
    Ok(true)
}
