//! The progress bar: drawn on a terminal (a pty made by script(1)) for the
//! memory phases of dump and restore, and never when stderr is captured.

mod common;

use common::*;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};


/// `bigmem MIB` (pattern-filled anonymous memory; one byte on stdin makes
/// it check the pattern and print OK) in a session of its own, with stdin a
/// FIFO the test holds open read-write (so it never sees EOF, before or
/// after the restore) and stdout a file (no reader to lose on restore).
struct Bigmem {
    child: Proc,
    fifo: std::fs::File,
    out: std::path::PathBuf,
}

fn start_bigmem(mib: u32, dir: &Path) -> Bigmem {
    let fifo_path = dir.join("in.fifo");
    let out = dir.join("out.txt");
    let c = std::ffi::CString::new(fifo_path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let fifo = std::fs::OpenOptions::new().read(true).write(true).open(&fifo_path).unwrap();
    let mut cmd = Command::new(compile("bigmem"));
    cmd.arg(mib.to_string())
        .stdin(std::fs::File::open(&fifo_path).unwrap())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    let child = Proc::from(in_own_session(&mut cmd).spawn().unwrap());
    wait_until("bigmem to be READY", PATIENCE, || std::fs::read_to_string(&out).unwrap().starts_with("READY"));
    Bigmem { child, fifo, out }
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

#[test]
fn captured_stderr_gets_no_bar() {
    let dir = scratch("progress-captured");
    let work = scratch("progress-captured-work");
    let mut b = start_bigmem(16, &work);
    let pid = b.child.pid() as i32;
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
    let dir = scratch("progress-pty");
    let work = scratch("progress-pty-work");
    let mut b = start_bigmem(16, &work);
    let pid = b.child.pid() as i32;
    let d = dir.to_str().unwrap();
    let out = in_pty(&["-v0", "dump", "-j", "-t", &pid.to_string(), "-D", d]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "dump failed: {shown}");
    assert!(shown.contains("dumping memory"), "no bar in {shown:?}");
    assert!(shown.contains("pages"), "no page count in {shown:?}");
    b.child.wait();
    wait_pid_gone(pid);

    let pidfile = Path::new(d).with_extension("pid");
    let out = in_pty(&["-v0", "restore", "--verify", "-j", "-d", "--pidfile", pidfile.to_str().unwrap(), "-D", d]);
    let held = Held::open(pid);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "restore failed: {shown}");
    let held = held.unwrap_or_else(|e| panic!("restored pid {pid} is not there: {e}"));
    assert!(shown.contains("restoring memory"), "no bar in {shown:?}");
    // The restored process checks its memory when given a byte, and exits.
    b.fifo.write_all(b"x").unwrap();
    assert!(held.wait_exit(PATIENCE), "restored pid {pid} did not finish");
    let said = std::fs::read_to_string(&b.out).unwrap();
    assert!(said.ends_with("OK\n"), "restored bigmem said {said:?}");
}
