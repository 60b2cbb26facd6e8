//! The progress bar: drawn on a terminal (a pty made by script(1)) for the
//! memory phases of dump and restore, and never when stderr is captured.

mod support;
mod support_restore;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use support::{compile, criu_rs};
use support_restore::{scratch, wait_pid_gone, Held};

/// Starts `bigmem MIB` (pattern-filled anonymous memory, waits on stdin)
/// and waits for its READY line.
fn start_bigmem(mib: u32) -> Child {
    let mut c = Command::new(compile("bigmem"))
        .arg(mib.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("READY"), "bigmem said {line:?}");
    c
}

/// Kills and reaps a child still running (after a failed assertion).
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs criu-rs with `args` inside script(1), so its stderr is a pty;
/// returns what the pty showed.
fn in_pty(args: &[&str]) -> Output {
    let mut cmd = String::from(env!("CARGO_BIN_EXE_criu-rs"));
    for a in args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("CRIU_RS_PROGRESS_MIN_PAGES", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn captured_stderr_gets_no_bar() {
    let p = Reap(start_bigmem(16));
    let pid = p.0.id() as i32;
    let dir = scratch("progress-captured");
    let out = criu_rs()
        .env("CRIU_RS_PROGRESS_MIN_PAGES", "1")
        .args(["-v0", "dump", "-j", "-R", "-t", &pid.to_string(), "-D"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "dump failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "nothing on a captured stderr at -v0");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn terminal_shows_the_bar_for_dump_and_restore() {
    let mut p = Reap(start_bigmem(16));
    let pid = p.0.id() as i32;
    let dir = scratch("progress-pty");
    let d = dir.to_str().unwrap();
    let out = in_pty(&["-v0", "dump", "-j", "-t", &pid.to_string(), "-D", d]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "dump failed: {shown}");
    assert!(shown.contains("dumping memory"), "no bar in {shown:?}");
    assert!(shown.contains("pages"), "no page count in {shown:?}");
    let _ = p.0.wait();
    wait_pid_gone(pid);

    let pidfile = Path::new(d).with_extension("pid");
    let out = in_pty(&["-v0", "restore", "-j", "-d", "--pidfile", pidfile.to_str().unwrap(), "-D", d]);
    let held = Held::open(pid);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "restore failed: {shown}");
    assert!(held.is_ok(), "restored pid {pid} is not there");
    assert!(shown.contains("restoring memory"), "no bar in {shown:?}");
}
