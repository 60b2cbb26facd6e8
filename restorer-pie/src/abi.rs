//! The argument ABI between criu-core and the restorer blob.
//!
//! Every struct here is `#[repr(C)]` and holds integers and offsets only
//! (never pointers, never protobuf types). This file is compiled into both
//! the blob and criu-core.

// ---------------------------------------------------------------------------
// Self-test entries (blob pipeline). Restore structs go in their own section
// below this one; append, do not reorder.
// ---------------------------------------------------------------------------

/// Arguments of the `pie_selftest_reloc` entry: it walks a static table of
/// string slices and function pointers (all needing load-time relocation)
/// and reports what it saw.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SelftestRelocArgs {
    /// Out: checksum over the table; must equal [`SELFTEST_RELOC_CHECKSUM`].
    pub checksum: u64,
    /// Out: run-time address of the table itself (inside the loaded blob).
    pub table_addr: u64,
    /// Out: a string pointer read from the table (inside the loaded blob
    /// only if the relocation was applied).
    pub name_addr: u64,
    /// Out: a function pointer read from the table (same).
    pub fn_addr: u64,
}

/// The checksum `pie_selftest_reloc` computes when its table is intact:
/// for the names "alpha", "bravo", "charlie" with byte sums 518, 538, 728,
/// `(518 + 1) + (538 * 2) + 728 * 728`.
pub const SELFTEST_RELOC_CHECKSUM: u64 = 519 + 1076 + 529_984;

/// Arguments of the `pie_selftest_syscall` entry: two syscalls that must
/// fail, and the errno each one decoded to.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SelftestSyscallArgs {
    /// Out: errno of `close(-1)` (EBADF, 9).
    pub close_errno: i32,
    /// Out: errno of `openat(AT_FDCWD, SELFTEST_MISSING_PATH, O_RDONLY)`
    /// (ENOENT, 2).
    pub open_errno: i32,
}

/// The path `pie_selftest_syscall` tries to open (NUL-terminated).
pub const SELFTEST_MISSING_PATH: &[u8] = b"/nonexistent/criu-rs-pie-selftest\0";

/// Arguments of the `pie_selftest_write` entry. It runs, in this order,
/// `getpid()`, `write(fd, SELFTEST_WRITE_MESSAGE, len)`, `gettid()`: a
/// sequence tests look for in `qemu-x86_64 -strace` output.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SelftestWriteArgs {
    /// In: the file descriptor to write to.
    pub fd: i32,
    /// Padding; keep zero.
    pub _pad: u32,
    /// Out: the pid `getpid()` returned.
    pub pid: u64,
    /// Out: the tid `gettid()` returned.
    pub tid: u64,
}

/// The message `pie_selftest_write` writes.
pub const SELFTEST_WRITE_MESSAGE: &[u8] = b"criu-rs pie: hello from the restorer blob\n";

// ======================================================================
// Restore section (owner: branch `restore`). Append-only once published.
// ======================================================================
//
// # Layout
//
// The host builds one contiguous *argument block* and maps it in the target
// at `RestoreArgs::args.start`. The block starts with [`RestoreArgs`]; every
// array it refers to is an [`ArgArray`] whose `off` is a byte offset from
// the start of the block (so the blob finds it at `args.start + off`).
// Addresses of the target's *final* layout (VMA bounds, `sas_sp`, rseq
// pointer, ...) are plain `u64` data. The per-thread blob stacks
// ([`ThreadArg::stack`]) live inside the `args` range as well.
//
// # Entry
//
// The blob's restore entry point is `restore_entry(args: u64) -> !`
// (System V ABI: `rdi` = `args.start`), entered on thread 0's
// [`ThreadArg::stack`] (host sets `rsp` to its top, 16-byte aligned minus 8,
// i.e. as after a `call`). It never returns: it either ends in
// `rt_sigreturn` into the dumped registers or in `exit_group(1)` after
// writing a message to `log_fd` and filling [`RestoreStatus`].
//
// # Handshake at the end (host PTRACE_SEIZEs the task before the jump)
//
// 1. The blob restores everything, builds the `rt_sigframe` on thread 0's
//    stack area, stores `status.stage = STAGE_SIGRETURN`, sets
//    `rsp = &frame.uc` (frame address + 8, as the kernel expects after a
//    handler's `ret` popped `pretcode`), then executes `int3`
//    (unless `flags & RESTORE_F_NO_TRAP`).
// 2. The host sees the SIGTRAP stop, checks `status.stage ==
//    STAGE_SIGRETURN`, and resumes with `PTRACE_SYSCALL` suppressing the
//    SIGTRAP (signal 0). The next instructions are `mov eax, 15; syscall`.
// 3. Syscall-enter stop (`orig_rax == 15`), `PTRACE_SYSCALL` again,
//    syscall-exit stop: the task now holds the dumped registers and state.
// 4. The host removes the blob and the argument block (with the stacks)
//    from outside (injected `munmap`s), then detaches. It must NOT unmap
//    `vdso.park`: if the dumped vDSO differed from the running one, the
//    running vDSO stays parked there and the old copy jumps into it (if
//    it matched, `park` is already empty). The blob itself unmaps `bounce`
//    and the emptied premap area.
//
// Threads: the host seizes with `PTRACE_O_TRACECLONE`. Thread 0 clones
// threads 1.. (`clone3`, `set_tid` = their dumped tids, on their
// `ThreadArg::stack`) after the process-wide state; each then restores its
// own tid address, rseq, credentials and pending signals and traps at its
// own `rt_sigreturn`. The host lets the clone/event stops go on, waits
// until every thread of `threads` sits at its SIGTRAP (all of them: that
// is the barrier; `status.stage` is thread 0's, other threads only ever
// set STAGE_SIGRETURN), then resumes them all. A failing thread ends the
// whole process with `exit_group(1)`.
//
// On failure the blob writes `stage`, `error` (negative errno or a
// `ERR_*` code) and `detail` into [`RestoreStatus`], a short line to
// `log_fd`, and calls `exit_group(1)`; the host may read the status through
// `/proc/PID/mem` while the task is a zombie-to-be (i.e. at the
// `PTRACE_EVENT_EXIT` stop) to report where it failed.

/// `RestoreArgs::magic`: "CRIURSTR" little-endian.
pub const RESTORE_MAGIC: u64 = u64::from_le_bytes(*b"CRIURSTR");
/// `RestoreArgs::version`; bumped on any incompatible change.
pub const RESTORE_VERSION: u32 = 1;

/// `RestoreArgs::flags`: do not execute `int3` before `rt_sigreturn`
/// (for runs without a tracer, e.g. tests).
pub const RESTORE_F_NO_TRAP: u64 = 1 << 0;
/// `RestoreArgs::flags`: every thread's [`ThreadArg::creds`] is valid and
/// must be applied (by that thread: credentials are per thread).
pub const RESTORE_F_CREDS: u64 = 1 << 1;
/// `RestoreArgs::flags`: `personality` is valid and must be applied.
pub const RESTORE_F_PERSONALITY: u64 = 1 << 2;
/// `RestoreArgs::flags`: `mm` is valid; issue `PR_SET_MM_MAP`.
pub const RESTORE_F_MM: u64 = 1 << 3;
/// `RestoreArgs::flags`: the blob closes the fds it was handed once used:
/// every `VmaArg::fd` after mapping and `mm.exe_fd` after PR_SET_MM_MAP
/// (`log_fd` stays: the host closes it). Without the flag the host closes
/// them after the handshake.
pub const RESTORE_F_CLOSE_FDS: u64 = 1 << 4;
/// `RestoreArgs::flags`: `dumpable` is valid: the last thread to finish its
/// credentials sets it with PR_SET_DUMPABLE (any thread's uid change resets
/// it, and it belongs to the address space).
pub const RESTORE_F_DUMPABLE: u64 = 1 << 5;
/// `RestoreArgs::flags`, for tests of criu-rs's crash reports only: the
/// blob faults on purpose (a read of address 8) right after the
/// sigactions, with every VMA of the image in place. The host sets it for
/// `CRIU_RS_FAIL_AT=blob-crash`.
pub const RESTORE_F_TEST_CRASH: u64 = 1 << 6;

/// A range of target addresses `[start, start + len)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRange {
    pub start: u64,
    pub len: u64,
}

/// An array inside the argument block: `count` elements starting at byte
/// offset `off` from the start of the block. `count == 0` means empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgArray {
    pub off: u64,
    pub count: u64,
}

/// Where the blob records how far it got, how long each stage took, and
/// why it stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreStatus {
    /// The `STAGE_*` the blob is in (updated as it goes).
    pub stage: u32,
    pub _pad: u32,
    /// 0, or a negative errno of the failed call, or an `ERR_*` code.
    pub error: i64,
    /// Extra context: an address, an index, a resource number.
    pub detail: u64,
    /// Marks written to `trail` so far (taken atomically, one per
    /// recorded stage; may exceed [`TRAIL_LEN`]: later marks are dropped).
    pub trail_len: u32,
    pub _pad2: u32,
    /// Each stage as it was entered, with the time: thread 0's stages in
    /// order, and every other thread's [`STAGE_SIGRETURN`]. The blob cannot
    /// format text; the host logs the durations (`-v4`).
    pub trail: [StageMark; TRAIL_LEN],
}

/// Marks [`RestoreStatus::trail`] holds.
pub const TRAIL_LEN: usize = 64;

/// One stage entered: which, and when (`CLOCK_MONOTONIC`, nanoseconds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageMark {
    pub stage: u32,
    pub _pad: u32,
    pub ns: u64,
}

impl Default for RestoreStatus {
    fn default() -> Self {
        RestoreStatus { stage: 0, _pad: 0, error: 0, detail: 0, trail_len: 0, _pad2: 0, trail: [StageMark::default(); TRAIL_LEN] }
    }
}

pub const STAGE_START: u32 = 1;
pub const STAGE_CHECK_ARGS: u32 = 2;
pub const STAGE_BLOCK_SIGNALS: u32 = 3;
pub const STAGE_PARK_VDSO: u32 = 4;
pub const STAGE_UNMAP: u32 = 5;
pub const STAGE_REMAP: u32 = 6;
pub const STAGE_MAP_SHARED: u32 = 7;
pub const STAGE_PROTECT: u32 = 8;
pub const STAGE_MADVISE: u32 = 9;
pub const STAGE_VDSO: u32 = 10;
pub const STAGE_MM: u32 = 11;
pub const STAGE_RLIMITS: u32 = 12;
pub const STAGE_SIGACTIONS: u32 = 13;
pub const STAGE_ITIMERS: u32 = 14;
pub const STAGE_POSIX_TIMERS: u32 = 15;
pub const STAGE_THREAD_STATE: u32 = 16;
pub const STAGE_PERSONALITY: u32 = 17;
pub const STAGE_CREDS: u32 = 18;
pub const STAGE_SIGNALS: u32 = 19;
pub const STAGE_SIGFRAME: u32 = 20;
/// Reached right before the trap + `rt_sigreturn` (see the handshake).
pub const STAGE_SIGRETURN: u32 = 21;
/// Cloning threads 1.. (added after the first publication).
pub const STAGE_THREADS: u32 = 22;
/// Registering lazy VMAs with the userfaultfd.
pub const STAGE_LAZY: u32 = 23;
/// Entering the thread's seccomp mode (strict, or its filters).
pub const STAGE_SECCOMP: u32 = 24;
/// The thread's scheduling policy, priority and nice value.
pub const STAGE_SCHED: u32 = 25;
/// Registering the address space's membarrier commands.
pub const STAGE_MEMBARRIER: u32 = 26;
/// Installing guard regions (`RestoreArgs::guards`).
pub const STAGE_GUARDS: u32 = 27;

/// Bad magic/version/size in the header.
pub const ERR_BAD_HEADER: i64 = -1000;
/// An `ArgArray` points outside the argument block.
pub const ERR_BAD_ARRAY: i64 = -1001;
/// VMA list is inconsistent (overlaps, unaligned, bad kind).
pub const ERR_BAD_VMAS: i64 = -1002;
/// The bounce area is too small for the remap plan.
pub const ERR_NO_BOUNCE: i64 = -1003;
/// vDSO image could not be parsed / symbol missing.
pub const ERR_VDSO: i64 = -1004;
/// A POSIX timer could not get its dumped id.
pub const ERR_TIMER_ID: i64 = -1005;
/// A hard rlimit would have to be raised (needs CAP_SYS_RESOURCE).
pub const ERR_RLIMIT: i64 = -1006;
/// The xsave area is too large for the thread's stack area.
pub const ERR_SIGFRAME: i64 = -1007;
/// A seccomp mode or filter the blob cannot install as given.
pub const ERR_SECCOMP: i64 = -1008;

/// The header of the argument block (at offset 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreArgs {
    /// [`RESTORE_MAGIC`].
    pub magic: u64,
    /// [`RESTORE_VERSION`].
    pub version: u32,
    /// `size_of::<RestoreArgs>()` as the host saw it.
    pub header_size: u32,
    /// Total size of the argument block in bytes (all arrays lie inside).
    pub total_size: u64,
    /// `RESTORE_F_*`.
    pub flags: u64,
    /// Written by the blob.
    pub status: RestoreStatus,
    /// fd the blob writes short error lines to; -1 for none.
    pub log_fd: i32,
    pub _pad0: u32,
    /// Upper end of user address space (e.g. 0x7ffffffff000); the blob
    /// unmaps up to here.
    pub task_size: u64,
    /// Page size (4096).
    pub page_size: u64,

    /// The blob's own mapping (kept).
    pub blob: MemRange,
    /// The argument block plus thread stacks (kept).
    pub args: MemRange,
    /// The premap area holding every PREMAPPED VMA (kept until moved).
    pub premap: MemRange,
    /// A reserved, otherwise unused range colliding with neither layout,
    /// used as a temporary spot for overlapping moves; `len` must be at
    /// least the largest premapped VMA. The blob unmaps it when done.
    /// May be empty if no move needs it.
    pub bounce: MemRange,

    /// [`VmaArg`]s sorted by `start`, the complete final layout
    /// (including VDSO/VVAR entries for where they were at dump).
    pub vmas: ArgArray,
    /// [`ThreadArg`]s; element 0 is the thread running the blob.
    pub threads: ArgArray,

    /// 64 [`SigactionArg`]s (signal `n` at index `n - 1`), or count 0 to
    /// leave all dispositions alone. SIGKILL/SIGSTOP entries are ignored.
    pub sigactions: ArgArray,
    /// Process-wide pending signals: [`SIGINFO_SIZE`]-byte siginfos,
    /// re-queued with `rt_sigqueueinfo`.
    pub shared_siginfos: ArgArray,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
    pub itimers: [ItimerArg; 3],
    /// [`PosixTimerArg`]s sorted by `timer_id`.
    pub posix_timers: ArgArray,
    /// [`RlimitArg`]s.
    pub rlimits: ArgArray,
    /// Valid if `flags & RESTORE_F_PERSONALITY`.
    pub personality: u32,
    pub _pad1: u32,
    /// Valid if `flags & RESTORE_F_MM`.
    pub mm: MmMapArg,
    /// The vDSO: where it is now, where it was at dump.
    pub vdso: VdsoArg,
    // ---- appended after the first publication ----
    /// Writable scratch inside `args` for the remap planner: at least
    /// `vmas.count * PLAN_SCRATCH_PER_VMA` bytes, 8-byte aligned.
    pub scratch: MemRange,
    /// The rseq registration the task has when it enters the blob (it
    /// inherits the forking thread's, e.g. glibc's): the blob unregisters it
    /// before unmapping the old world (the kernel would write to it on
    /// every preemption). `len == 0`: none. Get it with
    /// `PTRACE_GET_RSEQ_CONFIGURATION`.
    pub cur_rseq: RseqArg,
    /// A userfaultfd for VMAs with `VMA_F_LAZY` (registered in MISSING
    /// mode once in place, then closed by the blob). Ignored, not closed,
    /// when no VMA is lazy (so 0 from `Default` is harmless).
    pub uffd: i32,
    pub _pad2: u32,
    /// `PR_SET_DUMPABLE` value (MmEntry.dumpable), with RESTORE_F_DUMPABLE.
    pub dumpable: u32,
    /// Written by the blob: how many threads have applied their
    /// credentials (counted atomically; the last one sets `dumpable`).
    /// The host leaves it 0.
    pub creds_done: u32,
    /// `MEMBARRIER_CMD_REGISTER_*` bits to register for the address space
    /// (as `MEMBARRIER_CMD_GET_REGISTRATIONS` reported them); thread 0
    /// issues each.
    pub membarrier_mask: u32,
    pub _pad3: u32,
    /// [`MemRange`]s to guard with `madvise(MADV_GUARD_INSTALL)` once the
    /// VMAs are final (each inside VMAs of this list).
    pub guards: ArgArray,
}

/// The `MEMBARRIER_CMD_REGISTER_*` commands [`RestoreArgs::membarrier_mask`]
/// may hold: global expedited, private expedited, private expedited
/// sync-core, private expedited rseq.
pub const MEMBARRIER_REGISTER_CMDS: [u32; 4] = [1 << 2, 1 << 4, 1 << 6, 1 << 8];

/// Bytes of [`RestoreArgs::scratch`] needed per VMA.
pub const PLAN_SCRATCH_PER_VMA: u64 = 48;
/// Bytes at the top of each [`ThreadArg::stack`] the blob runs on; the
/// rt_sigframe + xsave area go below, so `stack.len` must be at least
/// this + 1024 + the xsave size.
pub const THREAD_STACK_RESERVE: u64 = 64 * 1024;

/// An rseq registration: `rseq(ptr, len, flags, sig)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RseqArg {
    pub ptr: u64,
    pub len: u32,
    pub sig: u32,
}

/// `VmaArg::kind`: premapped in the premap area at `premap`; the blob
/// moves it with `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`.
pub const VMA_PREMAPPED: u32 = 1;
/// `VmaArg::kind`: the blob maps `fd` at `start` with `pgoff`
/// (`MAP_SHARED | MAP_FIXED`, or `MAP_PRIVATE` if `flags` says so); the
/// fd is closed by the blob with `RESTORE_F_CLOSE_FDS`, else by the host.
pub const VMA_FILE_SHARED: u32 = 2;
/// `VmaArg::kind`: already at its final address; left alone (not unmapped,
/// not moved); only prot/madvise are applied.
pub const VMA_PINNED: u32 = 3;
/// `VmaArg::kind`: the dumped `[vdso]` (final place of the vDSO). The host
/// premaps a copy with the dumped contents (`premap != 0`). If the running
/// vDSO matches (see [`VdsoArg::dumped_syms`]) the blob drops that copy and
/// moves the running vDSO here; otherwise it keeps the copy here and
/// patches jumps into it. (The copy moves home with the PREMAPPED VMAs,
/// in planner order; `premap == 0`: no copy, only the matching path.)
pub const VMA_VDSO: u32 = 4;
/// `VmaArg::kind`: a dumped `[vvar]` or `[vvar_vclock]` (no contents,
/// `premap == 0`). Filled by the running vvar pages when the vDSO matches,
/// left unmapped otherwise.
pub const VMA_VVAR: u32 = 5;

/// `VmaArg::kind`: a SysV shared memory segment (`fd` holds its id)
/// attached whole at `start` with `shmat` (`SHM_RDONLY` with
/// [`VMA_F_SHM_RDONLY`]), then given `prot` and its advice.
pub const VMA_SYSV_SHM: u32 = 6;

/// `VmaArg::vflags`: the VMA grows down (stack); its premapped copy was
/// mapped with MAP_GROWSDOWN and keeps its guard gap below `start`.
pub const VMA_F_GROWSDOWN: u32 = 1 << 0;
/// `VmaArg::vflags`: lazy (userfaultfd) — reserved for later.
pub const VMA_F_LAZY: u32 = 1 << 1;
/// `VmaArg::vflags`: with `MAP_LOCKED` in `flags`, locked on fault
/// (`mlock2(MLOCK_ONFAULT)`) instead of populated and locked.
pub const VMA_F_LOCK_ONFAULT: u32 = 1 << 2;
/// `VmaArg::vflags`: a [`VMA_SYSV_SHM`] attached read-only.
pub const VMA_F_SHM_RDONLY: u32 = 1 << 3;

/// One VMA of the final layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaArg {
    /// Final bounds, page aligned.
    pub start: u64,
    pub end: u64,
    /// Current address of the premapped copy (VMA_PREMAPPED), else 0.
    pub premap: u64,
    /// File offset in bytes (VMA_FILE_SHARED).
    pub pgoff: u64,
    /// Final `PROT_*`.
    pub prot: u32,
    /// `MAP_*` flags as dumped (MAP_SHARED/PRIVATE/ANONYMOUS/GROWSDOWN..).
    pub flags: u32,
    /// `VMA_*` kind.
    pub kind: u32,
    /// fd for VMA_FILE_SHARED, segment id for VMA_SYSV_SHM, else -1.
    pub fd: i32,
    /// Bit `n` set => `madvise(start, len, n)` (CRIU `VmaEntry.madv`
    /// convention: MADV_DONTFORK=10, MADV_DONTDUMP=16, MADV_WIPEONFORK=18,
    /// MADV_HUGEPAGE=14, MADV_NOHUGEPAGE=15, MADV_MERGEABLE=12, ...).
    pub madv: u64,
    /// `VMA_F_*`.
    pub vflags: u32,
    pub _pad: u32,
}

/// Size of one kernel `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// Number of u64 in x86_64 `struct user_regs_struct`.
pub const GPREGS_WORDS: usize = 27;

/// Indices into [`ThreadArg::gpregs`] (x86_64 `user_regs_struct` order).
pub mod gpreg {
    pub const R15: usize = 0;
    pub const R14: usize = 1;
    pub const R13: usize = 2;
    pub const R12: usize = 3;
    pub const RBP: usize = 4;
    pub const RBX: usize = 5;
    pub const R11: usize = 6;
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const RAX: usize = 10;
    pub const RCX: usize = 11;
    pub const RDX: usize = 12;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const CS: usize = 17;
    pub const EFLAGS: usize = 18;
    pub const RSP: usize = 19;
    pub const SS: usize = 20;
    pub const FS_BASE: usize = 21;
    pub const GS_BASE: usize = 22;
    pub const DS: usize = 23;
    pub const ES: usize = 24;
    pub const FS: usize = 25;
    pub const GS: usize = 26;
}

/// Per-thread state. Thread 0 runs the blob; threads 1.. are cloned by it
/// with their `tid` (`clone3` + `set_tid`), see the handshake notes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadArg {
    pub tid: i32,
    pub _pad0: u32,
    /// `user_regs_struct` as from PTRACE_GETREGS, already adjusted by the
    /// host for syscall restart (rax/rip) if the task was in a syscall.
    /// `fs_base`/`gs_base` are restored from here.
    pub gpregs: [u64; GPREGS_WORDS],
    /// The XSAVE area (standard format, as from
    /// PTRACE_GETREGSET NT_X86_XSTATE): `off` = byte offset in the block,
    /// `count` = size in bytes (0: no FPU state, start with init state).
    pub xsave: ArgArray,
    /// Blocked signal mask (bit `n - 1` = signal `n`).
    pub sigmask: u64,
    /// sigaltstack: `ss_sp`, `ss_flags`, `ss_size` (ss_flags
    /// SS_DISABLE = 2 means none).
    pub sas_sp: u64,
    pub sas_flags: i32,
    pub _pad1: u32,
    pub sas_size: u64,
    /// `set_tid_address` value (0: leave as is).
    pub clear_child_tid: u64,
    /// rseq registration: address, length, signature (len 0: none).
    pub rseq_ptr: u64,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    /// Thread-private pending signals: [`SIGINFO_SIZE`]-byte siginfos,
    /// re-queued with `rt_tgsigqueueinfo`.
    pub siginfos: ArgArray,
    /// The blob's stack for this thread (inside `RestoreArgs::args`);
    /// the rt_sigframe is built at its top.
    pub stack: MemRange,
    // ---- appended after the first publication ----
    /// The thread's name (`PR_SET_NAME`, /proc/PID/task/TID/comm),
    /// NUL-padded; all zero: left as is.
    pub comm: [u8; 16],
    /// The thread's credentials, with `RESTORE_F_CREDS`.
    pub creds: CredsArg,
    /// `PR_SET_PDEATHSIG` value (0: none); set after the credentials,
    /// since a change of ids clears it.
    pub pdeath_sig: u32,
    /// `SECCOMP_MODE_*` the thread ends in (0: none; 1: strict; 2:
    /// filter, with `seccomp_filters`). Entered at the end of the blob,
    /// before the last capability drop; the tracer suspends seccomp
    /// (`PTRACE_O_SUSPEND_SECCOMP`) until it lets the task go.
    pub seccomp_mode: u32,
    /// [`SeccompFilterArg`]s in install order (oldest first).
    pub seccomp_filters: ArgArray,
    /// `sched_setscheduler(0, sched_policy, {sched_prio})` (the policy may
    /// carry SCHED_RESET_ON_FORK) and `setpriority(PRIO_PROCESS, 0,
    /// sched_nice)`; a negative policy leaves them as they are.
    pub sched_policy: i32,
    pub sched_prio: u32,
    pub sched_nice: i32,
    pub _pad3: u32,
}

/// One seccomp filter: `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompFilterArg {
    /// `SECCOMP_FILTER_FLAG_*`.
    pub flags: u32,
    pub _pad: u32,
    /// The classic BPF program: `struct sock_filter` instructions (8
    /// bytes each; `count` is the length in bytes).
    pub prog: ArgArray,
}

/// Kernel `struct sigaction` as taken by `rt_sigaction` on x86_64
/// (`handler, flags, restorer, mask`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigactionArg {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// `struct itimerval` (`it_interval`, `it_value`, each sec + usec).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItimerArg {
    pub interval_sec: i64,
    pub interval_usec: i64,
    pub value_sec: i64,
    pub value_usec: i64,
}

/// One POSIX timer. The blob calls `timer_create` until the kernel hands
/// out `timer_id` (ids are allocated in increasing order), deleting the
/// extra ones, then `timer_settime`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PosixTimerArg {
    pub timer_id: i32,
    pub clock_id: i32,
    /// `sigevent`: notify (SIGEV_*), signo, value, and thread id for
    /// SIGEV_THREAD_ID.
    pub sigev_notify: i32,
    pub sigev_signo: i32,
    pub sigev_value: u64,
    pub notify_thread_id: i32,
    pub overrun: i32,
    /// `itimerspec`: interval and value, sec + nsec.
    pub interval_sec: i64,
    pub interval_nsec: i64,
    pub value_sec: i64,
    pub value_nsec: i64,
}

/// One rlimit, applied with `prlimit64(0, resource, ..)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RlimitArg {
    pub resource: u32,
    pub _pad: u32,
    pub cur: u64,
    pub max: u64,
}

/// One thread's credentials, applied by the thread itself near the end
/// (before re-queueing signals), in an order where each step still has the
/// capability it needs (see `restore::task::set_creds`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CredsArg {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    /// Supplementary groups: u32 gids.
    pub groups: ArgArray,
    /// Capability sets, 64-bit each (`[low, high]` like
    /// `__user_cap_data_struct` pairs).
    pub cap_inh: [u32; 2],
    pub cap_prm: [u32; 2],
    pub cap_eff: [u32; 2],
    pub cap_bnd: [u32; 2],
    pub cap_amb: [u32; 2],
    /// `PR_SET_SECUREBITS` value.
    pub secbits: u32,
    /// Non-zero: `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: u32,
}

/// The fields of the kernel's `struct prctl_mm_map` (`PR_SET_MM_MAP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmMapArg {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// The saved auxv: `off` = byte offset in the block, `count` = size
    /// in bytes (u64 pairs, ending with AT_NULL).
    pub auxv: ArgArray,
    /// fd of the executable for the exe link, or -1 to leave it.
    pub exe_fd: i32,
    pub _pad: u32,
}

/// Number of vDSO symbols tracked, in [`VDSO_SYM_NAMES`] order.
pub const VDSO_NSYMS: usize = 6;
/// The vDSO symbols the blob looks up and, on mismatch, redirects.
pub const VDSO_SYM_NAMES: [&[u8]; VDSO_NSYMS] = [
    b"__vdso_clock_gettime",
    b"__vdso_gettimeofday",
    b"__vdso_time",
    b"__vdso_getcpu",
    b"__vdso_clock_getres",
    b"__vdso_getrandom",
];
/// `VdsoArg::dumped_syms` value for "symbol not present".
pub const VDSO_SYM_ABSENT: u64 = u64::MAX;

/// vDSO state: where the running one is now, where the dumped one was.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VdsoArg {
    /// The running `[vdso]` now (len 0: none, e.g. under some emulators).
    pub running_vdso: MemRange,
    /// The running vvar pages now: `[vvar]` through `[vvar_vclock]`,
    /// one contiguous range (len 0: none).
    pub running_vvar: MemRange,
    /// Where the running vDSO/vvar are parked while the old world is
    /// unmapped; relative layout of vvar and vdso is kept, so `len` covers
    /// from the lower of the two starts to the higher of the two ends.
    pub park: MemRange,
    /// The dumped `[vdso]` (final address; len 0: the process had none).
    pub dumped_vdso: MemRange,
    /// The dumped vvar pages, contiguous (len 0: none).
    pub dumped_vvar: MemRange,
    /// Offsets of [`VDSO_SYM_NAMES`] in the dumped vDSO image,
    /// [`VDSO_SYM_ABSENT`] if missing. If all equal the running vDSO's,
    /// the running vDSO+vvar are moved to the dumped place; otherwise the
    /// dumped copy (a PREMAPPED VMA with kind VMA_VDSO) stays and each of
    /// its symbols gets a jump to the running vDSO's symbol, and the
    /// running vDSO stays parked.
    pub dumped_syms: [u64; VDSO_NSYMS],
}

const _: () = assert!(core::mem::size_of::<VmaArg>() == 64);
const _: () = assert!(core::mem::size_of::<ThreadArg>() == 480);
const _: () = assert!(core::mem::size_of::<SeccompFilterArg>() == 24);
const _: () = assert!(core::mem::size_of::<CredsArg>() == 96);
const _: () = assert!(core::mem::size_of::<SigactionArg>() == 32);
const _: () = assert!(core::mem::size_of::<PosixTimerArg>() == 64);
const _: () = assert!(core::mem::size_of::<MmMapArg>() == 112);

// ====================== end of restore section ======================
