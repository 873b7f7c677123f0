//! Positioned writes to the image, coalesced into large sequential writes.
//!
//! Nothing is written for free space, unused inode-table blocks or the
//! journal body: on a new or truncated file those read back as zeros and
//! stay sparse. Everything the kernel or e2fsck reads before writing it
//! first is written explicitly (see the crate docs), so the image can also
//! be written straight to a used device.

use std::io::{Seek, SeekFrom, Write};

use crate::error::Ext4Error;

const COALESCE: usize = 1 << 20;

pub(crate) struct Sink<'w, W: Write + Seek> {
    out: &'w mut W,
    /// Where the output's position is (after the last flushed write).
    pos: Option<u64>,
    /// Pending bytes, to be written at `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    written: u64,
    end: u64,
}

impl<'w, W: Write + Seek> Sink<'w, W> {
    pub fn new(out: &'w mut W) -> Self {
        Sink {
            out,
            pos: None,
            buf: Vec::with_capacity(COALESCE),
            buf_at: 0,
            written: 0,
            end: 0,
        }
    }

    /// Bytes written so far (holes excluded).
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Ext4Error> {
        if data.is_empty() {
            return Ok(());
        }
        if self.buf_at + self.buf.len() as u64 != offset || self.buf.len() + data.len() > COALESCE {
            self.flush()?;
            self.buf_at = offset;
        }
        if data.len() >= COALESCE {
            // Large writes go straight out.
            self.raw(offset, data)?;
            self.buf_at = offset + data.len() as u64;
        } else {
            self.buf.extend_from_slice(data);
        }
        self.written += data.len() as u64;
        self.end = self.end.max(offset + data.len() as u64);
        Ok(())
    }

    fn raw(&mut self, offset: u64, data: &[u8]) -> Result<(), Ext4Error> {
        let err = |source| Ext4Error::Write { offset, source };
        if self.pos != Some(offset) {
            self.out.seek(SeekFrom::Start(offset)).map_err(err)?;
        }
        self.out.write_all(data).map_err(err)?;
        self.pos = Some(offset + data.len() as u64);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Ext4Error> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            let at = self.buf_at;
            self.raw(at, &buf)?;
            self.buf = buf;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes and makes the output `size` bytes long (a hole at the end
    /// still counts), then flushes the writer.
    pub fn finish(mut self, size: u64) -> Result<(), Ext4Error> {
        self.flush()?;
        if self.end < size {
            self.raw(size - 1, &[0])?;
        }
        self.out.flush().map_err(|source| Ext4Error::Write {
            offset: size,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn coalesces_and_extends() {
        let mut c = Cursor::new(Vec::new());
        let mut s = Sink::new(&mut c);
        s.write_at(10, b"ab").unwrap();
        s.write_at(12, b"cd").unwrap();
        s.write_at(4, b"x").unwrap();
        s.write_at(0, &vec![9u8; COALESCE + 1]).unwrap();
        assert_eq!(s.written(), 5 + COALESCE as u64 + 1);
        s.finish(COALESCE as u64 + 100).unwrap();
        let v = c.into_inner();
        assert_eq!(v.len(), COALESCE + 100);
        assert_eq!(v[COALESCE], 9);
        assert_eq!(v[COALESCE + 1], 0);
        assert_eq!(v[COALESCE + 99], 0);
    }
}
