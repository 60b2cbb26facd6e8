//! File locks across a checkpoint (issue 11): `tests/programs/locks.c`
//! holds POSIX, flock and OFD locks, one flock on a description its child
//! shares, and the child a POSIX lock of its own. Without `--file-locks`
//! the dump is refused naming a lock and the program runs on with its
//! locks; with it, the images carry CRIU's `filelocks.img`, a restore
//! without `--file-locks` is refused, and one with it gives every lock
//! back to its task, which checks from inside (listed in fdinfo with its
//! owner and range, and still keeping a new description out).

mod common;

use common::*;

/// Starts locks.c; returns it once it and its child wait.
fn start(d: &Dirs, extra: &[&str]) -> Program {
    let _ = std::fs::remove_file(&d.result);
    let mut args: Vec<&std::path::Path> = vec![&d.work, &d.result];
    args.extend(extra.iter().map(std::path::Path::new));
    let p = Program::spawn("locks", &args);
    let child = p.int("child");
    wait_all_suspended(&[p.pid()]);
    wait_until("the child blocked in read()", PATIENCE, || blocked_in(child, child) == Some(libc::SYS_read as u64));
    p
}

#[test]
fn locks_checks_pass_without_checkpoint() {
    let d = Dirs::new("locks-live");
    let p = start(&d, &[]);
    let held = Held::open(p.pid()).unwrap();
    let report = d.trigger(&held);
    assert_all_ok("locks without checkpoint", &report);
    for name in ["posix-write-holds", "posix-read-holds", "flock-holds", "ofd-holds", "shared-holds", "child-posix"] {
        assert!(report.contains(&format!("ok {name}\n")), "check {name} did not run:\n{report}");
    }
}

#[test]
fn held_locks_are_refused_without_file_locks_and_restored_with_it() {
    let d = Dirs::new("locks");
    let mut p = start(&d, &[]);
    let pid = p.pid();

    let out = dump(pid, &d.images, &[]);
    assert!(!out.status.success(), "a dump of held locks without --file-locks succeeded");
    let err = text(&out.stderr);
    assert!(err.contains("file lock") && err.contains("--file-locks"), "{err}");
    // Left running: back in its sleep (it may still be restarting the
    // call the freeze interrupted, state R, for a moment).
    wait_state(pid, 'S');

    dump_ok(pid, &d.images, &["--file-locks"]);
    p.reap();
    let locks = crit_decode(&d.images.join("filelocks.img"));
    let entries = locks["entries"].as_array().unwrap();
    // POSIX 0+100 and 200..EOF, flock EX, OFD 10+20, the shared flock SH, the child's POSIX 5+5.
    assert_eq!(entries.len(), 6, "{entries:?}");
    let before = snapshot(&d.images);

    let out = restore(&d.images, &[]);
    assert!(!out.status.success(), "restore of locks without --file-locks succeeded");
    assert!(text(&out.stderr).contains("--file-locks"), "{}", text(&out.stderr));
    assert_eq!(proc_state(pid), None, "the refused restore left pid {pid} behind");

    let held = restore_detached_with(&d.images, pid, &["--file-locks"]);
    let report = d.trigger(&held);
    assert_all_ok("restored locks", &report);
    assert_same_dir(&before, &snapshot(&d.images));
}

/// A POSIX lock on a file the task also maps shared cannot be kept (criu-rs
/// closes its own fd of the mapped file in the task after the locks are
/// taken, which drops them): the restore refuses it by name.
#[test]
fn posix_lock_on_a_shared_mapped_file_is_refused_at_restore() {
    let d = Dirs::new("locks-mapped");
    let mut p = start(&d, &["mapped"]);
    let pid = p.pid();
    dump_ok(pid, &d.images, &["--file-locks"]);
    p.reap();
    let out = restore(&d.images, &["--file-locks"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "restore succeeded");
    assert!(err.contains("POSIX WRITE 0+100 on fd 10") && err.contains("also maps or runs") && err.contains("/posix"), "{err}");
    assert_eq!(proc_state(pid), None, "the refused restore left pid {pid} behind");
}
