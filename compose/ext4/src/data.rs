//! Reading file content in block-aligned chunks and finding its all-zero
//! blocks.
//!
//! All-zero 4 KiB blocks become holes, as with `mke2fs -d`: the file reads
//! the same, the image is smaller, and nothing needs writing there.

use std::fs::File;
use std::io::{ErrorKind, Read};

use kiln_fstree::Data;

use crate::error::Ext4Error;
use crate::geometry::BLOCK_SIZE;

/// Bytes read from a host file at a time (a multiple of the block size).
const CHUNK: usize = 1 << 20;
const BS: usize = BLOCK_SIZE as usize;

/// Calls `f(first_block, bytes)` for consecutive chunks of the content;
/// every chunk but the last is a whole number of blocks. Fails if a host
/// file's size is no longer `size`.
pub(crate) fn for_each_chunk(
    path: &str,
    data: &Data,
    size: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), Ext4Error>,
) -> Result<(), Ext4Error> {
    match data {
        Data::Bytes(b) => {
            for (i, chunk) in b.chunks(CHUNK).enumerate() {
                f((i * (CHUNK / BS)) as u64, chunk)?;
            }
            Ok(())
        }
        Data::Path(host) => {
            let io = |source| Ext4Error::ReadData {
                path: path.to_string(),
                host: host.clone(),
                source,
            };
            let changed = |actual| Ext4Error::FileChanged {
                path: path.to_string(),
                host: host.clone(),
                planned: size,
                actual,
            };
            let mut file = File::open(host).map_err(io)?;
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let mut filled = 0;
                while filled < CHUNK {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                if filled == 0 {
                    break;
                }
                if total + filled as u64 > size {
                    return Err(changed(total + filled as u64));
                }
                f(total / BLOCK_SIZE, &buf[..filled])?;
                total += filled as u64;
                if filled < CHUNK {
                    break;
                }
            }
            if total != size {
                return Err(changed(total));
            }
            Ok(())
        }
    }
}

fn is_zero(block: &[u8]) -> bool {
    // Real data usually differs from zero early; check a prefix before
    // the (vectorized) full scan.
    block.iter().take(16).all(|&b| b == 0) && block.iter().fold(0u8, |a, &b| a | b) == 0
}

/// The runs of non-zero blocks in `chunk` as (first block, count), block
/// indices relative to the chunk. A partial last block counts as a block.
pub(crate) fn data_runs(chunk: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, block) in chunk.chunks(BS).enumerate() {
        if is_zero(block) {
            continue;
        }
        match runs.last_mut() {
            Some((start, n)) if *start + *n == i => *n += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_skipped() {
        let mut v = vec![0u8; 5 * BS + 10];
        v[BS] = 1; // block 1
        v[2 * BS + 4095] = 1; // block 2
        v[5 * BS + 9] = 1; // partial block 5
        assert_eq!(data_runs(&v), vec![(1, 2), (5, 1)]);
        assert!(data_runs(&[0u8; 100]).is_empty());
    }

    #[test]
    fn chunks_a_host_file_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![3u8; CHUNK + 5]).unwrap();
        let mut seen = Vec::new();
        for_each_chunk("/f", &Data::Path(p.clone()), (CHUNK + 5) as u64, |b, c| {
            seen.push((b, c.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(0, CHUNK), ((CHUNK / BS) as u64, 5)]);
        let r = for_each_chunk("/f", &Data::Path(p), 7, |_, _| Ok(()));
        assert!(matches!(r, Err(Ext4Error::FileChanged { planned: 7, .. })));
    }
}
