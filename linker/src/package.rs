//! The restorer package format: a flattened, pre-relocated image of the
//! blob plus the tables a loader needs.
//!
//! All integers are little-endian. Layout:
//!
//! ```text
//!  offset  size  field
//!  ------  ----  ------------------------------------------------------
//!       0     8  magic  "CRIUPIE\0"
//!       8     4  version (1)
//!      12     4  header size (64)
//!      16     8  image size: bytes of image stored in the file
//!      24     8  mem size: bytes the loaded blob spans (image + bss),
//!                a multiple of the page size
//!      32     4  segment count   S
//!      36     4  relocation count R
//!      40     4  entry count     E
//!      44     4  reserved (0)
//!      48     8  image offset in the file (= 64 + 24*S + 8*R + 40*E)
//!      56     8  reserved (0)
//!      64  24*S  segments:    { offset u64, size u64, prot u32, reserved u32 }
//!                              page-aligned ranges of the loaded blob and
//!                              their protection (PROT_READ=1, WRITE=2, EXEC=4)
//!       …   8*R  relocations: { offset u64 } of 8-byte slots; the slot already
//!                              holds the addend, the loader adds the load base
//!       …  40*E  entries:     { name [u8; 32] NUL-padded, offset u64 }
//!       …     …  image bytes (image size); mem size - image size more bytes
//!                              of zeroes (bss) follow once loaded
//! ```
//!
//! [`Package::parse`] checks everything a loader relies on: offsets in
//! range, alignment, no writable+executable segment, entries in executable
//! segments. Loading: copy the image to a page-aligned `base`, zero up to
//! mem size, add `base` to every relocation slot, then `mprotect` each
//! segment (ranges no segment covers get no access).

use std::collections::HashSet;

/// Page size the format assumes (x86_64).
pub const PAGE_SIZE: u64 = 4096;
/// The file magic.
pub const MAGIC: [u8; 8] = *b"CRIUPIE\0";
/// The format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Bytes reserved for an entry name (NUL-padded, at most 31 used). Matches
/// `restorer_pie::entry::ENTRY_NAME_LEN`.
pub const ENTRY_NAME_LEN: usize = 32;
/// Upper bound on a blob's loaded size, to refuse absurd headers early.
pub const MAX_MEM_SIZE: u64 = 256 << 20;

const HEADER_SIZE: usize = 64;
const SEGMENT_SIZE: usize = 24;
const RELOC_SIZE: usize = 8;
const ENTRY_SIZE: usize = ENTRY_NAME_LEN + 8;

/// Memory protection of a segment: a subset of `PROT_READ | PROT_WRITE |
/// PROT_EXEC` with the kernel's bit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prot(pub u32);

impl Prot {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const EXEC: u32 = 4;

    pub fn readable(self) -> bool {
        self.0 & Self::READ != 0
    }
    pub fn writable(self) -> bool {
        self.0 & Self::WRITE != 0
    }
    pub fn executable(self) -> bool {
        self.0 & Self::EXEC != 0
    }
}

impl std::fmt::Display for Prot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        write!(f, "{}{}{}", flag(self.readable(), 'r'), flag(self.writable(), 'w'), flag(self.executable(), 'x'))
    }
}

/// A page-aligned range of the loaded blob and its protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset from the load base (page multiple).
    pub offset: u64,
    /// Length in bytes (page multiple, non-zero).
    pub size: u64,
    pub prot: Prot,
}

/// A named entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: String,
    /// Offset of the code from the load base.
    pub offset: u64,
}

/// A validated restorer package. Construct with [`Package::new`] or
/// [`Package::parse`]; every instance satisfies the format's invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    image: Vec<u8>,
    mem_size: u64,
    segments: Vec<Segment>,
    relocs: Vec<u64>,
    entries: Vec<EntryPoint>,
}

/// Why a package (file or parts) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("package truncated: {what} needs {need} bytes, only {have} present")]
    Truncated { what: &'static str, need: u64, have: u64 },
    #[error("not a restorer package (bad magic {found:02x?})")]
    BadMagic { found: [u8; 8] },
    #[error("unsupported package version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error("bad header size {0} (expected {HEADER_SIZE})")]
    BadHeaderSize(u32),
    #[error("reserved header field is {0:#x}, expected 0")]
    ReservedNonZero(u64),
    #[error("image offset {found} does not follow the tables (expected {expected})")]
    BadImageOffset { found: u64, expected: u64 },
    #[error("{extra} trailing bytes after the image")]
    TrailingBytes { extra: u64 },
    #[error("mem size {0:#x} is zero, not a page multiple or above {MAX_MEM_SIZE:#x}")]
    BadMemSize(u64),
    #[error("image of {image} bytes is larger than the mem size {mem}")]
    ImageLargerThanMem { image: u64, mem: u64 },
    #[error("no segments")]
    NoSegments,
    #[error("segment {index} ({offset:#x}+{size:#x}) is empty, not page aligned or past the mem size")]
    BadSegment { index: usize, offset: u64, size: u64 },
    #[error("segment {index} at {offset:#x} overlaps or precedes the one before it")]
    SegmentsOverlap { index: usize, offset: u64 },
    #[error("segment {index} has invalid protection bits {prot:#x}")]
    BadProt { index: usize, prot: u32 },
    #[error("segment {index} at {offset:#x} is both writable and executable")]
    WritableAndExecutable { index: usize, offset: u64 },
    #[error("relocation at {offset:#x} is not 8-byte aligned")]
    RelocMisaligned { offset: u64 },
    #[error("relocation at {offset:#x} is outside the image ({image} bytes)")]
    RelocOutOfRange { offset: u64, image: u64 },
    #[error("relocation at {offset:#x} is not inside any segment")]
    RelocOutsideSegments { offset: u64 },
    #[error("relocation offsets are not strictly increasing at {offset:#x}")]
    RelocsNotSorted { offset: u64 },
    #[error("no entry points")]
    NoEntries,
    #[error("entry {index}: bad name (must be 1..=31 printable ASCII bytes, NUL-padded)")]
    BadEntryName { index: usize },
    #[error("entry `{0}` appears twice")]
    DuplicateEntry(String),
    #[error("entry `{name}` at {offset:#x} is not inside an executable segment")]
    EntryNotExecutable { name: String, offset: u64 },
    #[error("too many {what} ({count})")]
    TooMany { what: &'static str, count: usize },
}

impl Package {
    /// Builds a package from its parts, checking every invariant.
    pub fn new(
        image: Vec<u8>,
        mem_size: u64,
        segments: Vec<Segment>,
        relocs: Vec<u64>,
        entries: Vec<EntryPoint>,
    ) -> Result<Self, PackageError> {
        let pkg = Self { image, mem_size, segments, relocs, entries };
        pkg.validate()?;
        Ok(pkg)
    }

    /// The image bytes (relocation slots hold addends, not addresses).
    pub fn image(&self) -> &[u8] {
        &self.image
    }
    /// Bytes the loaded blob spans (page multiple, >= image length).
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// Offsets of the 8-byte slots to which the load base is added.
    pub fn relocs(&self) -> &[u64] {
        &self.relocs
    }
    pub fn entries(&self) -> &[EntryPoint] {
        &self.entries
    }
    /// The offset of entry `name` from the load base.
    pub fn entry(&self, name: &str) -> Option<u64> {
        self.entries.iter().find(|e| e.name == name).map(|e| e.offset)
    }

    /// A one-paragraph human summary (sizes, counts, entries).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "restorer package: image {} bytes, mem {} bytes, {} segments, {} relocations, {} entries\n",
            self.image.len(),
            self.mem_size,
            self.segments.len(),
            self.relocs.len(),
            self.entries.len()
        );
        for seg in &self.segments {
            s.push_str(&format!("  segment {:#08x}+{:#07x} {}\n", seg.offset, seg.size, seg.prot));
        }
        for e in &self.entries {
            s.push_str(&format!("  entry   {:#08x} {}\n", e.offset, e.name));
        }
        s
    }

    fn validate(&self) -> Result<(), PackageError> {
        let mem = self.mem_size;
        if mem == 0 || !mem.is_multiple_of(PAGE_SIZE) || mem > MAX_MEM_SIZE {
            return Err(PackageError::BadMemSize(mem));
        }
        let image = self.image.len() as u64;
        if image > mem {
            return Err(PackageError::ImageLargerThanMem { image, mem });
        }
        if self.segments.is_empty() {
            return Err(PackageError::NoSegments);
        }
        let mut end = 0u64;
        for (index, seg) in self.segments.iter().enumerate() {
            let (offset, size) = (seg.offset, seg.size);
            let in_range = offset.checked_add(size).is_some_and(|e| e <= mem);
            if size == 0 || offset % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 || !in_range {
                return Err(PackageError::BadSegment { index, offset, size });
            }
            if index > 0 && offset < end {
                return Err(PackageError::SegmentsOverlap { index, offset });
            }
            if seg.prot.0 & !(Prot::READ | Prot::WRITE | Prot::EXEC) != 0 {
                return Err(PackageError::BadProt { index, prot: seg.prot.0 });
            }
            if seg.prot.writable() && seg.prot.executable() {
                return Err(PackageError::WritableAndExecutable { index, offset });
            }
            end = offset + size;
        }
        let mut prev: Option<u64> = None;
        for &offset in &self.relocs {
            if offset % 8 != 0 {
                return Err(PackageError::RelocMisaligned { offset });
            }
            if offset.checked_add(8).is_none_or(|e| e > image) {
                return Err(PackageError::RelocOutOfRange { offset, image });
            }
            if !self.segments.iter().any(|s| offset >= s.offset && offset + 8 <= s.offset + s.size) {
                return Err(PackageError::RelocOutsideSegments { offset });
            }
            if prev.is_some_and(|p| p >= offset) {
                return Err(PackageError::RelocsNotSorted { offset });
            }
            prev = Some(offset);
        }
        if self.entries.is_empty() {
            return Err(PackageError::NoEntries);
        }
        let mut seen = HashSet::new();
        for (index, e) in self.entries.iter().enumerate() {
            let ok = !e.name.is_empty() && e.name.len() < ENTRY_NAME_LEN && e.name.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(PackageError::BadEntryName { index });
            }
            if !seen.insert(e.name.as_str()) {
                return Err(PackageError::DuplicateEntry(e.name.clone()));
            }
            let exec = self.segments.iter().any(|s| s.prot.executable() && e.offset >= s.offset && e.offset < s.offset + s.size);
            if !exec {
                return Err(PackageError::EntryNotExecutable { name: e.name.clone(), offset: e.offset });
            }
        }
        for (what, count) in [("segments", self.segments.len()), ("relocations", self.relocs.len()), ("entries", self.entries.len())] {
            if u32::try_from(count).is_err() {
                return Err(PackageError::TooMany { what, count });
            }
        }
        Ok(())
    }

    /// Serialises the package (see the module doc for the layout).
    pub fn to_bytes(&self) -> Vec<u8> {
        let tables = SEGMENT_SIZE * self.segments.len() + RELOC_SIZE * self.relocs.len() + ENTRY_SIZE * self.entries.len();
        let image_off = (HEADER_SIZE + tables) as u64;
        let mut out = Vec::with_capacity(HEADER_SIZE + tables + self.image.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        out.extend_from_slice(&(self.image.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.mem_size.to_le_bytes());
        // validate() bounds every count to u32.
        for count in [self.segments.len(), self.relocs.len(), self.entries.len(), 0] {
            out.extend_from_slice(&(count as u32).to_le_bytes());
        }
        out.extend_from_slice(&image_off.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        for seg in &self.segments {
            out.extend_from_slice(&seg.offset.to_le_bytes());
            out.extend_from_slice(&seg.size.to_le_bytes());
            out.extend_from_slice(&seg.prot.0.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        for r in &self.relocs {
            out.extend_from_slice(&r.to_le_bytes());
        }
        for e in &self.entries {
            let mut name = [0u8; ENTRY_NAME_LEN];
            name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            out.extend_from_slice(&name);
            out.extend_from_slice(&e.offset.to_le_bytes());
        }
        out.extend_from_slice(&self.image);
        out
    }

    /// Parses and validates a package file.
    pub fn parse(bytes: &[u8]) -> Result<Self, PackageError> {
        let mut r = Reader { bytes, pos: 0 };
        let magic: [u8; 8] = r.array("header")?;
        if magic != MAGIC {
            return Err(PackageError::BadMagic { found: magic });
        }
        let version = r.u32("header")?;
        if version != VERSION {
            return Err(PackageError::UnsupportedVersion(version));
        }
        let header_size = r.u32("header")?;
        if header_size as usize != HEADER_SIZE {
            return Err(PackageError::BadHeaderSize(header_size));
        }
        let image_size = r.u64("header")?;
        let mem_size = r.u64("header")?;
        if mem_size == 0 || mem_size % PAGE_SIZE != 0 || mem_size > MAX_MEM_SIZE {
            return Err(PackageError::BadMemSize(mem_size));
        }
        if image_size > mem_size {
            return Err(PackageError::ImageLargerThanMem { image: image_size, mem: mem_size });
        }
        let nsegs = r.u32("header")? as u64;
        let nrelocs = r.u32("header")? as u64;
        let nentries = r.u32("header")? as u64;
        let reserved = r.u32("header")?;
        if reserved != 0 {
            return Err(PackageError::ReservedNonZero(reserved.into()));
        }
        let image_off = r.u64("header")?;
        let reserved = r.u64("header")?;
        if reserved != 0 {
            return Err(PackageError::ReservedNonZero(reserved));
        }
        // All counts are u32, so this cannot overflow a u64.
        let expected = HEADER_SIZE as u64 + SEGMENT_SIZE as u64 * nsegs + RELOC_SIZE as u64 * nrelocs + ENTRY_SIZE as u64 * nentries;
        if image_off != expected {
            return Err(PackageError::BadImageOffset { found: image_off, expected });
        }
        let total = expected + image_size;
        let have = bytes.len() as u64;
        if have < total {
            return Err(PackageError::Truncated { what: "tables and image", need: total, have });
        }
        if have > total {
            return Err(PackageError::TrailingBytes { extra: have - total });
        }
        // Sizes are now known to be backed by real bytes: allocation is bounded.
        let mut segments = Vec::with_capacity(nsegs as usize);
        for _ in 0..nsegs {
            let offset = r.u64("segment")?;
            let size = r.u64("segment")?;
            let prot = Prot(r.u32("segment")?);
            let reserved = r.u32("segment")?;
            if reserved != 0 {
                return Err(PackageError::ReservedNonZero(reserved.into()));
            }
            segments.push(Segment { offset, size, prot });
        }
        let mut relocs = Vec::with_capacity(nrelocs as usize);
        for _ in 0..nrelocs {
            relocs.push(r.u64("relocation")?);
        }
        let mut entries = Vec::with_capacity(nentries as usize);
        for index in 0..nentries as usize {
            let raw: [u8; ENTRY_NAME_LEN] = r.array("entry")?;
            let offset = r.u64("entry")?;
            entries.push(EntryPoint { name: decode_name(&raw).ok_or(PackageError::BadEntryName { index })?, offset });
        }
        let image = r.take("image", image_size)?.to_vec();
        Self::new(image, mem_size, segments, relocs, entries)
    }
}

/// Decodes a NUL-padded entry name: printable ASCII, then only NULs.
pub fn decode_name(raw: &[u8]) -> Option<String> {
    let len = raw.iter().position(|&b| b == 0)?;
    let (name, pad) = raw.split_at(len);
    if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) || pad.iter().any(|&b| b != 0) {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, what: &'static str, n: u64) -> Result<&'a [u8], PackageError> {
        let have = (self.bytes.len() - self.pos) as u64;
        if n > have {
            return Err(PackageError::Truncated { what, need: self.pos as u64 + n, have: self.bytes.len() as u64 });
        }
        let out = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PackageError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(what, N as u64)?);
        Ok(out)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, PackageError> {
        self.array(what).map(u32::from_le_bytes)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, PackageError> {
        self.array(what).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests;
