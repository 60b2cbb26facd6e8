//! `criu-rs lazy-pages` serving stand-in restored tasks (`lazy_child.c`):
//! each maps a region, registers it with userfaultfd, hands the uffd to the
//! daemon and checks every byte from inside.

mod common;

use common::*;

use std::os::unix::process::ExitStatusExt;

use criu_core::images::ImageDir;

const MIB: u64 = 1 << 20;

fn base(i: u64) -> u64 {
    0x6000_0000_0000 + i * 0x1_0000_0000
}

/// Starts the daemon on `dir` for `kids` and lets them hand over.
fn serve(dir: &tempfile::TempDir, kids: &mut [Kid], extra: &[&str]) -> Proc {
    let images = ImageDir::open_unchecked(dir.path());
    for k in kids.iter() {
        k.write_images(&images);
    }
    finish_images(&images);
    let sock = dir.path().join("lazy.sock");
    let n = kids.len().to_string();
    let mut args = vec!["lazy-pages", "-D", dir.path().to_str().unwrap(), "--address", sock.to_str().unwrap(), "--tasks", &n];
    args.extend_from_slice(extra);
    let mut d = spawn_criu_rs(&args);
    wait_for(&sock, &mut d);
    for k in kids.iter_mut() {
        k.go();
    }
    d
}

fn kid(mode: &str, size: u64, i: u64, dir: &tempfile::TempDir) -> Kid {
    Kid::spawn(mode, size, base(i), &dir.path().join("lazy.sock"))
}

fn assert_ok(k: &mut Kid) {
    let (st, out) = k.wait();
    assert!(st.success(), "child {} failed: {st}\n{out}", k.pid());
}

fn assert_daemon_ok(d: Proc) -> String {
    let (st, out, err) = d.finish();
    assert!(st.success(), "daemon failed: {st}\n{out}\n{err}");
    out
}

#[test]
fn serves_256_mib_and_every_byte_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kid("check", 256 * MIB, 0, &dir);
    let d = serve(&dir, std::slice::from_mut(&mut k), &[]);
    assert_ok(&mut k);
    let out = assert_daemon_ok(d);
    assert!(out.contains("1 task(s)"), "{out}");
}

#[test]
fn hand_over_before_registration_as_the_blob_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kid("late", 32 * MIB, 0, &dir);
    let d = serve(&dir, std::slice::from_mut(&mut k), &[]);
    assert_ok(&mut k);
    assert_daemon_ok(d);
}

#[test]
fn fault_only_service_with_random_touches() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kid("random", 16 * MIB, 0, &dir);
    let d = serve(&dir, std::slice::from_mut(&mut k), &["--no-background", "--fault-chunk", "4"]);
    let (st, out) = k.wait();
    assert!(st.success(), "{st}\n{out}");
    assert!(out.starts_with("median_ns "), "{out}");
    let out = assert_daemon_ok(d);
    // Every page but the hole came through a fault.
    assert!(out.contains("(4095 pages copied, 1 zero pages"), "{out}");
}

#[test]
fn fork_mremap_munmap_madvise_right_after_hand_over() {
    for background in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut k = kid("events", 16 * MIB, 0, &dir);
        let extra: &[&str] = if background { &[] } else { &["--no-background"] };
        let d = serve(&dir, std::slice::from_mut(&mut k), extra);
        assert_ok(&mut k);
        let out = assert_daemon_ok(d);
        if background {
            // The background copy may finish before the task forks: then
            // there is no event to see, and the child simply inherits.
            continue;
        }
        // Fault-only: the daemon can only finish by following the events.
        assert!(out.contains("1 forks"), "{out}");
        assert!(out.contains("1 remaps"), "{out}");
        assert!(!out.contains(" 0 removes/unmaps"), "{out}");
    }
}

#[test]
fn several_tasks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut kids: Vec<Kid> = (0..4).map(|i| kid("check", 32 * MIB, i, &dir)).collect();
    let d = serve(&dir, &mut kids, &[]);
    for k in kids.iter_mut() {
        assert_ok(k);
    }
    let out = assert_daemon_ok(d);
    assert!(out.contains("4 task(s)"), "{out}");
}

#[test]
fn killing_the_daemon_mid_way_kills_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kid("halt", 64 * MIB, 0, &dir);
    let mut d = serve(&dir, std::slice::from_mut(&mut k), &["--no-background"]);
    assert_eq!(k.line(), "half");
    // SIGKILL the daemon alone: no cleanup code of it runs.
    let pid = d.pid();
    // SAFETY-free: kill(2) on the pid of the daemon this test started.
    assert_eq!(unsafe_kill(pid), 0);
    let (dst, _, err) = d.finish();
    assert_eq!(dst.signal(), Some(9), "daemon: {dst}");
    // The task now touches its second half, never delivered.
    k.go();
    let (st, out) = k.wait();
    assert_eq!(st.signal(), Some(9), "the task must be killed, it ended with {st}: {out}");
    assert!(!out.contains("done"), "the task ran on: {out}");
    assert!(err.contains("incomplete task(s); killed"), "the guard must log the kill: {err}");
}

#[test]
fn killing_the_daemon_kills_forked_children_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kid("forkhalt", 16 * MIB, 0, &dir);
    let mut d = serve(&dir, std::slice::from_mut(&mut k), &["--no-background"]);
    // The forked child checked half of its memory (served through its own uffd).
    assert_eq!(k.line(), "half");
    assert_eq!(unsafe_kill(d.pid()), 0);
    let (_, _, err) = d.finish();
    k.go();
    // End of output means every writer (the forked child too) is gone.
    let (st, out) = k.wait();
    assert_eq!(st.signal(), Some(9), "the task must be killed: {st}: {out}");
    assert!(!out.contains("done"), "the forked child ran on: {out}");
    assert!(err.contains("incomplete task(s); killed"), "{err}");
}

fn unsafe_kill(pid: u32) -> i32 {
    // SAFETY: sending SIGKILL to a process this test spawned and has not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) }
}

#[test]
fn a_task_that_never_registers_all_lazy_pages_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kid("partial", 4 * MIB, 0, &dir);
    let d = serve(&dir, std::slice::from_mut(&mut k), &["--register-timeout", "1"]);
    // The task waits for "go"; the daemon must kill it first.
    let (dst, out, err) = d.finish();
    assert_eq!(dst.code(), Some(1), "the daemon reports the kill: {out}\n{err}");
    assert!(err.contains("still not registered"), "{err}");
    k.go();
    let (st, out) = k.wait();
    assert_eq!(st.signal(), Some(9), "{st}: {out}");
}

#[test]
fn refuses_a_uffd_without_the_event_features() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kid("nofeatures", 4 * MIB, 0, &dir);
    let _d = serve(&dir, std::slice::from_mut(&mut k), &[]);
    let (st, _) = k.wait();
    // lazy_child exits 1 when the daemon answers with an errno.
    assert_eq!(st.code(), Some(1), "the hand-over must be refused");
}

#[test]
fn refuses_a_task_without_images() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageDir::open_unchecked(dir.path());
    finish_images(&images);
    let sock = dir.path().join("lazy.sock");
    let mut d = spawn_criu_rs(&["lazy-pages", "-D", dir.path().to_str().unwrap(), "--address", sock.to_str().unwrap(), "--tasks", "1"]);
    wait_for(&sock, &mut d);
    let mut k = Kid::spawn("check", MIB, base(0), &sock);
    k.go();
    let (st, _) = k.wait();
    assert_eq!(st.code(), Some(1), "the hand-over must be refused");
}
