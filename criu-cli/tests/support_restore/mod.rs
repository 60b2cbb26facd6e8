//! Helpers for the restore end-to-end tests (restore, trees): the gate that
//! skips them while `criu-rs restore` is a stub, self-checking programs that
//! wait for SIGUSR1 in `rt_sigsuspend`, pid-safe handles on restored
//! processes (pidfds), and comparisons of a restored process against its
//! images (mappings, fds) and of an images directory before and after.
//!
//! Builds on `support` (compiling programs, running `criu-rs`, `crit`).

#![allow(dead_code)]

use crate::support::{compile, crit_decode, criu_rs, jnum, repo_root};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `rt_sigsuspend`'s syscall number: where the test programs wait.
pub const NR_RT_SIGSUSPEND: u64 = 130;
/// How long a test waits for anything a program does (never a timing assertion, a hang guard).
pub const PATIENCE: Duration = Duration::from_secs(60);


static PROGRAM_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Compiles `tests/programs/NAME.c` like `support::compile`, and also
/// rebuilds it when the shared `selfcheck.h` it includes is newer.
pub fn compile_program(name: &str) -> PathBuf {
    let _g = PROGRAM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = compile(name);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let header = repo_root().join("tests/programs/selfcheck.h");
    if mtime(&header) > mtime(&exe) {
        std::fs::remove_file(&exe).unwrap();
        return compile(name);
    }
    exe
}

/// A per-test scratch directory (emptied first).
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("restore-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A program started by the test: the child handle (for reaping after the
/// dump kills it) and the key=value pairs of its READY line.
pub struct Started {
    pub child: Child,
    pub info: BTreeMap<String, String>,
}

impl Started {
    /// Compiles and starts `tests/programs/NAME.c` with `args`, stdin at
    /// /dev/null, and waits for its READY line.
    pub fn start(name: &str, args: &[&Path]) -> Started {
        let exe = compile_program(name);
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the test program");
        Started::from_child(child)
    }

    /// Takes a started program (stdout piped) and waits for its READY line.
    pub fn from_child(mut child: Child) -> Started {
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if !line.starts_with("READY") {
            let _ = child.kill();
            let st = child.wait();
            panic!("the program said {line:?} instead of READY ({st:?})");
        }
        let info = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Started { child, info }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A decimal value from the READY line.
    pub fn num(&self, key: &str) -> i32 {
        self.info.get(key).unwrap_or_else(|| panic!("no {key}= in READY {:?}", self.info)).parse().unwrap()
    }

    /// Reaps the child after a dump killed it and waits until its pid is free.
    pub fn reap(&mut self) {
        let _ = self.child.wait();
        wait_pid_gone(self.pid());
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which is not yet reaped (wait below), so not reused.
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// A process we did not fork (a restored one), held by a pidfd so that
/// signals never reach a recycled pid. Killed on drop.
pub struct Held {
    pub pid: i32,
    fd: OwnedFd,
}

impl Held {
    /// `pidfd_open(pid, 0)`.
    pub fn open(pid: i32) -> std::io::Result<Held> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh pidfd that we own.
        Ok(Held { pid, fd: unsafe { OwnedFd::from_raw_fd(fd as i32) } })
    }

    /// `pidfd_send_signal(fd, sig, NULL, 0)`.
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: a pidfd we own, a signal number, no siginfo.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.fd.as_raw_fd(), sig, 0usize, 0) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Waits (up to `limit`) for the process to exit; true if it did.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let t = Instant::now();
        while t.elapsed() < limit {
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, 100) };
            if r > 0 {
                return true;
            }
        }
        false
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }
}

/// Waits until `/proc/PID` is gone (the pid can be given out again).
pub fn wait_pid_gone(pid: i32) {
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t.elapsed() < PATIENCE, "pid {pid} still exists");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The syscall number a task is blocked in, from `/proc/PID/task/TID/syscall`.
pub fn blocked_in(pid: i32, tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Waits until every thread of every pid sits in `rt_sigsuspend`.
pub fn wait_all_suspended(pids: &[i32]) {
    let t = Instant::now();
    loop {
        let all = pids.iter().all(|&pid| {
            let tids = threads_of(pid);
            !tids.is_empty() && tids.iter().all(|&tid| blocked_in(pid, tid) == Some(NR_RT_SIGSUSPEND))
        });
        if all {
            return;
        }
        assert!(t.elapsed() < PATIENCE, "tasks {pids:?} never all waited in rt_sigsuspend");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The thread ids of a process.
pub fn threads_of(pid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return vec![] };
    let mut v: Vec<i32> = rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    v.sort();
    v
}

/// `criu-rs dump -t PID -D DIR` (killing the tree), asserted to succeed.
pub fn dump_ok(pid: i32, dir: &Path, extra: &[&str]) {
    let out = criu_rs().arg("dump").arg("-t").arg(pid.to_string()).arg("-D").arg(dir).args(extra).output().unwrap();
    assert!(out.status.success(), "dump of {pid} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// `criu-rs restore -D DIR EXTRA...`.
pub fn restore(dir: &Path, extra: &[&str]) -> Output {
    criu_rs().arg("restore").arg("-D").arg(dir).args(extra).output().unwrap()
}

/// `criu-rs restore -D DIR -d --pidfile F`, asserted to succeed and to
/// give back `want_pid`; returns a handle on the restored root.
pub fn restore_detached(dir: &Path, want_pid: i32) -> Held {
    let pidfile = dir.with_extension("pid");
    let _ = std::fs::remove_file(&pidfile);
    let out = restore(dir, &["-d", "--pidfile", pidfile.to_str().unwrap()]);
    // Take hold of the process before asserting, so that a failure still kills it.
    let held = Held::open(want_pid);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: i32 = std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("pidfile {}: {e}", pidfile.display()))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(got, want_pid, "restored with another pid");
    held.unwrap_or_else(|e| panic!("restored pid {want_pid} is not there: {e}"))
}

/// Waits for a program's result file; returns its contents.
pub fn wait_result(path: &Path) -> String {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        assert!(t.elapsed() < PATIENCE, "no result file {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts a result file says ALL OK, showing the failed lines otherwise.
pub fn assert_all_ok(what: &str, report: &str) {
    if report.lines().last() != Some("ALL OK") {
        let bad: Vec<&str> = report.lines().filter(|l| !l.starts_with("ok ")).collect();
        panic!("{what}: self-check failed:\n{}", bad.join("\n"));
    }
}

/// Every file under `dir` with its contents (to prove restore leaves images alone).
pub fn snapshot_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            m.extend(snapshot_dir(&p));
        } else if p.file_name().is_some_and(|n| n == "stats-restore") {
            // CRIU's restore statistics, written by every successful
            // restore (as CRIU does); not an image.
        } else {
            m.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    m
}

/// Asserts two snapshots are the same, naming the first difference.
pub fn assert_same_dir(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let names_b: Vec<_> = before.keys().collect();
    let names_a: Vec<_> = after.keys().collect();
    assert_eq!(names_a, names_b, "restore changed the set of image files");
    for (k, v) in before {
        assert!(after[k] == *v, "restore modified {}", k.display());
    }
}

/// A mapping: [start, end) and "rwxp"-style permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub name: String,
}

/// Parses `/proc/PID/maps` (without `[vsyscall]`, which is the kernel's, not the process's).
pub fn proc_maps(pid: i32) -> Vec<Area> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (a, b) = it.next()?.split_once('-')?;
            let perms = it.next()?.to_owned();
            let name = it.nth(3).unwrap_or("").to_owned();
            Some(Area { start: u64::from_str_radix(a, 16).ok()?, end: u64::from_str_radix(b, 16).ok()?, perms, name })
        })
        .filter(|a| a.name != "[vsyscall]")
        .collect()
}

/// The VMAs `mm-PID.img` lists (via crit), without the vsyscall page.
pub fn image_vmas(dir: &Path, pid: i32) -> Vec<Area> {
    const VMA_AREA_VSYSCALL: u64 = 1 << 2;
    let mm = crit_decode(&dir.join(format!("mm-{pid}.img")));
    let vmas = mm["entries"][0]["vmas"].as_array().expect("vmas in mm image").clone();
    vmas.iter()
        .filter(|v| jnum(&v["status"]) & VMA_AREA_VSYSCALL == 0)
        .map(|v| {
            let prot = jnum(&v["prot"]);
            let shared = jnum(&v["flags"]) & libc::MAP_SHARED as u64 != 0;
            let perms = format!(
                "{}{}{}{}",
                if prot & 1 != 0 { 'r' } else { '-' },
                if prot & 2 != 0 { 'w' } else { '-' },
                if prot & 4 != 0 { 'x' } else { '-' },
                if shared { 's' } else { 'p' }
            );
            Area { start: jnum(&v["start"]), end: jnum(&v["end"]), perms, name: String::new() }
        })
        .collect()
}

/// Joins adjacent areas with the same permissions (the kernel may or may not
/// merge them; what matters is which addresses are mapped how).
pub fn coalesce(mut v: Vec<Area>) -> Vec<(u64, u64, String)> {
    v.sort_by_key(|a| a.start);
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for a in v {
        match out.last_mut() {
            Some(last) if last.1 == a.start && last.2 == a.perms => last.1 = a.end,
            _ => out.push((a.start, a.end, a.perms)),
        }
    }
    out
}

/// Asserts that the restored process maps exactly what its image lists:
/// no leftover blob, argument, stack or vDSO-parking mappings.
pub fn assert_maps_match_image(dir: &Path, pid: i32) {
    let want = coalesce(image_vmas(dir, pid));
    let got = coalesce(proc_maps(pid));
    if want != got {
        let fmt = |v: &[(u64, u64, String)]| v.iter().map(|(a, b, p)| format!("{a:x}-{b:x} {p}")).collect::<Vec<_>>();
        let (w, g) = (fmt(&want), fmt(&got));
        let extra: Vec<_> = g.iter().filter(|x| !w.contains(x)).collect();
        let missing: Vec<_> = w.iter().filter(|x| !g.contains(x)).collect();
        panic!("pid {pid}: mappings differ from the image\n  not in the image: {extra:?}\n  missing: {missing:?}");
    }
}

/// The fd numbers a process has open, sorted.
pub fn fds_of(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// What each fd points at (readlink of /proc/PID/fd/N), for comparisons
/// where pipe inode numbers may change.
pub fn fd_kinds(pid: i32) -> Vec<(i32, String)> {
    fds_of(pid)
        .into_iter()
        .map(|fd| {
            let l = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default();
            let kind = if l.starts_with("pipe:") { "pipe".to_owned() } else { l };
            (fd, kind)
        })
        .collect()
}

/// Pids of processes whose cwd is `dir` (programs of one test), except `but`.
pub fn processes_in(dir: &Path, but: &[i32]) -> Vec<i32> {
    let Ok(canon) = dir.canonicalize() else { return vec![] };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !but.contains(pid))
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).map(|c| c == canon).unwrap_or(false))
        .collect()
}
