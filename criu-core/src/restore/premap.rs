//! Premapping: every private VMA is built inside one reserved area, filled
//! from the pages image, and later moved into place by the blob (`mremap`).
//!
//! The area is placed where it collides with neither the target layout nor
//! the restoring process's current mappings. VMAs keep their order and size;
//! a grows-down VMA gets a free page below it so it never abuts its
//! neighbour. Page contents are read with large `preadv`s straight into
//! place.

use super::error::{RestoreError, Result, SysContext};
use super::hole::find_hole;
use super::hugefill::HUGE;
use super::plan::{PagesPlan, VmaKind, VmaPlan, PAGE_SIZE};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;

/// One VMA built in the premap area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Index into the task's VMA list.
    pub vma: usize,
    /// Where it currently lives, inside the premap area.
    pub addr: u64,
    /// It is the parent's copy, inherited through fork and moved here
    /// ([`super::cow`]): filled by comparison.
    pub inherited: bool,
}

/// The reserved area and what was placed in it.
#[derive(Debug)]
pub struct Premap {
    pub base: u64,
    pub len: u64,
    pub placed: Vec<Placed>,
}

impl Premap {
    /// The premap address of dumped address `vaddr` within VMA `placed`.
    fn translate(&self, vmas: &[VmaPlan], p: &Placed, vaddr: u64) -> u64 {
        p.addr + (vaddr - vmas[p.vma].start)
    }
}

/// Offsets of each premapped VMA inside the area, and the area's size.
/// VMAs of 2 MiB or more keep their address modulo 2 MiB, so huge pages
/// stay whole through the blob's `mremap`; the area itself starts 2 MiB
/// aligned.
pub fn layout(vmas: &[VmaPlan]) -> (Vec<(usize, u64)>, u64) {
    let mut off = 0u64;
    let mut out = Vec::new();
    for (i, v) in vmas.iter().enumerate().filter(|(_, v)| v.is_premapped()) {
        if v.grows_down() {
            off += PAGE_SIZE;
        }
        if v.len() >= HUGE {
            let want = v.start % HUGE;
            off += (want + HUGE - off % HUGE) % HUGE;
        }
        out.push((i, off));
        off += v.len();
    }
    (out, off.max(PAGE_SIZE))
}

/// `mmap(hint, len, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|MAP_FIXED_NOREPLACE)`.
fn reserve(addr: u64, len: u64) -> Result<()> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    unsafe {
        rustix::mm::mmap_anonymous(
            addr as *mut c_void,
            len as usize,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
        )
    }
    .sys(|| format!("reserving the premap area {addr:#x}+{len:#x}"))?;
    Ok(())
}

/// Reserves the premap area (avoiding `busy` ranges: target layout and
/// current mappings) and maps every private VMA in it, writable where pages
/// will be filled. `open_file` opens a private file mapping's backing file,
/// `shmem(shmid)` gives the shmem object a private mapping maps;
/// `inherited(i)` says where a copy of VMA `i` inherited from the parent is
/// ([`super::cow`]): it is moved into place instead of a fresh mapping.
pub fn premap<'o>(
    vmas: &[VmaPlan],
    busy: &[(u64, u64)],
    has_pages: &dyn Fn(usize) -> bool,
    open_file: &dyn Fn(&std::path::Path) -> Result<OwnedFd>,
    shmem: &dyn Fn(u64) -> Option<BorrowedFd<'o>>,
    inherited: &dyn Fn(usize) -> Option<u64>,
) -> Result<Premap> {
    let (offsets, len) = layout(vmas);
    let base = find_hole(busy, len, HUGE, PAGE_SIZE).ok_or(RestoreError::NoHole { size: len, what: "premap area" })?;
    reserve(base, len)?;
    let mut placed = Vec::with_capacity(offsets.len());
    for (i, off) in offsets {
        let v = &vmas[i];
        let addr = base + off;
        let mut prot = prot_flags(v.prot);
        if has_pages(i) {
            prot |= ProtFlags::WRITE | ProtFlags::READ;
        }
        // Only anonymous memory may be droppable; everything premapped is
        // private otherwise (a premapped file is never written).
        let map_type = if v.kind == VmaKind::Anon { v.map_type() } else { libc::MAP_PRIVATE as u32 };
        let mut flags = MapFlags::from_bits_retain(map_type) | MapFlags::FIXED;
        if v.grows_down() {
            flags |= MapFlags::GROWSDOWN;
        }
        if v.flags & libc::MAP_NORESERVE as u32 != 0 {
            flags |= MapFlags::NORESERVE;
        }
        let what = || format!("premapping VMA {:#x}-{:#x} at {addr:#x}", v.start, v.end);
        if let Some(from) = inherited(i) {
            take_inherited(from, addr, v.len(), prot).sys(|| format!("moving the inherited copy of VMA {:#x}-{:#x} from {from:#x} to {addr:#x}", v.start, v.end))?;
            tracing::debug!(start = format_args!("{:#x}", v.start), end = format_args!("{:#x}", v.end), at = format_args!("{addr:#x}"), "VMA premapped: the parent's copy, shared copy-on-write");
            placed.push(Placed { vma: i, addr, inherited: true });
            continue;
        }
        match &v.kind {
            // SAFETY: addr..addr+len lies inside the area reserved above,
            // which nothing else uses.
            VmaKind::Anon | VmaKind::Vdso => unsafe { rustix::mm::mmap_anonymous(addr as *mut c_void, v.len() as usize, prot, flags) }
                .sys(what)?,
            VmaKind::PrivateFile { path } => {
                let fd = open_file(path)?;
                // SAFETY: as above; a private mapping never writes the file.
                unsafe { rustix::mm::mmap(addr as *mut c_void, v.len() as usize, prot, flags, fd.as_fd(), v.pgoff) }
                    .sys(what)?
            }
            VmaKind::PrivateShmem { shmid } => {
                let fd = shmem(*shmid).ok_or_else(|| RestoreError::bad("mm", format!("VMA {:#x}-{:#x}: no shared memory object {shmid:#x}", v.start, v.end)))?;
                // SAFETY: as above; a private mapping never writes the object.
                unsafe { rustix::mm::mmap(addr as *mut c_void, v.len() as usize, prot, flags, fd, v.pgoff) }.sys(what)?
            }
            _ => return Err(RestoreError::bad("mm", format!("VMA {:#x}-{:#x} cannot be premapped", v.start, v.end))),
        };
        tracing::debug!(
            start = format_args!("{:#x}", v.start),
            end = format_args!("{:#x}", v.end),
            at = format_args!("{addr:#x}"),
            prot = v.prot,
            filled = has_pages(i),
            "VMA premapped: {}",
            match &v.kind {
                VmaKind::PrivateFile { path } => path.display().to_string(),
                k => format!("{k:?}"),
            }
        );
        placed.push(Placed { vma: i, addr, inherited: false });
    }
    Ok(Premap { base, len, placed })
}

/// `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`, then
/// `mprotect(to, len, prot)`: an inherited copy moved into its slot (its
/// pages stay shared with the parent's).
fn take_inherited(from: u64, to: u64, len: u64, prot: ProtFlags) -> std::result::Result<(), rustix::io::Errno> {
    // SAFETY: `from` is the parent's premapped copy as this fork inherited
    // it (nothing else refers to it), `to` a slot of our reserved area.
    unsafe {
        rustix::mm::mremap_fixed(from as *mut c_void, len as usize, len as usize, rustix::mm::MremapFlags::MAYMOVE, to as *mut c_void)?;
        rustix::mm::mprotect(to as *mut c_void, len as usize, MprotectFlags::from_bits_retain(prot.bits()))
    }
}

pub use super::fill::fill;

/// One stretch of present pages: where it goes (premap address, and the
/// dumped address `vaddr`), how long, where in the pages file, whether its VMA is private anonymous memory, whether huge
/// pages may back it (the VMA was not advised `MADV_NOHUGEPAGE`), the
/// VMA's premap range and its index in the task's VMA list.
pub(super) struct Segment {
    pub addr: u64,
    pub vaddr: u64,
    pub len: u64,
    pub off: u64,
    pub anon: bool,
    pub huge_ok: bool,
    pub vma: (u64, u64),
    pub index: usize,
}

/// The pages file's runs cut at VMA boundaries and translated to premap
/// addresses, in file order.
pub(super) fn segments(pm: &Premap, vmas: &[VmaPlan], pages: &PagesPlan) -> Result<Vec<Segment>> {
    let mut segs: Vec<Segment> = Vec::with_capacity(pages.runs.len());
    let mut pi = 0usize;
    for run in &pages.runs {
        let mut vaddr = run.vaddr;
        let end = run.vaddr + run.len();
        while vaddr < end {
            while pi < pm.placed.len() && vmas[pm.placed[pi].vma].end <= vaddr {
                pi += 1;
            }
            let p = pm.placed.get(pi).filter(|p| vmas[p.vma].start <= vaddr).ok_or_else(|| {
                RestoreError::bad(&pages.path, format!("page {vaddr:#x} is outside the premapped VMAs"))
            })?;
            let seg_end = end.min(vmas[p.vma].end);
            segs.push(Segment {
                addr: pm.translate(vmas, p, vaddr),
                vaddr,
                len: seg_end - vaddr,
                off: run.file_off + (vaddr - run.vaddr),
                anon: vmas[p.vma].kind == VmaKind::Anon,
                huge_ok: vmas[p.vma].madv & (1 << libc::MADV_NOHUGEPAGE) == 0,
                vma: (p.addr, p.addr + vmas[p.vma].len()),
                index: p.vma,
            });
            vaddr = seg_end;
        }
    }
    Ok(segs)
}

/// Gives every premapped VMA its dumped protection and madvise flags.
pub fn finish(pm: &Premap, vmas: &[VmaPlan]) -> Result<()> {
    for p in &pm.placed {
        let v = &vmas[p.vma];
        // SAFETY: the range is a premapped VMA owned by this restore.
        unsafe { rustix::mm::mprotect(p.addr as *mut c_void, v.len() as usize, mprotect_flags(v.prot)) }
            .sys(|| format!("mprotect(VMA {:#x}-{:#x})", v.start, v.end))?;
        for advice in MADVISE_REPLAYED {
            if v.madv & (1 << advice) != 0 {
                // SAFETY: as above; these advices only set VMA flags.
                let r = unsafe { libc::madvise(p.addr as *mut c_void, v.len() as usize, advice) };
                if r != 0 {
                    return Err(RestoreError::sys(
                        format!("madvise(VMA {:#x}-{:#x}, {advice})", v.start, v.end),
                        rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// madvise advices recorded per VMA that only set VMA flags (safe to replay).
const MADVISE_REPLAYED: [i32; 6] = [
    libc::MADV_DONTFORK,
    libc::MADV_MERGEABLE,
    libc::MADV_HUGEPAGE,
    libc::MADV_NOHUGEPAGE,
    libc::MADV_DONTDUMP,
    libc::MADV_WIPEONFORK,
];

fn prot_flags(prot: u32) -> ProtFlags {
    ProtFlags::from_bits_truncate(prot)
}

fn mprotect_flags(prot: u32) -> MprotectFlags {
    MprotectFlags::from_bits_truncate(prot)
}

/// Test helper: premaps `vmas` where neither they nor anything mapped now
/// lie, and opens the pages file `pages`.
#[cfg(test)]
pub(super) fn premap_here(vmas: &[VmaPlan], pages: &std::path::Path) -> (Premap, OwnedFd) {
    use super::error::SysContext;
    let open = |p: &std::path::Path| rustix::fs::open(p, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).sys(|| "open".into());
    // Parallel tests of this process map memory too: a place found free
    // can be taken before the premap reserves it (EEXIST); look again.
    for _ in 0..50 {
        let mut busy: Vec<(u64, u64)> = vmas.iter().map(|v| (v.start, v.end)).collect();
        busy.extend(super::maps::read_maps(None).unwrap().iter().map(|m| (m.start, m.end)));
        match premap(vmas, &busy, &|_| true, &open, &|_| None, &|_| None) {
            Ok(pm) => return (pm, open(pages).unwrap()),
            Err(super::error::RestoreError::Sys { errno, .. }) if errno == rustix::io::Errno::EXIST => continue,
            Err(e) => panic!("premap: {e}"),
        }
    }
    panic!("premap: the place found free was taken 50 times")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::maps::read_maps;
    use crate::restore::plan::PageRun;
    use std::io::Write;

    fn vma(start: u64, pages: u64, kind: VmaKind, prot: u32) -> VmaPlan {
        VmaPlan { start, end: start + pages * PAGE_SIZE, pgoff: 0, prot, flags: 0x22, madv: 0, lock_on_fault: false, kind }
    }

    #[test]
    fn premap_and_fill_put_pages_where_they_belong() {
        let dir = std::env::temp_dir().join(format!("criu-rs-premap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Backing file for the private file VMA: pages of 0xf0.
        let backing = dir.join("backing");
        std::fs::write(&backing, vec![0xf0u8; 4 * PAGE_SIZE as usize]).unwrap();
        // Pages file: page k filled with byte k+1.
        let pages_path = dir.join("pages-1.img");
        let mut f = std::fs::File::create(&pages_path).unwrap();
        for k in 0..5u8 {
            f.write_all(&vec![k + 1; PAGE_SIZE as usize]).unwrap();
        }
        drop(f);
        let t = 0x5000_0000_0000u64; // target addresses: never touched
        let vmas = vec![
            vma(t, 4, VmaKind::Anon, 3),
            vma(t + 0x10000, 4, VmaKind::PrivateFile { path: backing.clone() }, 1),
            vma(t + 0x20000, 2, VmaKind::Anon, 0),
        ];
        let runs = vec![
            PageRun { vaddr: t + PAGE_SIZE, nr_pages: 2, file_off: 0 },
            PageRun { vaddr: t + 0x11000, nr_pages: 1, file_off: 2 * PAGE_SIZE },
            PageRun { vaddr: t + 0x21000, nr_pages: 1, file_off: 3 * PAGE_SIZE },
        ];
        let pages = PagesPlan { path: pages_path.clone(), runs };
        let (pm, fd) = premap_here(&vmas, &pages_path);
        assert_eq!(fill(&pm, &vmas, &pages, &fd, &[]).unwrap(), 4 * PAGE_SIZE);
        finish(&pm, &vmas).unwrap();
        let byte = |vma: usize, page: u64| {
            let p = pm.placed.iter().find(|p| p.vma == vma).unwrap();
            // SAFETY: reading a premapped readable page.
            unsafe { *((p.addr + page * PAGE_SIZE) as *const u8) }
        };
        assert_eq!([byte(0, 0), byte(0, 1), byte(0, 2), byte(0, 3)], [0, 1, 2, 0]);
        assert_eq!([byte(1, 0), byte(1, 1), byte(1, 2)], [0xf0, 3, 0xf0]);
        // The file itself is untouched (private mapping).
        assert!(std::fs::read(&backing).unwrap().iter().all(|&b| b == 0xf0));
        let maps = read_maps(None).unwrap();
        let prot_none = pm.placed[2].addr;
        let line = maps.iter().find(|m| m.start <= prot_none && prot_none < m.end).unwrap();
        assert_eq!(line.name, "");
        // SAFETY: unmapping the area this test mapped.
        unsafe { rustix::mm::munmap(pm.base as *mut c_void, pm.len as usize) }.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn large_anonymous_ranges_fill_correctly_and_keep_their_flags() {
        let dir = std::env::temp_dir().join(format!("criu-rs-premap-huge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pages_path = dir.join("pages-2.img");
        // 2000 pages, page k starts with the u32 k + 7.
        let n = 2000u64;
        let mut data = vec![0u8; (n * PAGE_SIZE) as usize];
        for k in 0..n {
            let o = (k * PAGE_SIZE) as usize;
            data[o..o + 4].copy_from_slice(&(k as u32 + 7).to_le_bytes());
        }
        std::fs::write(&pages_path, &data).unwrap();
        // A 9 MiB VMA not 2 MiB aligned; pages start 3 pages in.
        let t = 0x5100_0000_3000u64;
        let vmas = vec![vma(t, 9 * 256, VmaKind::Anon, 3)];
        let (pm, fd) = premap_here(&vmas, &pages_path);
        let pages = PagesPlan { path: pages_path, runs: vec![PageRun { vaddr: t + 3 * PAGE_SIZE, nr_pages: n, file_off: 0 }] };
        assert_eq!(pm.placed[0].addr % HUGE, t % HUGE, "premap keeps the 2 MiB phase");
        assert_eq!(fill(&pm, &vmas, &pages, &fd, &[]).unwrap(), n * PAGE_SIZE);
        finish(&pm, &vmas).unwrap();
        let base = pm.placed[0].addr;
        for k in 0..9 * 256u64 {
            // SAFETY: reading the readable premapped VMA.
            let got = unsafe { std::ptr::read((base + k * PAGE_SIZE) as *const u32) };
            let want = if (3..3 + n).contains(&k) { k as u32 - 3 + 7 } else { 0 };
            assert_eq!(got, want, "page {k}");
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{base:x}-");
        let block: String = smaps.split_inclusive('\n').skip_while(|l| !l.starts_with(&head)).take(30).collect();
        let flags = block.lines().find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(!flags.contains(" hg") && !flags.contains(" um") && !flags.contains(" uw"), "VMA flags changed: {flags}");
        // SAFETY: unmapping the area this test mapped.
        unsafe { rustix::mm::munmap(pm.base as *mut c_void, pm.len as usize) }.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
