//! Terminals (issue 13): `tests/programs/ptypair.c` holds a pty pair inside
//! the tree (termios, window size, packet and exclusive modes, bytes queued
//! both ways, a child whose controlling terminal is the slave, a grandchild
//! whose group is the foreground one), is dumped, killed, restored with
//! `--verify`, and checks itself from the inside.
//! Also: a dump that fails after the queues were read puts them back (the
//! program still passes its checks, never restored), and `crit` decodes the
//! images. (A slave whose master is outside the tree is refused by name
//! without `--shell-job`: dump_errors.rs `terminal_needs_shell_job`.)

mod common;

use common::*;
use criu_core::images::{pb, ImageDir, ImageKind};
use std::path::PathBuf;

/// Starts ptypair and waits until both tasks wait for their trigger.
fn start(name: &str) -> (Program, PathBuf, PathBuf) {
    let work = scratch(name);
    let result = work.join("result");
    let images = work.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let p = Program::spawn("ptypair", &[&result]);
    let child = p.int("child");
    wait_all_suspended(&[p.pid(), child]);
    (p, result, images)
}

#[test]
fn pty_pair_comes_back_with_its_state_queues_and_controlling_terminal() {
    let (mut p, result, images) = start("pair");
    let pid = p.pid();
    dump_ok(pid, &images, &[]);
    p.reap();
    let dir = ImageDir::open_unchecked(&images);
    let infos: Vec<pb::TtyInfoEntry> = dir.read_all(ImageKind::TtyInfo, 0).unwrap();
    let master = infos.iter().find(|i| i.id.unwrap_or_default() & 1 == 1).expect("the master's tty_info_entry");
    assert_eq!((master.packet_mode, master.exclusive), (Some(true), Some(true)));
    assert_eq!(master.sid, Some(p.int("child") as u32), "the pair is the child's controlling terminal");
    let data: Vec<pb::TtyDataEntry> = dir.read_all(ImageKind::TtyData, 0).unwrap();
    let queued = |id: u32| data.iter().find(|d| d.tty_id == Some(id)).and_then(|d| d.data.clone()).unwrap_or_default();
    let index = master.id.unwrap() & !1;
    assert_eq!(queued(index | 1), b"out1\nout2", "read at the master");
    assert_eq!(queued(index), b"line1\nline2@partial", "read at the slave");
    for name in ["tty-info.img", "tty-data.img", "files.img"] {
        crit_decode(&images.join(name));
    }
    let held = restore_detached(&images, pid);
    held.signal(libc::SIGUSR1).unwrap();
    assert_all_ok("ptypair after restore", &wait_result(&result));
    assert!(held.wait_exit(PATIENCE), "ptypair did not exit after its self-check");
}

#[test]
fn failed_dump_puts_the_queued_bytes_back() {
    let (mut p, result, images) = start("failed");
    dump_failing_at(p.pid(), &images, "before-write", &[]);
    // SAFETY: kill(2) of our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let st = p.child.wait().unwrap();
    assert_all_ok("ptypair after a failed dump", &wait_result(&result));
    assert_eq!(st.code(), Some(0));
}
