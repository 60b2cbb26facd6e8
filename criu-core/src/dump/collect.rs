//! Gathering a frozen process's state into a [`ProcessDump`], writing its
//! memory to the pages image on the way.

use super::failpoint;
use super::injected::{self, map_scratch};
use super::memory::MemStats;
use super::model::*;
use super::shared::Shared;
use super::{vmas, DumpError};
use crate::files::reg::{map_file_flags, path_file, DIR_FLAGS};
use crate::files::FilesOptions;
use crate::proc;
use crate::ptrace::freeze::Frozen;
use crate::ptrace::inject::{vdso_syscall_ip, Injector};
use crate::ptrace::raw::{
    ptrace_get_rseq_configuration, ptrace_getsigmask, ptrace_peeksiginfo, ptrace_seccomp_get_filter, ptrace_seccomp_get_metadata,
    RseqConfig,
};
use crate::ptrace::{regs, PtraceError};

/// `get_robust_list(tid, &head, &len)`: a thread's robust futex list.
pub fn get_robust_list(tid: i32) -> Result<(u64, u64), nix::errno::Errno> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: the kernel writes one pointer and one size_t to the addresses given.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &mut head as *mut u64, &mut len as *mut usize) };
    if r < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok((head, len as u64))
}

/// `SCHED_DEADLINE`, whose runtime, deadline and period CRIU's images do
/// not hold.
const SCHED_DEADLINE: i32 = 6;

/// Reads a thread's scheduling policy (with `SCHED_RESET_ON_FORK`), static
/// priority and nice value (`sched_getscheduler`, `sched_getparam`,
/// `getpriority`).
pub fn sched_params(tid: i32) -> Result<(u32, u32, i32), nix::errno::Errno> {
    // SAFETY: sched_getscheduler takes no pointers.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy < 0 {
        return Err(nix::errno::Errno::last());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the kernel writes one sched_param to the pointer given.
    if unsafe { libc::sched_getparam(tid, &mut param) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes no pointers; -1 is a valid result, so errno tells failures.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    if nice == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok((policy as u32, param.sched_priority as u32, nice))
}

/// Credentials as `/proc/.../status` shows them (securebits come from injection).
fn creds_of(status: &proc::status::ProcStatus) -> Creds {
    Creds {
        uid: status.uid,
        gid: status.gid,
        groups: status.groups.clone(),
        caps: [status.cap_inh, status.cap_prm, status.cap_eff, status.cap_bnd, status.cap_amb],
        no_new_privs: status.no_new_privs,
        secbits: 0,
    }
}

/// A thread's seccomp state: its mode from `status` and, in filter mode,
/// every filter (`PTRACE_SECCOMP_GET_FILTER` from the oldest until
/// `ENOENT`, with the flags `PTRACE_SECCOMP_GET_METADATA` reports).
fn seccomp_of(tid: i32, mode: u32) -> Result<Seccomp, DumpError> {
    use nix::errno::Errno;
    let mut filters = Vec::new();
    if mode == SECCOMP_MODE_FILTER {
        for index in 0.. {
            let prog = match ptrace_seccomp_get_filter(tid, index) {
                Ok(p) => p,
                Err(Errno::ENOENT) => break,
                Err(Errno::EMEDIUMTYPE) => {
                    return Err(DumpError::Seccomp { tid, what: format!("filter {index} is not a classic BPF program") })
                }
                Err(e) => return Err(PtraceError::Sys { op: "PTRACE_SECCOMP_GET_FILTER", tid, errno: e }.into()),
            };
            let flags = ptrace_seccomp_get_metadata(tid, index)
                .map_err(|errno| PtraceError::Sys { op: "PTRACE_SECCOMP_GET_METADATA", tid, errno })?;
            filters.push(SeccompFilter { flags: flags as u32, prog });
        }
        if filters.is_empty() {
            return Err(DumpError::Seccomp { tid, what: "filter mode without a filter".into() });
        }
    }
    Ok(Seccomp { mode, filters })
}

/// SIGTRAP in a `SigPnd`/`ShdPnd` mask. A pending one is refused, as CRIU
/// does: calls run in the thread end in a trap, and the kernel would take
/// the pending signal with it (or, were SIGTRAP blocked, reset its handler).
const SIGTRAP_BIT: u64 = 1 << (libc::SIGTRAP - 1);

/// Reads one thread's registers and signal state (no injection).
#[tracing::instrument(level = "debug", skip_all, fields(tid))]
fn thread_state(pid: i32, tid: i32) -> Result<ThreadState, DumpError> {
    let sys = |op| move |errno| PtraceError::Sys { op, tid, errno };
    let rseq = match ptrace_get_rseq_configuration(tid) {
        Ok(c) => c,
        Err(nix::errno::Errno::EIO | nix::errno::Errno::EINVAL) => RseqConfig::default(),
        Err(e) => return Err(sys("PTRACE_GET_RSEQ_CONFIGURATION")(e).into()),
    };
    let comm = proc::read_text(&proc::path(pid, &format!("task/{tid}/comm")))?.trim_end_matches('\n').to_owned();
    let status = proc::status::read_status_file(pid, &format!("task/{tid}/status"))?;
    if status.sig_pnd & SIGTRAP_BIT != 0 {
        return Err(DumpError::PendingSigtrap { tid, queue: "thread" });
    }
    let mut gpregs = regs::get_gpregs(tid)?;
    // Before anything runs in the thread (which would clear rseq_cs).
    let rseq_abort = super::rseq::abort_target(pid, tid, &rseq, gpregs.rip)?;
    if let Some(abort_ip) = rseq_abort {
        tracing::info!(tid, ip = gpregs.rip, abort_ip, "thread inside an rseq critical section: dumped at its abort handler");
        super::rseq::abort_regs(&mut gpregs, abort_ip);
    }
    Ok(ThreadState {
        tid,
        comm,
        gpregs,
        rseq_aborted: rseq_abort.is_some(),
        fpstate: regs::get_fpstate(tid)?,
        sigmask: ptrace_getsigmask(tid).map_err(sys("PTRACE_GETSIGMASK"))?,
        pending: ptrace_peeksiginfo(tid, false).map_err(sys("PTRACE_PEEKSIGINFO"))?,
        altstack: (0, 0, 0),
        clear_tid_addr: 0,
        robust_list: get_robust_list(tid).map_err(sys("get_robust_list"))?,
        rseq,
        sched: match sched_params(tid).map_err(sys("sched_getparam"))? {
            (p, ..) if p as i32 & 0xff == SCHED_DEADLINE => {
                return Err(DumpError::Sched { tid, what: "SCHED_DEADLINE scheduling (CRIU's images hold no runtime, deadline and period)".into() })
            }
            s => s,
        },
        creds: creds_of(&status),
        pdeath_sig: 0,
        seccomp: seccomp_of(tid, status.seccomp)?,
    })
}

/// Runs the injected queries: process-wide ones in the leader, per-thread
/// ones in every thread. Everything is undone before returning, on errors too.
#[tracing::instrument(level = "debug", skip_all, fields(pid, threads = threads.len()))]
fn run_injection(
    pid: i32,
    threads: &mut [ThreadState],
    syscall_ip: Option<u64>,
    timer_ids: &[i32],
    track: &mut super::track::TaskTrack,
    live_uffd: Option<&mut Option<crate::uffd::Uffd>>,
) -> Result<injected::ProcessValues, DumpError> {
    let mut leader = Injector::new(pid, syscall_ip)?;
    let query = injected::process_query(timer_ids);
    let thread_queries: Vec<injected::ThreadQuery> = threads.iter().map(|_| injected::thread_query()).collect();
    let stubs: Vec<&injected::Calls> = std::iter::once(&query.calls).chain(thread_queries.iter().map(|q| &q.calls)).collect();
    let scratch = match map_scratch(&mut leader, pid, &stubs, !failpoint::patch_code_forced()) {
        Ok(s) => s,
        Err(e) => {
            leader.restore()?;
            return Err(e);
        }
    };
    let mut live_uffd = live_uffd;
    let mut work = |leader: &mut Injector| -> Result<injected::ProcessValues, DumpError> {
        let vals = query.values(pid, &scratch.run(leader, pid, 0, &query.calls)?)?;
        if track.want && track.uffd.is_none() {
            track.uffd = Some(super::track::take_task_uffd(leader, pid)?);
        }
        if let Some(out) = live_uffd.as_deref_mut() {
            *out = super::track::take_kernel_uffd(leader, pid, super::live::LIVE_FEATURES)?;
            if out.is_none() {
                tracing::info!(pid, "no userfaultfd for kernel faults in this task (no CAP_SYS_PTRACE, vm.unprivileged_userfaultfd 0): memory copied frozen");
            }
        }
        failpoint::check(failpoint::MID_INJECT)?;
        for (k, (t, q)) in threads.iter_mut().zip(&thread_queries).enumerate() {
            let done = if t.tid == pid {
                scratch.run(leader, pid, k + 1, &q.calls)?
            } else {
                let mut inj = Injector::new(t.tid, syscall_ip)?;
                let r = scratch.run(&mut inj, pid, k + 1, &q.calls);
                inj.restore()?;
                r?
            };
            let tv = q.values(&done)?;
            t.altstack = tv.altstack;
            t.clear_tid_addr = tv.clear_tid_addr;
            t.creds.secbits = tv.secbits;
            t.pdeath_sig = tv.pdeath_sig;
        }
        Ok(vals)
    };
    let res = work(&mut leader);
    let unmapped = scratch.unmap(&mut leader);
    let restored = leader.restore();
    let vals = res?;
    unmapped?;
    restored?;
    Ok(vals)
}

/// Dumps every shared anonymous object mapped by the process that no
/// earlier task of the dump has dumped, each into its own pages image; its
/// size is the largest over every task's mappings (`sh.shmem_sizes`).
fn dump_shmem_objects(
    pid: i32,
    dir: &std::path::Path,
    vmas: &[Vma],
    stats: &mut MemStats,
    sh: &mut Shared,
) -> Result<Vec<ShmemDump>, DumpError> {
    let mut out: Vec<ShmemDump> = Vec::new();
    for v in vmas.iter().filter(|v| v.is_shmem_object()) {
        let shmid = v.map.inode;
        if sh.shmem_done.contains(&shmid) {
            continue;
        }
        sh.shmem_done.push(shmid);
        let size = vmas
            .iter()
            .filter(|o| o.map.inode == shmid && o.is_shmem_object())
            .map(|o| o.map.offset + o.map.len())
            .fold(sh.shmem_size(shmid), u64::max);
        let pages_id = sh.alloc_pages_id();
        let path = dir.join(format!("pages-{pages_id}.img"));
        let mut f = std::fs::File::create(&path).map_err(|source| DumpError::ImagesDir { path, source })?;
        let pagemap = super::memory::dump_shmem(pid, v.map.start, v.map.end, size, &mut f, stats)?;
        out.push(ShmemDump { shmid, size, pages_id, pagemap });
    }
    Ok(out)
}

/// Copies the contents of the memfd inodes first seen in this task (by its
/// fds or areas), each into a pages image of its own, as shared memory
/// objects (`pagemap-shmem-SHMID.img`, SHMID the inode number).
fn dump_memfd_contents(dir: &std::path::Path, stats: &mut MemStats, sh: &mut Shared) -> Result<Vec<ShmemDump>, DumpError> {
    let mut out = Vec::new();
    for c in sh.seen.take_memfd_contents() {
        // Shared anonymous memory mapped privately too: dumped once.
        if sh.shmem_done.contains(&c.shmid) {
            continue;
        }
        sh.shmem_done.push(c.shmid);
        let pages_id = sh.alloc_pages_id();
        let path = dir.join(format!("pages-{pages_id}.img"));
        let mut f = std::fs::File::create(&path).map_err(|source| DumpError::ImagesDir { path, source })?;
        let pagemap = super::memory::dump_shmem_path(&c.path, c.size, &mut f, stats)?;
        out.push(ShmemDump { shmid: c.shmid, size: c.size, pages_id, pagemap });
    }
    Ok(out)
}

/// Collects the descriptors, cwd, root, the executable and the files behind
/// file-backed areas (setting each area's `file_id`). Returns the files and
/// the executable's file id.
#[tracing::instrument(level = "debug", skip_all, fields(pid))]
fn collect_files(pid: i32, vma_list: &mut [Vma], files_opts: FilesOptions, sh: &mut Shared) -> Result<(FilesState, u32), DumpError> {
    let mut next_id = sh.next_file_id;
    let mut files_state = crate::files::dump::collect_fds(pid, &mut next_id, &mut sh.seen, &mut sh.sockets, files_opts)?;
    let cwd_id = next_id;
    let root_id = next_id + 1;
    next_id += 2;
    let limit = files_opts.ghost_limit;
    files_state.files.push(path_file(pid, "cwd", cwd_id, DIR_FLAGS, limit)?);
    files_state.files.push(path_file(pid, "root", root_id, DIR_FLAGS, limit)?);
    let exe_file_id = next_id;
    next_id += 1;
    files_state.files.push(path_file(pid, "exe", exe_file_id, libc::O_RDONLY as u32, limit)?);
    files_state.cwd_id = cwd_id;
    files_state.root_id = root_id;
    // File-backed areas get a file id each (same file opened the same way,
    // same id), with the mode the file was opened in (not the area's
    // protection: a read-only area of a file opened O_RDWR may become
    // writable again with mprotect).
    let mut vma_files: Vec<(((u32, u32), u64), u32, u32)> = Vec::new();
    for v in vma_list.iter_mut() {
        if v.map.inode == 0 || v.status & vmas::status::AREA_REGULAR == 0 || v.status & vmas::status::ANON_SHARED != 0 {
            continue;
        }
        // A memfd's areas, and private ones of shared anonymous memory
        // (as CRIU: an inode named `/dev/zero`), are areas of a memfd inode.
        let memfd_area = crate::files::memfd::is_memfd_link(&format!("{} (deleted)", v.map.path)) && v.map.deleted;
        let shmem_private = vmas::private_shmem(&v.map);
        if memfd_area || shmem_private {
            v.status |= vmas::status::AREA_MEMFD;
        }
        let link = format!("map_files/{:x}-{:x}", v.map.start, v.map.end);
        let key = ((v.map.dev, v.map.inode), map_file_flags(pid, &link)?);
        v.file_id = match vma_files.iter().find(|f| (f.0, f.1) == key) {
            Some(f) => f.2,
            None => {
                let id = next_id;
                next_id += 1;
                vma_files.push((key.0, key.1, id));
                let flags = key.1;
                let target = format!("{}{}", v.map.path, if v.map.deleted { " (deleted)" } else { "" });
                if memfd_area || shmem_private {
                    files_state.files.push(crate::files::memfd::vma_file(pid, &link, &target, id, flags, &mut sh.seen)?);
                } else {
                    files_state.files.push(path_file(pid, &link, id, flags, limit)?);
                }
                id
            }
        };
    }
    sh.next_file_id = next_id;
    Ok((files_state, exe_file_id))
}

/// How a task's private pages are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemCopy {
    /// Now, while the task is frozen.
    Frozen,
    /// Later while it runs, exactly as at the freeze ([`super::live`]).
    Exact,
    /// Later while it runs, as they are then (pre-dump: tracking fixes it).
    Tracked,
}

/// A task's private memory left to copy once the tree runs.
#[derive(Debug)]
pub struct PendingCopy {
    /// What to copy.
    pub plan: super::memory::PrivatePlan,
    /// How.
    pub live: std::sync::Arc<super::live::TaskLive>,
}

/// Collects everything about the frozen process and writes its memory to
/// `pages` (with `copy` other than [`MemCopy::Frozen`], prepares the copy
/// and returns it as pending; `pagemap` is then empty). Returns the state,
/// the memory counters and the memory time.
#[tracing::instrument(level = "debug", skip_all, fields(pid = fr.pid()))]
pub fn collect(
    fr: &Frozen,
    dir: &std::path::Path,
    pages: &mut std::fs::File,
    files_opts: FilesOptions,
    sh: &mut Shared,
    track: &mut super::track::TaskTrack,
    copy: MemCopy,
    armed: Option<std::sync::Arc<super::live::TaskLive>>,
    smaps_ahead: Option<&[proc::maps::MapEntry]>,
) -> Result<(ProcessDump, MemStats, std::time::Duration, Option<PendingCopy>), DumpError> {
    let pid = fr.pid();
    failpoint::check(failpoint::AFTER_FREEZE)?;
    let stat = proc::stat::read_stat(pid)?;
    let status = proc::status::read_status(pid)?;
    if status.vm_pin_kb != 0 {
        return Err(DumpError::Unsupported { pid, what: vmas::pinned_memory(status.vm_pin_kb) });
    }
    if status.shd_pnd & SIGTRAP_BIT != 0 {
        return Err(DumpError::PendingSigtrap { tid: pid, queue: "shared" });
    }
    let mut threads = fr.tids().into_iter().map(|tid| thread_state(pid, tid)).collect::<Result<Vec<_>, _>>()?;
    let shared_pending = ptrace_peeksiginfo(pid, true).map_err(|errno| PtraceError::Sys { op: "PTRACE_PEEKSIGINFO", tid: pid, errno })?;
    let ptimers = proc::misc::read_timers(pid)?;
    let timer_ids: Vec<i32> = ptimers.iter().map(|t| t.id).collect();

    // Only the vDSO is looked for: `maps` (no page counting) will do.
    let maps_before = proc::maps::read_maps(pid)?;
    let syscall_ip = if failpoint::patch_code_forced() { None } else { vdso_syscall_ip(pid, &maps_before) };
    let mut live_uffd = None;
    let want_live = (copy == MemCopy::Exact && armed.is_none()).then_some(&mut live_uffd);
    let vals = run_injection(pid, &mut threads, syscall_ip, &timer_ids, track, want_live)?;
    // Threads dumped at their rseq abort handler go on from there too
    // (when let go), as the kernel would have sent them.
    for t in threads.iter().filter(|t| t.rseq_aborted) {
        regs::set_gpregs(t.tid, &t.gpregs)?;
    }
    failpoint::check(failpoint::AFTER_INJECT)?;

    // The address space as it is with nothing of ours in it; the areas'
    // `VmFlags` from smaps read before the freeze when the areas are still
    // those (a live copy checks them again afterwards, see [`super::live`]).
    let maps = match smaps_ahead {
        Some(ahead) => {
            let _span = tracing::debug_span!("maps_with_flags_ahead").entered();
            match proc::maps::with_flags_of(proc::maps::read_maps(pid)?, ahead) {
                Some(maps) => maps,
                None => {
                    tracing::debug!(pid, "areas changed since smaps was read: read again frozen");
                    proc::maps::read_smaps(pid)?
                }
            }
        }
        None => {
            let _span = tracing::debug_span!("read_smaps").entered();
            proc::maps::read_smaps(pid)?
        }
    };
    let mut vma_list: Vec<super::model::Vma> = maps.iter().map(vmas::classify).collect();
    for v in &vma_list {
        tracing::debug!(
            start = format_args!("{:#x}", v.map.start),
            end = format_args!("{:#x}", v.map.end),
            prot = v.prot,
            flags = format_args!("{:#x}", v.mmap_flags),
            status = format_args!("{:#x}", v.status),
            "VMA {}",
            v.map.path
        );
    }
    if let Some(bad) = vma_list.iter().find(|v| v.status & vmas::status::UNSUPP != 0) {
        let m = &bad.map;
        return Err(DumpError::UnsupportedVma(format!("{:#x}-{:#x} {}: {}", m.start, m.end, m.path, vmas::unsupported_reason(m))));
    }
    super::sysv::check_attachments(pid, &vma_list)?;
    let t_mem = std::time::Instant::now();
    let pm = proc::pagemap::Pagemap::open(pid)?;
    let mut guards = Vec::new();
    let _guard_span = tracing::debug_span!("scan_guards").entered();
    if !pm.scan_guards(0, crate::restore::hole::TASK_SIZE, &mut guards)? {
        tracing::debug!(pid, "the kernel does not report guard regions (PAGE_IS_GUARD)");
    }
    drop(_guard_span);
    let inc = track.prepare(&pm, &vma_list)?;
    let plan = super::memory::plan_private(&pm, &vma_list, inc.as_ref())?;
    if copy == MemCopy::Exact && (armed.is_some() || live_uffd.is_some()) {
        // The parent's tracking descriptor holds the areas: the
        // write-protection of this copy needs them (tracking ends here).
        if let Some(old) = &track.uffd {
            for a in &plan.areas {
                // Not what was moved to the live copy's descriptor already.
                for (s, e) in super::track::outside(&track.swapped, a.start, a.end) {
                    let _ = old.unregister(s, e - s);
                }
            }
        }
    }
    let (pagemap, mut mem_stats, pending) = match (copy, live_uffd, armed) {
        (MemCopy::Exact, _, Some(live)) => {
            live.arm_frozen(&pm, &plan.areas)?;
            (Vec::new(), MemStats::default(), Some(PendingCopy { plan, live }))
        }
        (MemCopy::Exact, Some(uffd), None) => {
            let live = super::live::TaskLive::protect(pid, uffd, &pm, &plan.areas)?;
            (Vec::new(), MemStats::default(), Some(PendingCopy { plan, live: std::sync::Arc::new(live) }))
        }
        (MemCopy::Tracked, ..) => {
            let live = super::live::TaskLive::tracked(pid, &plan.areas);
            (Vec::new(), MemStats::default(), Some(PendingCopy { plan, live: std::sync::Arc::new(live) }))
        }
        _ => {
            let mut batches = 0u32;
            let (pagemap, stats) = super::memory::copy_private(pid, plan, pages, None, || {
                batches += 1;
                if batches == 1 {
                    failpoint::check(failpoint::MID_MEMORY)?;
                }
                Ok(())
            })?;
            (pagemap, stats, None)
        }
    };
    let shmem = dump_shmem_objects(pid, dir, &vma_list, &mut mem_stats, sh)?;
    let memdump_time = t_mem.elapsed();

    let (files_state, exe_file_id) = collect_files(pid, &mut vma_list, files_opts, sh)?;
    let mut shmem = shmem;
    shmem.extend(dump_memfd_contents(dir, &mut mem_stats, sh)?);

    let creds = threads[0].creds.clone();
    let posix_timers = ptimers
        .into_iter()
        .zip(vals.timers.iter())
        .map(|(p, t)| PosixTimer { proc: p, overrun: t.overrun, interval: t.interval, value: t.value })
        .collect();
    let task = TaskState {
        comm: stat.comm.clone(),
        personality: proc::misc::read_personality(pid)?,
        flags: stat.flags,
        exit_signal: stat.exit_signal,
        sigactions: vals.sigactions.clone(),
        rlimits: proc::limits::read_limits(pid)?,
        itimers: vals.itimers,
        posix_timers,
        shared_pending,
        dumpable: vals.dumpable,
        pdeath_sig: vals.pdeath_sig,
        child_subreaper: vals.child_subreaper,
        thp_disabled: vals.thp_disabled,
        seccomp_mode: status.seccomp,
        umask: status.umask.unwrap_or(0o022),
        loginuid: proc::read_text(&proc::path(pid, "loginuid")).ok().and_then(|s| s.trim().parse::<u32>().ok()),
        oom_score_adj: {
            let path = proc::path(pid, "oom_score_adj");
            let text = proc::read_text(&path)?;
            text.trim().parse().map_err(|_| proc::ProcError::Parse { path, what: "a number", line: text.clone() })?
        },
        stop_signo: fr.stop_signo().map(|s| s as u32),
        membarrier_mask: vals.membarrier_mask,
    };
    let mm = MmState {
        start_code: stat.start_code,
        end_code: stat.end_code,
        start_data: stat.start_data,
        end_data: stat.end_data,
        start_stack: stat.start_stack,
        start_brk: stat.start_brk,
        brk: vals.brk,
        arg_start: stat.arg_start,
        arg_end: stat.arg_end,
        env_start: stat.env_start,
        env_end: stat.env_end,
        auxv: proc::misc::read_auxv(pid)?,
        exe: proc::misc::read_link(pid, "exe")?.to_string_lossy().into_owned(),
        exe_file_id,
        vmas: vma_list,
        guards,
    };
    let dump = ProcessDump {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgid,
        sid: stat.sid,
        task,
        threads,
        creds,
        mm,
        pagemap,
        shmem,
        files: files_state,
        pages_id: super::PAGES_ID,
        kobj: KobjIds::own(pid),
    };
    Ok((dump, mem_stats, memdump_time, pending))
}
