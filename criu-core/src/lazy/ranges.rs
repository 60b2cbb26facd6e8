//! Bookkeeping of the pages a task still lacks: extents of its address space
//! whose data is still with the daemon, each remembering where that data is
//! in the images (its address at dump time). Faults and the background copy
//! cut pieces out; `mremap` moves extents, `munmap`/`madvise` drop them, and
//! a fork clones the whole set for the child.

use std::collections::BTreeMap;

use crate::images::PAGE_SIZE;

/// Data for `[start, end)` of the live task is at `orig..` of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    end: u64,
    orig: u64,
}

/// A piece cut out of a [`PageSet`]: `len` bytes at `start` in the task,
/// whose data is at image address `orig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Start in the live task.
    pub start: u64,
    /// Length in bytes (whole pages).
    pub len: u64,
    /// Image (dump-time) address of the data.
    pub orig: u64,
}

/// The missing pages of one task, as disjoint extents keyed by start.
#[derive(Debug, Clone, Default)]
pub struct PageSet {
    map: BTreeMap<u64, Extent>,
    bytes: u64,
}

impl PageSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, start+len)` with data at image address `orig`. The
    /// caller keeps extents disjoint (pagemap entries are).
    pub fn insert(&mut self, start: u64, len: u64, orig: u64) {
        if len == 0 {
            return;
        }
        self.bytes += len;
        self.map.insert(start, Extent { end: start + len, orig });
    }

    /// Puts a piece back (a fill that did not complete).
    pub fn put_back(&mut self, p: Piece) {
        self.insert(p.start, p.len, p.orig);
    }

    /// Pages still missing.
    pub fn pages(&self) -> u64 {
        self.bytes / PAGE_SIZE
    }

    /// Whether every page is in.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The missing extents as `(start, end)`, in address order.
    pub fn extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, e)| (s, e.end))
    }

    /// Whether `addr` is in a missing extent.
    pub fn contains(&self, addr: u64) -> bool {
        self.map.range(..=addr).next_back().is_some_and(|(_, e)| addr < e.end)
    }

    /// Cuts the `chunk`-aligned block around `addr` (clipped to its extent)
    /// out of the set; `None` when `addr` is not missing.
    pub fn take_around(&mut self, addr: u64, chunk: u64) -> Option<Piece> {
        let (&s, e) = self.map.range(..=addr).next_back()?;
        if addr >= e.end {
            return None;
        }
        let chunk = chunk.max(PAGE_SIZE);
        let block = addr - addr % chunk;
        let start = block.max(s);
        let end = (block.saturating_add(chunk)).min(e.end);
        self.cut(start, end).into_iter().next()
    }

    /// Cuts up to `max` bytes from the start of the lowest extent at or
    /// after `from` (wrapping around to the lowest extent).
    pub fn take_next(&mut self, from: u64, max: u64) -> Option<Piece> {
        let (&s, e) = self.map.range(from..).next().or_else(|| self.map.iter().next())?;
        let end = e.end.min(s.saturating_add(max.max(PAGE_SIZE)));
        self.cut(s, end).into_iter().next()
    }

    /// Removes `[start, end)` from the set; returns the pieces removed, in
    /// address order.
    pub fn cut(&mut self, start: u64, end: u64) -> Vec<Piece> {
        let hit: Vec<(u64, Extent)> = self
            .map
            .range(..end)
            .rev()
            .take_while(|(_, e)| e.end > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        let mut out = Vec::with_capacity(hit.len());
        for (s, e) in hit.into_iter().rev() {
            self.map.remove(&s);
            self.bytes -= e.end - s;
            if s < start {
                self.insert(s, start - s, e.orig);
            }
            if e.end > end {
                self.insert(end, e.end - end, e.orig + (end - s));
            }
            let (ps, pe) = (s.max(start), e.end.min(end));
            out.push(Piece { start: ps, len: pe - ps, orig: e.orig + (ps - s) });
        }
        out
    }

    /// `mremap` moved `[from, from+len)` to `to`: the missing pages move with
    /// it (whatever was missing at the destination is gone).
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moved = self.cut(from, from.saturating_add(len));
        self.cut(to, to.saturating_add(len));
        for p in moved {
            self.insert(p.start - from + to, p.len, p.orig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const P: u64 = PAGE_SIZE;

    #[test]
    fn cut_take_remap() {
        let mut s = PageSet::new();
        s.insert(0x10000, 16 * P, 0x90000);
        s.insert(0x40000, 4 * P, 0xa0000);
        assert_eq!(s.pages(), 20);
        // A fault in the middle takes its aligned 4-page block.
        let p = s.take_around(0x10000 + 5 * P + 7, 4 * P).unwrap();
        assert_eq!(p, Piece { start: 0x10000 + 4 * P, len: 4 * P, orig: 0x90000 + 4 * P });
        assert!(!s.contains(0x10000 + 5 * P));
        assert!(s.contains(0x10000 + 3 * P) && s.contains(0x10000 + 8 * P));
        assert_eq!(s.take_around(0x10000 + 5 * P, P), None);
        // munmap across both remaining pieces of the first extent.
        let gone = s.cut(0x10000 + 2 * P, 0x10000 + 10 * P);
        assert_eq!(gone.iter().map(|p| p.len).sum::<u64>(), 4 * P);
        assert_eq!(s.pages(), 20 - 4 - 4);
        // mremap the second extent up; its data stays at the old image address.
        s.remap(0x40000, 0x80000, 4 * P);
        assert!(!s.contains(0x40000));
        let p = s.take_around(0x80000 + 3 * P, P).unwrap();
        assert_eq!(p.orig, 0xa0000 + 3 * P);
        // Background order: lowest first, bounded size.
        let p = s.take_next(0, 1 << 20).unwrap();
        assert_eq!((p.start, p.len), (0x10000, 2 * P));
        let mut total = p.len;
        while let Some(p) = s.take_next(0, P) {
            total += p.len;
        }
        assert_eq!(total, (2 + 6 + 3) * P);
        assert!(s.is_empty() && s.pages() == 0);
    }
}
