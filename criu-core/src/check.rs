//! Kernel feature probes for `criu-rs check`.
//!
//! Each probe exercises the real kernel interface once (no version sniffing)
//! and reports whether it works; [`FEATURES`] says which criu-rs features
//! depend on it, so a missing one can be explained to the user.

use std::fs;
use std::io;

/// One kernel feature criu-rs relies on.
pub struct Feature {
    /// The name accepted by `criu-rs check --feature NAME`.
    pub name: &'static str,
    /// What the kernel must provide.
    pub what: &'static str,
    /// The criu-rs features that are disabled without it.
    pub disables: &'static str,
    /// Runs the probe: `Ok(())` when supported, else why not.
    probe: fn() -> Result<(), String>,
}

/// The outcome of probing one feature.
pub struct Report {
    pub feature: &'static Feature,
    pub result: Result<(), String>,
}

/// Every probe, in the order `check` prints them.
pub static FEATURES: &[Feature] = &[
    Feature {
        name: "ptrace",
        what: "PTRACE_SEIZE / PTRACE_INTERRUPT / PTRACE_GETREGSET(NT_X86_XSTATE)",
        disables: "dump, pre-dump and restore (tasks cannot be frozen or finished)",
        probe: probe_ptrace,
    },
    Feature {
        name: "seccomp_suspend",
        what: "PTRACE_O_SUSPEND_SECCOMP (as root)",
        disables: "dumping and restoring tasks under seccomp (injected syscalls would meet the filters)",
        probe: probe_seccomp_suspend,
    },
    Feature {
        name: "seccomp_filters",
        what: "PTRACE_SECCOMP_GET_FILTER",
        disables: "dumping tasks with seccomp filters",
        probe: probe_seccomp_filters,
    },
    Feature {
        name: "get_rseq_conf",
        what: "PTRACE_GET_RSEQ_CONFIGURATION",
        disables: "dumping tasks with a registered rseq area",
        probe: probe_rseq_conf,
    },
    Feature {
        name: "clone3_set_tid",
        what: "clone3() with set_tid (CAP_CHECKPOINT_RESTORE)",
        disables: "restore with the original pids",
        probe: probe_clone3_set_tid,
    },
    Feature {
        name: "map_files",
        what: "/proc/PID/map_files links",
        disables: "dumping mappings of files that are unlinked or not reachable by path",
        probe: probe_map_files,
    },
    Feature {
        name: "prctl_mm_map",
        what: "prctl(PR_SET_MM, PR_SET_MM_MAP)",
        disables: "restoring the mm layout fields (brk, arg/env areas, auxv, exe link)",
        probe: probe_mm_map,
    },
    Feature {
        name: "kcmp",
        what: "kcmp(KCMP_FILE)",
        disables: "detecting file descriptions shared between fds and tasks",
        probe: probe_kcmp,
    },
    Feature {
        name: "pidfd_getfd",
        what: "pidfd_open() + pidfd_getfd()",
        disables: "taking a task's userfaultfd for live dirty tracking",
        probe: probe_pidfd_getfd,
    },
    Feature {
        name: "uffd",
        what: "userfaultfd() with the UFFDIO_API handshake",
        disables: "lazy restore (lazy-pages, post-copy migration) and dirty tracking",
        probe: probe_uffd,
    },
    Feature {
        name: "uffd-noncoop",
        what: "userfaultfd EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP",
        disables: "lazy restore of processes that fork, mremap or munmap",
        probe: probe_uffd_noncoop,
    },
    Feature {
        name: "uffd-wp-async",
        what: "userfaultfd write-protect with WP_ASYNC and WP_UNPOPULATED",
        disables: "pre-dump and incremental dumps",
        probe: probe_uffd_wp_async,
    },
    Feature {
        name: "uffd-minor",
        what: "userfaultfd MINOR mode on shmem",
        disables: "lazy restore of shared memory",
        probe: probe_uffd_minor,
    },
    Feature {
        name: "uffd-move",
        what: "userfaultfd UFFDIO_MOVE",
        disables: "zero-copy page moves in lazy restore (falls back to UFFDIO_COPY)",
        probe: probe_uffd_move,
    },
    Feature {
        name: "guard_regions",
        what: "madvise(MADV_GUARD_INSTALL) and ioctl(PAGEMAP_SCAN) reporting PAGE_IS_GUARD",
        disables: "dumping processes with guard regions (without it they are not seen)",
        probe: probe_guard_regions,
    },
    Feature {
        name: "pagemap_scan",
        what: "ioctl(PAGEMAP_SCAN) on /proc/PID/pagemap",
        disables: "pre-dump and incremental dumps",
        probe: probe_pagemap_scan,
    },
    Feature {
        name: "mem_dirty_track",
        what: "a dirty-page tracker: uffd WP_ASYNC + PAGEMAP_SCAN, or soft-dirty",
        disables: "pre-dump and incremental dumps",
        probe: probe_dirty_track,
    },
    Feature {
        name: "soft_dirty",
        what: "soft-dirty bits (CONFIG_MEM_SOFT_DIRTY); optional, criu-rs uses uffd WP_ASYNC",
        disables: "nothing (criu-rs tracks dirty pages with userfaultfd instead)",
        probe: probe_soft_dirty,
    },
    Feature {
        name: "tcp_half_closed",
        what: "TCP_REPAIR on half-closed connections, and raw IPPROTO_RAW sockets with SO_MARK to forge their FINs",
        disables: "--tcp-established dumps of connections in FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING",
        probe: probe_tcp_half_closed,
    },
    Feature {
        name: "ipv6_freebind",
        what: "setsockopt(IPV6_FREEBIND)",
        disables: "restoring IPv6 sockets bound to addresses not (or not yet) on the host",
        probe: probe_ipv6_freebind,
    },
    Feature {
        name: "sockopt_buf_lock",
        what: "getsockopt/setsockopt(SO_BUF_LOCK)",
        disables: "keeping whether a socket's buffer sizes were set by hand (SOCK_SNDBUF_LOCK/SOCK_RCVBUF_LOCK)",
        probe: probe_sockopt_buf_lock,
    },
    Feature {
        name: "fdinfo_lock",
        what: "file locks listed in /proc/PID/fdinfo (lock: lines)",
        disables: "dumping file locks (--file-locks)",
        probe: probe_fdinfo_lock,
    },
    Feature {
        name: "vdso",
        what: "a [vdso] mapping criu-rs can identify (split [vvar]/[vvar_vclock] included)",
        disables: "restoring the vDSO at its dumped address",
        probe: probe_vdso,
    },
];

/// Probes every feature.
pub fn check_all() -> Vec<Report> {
    FEATURES.iter().map(|f| Report { feature: f, result: (f.probe)() }).collect()
}

/// Looks a feature up by its `--feature` name.
pub fn find(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

impl Feature {
    /// Probes this one feature.
    pub fn check(&'static self) -> Report {
        Report { feature: self, result: (self.probe)() }
    }
}

fn errno_text(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// Forks a child that waits in `pause()`, runs `f` on it, then kills and
/// reaps it. The child is ours alone and is cleaned up by pid.
fn with_paused_child<T>(f: impl FnOnce(libc::pid_t) -> T) -> Result<T, String> {
    // SAFETY: the child only calls async-signal-safe functions (pause, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno_text("fork"));
    }
    if pid == 0 {
        loop {
            // SAFETY: pause and _exit are async-signal-safe.
            unsafe {
                libc::pause();
            }
        }
    }
    let out = f(pid);
    // SAFETY: `pid` is the child forked above; kill and waitpid on it only.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::__WALL);
    }
    Ok(out)
}

/// Seizes `pid`, interrupts it and waits for the stop.
fn seize_and_stop(pid: libc::pid_t) -> Result<(), String> {
    // SAFETY: plain ptrace requests on our own child; no memory is passed.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } != 0 {
        return Err(errno_text("PTRACE_SEIZE"));
    }
    // SAFETY: as above.
    if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0) } != 0 {
        return Err(errno_text("PTRACE_INTERRUPT"));
    }
    let mut st = 0;
    // SAFETY: waiting for our own child; `st` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut st, libc::__WALL) } != pid {
        return Err(errno_text("waitpid"));
    }
    Ok(())
}

fn probe_ptrace() -> Result<(), String> {
    with_paused_child(|pid| {
        seize_and_stop(pid)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        const NT_X86_XSTATE: usize = 0x202;
        // SAFETY: `iov` describes `buf`, which outlives the call.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, pid, NT_X86_XSTATE, &mut iov) };
        if r != 0 {
            return Err(errno_text("PTRACE_GETREGSET(NT_X86_XSTATE)"));
        }
        Ok(())
    })?
}

fn probe_seccomp_suspend() -> Result<(), String> {
    with_paused_child(|pid| {
        // SAFETY: a plain ptrace request on our own child; no memory is passed.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, libc::PTRACE_O_SUSPEND_SECCOMP) } != 0 {
            return Err(errno_text("PTRACE_SEIZE(PTRACE_O_SUSPEND_SECCOMP)"));
        }
        Ok(())
    })?
}

fn probe_seccomp_filters() -> Result<(), String> {
    with_paused_child(|pid| {
        seize_and_stop(pid)?;
        // The child has no filter: a kernel that knows the request says
        // EINVAL; EIO means it does not know it.
        match crate::ptrace::raw::ptrace_seccomp_get_filter(pid, 0) {
            Err(nix::errno::Errno::EIO) => Err("PTRACE_SECCOMP_GET_FILTER: unknown request (EIO)".to_string()),
            _ => Ok(()),
        }
    })?
}

fn probe_rseq_conf() -> Result<(), String> {
    with_paused_child(|pid| {
        seize_and_stop(pid)?;
        // struct ptrace_rseq_configuration: u64 addr, u32 len, u32 sig, u32 flags, u32 pad.
        let mut conf = [0u64; 3];
        let req = linux_raw_sys::ptrace::PTRACE_GET_RSEQ_CONFIGURATION;
        // SAFETY: `conf` is 24 bytes, the size passed.
        let r = unsafe {
            libc::ptrace(req as libc::c_uint, pid, std::mem::size_of_val(&conf), conf.as_mut_ptr())
        };
        if r < 0 {
            return Err(errno_text("PTRACE_GET_RSEQ_CONFIGURATION"));
        }
        Ok(())
    })?
}

fn probe_clone3_set_tid() -> Result<(), String> {
    // Try a few pids nobody uses, from the top of the pid range down: one
    // may be taken between the look and the clone (EEXIST), so try again.
    let pid_max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let mut last = String::from("no free pid to try");
    let free = (300..pid_max).rev().step_by(7).filter(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
    for want in free.take(5) {
        match clone3_with_pid(want) {
            Ok(()) => return Ok(()),
            Err((libc::EEXIST, why)) => last = why,
            Err((_, why)) => return Err(why),
        }
    }
    Err(last)
}

/// Creates a child with pid `want` through clone3(set_tid); it exits at
/// once and is reaped. Errors carry the errno.
fn clone3_with_pid(want: i32) -> Result<(), (i32, String)> {
    let set_tid = [want as u64];
    // struct clone_args (CLONE_ARGS_SIZE_VER2 = 88 bytes).
    let mut args = [0u64; 11];
    args[4] = libc::SIGCHLD as u64; // exit_signal
    args[8] = set_tid.as_ptr() as u64; // set_tid
    args[9] = 1; // set_tid_size
    // SAFETY: `args` and `set_tid` are valid for the call; the child does
    // nothing but _exit.
    let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), std::mem::size_of_val(&args)) };
    if r == 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err((e.raw_os_error().unwrap_or(0), format!("clone3(set_tid={want}): {e}")));
    }
    let mut st = 0;
    // SAFETY: reaping the child just created.
    unsafe { libc::waitpid(r as libc::pid_t, &mut st, 0) };
    if r as i32 != want {
        return Err((0, format!("clone3 gave pid {r}, asked for {want}")));
    }
    Ok(())
}

fn probe_map_files() -> Result<(), String> {
    let maps = fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let range = maps
        .lines()
        .find(|l| l.split_whitespace().nth(5).is_some_and(|p| p.starts_with('/')))
        .and_then(|l| l.split_whitespace().next())
        .ok_or("no file mapping in /proc/self/maps")?;
    fs::read_link(format!("/proc/self/map_files/{range}"))
        .map(|_| ())
        .map_err(|e| format!("/proc/self/map_files/{range}: {e}"))
}

fn probe_mm_map() -> Result<(), String> {
    let mut size: libc::c_uint = 0;
    let (opt, arg) = (libc::PR_SET_MM, linux_raw_sys::prctl::PR_SET_MM_MAP_SIZE);
    // SAFETY: PR_SET_MM_MAP_SIZE writes one unsigned int to `size`.
    let r = unsafe { libc::prctl(opt, arg as libc::c_ulong, &mut size as *mut libc::c_uint, 0, 0) };
    if r != 0 {
        return Err(errno_text("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)"));
    }
    if size == 0 {
        return Err("PR_SET_MM_MAP_SIZE returned 0".into());
    }
    Ok(())
}

fn probe_kcmp() -> Result<(), String> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes integers only.
    let me = unsafe { libc::getpid() };
    // SAFETY: as above; fd 0 compared with itself.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, me, me, KCMP_FILE, 0, 0) };
    if r < 0 {
        return Err(errno_text("kcmp(KCMP_FILE)"));
    }
    Ok(())
}

fn probe_fdinfo_lock() -> Result<(), String> {
    use rustix::fd::AsRawFd;
    let fd = rustix::fs::memfd_create("criu-rs-check", rustix::fs::MemfdFlags::CLOEXEC).map_err(|e| format!("memfd_create: {e}"))?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|e| format!("flock: {e}"))?;
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).map_err(|e| format!("fdinfo: {e}"))?;
    if !info.lines().any(|l| l.starts_with("lock:")) {
        return Err("a flock is not listed in fdinfo".into());
    }
    Ok(())
}

fn probe_pidfd_getfd() -> Result<(), String> {
    // SAFETY: integer-only syscalls; every fd obtained is closed.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
        if pidfd < 0 {
            return Err(errno_text("pidfd_open"));
        }
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, 2, 0);
        let err = errno_text("pidfd_getfd");
        libc::close(pidfd as i32);
        if fd < 0 {
            return Err(err);
        }
        libc::close(fd as i32);
    }
    Ok(())
}

/// Opens a userfaultfd and returns the feature bits the kernel offers.
fn uffd_features() -> Result<u64, String> {
    // SAFETY: userfaultfd takes flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(errno_text("userfaultfd"));
    }
    let fd = fd as i32;
    // struct uffdio_api { u64 api; u64 features; u64 ioctls; }
    let mut api = [0xAAu64, 0, 0];
    // SAFETY: UFFDIO_API reads and writes the 24-byte struct `api`.
    let r = unsafe { libc::ioctl(fd, linux_raw_sys::ioctl::UFFDIO_API as _, api.as_mut_ptr()) };
    let err = errno_text("UFFDIO_API");
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(err);
    }
    Ok(api[1])
}

fn need_uffd(bits: u32, names: &str) -> Result<(), String> {
    let have = uffd_features()?;
    if have & bits as u64 == bits as u64 {
        Ok(())
    } else {
        Err(format!("userfaultfd lacks {names} (kernel offers features {have:#x})"))
    }
}

fn probe_uffd() -> Result<(), String> {
    uffd_features().map(|_| ())
}

fn probe_uffd_noncoop() -> Result<(), String> {
    use linux_raw_sys::general::*;
    need_uffd(
        UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP,
        "EVENT_FORK/REMAP/REMOVE/UNMAP",
    )
}

fn probe_uffd_wp_async() -> Result<(), String> {
    use linux_raw_sys::general::*;
    need_uffd(
        UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
        "PAGEFAULT_FLAG_WP/WP_ASYNC/WP_UNPOPULATED",
    )
}

fn probe_uffd_minor() -> Result<(), String> {
    need_uffd(linux_raw_sys::general::UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM")
}

fn probe_uffd_move() -> Result<(), String> {
    need_uffd(linux_raw_sys::general::UFFD_FEATURE_MOVE, "MOVE")
}

/// `PAGEMAP_SCAN` = `_IOWR('f', 16, struct pm_scan_arg)` (96 bytes).
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;

fn probe_pagemap_scan() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open("/proc/self/pagemap").map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    let page = 4096usize;
    let buf = vec![1u8; 4 * page];
    let start = (buf.as_ptr() as usize).div_ceil(page) * page;
    // struct page_region { u64 start, end, categories; }
    let mut regions = [[0u64; 3]; 4];
    let present = linux_raw_sys::general::PAGE_IS_PRESENT as u64;
    // struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len,
    // max_pages, category_inverted, category_mask, category_anyof_mask, return_mask.
    let mut arg: [u64; 12] =
        [96, 0, start as u64, (start + page) as u64, 0, regions.as_mut_ptr() as u64, 4, 0, 0, present, 0, present];
    // SAFETY: `arg` is a pm_scan_arg whose vec points at `regions` (4 entries).
    let r = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN, arg.as_mut_ptr()) };
    drop(buf);
    if r < 0 {
        return Err(errno_text("ioctl(PAGEMAP_SCAN)"));
    }
    Ok(())
}

fn probe_guard_regions() -> Result<(), String> {
    const MADV_GUARD_INSTALL: i32 = 102;
    let page = 4096usize;
    // SAFETY: a fresh private anonymous mapping of our own, unmapped below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(errno_text("mmap"));
    }
    // SAFETY: advice on the mapping above only.
    let r = if unsafe { libc::madvise(p, page, MADV_GUARD_INSTALL) } != 0 {
        Err(errno_text("madvise(MADV_GUARD_INSTALL)"))
    } else {
        let mut got = Vec::new();
        let start = p as u64;
        match crate::proc::pagemap::Pagemap::open(std::process::id() as i32).and_then(|pm| pm.scan_guards(start, start + 2 * page as u64, &mut got)) {
            Ok(true) if got == [(start, start + page as u64)] => Ok(()),
            Ok(true) => Err(format!("PAGEMAP_SCAN reported guard regions {got:x?}")),
            Ok(false) => Err("ioctl(PAGEMAP_SCAN) does not know PAGE_IS_GUARD".into()),
            Err(e) => Err(e.to_string()),
        }
    };
    // SAFETY: our mapping, not used after this.
    unsafe { libc::munmap(p, 2 * page) };
    r
}

fn probe_dirty_track() -> Result<(), String> {
    match (probe_uffd_wp_async(), probe_pagemap_scan()) {
        (Ok(()), Ok(())) => Ok(()),
        (a, b) => probe_soft_dirty().map_err(|sd| {
            let why: Vec<String> = [a.err(), b.err()].into_iter().flatten().collect();
            format!("{}; {sd}", why.join("; "))
        }),
    }
}

fn probe_soft_dirty() -> Result<(), String> {
    // Bit 55 of a pagemap entry is soft-dirty; a freshly written page of a
    // kernel with soft-dirty support has it set (before any clear_refs).
    use std::io::{Read, Seek, SeekFrom};
    let page = 4096usize;
    let buf = vec![1u8; 2 * page];
    let addr = (buf.as_ptr() as usize).div_ceil(page) * page;
    let mut f = fs::File::open("/proc/self/pagemap").map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    let mut ent = [0u8; 8];
    f.seek(SeekFrom::Start((addr / page * 8) as u64))
        .and_then(|_| f.read_exact(&mut ent))
        .map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    drop(buf);
    if u64::from_le_bytes(ent) & (1 << 55) != 0 {
        Ok(())
    } else {
        Err("pagemap shows no soft-dirty bit on a written page (CONFIG_MEM_SOFT_DIRTY off)".into())
    }
}

fn probe_tcp_half_closed() -> Result<(), String> {
    use crate::net::tcp_repair::{self, state};
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listening on 127.0.0.1: {e}"))?;
    let a = std::net::TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?).map_err(|e| format!("connect: {e}"))?;
    let (_b, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    a.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    let st = tcp_repair::tcp_info(&a).map_err(|e| format!("TCP_INFO: {e}"))?.state as u32;
    if !state::fin_sent(st) {
        return Err(format!("a socket shut down for writing is {}", state::name(st)));
    }
    tcp_repair::repair_on(&a).map_err(|e| e.to_string())?;
    let raw = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::RAW, std::num::NonZeroU32::new(libc::IPPROTO_RAW as u32).map(rustix::net::Protocol::from_raw))
        .map_err(|e| format!("raw socket (CAP_NET_RAW): {e}"))?;
    crate::net::sockopt::set_u32(&raw, libc::SOL_SOCKET as u32, libc::SO_MARK as u32, 0xC114).map_err(|e| format!("SO_MARK (CAP_NET_ADMIN): {e}"))
}

fn probe_ipv6_freebind() -> Result<(), String> {
    let s = rustix::net::socket(rustix::net::AddressFamily::INET6, rustix::net::SocketType::STREAM, None).map_err(|e| format!("IPv6 socket: {e}"))?;
    crate::net::sockopt::set_u32(&s, libc::IPPROTO_IPV6 as u32, libc::IPV6_FREEBIND as u32, 1).map_err(|e| format!("IPV6_FREEBIND: {e}"))
}

fn probe_sockopt_buf_lock() -> Result<(), String> {
    const SO_BUF_LOCK: u32 = crate::net::sockopts::SO_BUF_LOCK as u32;
    let s = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None).map_err(|e| format!("socket: {e}"))?;
    crate::net::sockopt::set_u32(&s, libc::SOL_SOCKET as u32, SO_BUF_LOCK, 3).map_err(|e| format!("SO_BUF_LOCK: {e}"))?;
    match crate::net::sockopt::get_u32(&s, libc::SOL_SOCKET as u32, SO_BUF_LOCK) {
        Ok(3) => Ok(()),
        Ok(v) => Err(format!("SO_BUF_LOCK reads {v} after setting 3")),
        Err(e) => Err(format!("SO_BUF_LOCK: {e}")),
    }
}

fn probe_vdso() -> Result<(), String> {
    let maps = fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let vdso = maps.lines().find(|l| l.ends_with("[vdso]")).ok_or("no [vdso] in /proc/self/maps")?;
    let range = vdso.split_whitespace().next().unwrap_or("");
    let start = usize::from_str_radix(range.split('-').next().unwrap_or(""), 16)
        .map_err(|_| format!("bad [vdso] line: {vdso}"))?;
    // SAFETY: the [vdso] mapping is readable and at least one page long.
    let head = unsafe { std::slice::from_raw_parts(start as *const u8, 4) };
    if head != b"\x7fELF" {
        return Err("[vdso] does not start with an ELF header".into());
    }
    Ok(())
}

/// How criu-rs answers one of CRIU's `check --feature` names.
pub enum Answer {
    /// The same as criu-rs's own feature of that name ([`FEATURES`]).
    Probe(&'static str),
    /// criu-rs does this whatever the kernel (it has a fallback).
    Yes(&'static str),
    /// criu-rs cannot do this yet, whatever the kernel says.
    No(&'static str),
}

/// One feature name CRIU's `check --feature` knows (criu/cr-check.c).
pub struct CriuFeature {
    /// CRIU's name.
    pub name: &'static str,
    /// What criu-rs answers.
    pub answer: Answer,
}

impl CriuFeature {
    /// Whether criu-rs can do it here: `Ok(note)` or `Err(why not)`.
    pub fn check(&self) -> Result<&'static str, String> {
        match &self.answer {
            Answer::Probe(own) => {
                let f = find(own).expect("CRIU_FEATURES names an existing probe");
                (f.probe)().map(|()| f.what)
            }
            Answer::Yes(note) => Ok(note),
            Answer::No(why) => Err((*why).to_string()),
        }
    }
}

const NO_MNTNS: &str = "criu-rs does not dump or restore mount namespaces";
const NO_NETNS: &str = "criu-rs does not dump or restore network namespaces";
const NO_SOCKETS: &str = "criu-rs does not dump sockets of this kind yet";
const NO_NETLOCK: &str = "criu-rs does not lock the network (it dumps no network namespace or TCP connection)";

/// Every feature name of CRIU's `check --feature` (CRIU 4.2's list, in its
/// order), with criu-rs's answer: a yes only for what criu-rs can really
/// dump and restore, so that tools asking (CRIU's test driver skips the
/// tests whose feature is missing) do not expect more.
pub static CRIU_FEATURES: &[CriuFeature] = &[
    CriuFeature { name: "mnt_id", answer: Answer::No(NO_MNTNS) },
    CriuFeature { name: "mem_dirty_track", answer: Answer::Probe("mem_dirty_track") },
    CriuFeature { name: "aio_remap", answer: Answer::No("criu-rs does not dump AIO rings") },
    CriuFeature { name: "timerfd", answer: Answer::No("criu-rs does not dump timerfd descriptors yet") },
    CriuFeature { name: "tun", answer: Answer::No("criu-rs does not dump tun devices") },
    CriuFeature { name: "tun_ns", answer: Answer::No("criu-rs does not dump tun devices") },
    CriuFeature { name: "userns", answer: Answer::No("criu-rs does not dump or restore user namespaces") },
    CriuFeature { name: "fdinfo_lock", answer: Answer::Probe("fdinfo_lock") },
    CriuFeature { name: "seccomp_suspend", answer: Answer::Probe("seccomp_suspend") },
    CriuFeature { name: "seccomp_filters", answer: Answer::Probe("seccomp_filters") },
    CriuFeature { name: "loginuid", answer: Answer::No("criu-rs does not restore the audit loginuid") },
    CriuFeature { name: "cgroupns", answer: Answer::No("criu-rs does not dump or restore cgroups") },
    CriuFeature { name: "autofs", answer: Answer::No(NO_MNTNS) },
    CriuFeature { name: "tcp_half_closed", answer: Answer::Probe("tcp_half_closed") },
    CriuFeature { name: "compat_cr", answer: Answer::No("criu-rs does not dump 32-bit tasks") },
    CriuFeature { name: "uffd", answer: Answer::Probe("uffd") },
    CriuFeature { name: "uffd-noncoop", answer: Answer::Probe("uffd-noncoop") },
    CriuFeature { name: "can_map_vdso", answer: Answer::Probe("vdso") },
    CriuFeature { name: "sk_ns", answer: Answer::No(NO_SOCKETS) },
    CriuFeature { name: "sk_unix_file", answer: Answer::No(NO_SOCKETS) },
    CriuFeature { name: "net_diag_raw", answer: Answer::No(NO_SOCKETS) },
    CriuFeature { name: "nsid", answer: Answer::No(NO_NETNS) },
    CriuFeature { name: "link_nsid", answer: Answer::No(NO_NETNS) },
    CriuFeature { name: "kcmp_epoll", answer: Answer::No("criu-rs does not dump epoll descriptors yet") },
    CriuFeature { name: "timens", answer: Answer::No("criu-rs does not dump or restore time namespaces") },
    CriuFeature { name: "external_net_ns", answer: Answer::No(NO_NETNS) },
    CriuFeature { name: "clone3_set_tid", answer: Answer::Probe("clone3_set_tid") },
    CriuFeature { name: "newifindex", answer: Answer::No(NO_NETNS) },
    CriuFeature { name: "nftables", answer: Answer::No(NO_NETLOCK) },
    CriuFeature { name: "has_ipt_legacy", answer: Answer::No(NO_NETLOCK) },
    CriuFeature { name: "pidfd_store", answer: Answer::No("criu-rs has no RPC mode (pidfd store)") },
    CriuFeature { name: "ns_pid", answer: Answer::No("criu-rs does not dump or restore pid namespaces") },
    CriuFeature { name: "apparmor_stacking", answer: Answer::No("criu-rs does not dump or restore LSM profiles") },
    CriuFeature { name: "network_lock_nftables", answer: Answer::No(NO_NETLOCK) },
    CriuFeature { name: "sockopt_buf_lock", answer: Answer::Probe("sockopt_buf_lock") },
    CriuFeature { name: "memfd_hugetlb", answer: Answer::No("criu-rs does not dump hugetlb memory yet") },
    CriuFeature { name: "move_mount_set_group", answer: Answer::No(NO_MNTNS) },
    CriuFeature { name: "openat2", answer: Answer::No(NO_MNTNS) },
    CriuFeature { name: "get_rseq_conf", answer: Answer::Probe("get_rseq_conf") },
    CriuFeature { name: "ipv6_freebind", answer: Answer::Probe("ipv6_freebind") },
    CriuFeature { name: "pagemap_scan", answer: Answer::Probe("pagemap_scan") },
    CriuFeature {
        name: "timer_cr_ids",
        answer: Answer::Yes("POSIX timers get their ids back (PR_TIMER_CREATE_RESTORE_IDS, else by creating until the id comes)"),
    },
    CriuFeature { name: "overlayfs_maps", answer: Answer::No(NO_MNTNS) },
    CriuFeature { name: "breakpoints", answer: Answer::No("criu-rs does not restore hardware breakpoints") },
    CriuFeature { name: "pagemap_scan_guard_pages", answer: Answer::Probe("guard_regions") },
];

/// Looks up one of CRIU's feature names.
pub fn find_criu(name: &str) -> Option<&'static CriuFeature> {
    CRIU_FEATURES.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod criu_feature_tests {
    use super::*;

    #[test]
    fn every_criu_name_is_answered_and_probes_exist() {
        assert_eq!(CRIU_FEATURES.len(), 45, "CRIU 4.2 lists 45 feature names");
        for f in CRIU_FEATURES {
            if let Answer::Probe(own) = f.answer {
                assert!(find(own).is_some(), "{} names a missing probe {own}", f.name);
            }
        }
        assert!(find_criu("userns").unwrap().check().is_err());
    }
}
