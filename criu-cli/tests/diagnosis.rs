//! Diagnosing a failed restore (issue 9): a restored task that dies of a
//! signal right after it is let go, or in the blob, is reported with the
//! task, the signal, the faulting address and the instruction pointer, each
//! with the VMA of the image (or criu-rs's area) that holds it; `-v4` logs
//! every stage of the blob with its duration, `-v2` stays short.
//!
//! The crashes are made on purpose: a dumped `sleep` whose instruction
//! pointer is moved into its (non-executable) stack in the core image, and
//! the blob's test-only fault (`CRIU_RS_FAIL_AT=blob-crash`).

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// The start of `[stack]` in /proc/PID/maps.
fn stack_start(pid: i32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps.lines().find(|l| l.ends_with("[stack]")).expect("a [stack] line");
    u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

/// Dumps a `sleep` into `name`; returns the images, its pid and its
/// stack's start.
fn dumped_sleeper(name: &str) -> (PathBuf, i32, u64) {
    let images = scratch(name);
    let mut s = Sleeper::start();
    let pid = s.pid();
    let stack = stack_start(pid);
    dump_ok(pid, &images, &[]);
    s.reap();
    (images, pid, stack)
}

/// Sets the instruction pointer of `pid`'s core image to `ip` (through
/// crit's JSON form).
fn set_ip(images: &Path, pid: i32, ip: u64) {
    let img = images.join(format!("core-{pid}.img"));
    let mut core = crit_decode(&img);
    let regs = &mut core["entries"][0]["thread_info"]["gpregs"];
    regs["ip"] = match &regs["ip"] {
        serde_json::Value::String(_) => serde_json::json!(format!("{ip:#x}")),
        _ => serde_json::json!(ip),
    };
    let json = images.join("core.json");
    std::fs::write(&json, serde_json::to_vec(&core).unwrap()).unwrap();
    let out = std::process::Command::new("crit").args(["encode", "-i"]).arg(&json).arg("-o").arg(&img).output().unwrap();
    assert!(out.status.success(), "crit encode: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&json).unwrap();
}

/// The report names the task, the signal, the faulting address in the
/// stack's VMA of the image, and the instruction pointer (the same).
fn assert_names_the_crash(err: &str, pid: i32, stack: u64) {
    let addr = stack + 0x100;
    assert!(err.contains(&format!("restored task {pid} died of SIGSEGV")), "{err}");
    assert!(err.contains(&format!("thread {pid} took SIGSEGV")), "{err}");
    assert!(err.contains(&format!("at address {addr:#x} (in the image's VMA {stack:#x}-")), "{err}");
    assert!(err.contains("rw-p [anon] (+0x100)"), "{err}");
    assert!(err.contains(&format!("ip {addr:#x} (in the image's VMA {stack:#x}-")), "{err}");
}

/// Without -d, criu-rs watches the tasks it let go: a task that crashes
/// at once is reported, and criu-rs exits with its status.
#[test]
fn crash_right_after_release_is_diagnosed() {
    let (images, pid, stack) = dumped_sleeper("diag-after");
    set_ip(&images, pid, stack + 0x100);
    let out = restore(&images, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGSEGV), "{err}");
    assert_names_the_crash(&err, pid, stack);
    wait_pid_gone(pid);
}

/// With -d and --watch, the crash fails the restore, named.
#[test]
fn crash_while_watched_fails_a_detached_restore() {
    let (images, pid, stack) = dumped_sleeper("diag-detached");
    set_ip(&images, pid, stack + 0x100);
    let before = snapshot(&images);
    let out = restore(&images, &["-d", "--watch", "20000"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Error: restored task"), "{err}");
    assert_names_the_crash(&err, pid, stack);
    wait_pid_gone(pid);
    assert_same_dir(&before, &snapshot(&images));
}

/// A task that dies in the blob is reported with the blob's stage, the
/// signal, the address (in no VMA of the image) and the instruction
/// pointer (in criu-rs's blob); nothing is left running.
#[test]
fn crash_in_the_blob_is_diagnosed() {
    let (images, pid, _) = dumped_sleeper("diag-blob");
    let before = snapshot(&images);
    let out = criu_rs().args(["restore", "-d", "-D"]).arg(&images).env("CRIU_RS_FAIL_AT", "blob-crash").output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("thread {pid} died of SIGSEGV in the blob at stage 13 (sigactions)")), "{err}");
    assert!(err.contains("at address 0x8 (in no VMA of the image)"), "{err}");
    assert!(err.contains("(in criu-rs's restorer blob at "), "{err}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} left behind");
    assert_same_dir(&before, &snapshot(&images));
}

/// The lines of `log` that contain every one of `words`; asserts there is one.
fn lines_with<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    let v: Vec<&str> = log.lines().filter(|l| words.iter().all(|w| l.contains(w))).collect();
    assert!(!v.is_empty(), "no line with {words:?} in:\n{log}");
    v
}

/// `-v4` tells the whole story with timings, on dump and on restore: each
/// step with its duration, each VMA, each image read, each description
/// opened and fd installed, each stage of the blob with its duration.
/// `-v2` stays short.
#[test]
fn v4_tells_every_step_with_its_duration() {
    let images = scratch("diag-v4");
    let mut s = Sleeper::start();
    let pid = s.pid();
    dump_ok(pid, &images, &["-v4", "-o", "dump.log"]);
    s.reap();
    let dump = std::fs::read_to_string(images.join("dump.log")).unwrap();
    for step in ["freeze", "thread_state", "run_injection", "plan_private", "copy_private", "collect_files", "write_images"] {
        lines_with(&dump, &[step, "close time.busy="]);
    }
    lines_with(&dump, &[&format!("collect{{pid={pid}}}: close time.busy=")]);
    lines_with(&dump, &["VMA [stack]", "start=0x"]);
    lines_with(&dump, &["collected fd", "fd=0"]);
    lines_with(&dump, &["image written", &format!("core-{pid}.img"), "bytes="]);

    let out = restore(&images, &["-d", "-v4", "-o", "restore.log"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = Held::open(pid).unwrap();
    let rest = std::fs::read_to_string(images.join("restore.log")).unwrap();
    lines_with(&rest, &["image read: one core_entry", &format!("core-{pid}.img"), "us="]);
    lines_with(&rest, &["image read: one mm_entry", "us="]);
    lines_with(&rest, &[&format!("load_task{{pid={pid}}}: close time.busy=")]);
    lines_with(&rest, &["VMA premapped", "start=0x", "at=0x"]);
    lines_with(&rest, &["opened description", "/dev/null", "us="]);
    lines_with(&rest, &["fd installed", "fd=2"]);
    lines_with(&rest, &[&format!("build_memory{{pid={pid}"), "close time.busy="]);
    for stage in ["moving memory into place", "sigactions", "credentials"] {
        lines_with(&rest, &[&format!("blob: {stage}"), &format!("pid={pid}"), "us="]);
    }
    lines_with(&rest, &["blob: rt_sigreturn (last)"]);
    lines_with(&rest, &["blob: done", "us="]);
    lines_with(&rest, &["restore_tree: close time.busy="]);
    drop(held);
    wait_pid_gone(pid);

    let out = restore(&images, &["-d", "-v2", "-o", "restore2.log"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = Held::open(pid).unwrap();
    let short = std::fs::read_to_string(images.join("restore2.log")).unwrap();
    assert!(short.lines().count() < 5, "-v2 is short: {short}");
    drop(held);
    wait_pid_gone(pid);
}
