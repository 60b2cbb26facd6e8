//! Diagnosing a restored task that dies: in the blob, or in its first
//! moments after it is let go.
//!
//! A crash right after resume is the classic sign of a bad restore (a page
//! not where the program expects it, a register or descriptor wrong). A
//! bare "exited" or "killed" tells nobody what went wrong, so criu-rs
//! stays the tracer of the restored threads for a watch period after the
//! release ([`Watch`]): ptrace shows each signal before it is delivered
//! (`PTRACE_GETSIGINFO`: signal, code, faulting address; the registers:
//! the instruction pointer), and `PTRACE_EVENT_EXIT` shows each death.
//! Signals are passed on untouched (a program may handle its own SIGSEGV);
//! only a task that dies of one is reported, as [`Death`], naming the
//! task, the signal, the address and the instruction pointer, each with
//! the area of the image (or of criu-rs's blob) that holds it.
//!
//! When the period ends, every thread still watched is interrupted and
//! detached (a signal it was about to take goes with it); a thread that
//! enters a job-control stop is detached at once and stays stopped.
//! Tasks restored stopped are not watched, nor are threads and children
//! created after the release.

use super::plan::{VmaKind, VmaPlan};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// One area of a task's address space, for naming where an address lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub start: u64,
    pub end: u64,
    /// `rwxp`/`rwxs`-style protections, or empty for criu-rs's own areas.
    pub prot: String,
    /// The file, `[anon]`, `[vdso]`..., or criu-rs's blob.
    pub what: String,
}

impl Area {
    /// The areas of an image's VMAs.
    pub fn of_image(vmas: &[VmaPlan]) -> Vec<Area> {
        vmas.iter()
            .map(|v| {
                let p = |bit: u32, c: char| if v.prot & bit != 0 { c } else { '-' };
                let shared = if v.flags & libc::MAP_SHARED as u32 != 0 { 's' } else { 'p' };
                let what = match &v.kind {
                    VmaKind::Anon => "[anon]".to_string(),
                    VmaKind::PrivateFile { path } | VmaKind::SharedFile { path, .. } => path.display().to_string(),
                    VmaKind::Shmem { shmid, .. } | VmaKind::PrivateShmem { shmid } => format!("[shmem {shmid:#x}]"),
                    VmaKind::SysvShm { shmid, .. } => format!("[SysV shm {shmid}]"),
                    VmaKind::Vdso => "[vdso]".to_string(),
                    VmaKind::Vvar => "[vvar]".to_string(),
                    VmaKind::Vsyscall => "[vsyscall]".to_string(),
                };
                Area {
                    start: v.start,
                    end: v.end,
                    prot: format!(
                        "{}{}{}{shared}",
                        p(libc::PROT_READ as u32, 'r'),
                        p(libc::PROT_WRITE as u32, 'w'),
                        p(libc::PROT_EXEC as u32, 'x')
                    ),
                    what,
                }
            })
            .collect()
    }
}

/// Where `addr` lies: "in AREA of the image", or "in no area of the image".
pub fn locate(areas: &[Area], addr: u64) -> String {
    match areas.iter().find(|a| (a.start..a.end).contains(&addr)) {
        Some(a) if a.prot.is_empty() => format!("in {} at {:#x}-{:#x} (+{:#x})", a.what, a.start, a.end, addr - a.start),
        Some(a) => format!("in the image's VMA {:#x}-{:#x} {} {} (+{:#x})", a.start, a.end, a.prot, a.what, addr - a.start),
        None => "in no VMA of the image".to_string(),
    }
}

/// A signal a thread was about to take, as ptrace showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub tid: i32,
    pub signal: i32,
    /// `si_code`.
    pub code: i32,
    /// `si_addr` (for SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP), else 0.
    pub addr: u64,
    /// `si_pid` of a signal sent by a process, else 0.
    pub sender: i32,
    /// The thread's instruction pointer.
    pub ip: u64,
}

/// Signals whose `si_addr` is a faulting address.
fn has_addr(sig: i32) -> bool {
    matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP)
}

impl Fault {
    /// Reads the pending signal of `tid`, stopped at its delivery.
    pub fn read(tid: i32, signal: i32) -> Fault {
        let p = Pid::from_raw(tid);
        let (mut code, mut addr, mut sender) = (0, 0, 0);
        if let Ok(si) = ptrace::getsiginfo(p) {
            code = si.si_code;
            if has_addr(signal) {
                // SAFETY: the kernel filled the fault variant for these signals.
                addr = unsafe { si.si_addr() } as u64;
            } else if code <= 0 || code == libc::SI_USER {
                // SAFETY: a signal sent by a process carries its pid.
                sender = unsafe { si.si_pid() };
            }
        }
        let ip = ptrace::getregs(p).map(|r| r.rip).unwrap_or(0);
        Fault { tid, signal, code, addr, sender, ip }
    }

    /// "SIGSEGV (code 1) at address 0x10 (in no VMA of the image), ip 0x401136 (in ...)".
    pub fn describe(&self, areas: &[Area]) -> String {
        let mut s = format!("{} (si_code {})", signame(self.signal), self.code);
        if has_addr(self.signal) {
            s += &format!(" at address {:#x} ({})", self.addr, locate(areas, self.addr));
        } else if self.sender != 0 {
            s += &format!(" sent by pid {}", self.sender);
        }
        s + &format!(", ip {:#x} ({})", self.ip, locate(areas, self.ip))
    }
}

/// A signal's name.
pub fn signame(sig: i32) -> String {
    Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}

/// A restored task that died of a signal while watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    pub pid: i32,
    pub signal: i32,
    /// The signal as the thread that took it saw it, if ptrace showed it
    /// (SIGKILL is never shown).
    pub fault: Option<Fault>,
    /// Since the release.
    pub after: Duration,
    /// The task's areas in the image.
    areas: Vec<Area>,
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "restored task {} died of {} {} ms after it was let go", self.pid, signame(self.signal), self.after.as_millis())?;
        match &self.fault {
            Some(x) => write!(f, ": thread {} took {}", x.tid, x.describe(&self.areas)),
            None => Ok(()),
        }
    }
}

/// One task being watched.
#[derive(Debug)]
struct Watched {
    pid: i32,
    /// Threads still traced.
    tids: Vec<i32>,
    areas: Vec<Area>,
    /// The last signal each thread was seen taking.
    faults: Vec<Fault>,
    /// The signal it is dying of (from an exit event or its wait status).
    dying: Option<i32>,
}

/// The restored tasks criu-rs still traces after the release. Dropping it
/// (or [`Watch::run`] at its end) lets every thread go.
#[derive(Debug, Default)]
pub struct Watch {
    tasks: Vec<Watched>,
    released: Option<Instant>,
}

/// What a watch saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchEnd {
    /// Tasks that died of a signal.
    pub deaths: Vec<Death>,
    /// The exit status of `root` (the caller's child), if it ended while
    /// watched (its wait status is then consumed): the code, or 128 + signal.
    pub root_status: Option<i32>,
}

impl Watch {
    /// Adds task `pid`, whose threads `tids` are traced by us, stopped,
    /// to be resumed by [`Watch::start`].
    pub fn add(&mut self, pid: i32, tids: Vec<i32>, areas: Vec<Area>) {
        self.tasks.push(Watched { pid, tids, areas, faults: Vec::new(), dying: None });
    }

    /// Whether no task is watched.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Sets each thread's options (only `PTRACE_O_TRACEEXIT`: no new
    /// tracees, no kill on our exit) and lets it run.
    pub fn start(&mut self) -> nix::Result<()> {
        for t in &self.tasks {
            for &tid in &t.tids {
                let p = Pid::from_raw(tid);
                ptrace::setoptions(p, ptrace::Options::PTRACE_O_TRACEEXIT)?;
                resume(libc::PTRACE_CONT, tid, 0);
            }
        }
        self.released = Some(Instant::now());
        Ok(())
    }

    /// Watches for `period` or until every watched task is gone; then
    /// lets go of the rest. `root` is the caller's child (its wait status
    /// is reaped here if it ends).
    pub fn run(mut self, period: Duration, root: i32) -> WatchEnd {
        let released = self.released.unwrap_or_else(Instant::now);
        let mut end = WatchEnd::default();
        let deadline = released + period;
        while Instant::now() < deadline && self.tasks.iter().any(|t| !t.tids.is_empty()) {
            let mut progressed = false;
            for t in self.tasks.iter_mut() {
                for tid in t.tids.clone() {
                    match wait(tid, libc::WNOHANG) {
                        Ok(None) => {}
                        Ok(Some(st)) => {
                            progressed = true;
                            handle(t, tid, st, root, &mut end);
                        }
                        Err(e) => {
                            tracing::debug!(pid = t.pid, tid, "watch: waitpid: {e}");
                            t.tids.retain(|&x| x != tid)
                        }
                    }
                }
            }
            if !progressed {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.let_go(root, &mut end);
        for t in self.tasks.drain(..) {
            if let Some(signal) = t.dying {
                let fault = t.faults.iter().rev().find(|f| f.signal == signal).copied();
                end.deaths.push(Death { pid: t.pid, signal, fault, after: released.elapsed(), areas: t.areas });
            }
        }
        end
    }

    /// Interrupts and detaches every thread still traced.
    fn let_go(&mut self, root: i32, end: &mut WatchEnd) {
        for t in self.tasks.iter_mut() {
            for tid in t.tids.clone() {
                if ptrace::interrupt(Pid::from_raw(tid)).is_err() {
                    t.tids.retain(|&x| x != tid);
                    continue;
                }
                // A stop follows the interrupt (or the thread's end).
                while t.tids.contains(&tid) {
                    match wait(tid, 0) {
                        Ok(Some(Status::Stopped { event: PTRACE_EVENT_STOP, .. })) => {
                            resume(libc::PTRACE_DETACH, tid, 0);
                            t.tids.retain(|&x| x != tid);
                        }
                        Ok(Some(Status::Stopped { sig, event: 0 })) => {
                            // Its signal goes with it.
                            resume(libc::PTRACE_DETACH, tid, sig);
                            t.tids.retain(|&x| x != tid);
                        }
                        Ok(Some(st)) => handle(t, tid, st, root, end),
                        Ok(None) | Err(_) => t.tids.retain(|&x| x != tid),
                    }
                }
            }
        }
    }
}

use super::finalize::PTRACE_EVENT_STOP;

/// A wait status, raw: nix's `WaitStatus` cannot hold real-time signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// A ptrace stop: signal-delivery (`event` 0) or an event stop.
    Stopped { sig: i32, event: i32 },
    Exited(i32),
    Signaled(i32),
}

/// `waitpid(tid, &status, __WALL | flags)`; `None` for WNOHANG and no change.
fn wait(tid: i32, flags: i32) -> Result<Option<Status>, nix::errno::Errno> {
    let mut st = 0;
    // SAFETY: waitpid writes one int to `st`.
    let r = unsafe { libc::waitpid(tid, &mut st, libc::__WALL | flags) };
    match r {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(None),
        _ if libc::WIFEXITED(st) => Ok(Some(Status::Exited(libc::WEXITSTATUS(st)))),
        _ if libc::WIFSIGNALED(st) => Ok(Some(Status::Signaled(libc::WTERMSIG(st)))),
        _ if libc::WIFSTOPPED(st) => Ok(Some(Status::Stopped { sig: libc::WSTOPSIG(st), event: st >> 16 })),
        _ => Ok(None),
    }
}

/// `ptrace(req, tid, 0, sig)` for `PTRACE_CONT` / `PTRACE_DETACH` with any
/// signal number (nix's take only the classic ones).
fn resume(req: libc::c_uint, tid: i32, sig: i32) {
    // SAFETY: no memory is passed; the data argument is a signal number.
    unsafe { libc::ptrace(req, tid, 0usize, sig as usize) };
}

/// Handles one wait status of watched thread `tid` of `t`.
fn handle(t: &mut Watched, tid: i32, st: Status, root: i32, end: &mut WatchEnd) {
    let p = Pid::from_raw(tid);
    tracing::trace!(pid = t.pid, tid, ?st, "watch: wait status");
    match st {
        Status::Stopped { sig, event: 0 } => {
            let f = Fault::read(tid, sig);
            tracing::debug!(pid = t.pid, tid, "watch: {}", f.describe(&t.areas));
            t.faults.push(f);
            resume(libc::PTRACE_CONT, tid, sig);
        }
        Status::Stopped { event: libc::PTRACE_EVENT_EXIT, .. } => {
            let status = ptrace::getevent(p).unwrap_or(0) as i32;
            if libc::WIFSIGNALED(status) {
                t.dying.get_or_insert(libc::WTERMSIG(status));
            }
            resume(libc::PTRACE_CONT, tid, 0);
        }
        Status::Stopped { event: PTRACE_EVENT_STOP, .. } => {
            // A job-control stop: it stays stopped without us.
            resume(libc::PTRACE_DETACH, tid, 0);
            t.tids.retain(|&x| x != tid);
        }
        Status::Stopped { .. } => resume(libc::PTRACE_CONT, tid, 0),
        Status::Exited(code) => {
            t.tids.retain(|&x| x != tid);
            if tid == root {
                end.root_status = Some(code);
            }
        }
        Status::Signaled(sig) => {
            t.tids.retain(|&x| x != tid);
            t.dying.get_or_insert(sig);
            if tid == root {
                end.root_status = Some(128 + sig);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut end = WatchEnd::default();
        self.let_go(0, &mut end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_named_by_their_area() {
        let areas = vec![
            Area { start: 0x1000, end: 0x3000, prot: "r-xp".into(), what: "/bin/prog".into() },
            Area { start: 0x8000, end: 0x9000, prot: String::new(), what: "criu-rs's restorer blob".into() },
        ];
        assert_eq!(locate(&areas, 0x1fff), "in the image's VMA 0x1000-0x3000 r-xp /bin/prog (+0xfff)");
        assert_eq!(locate(&areas, 0x3000), "in no VMA of the image");
        assert_eq!(locate(&areas, 0x8010), "in criu-rs's restorer blob at 0x8000-0x9000 (+0x10)");
        let f = Fault { tid: 7, signal: libc::SIGSEGV, code: 1, addr: 0x10, sender: 0, ip: 0x1004 };
        assert_eq!(
            f.describe(&areas),
            "SIGSEGV (si_code 1) at address 0x10 (in no VMA of the image), ip 0x1004 (in the image's VMA 0x1000-0x3000 r-xp /bin/prog (+0x4))"
        );
        let d = Death { pid: 7, signal: libc::SIGSEGV, fault: Some(f), after: Duration::from_millis(3), areas };
        assert!(d.to_string().starts_with("restored task 7 died of SIGSEGV 3 ms after it was let go: thread 7 took SIGSEGV"), "{d}");
    }
}
