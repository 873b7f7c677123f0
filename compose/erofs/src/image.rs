//! The output stream: buffered, counting what was written (so block
//! addresses are known), and hashing it for the derived UUID. File bodies
//! read in parallel enter the hash as their own digests (`write_hashed`).

use std::io::{BufWriter, Seek, Write};

use crate::error::ErofsError;
use crate::format::BLOCK_SIZE;

pub struct Image<'w, W: Write + Seek> {
    pub out: BufWriter<&'w mut W>,
    /// Hash of everything written through `write`; `None` when the UUID is
    /// given and no hash is needed.
    pub hasher: Option<blake3::Hasher>,
    /// Bytes since the image start, the reserved superblock block included.
    written: u64,
}

impl<'w, W: Write + Seek> Image<'w, W> {
    /// Starts an image at the output's current position, with its first
    /// block (the superblock's, written last) reserved and not hashed.
    pub fn new(out: &'w mut W, hash: bool) -> Result<Image<'w, W>, ErofsError> {
        let mut out = BufWriter::with_capacity(1 << 20, out);
        out.write_all(&[0u8; BLOCK_SIZE])
            .map_err(ErofsError::Write)?;
        Ok(Image {
            out,
            hasher: hash.then(blake3::Hasher::new),
            written: BLOCK_SIZE as u64,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ErofsError> {
        self.out.write_all(bytes).map_err(ErofsError::Write)?;
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes bytes whose blake3 hash the caller already has (computed in
    /// parallel); the image hash takes the 32-byte digest in their place,
    /// which keeps it a function of the content at a fraction of the cost.
    pub fn write_hashed(&mut self, bytes: &[u8], digest: &blake3::Hash) -> Result<(), ErofsError> {
        self.out.write_all(bytes).map_err(ErofsError::Write)?;
        if let Some(h) = &mut self.hasher {
            h.update(digest.as_bytes());
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Zero-fills up to the next block boundary.
    pub fn pad(&mut self) -> Result<(), ErofsError> {
        let partial = (self.written % BLOCK_SIZE as u64) as usize;
        if partial > 0 {
            self.write(&[0u8; BLOCK_SIZE][partial..])?;
        }
        Ok(())
    }

    /// The next block to be written.
    pub fn block(&self) -> Result<u32, ErofsError> {
        let blocks = self.written.div_ceil(BLOCK_SIZE as u64);
        u32::try_from(blocks).map_err(|_| ErofsError::ImageTooLarge { blocks })
    }
}
