//! The task being restored, from its own side (a fork of criu-rs).
//!
//! Once traced, with its session and group set ([`super::tree`]), the task
//! builds its private memory ([`build_memory`]); once its children are
//! forked it rebuilds its files and fs context, gives its memory its final
//! protections, places the blob with its argument block, reports the
//! placement to criu-rs and jumps into the blob ([`prepare`]). Any error is
//! written to the status pipe and the task exits; it never returns into
//! criu-rs.

use super::args::{build_args, BlobFds, Placement, STACK_SIZE};
use super::error::{RestoreError, Result, SysContext};
use super::fds::{fd_floor, move_above};
use super::fs::restore_fs;
use super::hole::find_hole;
use super::lazy::{hand_over_uffd, LazySetup};
use super::maps::{read_maps, special_areas, MapRange, SpecialAreas};
use super::cow;
use super::plan::{PagesPlan, TaskPlan, VmaKind, PAGE_SIZE};
use super::premap::{finish, premap, Premap};
use super::shared::SharedObjects;
use crate::abi::MemRange;
use rustix::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::ffi::c_void;

/// Name of the blob's restore entry point.
pub const RESTORE_ENTRY: &str = "restore_entry";

/// The first line the task writes to the status pipe before entering the
/// blob: `placed <blob start> <blob len> <args start> <args len> <fd>...`,
/// the fds being those of criu-rs the parent must close in the task.
pub const PLACED: &str = "placed";

/// Runs `f` (the task's preparation, which ends in the blob) with the
/// status pipe moved above the task's fds; any error or panic is written to
/// the status pipe and the task exits. Never returns.
pub fn guarded(plan: &TaskPlan, status: OwnedFd, f: impl FnOnce(&OwnedFd) -> Result<std::convert::Infallible>) -> ! {
    // Keep the status pipe above every fd number the task will use.
    let Ok(status) = move_above(status, fd_floor(&plan.fds)) else {
        // SAFETY: leaving without running exit handlers, as after fork.
        unsafe { libc::_exit(2) }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&status)));
    let message = match result {
        Ok(Err(e)) => format!("error: {e}\n"),
        Ok(Ok(never)) => match never {},
        Err(_) => "error: panic while preparing the task\n".to_string(),
    };
    let _ = rustix::io::write(&status, message.as_bytes());
    // SAFETY: leaving without running Rust or libc exit handlers, as after fork.
    unsafe { libc::_exit(1) }
}

/// How a task comes by its descriptor table.
#[derive(Debug)]
pub enum FdTable {
    /// It installs its own ([`prepare`]).
    Own,
    /// It installed it before forking the tasks that share it
    /// (`CLONE_FILES`); `leftovers` are criu-rs's fds kept in it for the
    /// tasks forked below, which criu-rs closes in this task at the end.
    Installed { leftovers: Vec<RawFd> },
    /// It shares its parent's table, installed by the task that owns it.
    Parent,
}

/// Everything after the task's memory is built ([`build_memory`], `pm`)
/// and its children forked: files (`objs`: every description and shared
/// memory object of the tree, created by criu-rs and inherited), the
/// memory's final protections, fs context, name, the blob; ends in the
/// jump (`Ok` never happens).
#[tracing::instrument(level = "debug", skip_all, fields(pid = plan.pid, fds = plan.fds.len()))]
pub fn prepare(
    plan: &TaskPlan,
    lazy: Option<&LazySetup>,
    status: &OwnedFd,
    objs: &SharedObjects,
    pm: Premap,
    table: &FdTable,
) -> Result<std::convert::Infallible> {
    raise_nofile();
    let floor = fd_floor(&plan.fds);
    let shared = shared_mapping_fds(plan, objs, floor)?;
    let exe = match &plan.exe {
        Some(p) => Some(open_ro(p, floor)?),
        None => None,
    };
    // criu-rs's log (fd 3 or 2, say) must not end up in one of the task's files.
    let log = crate::logfd::move_above(floor).sys(|| "moving the log fd out of the task's way".into())?;
    let mut keep: Vec<i32> = vec![status.as_raw_fd(), log];
    keep.extend(exe.iter().map(|f| f.as_raw_fd()));
    keep.extend(shared.iter().map(|(_, f)| f.as_raw_fd()));
    let files = plan.task_files();
    match table {
        FdTable::Own => crate::files::task::install(&files, &objs.descs, &keep)?,
        FdTable::Installed { .. } => {}
        // Its own locks (installed by the first task of the table).
        FdTable::Parent => crate::files::task::take_locks(&files)?,
    }
    finish(&pm, &plan.vmas)?;
    // Before restore_fs: the socket path is relative to criu-rs's root and cwd.
    let uffd = lazy.map(|l| hand_over_uffd(l, plan.pid, floor)).transpose()?.unwrap_or(-1);
    // Through /proc, before the task takes its dumped root.
    set_oom_score_adj(plan)?;
    // Read before the task takes its dumped root (a chroot may hide /proc);
    // nothing maps or unmaps between here and the blob's placement.
    let maps_now = read_maps(None)?;
    restore_fs(&plan.fs)?;
    set_comm(plan)?;

    let fds = BlobFds {
        shared: shared.iter().map(|(i, f)| (*i, f.as_raw_fd())).collect(),
        log: status.as_raw_fd(),
        exe: exe.as_ref().map_or(-1, |f| f.as_raw_fd()),
        uffd,
        lazy: lazy.map(|l| l.vmas.clone()).unwrap_or_default(),
    };
    let (entry, place, args) = place_blob(plan, &pm, &fds, &maps_now)?;
    // Last: timers count from here.
    crate::files::task::before_resume(&files)?;
    let mut line = format!("{PLACED} {} {} {} {}", place.blob.start, place.blob.len, place.args.start, place.args.len);
    let leftovers = match table {
        FdTable::Installed { leftovers } => &leftovers[..],
        FdTable::Own | FdTable::Parent => &[],
    };
    let ours = std::iter::once(fds.log).chain(fds.shared.iter().map(|s| s.1)).chain((fds.exe >= 0).then_some(fds.exe));
    for fd in ours.chain(leftovers.iter().copied()) {
        line += &format!(" {fd}");
    }
    line.push('\n');
    rustix::io::write(status, line.as_bytes()).sys(|| "writing to the status pipe".into())?;
    // These fds now belong to the restored task; the parent closes them.
    std::mem::forget(shared);
    std::mem::forget(exe);
    unregister_rseq();
    crate::logfd::detach();
    // SAFETY: the blob is mapped and relocated at place.blob, the argument
    // block at `args`, and thread 0's stack (the first slice) lies inside
    // the args mapping.
    unsafe { super::jump::jump(entry, args, place.stack.start + STACK_SIZE) }
}

/// An fd (at or above `floor`) for every VMA the blob maps from a file:
/// shared file mappings (opened by path) and shared anonymous memory (a
/// copy of the tree's object, `objs.shmem`), as `(VMA index, fd)`.
fn shared_mapping_fds(plan: &TaskPlan, objs: &SharedObjects, floor: i32) -> Result<Vec<(usize, OwnedFd)>> {
    let mut shared = Vec::new();
    for (i, v) in plan.vmas.iter().enumerate() {
        let fd = match &v.kind {
            VmaKind::SharedFile { path, open_flags } => {
                let flags = OFlags::from_bits_retain((open_flags & libc::O_ACCMODE) as u32) | OFlags::CLOEXEC;
                rustix::fs::open(path, flags, Mode::empty()).map_err(|e| RestoreError::FileChanged {
                    path: path.clone(),
                    problem: format!("cannot open for a shared mapping: {e}"),
                })?
            }
            VmaKind::Shmem { shmid, .. } => {
                let obj = objs.shmem.get(shmid).ok_or_else(|| RestoreError::Prepare(format!("no shared memory object {shmid:#x}")))?;
                rustix::io::fcntl_dupfd_cloexec(obj, floor).sys(|| format!("dup of shared memory object {shmid:#x}"))?
            }
            _ => continue,
        };
        tracing::debug!(
            start = format_args!("{:#x}", v.start),
            end = format_args!("{:#x}", v.end),
            prot = v.prot,
            "VMA mapped in place by the blob: {:?}",
            v.kind
        );
        shared.push((i, move_above(fd, floor)?));
    }
    Ok(shared)
}

/// `prctl(PR_SET_THP_DISABLE, disabled, 0, 0, 0)`, before the memory is
/// built (so no huge page backs it if the task had them disabled), and
/// always (a fork inherits the setting).
fn set_thp_disabled(disabled: bool) -> Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disabled as libc::c_ulong, 0, 0, 0) } < 0 {
        let errno = rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL);
        return Err(RestoreError::sys(format!("PR_SET_THP_DISABLE({disabled})"), errno));
    }
    Ok(())
}

/// `prctl(PR_SET_NAME, comm)`: the task's name as dumped.
fn set_comm(plan: &TaskPlan) -> Result<()> {
    let comm = plan.core.tc.as_ref().and_then(|tc| tc.comm.clone()).unwrap_or_default();
    let Ok(name) = std::ffi::CString::new(comm.as_bytes().iter().copied().take(15).collect::<Vec<u8>>()) else {
        return Err(RestoreError::Prepare(format!("task name {comm:?} holds a NUL byte")));
    };
    rustix::thread::set_name(&name).sys(|| format!("PR_SET_NAME({comm:?})"))
}

/// The dumped `oom_score_adj` (`/proc/self/oom_score_adj`), when it
/// differs from the one inherited from criu-rs. Lowering it below the
/// lowest value set with CAP_SYS_RESOURCE needs that capability.
fn set_oom_score_adj(plan: &TaskPlan) -> Result<()> {
    let Some(want) = plan.core.tc.as_ref().and_then(|tc| tc.oom_score_adj) else { return Ok(()) };
    let path = "/proc/self/oom_score_adj";
    let now = std::fs::read_to_string(path).map_err(|e| RestoreError::Prepare(format!("reading {path}: {e}")))?;
    if now.trim().parse::<i32>().ok() == Some(want) {
        return Ok(());
    }
    std::fs::write(path, want.to_string()).map_err(|e| {
        let why = if e.raw_os_error() == Some(libc::EACCES) { " (below criu-rs's own it needs CAP_SYS_RESOURCE)" } else { "" };
        RestoreError::Prepare(format!("oom_score_adj {want}: {e}{why}"))
    })
}

/// Ranges the blob and scratch areas must avoid: the whole target layout.
fn target_ranges(plan: &TaskPlan) -> Vec<(u64, u64)> {
    plan.vmas.iter().map(|v| (v.start, v.end)).collect()
}

/// Ranges in use now (`maps_now`) plus the target layout.
fn busy_now(plan: &TaskPlan, maps_now: &[MapRange]) -> Vec<(u64, u64)> {
    let mut busy = target_ranges(plan);
    busy.extend(maps_now.iter().map(|m| (m.start, m.end)));
    busy
}

/// Room for every dumped fd number (the blob puts the dumped limits back).
fn raise_nofile() {
    if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit { current: Some(max), maximum: Some(max) },
        );
    }
}

/// `open(path, O_RDONLY | O_CLOEXEC)`, moved to `floor` or above.
fn open_ro(path: &std::path::Path, floor: i32) -> Result<OwnedFd> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| RestoreError::FileChanged { path: path.into(), problem: format!("cannot open: {e}") })?;
    move_above(fd, floor)
}

/// Builds the task's private memory, first thing once its session and
/// group are set and before it forks its children (which inherit it): sets
/// its THP setting, premaps its private VMAs (taking the copies inherited
/// from `parent` where they stand for its own, see [`super::cow`]) and
/// fills them from the pages files (with `map_pages`, maps what it can
/// from them instead: [`super::image_map`]). Protections and advice come
/// later ([`prepare`]), after the children are forked. `ids`: every pid and
/// tid of the tree (the fill's helper thread must not hold one of them);
/// `objs`: the tree's shmem objects (private mappings of them).
#[tracing::instrument(level = "debug", skip_all, fields(pid = plan.pid, vmas = plan.vmas.len()))]
pub fn build_memory(plan: &TaskPlan, parent: Option<&cow::Parent>, ids: &[i32], map_pages: bool, objs: &SharedObjects) -> Result<Premap> {
    raise_nofile();
    set_thp_disabled(plan.mm.thp_disabled.unwrap_or(false))?;
    let floor = fd_floor(&plan.fds);
    let sources: Vec<&PagesPlan> = std::iter::once(&plan.pages).chain(&plan.parent_pages).filter(|p| !p.runs.is_empty()).collect();
    let has_pages = |i: usize| {
        let v = &plan.vmas[i];
        sources.iter().flat_map(|p| &p.runs).any(|r| r.vaddr < v.end && r.vaddr + r.len() > v.start)
    };
    let inherited = |i: usize| parent.and_then(|p| p.inherited(&plan.vmas[i]));
    let shmem = |shmid: u64| objs.shmem.get(&shmid).map(|f| f.as_fd());
    let pm = premap(&plan.vmas, &busy_now(plan, &read_maps(None)?), &has_pages, &|p| open_ro(p, floor), &shmem, &inherited)?;
    if let Some(p) = parent {
        p.release()?;
    }
    // criu-rs's stderr still: progress can be drawn.
    let _phase = crate::progress::installed().then(|| {
        let total = sources.iter().flat_map(|p| &p.runs).map(|r| r.len() / PAGE_SIZE).sum();
        crate::progress::Phase::start("restoring memory", total, std::io::stderr().as_fd())
    });
    let take = |i: usize| pm.placed.iter().any(|p| p.vma == i && p.inherited);
    let mut stats = cow::CowStats::default();
    let mut budget = super::image_map::MAX_MAPPED;
    for pages in &sources {
        let fd = open_ro(&pages.path, floor)?;
        let (shared, mut own) = cow::split(pages, &plan.vmas, &take);
        let mut ways = super::fill::FillWays::default();
        if map_pages && !own.runs.is_empty() {
            own = super::image_map::map_from_image(&pm, &plan.vmas, &own, &fd, &mut budget)?.rest;
            ways.helper = super::image_map::read_with_helper(&own);
        }
        if !own.runs.is_empty() {
            super::fill::fill_with(&pm, &plan.vmas, &own, &fd, ids, ways)?;
        }
        cow::fill_inherited(&pm, &plan.vmas, &shared, &fd, &mut stats)?;
    }
    for p in pm.placed.iter().filter(|p| p.inherited) {
        cow::drop_unshared(p.addr, &plan.vmas[p.vma], &sources, &mut stats)?;
    }
    if pm.placed.iter().any(|p| p.inherited) {
        tracing::debug!(pid = plan.pid, shared = stats.shared, written = stats.written, dropped = stats.dropped, "pages inherited from the parent");
    }
    Ok(pm)
}

/// `mmap(addr, len, PROT_READ|PROT_WRITE or PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE)`.
fn map_fixed(addr: u64, len: u64, writable: bool, what: &str) -> Result<()> {
    let prot = if writable { ProtFlags::READ | ProtFlags::WRITE } else { ProtFlags::empty() };
    let mut flags = MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE;
    if !writable {
        flags |= MapFlags::NORESERVE;
    }
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    unsafe { rustix::mm::mmap_anonymous(addr as *mut c_void, len as usize, prot, flags) }
        .sys(|| format!("mapping the {what} at {addr:#x}+{len:#x}"))?;
    Ok(())
}

/// Finds a hole and adds it to `busy`.
fn take_hole(busy: &mut Vec<(u64, u64)>, len: u64, what: &'static str) -> Result<u64> {
    let at = find_hole(busy, len, PAGE_SIZE, PAGE_SIZE).ok_or(RestoreError::NoHole { size: len, what })?;
    busy.push((at, at + len));
    Ok(at)
}

/// Maps the blob, its argument block + stack, and the bounce area; returns
/// the entry address, the placement and the block's address. `maps_now`:
/// the task's mappings as they are now.
fn place_blob(plan: &TaskPlan, pm: &Premap, fds: &BlobFds, maps_now: &[MapRange]) -> Result<(u64, Placement, u64)> {
    let pkg = crate::pie::embedded().map_err(|e| RestoreError::Prepare(e.to_string()))?;
    let now: SpecialAreas = special_areas(maps_now);
    let dumped_vdso = dumped_vdso_image(plan, pm);
    // The block's size does not depend on where it goes: size it first.
    let sizing = build_args(plan, pm, fds, &Placement::default(), &now, dumped_vdso)?;
    let blob_len = pkg.mem_size().next_multiple_of(PAGE_SIZE);
    let block_len = sizing.len() as u64;
    let mut busy = busy_now(plan, maps_now);
    let stacks = STACK_SIZE * (1 + plan.threads.len() as u64);
    let base = take_hole(&mut busy, blob_len + block_len + stacks, "blob, arguments and stacks")?;
    let largest = plan.vmas.iter().filter(|v| v.is_premapped()).map(|v| v.len()).max().unwrap_or(PAGE_SIZE);
    let bounce = take_hole(&mut busy, largest, "bounce area")?;
    let vvar = super::args::running_vvar(&now);
    let vdso = now.vdso.unwrap_or_default();
    let park_lo = if vvar.len > 0 { vvar.start.min(vdso.0) } else { vdso.0 };
    let park_hi = (vvar.start + vvar.len).max(vdso.1);
    let park_len = park_hi.saturating_sub(park_lo).max(PAGE_SIZE);
    let park = take_hole(&mut busy, park_len, "vDSO parking spot")?;

    let place = Placement {
        blob: MemRange { start: base, len: blob_len },
        args: MemRange { start: base + blob_len, len: block_len + stacks },
        stack: MemRange { start: base + blob_len + block_len, len: stacks },
        premap: MemRange { start: pm.base, len: pm.len },
        bounce: MemRange { start: bounce, len: largest },
        park: MemRange { start: park, len: park_len },
    };
    let loaded = crate::pie::Loaded::map_at(pkg, base as usize)
        .map_err(|e| RestoreError::Prepare(format!("placing the blob: {e}")))?;
    let entry = loaded.entry(RESTORE_ENTRY).ok_or_else(|| RestoreError::Prepare(format!("the blob has no `{RESTORE_ENTRY}` entry")))? as u64;
    // The mapping now belongs to the task; the parent removes it at the end.
    std::mem::forget(loaded);
    map_fixed(place.args.start, place.args.len, true, "argument block")?;
    map_fixed(place.bounce.start, place.bounce.len, false, "bounce area")?;
    let block = build_args(plan, pm, fds, &place, &now, dumped_vdso)?;
    // SAFETY: the args mapping was just created read-write with at least
    // block.len() bytes (same size as the sizing pass).
    unsafe { std::ptr::copy_nonoverlapping(block.as_ptr(), place.args.start as *mut u8, block.len().min(block_len as usize)) };
    Ok((entry, place, place.args.start))
}

/// The dumped vDSO's bytes, read from its premapped copy.
fn dumped_vdso_image<'a>(plan: &TaskPlan, pm: &'a Premap) -> Option<&'a [u8]> {
    let p = pm.placed.iter().find(|p| plan.vmas[p.vma].kind == VmaKind::Vdso)?;
    let v = &plan.vmas[p.vma];
    if v.prot & libc::PROT_READ as u32 == 0 {
        return None;
    }
    // SAFETY: the premapped copy is readable and lives until the blob moves
    // it; the slice is only used while building the arguments.
    Some(unsafe { std::slice::from_raw_parts(p.addr as *const u8, v.len() as usize) })
}

extern "C" {
    /// glibc: offset of this thread's rseq area from the thread pointer.
    static __rseq_offset: isize;
    /// glibc: size of the registered rseq area (0: not registered).
    static __rseq_size: u32;
}

/// The rseq signature glibc registers with on x86_64.
const RSEQ_SIG: u32 = 0x5305_3053;

/// Unregisters the rseq area glibc registered for this thread (inherited
/// from criu-rs): once the old world is unmapped the kernel must not write
/// to it. `rseq(ptr, len, RSEQ_FLAG_UNREGISTER, sig)`.
fn unregister_rseq() {
    // SAFETY: plain reads of glibc's exported constants.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return;
    }
    let tp: u64;
    // SAFETY: reads the thread pointer (fs:0 holds the TCB's own address).
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    let ptr = (tp as i64 + offset as i64) as u64;
    // The registered length is glibc's area size; try it and the original 32.
    for len in [size.max(32), 32, size] {
        // SAFETY: unregistering only stops the kernel writing to the area.
        let r = unsafe { libc::syscall(libc::SYS_rseq, ptr, len, 1, RSEQ_SIG) };
        if r == 0 {
            return;
        }
    }
}
