//! Conveniences on generated entry types where CRIU's conventions are not
//! visible in the schema: page counts in `pagemap_entry`, and the entries
//! that are followed by a raw payload.

use super::pb::{GhostChunkEntry, PagemapEntry, PipeDataEntry};

impl PagemapEntry {
    /// An entry for `nr_pages` pages at `vaddr` with `flags`
    /// ([`pagemap_flags`](super::consts::pagemap_flags)). Fills both the
    /// 64-bit `nr_pages` (current CRIU) and the 32-bit field 2 that older
    /// readers (such as Debian's crit 3.17) take as the page count.
    pub fn new(vaddr: u64, nr_pages: u64, flags: u32) -> Self {
        PagemapEntry {
            vaddr: Some(vaddr),
            compat_nr_pages: Some(u32::try_from(nr_pages).unwrap_or(0)),
            in_parent: None,
            flags: Some(flags),
            nr_pages: Some(nr_pages),
        }
    }

    /// The page count: `nr_pages` if present, else the old 32-bit field.
    pub fn page_count(&self) -> u64 {
        self.nr_pages
            .unwrap_or_else(|| u64::from(self.compat_nr_pages.unwrap_or(0)))
    }
}

/// An entry that is followed in its image by a raw payload whose length it
/// records.
pub trait Payload {
    /// Length in bytes of the raw data following the entry.
    fn payload_len(&self) -> u64;
}

impl Payload for PipeDataEntry {
    fn payload_len(&self) -> u64 {
        u64::from(self.bytes.unwrap_or(0))
    }
}

impl Payload for GhostChunkEntry {
    fn payload_len(&self) -> u64 {
        self.len.unwrap_or(0)
    }
}
