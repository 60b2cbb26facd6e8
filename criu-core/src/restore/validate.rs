//! Consistency checks on the memory layout read from `mm-*.img` and
//! `pagemap-*.img`, before anything is mapped.
//!
//! VMAs (whose order and alignment the image layer checks) must be inside
//! the user address space; pagemap entries must be sorted, fall inside
//! premapped VMAs (possibly spanning adjacent ones), and stay within the
//! pages file.

use super::error::{RestoreError, Result};
use super::hole::TASK_SIZE;
use super::plan::{PageRun, VmaKind, VmaPlan, PAGE_SIZE};
use std::path::Path;

use crate::images::consts::pagemap_flags::{PARENT as PE_PARENT, PRESENT as PE_PRESENT};

/// The fixed `[vsyscall]` page, the one VMA above the user address space.
const VSYSCALL_START: u64 = 0xffff_ffff_ff60_0000;

/// Checks that every VMA of `file` (the mm image; already known sorted,
/// disjoint and page-aligned) lies in the user address space and has a
/// page-aligned file offset.
pub fn check_address_space(file: &Path, vmas: &[VmaPlan]) -> Result<()> {
    for (i, v) in vmas.iter().enumerate() {
        let what = format!("VMA #{i} {:#x}-{:#x}", v.start, v.end);
        let vsyscall = v.kind == VmaKind::Vsyscall && v.start == VSYSCALL_START;
        if v.end > TASK_SIZE && !vsyscall {
            return Err(RestoreError::bad(file, format!("{what} is outside the user address space")));
        }
        if v.pgoff % PAGE_SIZE != 0 {
            return Err(RestoreError::bad(file, format!("{what} has an unaligned file offset {:#x}", v.pgoff)));
        }
    }
    Ok(())
}

/// One decoded `pagemap_entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagemapEntry {
    pub vaddr: u64,
    pub nr_pages: u64,
    pub flags: u32,
}

/// Checks the pagemap of `file` against the VMAs and the pages file
/// (`pages_file`, `pages_len` bytes) and returns the present runs with their
/// file offsets. Entries that are not present (holes, and `LAZY` entries
/// whose data is elsewhere) are skipped; entries in the parent images go to
/// `parents` as (start, end) ranges, and are refused without it.
pub fn pagemap_runs(
    file: &Path,
    vmas: &[VmaPlan],
    entries: &[PagemapEntry],
    pages_file: &Path,
    pages_len: u64,
    mut parents: Option<&mut Vec<(u64, u64)>>,
) -> Result<Vec<PageRun>> {
    let mut runs: Vec<PageRun> = Vec::with_capacity(entries.len());
    let mut file_off = 0u64;
    let mut prev_end = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let len = e.nr_pages.checked_mul(PAGE_SIZE).filter(|&l| l > 0);
        let end = len.and_then(|l| e.vaddr.checked_add(l));
        let what = format!("entry #{i} at {:#x} ({} pages)", e.vaddr, e.nr_pages);
        let (Some(len), Some(end)) = (len, end) else {
            return Err(RestoreError::bad(file, format!("{what} has a bad page count")));
        };
        if e.vaddr % PAGE_SIZE != 0 {
            return Err(RestoreError::bad(file, format!("{what} is not page-aligned")));
        }
        if e.vaddr < prev_end {
            return Err(RestoreError::bad(file, format!("{what} overlaps or is out of order")));
        }
        prev_end = end;
        check_covered(file, vmas, e.vaddr, end, &what)?;
        if e.flags & PE_PARENT != 0 {
            let Some(parents) = parents.as_deref_mut() else {
                return Err(RestoreError::Unsupported { file: file.into(), what: format!("{what}: pages in a parent image here") });
            };
            parents.push((e.vaddr, end));
            continue;
        }
        if e.flags & PE_PRESENT == 0 {
            // A hole, or lazy pages kept elsewhere (`super::lazy` decides).
            continue;
        }
        if file_off + len > pages_len {
            return Err(RestoreError::bad(
                pages_file,
                format!(
                    "too short: {} bytes, but {} ({what}) needs bytes {file_off:#x}..{:#x}",
                    pages_len,
                    file.display(),
                    file_off + len
                ),
            ));
        }
        match runs.last_mut() {
            Some(r) if r.vaddr + r.len() == e.vaddr && r.file_off + r.len() == file_off => r.nr_pages += e.nr_pages,
            _ => runs.push(PageRun { vaddr: e.vaddr, nr_pages: e.nr_pages, file_off }),
        }
        file_off += len;
    }
    Ok(runs)
}

/// Checks that `[start, end)` is covered, without gaps, by premapped VMAs
/// (an entry may span adjacent VMAs).
fn check_covered(file: &Path, vmas: &[VmaPlan], start: u64, end: u64, what: &str) -> Result<()> {
    let mut at = start;
    let first = vmas.partition_point(|v| v.end <= start);
    for v in &vmas[first..] {
        if at >= end {
            break;
        }
        if v.start > at {
            break;
        }
        if !v.is_premapped() {
            return Err(RestoreError::bad(
                file,
                format!("{what} covers VMA {:#x}-{:#x}, which has no dumpable pages", v.start, v.end),
            ));
        }
        at = v.end;
    }
    if at < end {
        return Err(RestoreError::bad(file, format!("{what} is not inside the VMAs (page {at:#x} is unmapped)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64) -> VmaPlan {
        VmaPlan { start, end, pgoff: 0, prot: 3, flags: 0x22, madv: 0, lock_on_fault: false, kind: VmaKind::Anon }
    }

    #[test]
    fn vmas_stay_in_user_space() {
        let f = Path::new("mm-1.img");
        assert!(check_address_space(f, &[anon(0x1000, 0x3000), anon(0x3000, 0x5000)]).is_ok());
        let e = check_address_space(f, &[anon(TASK_SIZE, TASK_SIZE + 0x1000)]).unwrap_err().to_string();
        assert!(e.contains("mm-1.img") && e.contains("user address space"), "{e}");
        let mut vs = anon(VSYSCALL_START, VSYSCALL_START + 0x1000);
        vs.kind = VmaKind::Vsyscall;
        assert!(check_address_space(f, &[anon(0x1000, 0x2000), vs]).is_ok());
        let mut odd = anon(0x1000, 0x2000);
        odd.pgoff = 0x10;
        assert!(check_address_space(f, &[odd]).is_err());
    }

    #[test]
    fn pagemap_runs_merge_and_bounds() {
        let (f, p) = (Path::new("pagemap-1.img"), Path::new("pages-1.img"));
        let vmas = [anon(0x10000, 0x20000)];
        let e = |vaddr, nr_pages, flags| PagemapEntry { vaddr, nr_pages, flags };
        let entries = [e(0x10000, 2, PE_PRESENT), e(0x12000, 1, PE_PRESENT), e(0x13000, 1, 0), e(0x15000, 1, PE_PRESENT)];
        let runs = pagemap_runs(f, &vmas, &entries, p, 4 * PAGE_SIZE, None).unwrap();
        assert_eq!(
            runs,
            vec![
                PageRun { vaddr: 0x10000, nr_pages: 3, file_off: 0 },
                PageRun { vaddr: 0x15000, nr_pages: 1, file_off: 3 * PAGE_SIZE }
            ]
        );
        let err = pagemap_runs(f, &vmas, &entries, p, 3 * PAGE_SIZE, None).unwrap_err().to_string();
        assert!(err.contains("pages-1.img") && err.contains("too short"), "{err}");
        assert!(pagemap_runs(f, &vmas, &[e(0x1f000, 2, PE_PRESENT)], p, 1 << 20, None).is_err());
        // Spanning two adjacent VMAs is fine; across a gap it is not.
        let two = [anon(0x10000, 0x12000), anon(0x12000, 0x14000), anon(0x15000, 0x16000)];
        assert!(pagemap_runs(f, &two, &[e(0x11000, 2, PE_PRESENT)], p, 1 << 20, None).is_ok());
        assert!(pagemap_runs(f, &two, &[e(0x13000, 3, PE_PRESENT)], p, 1 << 20, None).is_err());
        assert!(pagemap_runs(f, &vmas, &[e(0x12000, 1, PE_PRESENT), e(0x11000, 1, PE_PRESENT)], p, 1 << 20, None).is_err());
        assert!(pagemap_runs(f, &vmas, &[e(0x12000, 0, PE_PRESENT)], p, 1 << 20, None).is_err());
    }
}
