//! The filesystem-wide block bitmap and the allocator that fills it.
//!
//! One bitmap covers the whole filesystem; per-group bitmaps and free counts
//! are cut from it at the end. That keeps placement simple (flex_bg
//! metadata may spill across group boundaries) and makes the counts in the
//! descriptors and superblock agree with the bitmaps by construction.
//!
//! Data is allocated first-fit from a cursor that only moves forward, in
//! inode order, so files are contiguous except where fixed metadata
//! (superblock backups, flex group tables) is in the way, and a file's
//! blocks follow its directory's.

/// A run of physical blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: u64,
    pub len: u64,
}

/// The allocator ran out of blocks; `got` of the requested were available.
#[derive(Debug)]
pub(crate) struct Full {
    pub got: u64,
}

pub(crate) struct Blocks {
    words: Vec<u64>,
    len: u64,
    cursor: u64,
    used: u64,
}

impl Blocks {
    pub fn new(len: u64) -> Blocks {
        Blocks {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            cursor: 0,
            used: 0,
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn free(&self) -> u64 {
        self.len - self.used
    }

    pub fn is_used(&self, b: u64) -> bool {
        self.words[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    pub fn mark(&mut self, start: u64, n: u64) {
        for b in start..start + n {
            let w = &mut self.words[(b / 64) as usize];
            let bit = 1 << (b % 64);
            if *w & bit == 0 {
                *w |= bit;
                self.used += 1;
            }
        }
    }

    /// The first free block at or after `from`.
    pub fn next_free(&self, from: u64) -> Option<u64> {
        let mut b = from;
        while b < self.len {
            let w = self.words[(b / 64) as usize];
            if w == u64::MAX {
                b = (b / 64 + 1) * 64;
                continue;
            }
            if w & (1 << (b % 64)) == 0 {
                return Some(b);
            }
            b += 1;
        }
        None
    }

    /// The first run of `n` contiguous free blocks at or after `from`.
    pub fn next_free_run(&self, from: u64, n: u64) -> Option<u64> {
        let mut start = self.next_free(from)?;
        loop {
            let mut end = start;
            while end < self.len && end - start < n && !self.is_used(end) {
                end += 1;
            }
            if end - start == n {
                return Some(start);
            }
            start = self.next_free(end)?;
        }
    }

    /// Allocates `n` blocks from the cursor, as few runs as the free space
    /// allows. On failure nothing is allocated.
    pub fn take(&mut self, n: u64) -> Result<Vec<Run>, Full> {
        let mut runs = Vec::new();
        let mut got = 0;
        let mut at = self.cursor;
        while got < n {
            let Some(start) = self.next_free(at) else {
                return Err(Full { got });
            };
            let mut end = start;
            while end < self.len && got + (end - start) < n && !self.is_used(end) {
                end += 1;
            }
            runs.push(Run {
                start,
                len: end - start,
            });
            got += end - start;
            at = end;
        }
        for r in &runs {
            self.mark(r.start, r.len);
        }
        self.cursor = at;
        Ok(runs)
    }

    /// The number of maximal free runs: how many pieces free space is in.
    pub fn free_runs(&self) -> u64 {
        let mut runs = 0u64;
        // Bit b starts a run if it is free and bit b-1 is used (block -1
        // counts as used).
        let mut carry = 1u64;
        for (i, &w) in self.words.iter().enumerate() {
            let valid = self.valid_mask(i);
            let prev_used = (w << 1) | carry;
            runs += u64::from((!w & prev_used & valid).count_ones());
            carry = w >> 63;
        }
        runs
    }

    /// Bits of word `i` that are blocks of the filesystem.
    fn valid_mask(&self, i: usize) -> u64 {
        let first = i as u64 * 64;
        if first + 64 <= self.len {
            u64::MAX
        } else {
            (1u64 << (self.len - first)) - 1
        }
    }

    /// Free blocks in `start..start + n`.
    pub fn free_in(&self, start: u64, n: u64) -> u64 {
        let mut free = 0;
        let mut b = start;
        let end = start + n;
        while b < end {
            if b % 64 == 0 && b + 64 <= end {
                free += u64::from(self.words[(b / 64) as usize].count_zeros());
                b += 64;
            } else {
                free += u64::from(!self.is_used(b));
                b += 1;
            }
        }
        free
    }

    /// The on-disk bitmap block for `n` blocks from `start`; bits past `n`
    /// (a short last group) are set, as ext4 requires.
    pub fn bitmap_block(&self, start: u64, n: u64, block_size: usize) -> Vec<u8> {
        let mut out = vec![0xffu8; block_size];
        let mut i = 0;
        while i < n {
            let b = start + i;
            if b % 64 == 0 && i % 8 == 0 && i + 64 <= n {
                let w = self.words[(b / 64) as usize];
                let at = (i / 8) as usize;
                out[at..at + 8].copy_from_slice(&w.to_le_bytes());
                i += 64;
            } else {
                if !self.is_used(b) {
                    out[(i / 8) as usize] &= !(1 << (i % 8));
                }
                i += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_around_used_blocks() {
        let mut b = Blocks::new(200);
        b.mark(0, 10);
        b.mark(70, 5);
        assert_eq!(b.next_free(0), Some(10));
        assert_eq!(b.next_free_run(0, 61), Some(75));
        let runs = b.take(70).unwrap();
        assert_eq!(
            runs,
            vec![Run { start: 10, len: 60 }, Run { start: 75, len: 10 }]
        );
        assert_eq!(b.used(), 85);
        assert!(matches!(b.take(200), Err(Full { got: 115 })));
        assert_eq!(b.used(), 85, "a failed take allocates nothing");
        // 0..85 is used now; 80..85 used, 85..90 free, bits past 10 padded.
        let bm = b.bitmap_block(80, 10, 4);
        assert_eq!(bm, vec![0x1f, 0xfc, 0xff, 0xff]);
        // Word-aligned path: 0..64 all used, 64..128 has 21 used.
        let bm = b.bitmap_block(0, 128, 16);
        assert_eq!(&bm[..8], &[0xff; 8]);
        assert_eq!(
            u64::from_le_bytes(bm[8..16].try_into().unwrap()),
            (1 << 21) - 1
        );
        assert_eq!(b.free_in(0, 200), 115);
        assert_eq!(b.free_in(60, 30), 5);
        assert_eq!(b.free_runs(), 1);
        b.mark(150, 1);
        assert_eq!(b.free_runs(), 2);
        let mut e = Blocks::new(70);
        assert_eq!(e.free_runs(), 1);
        e.mark(0, 1);
        e.mark(69, 1);
        assert_eq!(e.free_runs(), 1);
        e.mark(64, 1);
        assert_eq!(e.free_runs(), 2);
    }
}
