//! Reading image files: header check, length-prefixed protobuf entries with
//! size limits and `required` checks, raw payloads following entries.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use prost::{Message, Name};

use super::entries::Payload;
use super::error::{ImageError, Result};
use super::kind::{Header, ImageKind, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use super::pb::Validate;

/// Largest entry (protobuf message) accepted, in bytes.
pub const MAX_ENTRY_LEN: u64 = 64 << 20;
/// Largest raw payload [`ImageReader::read_raw`] loads into memory; larger
/// payloads must be streamed with [`ImageReader::copy_raw`].
pub const MAX_RAW_LEN: u64 = 256 << 20;

/// Reads the entries of one image file, checking its header first.
pub struct ImageReader<R = BufReader<File>> {
    path: PathBuf,
    inner: R,
    offset: u64,
    kind: ImageKind,
}

impl ImageReader {
    /// Opens `path` as an image of `kind` and checks its header.
    pub fn open(path: impl AsRef<Path>, kind: ImageKind) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ImageError::Io {
            path: path.into(),
            op: "open",
            source,
        })?;
        Self::from_reader(path, BufReader::new(file), kind)
    }

    /// Opens `path`, working out its kind from the header (and the file
    /// name where kinds share a magic). `pages-N.img` files, which have no
    /// header, are recognised by name only.
    pub fn open_detect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some((ImageKind::Pages, _)) = ImageKind::from_file_name(name) {
            return Self::open(path, ImageKind::Pages);
        }
        let mut head = Vec::with_capacity(8);
        File::open(path)
            .and_then(|f| f.take(8).read_to_end(&mut head))
            .map_err(|source| ImageError::Io {
                path: path.into(),
                op: "open",
                source,
            })?;
        match ImageKind::detect(name, &head) {
            Some(kind) => Self::open(path, kind),
            None => Err(ImageError::UnknownKind {
                path: path.into(),
                head,
            }),
        }
    }
}

impl<R: Read> ImageReader<R> {
    /// Wraps `inner` (named `path` in errors) and checks the header of `kind`.
    pub fn from_reader(path: impl Into<PathBuf>, inner: R, kind: ImageKind) -> Result<Self> {
        let mut r = ImageReader {
            path: path.into(),
            inner,
            offset: 0,
            kind,
        };
        match kind.header() {
            Header::Raw => {}
            Header::Single(m) => r.expect_magic(m, kind.stem())?,
            Header::Common(m) => {
                r.expect_magic(IMG_COMMON_MAGIC, "image class, IMG_COMMON")?;
                r.expect_magic(m, kind.stem())?;
            }
            Header::Service(m) => {
                r.expect_magic(IMG_SERVICE_MAGIC, "image class, IMG_SERVICE")?;
                r.expect_magic(m, kind.stem())?;
            }
        }
        Ok(r)
    }

    /// The file this reader reads (as named in errors).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image kind whose header was checked.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// Bytes consumed so far, header included.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the next entry as `M`; `Ok(None)` at a clean end of file.
    /// Rejects truncated and oversized entries, undecodable bytes and
    /// entries missing a `required` field.
    pub fn read_entry<M: Message + Default + Name + Validate>(&mut self) -> Result<Option<M>> {
        let start = self.offset;
        let mut len = [0u8; 4];
        let got = self.fill(&mut len)?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(self.truncated("entry length", start, 4, got));
        }
        let len = u64::from(u32::from_le_bytes(len));
        if len > MAX_ENTRY_LEN {
            return Err(ImageError::Oversize {
                path: self.path.clone(),
                what: M::NAME,
                offset: start,
                len,
                limit: MAX_ENTRY_LEN,
            });
        }
        let buf = self.take(len, M::NAME, start)?;
        let msg = M::decode(buf.as_slice()).map_err(|source| ImageError::Decode {
            path: self.path.clone(),
            msg: M::NAME,
            offset: start,
            source,
        })?;
        if let Some(field) = msg.missing_required() {
            return Err(ImageError::MissingRequired {
                path: self.path.clone(),
                msg: M::NAME,
                offset: start,
                field,
            });
        }
        Ok(Some(msg))
    }

    /// Reads the next entry and the raw payload following it (pipe data,
    /// ghost file chunks); `Ok(None)` at a clean end of file.
    pub fn read_entry_with_payload<M: Message + Default + Name + Validate + Payload>(
        &mut self,
    ) -> Result<Option<(M, Vec<u8>)>> {
        let Some(m) = self.read_entry::<M>()? else {
            return Ok(None);
        };
        let data = self.read_raw(m.payload_len())?;
        Ok(Some((m, data)))
    }

    /// Reads the next entry, which must exist.
    pub fn read_next<M: Message + Default + Name + Validate>(&mut self) -> Result<M> {
        self.read_entry()?.ok_or_else(|| ImageError::Empty {
            path: self.path.clone(),
            msg: M::NAME,
        })
    }

    /// Reads an image holding exactly one entry (`mm`, `fs`, `inventory`...).
    pub fn read_one<M: Message + Default + Name + Validate>(&mut self) -> Result<M> {
        let t = std::time::Instant::now();
        let m = self.read_next()?;
        self.expect_eof(M::NAME)?;
        tracing::debug!(path = %self.path.display(), bytes = self.offset, us = t.elapsed().as_micros() as u64, "image read: one {}", M::NAME);
        Ok(m)
    }

    /// Reads every remaining entry (for images without raw payloads).
    pub fn read_all<M: Message + Default + Name + Validate>(&mut self) -> Result<Vec<M>> {
        let t = std::time::Instant::now();
        let mut v = Vec::new();
        while let Some(m) = self.read_entry()? {
            v.push(m);
        }
        tracing::debug!(path = %self.path.display(), bytes = self.offset, us = t.elapsed().as_micros() as u64, "image read: {} {}", v.len(), M::NAME);
        Ok(v)
    }

    /// Fails unless the file ends here.
    pub fn expect_eof(&mut self, after: &'static str) -> Result<()> {
        let at = self.offset;
        let mut b = [0u8; 1];
        if self.fill(&mut b)? != 0 {
            return Err(ImageError::Trailing {
                path: self.path.clone(),
                msg: after,
                offset: at,
            });
        }
        Ok(())
    }

    /// Reads `len` raw payload bytes (pipe data, ghost file contents).
    pub fn read_raw(&mut self, len: u64) -> Result<Vec<u8>> {
        if len > MAX_RAW_LEN {
            return Err(ImageError::Oversize {
                path: self.path.clone(),
                what: "raw payload",
                offset: self.offset,
                len,
                limit: MAX_RAW_LEN,
            });
        }
        self.take(len, "raw payload", self.offset)
    }

    /// Fills `buf` entirely with raw bytes (e.g. pages).
    pub fn read_raw_into(&mut self, buf: &mut [u8]) -> Result<()> {
        let start = self.offset;
        let got = self.fill(buf)?;
        if got < buf.len() {
            return Err(self.truncated("raw payload", start, buf.len(), got));
        }
        Ok(())
    }

    /// Streams `len` raw payload bytes into `out`, without a size limit.
    pub fn copy_raw(&mut self, len: u64, out: &mut impl Write) -> Result<()> {
        let start = self.offset;
        let copied = std::io::copy(&mut (&mut self.inner).take(len), out).map_err(|source| {
            ImageError::Io {
                path: self.path.clone(),
                op: "copy payload",
                source,
            }
        })?;
        self.offset += copied;
        if copied < len {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                what: "raw payload",
                offset: start,
                wanted: len,
                got: copied,
            });
        }
        Ok(())
    }

    /// Reads exactly `len` bytes into a fresh vector, growing it only as
    /// data arrives (a bogus length cannot force a huge allocation).
    /// `start` is the offset reported if the data is cut short.
    fn take(&mut self, len: u64, what: &'static str, start: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len.min(64 << 10) as usize);
        let got = (&mut self.inner)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Io {
                path: self.path.clone(),
                op: "read",
                source,
            })?;
        self.offset += got as u64;
        if (got as u64) < len {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                what,
                offset: start,
                wanted: len,
                got: got as u64,
            });
        }
        Ok(buf)
    }

    /// Reads until `buf` is full or the file ends; returns the count read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ImageError::Io {
                        path: self.path.clone(),
                        op: "read",
                        source,
                    })
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    fn expect_magic(&mut self, expected: u32, what: &'static str) -> Result<()> {
        let start = self.offset;
        let mut w = [0u8; 4];
        let got = self.fill(&mut w)?;
        if got < 4 {
            return Err(self.truncated("header", start, 4, got));
        }
        let found = u32::from_le_bytes(w);
        if found != expected {
            return Err(ImageError::BadMagic {
                path: self.path.clone(),
                found,
                expected,
                what,
            });
        }
        Ok(())
    }

    fn truncated(&self, what: &'static str, offset: u64, wanted: usize, got: usize) -> ImageError {
        ImageError::Truncated {
            path: self.path.clone(),
            what,
            offset,
            wanted: wanted as u64,
            got: got as u64,
        }
    }
}
