//! The compression map of a file: which pcluster holds each 4 KiB logical
//! cluster (lcluster) of its content, in the compact format.
//!
//! Logically every lcluster has an entry. The lcluster where an extent
//! starts has a head entry (LZ4 or plain) with the offset of that start;
//! lclusters an extent covers up to the one where the next extent starts
//! are non-heads, which know the distance back to their head and forward to
//! the next head. When the file ends inside an lcluster no extent starts
//! in, that lcluster gets a plain entry whose offset marks the end, as the
//! kernel expects.
//!
//! On disk the entries are packed, 14 or 16 bits each: 2 bits of type and
//! 12 of offset or distance, with one 32-bit block address per pack from
//! which the kernel counts heads to find a pcluster's block (so pclusters
//! must sit in consecutive blocks, as Kiln writes them). Packs of 16
//! entries take 2 bytes an entry; packs of 2 take 4 bytes an entry and pad
//! the start up to the 32-byte alignment the 16-entry packs need, and the
//! end. That is a quarter of the 8 bytes per entry of the full format, and
//! the layout `mkfs.erofs` writes by default.

use crate::compress::Extent;
use crate::format::BLOCK_SIZE;

/// `h_advise` bit: the middle of the map uses 16-entry (2-byte) packs.
pub const ADVISE_COMPACTED_2B: u16 = 0x0001;
/// `h_advise` bit: the last extent's pcluster is inline after the map.
pub const ADVISE_INLINE_PCLUSTER: u16 = 0x0008;

const TYPE_PLAIN: u32 = 0;
const TYPE_HEAD: u32 = 1;
const TYPE_NONHEAD: u32 = 2;
/// Bits of offset or distance in an entry: log2 of the lcluster size.
const LO_BITS: u32 = 12;

/// One lcluster's entry, before packing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lcluster {
    /// An uncompressed extent starts `clusterofs` bytes in (or the file
    /// ends there).
    Plain { clusterofs: u16 },
    /// An LZ4 extent starts `clusterofs` bytes in.
    Head { clusterofs: u16 },
    /// `back` lclusters after its extent's head, `forward` before the next
    /// head (or the end of the file).
    NonHead { back: u16, forward: u16 },
}

/// The entries of a file of `size` bytes stored as `extents`.
pub fn lclusters(extents: &[Extent], size: u64) -> Vec<Lcluster> {
    let bs = BLOCK_SIZE as u64;
    let count = size.div_ceil(bs) as usize;
    let mut entries: Vec<Option<Lcluster>> = vec![None; count];
    for e in extents {
        let head = (e.start / bs) as usize;
        let clusterofs = (e.start % bs) as u16;
        if let Some(slot) = entries.get_mut(head) {
            *slot = Some(if e.compressed {
                Lcluster::Head { clusterofs }
            } else {
                Lcluster::Plain { clusterofs }
            });
        }
        let next = ((e.start + u64::from(e.len)) / bs) as usize;
        for (lcn, slot) in entries.iter_mut().enumerate().take(next).skip(head + 1) {
            // Extents span at most MAX_EXTENT / 4 KiB + 1 lclusters, far
            // below the 12-bit (and the 2048 flag bit) limit.
            *slot = Some(Lcluster::NonHead {
                back: (lcn - head) as u16,
                forward: (next - lcn) as u16,
            });
        }
    }
    let end = Lcluster::Plain {
        clusterofs: (size % bs) as u16,
    };
    entries.into_iter().map(|e| e.unwrap_or(end)).collect()
}

/// The pack regions: (entries per pack, bytes per entry, entry count).
/// `ebase` is where the map starts relative to 32-byte alignment.
fn regions(count: usize, ebase: usize) -> [(usize, usize, usize); 3] {
    let initial = ((32 - ebase % 32) / 4) & 7;
    let (initial, middle) = if initial < count {
        (initial, (count - initial) / 16 * 16)
    } else {
        (count, 0)
    };
    [
        (2, 4, initial),
        (16, 2, middle),
        (2, 4, count - initial - middle),
    ]
}

/// Bytes of the packed map of `count` lclusters starting at `ebase`.
pub fn encoded_len(count: usize, ebase: usize) -> usize {
    regions(count, ebase)
        .iter()
        .map(|&(vcnt, size, n)| n.div_ceil(vcnt) * vcnt * size)
        .sum()
}

/// The packed map; the first extent's pcluster is block `blkaddr`, the
/// others follow it.
pub fn encode(extents: &[Extent], size: u64, blkaddr: u32, ebase: usize) -> Vec<u8> {
    let entries = lclusters(extents, size);
    let mut out = Vec::with_capacity(encoded_len(entries.len(), ebase));
    // Heads (pclusters) before the current pack.
    let mut heads = 0u32;
    let mut rest = entries.as_slice();
    for (vcnt, size, n) in regions(entries.len(), ebase) {
        let (region, tail) = rest.split_at(n);
        rest = tail;
        for pack in region.chunks(vcnt) {
            let bytes = vcnt * size;
            let bits = (bytes * 8 - 32) / vcnt;
            let mut buf = vec![0u8; bytes];
            for (i, entry) in pack.iter().enumerate() {
                let value = match *entry {
                    Lcluster::Plain { clusterofs } => TYPE_PLAIN << LO_BITS | u32::from(clusterofs),
                    Lcluster::Head { clusterofs } => TYPE_HEAD << LO_BITS | u32::from(clusterofs),
                    // The last entry of a pack holds its forward distance;
                    // the others the distance back (the kernel derives the
                    // missing one from the neighbours).
                    Lcluster::NonHead { back, forward } => {
                        let lo = if i + 1 == vcnt { forward } else { back };
                        TYPE_NONHEAD << LO_BITS | u32::from(lo)
                    }
                };
                put_bits(&mut buf, i * bits, value);
            }
            // The kernel finds a head's block as this base plus one plus
            // the heads before it in the pack.
            let base = (blkaddr + heads).wrapping_sub(1);
            buf[bytes - 4..].copy_from_slice(&base.to_le_bytes());
            heads += pack
                .iter()
                .filter(|e| !matches!(e, Lcluster::NonHead { .. }))
                .count() as u32;
            out.extend_from_slice(&buf);
        }
    }
    out
}

/// ORs a value of up to 14 bits into `buf` at bit `pos`, LSB first.
fn put_bits(buf: &mut [u8], pos: usize, value: u32) {
    let shifted = value << (pos % 8);
    for (k, byte) in shifted.to_le_bytes().iter().take(3).enumerate() {
        if let Some(b) = buf.get_mut(pos / 8 + k) {
            *b |= byte;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes lcluster `lcn` the way the kernel does (zmap.c), returning
    /// (type, clusterofs or back distance, pcluster block for heads).
    fn decode(map: &[u8], ebase: usize, count: usize, lcn: usize) -> (u32, u32, Option<u32>) {
        let initial = ((32 - ebase % 32) / 4) & 7;
        let c2b = if initial < count {
            (count - initial) / 16 * 16
        } else {
            0
        };
        let (mut pos, mut shift, mut l) = (ebase, 2, lcn);
        if l >= initial {
            pos += initial * 4;
            l -= initial;
            if l < c2b {
                shift = 1;
            } else {
                pos += c2b * 2;
                l -= c2b;
            }
        }
        pos += l << shift;
        let vcnt = if shift == 2 { 2 } else { 16 };
        let pack_bytes = vcnt << shift;
        let bits = (pack_bytes * 8 - 32) / vcnt;
        let pack_start = pos / pack_bytes * pack_bytes;
        let pack = &map[pack_start - ebase..pack_start - ebase + pack_bytes];
        let i = (pos - pack_start) >> shift;
        let get = |i: usize| {
            let at = i * bits;
            let mut w = [0u8; 4];
            for (k, b) in w.iter_mut().enumerate() {
                *b = *pack.get(at / 8 + k).unwrap_or(&0);
            }
            let v = u32::from_le_bytes(w) >> (at % 8);
            (v >> 12 & 3, v & 0xfff)
        };
        let (ty, lo) = get(i);
        if ty == TYPE_NONHEAD {
            if i + 1 != vcnt {
                return (ty, lo, None);
            }
            let (pty, plo) = get(i - 1);
            return (ty, if pty == TYPE_NONHEAD { plo + 1 } else { 1 }, None);
        }
        let mut nblk = 1;
        let mut j = i as isize;
        while j > 0 {
            j -= 1;
            let (t, lo) = get(j as usize);
            if t == TYPE_NONHEAD {
                j -= lo as isize;
            }
            if j >= 0 {
                nblk += 1;
            }
        }
        let base = u32::from_le_bytes(pack[pack_bytes - 4..].try_into().unwrap());
        (ty, lo, Some(base.wrapping_add(nblk)))
    }

    /// Extents like the compressor makes: each but the last crosses an
    /// lcluster boundary.
    fn extents(lens: &[u32], compressed: impl Fn(usize) -> bool) -> (Vec<Extent>, u64) {
        let mut start = 0;
        let v = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let e = Extent {
                    start,
                    len,
                    compressed: compressed(i),
                };
                start += u64::from(len);
                e
            })
            .collect();
        (v, start)
    }

    #[test]
    fn the_kernels_decoding_finds_every_extent() {
        let mut x = 99u64;
        for case in 0..300 {
            let n = 1 + case % 60;
            let lens: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    4096 + (x % 40_000) as u32
                })
                .collect();
            let (mut ext, mut size) = extents(&lens, |i| i % 3 != 1);
            if case % 2 == 0 {
                // End on a short uncompressed tail.
                let last = (x % 4096) as u32 + 1;
                ext.push(Extent {
                    start: size,
                    len: last,
                    compressed: false,
                });
                size += u64::from(last);
            }
            for ebase in [8, 16, 24, 32, 40] {
                let map = encode(&ext, size, 1000, ebase);
                let count = size.div_ceil(4096) as usize;
                assert_eq!(map.len(), encoded_len(count, ebase));
                for (k, e) in ext.iter().enumerate() {
                    let lcn = (e.start / 4096) as usize;
                    let (ty, lo, blk) = decode(&map, ebase, count, lcn);
                    let want_ty = if e.compressed { TYPE_HEAD } else { TYPE_PLAIN };
                    assert_eq!((ty, lo), (want_ty, (e.start % 4096) as u32), "case {case}");
                    assert_eq!(blk, Some(1000 + k as u32), "case {case} ebase {ebase}");
                    let end = ((e.start + u64::from(e.len)) / 4096) as usize;
                    for l in lcn + 1..end.min(count) {
                        let (ty, back, _) = decode(&map, ebase, count, l);
                        assert_eq!((ty, back as usize), (TYPE_NONHEAD, l - lcn), "case {case}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_file_ending_mid_lcluster_gets_an_end_marker() {
        let (ext, size) = extents(&[6000, 4000], |i| i == 0);
        assert_eq!(
            lclusters(&ext, size),
            vec![
                Lcluster::Head { clusterofs: 0 },
                Lcluster::Plain { clusterofs: 1904 },
                Lcluster::Plain { clusterofs: 1808 },
            ]
        );
        let (ext, size) = extents(&[12_288], |_| true);
        assert_eq!(
            lclusters(&ext, size),
            vec![
                Lcluster::Head { clusterofs: 0 },
                Lcluster::NonHead {
                    back: 1,
                    forward: 2
                },
                Lcluster::NonHead {
                    back: 2,
                    forward: 1
                },
            ]
        );
    }
}
