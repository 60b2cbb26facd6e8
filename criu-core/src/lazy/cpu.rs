//! Keeping the daemon on the CPU of the task it is serving faults for.
//!
//! A fault round trip is: the task queues a message and sleeps, the daemon
//! wakes, copies, and wakes the task. When the two sit on different CPUs,
//! both wake-ups cross CPUs; each is an inter-processor interrupt, which
//! under virtualization costs VM exits, and an idle CPU is halted besides
//! (measured on a 2-vCPU KVM guest, 4 KiB faults: about 45 µs per fault
//! across CPUs with the daemon sleeping, 15 µs with it spinning, 7.5 µs with
//! both on one CPU). And the scheduler puts a woken task on an idle CPU when
//! there is one: left alone, the daemon and its task end up apart, each
//! waking the other across CPUs.
//!
//! So while faults come in, the daemon pins itself to the CPU the faulting
//! thread last ran on and runs there as `SCHED_IDLE`: a CPU running only
//! idle-policy work counts as idle when a task is woken, so the task, woken
//! by the daemon's copy, stays on its CPU and preempts the daemon at once.
//! A fault is then two context switches on one CPU, no interrupt between
//! CPUs. Only the daemon's own placement changes, never the task's.
//!
//! - Where the task runs: field 39 of `/proc/PID/task/TID/stat`, looked up
//!   every [`RECHECK`], or sooner ([`Follower::drifted`]) when the task
//!   seems to run elsewhere. On the daemon's CPU, a task woken by a fill
//!   preempts the daemon and has faulted again by the time the daemon runs
//!   next, so finding no fault queued right after a fill means the task runs
//!   on another CPU (the scheduler does move it now and then, the daemon
//!   being runnable beside it).
//! - When: only while the daemon serves a single task, expects no other and
//!   has no background copies to make. At idle priority next to a busy task
//!   the daemon runs only when that task waits, so background copies, the
//!   faults of other tasks (a fork child on another CPU) and new hand-overs
//!   would wait as well. It lets go (original CPU set, normal policy) once
//!   no fault came for [`RELEASE`].
//! - Not next to other work: `SCHED_IDLE` only while the system has no more
//!   runnable tasks than the daemon has CPUs (the running count of
//!   `/proc/loadavg`, looked up with the CPU); normal priority otherwise, or
//!   the daemon would starve beside a busy process.

use std::time::{Duration, Instant};

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// How often the faulting thread's CPU is looked up while faults come in.
pub const RECHECK: Duration = Duration::from_millis(2);
/// [`Follower::drifted`] forces a look-up at most this often.
pub const DRIFT_RECHECK: Duration = Duration::from_micros(200);
/// The original CPU set comes back after this long without a fault.
pub const RELEASE: Duration = Duration::from_millis(2);

/// The daemon's CPU placement.
pub struct Follower {
    /// The affinity the daemon started with (`None`: unknown, never pin).
    home: Option<CpuSet>,
    /// The CPU pinned to, if any.
    pinned: Option<usize>,
    /// Whether the daemon runs `SCHED_IDLE` now.
    idle_policy: bool,
    /// When the faulting thread's CPU was last looked up, and whose it was.
    checked: Option<(Instant, u32)>,
    last_fault: Instant,
    /// Other work is pending ([`Follower::settle`]): no following.
    paused: bool,
    follows: u64,
    starved: u64,
}

impl Follower {
    /// Remembers the current affinity; `enabled: false` never pins.
    pub fn new(enabled: bool) -> Follower {
        let home = if enabled { sched_getaffinity(None).ok() } else { None };
        Follower {
            home,
            pinned: None,
            idle_policy: false,
            checked: None,
            last_fault: Instant::now(),
            paused: false,
            follows: 0,
            starved: 0,
        }
    }

    /// How many times the daemon moved to a faulting thread's CPU.
    pub fn follows(&self) -> u64 {
        self.follows
    }

    /// How many times the daemon kept normal priority on a busy system.
    pub fn starved(&self) -> u64 {
        self.starved
    }

    /// The CPU pinned to now, if any.
    pub fn pinned(&self) -> Option<usize> {
        self.pinned
    }

    /// A fault of thread `tid` of process `pid` (as the daemon sees them;
    /// `tid` 0 or foreign: the process's main thread) was served: follow it.
    pub fn on_fault(&mut self, pid: u32, tid: u32) {
        if self.home.is_none() || self.paused {
            return;
        }
        let now = Instant::now();
        self.last_fault = now;
        if self.checked.is_some_and(|(at, who)| who == tid && now.duration_since(at) < RECHECK) {
            return;
        }
        self.checked = Some((now, tid));
        let cpus = self.home.as_ref().map_or(1, |h| h.count() as u64);
        let busy = running().is_none_or(|r| r > cpus);
        if busy {
            self.starved += u64::from(self.idle_policy);
            self.set_idle(false);
        }
        let Some(cpu) = thread_cpu(pid, tid) else { return };
        if self.pinned != Some(cpu) && self.home.as_ref().is_some_and(|h| h.is_set(cpu)) {
            let mut one = CpuSet::new();
            one.set(cpu);
            if sched_setaffinity(None, &one).is_ok() {
                self.pinned = Some(cpu);
                self.follows += 1;
            }
        }
        if self.pinned.is_some() && !busy {
            self.set_idle(true);
        }
    }

    /// No fault was queued right after a fill: the task probably runs on
    /// another CPU; look it up at the next fault (rate-limited).
    pub fn drifted(&mut self) {
        if self.pinned.is_some() && self.checked.is_some_and(|(at, _)| at.elapsed() >= DRIFT_RECHECK) {
            self.checked = None;
        }
    }

    /// Called when the daemon is about to wait or copy in the background
    /// (`other_work`: it has background copies to make, or more than one
    /// task to serve): lets go at once with other work, else once no fault
    /// came for [`RELEASE`]; no following while there is other work. Returns how long until that happens while pinned (so a
    /// wait can be bounded by it).
    pub fn settle(&mut self, other_work: bool) -> Option<Duration> {
        self.paused = other_work;
        self.pinned?;
        let idle = self.last_fault.elapsed();
        if idle < RELEASE && !other_work {
            return Some(RELEASE - idle);
        }
        self.set_idle(false);
        if let Some(home) = &self.home {
            if sched_setaffinity(None, home).is_ok() {
                self.pinned = None;
                self.checked = None;
            }
        }
        None
    }

    fn set_idle(&mut self, idle: bool) {
        if self.idle_policy != idle && set_policy(if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER }) {
            self.idle_policy = idle;
        }
    }
}

/// Runnable tasks in the system now (the `R` of `R/T`, the fourth field of
/// `/proc/loadavg`), the caller included.
fn running() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().nth(3)?.split('/').next()?.parse().ok()
}

/// `sched_setscheduler(0, policy, {0})`: the calling thread's policy.
/// Returns whether it took.
fn set_policy(policy: i32) -> bool {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes the scheduling policy of the calling thread only; `p`
    // is a valid sched_param for the call.
    unsafe { libc::sched_setscheduler(0, policy, &p) == 0 }
}

/// The CPU thread `tid` of `pid` last ran on (field 39 of its `stat`), or
/// the process's own when that thread is not found under `pid`.
pub fn thread_cpu(pid: u32, tid: u32) -> Option<usize> {
    let stat = (tid != 0)
        .then(|| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok())
        .flatten()
        .or_else(|| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())?;
    parse_processor(&stat)
}

/// Field 39 (`processor`) of a `stat` line; the command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_processor(stat: &str) -> Option<usize> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3.
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu() {
        let stat = "12 (a b) c) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 1000 50 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(parse_processor(stat), Some(1));
        let me = std::process::id();
        let cpu = thread_cpu(me, rustix::thread::gettid().as_raw_nonzero().get() as u32).unwrap();
        assert!(cpu < CpuSet::MAX_CPU);
    }
}
