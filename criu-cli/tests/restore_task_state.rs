//! Per-task state the blob restores late, checked from inside the restored
//! process (tests/programs/taskstate.c): eleven resource limits with soft
//! below hard (hard limits lowered: nothing here may raise one), the
//! personality (`ADDR_NO_RANDOMIZE | UNAME26`, which uname shows), and, for
//! a process running as another user, every uid, gid and group; a POSIX
//! timer signalling one thread; a chrooted process's root and cwd (its
//! root is taken after the restore has read what it needs through /proc:
//! zdtm chroot). Also a pipe raised to 1 MiB holding 1 MiB
//! (tests/programs/bigpipe.c).
//!
//! Each restore test has a twin that runs the same checks without any
//! checkpoint, so a failure after restore is the restore's.

mod common;

use common::*;
use std::path::{Path, PathBuf};

struct Dirs {
    work: PathBuf,
    images: PathBuf,
    result: PathBuf,
}

fn dirs(name: &str) -> Dirs {
    let work = scratch(&format!("{name}-work"));
    let images = scratch(&format!("{name}-images"));
    // Writable by the other user the "ids" variant becomes.
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let result = work.join("result");
    Dirs { work, images, result }
}

fn start_program(name: &str, d: &Dirs, extra: &[&str]) -> Program {
    let mut args: Vec<&Path> = vec![&d.work, &d.result];
    args.extend(extra.iter().map(Path::new));
    let p = Program::spawn(name, &args);
    wait_state(p.pid(), 'S');
    p
}

/// SIGUSR1 to `held`, then its report.
fn trigger(d: &Dirs, held: &Held) -> String {
    held.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&d.result);
    assert!(held.wait_exit(PATIENCE), "pid {} did not exit after its checks", held.pid);
    report
}

fn checks_pass_without_checkpoint(name: &str, extra: &[&str]) {
    checks_pass_without_checkpoint_of("taskstate", name, extra)
}

fn checks_pass_without_checkpoint_of(program: &str, name: &str, extra: &[&str]) {
    let d = dirs(name);
    let mut p = start_program(program, &d, extra);
    let held = Held::open(p.pid()).unwrap();
    let report = trigger(&d, &held);
    let _ = p.child.wait();
    assert_all_ok(name, &report);
}

fn dump_restore_check(name: &str, extra: &[&str]) {
    dump_restore_check_of("taskstate", name, extra)
}

fn dump_restore_check_of(program: &str, name: &str, extra: &[&str]) {
    let d = dirs(name);
    let mut p = start_program(program, &d, extra);
    let pid = p.pid();
    dump_ok(pid, &d.images, &[]);
    p.reap();
    let held = restore_detached(&d.images, pid);
    let report = trigger(&d, &held);
    assert_all_ok(name, &report);
}

#[test]
fn rlimits_and_personality_checks_pass_without_checkpoint() {
    checks_pass_without_checkpoint("limits-live", &[]);
}

#[test]
fn rlimits_and_personality_come_back() {
    dump_restore_check("limits", &[]);
}

#[test]
fn other_user_checks_pass_without_checkpoint() {
    checks_pass_without_checkpoint("ids-live", &["ids"]);
}

/// A process running as another user (uids 65534/1001/1002, gids alike,
/// two groups) comes back with every id, without capabilities: the test
/// that catches a restore bringing every task back as root.
#[test]
fn other_user_comes_back_with_its_ids() {
    dump_restore_check("ids", &["ids"]);
}

#[test]
fn thread_timer_checks_pass_without_checkpoint() {
    checks_pass_without_checkpoint("timer-live", &["timer"]);
}

/// A POSIX timer signalling one thread (`SIGEV_THREAD_ID`, as glibc's
/// `SIGEV_THREAD` timers do: zdtm pthread_timers_h) still signals that
/// thread alone, not the process.
#[test]
fn thread_directed_timer_still_signals_its_thread() {
    dump_restore_check("timer", &["timer"]);
}

#[test]
fn chrooted_checks_pass_without_checkpoint() {
    checks_pass_without_checkpoint("chroot-live", &["chroot"]);
}

/// A process chrooted into a directory comes back inside it (its root's
/// inode, a file only the jail holds, its cwd in the jail).
#[test]
fn chrooted_process_comes_back_in_its_root() {
    dump_restore_check("chroot", &["chroot"]);
}

#[test]
fn big_pipe_checks_pass_without_checkpoint() {
    checks_pass_without_checkpoint_of("bigpipe", "bigpipe-live", &[]);
}

/// A pipe raised to 1 MiB with 1 MiB queued comes back with its size and
/// every byte (restore must raise the new pipe with `F_SETPIPE_SZ` and
/// check the result before splicing the data in).
#[test]
fn big_pipe_comes_back_full() {
    dump_restore_check_of("bigpipe", "bigpipe", &[]);
}
