//! Signals: every thread's blocked mask (`SigBlk`) and pending signals
//! (`SigPnd`), the process's shared pending signals (`ShdPnd`) and which
//! signals are ignored or caught (`SigIgn`, `SigCgt`), against
//! `blk_sigset`, `signals_p`, `signals_s` and `sigactions`.

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
    for (tid, core) in &t.threads {
        let th = core.thread_core.as_ref();
        let st = read_status_file(t.pid, &thread_file(*tid, "status")).map_err(proc_err)?;
        if let Some(mask) = th.and_then(|c| c.blk_sigset).or(task_mask) {
            masks(format_args!("thread {tid}: blocked signals (SigBlk)"), st.sig_blk, mask & !UNBLOCKABLE)?;
        }
        if let Some(q) = th.and_then(|c| c.signals_p.as_ref()) {
            masks(format_args!("thread {tid}: pending signals (SigPnd)"), st.sig_pnd, queued(q))?;
        }
    }
    let st = read_status_file(t.pid, "status").map_err(proc_err)?;
    if let Some(q) = tc.and_then(|c| c.signals_s.as_ref()) {
        masks("shared pending signals (ShdPnd)", st.shd_pnd, queued(q))?;
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
