//! Writing image files: header, length-prefixed protobuf entries (checked
//! for `required` fields first), raw payloads. File writers write under a
//! temporary name and rename on [`ImageWriter::finish`], so an interrupted
//! dump never leaves a complete-looking image behind.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::{Message, Name};

use super::entries::Payload;
use super::error::{ImageError, Result};
use super::kind::ImageKind;
use super::pb::Validate;
use super::reader::MAX_ENTRY_LEN;

/// Writes the entries of one image file.
pub struct ImageWriter<W: Write = BufWriter<File>> {
    path: PathBuf,
    out: W,
    offset: u64,
    kind: ImageKind,
    temp: Option<TempName>,
}

/// A file written under a temporary name: removed on drop unless committed.
struct TempName {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl TempName {
    fn commit(&mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.dest).map_err(|source| ImageError::Io {
            path: self.dest.clone(),
            op: "rename into place",
            source,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl ImageWriter {
    /// Creates the image `path` of `kind`. Data goes to `.<name>.part` in the
    /// same directory until [`finish`](Self::finish) renames it; dropping the
    /// writer unfinished deletes the partial file.
    pub fn create(path: impl AsRef<Path>, kind: ImageKind) -> Result<Self> {
        let dest = path.as_ref().to_path_buf();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dest.with_file_name(format!(".{name}.part"));
        let file = File::create(&temp).map_err(|source| ImageError::Io {
            path: temp.clone(),
            op: "create",
            source,
        })?;
        let guard = TempName {
            temp,
            dest: dest.clone(),
            committed: false,
        };
        let mut w = Self::from_writer(dest, BufWriter::new(file), kind)?;
        w.temp = Some(guard);
        Ok(w)
    }

    /// Flushes the data and moves the file to its final name.
    pub fn finish(mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|source| self.io("flush", source))?;
        if let Some(mut t) = self.temp.take() {
            t.commit()?;
        }
        tracing::debug!(path = %self.path.display(), bytes = self.offset, "image written");
        Ok(())
    }
}

impl<W: Write> ImageWriter<W> {
    /// Writes the header of `kind` to `out` (named `path` in errors).
    pub fn from_writer(path: impl Into<PathBuf>, out: W, kind: ImageKind) -> Result<Self> {
        let mut w = ImageWriter {
            path: path.into(),
            out,
            offset: 0,
            kind,
            temp: None,
        };
        w.put(&kind.header().bytes())?;
        Ok(w)
    }

    /// The final path of the image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image kind being written.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// Bytes written so far, header included.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Flushes and gives back the underlying writer (in-memory images).
    pub fn into_inner(mut self) -> Result<W> {
        self.out
            .flush()
            .map_err(|source| self.io("flush", source))?;
        Ok(self.out)
    }

    /// Appends one entry: u32 LE length, then the encoded message. Refuses a
    /// message with an unset `required` field.
    pub fn write_entry<M: Message + Name + Validate>(&mut self, msg: &M) -> Result<()> {
        if let Some(field) = msg.missing_required() {
            return Err(ImageError::MissingRequired {
                path: self.path.clone(),
                msg: M::NAME,
                offset: self.offset,
                field,
            });
        }
        let len = msg.encoded_len() as u64;
        if len > MAX_ENTRY_LEN {
            return Err(ImageError::Oversize {
                path: self.path.clone(),
                what: M::NAME,
                offset: self.offset,
                len,
                limit: MAX_ENTRY_LEN,
            });
        }
        let mut buf = Vec::with_capacity(4 + len as usize);
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        msg.encode(&mut buf).expect("Vec<u8> grows as needed");
        self.put(&buf)
    }

    /// Appends an entry and its raw payload, whose length must match the
    /// entry's record of it.
    pub fn write_entry_with_payload<M: Message + Name + Validate + Payload>(
        &mut self,
        msg: &M,
        data: &[u8],
    ) -> Result<()> {
        if msg.payload_len() != data.len() as u64 {
            return Err(ImageError::PayloadMismatch {
                path: self.path.clone(),
                msg: M::NAME,
                offset: self.offset,
                recorded: msg.payload_len(),
                actual: data.len() as u64,
            });
        }
        self.write_entry(msg)?;
        self.write_raw(data)
    }

    /// Appends each message of `msgs` as an entry.
    pub fn write_all<'a, M: Message + Name + Validate + 'a>(
        &mut self,
        msgs: impl IntoIterator<Item = &'a M>,
    ) -> Result<()> {
        msgs.into_iter().try_for_each(|m| self.write_entry(m))
    }

    /// Appends raw bytes (a payload following an entry, or page data).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.put(bytes)
    }

    /// Appends exactly `len` raw bytes read from `src`.
    pub fn copy_raw(&mut self, src: &mut impl Read, len: u64) -> Result<()> {
        let copied = std::io::copy(&mut src.take(len), &mut self.out)
            .map_err(|source| self.io("write", source))?;
        self.offset += copied;
        if copied < len {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                what: "payload source",
                offset: self.offset,
                wanted: len,
                got: copied,
            });
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|source| self.io("write", source))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn io(&self, op: &'static str, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
}
