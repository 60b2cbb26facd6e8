//! Memory stages of the restore: park the running vDSO, unmap the old
//! world, move premapped VMAs home, map shared files, set protections and
//! madvise bits, put the vDSO in place (or redirect the old copy).

use crate::abi::{
    MemRange, VmaArg, ERR_BAD_VMAS, ERR_NO_BOUNCE, ERR_VDSO, PLAN_SCRATCH_PER_VMA, RESTORE_F_CLOSE_FDS, VMA_FILE_SHARED,
    VMA_F_LAZY, VMA_F_LOCK_ONFAULT, VMA_F_SHM_RDONLY, VMA_PINNED, VMA_PREMAPPED, VMA_SYSV_SHM, VMA_VDSO,
};
use crate::restore::ctx::{Ctx, Fail, Step};
use crate::restore::layout::{check_vmas, for_each_gap, parked, same_vdso_shape};
use crate::restore::plan::{run_plan, PlanError, PlanMove};
use crate::restore::vdso::{patch_vdso, stub_vdso, vdso_symbols, VdsoSyms};
use crate::sys;

const MREMAP_MAYMOVE: u32 = 1;
const MREMAP_FIXED: u32 = 2;
const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_FIXED: u32 = 0x10;
const PROT_READ_WRITE: u32 = 0x3;
const MAP_LOCKED: u32 = 0x2000;
const MLOCK_ONFAULT: u32 = 1;
const SHM_RDONLY: u32 = 0o10000;
const MADV_GUARD_INSTALL: u32 = 102;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)` (32-byte argument).
const UFFDIO_REGISTER: u32 = 0xc020_aa00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// `mremap(from, len, len, MAYMOVE | FIXED, to)`.
fn move_range(from: u64, len: u64, to: u64) -> Result<(), sys::Errno> {
    // SAFETY: callers only move ranges the restore owns (premapped copies,
    // the vDSO) to places that are free in the final layout.
    let got = unsafe { sys::mremap(from as usize, len as usize, len as usize, MREMAP_MAYMOVE | MREMAP_FIXED, to as usize) }?;
    if got as u64 != to {
        return Err(sys::Errno::EFAULT);
    }
    Ok(())
}

/// The blob's own areas, which no final VMA may cover.
fn reserved(ctx: &Ctx) -> [MemRange; 4] {
    let a = &ctx.args;
    [a.blob, a.args, a.bounce, a.vdso.park]
}

/// Checks the VMA list and the blob's areas once, before anything is
/// changed: every area is page aligned (they are kept or unmapped whole).
pub fn check(ctx: &Ctx) -> Step<&[VmaArg]> {
    let a = &ctx.args;
    let page = a.page_size.max(1);
    for r in [a.blob, a.args, a.premap, a.bounce, a.vdso.park, a.vdso.running_vdso, a.vdso.running_vvar] {
        if !r.start.is_multiple_of(page) || !r.len.is_multiple_of(page) {
            return Err(Fail::new(ERR_BAD_VMAS, r.start, b"area not page aligned"));
        }
    }
    let vmas = ctx.array::<VmaArg>(a.vmas)?;
    check_vmas(vmas, a.page_size, a.task_size, a.premap, &reserved(ctx))?;
    Ok(vmas)
}

/// Moves the running vvar/vDSO into `vdso.park`, keeping their layout.
pub fn park_vdso(ctx: &Ctx) -> Step {
    let vd = &ctx.args.vdso;
    if vd.running_vdso.len == 0 && vd.running_vvar.len == 0 {
        return Ok(());
    }
    let (vvar_at, vdso_at) = parked(vd).ok_or(Fail::new(ERR_VDSO, vd.park.len, b"vDSO park area too small"))?;
    for (r, to) in [(vd.running_vvar, vvar_at), (vd.running_vdso, vdso_at)] {
        if r.len != 0 {
            move_range(r.start, r.len, to).map_err(|e| Fail::errno(e, r.start, b"parking the vDSO/vvar"))?;
        }
    }
    Ok(())
}

/// Unregisters the rseq area inherited from the forking thread.
pub fn drop_inherited_rseq(ctx: &Ctx) -> Step {
    let r = ctx.args.cur_rseq;
    if r.len == 0 {
        return Ok(());
    }
    const RSEQ_FLAG_UNREGISTER: i32 = 1;
    // SAFETY: unregistering; the kernel stops writing to the area.
    unsafe { sys::rseq(r.ptr, r.len, RSEQ_FLAG_UNREGISTER, r.sig) }
        .map(drop)
        .map_err(|e| Fail::errno(e, r.ptr, b"rseq unregister"))
}

/// Unmaps everything but the blob, its arguments, the premap and bounce
/// areas, the vDSO park and pinned VMAs.
pub fn unmap_old_world(ctx: &Ctx, vmas: &[VmaArg]) -> Step {
    let a = &ctx.args;
    let mut keep = [a.blob, a.args, a.premap, a.bounce, a.vdso.park];
    for_each_gap(&mut keep, vmas, |v| v.kind == VMA_PINNED, (0, a.task_size), |start, len| {
        // SAFETY: the gap holds nothing the restore needs (everything kept
        // is listed above).
        unsafe { sys::munmap(start as usize, len as usize) }.map(drop).map_err(|e| Fail::errno(e, start, b"munmap"))
    })
}

/// Whether `v` has a premapped copy to move home: PREMAPPED VMAs and the
/// dumped vDSO's copy (moved with the others so no move lands on it; the
/// vDSO stage then keeps it or replaces it with the running vDSO).
fn is_moved(v: &VmaArg) -> bool {
    v.kind == VMA_PREMAPPED || (v.kind == VMA_VDSO && v.premap != 0)
}

/// Moves every premapped copy to its final address, in planner order.
pub fn move_premapped(ctx: &Ctx, vmas: &[VmaArg]) -> Step {
    let a = &ctx.args;
    let n = vmas.iter().filter(|v| is_moved(v)).count();
    let need = (n as u64).saturating_mul(PLAN_SCRATCH_PER_VMA);
    if need > a.scratch.len || !a.scratch.start.is_multiple_of(8) {
        return Err(Fail::new(ERR_NO_BOUNCE, need, b"planner scratch too small"));
    }
    // SAFETY: the scratch area is reserved for this and referenced nowhere
    // else; it is 8-byte aligned (checked) and large enough (checked), and
    // PlanMove is plain data for which zeroed bytes are valid after
    // `PlanMove::new` overwrites them below.
    let moves = unsafe {
        let bytes = ctx.area_mut(MemRange { start: a.scratch.start, len: need })?;
        core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<PlanMove>(), n)
    };
    for (slot, v) in moves.iter_mut().zip(vmas.iter().filter(|v| is_moved(v))) {
        *slot = PlanMove::new(v.premap, v.start, v.end - v.start);
    }
    run_plan(moves, (a.bounce.start, a.bounce.len), |from, to, len| {
        move_range(from, len, to).map_err(|e| (e, from))
    })
    .map(drop)
    .map_err(|e| match e {
        PlanError::Overlap(i) => Fail::new(ERR_BAD_VMAS, i as u64, b"premapped VMAs overlap"),
        PlanError::NoBounce(i) => Fail::new(ERR_NO_BOUNCE, i as u64, b"bounce area too small"),
        PlanError::Step((e, from)) => Fail::errno(e, from, b"mremap"),
    })
}

/// Maps the VMAs that come straight from a file at their place, and
/// attaches SysV shared memory segments at theirs.
pub fn map_files(vmas: &[VmaArg]) -> Step {
    for v in vmas.iter().filter(|v| v.kind == VMA_SYSV_SHM) {
        let flags = if v.vflags & VMA_F_SHM_RDONLY != 0 { SHM_RDONLY } else { 0 };
        // SAFETY: the final layout has this range free (as for files below).
        let got = unsafe { sys::shmat(v.fd, v.start as usize, flags) }.map_err(|e| Fail::errno(e, v.start, b"shmat"))?;
        if got as u64 != v.start {
            return Err(Fail::new(ERR_BAD_VMAS, v.start, b"SysV segment attached elsewhere"));
        }
    }
    for v in vmas.iter().filter(|v| v.kind == VMA_FILE_SHARED) {
        let share = match v.flags & (MAP_SHARED | MAP_PRIVATE) {
            0 => MAP_SHARED,
            f => f,
        };
        let len = (v.end - v.start) as usize;
        // SAFETY: the final layout has this range free (all old mappings
        // are gone, checked disjoint from every other VMA).
        let got = unsafe { sys::mmap(v.start as usize, len, v.prot, share | MAP_FIXED, v.fd, v.pgoff) }
            .map_err(|e| Fail::errno(e, v.start, b"mmap of a file VMA"))?;
        if got as u64 != v.start {
            return Err(Fail::new(ERR_BAD_VMAS, v.start, b"file VMA mapped elsewhere"));
        }
    }
    Ok(())
}

/// With RESTORE_F_CLOSE_FDS, closes the fds of file VMAs (now mapped).
pub fn close_vma_fds(ctx: &Ctx, vmas: &[VmaArg]) {
    if ctx.args.flags & RESTORE_F_CLOSE_FDS == 0 {
        return;
    }
    for v in vmas.iter().filter(|v| v.kind == VMA_FILE_SHARED && v.fd >= 0) {
        // Several VMAs may share an fd: EBADF after the first close is fine.
        let _ = sys::close(v.fd);
    }
}

/// Registers every lazy VMA, now in place, with the userfaultfd (MISSING
/// mode), then closes the blob's copy of it. Without lazy VMAs the uffd
/// field is ignored (not even closed), so a zeroed field is harmless.
pub fn register_lazy(ctx: &Ctx, vmas: &[VmaArg]) -> Step {
    let uffd = ctx.args.uffd;
    let mut any = false;
    for v in vmas.iter().filter(|v| v.vflags & VMA_F_LAZY != 0) {
        if uffd < 0 {
            return Err(Fail::new(ERR_BAD_VMAS, v.start, b"lazy VMA without a userfaultfd"));
        }
        // struct uffdio_register { range { start, len }, mode, ioctls (out) }
        let mut reg = [v.start, v.end - v.start, UFFDIO_REGISTER_MODE_MISSING, 0];
        // SAFETY: the kernel reads and writes the 32-byte struct on our stack.
        unsafe { sys::ioctl(uffd, UFFDIO_REGISTER, reg.as_mut_ptr() as usize) }
            .map_err(|e| Fail::errno(e, v.start, b"UFFDIO_REGISTER"))?;
        any = true;
    }
    if any {
        sys::close(uffd).map_err(|e| Fail::errno(e, uffd as u64, b"close userfaultfd"))?;
    }
    Ok(())
}

/// Final protections, madvise bits and memory locks of premapped, pinned
/// and file VMAs. A madvise or mlock the kernel refuses fails the restore
/// (the area would come back other than it was).
pub fn protect(vmas: &[VmaArg]) -> Step {
    for v in vmas.iter().filter(|v| matches!(v.kind, VMA_PREMAPPED | VMA_PINNED | VMA_FILE_SHARED | VMA_SYSV_SHM)) {
        let len = (v.end - v.start) as usize;
        if v.kind != VMA_FILE_SHARED {
            // SAFETY: changes protections of restored memory only.
            unsafe { sys::mprotect(v.start as usize, len, v.prot) }.map_err(|e| Fail::errno(e, v.start, b"mprotect"))?;
        }
        for bit in 0..64u32 {
            if v.madv & (1 << bit) != 0 {
                // SAFETY: advice on restored memory; bits come from the dump.
                unsafe { sys::madvise(v.start as usize, len, bit) }.map_err(|e| Fail::errno(e, v.start, b"madvise"))?;
            }
        }
        if v.flags & MAP_LOCKED != 0 {
            if v.vflags & VMA_F_LAZY != 0 {
                // Locking would populate it before userfaultfd serves it.
                return Err(Fail::new(ERR_BAD_VMAS, v.start, b"locked VMA marked lazy"));
            }
            let onfault = if v.vflags & VMA_F_LOCK_ONFAULT != 0 { MLOCK_ONFAULT } else { 0 };
            // SAFETY: the VMA is in place with its final contents (not lazy).
            unsafe { sys::mlock2(v.start as usize, len, onfault) }.map_err(|e| Fail::errno(e, v.start, b"mlock2"))?;
        }
    }
    Ok(())
}

/// Installs the guard regions (`RestoreArgs::guards`, `MADV_GUARD_INSTALL`)
/// in the final VMAs, as the dumped task had them.
pub fn install_guards(ctx: &Ctx) -> Step {
    for g in ctx.array::<MemRange>(ctx.args.guards)? {
        // SAFETY: guard markers in restored memory only (the host checked
        // each range lies inside the task's VMAs); the task had no pages
        // there.
        unsafe { sys::madvise(g.start as usize, g.len as usize, MADV_GUARD_INSTALL) }
            .map_err(|e| Fail::errno(e, g.start, b"madvise(MADV_GUARD_INSTALL)"))?;
    }
    Ok(())
}

/// A mapped range as a byte slice.
///
/// # Safety
/// `r` must be mapped readable (and writable if written through) and not
/// referenced elsewhere while the slice lives.
unsafe fn mapped(r: MemRange) -> &'static mut [u8] {
    // SAFETY: the caller's promise.
    unsafe { core::slice::from_raw_parts_mut(r.start as *mut u8, r.len as usize) }
}

fn syms_of(r: MemRange) -> Step<VdsoSyms> {
    // SAFETY: `r` is a vDSO image mapped readable (the running one, parked,
    // or the premapped copy of the dumped one).
    vdso_symbols(unsafe { mapped(r) }).map_err(|_| Fail::new(ERR_VDSO, r.start, b"cannot parse a vDSO image"))
}

/// Puts the vDSO where the process had it: the running one (with its
/// vvar) if it matches the dumped one, else the dumped copy (already moved
/// to its place with the other premapped VMAs) with jumps to the running
/// one, or syscall stubs when there is no running vDSO. A process dumped
/// without a vDSO gets none.
pub fn place_vdso(ctx: &Ctx, vmas: &[VmaArg]) -> Step {
    let vd = &ctx.args.vdso;
    let Some(dumped) = vmas.iter().find(|v| v.kind == VMA_VDSO) else {
        // The process had unmapped its vDSO: the parked one goes too.
        if vd.park.len != 0 {
            // SAFETY: the park holds only the running vvar/vDSO, which
            // nothing of the process uses.
            unsafe { sys::munmap(vd.park.start as usize, vd.park.len as usize) }
                .map_err(|e| Fail::errno(e, vd.park.start, b"munmap parked vDSO"))?;
        }
        return Ok(());
    };
    let dumped_range = MemRange { start: dumped.start, len: dumped.end - dumped.start };
    let (vvar_at, vdso_at) = parked(vd).unwrap_or((0, 0));
    let running = MemRange { start: vdso_at, len: vd.running_vdso.len };
    let running_syms = if running.len != 0 { Some(syms_of(running)?) } else { None };
    let has_copy = dumped.premap != 0;
    let copy_syms = if has_copy { Some(syms_of(dumped_range)?) } else { None };
    let matches = match (&running_syms, &copy_syms) {
        (Some(r), Some(c)) => r.offsets == c.offsets && same_vdso_shape(vd, dumped_range),
        (Some(r), None) => r.offsets == vd.dumped_syms && same_vdso_shape(vd, dumped_range),
        _ => false,
    };
    if matches {
        if has_copy {
            // SAFETY: the copy is ours; the running vDSO takes its place.
            unsafe { sys::munmap(dumped.start as usize, dumped_range.len as usize) }
                .map_err(|e| Fail::errno(e, dumped.start, b"munmap vDSO copy"))?;
        }
        if vd.running_vvar.len != 0 {
            move_range(vvar_at, vd.running_vvar.len, vd.dumped_vvar.start).map_err(|e| Fail::errno(e, vvar_at, b"moving vvar"))?;
        }
        return move_range(vdso_at, running.len, dumped.start).map_err(|e| Fail::errno(e, vdso_at, b"moving vDSO"));
    }
    let Some(copy_syms) = copy_syms else {
        return Err(Fail::new(ERR_VDSO, dumped.start, b"vDSO differs and no dumped copy"));
    };
    // SAFETY: making our own copy writable to patch it.
    unsafe { sys::mprotect(dumped.start as usize, dumped_range.len as usize, PROT_READ_WRITE) }
        .map_err(|e| Fail::errno(e, dumped.start, b"mprotect vDSO copy"))?;
    // SAFETY: the copy is mapped read-write at its final place.
    let image = unsafe { mapped(dumped_range) };
    let patched = match &running_syms {
        Some(r) => patch_vdso(image, dumped.start, &copy_syms, running.start, &r.offsets),
        None => stub_vdso(image, &copy_syms),
    };
    patched.map_err(|_| Fail::new(ERR_VDSO, dumped.start, b"cannot patch the old vDSO"))?;
    // SAFETY: restoring the dumped protection of the copy.
    unsafe { sys::mprotect(dumped.start as usize, dumped_range.len as usize, dumped.prot) }
        .map(drop)
        .map_err(|e| Fail::errno(e, dumped.start, b"mprotect vDSO copy"))
}

/// Unmaps the bounce area and what is left of the premap area (the parts
/// no final VMA now occupies).
pub fn drop_staging(ctx: &Ctx, vmas: &[VmaArg]) -> Step {
    let a = &ctx.args;
    for (r, keep_final) in [(a.bounce, false), (a.premap, true)] {
        if r.len == 0 {
            continue;
        }
        let window = (r.start, r.start.saturating_add(r.len));
        for_each_gap(&mut [], vmas, |_| keep_final, window, |start, len| {
            // SAFETY: staging leftovers only: every VMA has left these areas
            // and final VMAs inside the window are skipped.
            unsafe { sys::munmap(start as usize, len as usize) }.map(drop).map_err(|e| Fail::errno(e, start, b"munmap staging"))
        })?;
    }
    Ok(())
}
