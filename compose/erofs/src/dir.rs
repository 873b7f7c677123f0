//! Directory content: blocks of entries, each block self-contained.
//!
//! A block starts with the array of 12-byte dirents and is followed by their
//! names; the first entry's `nameoff` gives the count, and a name runs to
//! the next entry's `nameoff` (the last one to the end of the block's data,
//! or the first NUL). Entries are sorted across all blocks, so the kernel
//! can binary-search blocks by their first name and then within a block.

use crate::format::{self, BLOCK_SIZE, DIRENT_SIZE};
use crate::plan::Entry;

/// Splits sorted entries into blocks: as many as fit, in order.
fn blocks<'a, 't>(entries: &'a [Entry<'t>]) -> impl Iterator<Item = &'a [Entry<'t>]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut used = 0;
        let n = rest
            .iter()
            .take_while(|e| {
                used += DIRENT_SIZE + e.name.len();
                used <= BLOCK_SIZE
            })
            .count();
        let (block, tail) = rest.split_at(n);
        rest = tail;
        Some(block)
    })
}

fn used(block: &[Entry<'_>]) -> usize {
    block.iter().map(|e| DIRENT_SIZE + e.name.len()).sum()
}

/// The directory's `i_size`: full blocks, plus what the last one uses.
pub fn size(entries: &[Entry<'_>]) -> u64 {
    let mut size = 0;
    let mut last = 0;
    for block in blocks(entries) {
        size += BLOCK_SIZE * usize::from(last > 0);
        last = used(block);
    }
    (size + last) as u64
}

/// The directory's content, `size(entries)` bytes: blocks with unused
/// bytes zeroed, so a block's last name ends at the first NUL.
pub fn encode(entries: &[Entry<'_>], nids: &[u64], file_types: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in blocks(entries) {
        let start = out.len();
        let mut nameoff = block.len() * DIRENT_SIZE;
        for e in block {
            // A block holds at most 4096 bytes, so offsets fit 16 bits.
            format::encode_dirent(&mut out, nids[e.inode], nameoff as u16, file_types[e.inode]);
            nameoff += e.name.len();
        }
        for e in block {
            out.extend_from_slice(e.name);
        }
        out.resize(start + BLOCK_SIZE, 0);
    }
    out.truncate(size(entries) as usize);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fill_blocks_in_order_and_the_last_is_partial() {
        // 12 + 9 = 21 bytes an entry: 195 fill 4095 bytes of a block.
        let names: Vec<Vec<u8>> = (0..400)
            .map(|i| format!("name-{i:04}").into_bytes())
            .collect();
        let entries: Vec<Entry<'_>> = names
            .iter()
            .enumerate()
            .map(|(inode, name)| Entry { name, inode })
            .collect();
        let nids: Vec<u64> = (0..400).map(|i| 1000 + i).collect();
        let bytes = encode(&entries, &nids, &[FT; 400]);
        assert_eq!(size(&entries), (2 * BLOCK_SIZE + 10 * 21) as u64);
        assert_eq!(bytes.len() as u64, size(&entries));

        let second = &bytes[BLOCK_SIZE..];
        assert_eq!(second[..8], 1195u64.to_le_bytes());
        let nameoff = u16::from_le_bytes([second[8], second[9]]) as usize;
        assert_eq!(nameoff, 195 * DIRENT_SIZE);
        assert_eq!(second[10], FT);
        assert_eq!(&second[nameoff..nameoff + 9], b"name-0195");
        // The first block's last name is followed by zeros.
        assert_eq!(&bytes[4095 - 9..4095], b"name-0194");
        assert_eq!(bytes[4095], 0);
    }

    const FT: u8 = format::FT_REG_FILE;
}
