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

mod common;

use common::*;
use std::process::Stdio;

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

#[test]
fn dumped_program_comes_back_and_finds_itself_intact() {
    let wd = scratch("e2e-work");
    let images = scratch("e2e-images");
    // Its own session, as a daemon: the dump takes it without --shell-job.
    let (child, log) = start_restoree(&wd);
    let pid = child.id() as i32;
    let mut child = Proc::from(child);
    let maps_before = maps(pid);
    let fds_before = fd_kinds(pid);

    dump_ok(pid, &images, &[]);
    child.wait();
    wait_pid_gone(pid);
    let images_before = snapshot(&images);

    let mut restore = Proc::from(restore_cmd(&images).stderr(Stdio::piped()).spawn().unwrap());
    wait_until("the restored task to run detached", PATIENCE, || restoree_waits(pid));
    let held = Held::open(pid).expect("the restored task");
    assert_eq!(maps(pid), maps_before, "mappings differ from before the dump");
    assert_eq!(fd_kinds(pid), fds_before, "fds differ from before the dump");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ids: Vec<i32> = stat.rsplit(')').next().unwrap().split_whitespace().skip(2).take(2).map(|w| w.parse().unwrap()).collect();
    assert_eq!(ids, vec![pid, pid], "process group and session");

    held.signal(libc::SIGUSR1).unwrap();
    let status = restore.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut restore.stderr().unwrap(), &mut err).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("OK"), "the program's checks failed:\n{text}\ncriu-rs: {err}");
    assert_eq!(status.code(), Some(0), "criu-rs exits with the task's status: {err}");
    wait_pid_gone(pid);
    assert_same_dir(&images_before, &snapshot(&images));
}
