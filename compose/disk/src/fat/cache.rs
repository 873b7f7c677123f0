//! A write-back block cache between fatfs and the output.
//!
//! fatfs 0.3 does no buffering: it writes file data one cluster at a time
//! (512 bytes on boot-sized FAT32) and reads and writes FAT entries 4 bytes
//! at a time, so a 24 MiB kernel costs hundreds of thousands of syscalls.
//! This cache keeps the 4 KiB blocks fatfs writes in memory and writes them
//! out in order, coalesced, when it holds [`FLUSH_BYTES`] or at the end.
//! Every block fatfs wrote is written, zeros included (a zeroed FAT must
//! overwrite whatever a used device held).

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: u64 = 4096;
/// Memory bound: dirty blocks are written out beyond this.
const FLUSH_BYTES: usize = 64 << 20;

pub(super) struct BlockCache<'a, S> {
    inner: &'a mut S,
    dirty: BTreeMap<u64, Vec<u8>>,
    pos: u64,
    /// The stream's length, including blocks not yet written out.
    len: u64,
}

impl<'a, S: Read + Write + Seek> BlockCache<'a, S> {
    pub fn new(inner: &'a mut S) -> io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        Ok(BlockCache {
            inner,
            dirty: BTreeMap::new(),
            pos: 0,
            len,
        })
    }

    /// Block `b` as the stream holds it now.
    fn load(&mut self, b: u64) -> io::Result<Vec<u8>> {
        if let Some(data) = self.dirty.get(&b) {
            return Ok(data.clone());
        }
        let mut data = vec![0u8; BLOCK as usize];
        self.inner.seek(SeekFrom::Start(b * BLOCK))?;
        let mut n = 0;
        while n < data.len() {
            match self.inner.read(&mut data[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(data)
    }

    /// Writes every dirty block to the output, adjacent blocks in one
    /// write, the last one cut at the stream's length.
    pub fn flush_blocks(&mut self) -> io::Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        for (b, data) in dirty {
            if !run.is_empty() && b != run_start + run.len() as u64 / BLOCK {
                self.write_run(run_start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = b;
            }
            run.extend_from_slice(&data);
        }
        if !run.is_empty() {
            self.write_run(run_start, &run)?;
        }
        self.inner.flush()
    }

    fn write_run(&mut self, block: u64, run: &[u8]) -> io::Result<()> {
        let at = block * BLOCK;
        let n = (run.len() as u64).min(self.len.saturating_sub(at)) as usize;
        self.inner.seek(SeekFrom::Start(at))?;
        self.inner.write_all(&run[..n])
    }
}

impl<S: Read + Write + Seek> Read for BlockCache<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let mut done = 0;
        while done < n {
            let at = self.pos + done as u64;
            let (b, off) = (at / BLOCK, (at % BLOCK) as usize);
            let k = (n - done).min(BLOCK as usize - off);
            match self.dirty.get(&b) {
                Some(data) => buf[done..done + k].copy_from_slice(&data[off..off + k]),
                None => {
                    let data = self.load(b)?;
                    buf[done..done + k].copy_from_slice(&data[off..off + k]);
                }
            }
            done += k;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: Read + Write + Seek> Write for BlockCache<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let at = self.pos + done as u64;
            let (b, off) = (at / BLOCK, (at % BLOCK) as usize);
            let k = (buf.len() - done).min(BLOCK as usize - off);
            if !self.dirty.contains_key(&b) {
                let data = if k == BLOCK as usize {
                    vec![0u8; BLOCK as usize]
                } else {
                    self.load(b)?
                };
                self.dirty.insert(b, data);
            }
            if let Some(data) = self.dirty.get_mut(&b) {
                data[off..off + k].copy_from_slice(&buf[done..done + k]);
            }
            done += k;
        }
        self.pos += done as u64;
        self.len = self.len.max(self.pos);
        if self.dirty.len() * BLOCK as usize >= FLUSH_BYTES {
            self.flush_blocks()?;
        }
        Ok(done)
    }

    /// fatfs calls this after metadata updates; blocks stay cached until
    /// [`BlockCache::flush_blocks`] or the memory bound.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Read + Write + Seek> Seek for BlockCache<'_, S> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn behaves_like_the_stream_it_caches() {
        let mut plain = Cursor::new(vec![9u8; 10_000]);
        let mut inner = Cursor::new(vec![9u8; 10_000]);
        let ops: &[(u64, usize)] = &[(0, 3), (4094, 5), (8192, 4096), (9990, 30), (100, 8000)];
        {
            let mut c = BlockCache::new(&mut inner).unwrap();
            for (i, &(at, n)) in ops.iter().enumerate() {
                let data = vec![i as u8; n];
                plain.seek(SeekFrom::Start(at)).unwrap();
                plain.write_all(&data).unwrap();
                c.seek(SeekFrom::Start(at)).unwrap();
                c.write_all(&data).unwrap();
                let mut a = vec![0u8; 200];
                let mut b = vec![0u8; 200];
                plain.seek(SeekFrom::Start(at.saturating_sub(50))).unwrap();
                c.seek(SeekFrom::Start(at.saturating_sub(50))).unwrap();
                let na = plain.read(&mut a).unwrap();
                let nb = c.read(&mut b).unwrap();
                assert_eq!((na, &a[..na]), (nb, &b[..nb]));
            }
            assert_eq!(c.seek(SeekFrom::End(0)).unwrap(), 12_288);
            assert_eq!(plain.get_ref().len(), 12_288);
            c.flush_blocks().unwrap();
        }
        assert_eq!(inner.into_inner(), plain.into_inner());
    }
}
