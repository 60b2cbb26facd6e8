//! `mm-PID.img` (address space and VMAs) and the pagemap images.

use super::img_err;
use crate::dump::model::*;
use crate::dump::DumpError;
use crate::images::{pb, ImageDir, ImageKind};

/// CRIU's `AT_VECTOR_SIZE` on x86_64, in words: its dump reads no more
/// of `/proc/PID/auxv`, and its restore refuses a longer `mm_saved_auxv`.
pub const AT_VECTOR_SIZE: usize = 44;

/// `mm_saved_auxv`: the (type, value) pairs, then the (0, 0) terminator,
/// in at most [`AT_VECTOR_SIZE`] words, so that CRIU restores our images.
/// Entries past the 21st are left out (kernels since 6.3 give about 24):
/// they only show in `/proc/PID/auxv` after a restore, as after CRIU's
/// (a program reads its own vector from its stack, which is restored).
fn saved_auxv(auxv: &[(u64, u64)]) -> Vec<u64> {
    let fit = AT_VECTOR_SIZE / 2 - 1;
    auxv.iter().take_while(|&&(k, _)| k != 0).take(fit).flat_map(|&(k, v)| [k, v]).chain([0, 0]).collect()
}

pub(super) fn mm_entry(p: &ProcessDump) -> pb::MmEntry {
    let m = &p.mm;
    pb::MmEntry {
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
        mm_saved_auxv: saved_auxv(&m.auxv),
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
                    fdflags: (v.file_id != 0).then_some(if v.map.shared && v.map.write { libc::O_RDWR } else { libc::O_RDONLY } as u32),
                }
            })
            .collect(),
        dumpable: Some(p.task.dumpable as i32),
        aios: Vec::new(),
        thp_disabled: Some(p.task.thp_disabled),
    }
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


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_auxv_fits_criu_s_vector_and_ends_with_at_null() {
        let short = [(6, 4096), (16, 0xbfebfbff)];
        assert_eq!(saved_auxv(&short), [6, 4096, 16, 0xbfebfbff, 0, 0]);
        let long: Vec<(u64, u64)> = (1..=24).map(|k| (k, k * 10)).collect();
        let v = saved_auxv(&long);
        assert_eq!(v.len(), AT_VECTOR_SIZE);
        assert_eq!(&v[..4], [1, 10, 2, 20]);
        assert_eq!(&v[AT_VECTOR_SIZE - 2..], [0, 0]);
    }
}
