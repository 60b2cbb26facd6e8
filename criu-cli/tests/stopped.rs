//! Stopped tasks (issue 9): a stopped job and a stopped child of a running
//! parent (`tests/programs/stopped.c`, each stopped task with two threads)
//! are dumped as they are, come back stopped (`T`, every thread), and run
//! on SIGCONT, checking themselves from inside. A child stopped by SIGTSTP
//! with more SIGSTOPs queued is dumped (the queued ones dropped, as CRIU)
//! and comes back stopped by SIGTSTP, as its parent's waitid reports.

mod common;

use common::*;
use std::path::PathBuf;

/// The state letter of every thread of `pid`.
fn thread_states(pid: i32) -> Vec<char> {
    threads_of(pid)
        .into_iter()
        .map(|tid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
            s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
        })
        .collect()
}

/// Waits until every thread of `pid` is stopped (`T`).
fn wait_stopped(pid: i32) {
    wait_until(&format!("pid {pid} stopped"), PATIENCE, || {
        let st = thread_states(pid);
        !st.is_empty() && st.iter().all(|&c| c == 'T')
    });
}

/// Starts stopped.c in `mode`; returns it, the stopped task's pid and the
/// result file, once the stopped task is stopped (and in child mode the
/// parent waits).
fn start(name: &str, mode: &str) -> (Program, i32, PathBuf) {
    let work = scratch(&format!("{name}-work"));
    let result = work.with_extension("result");
    let _ = std::fs::remove_file(&result);
    let p = Program::spawn("stopped", &[&work, &result, std::path::Path::new(mode)]);
    let stopped = if mode == "job" { p.pid() } else { p.int("s") };
    wait_stopped(stopped);
    if mode != "job" {
        wait_all_suspended(&[p.pid()]);
    }
    (p, stopped, result)
}

/// Dumps the tree, waits until its pids are free, restores it detached;
/// returns handles on the root and the stopped task. `guard` (a handle on
/// the stopped child before the dump) is let go once the dump killed it.
fn dump_and_restore(name: &str, p: &mut Program, stopped: i32, guard: Option<Held>) -> (Held, Option<Held>) {
    let images = scratch(&format!("{name}-images"));
    let tids = threads_of(stopped);
    assert_eq!(tids.len(), 2, "the stopped task has two threads");
    dump_ok(p.pid(), &images, &[]);
    p.reap();
    drop(guard);
    for pid in [p.pid(), stopped].into_iter().chain(tids) {
        wait_pid_gone(pid);
    }
    let root = restore_detached(&images, p.pid());
    let other = (stopped != p.pid()).then(|| Held::open(stopped).unwrap());
    (root, other)
}

#[test]
fn stopped_job_checks_pass_without_checkpoint() {
    let (p, stopped, result) = start("stopped-job-nockpt", "job");
    let held = Held::open(stopped).unwrap();
    held.signal(libc::SIGCONT).unwrap();
    assert_all_ok("stopped job without checkpoint", &wait_result(&result));
    drop(p);
}

#[test]
fn stopped_job_comes_back_stopped_and_runs_on_sigcont() {
    let (mut p, pid, result) = start("stopped-job", "job");
    let (held, _) = dump_and_restore("stopped-job", &mut p, pid, None);
    wait_stopped(pid);
    assert!(!result.exists(), "the job ran before SIGCONT");
    held.signal(libc::SIGCONT).unwrap();
    assert_all_ok("restored stopped job", &wait_result(&result));
}

#[test]
fn stopped_child_checks_pass_without_checkpoint() {
    let (p, child, result) = start("stopped-child-nockpt", "child");
    let held = Held::open(p.pid()).unwrap();
    let _child = Held::open(child).unwrap();
    held.signal(libc::SIGUSR1).unwrap();
    assert_all_ok("stopped child without checkpoint", &wait_result(&result));
}

/// A stopped child of a running parent: the child comes back stopped (its
/// parent is told, as waitid shows it), the parent runs; the parent sends
/// SIGCONT and the child checks itself.
#[test]
fn stopped_child_of_running_parent_comes_back_stopped() {
    let (mut p, child, result) = start("stopped-child", "child");
    let guard = Held::open(child).unwrap();
    let (held, _child) = dump_and_restore("stopped-child", &mut p, child, Some(guard));
    wait_stopped(child);
    wait_all_suspended(&[p.pid()]);
    assert_eq!(thread_states(p.pid()), vec!['S'], "the parent runs (waits in rt_sigsuspend)");
    held.signal(libc::SIGUSR1).unwrap();
    assert_all_ok("restored stopped child", &wait_result(&result));
}

/// `SigPnd` and `ShdPnd` of `pid` (its own queue, its group's).
fn pending(pid: i32) -> (u64, u64) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = |key: &str| {
        let line = st.lines().find(|l| l.starts_with(key)).unwrap();
        u64::from_str_radix(line[key.len()..].trim(), 16).unwrap()
    };
    (mask("SigPnd:"), mask("ShdPnd:"))
}

/// A child stopped by SIGTSTP (its own process group, not orphaned) with a
/// SIGSTOP queued for it and one for its group: the dump takes them, the
/// child comes back stopped by SIGTSTP (its parent's waitid says so).
#[test]
fn child_stopped_by_sigtstp_with_queued_sigstops_comes_back_stopped_by_sigtstp() {
    let (mut p, child, result) = start("stopped-tstp", "child-tstp");
    let sigstop = 1u64 << (libc::SIGSTOP - 1);
    wait_until("both SIGSTOPs queued", PATIENCE, || pending(child) == (sigstop, sigstop));
    let guard = Held::open(child).unwrap();
    let (held, _child) = dump_and_restore("stopped-tstp", &mut p, child, Some(guard));
    wait_stopped(child);
    wait_all_suspended(&[p.pid()]);
    held.signal(libc::SIGUSR1).unwrap();
    assert_all_ok("restored child stopped by SIGTSTP", &wait_result(&result));
}
