//! Hashed (htree) directory indexes for directories larger than a block.
//!
//! The kernel only indexes a directory when it grows past one block at run
//! time, never a directory that is already linear and multi-block, so an
//! image's big directories (`/usr/lib/<triplet>`, `/usr/bin`) stay
//! unindexed for life unless the image writer indexes them. Entries are
//! sorted by their half-MD4 name hash (the unsigned variant, see
//! `superblock::FLAGS_UNSIGNED_HASH`) and packed into full leaf blocks; a
//! root block (and, past 507 leaves, one level of index nodes) maps hash
//! ranges to leaves. Leaves are ordinary directory blocks.

use crate::crc32c;
use crate::dir::{self, Entry};
use crate::geometry::BLOCK_SIZE;
use crate::le::{put_u16, put_u32, put_u8};

const BS: usize = BLOCK_SIZE as usize;
/// `dx_tail`: reserved word and checksum after the last possible entry.
const TAIL: usize = 8;
/// Entries start after `.`, `..` and the 8-byte root info in the root...
const ROOT_ENTRIES: usize = 32;
/// ...and after an empty 8-byte directory entry in an index node.
const NODE_ENTRIES: usize = 8;
const ROOT_LIMIT: usize = (BS - ROOT_ENTRIES - TAIL) / 8;
const NODE_LIMIT: usize = (BS - NODE_ENTRIES - TAIL) / 8;
/// The index's hash: half MD4 (stored as 1; the superblock's unsigned flag
/// selects the unsigned variant).
const HASH_HALF_MD4: u8 = 1;

/// `EXT4_INDEX_FL`: the directory has an htree index.
pub(crate) const INDEX_FL: u32 = 0x1000;

/// The ext4 directory hash of `name` (half MD4 over 32-byte pieces,
/// unsigned bytes): (major hash with the low bit clear, minor hash).
pub(crate) fn name_hash(name: &[u8], seed: &[u32; 4]) -> (u32, u32) {
    let mut buf = if seed.iter().all(|&w| w == 0) {
        [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
    } else {
        *seed
    };
    let mut rest = name;
    while !rest.is_empty() {
        half_md4(&mut buf, &words(rest));
        rest = &rest[rest.len().min(32)..];
    }
    (buf[1] & !1, buf[2])
}

/// Packs up to 32 bytes of `s` into eight words, big-endian within each
/// word, padding with a word derived from the remaining length.
fn words(s: &[u8]) -> [u32; 8] {
    let len = s.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let mut val = pad;
    let mut n = 0;
    for (i, &c) in s.iter().take(32).enumerate() {
        val = u32::from(c).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[n] = val;
            n += 1;
            val = pad;
        }
    }
    if n < 8 {
        out[n] = val;
    }
    out
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    let step = |a: &mut u32, fv: u32, input: u32, s: u32| {
        *a = a.wrapping_add(fv).wrapping_add(input).rotate_left(s);
    };
    // Round 1: words in order, shifts 3 7 11 19.
    for i in [0, 4] {
        step(&mut a, f(b, c, d), x[i], 3);
        step(&mut d, f(a, b, c), x[i + 1], 7);
        step(&mut c, f(d, a, b), x[i + 2], 11);
        step(&mut b, f(c, d, a), x[i + 3], 19);
    }
    // Round 2: odd then even words, shifts 3 5 9 13.
    for i in [1, 0] {
        step(&mut a, g(b, c, d), x[i].wrapping_add(K2), 3);
        step(&mut d, g(a, b, c), x[i + 2].wrapping_add(K2), 5);
        step(&mut c, g(d, a, b), x[i + 4].wrapping_add(K2), 9);
        step(&mut b, g(c, d, a), x[i + 6].wrapping_add(K2), 13);
    }
    // Round 3: words 3 7 2 6 then 1 5 0 4, shifts 3 9 11 15.
    for i in [3, 1] {
        step(&mut a, h(b, c, d), x[i].wrapping_add(K3), 3);
        step(&mut d, h(a, b, c), x[i + 4].wrapping_add(K3), 9);
        step(&mut c, h(d, a, b), x[i - 1].wrapping_add(K3), 11);
        step(&mut b, h(c, d, a), x[i + 3].wrapping_add(K3), 15);
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// An indexed directory's shape.
#[derive(Debug, Clone)]
pub(crate) struct Htree {
    /// Entry indices (into the directory's entries, past `.` and `..`) of
    /// each leaf, in hash order.
    leaves: Vec<Vec<usize>>,
    /// Each leaf's lowest hash; bit 0 set when the leaf continues a run of
    /// equal hashes from the previous one. The first leaf's key is unused.
    keys: Vec<u32>,
    /// Index nodes between root and leaves (0 = leaves hang off the root).
    nodes: usize,
}

/// The most leaves two index levels address without `large_dir`.
pub(crate) const MAX_LEAVES: usize = ROOT_LIMIT * NODE_LIMIT;

impl Htree {
    /// Plans the index for `entries` (which start with `.` and `..`), or
    /// `None` if they fit one block (a single linear block is what the
    /// kernel itself keeps unindexed). `Err` carries the number of leaves
    /// needed when that exceeds [`MAX_LEAVES`].
    pub fn plan(entries: &[Entry], seed: &[u32; 4]) -> Result<Option<Htree>, usize> {
        if dir::blocks_needed(entries) <= 1 {
            return Ok(None);
        }
        let mut order: Vec<(u32, u32, usize)> = entries[2..]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (h, minor) = name_hash(&e.name, seed);
                (h, minor, i + 2)
            })
            .collect();
        order.sort_unstable();
        let size = |i: usize| dir::rec_len(entries[i].name.len());
        let mut leaves: Vec<Vec<usize>> = Vec::new();
        let mut keys = Vec::new();
        // The leaf being filled: (hash, entry) pairs, bytes used, key.
        let mut cur: Vec<(u32, usize)> = Vec::new();
        let mut used = 0;
        let mut key = 0;
        for &(h, _, i) in &order {
            while used + size(i) > dir::SPACE && !cur.is_empty() {
                // Equal hashes must be findable from the leaf their key
                // points to: move a trailing run of `h` to the next leaf,
                // unless it fills this leaf alone, in which case the next
                // leaf is marked as continuing it.
                let run = cur.iter().rev().take_while(|&&(x, _)| x == h).count();
                let (carry, next_key) = if run == cur.len() {
                    (Vec::new(), h | 1)
                } else {
                    (cur.split_off(cur.len() - run), h)
                };
                leaves.push(cur.iter().map(|&(_, e)| e).collect());
                keys.push(key);
                used = carry.iter().map(|&(_, e)| size(e)).sum();
                cur = carry;
                key = next_key;
            }
            cur.push((h, i));
            used += size(i);
        }
        leaves.push(cur.iter().map(|&(_, e)| e).collect());
        keys.push(key);
        let nodes = if leaves.len() <= ROOT_LIMIT {
            0
        } else if leaves.len() <= MAX_LEAVES {
            leaves.len().div_ceil(NODE_LIMIT)
        } else {
            return Err(leaves.len());
        };
        Ok(Some(Htree {
            leaves,
            keys,
            nodes,
        }))
    }

    /// Directory blocks: root, index nodes, leaves.
    pub fn blocks(&self) -> u64 {
        (1 + self.nodes + self.leaves.len()) as u64
    }

    /// Encodes the directory (logical block 0 first). `entries[0]` and
    /// `entries[1]` are `.` and `..`.
    pub fn encode(&self, entries: &[Entry], inode_seed: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.blocks() as usize * BS];
        let first_leaf = 1 + self.nodes;
        for (j, leaf) in self.leaves.iter().enumerate() {
            let list: Vec<&Entry> = leaf.iter().map(|&i| &entries[i]).collect();
            let at = (first_leaf + j) * BS;
            dir::encode_block(&mut out[at..at + BS], &list, inode_seed);
        }
        let leaf_refs: Vec<(u32, u32)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(j, &k)| (k, (first_leaf + j) as u32))
            .collect();
        let root_refs: Vec<(u32, u32)> = if self.nodes == 0 {
            leaf_refs
        } else {
            let mut refs = Vec::with_capacity(self.nodes);
            for (n, chunk) in leaf_refs.chunks(NODE_LIMIT).enumerate() {
                let at = (1 + n) * BS;
                let node = &mut out[at..at + BS];
                // An empty entry spanning the block hides the index from
                // code that reads the directory linearly.
                put_u16(node, 4, BS as u16);
                write_index(node, NODE_ENTRIES, NODE_LIMIT, chunk, inode_seed);
                refs.push((chunk[0].0, (1 + n) as u32));
            }
            refs
        };
        let root = &mut out[..BS];
        put_u32(root, 0, entries[0].ino);
        put_u16(root, 4, 12);
        put_u8(root, 6, 1);
        put_u8(root, 7, dir::FT_DIR);
        root[8] = b'.';
        put_u32(root, 12, entries[1].ino);
        put_u16(root, 16, (BS - 12) as u16);
        put_u8(root, 18, 2);
        put_u8(root, 19, dir::FT_DIR);
        root[20..22].copy_from_slice(b"..");
        put_u8(root, 28, HASH_HALF_MD4);
        put_u8(root, 29, 8); // info length
        put_u8(root, 30, u8::from(self.nodes > 0)); // indirect levels
        write_index(root, ROOT_ENTRIES, ROOT_LIMIT, &root_refs, inode_seed);
        out
    }
}

/// Writes a count/limit header and `refs` (hash, logical block) at `at`,
/// and the `dx_tail` checksum over the used part.
fn write_index(block: &mut [u8], at: usize, limit: usize, refs: &[(u32, u32)], inode_seed: u32) {
    put_u16(block, at, limit as u16);
    put_u16(block, at + 2, refs.len() as u16);
    // The first entry's hash slot holds the count/limit header.
    put_u32(block, at + 4, refs[0].1);
    for (k, &(hash, blk)) in refs.iter().enumerate().skip(1) {
        put_u32(block, at + 8 * k, hash);
        put_u32(block, at + 8 * k + 4, blk);
    }
    let tail = at + limit * 8;
    let csum = crc32c::update(inode_seed, &block[..at + refs.len() * 8]);
    let csum = crc32c::update(csum, &block[tail..tail + 4]);
    let csum = crc32c::update(csum, &[0u8; 4]);
    put_u32(block, tail + 4, csum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::le::get_u32;

    fn entries(names: impl Iterator<Item = String>) -> Vec<Entry> {
        let mut v = vec![
            Entry {
                name: b".".to_vec(),
                ino: 20,
                file_type: dir::FT_DIR,
            },
            Entry {
                name: b"..".to_vec(),
                ino: 2,
                file_type: dir::FT_DIR,
            },
        ];
        v.extend(names.enumerate().map(|(i, n)| Entry {
            name: n.into_bytes(),
            ino: 100 + i as u32,
            file_type: dir::FT_REG,
        }));
        v
    }

    #[test]
    fn hash_pads_and_chains_pieces() {
        // Word packing: "abcd" is one big-endian-ish word, then the pad
        // word (length 5 repeated in every byte) shifted in.
        let w = words(b"abcde");
        assert_eq!(w[0], 0x6162_6364);
        assert_eq!(w[1], (0x0505_0505u32 << 8).wrapping_add(0x65));
        assert_eq!(w[2], 0x0505_0505);
        // Names longer than 32 bytes hash all pieces.
        let seed = [1, 2, 3, 4];
        assert_ne!(name_hash(&[b'a'; 40], &seed), name_hash(&[b'a'; 33], &seed));
        assert_eq!(name_hash(b"x", &seed).0 & 1, 0);
    }

    #[test]
    fn small_directories_stay_linear() {
        let e = entries((0..10).map(|i| format!("f{i}")));
        assert!(Htree::plan(&e, &[1, 2, 3, 4]).unwrap().is_none());
    }

    #[test]
    fn leaves_are_hash_ordered_and_full() {
        let seed = [7, 8, 9, 10];
        let e = entries((0..3000).map(|i| format!("entry-{i:05}")));
        let h = Htree::plan(&e, &seed).unwrap().unwrap();
        assert_eq!(h.nodes, 0);
        let linear = dir::blocks_needed(&e);
        assert!(
            h.leaves.len() as u64 <= linear + 1,
            "{} leaves vs {linear} linear",
            h.leaves.len()
        );
        let mut last = 0;
        for (j, leaf) in h.leaves.iter().enumerate() {
            let hashes: Vec<u32> = leaf
                .iter()
                .map(|&i| name_hash(&e[i].name, &seed).0)
                .collect();
            assert!(hashes.windows(2).all(|w| w[0] <= w[1]));
            if j > 0 {
                assert_eq!(h.keys[j], hashes[0]);
                assert!(hashes[0] > last);
            }
            last = *hashes.last().unwrap();
        }
        let count: usize = h.leaves.iter().map(Vec::len).sum();
        assert_eq!(count, 3000);
        let enc = h.encode(&e, 5);
        let root = &enc[..BS];
        assert_eq!(
            u16::from_le_bytes([root[32], root[33]]) as usize,
            ROOT_LIMIT
        );
        assert_eq!(
            u16::from_le_bytes([root[34], root[35]]) as usize,
            h.leaves.len()
        );
        assert_eq!(get_u32(root, 36), 1, "first leaf follows the root");
    }

    #[test]
    fn huge_directories_get_index_nodes() {
        // 255-byte names: 15 per leaf, so 8000 names need > 507 leaves.
        let e = entries((0..8000).map(|i| format!("{i:0>255}")));
        let h = Htree::plan(&e, &[3, 1, 4, 1]).unwrap().unwrap();
        assert!(h.leaves.len() > ROOT_LIMIT);
        assert_eq!(h.nodes, h.leaves.len().div_ceil(NODE_LIMIT));
        let enc = h.encode(&e, 9);
        assert_eq!(enc[30], 1, "one indirect level");
        let node = &enc[BS..2 * BS];
        assert_eq!(u16::from_le_bytes([node[8], node[9]]) as usize, NODE_LIMIT);
        assert_eq!(
            get_u32(node, 12) as usize,
            1 + h.nodes,
            "node 0 starts at the first leaf"
        );
    }

    #[test]
    fn equal_hash_runs_stay_together() {
        // Force collisions with a seed-independent trick: the same name
        // many times (a directory never has that, but the packer must
        // still produce a valid continuation).
        let mut e = entries((0..400).map(|i| format!("{i:0>200}")));
        for x in e.iter_mut().skip(2).take(40) {
            x.name = vec![b'z'; 200];
        }
        let h = Htree::plan(&e, &[1, 1, 1, 1]).unwrap().unwrap();
        let seed = [1, 1, 1, 1];
        let zh = name_hash(&[b'z'; 200], &seed).0;
        let with_z: Vec<usize> = (0..h.leaves.len())
            .filter(|&j| h.leaves[j].iter().any(|&i| e[i].name == [b'z'; 200]))
            .collect();
        // 40 entries of 208 bytes do not fit one leaf: the run spans
        // leaves, and each later leaf's key marks the continuation.
        assert!(with_z.len() >= 2);
        for &j in &with_z[1..] {
            assert_eq!(h.keys[j], zh | 1);
        }
    }
}
