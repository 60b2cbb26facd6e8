//! Dump → let it die → restore, with the program checking itself from
//! inside (tests/programs/restoree.c): memory of every kind (anonymous with
//! MADV_DONTNEED holes, private file with copied-on-write and untouched
//! pages, shared file, shared anonymous, read-only, PROT_NONE, grows-down),
//! a vDSO the program moved, r12-r15 and ymm0-3 held across the checkpoint,
//! signal handlers, mask, a queued RT signal with its value, sigaltstack,
//! an interval timer and a POSIX timer, files with offsets, a dup'd fd
//! sharing its offset, O_APPEND, close-on-exec, an unlinked file, cwd and
//! umask. From outside: same pid, same mappings and fds as before the dump,
//! images untouched, criu-rs exits with the task's status.

mod restore_support;
#[path = "support/mod.rs"]
mod support;

use restore_support::{alive, snapshot, wait_gone, KillOnDrop};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms for up to 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `/proc/PID/maps` lines; shared anonymous memory without its inode
/// number (a restored object is a new one).
fn maps(pid: i32) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    text.lines()
        .map(|l| {
            if !l.ends_with("/dev/zero (deleted)") {
                return l.to_string();
            }
            let cols: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {} /dev/zero (deleted)", cols[0], cols[1], cols[2], cols[3])
        })
        .collect()
}

/// `(fd, link target)` of every fd; pipes without their inode number (a
/// restored pipe is a new pipe).
fn fds(pid: i32) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let target = std::fs::read_link(e.path()).unwrap().to_string_lossy().into_owned();
            let target = if target.starts_with("pipe:") { "pipe".to_string() } else { target };
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    v.sort();
    v
}

fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

trait SetsidExt {
    fn pre_exec_setsid(&mut self) -> &mut Self;
}

impl SetsidExt for Command {
    /// Runs `setsid()` in the child before exec.
    fn pre_exec_setsid(&mut self) -> &mut Self {
        // SAFETY: setsid(2) is async-signal-safe and touches no Rust state.
        unsafe {
            self.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        }
    }
}

fn prepare_workdir(wd: &Path) {
    let noise: Vec<u8> = (0..16384u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(wd.join("private.bin"), noise).unwrap();
    std::fs::write(wd.join("shared.bin"), vec![0u8; 8192]).unwrap();
    std::fs::write(wd.join("data.txt"), b"0123456789abcdef").unwrap();
    std::fs::write(wd.join("append.txt"), b"app").unwrap();
}

#[test]
fn dumped_program_comes_back_and_finds_itself_intact() {
    let exe = support::compile("restoree");
    let wd = restore_support::scratch("e2e-work");
    let images = restore_support::scratch("e2e-images");
    prepare_workdir(&wd);
    let log = wd.join("log.txt");
    let mut child = Command::new(&exe)
        .arg(&wd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(wd.join("err.txt")).unwrap())
        // Its own session, as a daemon: the dump takes it without --shell-job.
        .pre_exec_setsid()
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let _kill = KillOnDrop(pid);
    wait_for("READY", || std::fs::read_to_string(&log).unwrap().contains("READY"));
    wait_for("the program to wait", || status_field(pid, "State:").is_some_and(|s| s.starts_with('S')));
    let maps_before = maps(pid);
    let fds_before = fds(pid);

    let out = support::dump(pid, &images, &[]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    child.wait().unwrap();
    assert!(wait_gone(pid), "the dumped process is still there");
    let images_before = snapshot(&images);

    let mut restore = Command::new(env!("CARGO_BIN_EXE_criu-rs"))
        .args(["restore", "-D"])
        .arg(&images)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the restored task to run detached", || {
        status_field(pid, "TracerPid:").as_deref() == Some("0")
            && status_field(pid, "State:").is_some_and(|s| s.starts_with('S'))
    });
    assert_eq!(maps(pid), maps_before, "mappings differ from before the dump");
    assert_eq!(fds(pid), fds_before, "fds differ from before the dump");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ids: Vec<i32> = stat.rsplit(')').next().unwrap().split_whitespace().skip(2).take(2).map(|w| w.parse().unwrap()).collect();
    assert_eq!(ids, vec![pid, pid], "process group and session");

    // SAFETY: kill(2) of the task this test restored.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = restore.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "criu-rs restore did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(restore.stderr.as_mut().unwrap(), &mut err).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("OK"), "the program's checks failed:\n{text}\ncriu-rs: {err}");
    assert_eq!(status.code(), Some(0), "criu-rs exits with the task's status: {err}");
    assert!(!alive(pid) || wait_gone(pid));
    assert_eq!(images_before, snapshot(&images), "restore changed the images");
}
