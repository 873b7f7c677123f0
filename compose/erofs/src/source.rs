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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrunk_and_grown_files_are_reported() {
        let data = Data::Bytes(vec![1, 2, 3]);
        let mut src = Source::open("/f", &data, 5).unwrap();
        let err = src.fill(&mut [0u8; 5]).unwrap_err();
        assert!(matches!(
            err,
            ErofsError::SizeChanged {
                expected: 5,
                actual: 3,
                ..
            }
        ));

        let mut src = Source::open("/f", &data, 2).unwrap();
        let mut buf = [0u8; 2];
        src.fill(&mut buf).unwrap();
        assert_eq!(buf, [1, 2]);
        let err = src.finish().unwrap_err();
        assert!(matches!(
            err,
            ErofsError::SizeChanged {
                expected: 2,
                actual: 3,
                ..
            }
        ));

        let mut src = Source::open("/f", &data, 3).unwrap();
        src.fill(&mut [0u8; 3]).unwrap();
        src.finish().unwrap();
    }
}
