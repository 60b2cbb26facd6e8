//! The whole restore routine (`restore_entry`) run in this process, which
//! it turns into a small "restored" task: a code VMA, a data VMA, a
//! PROT_NONE VMA (all premapped in an area overlapping their final places)
//! and a shared memfd VMA; sigactions, pending signals, a POSIX timer, an
//! itimer, an rlimit; the running vDSO stays parked. Thread 0's registers
//! make the restored code `write(1, data, 64)` and `exit_group(42)`.
//!
//! Modes: `trap` (the handshake: prints `ready <block> <status offset>`,
//! waits for a line on stdin while the test seizes it with ptrace, then
//! traps before `rt_sigreturn`), `notrap` (no tracer), `bad` (a layout
//! the blob must refuse: exits 1 with a log line), `threads` and
//! `threads-trap` (a second thread, cloned by the blob with a chosen tid,
//! prints `ready <block> <status offset> <tid>`: it writes data words
//! 8..15 and exits; thread 0 waits for it on its clear_child_tid futex,
//! then writes words 0..7 and calls exit_group(42)).
//!
//! Also restored: the vDSO (the running one moved to a "dumped" place of
//! the same shape), `PR_SET_MM_MAP` fields and auxv, personality, an rseq
//! registration in the data VMA (glibc's own registration is handed over
//! as `cur_rseq` and dropped), credentials (uid/gid 1000, a
//! supplementary group, capabilities kept), a lazy VMA registered with a
//! userfaultfd, and the fds handed to the blob closed by it.

use super::block::Block;
use super::map_fixed;
use criu_core::abi::*;
use criu_core::pie::Loaded;
use std::arch::asm;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, IntoRawFd};

const PAGE: u64 = 4096;
pub const FINAL: u64 = 0x1000_0000_0000;
pub const CODE_AT: u64 = FINAL;
pub const DATA_AT: u64 = FINAL + 0x10000;
pub const NONE_AT: u64 = FINAL + 0x20000;
pub const FILE_AT: u64 = FINAL + 0x30000;
const PREMAP: u64 = FINAL + 0x8000;
const BOUNCE: u64 = 0x1100_0000_0000;
pub const PARK: u64 = 0x1200_0000_0000;
/// Where the "dumped" vvar pages (and after them the vDSO) were.
pub const VDSO_DUMPED: u64 = FINAL + 0x40000;
pub const RSEQ_AT: u64 = DATA_AT + 0x2000;
pub const RSEQ_SIG: u32 = 0x5305_3053;
pub const PERSONALITY: u32 = 0x0040000; // ADDR_NO_RANDOMIZE
pub const GROUP: u32 = 4242;
/// A lazy VMA: left empty, registered with a userfaultfd by the blob.
pub const LAZY_AT: u64 = FINAL + 0x38000;
/// Where a second copy of the userfaultfd is kept open (the blob closes
/// its own; a lazy-pages daemon would hold the other in real use).
pub const UFFD_KEPT: i32 = 100;
const SIGUSR1: usize = 10;
const SIGUSR2: usize = 12;
const SIGRT1: usize = 35;

/// The restored code: `syscall` (the write set up by the registers), then
/// `mov eax, 231; mov edi, 42; syscall` (exit_group(42)).
const CODE: [u8; 14] = [0x0f, 0x05, 0xb8, 0xe7, 0, 0, 0, 0xbf, 0x2a, 0, 0, 0, 0x0f, 0x05];
/// Thread 1's code (at CODE_AT + 0x100): `syscall` (its write), then
/// `mov eax, 60; xor edi, edi; syscall` (exit of the thread).
const CODE_T1: [u8; 11] = [0x0f, 0x05, 0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
/// Where thread 1's clear_child_tid word is.
pub const T1_TID_WORD: u64 = DATA_AT + 0x1800;

/// Thread 0's code in the thread modes (at CODE_AT + 0x200): `syscall`
/// (futex wait on thread 1's clear_child_tid), then write(1, DATA_AT, 64),
/// then exit_group(42).
fn code_t0() -> Vec<u8> {
    let mut c = vec![0x0f, 0x05, 0xb8, 1, 0, 0, 0, 0xbf, 1, 0, 0, 0, 0x48, 0xbe];
    c.extend_from_slice(&DATA_AT.to_le_bytes());
    c.extend_from_slice(&[0xba, 64, 0, 0, 0, 0x0f, 0x05]);
    c.extend_from_slice(&[0x90, 0x90]); // where CODE has its first syscall
    c.extend_from_slice(&CODE[2..]);
    c
}

/// A tid no task uses now (for thread 1), searched from a start that
/// depends on our pid so concurrent runs do not pick the same one.
fn free_tid() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32768);
    let span = max / 2 - 1;
    let first = max / 2 + (std::process::id() as i32).wrapping_mul(7919).rem_euclid(span);
    (0..span)
        .map(|k| max / 2 + (first - max / 2 + k) % span)
        .find(|t| !std::path::Path::new(&format!("/proc/{t}")).exists())
        .unwrap_or(max - 1)
}

pub fn data_word(i: u64) -> u64 {
    0xda7a_0000_0000_0000 | i
}

fn maps_range(name: &str) -> MemRange {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut r = MemRange::default();
    for l in maps.lines().filter(|l| l.ends_with(name)) {
        let (a, b) = l.split_whitespace().next().and_then(|x| x.split_once('-')).unwrap_or(("0", "0"));
        let (a, b) = (u64::from_str_radix(a, 16).unwrap_or(0), u64::from_str_radix(b, 16).unwrap_or(0));
        if r.len == 0 {
            r = MemRange { start: a, len: b - a };
        } else {
            r.len = b - r.start;
        }
    }
    r
}

/// A userfaultfd after the UFFDIO_API handshake, also dup'ed to UFFD_KEPT.
fn userfaultfd() -> Result<i32, String> {
    // SAFETY: plain syscalls on fds we own and a local struct.
    unsafe {
        let fd = libc::syscall(libc::SYS_userfaultfd, 0) as i32;
        if fd < 0 {
            return Err(format!("userfaultfd: {}", std::io::Error::last_os_error()));
        }
        let mut api = [0xaau64, 0, 0];
        if libc::ioctl(fd, 0xc018_aa3f, api.as_mut_ptr()) != 0 || libc::dup2(fd, UFFD_KEPT) != UFFD_KEPT {
            return Err(format!("UFFDIO_API/dup2: {}", std::io::Error::last_os_error()));
        }
        Ok(fd)
    }
}

extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// glibc's rseq registration of this thread (len 0 if none).
fn glibc_rseq() -> RseqArg {
    let mut fs = 0u64;
    // SAFETY: ARCH_GET_FS writes the fs base.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs) };
    // SAFETY: glibc (2.35+) exports these read-only variables.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return RseqArg::default();
    }
    // glibc registers at least the 32-byte original struct rseq.
    RseqArg { ptr: fs.wrapping_add(off as u64), len: size.max(32), sig: RSEQ_SIG }
}

/// A capability set from this process's /proc/self/status line `key`.
fn cap_set(key: &str) -> [u32; 2] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let v = status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .unwrap_or(0);
    [v as u32, (v >> 32) as u32]
}

fn siginfo(signo: i32, value: u64) -> [u8; SIGINFO_SIZE] {
    let mut si = [0u8; SIGINFO_SIZE];
    si[0..4].copy_from_slice(&signo.to_le_bytes());
    si[8..12].copy_from_slice(&(-1i32).to_le_bytes()); // si_code = SI_QUEUE
    si[16..20].copy_from_slice(&(std::process::id() as i32).to_le_bytes());
    si[24..32].copy_from_slice(&value.to_le_bytes());
    si
}

pub fn run(loaded: &Loaded, mode: &str) -> Result<String, String> {
    let vma = |start: u64, pages: u64, prot: u32, kind: u32, premap: u64| VmaArg {
        start,
        end: start + pages * PAGE,
        premap,
        prot,
        flags: 2,
        kind,
        fd: -1,
        ..Default::default()
    };
    // Premapped copies, packed in order, overlapping the final layout.
    let code = vma(CODE_AT, 1, 5, VMA_PREMAPPED, PREMAP);
    let data = vma(DATA_AT, 3, 3, VMA_PREMAPPED, PREMAP + PAGE);
    let none = vma(NONE_AT, 1, 0, VMA_PREMAPPED, PREMAP + 4 * PAGE);
    map_fixed(PREMAP, 5 * PAGE, false)?;
    // SAFETY: writing the premapped copies we just mapped.
    unsafe {
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), PREMAP as *mut u8, CODE.len());
        std::ptr::copy_nonoverlapping(CODE_T1.as_ptr(), (PREMAP + 0x100) as *mut u8, CODE_T1.len());
        let t0 = code_t0();
        std::ptr::copy_nonoverlapping(t0.as_ptr(), (PREMAP + 0x200) as *mut u8, t0.len());
        for i in 0..3 * PAGE / 8 {
            ((PREMAP + PAGE + 8 * i) as *mut u64).write(data_word(i));
        }
    }
    let threaded = mode.starts_with("threads");
    let tid1 = if threaded { free_tid() } else { 0 };
    // SAFETY: thread 1's clear_child_tid word, in the premapped data copy.
    unsafe { ((PREMAP + PAGE + (T1_TID_WORD - DATA_AT)) as *mut u64).write(tid1 as u64) };
    let memfd = rustix::fs::memfd_create("full", rustix::fs::MemfdFlags::empty()).map_err(|e| e.to_string())?;
    rustix::io::write(&memfd, &[0xf1; 2 * PAGE as usize]).map_err(|e| e.to_string())?;
    let file = VmaArg { flags: 1, fd: memfd.into_raw_fd(), ..vma(FILE_AT, 2, 3, VMA_FILE_SHARED, 0) };
    let (vvar, vdso) = (maps_range("[vvar]"), maps_range("[vdso]"));
    let vvar = MemRange { len: vvar.len + maps_range("[vvar_vclock]").len, ..vvar };
    let lo = if vvar.len != 0 { vvar.start.min(vdso.start) } else { vdso.start };
    let span = (vdso.start + vdso.len).max(vvar.start + vvar.len) - lo;
    // The dumped vDSO: same shape as the running one, at VDSO_DUMPED; its
    // premapped copy (the running image) after the other copies.
    let dumped_vvar = MemRange { start: VDSO_DUMPED + (vvar.start - lo), len: vvar.len };
    let dumped_vdso = MemRange { start: VDSO_DUMPED + (vdso.start - lo), len: vdso.len };
    let copy_at = PREMAP + 5 * PAGE;
    let mut vmas = vec![code, data, none, file];
    // Without a vDSO (qemu-user) there is nothing to move or copy.
    if vdso.len != 0 {
        map_fixed(copy_at, vdso.len, false)?;
        // SAFETY: copying the readable running vDSO into our fresh mapping.
        unsafe { std::ptr::copy_nonoverlapping(vdso.start as *const u8, copy_at as *mut u8, vdso.len as usize) };
        let vvar_vma = VmaArg { end: dumped_vvar.start + dumped_vvar.len, ..vma(dumped_vvar.start, 0, 1, VMA_VVAR, 0) };
        let vdso_vma = VmaArg { end: dumped_vdso.start + dumped_vdso.len, ..vma(dumped_vdso.start, 0, 5, VMA_VDSO, copy_at) };
        vmas.extend([vvar_vma, vdso_vma]);
    }
    // A lazy VMA if userfaultfd works here (not under qemu-user).
    let lazy_copy = copy_at + vdso.len;
    let uffd = userfaultfd().unwrap_or(-1);
    if uffd >= 0 {
        map_fixed(lazy_copy, PAGE, false)?;
        vmas.push(VmaArg { vflags: VMA_F_LAZY, ..vma(LAZY_AT, 1, 3, VMA_PREMAPPED, lazy_copy) });
    }
    vmas.sort_by_key(|v| v.start);
    if mode == "bad" {
        vmas[1].premap = PREMAP + 0x100_0000; // data: outside the premap area
    }

    let mut acts = [SigactionArg::default(); 64];
    acts[SIGUSR1 - 1] = SigactionArg { handler: CODE_AT, flags: 0x0400_0004, restorer: CODE_AT, mask: 0 };
    acts[SIGUSR2 - 1] = SigactionArg { handler: 1, ..Default::default() }; // SIG_IGN
    let sigmask = 1u64 << (SIGUSR1 - 1) | 1 << (SIGRT1 - 1);
    let pid = std::process::id() as i32;

    let mut regs = [0u64; GPREGS_WORDS];
    regs[gpreg::RIP] = CODE_AT;
    regs[gpreg::RAX] = 1; // write
    regs[gpreg::RDI] = 1;
    regs[gpreg::RSI] = DATA_AT;
    regs[gpreg::RDX] = 64;
    regs[gpreg::RSP] = DATA_AT + 3 * PAGE;
    regs[gpreg::CS] = 0x33;
    regs[gpreg::SS] = 0x2b;
    regs[gpreg::EFLAGS] = 0x202;
    let mut regs1 = regs;
    regs1[gpreg::RIP] = CODE_AT + 0x100;
    regs1[gpreg::RSI] = DATA_AT + 64;
    regs1[gpreg::RSP] = DATA_AT + 2 * PAGE;
    if threaded {
        regs[gpreg::RIP] = CODE_AT + 0x200;
        regs[gpreg::RAX] = 202; // futex
        regs[gpreg::RDI] = T1_TID_WORD;
        regs[gpreg::RSI] = 0; // FUTEX_WAIT
        regs[gpreg::RDX] = tid1 as u64;
        regs[gpreg::R10] = 0;
    }

    let mut block = Block::new(1 << 20);
    let varr = block.push(&vmas);
    let sarr = block.push(&acts);
    let shared = block.push(&[siginfo(SIGUSR1 as i32, 0x77)]);
    let own = block.push(&[siginfo(SIGRT1 as i32, 0x88)]);
    let timers = block.push(&[PosixTimerArg {
        timer_id: 5,
        clock_id: libc::CLOCK_MONOTONIC,
        sigev_notify: libc::SIGEV_SIGNAL,
        sigev_signo: SIGUSR2 as i32,
        value_sec: 100,
        ..Default::default()
    }]);
    let mut nofile = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: reading a limit into a local.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    let rl = block.push(&[RlimitArg { resource: libc::RLIMIT_NOFILE, _pad: 0, cur: 100, max: nofile.rlim_max }]);
    let scratch = block.area(vmas.len() * PLAN_SCRATCH_PER_VMA as usize, 8);
    let stack = block.area(THREAD_STACK_RESERVE as usize + 16 * 1024, 4096);
    let groups = block.push(&[GROUP]);
    let auxv = block.push(&[6u64, 4096, 0x1234_5678, 0xabcd, 0, 0]); // AT_PAGESZ, a private tag, AT_NULL
    // Thread 1 keeps uid 1000 but gets another effective/saved uid and
    // no supplementary group (credentials are per thread).
    let creds = CredsArg {
        uid: 1000,
        euid: 1000,
        suid: 1000,
        fsuid: 1000,
        gid: 1000,
        egid: 1000,
        sgid: 1000,
        fsgid: 1000,
        groups,
        cap_inh: cap_set("CapInh:"),
        cap_prm: cap_set("CapPrm:"),
        cap_eff: cap_set("CapEff:"),
        cap_bnd: cap_set("CapBnd:"),
        cap_amb: cap_set("CapAmb:"),
        secbits: 0,
        no_new_privs: 0,
    };
    let creds1 = CredsArg { euid: 1001, suid: 1002, fsuid: 1001, groups: ArgArray::default(), ..creds };
    let t = ThreadArg {
        tid: pid,
        gpregs: regs,
        sigmask,
        sas_flags: 2,
        siginfos: own,
        stack,
        rseq_ptr: RSEQ_AT,
        rseq_len: 32,
        rseq_sig: RSEQ_SIG,
        comm: *b"restored-main\0\0\0",
        creds,
        ..Default::default()
    };
    let own1 = block.push(&[siginfo(SIGRT1 as i32 + 1, 0x99)]);
    let stack1 = block.area(THREAD_STACK_RESERVE as usize + 16 * 1024, 4096);
    let t1 = ThreadArg {
        tid: tid1,
        gpregs: regs1,
        sigmask: sigmask | 1 << SIGRT1, // also SIGRTMIN+2
        sas_flags: 2,
        siginfos: own1,
        stack: stack1,
        clear_child_tid: T1_TID_WORD,
        comm: *b"restored-thread1",
        creds: creds1,
        ..Default::default()
    };
    let both = [t, t1];
    let threads = block.push(if threaded { &both[..] } else { &both[..1] });
    let base = block.base();
    let h = block.header_mut();
    let trap = mode == "trap" || mode == "threads-trap";
    h.flags = RESTORE_F_MM
        | RESTORE_F_PERSONALITY
        | RESTORE_F_CREDS
        | RESTORE_F_CLOSE_FDS
        | RESTORE_F_DUMPABLE
        | if trap { 0 } else { RESTORE_F_NO_TRAP };
    h.cur_rseq = glibc_rseq();
    h.personality = PERSONALITY;
    h.mm = MmMapArg {
        start_code: CODE_AT,
        end_code: CODE_AT + PAGE,
        start_data: DATA_AT,
        end_data: DATA_AT + PAGE,
        start_brk: DATA_AT + 2 * PAGE,
        brk: DATA_AT + 3 * PAGE,
        start_stack: DATA_AT + 3 * PAGE - 8,
        arg_start: DATA_AT + 0x100,
        arg_end: DATA_AT + 0x180,
        env_start: DATA_AT + 0x180,
        env_end: DATA_AT + 0x200,
        auxv: ArgArray { off: auxv.off, count: 48 },
        exe_fd: -1,
        _pad: 0,
    };
    h.blob = MemRange { start: loaded.base() as u64, len: loaded.len() as u64 };
    h.premap = MemRange { start: PREMAP, len: 6 * PAGE + vdso.len };
    h.uffd = uffd;
    h.dumpable = 1;
    h.bounce = MemRange { start: BOUNCE, len: 3 * PAGE };
    h.scratch = scratch;
    h.vmas = varr;
    h.threads = threads;
    h.sigactions = sarr;
    h.shared_siginfos = shared;
    h.posix_timers = timers;
    h.rlimits = rl;
    h.itimers[0] = ItimerArg { interval_sec: 50, value_sec: 50, ..Default::default() };
    h.vdso = VdsoArg {
        running_vdso: vdso,
        running_vvar: vvar,
        park: MemRange { start: PARK, len: span.next_multiple_of(PAGE) },
        dumped_vdso,
        dumped_vvar,
        ..Default::default()
    };

    let entry = loaded.entry("restore_entry").ok_or("no restore_entry")?;
    let status_off = std::mem::offset_of!(RestoreArgs, status);
    println!("ready {base:#x} {status_off} {tid1}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    if trap {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    }
    let top = stack.start + stack.len;
    let _keep = std::io::stdout().as_raw_fd();
    // SAFETY: enters the blob on thread 0's stack with the block; it never
    // returns (rt_sigreturn into the restored code, or exit_group(1)).
    unsafe { asm!("mov rsp, {top}", "call {entry}", "ud2", top = in(reg) top, entry = in(reg) entry, in("rdi") base, options(noreturn)) }
}
