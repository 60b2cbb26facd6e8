//! Integration tests of the restore stages inside the blob: the
//! `pie-restore-check` program maps the blob and runs the memory, vDSO and
//! sigreturn test entries, natively and under `qemu-x86_64` (where there
//! is no vDSO, so a dumped vDSO copy gets syscall stubs: the vDSO-differs
//! path).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CHECK: &str = env!("CARGO_BIN_EXE_pie-restore-check");

mod common;

use common::qemu;

fn check(qemu: Option<&Path>, args: &[&str]) -> String {
    let out: Output = match qemu {
        Some(q) => Command::new(q).arg(CHECK).args(args).output(),
        None => Command::new(CHECK).args(args).output(),
    }
    .expect("run pie-restore-check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("ok: "),
        "{qemu:?} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// This process's vDSO image written to a temporary file (removed on drop).
struct VdsoFile(PathBuf);

impl VdsoFile {
    fn new(tag: &str) -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.ends_with("[vdso]")).expect("no [vdso]");
        let (a, b) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
        let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
        // SAFETY: the vDSO is mapped readable for the life of the process.
        let img = unsafe { std::slice::from_raw_parts(a as *const u8, b - a) };
        let path = std::env::temp_dir().join(format!("criu-rs-vdso-{}-{tag}.img", std::process::id()));
        std::fs::write(&path, img).unwrap();
        Self(path)
    }
}

impl Drop for VdsoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn memory_stages_natively() {
    for seed in ["1", "7", "12345"] {
        let out = check(None, &["memory", seed]);
        assert!(!out.contains(" 0 used the bounce area"), "no layout needed the bounce area: {out}");
    }
}

#[test]
fn memory_stages_under_qemu() {
    let q = qemu();
    check(Some(&q), &["memory", "3", "--no-smaps"]);
}

#[test]
fn vdso_copy_redirected_natively() {
    let img = VdsoFile::new("native");
    let p = img.0.to_str().unwrap();
    assert!(check(None, &["vdso", p, "jump-near"]).contains("jmp rel32"));
    assert!(check(None, &["vdso", p, "jump-far"]).contains("movabs"));
    assert!(check(None, &["vdso", p, "stub"]).contains("syscall stub"));
}

#[test]
fn vdso_copy_stubbed_under_qemu_without_vdso() {
    let q = qemu();
    let img = VdsoFile::new("qemu");
    assert!(check(Some(&q), &["vdso", img.0.to_str().unwrap(), "stub"]).contains("syscall stub"));
}

#[test]
fn sigreturn_natively() {
    check(None, &["sigreturn"]);
}

#[test]
fn sigreturn_under_qemu() {
    let q = qemu();
    check(Some(&q), &["sigreturn"]);
}

// ---- The whole restore_entry, turning pie-restore-check into a restored task.

mod full {
    use super::CHECK;
    use criu_core::abi::{RestoreStatus, STAGE_CHECK_ARGS, STAGE_SIGRETURN};
    use nix::sys::ptrace;
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::FileExt;
    use std::process::{Child, Command, Stdio};

    const FINAL: u64 = 0x1000_0000_0000;
    const CODE_AT: u64 = FINAL;
    const DATA_AT: u64 = FINAL + 0x10000;
    const NONE_AT: u64 = FINAL + 0x20000;
    const FILE_AT: u64 = FINAL + 0x30000;
    const PARK: u64 = 0x1200_0000_0000;
    const VDSO_DUMPED: u64 = FINAL + 0x40000;
    const RSEQ_AT: u64 = DATA_AT + 0x2000;
    const LAZY_AT: u64 = FINAL + 0x38000;
    const BLOB_AT: u64 = 0x3a00_0000_0000;

    /// Kills the child (by pid) unless it was reaped.
    struct Guard(Child, bool);

    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.1 {
                let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
                let _ = self.0.wait();
            }
        }
    }

    fn spawn(mode: &str) -> (Guard, BufReader<std::process::ChildStdout>, u64, u64) {
        let (g, out, base, off, _) = spawn_tid(mode);
        (g, out, base, off)
    }

    /// Starts `pie-restore-check full MODE`; returns the child, its stdout,
    /// the block address, the status offset and thread 1's tid (0 if none).
    fn spawn_tid(mode: &str) -> (Guard, BufReader<std::process::ChildStdout>, u64, u64, i32) {
        let mut child = Command::new(CHECK)
            .args(["full", mode])
                .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pie-restore-check");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let mut it = line.split_whitespace();
        assert_eq!(it.next(), Some("ready"), "child said {line:?}");
        let base = u64::from_str_radix(it.next().unwrap().trim_start_matches("0x"), 16).unwrap();
        let off = it.next().unwrap().parse().unwrap();
        let tid = it.next().unwrap().parse().unwrap();
        (Guard(child, false), out, base, off, tid)
    }

    /// The restored code wrote data words `words`, in this order.
    fn expect_words(out: &mut impl Read, words: impl Iterator<Item = u64>) {
        let mut data = Vec::new();
        out.read_to_end(&mut data).unwrap();
        let got: Vec<u64> = data.chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))).collect();
        let want: Vec<u64> = words.map(|i| 0xda7a_0000_0000_0000 | i).collect();
        assert_eq!(got, want, "restored code wrote {data:x?}");
    }

    fn expect_data(out: &mut impl Read) {
        expect_words(out, 0..8);
    }

    /// Hex mask from a /proc/PID/status line.
    fn status_mask(status: &str, key: &str) -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }

    #[test]
    fn restored_code_runs_without_a_tracer() {
        let (mut g, mut out, _, _) = spawn("notrap");
        expect_data(&mut out);
        let st = g.0.wait().unwrap();
        g.1 = true;
        assert_eq!(st.code(), Some(42), "{st:?}");
    }

    #[test]
    fn bad_layout_is_refused_with_a_log_line() {
        let (mut g, _out, _, _) = spawn("bad");
        let st = g.0.wait().unwrap();
        g.1 = true;
        let mut err = String::new();
        g.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(st.code(), Some(1), "{st:?} {err}");
        let want = format!("criu-rs restorer: error stage {STAGE_CHECK_ARGS:#x}: premapped copy outside the premap area");
        assert!(err.contains(&want), "stderr: {err}");
    }

    #[test]
    fn handshake_under_ptrace_and_state_before_sigreturn() {
        let (mut g, mut out, base, off) = spawn("trap");
        let pid = Pid::from_raw(g.0.id() as i32);
        ptrace::seize(pid, ptrace::Options::empty()).expect("PTRACE_SEIZE");
        g.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        match waitpid(pid, None).unwrap() {
            WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
            other => panic!("expected the SIGTRAP stop, got {other:?}"),
        }
        let proc = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap();

        // The status the blob left in the argument block.
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let mut raw = [0u8; std::mem::size_of::<RestoreStatus>()];
        mem.read_exact_at(&mut raw, base + off).unwrap();
        let stage = u32::from_le_bytes(raw[0..4].try_into().unwrap());
        let error = i64::from_le_bytes(raw[8..16].try_into().unwrap());
        assert_eq!((stage, error), (STAGE_SIGRETURN, 0));

        // The address space: the restored VMAs, the vDSO moved to its
        // dumped place, and the blob + argument block the host removes
        // next; nothing else (the park area is empty again).
        let maps = proc("maps");
        let perms_at = |a: u64| {
            maps.lines()
                .find(|l| l.starts_with(&format!("{a:x}-")))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_else(|| panic!("nothing at {a:#x}:\n{maps}"))
                .to_owned()
        };
        assert_eq!(perms_at(CODE_AT), "r-xp");
        assert_eq!(perms_at(DATA_AT), "rw-p");
        assert_eq!(perms_at(NONE_AT), "---p");
        assert_eq!(perms_at(FILE_AT), "rw-s");
        for l in maps.lines() {
            let start = u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap();
            let ok = (FINAL..FINAL + 0x60000).contains(&start)
                || (BLOB_AT..BLOB_AT + 0x10_0000).contains(&start)
                || (base..base + (1 << 20)).contains(&start)
                || l.ends_with("[vsyscall]");
            assert!(ok, "unexpected mapping left: {l}\n{maps}");
        }
        assert!(maps.lines().any(|l| l.ends_with("[vvar]") && l.starts_with(&format!("{VDSO_DUMPED:x}-"))), "vvar:\n{maps}");
        assert!(maps.lines().any(|l| l.ends_with("[vdso]") && l.starts_with("1000000")), "vDSO not moved:\n{maps}");
        assert!(!maps.contains(&format!("{PARK:x}")), "park area not empty:\n{maps}");

        // PR_SET_MM_MAP fields (stat fields 26-28, 45-51) and the auxv.
        let stat = proc("stat");
        let f: Vec<u64> = stat.rsplit_once(") ").unwrap().1.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        let field = |n: usize| f[n - 3];
        assert_eq!((field(26), field(27), field(28)), (CODE_AT, CODE_AT + 0x1000, DATA_AT + 0x3000 - 8), "code/stack");
        assert_eq!((field(45), field(46), field(47)), (DATA_AT, DATA_AT + 0x1000, DATA_AT + 0x2000), "data/brk");
        assert_eq!((field(48), field(49), field(50), field(51)), (DATA_AT + 0x100, DATA_AT + 0x180, DATA_AT + 0x180, DATA_AT + 0x200));
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap();
        let words: Vec<u64> = auxv.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&words[..4], &[6, 4096, 0x1234_5678, 0xabcd], "auxv");
        assert_eq!(proc("personality").trim(), "00040000");
        assert_eq!(proc("comm").trim(), "restored-main");
        // Dumpable again after the uid change: /proc/PID belongs to uid 1000.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(format!("/proc/{pid}/stat")).unwrap().uid(), 1000, "dumpable");

        // The lazy VMA is registered with the userfaultfd (VmFlags "um");
        // the fds handed to the blob (memfd, userfaultfd) are closed: only
        // the child's extra copy of the userfaultfd (100) is left.
        let smaps = proc("smaps");
        let lazy = smaps.split(&format!("\n{LAZY_AT:x}-")).nth(1).unwrap_or_else(|| panic!("no lazy VMA:\n{smaps}"));
        let vmflags = lazy.lines().find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(vmflags.split_whitespace().any(|f| f == "um"), "lazy VMA not registered: {vmflags}");
        let links: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), std::fs::read_link(e.path()).unwrap().display().to_string())
            })
            .collect();
        assert!(!links.iter().any(|(_, l)| l.contains("memfd:full")), "file VMA fd left open: {links:?}");
        let uffds: Vec<&str> = links.iter().filter(|(_, l)| l.contains("userfaultfd")).map(|(n, _)| n.as_str()).collect();
        assert_eq!(uffds, vec!["100"], "the blob's userfaultfd left open: {links:?}");

        // rseq: glibc's registration dropped, the dumped one registered.
        let mut conf = [0u64; 3];
        // SAFETY: PTRACE_GET_RSEQ_CONFIGURATION writes 24 bytes into `conf`.
        let r = unsafe { libc::ptrace(0x420f, pid.as_raw(), 24usize, conf.as_mut_ptr()) };
        assert_eq!(r, 24, "PTRACE_GET_RSEQ_CONFIGURATION: {}", std::io::Error::last_os_error());
        assert_eq!((conf[0], conf[1] as u32, (conf[1] >> 32) as u32), (RSEQ_AT, 32, 0x5305_3053), "rseq");

        let status = proc("status");
        let line = |k: &str| status.lines().find(|l| l.starts_with(k)).unwrap().split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
        assert_eq!(line("Uid:"), "1000 1000 1000 1000");
        assert_eq!(line("Gid:"), "1000 1000 1000 1000");
        assert_eq!(line("Groups:"), "4242");
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(status_mask(&status, "CapEff:"), status_mask(&own, "CapEff:"), "capabilities kept");
        assert_ne!(status_mask(&status, "SigCgt:") & 1 << 9, 0, "SIGUSR1 handler");
        assert_ne!(status_mask(&status, "SigIgn:") & 1 << 11, 0, "SIGUSR2 ignored");
        assert_ne!(status_mask(&status, "ShdPnd:") & 1 << 9, 0, "SIGUSR1 queued process-wide");
        assert_ne!(status_mask(&status, "SigPnd:") & 1 << 34, 0, "SIGRTMIN+1 queued to the thread");
        assert!(proc("timers").contains("ID: 5"), "timers: {}", proc("timers"));
        let limits = proc("limits");
        let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        assert_eq!(nofile.split_whitespace().nth(3), Some("100"), "{nofile}");

        // The rest of the handshake: rt_sigreturn enter, exit, then the
        // restored code's first syscall (write) with the dumped mask.
        ptrace::syscall(pid, None).unwrap();
        assert!(matches!(waitpid(pid, None).unwrap(), WaitStatus::Stopped(_, Signal::SIGTRAP)));
        assert_eq!(ptrace::getregs(pid).unwrap().orig_rax, 15, "rt_sigreturn");
        ptrace::syscall(pid, None).unwrap();
        waitpid(pid, None).unwrap();
        let regs = ptrace::getregs(pid).unwrap();
        assert_eq!((regs.rip, regs.rsi, regs.rdx), (CODE_AT, DATA_AT, 64), "registers after rt_sigreturn");
        ptrace::syscall(pid, None).unwrap();
        waitpid(pid, None).unwrap();
        assert_eq!(ptrace::getregs(pid).unwrap().orig_rax, 1, "write");
        assert_eq!(status_mask(&proc("status"), "SigBlk:"), 1 << 9 | 1 << 34, "restored mask");
        ptrace::cont(pid, None).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 42));
        g.1 = true;
        expect_data(&mut out);
    }

    #[test]
    fn threads_restored_without_a_tracer() {
        let (mut g, mut out, _, _, tid) = spawn_tid("threads");
        assert!(tid > 0);
        expect_words(&mut out, (8..16).chain(0..8));
        let st = g.0.wait().unwrap();
        g.1 = true;
        assert_eq!(st.code(), Some(42), "{st:?}");
    }

    /// The threaded handshake: the host seizes thread 0 with
    /// PTRACE_O_TRACECLONE, lets event stops go, and waits until every
    /// thread sits at its trap before resuming them all.
    #[test]
    fn threads_handshake_under_ptrace() {
        use nix::sys::wait::WaitPidFlag;
        let (mut g, mut out, base, off, tid1) = spawn_tid("threads-trap");
        let pid = Pid::from_raw(g.0.id() as i32);
        ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACECLONE).expect("PTRACE_SEIZE");
        g.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        // Wait on our two tids only (other tests run in parallel).
        let tids = [pid, Pid::from_raw(tid1)];
        let mut trapped = std::collections::BTreeSet::new();
        while trapped.len() < 2 {
            for &t in &tids {
                match waitpid(t, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Stopped(p, Signal::SIGTRAP)) => {
                        trapped.insert(p.as_raw());
                    }
                    Ok(WaitStatus::PtraceEvent(p, _, _)) => ptrace::cont(p, None).unwrap(),
                    Ok(WaitStatus::Stopped(p, sig)) => ptrace::cont(p, Some(sig)).unwrap(),
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(trapped, [pid.as_raw(), tid1].into_iter().collect(), "both threads at their trap");
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let mut raw = [0u8; std::mem::size_of::<RestoreStatus>()];
        mem.read_exact_at(&mut raw, base + off).unwrap();
        assert_eq!(u32::from_le_bytes(raw[0..4].try_into().unwrap()), STAGE_SIGRETURN);
        assert_eq!(i64::from_le_bytes(raw[8..16].try_into().unwrap()), 0);
        // Per-thread state of thread 1: its own queued signal and creds.
        let st1 = std::fs::read_to_string(format!("/proc/{pid}/task/{tid1}/status")).unwrap();
        assert_ne!(status_mask(&st1, "SigPnd:") & 1 << 35, 0, "SIGRTMIN+2 queued to thread 1");
        let line1 = |key: &str| st1.lines().find(|l| l.starts_with(key)).map(|l| l[key.len()..].split_whitespace().collect::<Vec<_>>().join(" "));
        assert_eq!(line1("Uid:").as_deref(), Some("1000 1001 1002 1001"), "thread 1's own uids");
        assert_eq!(line1("Groups:").as_deref(), Some(""), "thread 1's own groups");
        let st0 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
        assert!(st0.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().skip(1).all(|u| u == "1000")), "thread 0's uids:\n{st0}");
        let comm1 = std::fs::read_to_string(format!("/proc/{pid}/task/{tid1}/comm")).unwrap();
        assert_eq!(comm1.trim(), "restored-thread", "thread 1 name (15 bytes kept)");
        for t in [pid.as_raw(), tid1] {
            ptrace::cont(Pid::from_raw(t), None).unwrap();
        }
        // Thread 1 exits first and must be reaped before the leader's
        // exit is reported.
        let mut code = None;
        while code.is_none() {
            for &t in &tids {
                match waitpid(t, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, c)) if p == pid => code = Some(c),
                    Ok(WaitStatus::PtraceEvent(p, _, _)) => ptrace::cont(p, None).unwrap(),
                    Ok(WaitStatus::Stopped(p, sig)) => ptrace::cont(p, Some(sig)).unwrap(),
                    _ => {}
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(code, Some(42));
        g.1 = true;
        expect_words(&mut out, (8..16).chain(0..8));
    }
}
