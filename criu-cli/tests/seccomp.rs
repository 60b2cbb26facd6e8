//! seccomp (issue 9): `tests/programs/seccomp.c` (filters per thread, a
//! chain shared through TSYNC, a filter that kills, strict mode) is
//! dumped, restored, and finds its filters still forbidding what they
//! forbade: errnos in each thread, a later TSYNC accepted or refused as
//! before, the killing call still kills, strict mode still kills.

mod common;

use common::*;
use std::path::PathBuf;

/// `Seccomp:` and `Seccomp_filters:` of every thread of `pid`, in tid order.
fn seccomp_of(pid: i32) -> Vec<(i32, String)> {
    threads_of(pid)
        .into_iter()
        .map(|tid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
            let lines: Vec<String> =
                s.lines().filter(|l| l.starts_with("Seccomp")).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
            (tid, lines.join(", "))
        })
        .collect()
}

/// Handles on every task, so that a failing test leaves none behind.
fn hold(pids: &[i32]) -> Vec<Held> {
    pids.iter().filter_map(|&pid| Held::open(pid).ok()).collect()
}

fn start(name: &str) -> (Program, Vec<i32>, PathBuf) {
    let work = scratch(&format!("{name}-work"));
    let result = work.with_extension("result");
    let _ = std::fs::remove_file(&result);
    let p = Program::spawn("seccomp", &[&work, &result]);
    let pids = vec![p.pid(), p.int("f"), p.int("s"), p.int("k"), p.int("m")];
    // R and K wait in rt_sigsuspend (the others in loops of their own).
    wait_all_suspended(&[pids[0], pids[3]]);
    (p, pids, result)
}

#[test]
fn seccomp_checks_pass_without_checkpoint() {
    let (_p, pids, result) = start("seccomp-nockpt");
    let tasks = hold(&pids);
    tasks[0].signal(libc::SIGUSR1).unwrap();
    assert_all_ok("seccomp without checkpoint", &wait_result(&result));
}

#[test]
fn filters_and_strict_mode_come_back_and_still_forbid() {
    let (mut p, pids, result) = start("seccomp-restore");
    let tasks = hold(&pids);
    let before: Vec<_> = pids.iter().map(|&pid| seccomp_of(pid)).collect();
    assert_eq!(before[1].len(), 2, "F and its thread T");
    let images = scratch("seccomp-restore-images");
    dump_ok(p.pid(), &images, &[]);
    p.reap();
    drop(tasks);
    for &pid in &pids {
        wait_pid_gone(pid);
    }
    // crit reads the filters: F's two, T's three, S's two (shared, TSYNC), K's one.
    let img = crit_decode(&images.join("seccomp.img"));
    assert_eq!(img["entries"][0]["seccomp_filters"].as_array().map(Vec::len), Some(8), "{img}");

    let root = restore_detached(&images, pids[0]);
    let _tasks = hold(&pids[1..]);
    wait_all_suspended(&[pids[0], pids[3]]);
    let after: Vec<_> = pids.iter().map(|&pid| seccomp_of(pid)).collect();
    root.signal(libc::SIGUSR1).unwrap();
    assert_all_ok("restored seccomp tree (checked from inside)", &wait_result(&result));
    assert_eq!(after, before, "Seccomp and Seccomp_filters of every thread, seen from outside");
}
