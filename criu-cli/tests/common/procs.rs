//! Processes: guards that kill what a test started or restored (on drop,
//! never by name), and what `/proc` says about a process.
//!
//! - [`Program`]: a test program we forked, with the `key=value` pairs of
//!   its `READY` line.
//! - [`Held`]: a process we did not fork (a restored one), held by a pidfd
//!   so that a signal never reaches a recycled pid.
//! - [`Proc`]: any other child (a `criu-rs` daemon, a helper command).
//! - [`Kid`]: `lazy_child`, the stand-in for a lazily restored task.

use super::images::Region;
use super::programs::compile;
use super::PATIENCE;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use criu_core::images::consts::pagemap_flags::{LAZY, PRESENT};
use criu_core::images::ImageDir;

/// `rt_sigsuspend`'s syscall number: where the self-checking programs wait.
pub const NR_RT_SIGSUSPEND: u64 = 130;

/// The stderr a test program gets: the test's own when that is a terminal
/// or a pipe; when it is a regular file (`cargo xtask test > log 2>&1`, as
/// CI may run it) a file of the program's own under the target's scratch
/// dir instead, because the log keeps growing while the program is dumped
/// and a restore rightly refuses a file whose size changed since the dump.
pub fn program_stderr() -> Stdio {
    use std::os::unix::fs::FileTypeExt;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ours = std::fs::metadata("/proc/self/fd/2").map(|m| m.file_type());
    let growing_file = ours.is_ok_and(|t| t.is_file() && !t.is_char_device());
    if !growing_file {
        return Stdio::inherit();
    }
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("program-stderr-{}-{n}.txt", std::process::id()));
    std::fs::File::create(&path).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
}

/// A test program we started: killed (unless already reaped) and reaped on drop.
pub struct Program {
    pub child: Child,
    /// Its stdin when piped ([`Program::start`]): [`Program::finish`] writes the go-ahead.
    pub stdin: Option<ChildStdin>,
    /// Its stdout after the READY line when kept ([`Program::start`]).
    pub stdout: Option<BufReader<ChildStdout>>,
    /// The `key=value` pairs of its READY line.
    pub info: BTreeMap<String, String>,
}

impl Program {
    /// Starts `exe args...` with stdin and stdout piped and waits for its
    /// `READY` line (the dump tests' programs: they wait for a byte on
    /// stdin, check themselves and print the result).
    pub fn start(exe: &Path, args: &[&str]) -> Program {
        let mut cmd = Command::new(exe);
        cmd.args(args).stderr(program_stderr());
        Self::start_cmd(cmd)
    }

    /// [`Program::start`] of a prepared command.
    pub fn start_cmd(mut cmd: Command) -> Program {
        let child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("starting the test program");
        Program::from_child(child, true)
    }

    /// Compiles and starts `tests/programs/NAME.c` with `args`, stdin at
    /// /dev/null, and waits for its READY line; its stdout is closed after
    /// that (the self-checking programs report into files).
    pub fn spawn(name: &str, args: &[&Path]) -> Program {
        let child = Command::new(compile(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(program_stderr())
            .spawn()
            .expect("starting the test program");
        Program::from_child(child, false)
    }

    /// Takes a started program (stdout piped) and waits for its READY
    /// line; keeps its stdout for later reading if `keep_stdout`.
    pub fn from_child(mut child: Child, keep_stdout: bool) -> Program {
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
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
        Program { child, stdin, stdout: keep_stdout.then_some(stdout), info }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A hex (`0x...`) or decimal value from the READY line.
    pub fn num(&self, key: &str) -> u64 {
        let v = self.info.get(key).unwrap_or_else(|| panic!("no {key}= in READY {:?}", self.info));
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => v.parse().unwrap(),
        }
    }

    /// A pid, tid or fd from the READY line.
    pub fn int(&self, key: &str) -> i32 {
        i32::try_from(self.num(key)).unwrap_or_else(|_| panic!("{key}= in READY is not an int: {:?}", self.info))
    }

    /// Writes the go-ahead byte, closes stdin, and returns everything else
    /// the program printed (its self-check).
    pub fn finish(&mut self) -> String {
        let mut stdin = self.stdin.take().expect("stdin piped");
        stdin.write_all(b"g").unwrap();
        drop(stdin);
        let mut out = String::new();
        self.stdout.as_mut().expect("stdout kept").read_to_string(&mut out).unwrap();
        out
    }

    /// Reaps the child after a dump killed it and waits until its pid is free.
    pub fn reap(&mut self) {
        let _ = self.child.wait();
        wait_pid_gone(self.pid());
    }

    /// `/proc/PID/maps` now.
    pub fn maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap()
    }

    /// The process's state letter, or None once it is gone.
    pub fn state(&self) -> Option<char> {
        proc_state(self.pid())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // Not yet reaped (try_wait remembers a reaped status), so the pid is still ours.
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own unreaped child.
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
        let p = rustix::process::Pid::from_raw(pid).ok_or(std::io::ErrorKind::InvalidInput)?;
        let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())?;
        Ok(Held { pid, fd })
    }

    /// `pidfd_send_signal(fd, sig, NULL, 0)`.
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        let sig = rustix::process::Signal::from_named_raw(sig).ok_or(std::io::ErrorKind::InvalidInput)?;
        Ok(rustix::process::pidfd_send_signal(&self.fd, sig)?)
    }

    /// Waits (up to `limit`) for the process to exit; true if it did.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let fd = self.fd.as_fd();
        let t = Instant::now();
        while t.elapsed() < limit {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            if poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 100_000_000 })).unwrap_or(0) > 0 {
                return true;
            }
        }
        false
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.signal(libc::SIGKILL);
        self.wait_exit(PATIENCE);
    }
}

/// A child process started by a test (a daemon, a helper command); killed
/// and reaped on drop.
pub struct Proc(Option<Child>);

impl From<Child> for Proc {
    fn from(c: Child) -> Proc {
        Proc(Some(c))
    }
}

impl Proc {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("process already waited for")
    }

    /// Its piped stdout (taken; `finish` then returns no stdout).
    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.child().stdout.take()
    }

    /// Its piped stderr (taken; `finish` then returns no stderr).
    pub fn stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child().stderr.take()
    }

    pub fn pid(&mut self) -> u32 {
        self.child().id()
    }

    /// Whether it has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Waits up to [`PATIENCE`] for it to exit (killing it and failing the
    /// test if it does not); its status.
    pub fn wait(&mut self) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.try_wait() {
                return st;
            }
            if t.elapsed() > PATIENCE {
                let _ = self.child().kill();
                panic!("process {} still running after {PATIENCE:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the end; returns status, stdout, stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let child = self.0.take().expect("process already waited for");
        let out = child.wait_with_output().expect("wait");
        (out.status, String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `lazy_child` (tests/programs/lazy_child.c), the stand-in for
/// a lazily restored task: it maps `size` bytes at `base`, hands a
/// userfaultfd over `socket`, then reads every byte; killed on drop.
pub struct Kid {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: BufReader<ChildStdout>,
    pub base: u64,
    pub size: u64,
}

impl Kid {
    /// Starts the child mapping `size` bytes at `base`, and waits for "ready".
    pub fn spawn(mode: &str, size: u64, base: u64, socket: &Path) -> Kid {
        Self::spawn_in(None, mode, size, base, socket)
    }

    /// As [`Kid::spawn`], inside network namespace `netns` when given.
    pub fn spawn_in(netns: Option<&str>, mode: &str, size: u64, base: u64, socket: &Path) -> Kid {
        let exe = compile("lazy_child");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = cmd
            .args([mode, &size.to_string(), &format!("{base:x}")])
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn lazy_child");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut k = Kid { child, stdin, out, base, size };
        assert_eq!(k.line(), "ready");
        k
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Next line of output ("" at end).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.out.read_line(&mut s).expect("read child output");
        s.trim_end().to_string()
    }

    /// Lets the child go on (hand-over, or the second half in "halt").
    /// A child already gone is not an error here: its status tells.
    pub fn go(&mut self) {
        let w = self.stdin.as_mut().expect("stdin");
        let _ = w.write_all(b"go\n").and_then(|_| w.flush());
    }

    /// Waits for the end: exit status and the rest of the output.
    pub fn wait(&mut self) -> (ExitStatus, String) {
        let mut rest = String::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            rest.push_str(&l);
            rest.push('\n');
        }
        (self.child.wait().expect("wait child"), rest)
    }

    /// Writes this child's images into `dir` (see [`Region::write`]).
    pub fn write_images(&self, dir: &ImageDir) {
        Kid::image_writer(self.pid(), self.base, self.size).write(dir)
    }

    /// As [`Kid::write_images`] with entry flags `flags` (without PRESENT:
    /// pagemap only, as a `dump --lazy-pages` leaves it).
    pub fn write_images_flagged(&self, dir: &ImageDir, flags: u32) {
        Region { flags, ..Kid::image_writer(self.pid(), self.base, self.size) }.write(dir)
    }

    /// The images of a patterned region of process `pid`.
    pub fn image_writer(pid: u32, base: u64, size: u64) -> Region {
        Region { pid, base, size, flags: LAZY | PRESENT }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `/proc/PID` exists.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The state letter of a process (`/proc/PID/stat`), or None if it does not exist.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

/// A field of `/proc/PID/status` (`key` with its colon, e.g. `"TracerPid:"`), trimmed.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

/// Waits until the process's state letter is `want` (`S` asleep, `T`
/// stopped, `Z` zombie, `D` in an uninterruptible wait).
pub fn wait_state(pid: i32, want: char) {
    super::wait_until(&format!("pid {pid} in state {want}"), PATIENCE, || proc_state(pid) == Some(want));
}

/// Waits until `/proc/PID` is gone (the pid can be given out again).
pub fn wait_pid_gone(pid: i32) {
    super::wait_until(&format!("pid {pid} to go away"), PATIENCE, || !alive(pid));
}

/// The syscall number a task is blocked in, from `/proc/PID/task/TID/syscall`.
pub fn blocked_in(pid: i32, tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Waits until every thread of every pid sits in `rt_sigsuspend`.
pub fn wait_all_suspended(pids: &[i32]) {
    super::wait_until(&format!("tasks {pids:?} all waiting in rt_sigsuspend"), PATIENCE, || {
        pids.iter().all(|&pid| {
            let tids = threads_of(pid);
            !tids.is_empty() && tids.iter().all(|&tid| blocked_in(pid, tid) == Some(NR_RT_SIGSUSPEND))
        })
    });
}

/// Waits until every thread of `pid` sits in `read(2)` (syscall 0): the
/// point where `dumpee` has set the registers a test compares.
pub fn wait_all_in_read(pid: i32) {
    super::wait_until(&format!("every thread of {pid} blocked in read"), PATIENCE, || {
        let tids = threads_of(pid);
        !tids.is_empty() && tids.iter().all(|&tid| blocked_in(pid, tid) == Some(0))
    });
}

/// Nanoseconds thread `tid` of `pid` has run on a CPU
/// (`/proc/PID/task/TID/schedstat`; exact, unlike the tick-sampled times of
/// `stat`); 0 once it is gone.
pub fn cpu_ns(pid: i32, tid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).unwrap_or_default();
    s.split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or(0)
}

/// The thread ids of a process, sorted.
pub fn threads_of(pid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return vec![] };
    let mut v: Vec<i32> = rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    v.sort();
    v
}

/// A pid no process uses now, for hand-built images; distinct per call, so
/// parallel tests never share one. Below 300 (2-byte varints): once the
/// kernel's pid counter has passed 300 (at boot) it hands out only
/// 300..pid_max (RESERVED_PIDS), so no other process of the machine can take
/// the pid between this call and the test's last look at it (a high pid was
/// taken by whatever the machine forked when the counter wrapped past it:
/// "a process with the dumped pid is left"). Only an explicit `set_tid`
/// (a restore) can take it. Spread by this process's id, so test binaries
/// running at once rarely pick the same.
pub fn free_pid() -> i32 {
    static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    let next = || NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = std::process::id() as i32 % 1000;
    if pid_counter() > LOW_PIDS.end {
        // 7 is prime to the range's length: every low pid comes up once.
        let len = LOW_PIDS.end - LOW_PIDS.start;
        return (0..len)
            .map(|_| LOW_PIDS.start + (seed + next() * 7) % len)
            .find(|p| !alive(*p))
            .expect("every pid below 300 is in use");
    }
    // A young pid namespace: the counter still runs below 300; high pids
    // are the next best.
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    (0..1000).map(|_| max - 1000 - (seed * 1000 + next() * 7) % (max / 2)).find(|p| *p > 300 && !alive(*p)).unwrap()
}

/// Pids the kernel hands out only to `set_tid` once its counter has passed
/// them (all with 2-byte varints in images).
pub const LOW_PIDS: std::ops::Range<i32> = 128..300;

/// The last pid the kernel handed out in this pid namespace.
pub fn pid_counter() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").unwrap().trim().parse().unwrap()
}

/// Who holds `pid` now, for a failure message: "pid P: COMM (state S,
/// parent PP)", or that nothing does.
pub fn who_holds(pid: i32) -> String {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return format!("pid {pid}: no process") };
    let comm = s.find('(').zip(s.rfind(')')).map(|(a, b)| &s[a + 1..b]).unwrap_or("?");
    let rest: Vec<&str> = s.rfind(')').map(|i| s[i + 2..].split_whitespace().collect()).unwrap_or_default();
    format!("pid {pid}: {comm} (state {}, parent {})", rest.first().unwrap_or(&"?"), rest.get(1).unwrap_or(&"?"))
}

/// Pids of the processes whose parent is `parent` (zombies included), from
/// every `/proc/PID/stat`; sorted.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let Some(after) = s.rfind(')').map(|i| &s[i + 2..]) else { return false };
            after.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent)
        })
        .collect();
    v.sort();
    v
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

/// `sleep 1000` in its own session (so no `-j` is needed), asleep before
/// the test looks at it; killed and reaped on drop. The simplest process
/// to dump and restore.
pub struct Sleeper(Child);

impl Sleeper {
    pub fn start() -> Sleeper {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let s = Sleeper(super::programs::in_own_session(&mut cmd).spawn().unwrap());
        // Asleep in nanosleep (past exec) before any test looks at it.
        wait_state(s.pid(), 'S');
        s
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Still running and not stopped or traced by anyone. A sleeper that
    /// is briefly runnable (woken by the scheduler under load) is asked again.
    pub fn untouched(&self) -> bool {
        for _ in 0..500 {
            let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
            if !status.contains("TracerPid:\t0\n") {
                return false;
            }
            if status.contains("State:\tS") {
                return true;
            }
            if !status.contains("State:\tR") {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// Reaps it after a dump killed it; its pid is free afterwards.
    pub fn reap(&mut self) {
        let _ = self.0.wait();
        wait_pid_gone(self.pid());
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
