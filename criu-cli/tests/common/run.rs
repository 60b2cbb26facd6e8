//! Running `criu-rs`: as a command to finish ([`criu_rs`], [`dump`],
//! [`restore`]...) or as a daemon that runs beside the test
//! ([`spawn_criu_rs`]: `lazy-pages`, `page-server`, `dump --lazy-pages`).

use super::procs::{Held, Proc};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A `criu-rs` command (the binary cargo built for these tests).
pub fn criu_rs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_criu-rs"))
}

/// Output bytes (stderr, stdout) as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `criu-rs dump -t PID -D DIR EXTRA...`.
pub fn dump(pid: i32, dir: &Path, extra: &[&str]) -> Output {
    criu_rs().arg("dump").arg("-t").arg(pid.to_string()).arg("-D").arg(dir).args(extra).output().unwrap()
}

/// [`dump`], asserted to succeed.
pub fn dump_ok(pid: i32, dir: &Path, extra: &[&str]) {
    let out = dump(pid, dir, extra);
    assert!(out.status.success(), "dump of {pid} {extra:?} failed: {}", text(&out.stderr));
}

/// [`dump`] with `CRIU_RS_FAIL_AT=point`, asserted to fail at that point
/// without writing an inventory.
pub fn dump_failing_at(pid: i32, dir: &Path, point: &str, extra: &[&str]) {
    let out = criu_rs()
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(dir)
        .args(extra)
        .env("CRIU_RS_FAIL_AT", point)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{point}: dump should fail");
    assert!(err.contains("forced failure"), "{point}: {err}");
    assert!(!dir.join("inventory.img").exists(), "{point}: inventory written");
}

/// `criu-rs restore --verify -D DIR EXTRA...`: every test restore checks
/// the restored tasks against the images before they run (`--no-verify`
/// in `extra` turns that off).
pub fn restore(dir: &Path, extra: &[&str]) -> Output {
    restore_cmd(dir).args(extra).output().expect("running criu-rs")
}

/// The command `criu-rs restore --verify -D DIR`, to add to and run.
pub fn restore_cmd(dir: &Path) -> Command {
    let mut c = criu_rs();
    c.args(["restore", "--verify", "-D"]).arg(dir);
    c
}

/// `criu-rs restore --verify -D DIR -d --pidfile F`, asserted to succeed and to
/// give back `want_pid`; returns a handle on the restored root.
pub fn restore_detached(dir: &Path, want_pid: i32) -> Held {
    restore_detached_with(dir, want_pid, &[])
}

/// [`restore_detached`] with more options (`--tcp-established`, ...).
pub fn restore_detached_with(dir: &Path, want_pid: i32, extra: &[&str]) -> Held {
    let pidfile = dir.with_extension("pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut args = vec!["-d", "--pidfile", pidfile.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = restore(dir, &args);
    // Take hold of the process before asserting, so that a failure still kills it.
    let held = Held::open(want_pid);
    assert!(out.status.success(), "restore failed: {}", text(&out.stderr));
    let got: i32 = std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("pidfile {}: {e}", pidfile.display()))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(got, want_pid, "restored with another pid");
    held.unwrap_or_else(|e| panic!("restored pid {want_pid} is not there: {e}"))
}

/// Starts `criu-rs ARGS` with piped stdout and stderr (a daemon, a lazy
/// dump); killed on drop.
pub fn spawn_criu_rs(args: &[&str]) -> Proc {
    spawn_criu_rs_in(None, args)
}

/// [`spawn_criu_rs`] inside network namespace `netns` when given.
pub fn spawn_criu_rs_in(netns: Option<&str>, args: &[&str]) -> Proc {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_criu-rs")]);
            c
        }
        None => criu_rs(),
    };
    Proc::from(cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn criu-rs"))
}
