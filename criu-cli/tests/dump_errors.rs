//! `criu-rs dump` refuses what it cannot dump with a clear message and a
//! non-zero exit code, and leaves such processes alone.

mod support;
use std::process::{Command, Stdio};
use support::*;

fn assert_fails(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dump should fail ({needle})");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn missing_pid() {
    // A pid that just went away (reaped child).
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    let dir = scratch_dir("missing-pid");
    assert_fails(&dump(pid, &dir, &["-j"]), &format!("no process with pid {pid}"));
    assert_fails(&dump(0, &dir, &["-j"]), "no process with pid 0");
}

#[test]
fn kernel_thread() {
    let dir = scratch_dir("kthread");
    assert_fails(&dump(2, &dir, &["-j"]), "kernel thread");
}

#[test]
fn own_process() {
    let dir = scratch_dir("own");
    // `exec` keeps the shell's pid, so $$ is criu-rs's own pid.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {} dump -j -t $$ -D {}", env!("CARGO_BIN_EXE_criu-rs"), dir.display()))
        .output()
        .unwrap();
    assert_fails(&out, "criu-rs itself");
}

#[test]
fn zombie() {
    let c = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
    let pid = c.id() as i32;
    let start = std::time::Instant::now();
    while proc_state(pid) != Some('Z') {
        assert!(start.elapsed().as_secs() < 10, "child never became a zombie");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let dir = scratch_dir("zombie");
    assert_fails(&dump(pid, &dir, &["-j"]), "zombie");
    let mut c = c;
    c.wait().unwrap();
}

#[test]
fn stopped_process() {
    let exe = compile("dumpee");
    let tmp = scratch_dir("stopped-files");
    let mut p = Program::start(&exe, &["1", "0", tmp.to_str().unwrap()]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.pid(), libc::SIGSTOP) };
    while p.state() != Some('T') {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let dir = scratch_dir("stopped");
    assert_fails(&dump(p.pid(), &dir, &["-j"]), "stopped");
    assert_eq!(p.state(), Some('T'));
    // SAFETY: as above.
    unsafe { libc::kill(p.pid(), libc::SIGCONT) };
    assert_eq!(p.finish().trim(), "OK");
}

#[test]
fn already_traced_process() {
    let exe = compile("dumpee");
    let tmp = scratch_dir("traced-files");
    let mut p = Program::start(&exe, &["1", "0", tmp.to_str().unwrap()]);
    let pid = p.pid();
    // SAFETY: PTRACE_SEIZE of our own child, no data pointers.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    assert_eq!(r, 0, "seize: {}", std::io::Error::last_os_error());
    let dir = scratch_dir("traced");
    let out = dump(pid, &dir, &["-j"]);
    // SAFETY: stopping and detaching the tracee seized above, from the same
    // thread; waitpid writes one int.
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0);
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::__WALL);
        assert_eq!(libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0), 0);
    }
    assert_fails(&out, "already traced");
    assert_eq!(p.finish().trim(), "OK");
}
