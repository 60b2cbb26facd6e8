//! Restore acceptance tests (issue 4): `tests/programs/fullstate.c` sets up
//! memory, registers, a moved vDSO, signals, timers and files, is dumped,
//! dies, is restored and checks itself from the inside after SIGUSR1.
//! Tests of the program itself (no checkpoint, a changed file or register
//! is detected, a --leave-running dump leaves it intact) show its checks
//! can fail and do not depend on restore.

mod common;

use common::*;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

fn dirs(name: &str) -> Dirs {
    Dirs::new(name)
}

fn start_fullstate(d: &Dirs) -> Program {
    let _ = std::fs::remove_file(&d.result);
    let p = Program::spawn("fullstate", &[&d.work, &d.result]);
    wait_all_suspended(&[p.pid()]);
    p
}

/// What the program looked like from outside before the dump: pid, fds, mappings.
type Before = (i32, Vec<(i32, String)>, Vec<(u64, u64, String)>);

/// Starts fullstate, dumps it (killing it) and waits until its pid is free.
fn start_and_dump(d: &Dirs) -> Before {
    let mut p = start_fullstate(d);
    let pid = p.pid();
    let fds = fd_kinds(pid);
    let maps = coalesce(proc_maps(pid));
    dump_ok(pid, &d.images, &[]);
    p.reap();
    (pid, fds, maps)
}

/// Checks a freshly restored fullstate from outside (mappings, fds), then
/// triggers its self-check and returns the report.
fn check_restored(d: &Dirs, held: &Held, fds: &[(i32, String)], maps: &[(u64, u64, String)]) -> String {
    wait_all_suspended(&[held.pid]);
    assert_maps_match_image(&d.images, held.pid);
    assert_eq!(coalesce(proc_maps(held.pid)), maps, "mappings differ from before the dump");
    assert_eq!(fd_kinds(held.pid), fds, "fds differ from before the dump");
    trigger(d, held)
}

fn trigger(d: &Dirs, held: &Held) -> String {
    d.trigger(held)
}

#[test]
fn fullstate_checks_pass_without_checkpoint() {
    let d = dirs("nockpt");
    let mut p = start_fullstate(&d);
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let st = p.child.wait().unwrap();
    let report = wait_result(&d.result);
    assert_all_ok("fullstate without checkpoint", &report);
    assert_eq!(st.code(), Some(0), "{report}");
    // The checks are not vacuous: the full list ran.
    for name in ["gp-registers", "ymm0-15", "pending-signals-in-order", "moved-vdso-monotonic", "unlinked-contents",
                 "dontneed-holes-unpopulated", "growsdown-grows", "itimer-real-fires", "dup-shares-offset"] {
        assert!(report.contains(&format!("ok {name}\n")), "no check {name}:\n{report}");
    }
}

#[test]
fn fullstate_detects_a_changed_file() {
    let d = dirs("detects");
    let mut p = start_fullstate(&d);
    std::fs::write(d.work.join("app.log"), b"HELLO ").unwrap();
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let st = p.child.wait().unwrap();
    let report = wait_result(&d.result);
    assert!(report.contains("FAIL append-writes-at-end"), "{report}");
    assert!(report.ends_with("FAIL 1 check(s)\n"), "{report}");
    assert_eq!(st.code(), Some(11));
}

#[test]
fn restore_detached_brings_fullstate_back() {
    let d = dirs("detached");
    let (pid, fds, maps) = start_and_dump(&d);
    let before = snapshot(&d.images);
    let held = restore_detached(&d.images, pid);
    let report = check_restored(&d, &held, &fds, &maps);
    assert_all_ok("restored fullstate", &report);
    assert_same_dir(&before, &snapshot(&d.images));
}

/// The dump's fallback injection (calls one by one on code patched at
/// `rip`, as for a task without a vDSO or refusing an executable scratch
/// area) reads the same state as the usual one stub per thread: the
/// restored program finds every sigaction, timer, alternate stack and
/// prctl value as it set them.
#[test]
fn restored_from_a_dump_injecting_calls_one_by_one() {
    let d = dirs("one-by-one");
    let mut p = start_fullstate(&d);
    let pid = p.pid();
    let (fds, maps) = (fd_kinds(pid), coalesce(proc_maps(pid)));
    let out = criu_rs().args(["dump", "-t", &pid.to_string(), "-D"]).arg(&d.images).env("CRIU_RS_PATCH_CODE", "1").output().unwrap();
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    p.reap();
    let held = restore_detached(&d.images, pid);
    let report = check_restored(&d, &held, &fds, &maps);
    assert_all_ok("restored fullstate (dumped with calls one by one)", &report);
}

#[test]
fn restore_same_images_twice() {
    let d = dirs("twice");
    let (pid, fds, maps) = start_and_dump(&d);
    let before = snapshot(&d.images);
    for round in 1..=2 {
        let held = restore_detached(&d.images, pid);
        let report = check_restored(&d, &held, &fds, &maps);
        assert_all_ok(&format!("restore #{round}"), &report);
        drop(held);
        wait_pid_gone(pid);
    }
    assert_same_dir(&before, &snapshot(&d.images));
}

/// At -v4 the restored task logs after it rebuilt its fd table, in which
/// criu-rs's log fd (3 with `-o`, 2 without) is one of the program's files:
/// the log must go on to criu-rs's log, not into the program's fd 3 (whose
/// offset and size fullstate checks) or its stderr.
#[test]
fn restore_at_debug_level_leaves_the_programs_fds_alone() {
    let d = dirs("v4");
    let (pid, fds, maps) = start_and_dump(&d);
    for to_file in [true, false] {
        let log = d.images.join("restore-v4.log");
        let _ = std::fs::remove_file(&log);
        let pidfile = d.images.with_extension("pid");
        let mut c = restore_cmd(&d.images);
        c.args(["-v4", "-d", "--pidfile", pidfile.to_str().unwrap()]);
        if to_file {
            c.args(["-o", "restore-v4.log"]);
        }
        let out = c.output().unwrap();
        let held = Held::open(pid);
        assert!(out.status.success(), "restore -v4 failed: {}", text(&out.stderr));
        let held = held.unwrap();
        let report = check_restored(&d, &held, &fds, &maps);
        assert_all_ok(&format!("restored at -v4 (log to a file: {to_file})"), &report);
        let logged = if to_file { std::fs::read_to_string(&log).unwrap() } else { text(&out.stderr) };
        assert!(logged.contains("fd installed fd=3"), "the task's own log lines are missing (to a file: {to_file})");
        drop(held);
        wait_pid_gone(pid);
    }
}

#[test]
fn restore_with_pid_in_use_fails_cleanly() {
    let d = dirs("pid-in-use");
    let (pid, fds, maps) = start_and_dump(&d);
    let first = restore_detached(&d.images, pid);
    wait_all_suspended(&[pid]);
    let before = snapshot(&d.images);
    let out = restore(&d.images, &["-d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second restore with pid {pid} taken succeeded");
    assert!(err.contains(&pid.to_string()), "the error does not name the pid: {err}");
    assert_same_dir(&before, &snapshot(&d.images));
    assert_eq!(processes_in(&d.work, &[pid]), Vec::<i32>::new(), "the failed restore left processes behind");
    // The first copy is unharmed.
    let report = check_restored(&d, &first, &fds, &maps);
    assert_all_ok("first copy after the failed restore", &report);
}

/// Starts `criu-rs restore -D DIR` (not detached) and waits until the
/// restored pid waits for its trigger.
fn restore_attached(images: &Path, pid: i32) -> (Proc, Held) {
    let mut c = Proc::from(restore_cmd(images).stdin(Stdio::null()).spawn().unwrap());
    wait_until(&format!("restored pid {pid} to come up"), PATIENCE, || {
        if let Some(st) = c.try_wait() {
            panic!("criu-rs restore exited early with {st}");
        }
        blocked_in(pid, pid) == Some(NR_RT_SIGSUSPEND)
    });
    let held = Held::open(pid).unwrap();
    (c, held)
}

#[test]
fn restore_attached_exits_with_the_programs_status() {
    let d = dirs("attached");
    let (pid, _fds, _maps) = start_and_dump(&d);

    let (mut criu, held) = restore_attached(&d.images, pid);
    let report = trigger(&d, &held);
    let st = criu.wait();
    assert_all_ok("restored fullstate (attached)", &report);
    assert_eq!(st.code(), Some(0), "criu-rs exit status {st:?} (signal {:?})", st.signal());
    drop(held);
    wait_pid_gone(pid);

    // Now make exactly one check fail: the program exits 11 and so must criu-rs.
    let (mut criu, held) = restore_attached(&d.images, pid);
    let app = d.work.join("app.log");
    std::fs::write(&app, b"HELLO ").unwrap();
    let report = trigger(&d, &held);
    std::fs::write(&app, b"hello ").unwrap();
    let st = criu.wait();
    assert!(report.contains("FAIL append-writes-at-end"), "{report}");
    assert_eq!(st.code(), Some(11), "criu-rs exit status {st:?}; report:\n{report}");
}

/// Not a restore test, but it runs today: a dump with --leave-running must
/// leave fullstate exactly as it was (its self-check passes), and the image
/// lists exactly the live mappings (this is what the restore tests compare).
#[test]
fn leave_running_dump_keeps_fullstate_intact() {
    let d = dirs("leave-running");
    let mut p = start_fullstate(&d);
    let fds = fd_kinds(p.pid());
    dump_ok(p.pid(), &d.images, &["-R"]);
    wait_all_suspended(&[p.pid()]);
    assert_maps_match_image(&d.images, p.pid());
    assert_eq!(fd_kinds(p.pid()), fds);
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let st = p.child.wait().unwrap();
    assert_all_ok("fullstate after dump -R", &wait_result(&d.result));
    assert_eq!(st.code(), Some(0));
}

/// The register check is not vacuous: change r12 of the waiting program
/// with ptrace (as a broken restore might) and it reports exactly that.
#[test]
fn fullstate_detects_a_changed_register() {
    let d = dirs("detects-register");
    let mut p = start_fullstate(&d);
    let pid = p.pid();
    // SAFETY: ptrace(2)/waitpid(2) on our own child: seize, interrupt, flip
    // one bit of r12 in its saved registers, detach. regs is a plain C struct.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0), 0);
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0), 0);
        let mut st = 0;
        assert_eq!(libc::waitpid(pid, &mut st, libc::__WALL), pid);
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        assert_eq!(libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs), 0);
        regs.r12 ^= 1;
        assert_eq!(libc::ptrace(libc::PTRACE_SETREGS, pid, 0, &regs), 0);
        assert_eq!(libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0), 0);
        libc::kill(pid, libc::SIGUSR1);
    }
    let st = p.child.wait().unwrap();
    let report = wait_result(&d.result);
    assert!(report.contains("FAIL regs: r12 = "), "{report}");
    assert!(report.ends_with("FAIL 1 check(s)\n"), "{report}");
    assert_eq!(st.code(), Some(11));
}
