//! Signals: every thread's blocked mask (`SigBlk`) and pending signals
//! (`SigPnd`), the process's shared pending signals (`ShdPnd`) and which
//! signals are ignored or caught (`SigIgn`, `SigCgt`), against
//! `blk_sigset`, `signals_p`, `signals_s` and `sigactions`. Timers run
//! during the restore: the signals they send may be pending on top of the
//! dumped ones.

use super::{proc_err, thread_file, Check, TaskImages};
use crate::images::pb;
use crate::proc::status::read_status_file;

/// SIGKILL and SIGSTOP: never blocked, ignored or caught.
const UNBLOCKABLE: u64 = 1 << (libc::SIGKILL - 1) | 1 << (libc::SIGSTOP - 1);

/// `SIG_IGN` as a handler.
const SIG_IGN: u64 = 1;

pub fn check(t: &TaskImages) -> Check {
    let tc = t.tc();
    let task_mask = tc.and_then(|c| c.blk_sigset);
    let late = late_signals(t);
    for (tid, core) in &t.threads {
        let th = core.thread_core.as_ref();
        let st = read_status_file(t.pid, &thread_file(*tid, "status")).map_err(proc_err)?;
        if let Some(mask) = th.and_then(|c| c.blk_sigset).or(task_mask) {
            masks(format_args!("thread {tid}: blocked signals (SigBlk)"), st.sig_blk, mask & !UNBLOCKABLE)?;
        }
        if let Some(q) = th.and_then(|c| c.signals_p.as_ref()) {
            pending(format_args!("thread {tid}: pending signals (SigPnd)"), st.sig_pnd, queued(q), late)?;
        }
    }
    let st = read_status_file(t.pid, "status").map_err(proc_err)?;
    if let Some(q) = tc.and_then(|c| c.signals_s.as_ref()) {
        pending("shared pending signals (ShdPnd)", st.shd_pnd, queued(q), late)?;
    }
    let acts = tc.map_or(&[][..], |c| &c.sigactions[..]);
    let signals: Vec<u32> = match acts.len() {
        64 => (1..=64).collect(),
        62 => (1..=64).filter(|&s| s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32).collect(),
        _ => return Ok(()),
    };
    let (mut ign, mut cgt) = (0u64, 0u64);
    for (sa, sig) in acts.iter().zip(signals) {
        match sa.sigaction.unwrap_or_default() {
            0 => {}
            SIG_IGN => ign |= 1 << (sig - 1),
            _ => cgt |= 1 << (sig - 1),
        }
    }
    masks("ignored signals (SigIgn)", st.sig_ign, ign & !UNBLOCKABLE)?;
    masks("caught signals (SigCgt)", st.sig_cgt, cgt & !UNBLOCKABLE)
}

/// Pending signals: every dumped one must be pending again; others may
/// have come since the restore armed the timers (`late`).
fn pending(what: impl std::fmt::Display, live: u64, image: u64, late: u64) -> Check {
    if live & !late == image & !late && live & image == image {
        return Ok(());
    }
    masks(what, live, image)
}

/// Signals that may come between the restore of the task's timers and
/// this check: those its armed interval and POSIX timers send, and
/// SIGCHLD (restored zombie children exit again).
fn late_signals(t: &TaskImages) -> u64 {
    let bit = |s: i32| 1u64 << (s - 1);
    let mut m = bit(libc::SIGCHLD);
    let Some(timers) = t.tc().and_then(|c| c.timers.as_ref()) else { return m };
    // A periodic timer may be dumped with a zero value (it had just
    // expired): armed all the same.
    let armed = |i: &Option<pb::ItimerEntry>| {
        i.as_ref().is_some_and(|i| [i.isec, i.iusec, i.vsec, i.vusec].iter().any(|v| v.unwrap_or(0) != 0))
    };
    for (timer, sig) in [(&timers.real, libc::SIGALRM), (&timers.virt, libc::SIGVTALRM), (&timers.prof, libc::SIGPROF)] {
        if armed(timer) {
            m |= bit(sig);
        }
    }
    for p in &timers.posix {
        let s = p.si_signo.unwrap_or_default() as i32;
        if (1..=64).contains(&s) {
            m |= bit(s);
        }
    }
    m
}

/// The signals of a queue, as a mask (bit `signo - 1`).
fn queued(q: &pb::SignalQueueEntry) -> u64 {
    q.signals
        .iter()
        .filter_map(|s| s.siginfo.as_deref())
        .filter_map(|b| Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?)))
        .filter(|&n| (1..=64).contains(&n))
        .fold(0, |m, n| m | 1 << (n - 1))
}

/// `what LIVE, image IMAGE` as signal lists, unless equal.
fn masks(what: impl std::fmt::Display, live: u64, image: u64) -> Check {
    if live == image {
        return Ok(());
    }
    let list = |m: u64| {
        let v: Vec<String> = (0..64).filter(|b| m & (1 << b) != 0).map(|b| (b + 1).to_string()).collect();
        if v.is_empty() { "none".to_string() } else { v.join(",") }
    };
    Err(format!("{what} {}, image {}", list(live), list(image)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_signals_may_gain_late_ones_but_never_lose_any() {
        let late = 1 << (libc::SIGALRM - 1);
        let usr1 = 1 << (libc::SIGUSR1 - 1);
        assert_eq!(pending("p", usr1, usr1, late), Ok(()));
        assert_eq!(pending("p", usr1 | late, usr1, late), Ok(()));
        assert_eq!(pending("p", 0, usr1, late).unwrap_err(), "p none, image 10");
        let usr2 = 1 << (libc::SIGUSR2 - 1);
        assert_eq!(pending("p", usr1 | usr2, usr1, late).unwrap_err(), "p 10,12, image 10");
    }

    #[test]
    fn queued_signals_as_a_mask() {
        let si = |n: i32| pb::SiginfoEntry { siginfo: Some([n.to_ne_bytes().to_vec(), vec![0; 124]].concat()) };
        let q = pb::SignalQueueEntry { signals: vec![si(10), si(34), si(10), si(0), si(65)] };
        assert_eq!(queued(&q), 1 << 9 | 1 << 33);
    }
}
