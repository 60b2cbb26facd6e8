//! The command line's output, as CRIU's: `-v0..4` levels, `-o FILE`
//! (relative to -D, created even when the command fails, holding the
//! error too), and one clear `Error:` line for the common mistakes.

mod common;

use common::*;

use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};

fn run(args: &[&str]) -> Output {
    criu_rs().args(args).stdin(Stdio::null()).output().unwrap()
}

/// Asserts a failure whose stderr is exactly one `Error:` line holding every needle.
fn one_error_line(out: &Output, needles: &[&str]) -> String {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "should have failed: {err}");
    assert_eq!(err.lines().count(), 1, "want one line: {err:?}");
    assert!(err.starts_with("Error: "), "{err:?}");
    for n in needles {
        assert!(err.contains(n), "want {n:?} in {err:?}");
    }
    err
}

#[test]
fn log_file_is_relative_to_the_images_dir_and_holds_the_error() {
    let dir = scratch("log-rel");
    let d = dir.to_str().unwrap();
    let out = run(&["-o", "dump.log", "dump", "-t", "999999999", "-D", d]);
    let err = one_error_line(&out, &["no process with pid 999999999"]);
    let log = std::fs::read_to_string(dir.join("dump.log")).expect("log file created in -D");
    assert!(log.contains(err.trim()), "log {log:?} lacks {err:?}");

    // Even at -v0 the final error goes to the log file.
    let out = run(&["-v0", "-o", "dump0.log", "dump", "-t", "999999999", "-D", d]);
    one_error_line(&out, &["no process"]);
    assert!(std::fs::read_to_string(dir.join("dump0.log")).unwrap().contains("no process with pid"));

    // restore too, and it is the only file written there.
    let out = run(&["-o", "restore.log", "restore", "-D", d]);
    one_error_line(&out, &["not an images directory"]);
    assert!(std::fs::read_to_string(dir.join("restore.log")).unwrap().contains("not an images directory"));
}

#[test]
fn absolute_log_file_and_check_relative_to_cwd() {
    let dir = scratch("log-abs");
    let imgs = scratch("log-abs-imgs");
    let abs = dir.join("abs.log");
    let out = run(&["-o", abs.to_str().unwrap(), "dump", "-t", "999999999", "-D", imgs.to_str().unwrap()]);
    one_error_line(&out, &["no process"]);
    assert!(std::fs::read_to_string(&abs).unwrap().contains("no process with pid 999999999"));
    assert!(!imgs.join("abs.log").exists());

    // check has no -D: relative to the working directory.
    let out = criu_rs().current_dir(&dir).args(["-v4", "-o", "check.log", "check"]).output().unwrap();
    assert_eq!(text(&out.stderr), "", "with -o nothing is logged to stderr");
    assert!(dir.join("check.log").exists());
    assert!(text(&out.stdout).contains("ptrace"), "the report still goes to stdout");
}

#[test]
fn verbosity_levels() {
    let p = Sleeper::start();
    let dir = scratch("levels");
    let d = dir.to_str().unwrap();
    let pid = p.pid().to_string();
    // -v0 and the default: a successful dump says nothing.
    for v in [&["-v0"][..], &[][..]] {
        let out = criu_rs().args(v).args(["dump", "-R", "-t", &pid, "-D", d]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "{v:?}");
    }
    // -v3 and -v4 log the dump's progress (to -o FILE when given), and -v4 more than -v3.
    let out = run(&["-v3", "dump", "-R", "-t", &pid, "-D", d]);
    assert!(text(&out.stderr).contains("dump finished"), "{}", text(&out.stderr));
    let mut lines = Vec::new();
    for v in ["-v3", "-v4"] {
        let out = run(&[v, "-o", "l.log", "dump", "-R", "-t", &pid, "-D", d]);
        assert!(out.status.success());
        assert_eq!(text(&out.stderr), "");
        let log = std::fs::read_to_string(dir.join("l.log")).unwrap();
        assert!(log.contains("dump finished"), "{v}: {log}");
        assert!(!log.contains('\x1b'), "no colours in a file");
        lines.push(log.lines().count());
    }
    assert!(lines[1] > lines[0], "-v4 logs more than -v3: {lines:?}");
    assert!(p.untouched());
    // As CRIU: levels above 4 log everything, and -v / -vv raise the default (2).
    for v in ["-v5", "-vv"] {
        let out = run(&[v, "-o", "l5.log", "dump", "-R", "-t", &pid, "-D", d]);
        assert!(out.status.success(), "{v}: {}", text(&out.stderr));
        let log = std::fs::read_to_string(dir.join("l5.log")).unwrap();
        assert!(log.lines().count() > lines[0], "{v} logs more than -v3, as -v4");
    }
    assert!(p.untouched());
}

#[test]
fn dump_into_a_missing_directory() {
    let p = Sleeper::start();
    let dir = scratch("missing-d").join("nope");
    let d = dir.to_str().unwrap();
    let out = run(&["dump", "-t", &p.pid().to_string(), "-D", d]);
    one_error_line(&out, &["images directory", d, "No such file or directory"]);
    // With -o the log cannot be created there either: the directory is named, not created.
    let out = run(&["-o", "dump.log", "dump", "-t", &p.pid().to_string(), "-D", d]);
    one_error_line(&out, &["images directory", d, "No such file or directory"]);
    assert!(!dir.exists(), "the images directory was created");
    assert!(p.untouched());
}

#[test]
fn dump_of_a_process_we_may_not_trace() {
    let p = Sleeper::start();
    let dir = scratch("not-ours");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // criu-rs as nobody, the sleeper as root.
    let out = criu_rs()
        .uid(65534)
        .gid(65534)
        .args(["dump", "-t", &p.pid().to_string(), "-D", dir.to_str().unwrap()])
        .output()
        .unwrap();
    one_error_line(&out, &[&format!("not allowed to trace process {}", p.pid())]);
    assert!(p.untouched());
}

#[test]
fn restore_of_something_else() {
    let dir = scratch("not-images");
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    let out = run(&["restore", "-D", dir.to_str().unwrap()]);
    one_error_line(&out, &[dir.to_str().unwrap(), "not an images directory"]);
    let file = dir.join("notes.txt");
    let out = run(&["restore", "-D", file.to_str().unwrap()]);
    one_error_line(&out, &[file.to_str().unwrap(), "not a directory"]);
    let missing = dir.join("nope");
    let out = run(&["restore", "-D", missing.to_str().unwrap()]);
    one_error_line(&out, &[missing.to_str().unwrap(), "No such file or directory"]);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "restore wrote into the directory");
}

#[test]
fn restore_over_a_live_pid() {
    let p = Sleeper::start();
    let dir = scratch("live-pid");
    let pid = p.pid().to_string();
    let out = run(&["dump", "-R", "-t", &pid, "-D", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["restore", "-D", dir.to_str().unwrap()]);
    one_error_line(&out, &[&format!("pid {pid} is already in use")]);
    assert!(p.untouched(), "restore touched the live process");
}
