//! Pages an incremental dump left in its parent images.
//!
//! A dump made with `--prev-images-dir` has a `parent` link in its images
//! directory, and `PE_PARENT` pagemap entries for the pages that had not
//! changed since that dump. Each such range is looked up in the parent's
//! `pagemap-PID.img`: the part present there is read from the parent's
//! pages file, the part flagged `PE_PARENT` again is looked up in the
//! grandparent, and so on. A page that no ancestor holds means the chain is
//! broken (a parent replaced or truncated): an error, never a zero page.

use super::error::{RestoreError, Result};
use super::plan::{PageRun, PagesPlan};
use crate::images::consts::pagemap_flags::{PARENT as PE_PARENT, PRESENT as PE_PRESENT};
use crate::images::{pb, ImageDir, ImageKind};
use crate::proc::pagemap::PAGE_SIZE;
use std::path::Path;

/// Longest chain of parents followed (a link loop ends here).
const MAX_DEPTH: usize = 64;

/// Resolves `need` ((start, end) ranges of task `pid` flagged `PE_PARENT`
/// in `pagemap`, of the dump in `dir`) to the pages files holding them.
pub fn resolve(dir: &Path, pagemap: &Path, pid: i32, mut need: Vec<(u64, u64)>) -> Result<Vec<PagesPlan>> {
    let mut plans = Vec::new();
    let mut at = dir.to_path_buf();
    for _ in 0..MAX_DEPTH {
        if need.is_empty() {
            return Ok(plans);
        }
        let link = at.join(crate::dump::PARENT_LINK);
        if !link.is_dir() {
            let first = need[0].0;
            return Err(RestoreError::bad(
                pagemap,
                format!("pages at {first:#x} are in a parent dump, but {} is not a directory", link.display()),
            ));
        }
        let (plan, rest) = look_up(&link, pid, &need)?;
        if !plan.runs.is_empty() {
            plans.push(plan);
        }
        need = rest;
        at = link;
    }
    Err(RestoreError::bad(pagemap, format!("more than {MAX_DEPTH} parent dumps (a loop of parent links?)")))
}

/// One parent: the part of `need` its pages file holds, and what its own
/// pagemap leaves to its parent.
fn look_up(parent: &Path, pid: i32, need: &[(u64, u64)]) -> Result<(PagesPlan, Vec<(u64, u64)>)> {
    let images = ImageDir::open_unchecked(parent);
    let path = images.image_path(ImageKind::Pagemap, pid as u64);
    let mut r = images.open_image(ImageKind::Pagemap, pid as u64)?;
    let head: pb::PagemapHead = r.read_next()?;
    let pages_path = images.image_path(ImageKind::Pages, head.pages_id.unwrap_or_default() as u64);
    // (start, end, offset in the pages file or None for PE_PARENT).
    let mut held: Vec<(u64, u64, Option<u64>)> = Vec::new();
    let mut off = 0u64;
    while let Some(e) = r.read_entry::<pb::PagemapEntry>()? {
        let flags = e.flags.unwrap_or(PE_PRESENT) | if e.in_parent == Some(true) { PE_PARENT } else { 0 };
        let start = e.vaddr.unwrap_or_default();
        let len = e.page_count().checked_mul(PAGE_SIZE).ok_or_else(|| RestoreError::bad(&path, "bad page count"))?;
        let end = start.checked_add(len).filter(|_| start % PAGE_SIZE == 0).ok_or_else(|| RestoreError::bad(&path, "bad entry"))?;
        if held.last().is_some_and(|h| h.1 > start) {
            return Err(RestoreError::bad(&path, format!("entry at {start:#x} overlaps or is out of order")));
        }
        if flags & PE_PARENT != 0 {
            held.push((start, end, None));
        } else if flags & PE_PRESENT != 0 {
            held.push((start, end, Some(off)));
            off += len;
        }
    }
    let pages_len = match std::fs::metadata(&pages_path) {
        Ok(m) => m.len(),
        Err(e) if off == 0 && e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => return Err(RestoreError::ImageIo { file: pages_path, source }),
    };
    if off > pages_len {
        return Err(RestoreError::bad(&pages_path, format!("too short: {pages_len} bytes, but {} needs {off}", path.display())));
    }
    let mut runs: Vec<PageRun> = Vec::new();
    let mut rest: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in need {
        let mut at = start;
        let first = held.partition_point(|h| h.1 <= start);
        for &(hs, he, hoff) in &held[first..] {
            if at >= end {
                break;
            }
            if hs > at {
                break;
            }
            let to = he.min(end);
            match hoff {
                Some(o) => runs.push(PageRun { vaddr: at, nr_pages: (to - at) / PAGE_SIZE, file_off: o + (at - hs) }),
                None => rest.push((at, to)),
            }
            at = to;
        }
        if at < end {
            return Err(RestoreError::bad(&path, format!("holds no page at {at:#x}, which its child dump left to it")));
        }
    }
    Ok((PagesPlan { path: pages_path, runs }, rest))
}
