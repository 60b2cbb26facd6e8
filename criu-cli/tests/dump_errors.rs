//! `criu-rs dump` refuses what it cannot dump with a clear message and a
//! non-zero exit code, and leaves such processes alone.

mod common;

use common::*;
use std::process::{Command, Stdio};

fn assert_fails(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dump should fail ({needle})");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn missing_pid() {
    // A pid that just went away (reaped child).
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    let dir = scratch("missing-pid");
    assert_fails(&dump(pid, &dir, &["-j"]), &format!("no process with pid {pid}"));
    assert_fails(&dump(0, &dir, &["-j"]), "no process with pid 0");
}

/// A kernel thread we can see: kthreadd (pid 2) where it is visible, or
/// any task flagged `PF_KTHREAD` (0x0020_0000) in its `stat` flags.
fn a_kernel_thread() -> i32 {
    let flags = |pid: i32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].split(' ').nth(6)?.parse().ok()
    };
    let is_kthread = |pid: i32| flags(pid).is_some_and(|f| f & 0x0020_0000 != 0);
    if is_kthread(2) {
        return 2;
    }
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .find(|&pid| is_kthread(pid))
        .expect("no kernel thread visible in /proc (a pid namespace with its own /proc?)")
}

#[test]
fn kernel_thread() {
    let dir = scratch("kthread");
    assert_fails(&dump(a_kernel_thread(), &dir, &["-j"]), "kernel thread");
}

#[test]
fn own_process() {
    let dir = scratch("own");
    // `exec` keeps the shell's pid, so $$ is criu-rs's own pid.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {} dump -j -t $$ -D {}", env!("CARGO_BIN_EXE_criu-rs"), dir.display()))
        .output()
        .unwrap();
    assert_fails(&out, "criu-rs itself");
}

#[test]
fn zombie() {
    let c = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
    let pid = c.id() as i32;
    wait_state(pid, 'Z');
    let dir = scratch("zombie");
    assert_fails(&dump(pid, &dir, &["-j"]), "zombie");
    let mut c = c;
    c.wait().unwrap();
}

/// A process stopped by job control is dumped (no longer refused); with
/// `--leave-running` it stays stopped until SIGCONT, then finds itself
/// intact.
#[test]
fn stopped_process_is_dumped_and_left_stopped() {
    let exe = compile("dumpee");
    let tmp = scratch("stopped-files");
    let mut p = Program::start(&exe, &["1", "0", tmp.to_str().unwrap()]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.pid(), libc::SIGSTOP) };
    wait_state(p.pid(), 'T');
    let dir = scratch("stopped");
    let out = dump(p.pid(), &dir, &["-j", "-R"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // (Debian's crit predates stop_signo: read with our own reader.)
    let core = criu_core::images::ImageDir::open(&dir).unwrap().read_core(p.pid() as u64, true).unwrap();
    let tc = core.tc.unwrap();
    assert_eq!(tc.task_state, Some(criu_core::images::consts::task_state::STOPPED));
    assert_eq!(tc.stop_signo, Some(libc::SIGSTOP as u32));
    // Let go, it takes the group stop again on its way back to user mode.
    wait_state(p.pid(), 'T');
    // SAFETY: as above.
    unsafe { libc::kill(p.pid(), libc::SIGCONT) };
    assert_eq!(p.finish().trim(), "OK");
}

#[test]
fn already_traced_process() {
    let exe = compile("dumpee");
    let tmp = scratch("traced-files");
    let mut p = Program::start(&exe, &["1", "0", tmp.to_str().unwrap()]);
    let pid = p.pid();
    // SAFETY: PTRACE_SEIZE of our own child, no data pointers.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    assert_eq!(r, 0, "seize: {}", std::io::Error::last_os_error());
    let dir = scratch("traced");
    let out = dump(pid, &dir, &["-j"]);
    // SAFETY: stopping and detaching the tracee seized above, from the same
    // thread; waitpid writes one int.
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0);
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::__WALL);
        assert_eq!(libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0), 0);
    }
    assert_fails(&out, "already traced");
    assert_eq!(p.finish().trim(), "OK");
}

/// A process (its own session leader) with a terminal open is refused
/// without --shell-job and dumped with it.
#[test]
fn terminal_needs_shell_job() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a descriptor we own;
    // ptsname_r writes at most the buffer length given.
    let (master, slave_path) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0u8; 64];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr().cast(), name.len()), 0);
        let len = name.iter().position(|b| *b == 0).unwrap();
        (OwnedFd::from_raw_fd(m), String::from_utf8(name[..len].to_vec()).unwrap())
    };
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(&slave_path).unwrap();
    let exe = compile("dumpee");
    let tmp = scratch("tty-files");
    let mut cmd = Command::new(&exe);
    cmd.args(["1", "0", tmp.to_str().unwrap()]).stderr(slave);
    // SAFETY: setsid is async-signal-safe; the child becomes its own session
    // (and group) leader, so only the terminal needs --shell-job.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut p = Program::start_cmd(cmd);
    let dir = scratch("tty");
    assert_fails(&dump(p.pid(), &dir, &["-R"]), "is a terminal; pass --shell-job");
    let out = dump(p.pid(), &dir, &["-R", "-j"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.finish().trim(), "OK");
    drop(master);
}

#[test]
fn thread_id_instead_of_process_id() {
    let exe = compile("dumpee");
    let tmp = scratch("thread-id-files");
    let mut p = Program::start(&exe, &["1", "1", tmp.to_str().unwrap()]);
    let tid = std::fs::read_dir(format!("/proc/{}/task", p.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap().parse::<i32>().unwrap())
        .find(|t| *t != p.pid())
        .unwrap();
    let dir = scratch("thread-id");
    assert_fails(&dump(tid, &dir, &["-j"]), &format!("{tid} is a thread of process {}", p.pid()));
    assert_eq!(p.finish().trim(), "OK");
}

/// A seccomp-filtered process is dumped (its filters suspended while
/// frozen, so the injected calls run) and left running intact; crit reads
/// `seccomp.img`: the main thread's one filter, the thread started before
/// it has none.
#[test]
fn seccomp_process_is_dumped_and_left_running() {
    let exe = compile("dumpee");
    let tmp = scratch("seccomp-files");
    let mut p = Program::start(&exe, &["1", "1", tmp.to_str().unwrap(), "seccomp"]);
    let dir = scratch("seccomp");
    let out = dump(p.pid(), &dir, &["-j", "-R"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let img = crit_decode(&dir.join("seccomp.img"));
    let filters = img["entries"][0]["seccomp_filters"].as_array().expect("seccomp_filters");
    assert_eq!(filters.len(), 1, "{img}");
    let core = crit_decode(&dir.join(format!("core-{}.img", p.pid())));
    assert_eq!(core["entries"][0]["thread_core"]["seccomp_mode"], "filter");
    assert_eq!(core["entries"][0]["thread_core"]["seccomp_filter"], 0);
    assert_eq!(p.finish().trim(), "OK");
}

/// A task that cannot stop (a vfork parent waits uninterruptibly for its
/// child) makes the dump give up after --timeout with a clear error, and the
/// process carries on once its wait ends.
#[test]
fn task_that_cannot_stop_times_out() {
    let exe = compile("vforker");
    let mut p = Program::start(&exe, &[]);
    wait_state(p.pid(), 'D');
    let dir = scratch("vfork");
    assert_fails(&dump(p.pid(), &dir, &["-j", "-R", "--timeout", "1"]), "did not stop in time");
    assert!(!dir.join("inventory.img").exists());
    assert_eq!(p.finish().trim(), "OK");
}

/// A task holding a file lock is refused without `--file-locks` (a
/// restore without its locks would run on unlocked files), naming the
/// lock, and left running untraced; with it the lock is dumped.
#[test]
fn file_locks_are_refused_without_file_locks() {
    let dir = scratch("file-locks");
    let lockfile = dir.join("lockfile");
    std::fs::write(&lockfile, "x").unwrap();
    let mut cmd = Command::new("flock");
    cmd.arg("-x").arg(&lockfile).args(["sleep", "1000"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut p = Proc::from(in_own_session(&mut cmd).spawn().unwrap());
    let pid = p.pid() as i32;
    // flock holds the lock once its child runs.
    wait_until("flock to take the lock", PATIENCE, || {
        std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path()).unwrap_or_default().contains("lock:")
        })
    });
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let out = dump(pid, &images, &["-R"]);
    assert_fails(&out, "not supported:");
    assert_fails(&out, &format!("pid {pid} fd"));
    assert_fails(&out, "holds a file lock (");
    assert_fails(&out, "--file-locks");
    assert!(p.try_wait().is_none(), "flock went away");
    assert!(!images.join("inventory.img").exists());
    assert_eq!(status_field(pid, "TracerPid:").as_deref(), Some("0"));
    let out = dump(pid, &images, &["-R", "--file-locks"]);
    assert!(out.status.success(), "dump --file-locks: {}", text(&out.stderr));
    let locks = crit_decode(&images.join("filelocks.img"));
    let e = &locks["entries"][0];
    assert_eq!((jnum(&e["flag"]), jnum(&e["type"]), jnum(&e["pid"]) as i32), (2, libc::F_WRLCK as u64, pid), "{locks}");
    assert!(p.try_wait().is_none(), "flock went away");
    assert_eq!(status_field(pid, "TracerPid:").as_deref(), Some("0"));
}
