//! `mm-PID.img` (address space and VMAs) and the pagemap images.

use super::img_err;
use crate::dump::model::*;
use crate::dump::DumpError;
use crate::images::{pb, ImageDir, ImageKind};

pub(super) fn mm_entry(p: &ProcessDump) -> pb::MmEntry {
    let m = &p.mm;
    let mut mm = pb::MmEntry {
        mm_start_code: Some(m.start_code),
        mm_end_code: Some(m.end_code),
        mm_start_data: Some(m.start_data),
        mm_end_data: Some(m.end_data),
        mm_start_stack: Some(m.start_stack),
        mm_start_brk: Some(m.start_brk),
        mm_brk: Some(m.brk),
        mm_arg_start: Some(m.arg_start),
        mm_arg_end: Some(m.arg_end),
        mm_env_start: Some(m.env_start),
        mm_env_end: Some(m.env_end),
        exe_file_id: Some(m.exe_file_id),
        vmas: m
            .vmas
            .iter()
            .map(|v| {
                let anon_shared = v.status & crate::dump::vmas::status::ANON_SHARED != 0;
                pb::VmaEntry {
                    start: Some(v.map.start),
                    end: Some(v.map.end),
                    pgoff: Some(v.map.offset),
                    shmid: Some(if anon_shared { v.map.inode } else { v.file_id as u64 }),
                    prot: Some(v.prot),
                    flags: Some(v.mmap_flags),
                    status: Some(v.status),
                    fd: Some(-1),
                    madv: (v.madv != 0).then_some(v.madv),
                    fdflags: fdflags(p, v),
                }
            })
            .chain(m.guards.iter().map(|&(start, end)| guard_entry(start, end)))
            .collect(),
        dumpable: Some(p.task.dumpable as i32),
        aios: Vec::new(),
        thp_disabled: Some(p.task.thp_disabled),
        ..Default::default()
    };
    mm.set_auxv(&m.auxv);
    mm
}

/// A guard region as CRIU writes it: an entry after every area, with
/// only `VMA_AREA_GUARD` for status (it is not an area of its own).
fn guard_entry(start: u64, end: u64) -> pb::VmaEntry {
    pb::VmaEntry {
        start: Some(start),
        end: Some(end),
        pgoff: Some(0),
        shmid: Some(0),
        prot: Some(0),
        flags: Some(0),
        status: Some(crate::dump::vmas::status::AREA_GUARD),
        fd: Some(-1),
        madv: None,
        fdflags: None,
    }
}

/// `vma_entry.fdflags`: how a file area's file was opened (its REG entry's
/// mode, from the `map_files` link), or how a SysV segment was attached
/// (`O_RDONLY` for `SHM_RDONLY`, which leaves the area without
/// `VM_MAYWRITE`).
fn fdflags(p: &ProcessDump, v: &Vma) -> Option<u32> {
    let mode = if v.status & crate::dump::vmas::status::AREA_SYSVIPC != 0 {
        if v.map.has(crate::proc::maps::vmflag::MAYWRITE) { libc::O_RDWR } else { libc::O_RDONLY }
    } else if v.file_id != 0 {
        return Some(p.files.files.iter().find(|f| f.id == v.file_id).map_or(libc::O_RDONLY as u32, |f| f.flags));
    } else {
        return None;
    };
    Some(mode as u32)
}

/// Writes a pagemap image: the head naming the pages image, then the runs.
pub(super) fn pagemap_image(dir: &ImageDir, kind: ImageKind, id: u64, pages_id: u32, entries: &[PagemapEntry]) -> Result<(), DumpError> {
    let mut w = dir.create_image(kind, id).map_err(img_err)?;
    w.write_entry(&pb::PagemapHead { pages_id: Some(pages_id) }).map_err(img_err)?;
    for e in entries {
        w.write_entry(&pb::PagemapEntry::new(e.vaddr, e.nr_pages as u64, e.flags)).map_err(img_err)?;
    }
    w.finish().map_err(img_err)
}
