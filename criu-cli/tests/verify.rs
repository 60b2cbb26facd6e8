//! `restore --verify` (issue 11): a restore made to skip one piece of
//! state (the test-only `CRIU_RS_FAILPOINT`) still "succeeds" without
//! `--verify`, and the restored program finds the state wrong itself; with
//! `--verify` the same restore fails naming the difference, leaves no
//! process behind and leaves the images as they were.

mod common;

use common::*;
use std::path::Path;

/// `CRIU_RS_FAILPOINT` (criu-core's `restore::failpoint::ENV`).
const FAILPOINT: &str = "CRIU_RS_FAILPOINT";

/// Starts `program` (a self-checking one: DIR RESULT, or RESULT only for
/// fdkinds) and dumps it.
fn start_and_dump(d: &Dirs, program: &str) -> i32 {
    let mut p = if program == "fdkinds" {
        Program::spawn(program, &[&d.result])
    } else {
        Program::spawn(program, &[&d.work, &d.result])
    };
    let pid = p.pid();
    wait_all_suspended(&[pid]);
    dump_ok(pid, &d.images, &[]);
    p.reap();
    pid
}

/// Restores `images` with `failpoint` and `--verify`: must fail naming
/// `want` for `pid`, with nothing left and the images untouched.
fn verify_catches(d: &Dirs, pid: i32, failpoint: &str, want: &str) {
    let before = snapshot(&d.images);
    let out = restore_cmd(&d.images).arg("-d").env(FAILPOINT, failpoint).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{failpoint}: restore --verify succeeded: {err}");
    let prefix = format!("verify: pid {pid}: ");
    assert!(err.contains(&prefix) && err.contains(want), "{failpoint}: want \"{prefix}...{want}...\" in: {err}");
    wait_pid_gone(pid);
    assert_eq!(processes_in(&d.work, &[]), Vec::<i32>::new(), "{failpoint}: the failed restore left processes behind");
    assert_same_dir(&before, &snapshot(&d.images));
}

/// Restores `images` with `failpoint` and without `--verify`: it succeeds
/// and the program's self-check fails on `check` (or it dies before it
/// can report).
fn wrong_without_verify(d: &Dirs, pid: i32, failpoint: &str, check: &str) {
    let pidfile = d.images.with_extension("pid");
    let out = restore_cmd(&d.images)
        .args(["--no-verify", "-d", "--pidfile"])
        .arg(&pidfile)
        .env(FAILPOINT, failpoint)
        .output()
        .unwrap();
    let held = Held::open(pid);
    assert!(out.status.success(), "{failpoint}: restore without --verify failed: {}", text(&out.stderr));
    let held = held.unwrap();
    // Its self-check reports the state wrong, or the program dies of it
    // (unblocked signals it kept pending).
    let _ = std::fs::remove_file(&d.result);
    held.signal(libc::SIGUSR1).unwrap();
    assert!(held.wait_exit(PATIENCE), "{failpoint}: pid {pid} did not exit after its self-check");
    if let Ok(report) = std::fs::read_to_string(&d.result) {
        let failed: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert!(failed.iter().any(|l| l.contains(check)), "{failpoint}: the program did not find {check} wrong: {report}");
    }
    drop(held);
    wait_pid_gone(pid);
}

fn caught(name: &str, program: &str, failpoint: &str, want: &str, check: &str) {
    let d = Dirs::new(name);
    let pid = start_and_dump(&d, program);
    verify_catches(&d, pid, failpoint, want);
    wrong_without_verify(&d, pid, failpoint, check);
    // And the images restore right with --verify once nothing is skipped.
    let held = restore_detached(&d.images, pid);
    assert_all_ok(name, &d.trigger(&held));
}

#[test]
fn verify_catches_skipped_rlimits() {
    caught("skip-rlimits", "taskstate", "skip-rlimits", "rlimit ", "rlimit");
}

#[test]
fn verify_catches_skipped_file_positions() {
    caught("skip-fd-pos", "fullstate", "skip-fd-pos", "position", "offset");
}

#[test]
fn verify_catches_skipped_signal_mask() {
    caught("skip-sigmask", "fullstate", "skip-sigmask", "blocked signals (SigBlk)", "sig");
}

/// fdkinds' pipe owned by its pid (set as euid 1000) with SIGRTMIN+1, and
/// its FIFO owned by its thread.
#[test]
fn verify_catches_skipped_file_owners() {
    caught("skip-fown", "fdkinds", "skip-fown", "owner pid 0", "fown-pid");
}

/// sharers.c: R and X share one fd table (`CLONE_FILES`). The restore
/// gives them one table again, or `--verify` refuses it naming the split:
/// never two tables and a success (zdtm fdt_shared).
#[test]
fn a_shared_fd_table_comes_back_shared_or_verify_refuses_it() {
    let d = Dirs::new("verify-sharers");
    let mut p = Program::spawn("sharers", &[&d.work]);
    let (r, x, y) = (p.pid(), p.int("x"), p.int("y"));
    // Killed on a failure before the dump (R's children, not ours to reap).
    let _before: Vec<_> = [x, y].iter().map(|&pid| Held::open(pid).unwrap()).collect();
    dump_ok(r, &d.images, &[]);
    p.reap();
    for pid in [x, y] {
        wait_pid_gone(pid);
    }
    let out = restore_cmd(&d.images).arg("-d").output().unwrap();
    let held: Vec<_> = [r, x, y].iter().filter_map(|&pid| Held::open(pid).ok()).collect();
    let err = text(&out.stderr);
    if out.status.success() {
        // SAFETY: kcmp(2) compares two tasks' kernel objects; no pointers.
        let same = unsafe { libc::syscall(libc::SYS_kcmp, r, x, 2 /* KCMP_FILES */, 0, 0) };
        assert_eq!((held.len(), same), (3, 0), "restored, but R and X do not share one fd table");
    } else {
        assert!(err.contains(&format!("verify: pid {x}: fd table not shared with pid {r}")), "{err}");
        drop(held);
        for pid in [r, x, y] {
            wait_pid_gone(pid);
        }
    }
}

/// A restore run by a tool that passes `--no-default-config` (zdtm) is
/// verified when `CRIU_CONFIG_FILE` names a file saying `verify`.
#[test]
fn verify_is_turned_on_by_the_criu_config_file_variable() {
    let d = Dirs::new("verify-config");
    let pid = start_and_dump(&d, "taskstate");
    let conf = d.work.join("verify.conf");
    std::fs::write(&conf, "# as for zdtm\nverify\n").unwrap();
    let out = criu_rs()
        .args(["restore", "--no-default-config", "-d", "-D"])
        .arg(&d.images)
        .env("CRIU_CONFIG_FILE", &conf)
        .env(FAILPOINT, "skip-rlimits")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("verify: pid {pid}: rlimit ")), "not verified: {err}");
    wait_pid_gone(pid);
}

/// The check runs on every restore of the suite: a plain restore of a
/// tree with threads, fds and memory of every kind passes it, and says so
/// in the log.
#[test]
fn verify_passes_and_logs_on_a_right_restore() {
    let d = Dirs::new("verify-ok");
    let pid = start_and_dump(&d, "fullstate");
    let log = d.work.join("restore.log");
    let out = restore_cmd(&d.images).args(["-d", "-v3", "-o"]).arg(&log).output().unwrap();
    let held = Held::open(pid);
    assert!(out.status.success(), "restore --verify failed: {}", text(&out.stderr));
    let held = held.unwrap();
    let logged = std::fs::read_to_string(Path::new(&log)).unwrap();
    assert!(logged.lines().any(|l| l.contains("verify") && l.contains("differ=0")), "no verify line in the log:\n{logged}");
    assert_all_ok("verified fullstate", &d.trigger(&held));
}
