//! Reading a regular file's content, from memory or the build host, and
//! noticing when it no longer has the size the image was planned with.

use std::fs::File;
use std::io::{self, Read};

use kiln_fstree::Data;

use crate::error::ErofsError;
use crate::plan::read_error;

pub struct Source<'a> {
    path: &'a str,
    data: &'a Data,
    reader: Box<dyn Read + Send + 'a>,
    expected: u64,
    consumed: u64,
}

impl<'a> Source<'a> {
    pub fn open(path: &'a str, data: &'a Data, expected: u64) -> Result<Source<'a>, ErofsError> {
        let reader: Box<dyn Read + Send + 'a> = match data {
            Data::Bytes(b) => Box::new(b.as_slice()),
            Data::Path(p) => Box::new(File::open(p).map_err(|e| read_error(path, data, e))?),
        };
        Ok(Source {
            path,
            data,
            reader,
            expected,
            consumed: 0,
        })
    }

    /// The tree path, for error messages.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// Fills `buf` completely; running out early means the file shrank.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<(), ErofsError> {
        let mut done = 0;
        while done < buf.len() {
            match self.reader.read(&mut buf[done..]) {
                Ok(0) => {
                    return Err(ErofsError::SizeChanged {
                        path: self.path.to_string(),
                        expected: self.expected,
                        actual: self.consumed + done as u64,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(self.path, self.data, e)),
            }
        }
        self.consumed += done as u64;
        Ok(())
    }

    /// Checks that everything was read: more data means the file grew.
    pub fn finish(mut self) -> Result<(), ErofsError> {
        let extra = io::copy(&mut self.reader, &mut io::sink())
            .map_err(|e| read_error(self.path, self.data, e))?;
        if extra > 0 || self.consumed != self.expected {
            return Err(ErofsError::SizeChanged {
                path: self.path.to_string(),
                expected: self.expected,
                actual: self.consumed + extra,
            });
        }
        Ok(())
    }
}
