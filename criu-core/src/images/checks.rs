//! Consistency checks beyond protobuf `required` fields, for entries restore
//! acts on: a core entry must carry x86-64 state of the sizes CRIU uses, a
//! memory layout must be page-aligned, sorted and disjoint, and a pagemap
//! must describe pages inside that layout. Each returns the problem found.

use super::consts::{x86, SIGACTION_COUNT};
use super::pb::{core_entry, CoreEntry, MmEntry, PagemapEntry, UserX86XsaveEntry, VmaEntry};

/// Page size of x86-64, the unit of VMA bounds and pagemap entries.
pub const PAGE_SIZE: u64 = 4096;

impl CoreEntry {
    /// Problems that make this core unusable for restore on x86-64. A
    /// thread group leader (`leader`) must also carry the task part (`tc`).
    pub fn restore_error(&self, leader: bool) -> Option<String> {
        if self.mtype != Some(core_entry::March::X8664 as i32) {
            return Some(format!("machine type {:?} is not x86-64", self.mtype));
        }
        let Some(ti) = &self.thread_info else {
            return Some("no x86 thread_info".into());
        };
        let Some(fp) = &ti.fpregs else {
            return Some("no fpregs".into());
        };
        if let Some(e) = count("fpregs.st_space", fp.st_space.len(), x86::ST_SPACE)
            .or_else(|| count("fpregs.xmm_space", fp.xmm_space.len(), x86::XMM_SPACE))
        {
            return Some(e);
        }
        if let Some(e) = fp.xsave.as_ref().and_then(xsave_error) {
            return Some(e);
        }
        if self.thread_core.is_none() {
            return Some("no thread_core".into());
        }
        if leader {
            let Some(tc) = &self.tc else {
                return Some("thread group leader without tc".into());
            };
            if !tc.sigactions.is_empty() && tc.sigactions.len() != SIGACTION_COUNT {
                return Some(format!(
                    "{} sigactions, expected {SIGACTION_COUNT}",
                    tc.sigactions.len()
                ));
            }
        }
        None
    }
}

/// A repeated field must be empty (component not saved) or have `want` elements.
fn optional_count(name: &str, got: usize, want: usize) -> Option<String> {
    (got != 0 && got != want).then(|| format!("{name} has {got} elements, expected {want}"))
}

fn count(name: &str, got: usize, want: usize) -> Option<String> {
    (got != want).then(|| format!("{name} has {got} elements, expected {want}"))
}

fn xsave_error(x: &UserX86XsaveEntry) -> Option<String> {
    [
        ("xsave.ymmh_space", x.ymmh_space.len(), x86::YMMH_SPACE),
        (
            "xsave.bndreg_state",
            x.bndreg_state.len(),
            x86::BNDREG_STATE,
        ),
        (
            "xsave.bndcsr_state",
            x.bndcsr_state.len(),
            x86::BNDCSR_STATE,
        ),
        ("xsave.opmask_reg", x.opmask_reg.len(), x86::OPMASK_REG),
        ("xsave.zmm_upper", x.zmm_upper.len(), x86::ZMM_UPPER),
        ("xsave.hi16_zmm", x.hi16_zmm.len(), x86::HI16_ZMM),
        ("xsave.pkru", x.pkru.len(), x86::PKRU),
    ]
    .into_iter()
    .find_map(|(n, got, want)| optional_count(n, got, want))
}

impl MmEntry {
    /// Problems in the VMA list: bounds not page-aligned, empty or inverted
    /// areas, areas out of order or overlapping.
    /// Guard regions (`VMA_AREA_GUARD` entries, which CRIU writes after
    /// the areas) must each lie inside the areas.
    pub fn layout_error(&self) -> Option<String> {
        let mut prev_end = 0u64;
        let areas = || self.vmas.iter().filter(|v| !is_guard(v));
        for (i, v) in self.vmas.iter().enumerate() {
            let (start, end) = (v.start(), v.end());
            if is_guard(v) {
                if start % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 || start >= end {
                    return Some(format!("vmas[{i}] guard region {start:#x}-{end:#x} is unaligned or empty"));
                }
                if !covered(areas(), start, end) {
                    return Some(format!("vmas[{i}] guard region {start:#x}-{end:#x} is not inside the areas"));
                }
                continue;
            }
            if start % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 {
                return Some(format!("vmas[{i}] {start:#x}-{end:#x} is not page-aligned"));
            }
            if start >= end {
                return Some(format!(
                    "vmas[{i}] {start:#x}-{end:#x} is empty or inverted"
                ));
            }
            if start < prev_end {
                return Some(format!("vmas[{i}] {start:#x}-{end:#x} overlaps or precedes the area ending at {prev_end:#x}"));
            }
            prev_end = end;
        }
        None
    }
}

/// Whether a `vma_entry` is a guard region rather than an area.
pub fn is_guard(v: &VmaEntry) -> bool {
    v.status() & super::consts::vma_status::AREA_GUARD != 0
}

/// Whether the sorted, disjoint `areas` cover `[start, end)` without a hole.
fn covered<'a>(areas: impl Iterator<Item = &'a VmaEntry>, start: u64, end: u64) -> bool {
    let mut at = start;
    for v in areas {
        if v.start() <= at && at < v.end() {
            at = v.end();
        }
        if at >= end {
            return true;
        }
    }
    false
}

/// `entries` (checked by [`pagemap_error`]) cut at area boundaries, so that
/// each lies inside one area: what a `UFFDIO_COPY` (one VMA at a time) or a
/// per-area fill needs. The pieces keep the entry's flags and their order,
/// so offsets in the pages file, counted along the entries, are unchanged.
pub fn split_at_areas(vmas: &[VmaEntry], entries: Vec<PagemapEntry>) -> Vec<PagemapEntry> {
    let mut ends: Vec<u64> = vmas.iter().filter(|v| !is_guard(v)).map(|v| v.end()).collect();
    ends.sort_unstable();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let (mut at, end) = (e.vaddr(), e.vaddr() + e.page_count() * PAGE_SIZE);
        let first = ends.partition_point(|&x| x <= at);
        for &cut in ends[first..].iter().take_while(|&&x| x < end) {
            out.push(piece(&e, at, cut));
            at = cut;
        }
        if at == e.vaddr() {
            out.push(e);
        } else {
            out.push(piece(&e, at, end));
        }
    }
    out
}

/// The part `[start, end)` of entry `e`.
fn piece(e: &PagemapEntry, start: u64, end: u64) -> PagemapEntry {
    let n = (end - start) / PAGE_SIZE;
    PagemapEntry { vaddr: Some(start), nr_pages: Some(n), compat_nr_pages: Some(u32::try_from(n).unwrap_or(0)), ..e.clone() }
}

/// Problems in a pagemap against its process's VMAs (sorted, as checked by
/// [`MmEntry::layout_error`]): entries must be page-aligned, non-empty,
/// ascending, disjoint and each covered by areas without a gap. One entry
/// may span adjacent areas: CRIU merges contiguous pages across area
/// boundaries (a binary's read-only and writable data pages, say).
pub fn pagemap_error(vmas: &[VmaEntry], entries: &[PagemapEntry]) -> Option<String> {
    let mut prev_end = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let start = e.vaddr();
        let n = e.page_count();
        let Some(end) = n
            .checked_mul(PAGE_SIZE)
            .and_then(|len| start.checked_add(len))
        else {
            return Some(format!(
                "entry {i} at {start:#x}: {n} pages overflow the address space"
            ));
        };
        if start % PAGE_SIZE != 0 || n == 0 {
            return Some(format!(
                "entry {i} at {start:#x} with {n} pages is unaligned or empty"
            ));
        }
        if start < prev_end {
            return Some(format!("entry {i} at {start:#x} overlaps or precedes the previous one (ends {prev_end:#x})"));
        }
        if !covered(vmas.iter().filter(|v| !is_guard(v)), start, end) {
            return Some(format!(
                "entry {i} {start:#x}-{end:#x} is not inside the VMAs"
            ));
        }
        prev_end = end;
    }
    None
}
