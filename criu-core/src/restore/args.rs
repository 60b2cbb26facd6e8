//! Converting a [`TaskPlan`] into the blob's argument block
//! ([`crate::abi::RestoreArgs`] and the arrays it points to).
//!
//! The block is position independent (arrays are offsets from its start);
//! only the header's ranges and the thread stack carry absolute addresses,
//! which come from a [`Placement`] chosen once the block's size is known.

use super::error::{RestoreError, Result};
use super::maps::SpecialAreas;
use super::plan::{TaskPlan, VmaKind, PAGE_SIZE};
use super::premap::Premap;
use super::xsave::xsave_area;
use crate::abi::*;
use crate::images::pb;

/// Where the blob, the block, its stack and the scratch ranges live in the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    pub blob: MemRange,
    /// The whole argument mapping: block, then the thread stacks.
    pub args: MemRange,
    /// Every thread's stack, [`STACK_SIZE`] bytes each, thread 0 first.
    pub stack: MemRange,
    pub premap: MemRange,
    pub bounce: MemRange,
    pub park: MemRange,
}

/// fds the task holds for the blob.
#[derive(Debug, Clone, Default)]
pub struct BlobFds {
    /// `(VMA index, fd)` for every shared file mapping.
    pub shared: Vec<(usize, i32)>,
    /// Where the blob writes a line on failure (-1: nowhere).
    pub log: i32,
    /// The executable, for `PR_SET_MM_MAP` (-1: leave it).
    pub exe: i32,
    /// The userfaultfd for the `lazy` VMAs (see [`super::lazy`]).
    pub uffd: i32,
    /// Indices of the VMAs the blob registers with `uffd`.
    pub lazy: Vec<usize>,
}

/// Bytes of blob stack per thread (thread i's stack is the i-th slice of
/// [`Placement::stack`]): the blob's reserve plus room for the rt_sigframe
/// with an XSAVE area of up to ~11 KiB.
pub const STACK_SIZE: u64 = THREAD_STACK_RESERVE + 64 * 1024;

/// The argument block being assembled.
struct Block {
    buf: Vec<u8>,
}

impl Block {
    fn new() -> Self {
        Block { buf: vec![0u8; std::mem::size_of::<RestoreArgs>()] }
    }

    /// Appends `items` (16-byte aligned) and returns where they are.
    fn push<T: Copy>(&mut self, items: &[T]) -> ArgArray {
        let bytes = std::mem::size_of_val(items);
        // SAFETY: T is one of the plain-integer #[repr(C)] ABI structs (or an
        // integer), so viewing it as bytes is sound.
        let raw = unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), bytes) };
        let off = self.push_raw(raw);
        ArgArray { off, count: if items.is_empty() { 0 } else { items.len() as u64 } }
    }

    /// Appends raw bytes (16-byte aligned); `count` is their length.
    fn push_bytes(&mut self, bytes: &[u8]) -> ArgArray {
        let off = self.push_raw(bytes);
        ArgArray { off, count: bytes.len() as u64 }
    }

    fn push_raw(&mut self, raw: &[u8]) -> u64 {
        self.buf.resize(self.buf.len().next_multiple_of(64), 0);
        let off = self.buf.len() as u64;
        self.buf.extend_from_slice(raw);
        off
    }

    fn finish(mut self, head: &RestoreArgs) -> Vec<u8> {
        // SAFETY: RestoreArgs is a plain-integer #[repr(C)] struct.
        let raw = unsafe {
            std::slice::from_raw_parts((head as *const RestoreArgs).cast::<u8>(), std::mem::size_of::<RestoreArgs>())
        };
        self.buf[..raw.len()].copy_from_slice(raw);
        self.buf.resize(self.buf.len().next_multiple_of(PAGE_SIZE as usize), 0);
        self.buf
    }
}

/// Builds the argument block for `plan`. `premap` says where each private
/// VMA was built, `now` where the running vDSO/vvar are, `dumped_vdso`
/// holds the dumped vDSO's bytes (its premapped copy) for symbol lookup.
pub fn build_args(
    plan: &TaskPlan,
    premap: &Premap,
    fds: &BlobFds,
    place: &Placement,
    now: &SpecialAreas,
    dumped_vdso: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let core_file = || format!("core-{}.img", plan.pid);
    let tc = plan.core.tc.as_ref().ok_or_else(|| RestoreError::bad(core_file(), "no task core"))?;
    let mut b = Block::new();

    let mut vmas = Vec::with_capacity(plan.vmas.len());
    for (i, v) in plan.vmas.iter().enumerate() {
        let premap_addr = premap.placed.iter().find(|p| p.vma == i).map_or(0, |p| p.addr);
        let (kind, fd) = match &v.kind {
            VmaKind::Anon | VmaKind::PrivateFile { .. } | VmaKind::PrivateShmem { .. } => (VMA_PREMAPPED, -1),
            VmaKind::Vdso => (VMA_VDSO, -1),
            VmaKind::Vvar => (VMA_VVAR, -1),
            VmaKind::SharedFile { .. } | VmaKind::Shmem { .. } => {
                let fd = fds.shared.iter().find(|(vi, _)| *vi == i).map(|&(_, fd)| fd).unwrap_or(-1);
                (VMA_FILE_SHARED, fd)
            }
            VmaKind::SysvShm { shmid, .. } => (VMA_SYSV_SHM, *shmid),
            VmaKind::Vsyscall => continue,
        };
        vmas.push(VmaArg {
            start: v.start,
            end: v.end,
            premap: premap_addr,
            pgoff: v.pgoff,
            prot: v.prot,
            flags: v.flags,
            kind,
            fd,
            madv: v.madv,
            vflags: if v.grows_down() { VMA_F_GROWSDOWN } else { 0 }
                | if fds.lazy.binary_search(&i).is_ok() { VMA_F_LAZY } else { 0 }
                | if v.lock_on_fault { VMA_F_LOCK_ONFAULT } else { 0 }
                | if matches!(v.kind, VmaKind::SysvShm { read_only: true, .. }) { VMA_F_SHM_RDONLY } else { 0 },
            _pad: 0,
        });
    }
    let scratch_len = vmas.len() as u64 * PLAN_SCRATCH_PER_VMA;
    let vmas = b.push(&vmas);
    let scratch_off = b.push_bytes(&vec![0u8; scratch_len as usize]).off;

    let shared_sigs = b.push(&siginfos(&tc.signals_s));
    let mut threads = Vec::with_capacity(1 + plan.threads.len());
    let cores = std::iter::once((plan.pid, &*plan.core)).chain(plan.threads.iter().map(|(tid, c)| (*tid, c)));
    for (i, (tid, core)) in cores.enumerate() {
        let stack = MemRange { start: place.stack.start + i as u64 * STACK_SIZE, len: STACK_SIZE };
        let mut t = thread_arg(&mut b, tid, core, tc.blk_sigset.unwrap_or_default(), stack)?;
        let creds = plan.creds.iter().find(|(id, _)| *id == tid).map(|(_, c)| c);
        let creds = creds.ok_or_else(|| RestoreError::bad(format!("core-{tid}.img"), "no credentials"))?;
        t.creds = creds.to_arg(b.push(&creds.groups));
        // The root's parent is criu-rs, which goes away.
        if plan.root {
            t.pdeath_sig = 0;
        }
        let tc = core.thread_core.as_ref();
        match tc.and_then(|t| t.sched_policy) {
            Some(policy) => {
                t.sched_policy = check_sched_policy(policy).map_err(|what| RestoreError::Unsupported { file: format!("core-{tid}.img").into(), what })?;
                t.sched_prio = tc.and_then(|t| t.sched_prio).unwrap_or(0);
                t.sched_nice = tc.and_then(|t| t.sched_nice).unwrap_or(0);
            }
            None => t.sched_policy = -1,
        }
        if let Some((_, sc)) = plan.seccomp.iter().find(|(id, _)| *id == tid) {
            t.seccomp_mode = sc.mode;
            let filters: Vec<SeccompFilterArg> =
                sc.filters.iter().map(|f| SeccompFilterArg { flags: f.flags, _pad: 0, prog: b.push_bytes(&f.prog) }).collect();
            t.seccomp_filters = b.push(&filters);
        }
        threads.push(t);
    }
    let threads = b.push(&threads);
    let sigactions = b.push(&sigactions(&tc.sigactions).map_err(|p| RestoreError::bad(core_file(), p))?);
    let posix: Vec<PosixTimerArg> = tc.timers.iter().flat_map(|t| &t.posix).map(posix_timer).collect();
    let posix_timers = b.push(&posix);
    let rl: Vec<RlimitArg> = tc
        .rlimits
        .iter()
        .flat_map(|r| r.rlimits.iter().enumerate())
        .map(|(i, r)| RlimitArg { resource: i as u32, _pad: 0, cur: r.cur.unwrap_or_default(), max: r.max.unwrap_or_default() })
        .filter(|_| !super::failpoint::skip(super::failpoint::SKIP_RLIMITS))
        .collect();
    let rlimits = b.push(&rl);
    let guards: Vec<MemRange> = plan.guards.iter().map(|&(start, end)| MemRange { start, len: end - start }).collect();
    let guards = b.push(&guards);
    let mut flags = RESTORE_F_PERSONALITY | RESTORE_F_MM | RESTORE_F_CREDS;
    // PR_SET_DUMPABLE takes 0 or 1 only (2, "suid dumpable", is not settable).
    if matches!(plan.mm.dumpable, Some(0 | 1)) {
        flags |= RESTORE_F_DUMPABLE;
    }
    if std::env::var_os("CRIU_RS_FAIL_AT").is_some_and(|v| v == "blob-crash") {
        // Tests of the crash report: the blob faults on purpose.
        flags |= RESTORE_F_TEST_CRASH;
    }
    let auxv: Vec<u8> = plan.mm.auxv().iter().flat_map(|w| w.to_le_bytes()).collect();
    let mm = mm_arg(&plan.mm, b.push_bytes(&auxv), fds.exe);
    let timers = tc.timers.clone().unwrap_or_default();
    let head = RestoreArgs {
        magic: RESTORE_MAGIC,
        version: RESTORE_VERSION,
        header_size: std::mem::size_of::<RestoreArgs>() as u32,
        total_size: 0,
        flags,
        status: RestoreStatus::default(),
        log_fd: fds.log,
        _pad0: 0,
        task_size: super::hole::TASK_SIZE,
        page_size: PAGE_SIZE,
        blob: place.blob,
        args: place.args,
        premap: place.premap,
        bounce: place.bounce,
        vmas,
        threads,
        sigactions,
        shared_siginfos: shared_sigs,
        itimers: [itimer(&timers.real), itimer(&timers.virt), itimer(&timers.prof)],
        posix_timers,
        rlimits,
        personality: tc.personality.unwrap_or_default(),
        _pad1: 0,
        mm,
        vdso: vdso_arg(plan, now, place.park, dumped_vdso),
        scratch: MemRange { start: place.args.start + scratch_off, len: scratch_len },
        // The task unregisters its inherited rseq area before the jump.
        cur_rseq: RseqArg::default(),
        // Without lazy VMAs the blob ignores it.
        uffd: if fds.lazy.is_empty() { -1 } else { fds.uffd },
        _pad2: 0,
        dumpable: plan.mm.dumpable.unwrap_or(1).clamp(0, 1) as u32,
        creds_done: 0,
        membarrier_mask: membarrier_mask(tc.membarrier_registration_mask.unwrap_or(0))
            .map_err(|what| RestoreError::Unsupported { file: core_file().into(), what })?,
        _pad3: 0,
        guards,
    };
    let total = b.buf.len().next_multiple_of(PAGE_SIZE as usize) as u64;
    Ok(b.finish(&RestoreArgs { total_size: total, ..head }))
}

/// `SCHED_RESET_ON_FORK`, which a dumped policy may carry.
const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;

/// A dumped scheduling policy the blob can set with `sched_setscheduler`:
/// SCHED_OTHER, FIFO, RR, BATCH or IDLE (SCHED_DEADLINE needs more than
/// the image holds).
pub(super) fn check_sched_policy(policy: u32) -> std::result::Result<i32, String> {
    match policy & !SCHED_RESET_ON_FORK {
        0 | 1 | 2 | 3 | 5 => Ok(policy as i32),
        6 => Err("SCHED_DEADLINE scheduling (its runtime, deadline and period are not in the image)".into()),
        p => Err(format!("scheduling policy {p}")),
    }
}

/// A dumped membarrier registration mask, refused if it names a command
/// the blob does not register.
pub(super) fn membarrier_mask(mask: u32) -> std::result::Result<u32, String> {
    let known = MEMBARRIER_REGISTER_CMDS.iter().fold(0, |a, c| a | c);
    match mask & !known {
        0 => Ok(mask),
        bad => Err(format!("membarrier registrations {bad:#x}")),
    }
}

/// Siginfos of a signal queue, each exactly [`SIGINFO_SIZE`] bytes (siginfo
/// arrays count siginfos, not bytes).
fn siginfos(q: &Option<pb::SignalQueueEntry>) -> Vec<[u8; SIGINFO_SIZE]> {
    q.iter().flat_map(|q| &q.signals).map(|s| siginfo_bytes(s.siginfo.as_deref().unwrap_or(&[]))).collect()
}

/// One thread's registers and per-thread state from its `core-TID.img`
/// (`task_mask`: the process's mask, for a core without its own).
fn thread_arg(b: &mut Block, tid: i32, core: &pb::CoreEntry, task_mask: u64, stack: MemRange) -> Result<ThreadArg> {
    let file = || format!("core-{tid}.img");
    let ti = core.thread_info.as_ref().ok_or_else(|| RestoreError::bad(file(), "no thread_info"))?;
    let th = core.thread_core.clone().unwrap_or_default();
    let xsave = match &ti.fpregs {
        Some(fp) => b.push_bytes(&xsave_area(fp)),
        None => ArgArray::default(),
    };
    let mut comm = [0u8; 16];
    let name = th.comm.as_deref().or(core.tc.as_ref().and_then(|tc| tc.comm.as_deref())).unwrap_or("");
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name.as_bytes()[..n]);
    Ok(ThreadArg {
        tid,
        gpregs: gpregs(ti.gpregs.as_ref().ok_or_else(|| RestoreError::bad(file(), "no gpregs"))?),
        xsave,
        sigmask: if super::failpoint::skip(super::failpoint::SKIP_SIGMASK) { 0 } else { th.blk_sigset.unwrap_or(task_mask) },
        sas_sp: th.sas.as_ref().and_then(|s| s.ss_sp).unwrap_or_default(),
        sas_flags: th.sas.as_ref().and_then(|s| s.ss_flags).map_or(libc::SS_DISABLE, |f| f as i32),
        sas_size: th.sas.as_ref().and_then(|s| s.ss_size).unwrap_or_default(),
        clear_child_tid: ti.clear_tid_addr.unwrap_or_default(),
        rseq_ptr: th.rseq_entry.as_ref().and_then(|r| r.rseq_abi_pointer).unwrap_or_default(),
        rseq_len: th.rseq_entry.as_ref().and_then(|r| r.rseq_abi_size).unwrap_or_default(),
        rseq_sig: th.rseq_entry.as_ref().and_then(|r| r.signature).unwrap_or_default(),
        siginfos: b.push(&siginfos(&th.signals_p)),
        stack,
        comm,
        pdeath_sig: th.pdeath_sig.unwrap_or_default(),
        ..Default::default()
    })
}

/// An interval timer. An armed periodic timer dumped with a zero value (it
/// was about to fire) gets 1 µs, since a zero value would disarm it.
fn itimer(t: &Option<pb::ItimerEntry>) -> ItimerArg {
    let Some(t) = t else { return ItimerArg::default() };
    let mut a = ItimerArg {
        interval_sec: t.isec.unwrap_or_default() as i64,
        interval_usec: t.iusec.unwrap_or_default() as i64,
        value_sec: t.vsec.unwrap_or_default() as i64,
        value_usec: t.vusec.unwrap_or_default() as i64,
    };
    if a.value_sec == 0 && a.value_usec == 0 && (a.interval_sec != 0 || a.interval_usec != 0) {
        a.value_usec = 1;
    }
    a
}

/// A dumped siginfo as exactly [`SIGINFO_SIZE`] bytes.
fn siginfo_bytes(raw: &[u8]) -> [u8; SIGINFO_SIZE] {
    let mut s = [0u8; SIGINFO_SIZE];
    let n = raw.len().min(SIGINFO_SIZE);
    s[..n].copy_from_slice(&raw[..n]);
    s
}

/// `user_regs_struct` order from CRIU's register entry, with an interrupted
/// system call set up to restart (as the kernel would on signal return).
fn gpregs(r: &pb::UserX86RegsEntry) -> [u64; GPREGS_WORDS] {
    let g = |v: Option<u64>| v.unwrap_or_default();
    let mut w = [0u64; GPREGS_WORDS];
    w[gpreg::R15] = g(r.r15);
    w[gpreg::R14] = g(r.r14);
    w[gpreg::R13] = g(r.r13);
    w[gpreg::R12] = g(r.r12);
    w[gpreg::RBP] = g(r.bp);
    w[gpreg::RBX] = g(r.bx);
    w[gpreg::R11] = g(r.r11);
    w[gpreg::R10] = g(r.r10);
    w[gpreg::R9] = g(r.r9);
    w[gpreg::R8] = g(r.r8);
    w[gpreg::RAX] = g(r.ax);
    w[gpreg::RCX] = g(r.cx);
    w[gpreg::RDX] = g(r.dx);
    w[gpreg::RSI] = g(r.si);
    w[gpreg::RDI] = g(r.di);
    w[gpreg::ORIG_RAX] = g(r.orig_ax);
    w[gpreg::RIP] = g(r.ip);
    w[gpreg::CS] = g(r.cs);
    w[gpreg::EFLAGS] = g(r.flags);
    w[gpreg::RSP] = g(r.sp);
    w[gpreg::SS] = g(r.ss);
    w[gpreg::FS_BASE] = g(r.fs_base);
    w[gpreg::GS_BASE] = g(r.gs_base);
    w[gpreg::DS] = g(r.ds);
    w[gpreg::ES] = g(r.es);
    w[gpreg::FS] = g(r.fs);
    w[gpreg::GS] = g(r.gs);
    restart_syscall(&mut w);
    w
}

/// Kernel-internal restart codes a task stopped in a system call reports.
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Rewinds an interrupted system call so it runs again after restore.
fn restart_syscall(w: &mut [u64; GPREGS_WORDS]) {
    if (w[gpreg::ORIG_RAX] as i64) < 0 {
        return;
    }
    match -(w[gpreg::RAX] as i64) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            w[gpreg::RAX] = w[gpreg::ORIG_RAX];
            w[gpreg::RIP] -= 2;
        }
        ERESTART_RESTARTBLOCK => {
            w[gpreg::RAX] = libc::SYS_restart_syscall as u64;
            w[gpreg::RIP] -= 2;
        }
        _ => {}
    }
}

/// 64 sigactions (signal n at n-1) from CRIU's list, which has either all
/// 64 or skips SIGKILL and SIGSTOP.
fn sigactions(list: &[pb::SaEntry]) -> std::result::Result<Vec<SigactionArg>, String> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let signals: Vec<usize> = match list.len() {
        64 => (1..=64).collect(),
        62 => (1..=64).filter(|&s| s != libc::SIGKILL as usize && s != libc::SIGSTOP as usize).collect(),
        n => return Err(format!("{n} sigactions (expected 62 or 64)")),
    };
    let mut out = vec![SigactionArg::default(); 64];
    for (sa, sig) in list.iter().zip(signals) {
        if sa.compat_sigaction == Some(true) {
            return Err(format!("signal {sig}: compat (32-bit) sigaction"));
        }
        out[sig - 1] = SigactionArg {
            handler: sa.sigaction.unwrap_or_default(),
            flags: sa.flags.unwrap_or_default(),
            restorer: sa.restorer.unwrap_or_default(),
            mask: sa.mask.unwrap_or_default(),
        };
    }
    Ok(out)
}

fn posix_timer(t: &pb::PosixTimerEntry) -> PosixTimerArg {
    PosixTimerArg {
        timer_id: t.it_id.unwrap_or_default() as i32,
        clock_id: t.clock_id.unwrap_or_default() as i32,
        sigev_notify: t.it_sigev_notify.unwrap_or_default() as i32,
        sigev_signo: t.si_signo.unwrap_or_default() as i32,
        sigev_value: t.sival_ptr.unwrap_or_default(),
        notify_thread_id: t.notify_thread_id.unwrap_or_default(),
        overrun: t.overrun.unwrap_or_default() as i32,
        interval_sec: t.isec.unwrap_or_default() as i64,
        interval_nsec: t.insec.unwrap_or_default() as i64,
        value_sec: t.vsec.unwrap_or_default() as i64,
        value_nsec: t.vnsec.unwrap_or_default() as i64,
    }
}

fn mm_arg(mm: &pb::MmEntry, auxv: ArgArray, exe_fd: i32) -> MmMapArg {
    MmMapArg {
        start_code: mm.mm_start_code.unwrap_or_default(),
        end_code: mm.mm_end_code.unwrap_or_default(),
        start_data: mm.mm_start_data.unwrap_or_default(),
        end_data: mm.mm_end_data.unwrap_or_default(),
        start_brk: mm.mm_start_brk.unwrap_or_default(),
        brk: mm.mm_brk.unwrap_or_default(),
        start_stack: mm.mm_start_stack.unwrap_or_default(),
        arg_start: mm.mm_arg_start.unwrap_or_default(),
        arg_end: mm.mm_arg_end.unwrap_or_default(),
        env_start: mm.mm_env_start.unwrap_or_default(),
        env_end: mm.mm_env_end.unwrap_or_default(),
        auxv,
        exe_fd,
        _pad: 0,
    }
}

/// Span of every VMA of `kind` in the dump, as one range (len 0: none).
fn dumped_span(plan: &TaskPlan, kind: VmaKind) -> MemRange {
    let mut it = plan.vmas.iter().filter(|v| v.kind == kind);
    let Some(first) = it.next() else { return MemRange::default() };
    let (s, e) = it.fold((first.start, first.end), |(s, e), v| (s.min(v.start), e.max(v.end)));
    MemRange { start: s, len: e - s }
}

fn range(r: Option<(u64, u64)>) -> MemRange {
    r.map_or(MemRange::default(), |(s, e)| MemRange { start: s, len: e - s })
}

/// The running vvar pages: `[vvar]` through `[vvar_vclock]`.
pub fn running_vvar(now: &SpecialAreas) -> MemRange {
    match (now.vvar, now.vvar_vclock) {
        (Some((s1, e1)), Some((s2, e2))) => {
            let (s, e) = (s1.min(s2), e1.max(e2));
            MemRange { start: s, len: e - s }
        }
        (a, b) => range(a.or(b)),
    }
}

fn vdso_arg(plan: &TaskPlan, now: &SpecialAreas, park: MemRange, dumped_vdso: Option<&[u8]>) -> VdsoArg {
    let mut dumped_syms = [VDSO_SYM_ABSENT; VDSO_NSYMS];
    if let Some(image) = dumped_vdso {
        for (slot, name) in dumped_syms.iter_mut().zip(VDSO_SYM_NAMES) {
            *slot = super::vdso::symbol_offset(image, name).unwrap_or(VDSO_SYM_ABSENT);
        }
    }
    VdsoArg {
        running_vdso: range(now.vdso),
        running_vvar: running_vvar(now),
        park,
        dumped_vdso: dumped_span(plan, VmaKind::Vdso),
        dumped_vvar: dumped_span(plan, VmaKind::Vvar),
        dumped_syms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_syscalls_restart() {
        let mut w = [0u64; GPREGS_WORDS];
        w[gpreg::ORIG_RAX] = 7;
        w[gpreg::RAX] = (-ERESTARTSYS) as u64;
        w[gpreg::RIP] = 0x1002;
        restart_syscall(&mut w);
        assert_eq!((w[gpreg::RAX], w[gpreg::RIP]), (7, 0x1000));
        w[gpreg::ORIG_RAX] = u64::MAX;
        w[gpreg::RAX] = 5;
        restart_syscall(&mut w);
        assert_eq!((w[gpreg::RAX], w[gpreg::RIP]), (5, 0x1000));
    }

    /// The block holds the head at offset 0, then each array 64-byte
    /// aligned where its ArgArray says, and ends on a page boundary.
    #[test]
    fn the_block_holds_the_head_and_every_array_where_it_says() {
        let mut b = Block::new();
        let words = b.push(&[0x1111_2222u32, 0x3333_4444, 0x5555_6666]);
        let none = b.push::<u64>(&[]);
        let bytes = b.push_bytes(b"seven b");
        let ranges = b.push(&[MemRange { start: 0x7000, len: 0x2000 }]);
        let head = RestoreArgs { magic: RESTORE_MAGIC, total_size: 0x1234, rlimits: words, guards: ranges, ..Default::default() };
        let buf = b.finish(&head);
        let head_size = std::mem::size_of::<RestoreArgs>();
        assert!(buf.len() >= head_size + 64 * 4, "{} bytes", buf.len());
        assert_eq!(buf.len() % PAGE_SIZE as usize, 0, "whole pages");
        // SAFETY: RestoreArgs is a plain-integer #[repr(C)] struct; the
        // buffer holds one at offset 0 (read unaligned).
        let back = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<RestoreArgs>()) };
        assert_eq!((back.magic, back.total_size, back.rlimits, back.guards), (RESTORE_MAGIC, 0x1234, words, ranges));
        assert_eq!((words.off as usize, words.count), (head_size.next_multiple_of(64), 3));
        let at = |a: ArgArray, len: usize| &buf[a.off as usize..a.off as usize + len];
        let w: Vec<u32> = at(words, 12).chunks(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(w, [0x1111_2222, 0x3333_4444, 0x5555_6666]);
        assert_eq!(none.count, 0);
        assert_eq!((bytes.count, at(bytes, 7)), (7, &b"seven b"[..]));
        assert!(bytes.off > words.off && ranges.off > bytes.off);
        assert!([words, none, bytes, ranges].iter().all(|a| a.off % 64 == 0), "64-byte aligned");
        let r = at(ranges, 16);
        assert_eq!((u64::from_ne_bytes(r[..8].try_into().unwrap()), u64::from_ne_bytes(r[8..].try_into().unwrap())), (0x7000, 0x2000));
        assert!(ranges.off as usize + 16 <= buf.len());
    }

    #[test]
    fn sigactions_skip_kill_and_stop() {
        let list: Vec<pb::SaEntry> = (0..62).map(|i| pb::SaEntry { sigaction: Some(i), ..Default::default() }).collect();
        let out = sigactions(&list).unwrap();
        assert_eq!(out.len(), 64);
        assert_eq!(out[8].handler, 0); // SIGKILL
        assert_eq!(out[9].handler, 8); // SIGUSR1 is the 9th entry
        assert_eq!(out[63].handler, 61);
        assert!(sigactions(&list[..10]).is_err());
    }
}
