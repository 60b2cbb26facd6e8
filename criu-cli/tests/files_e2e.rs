//! File kinds end to end: `tests/programs/fdkinds.c` puts known state on
//! its descriptors, is dumped (and dies), restored, and checks itself from
//! inside after SIGUSR1. From outside: the images decode with crit and say
//! what the program holds, the restored fds point at the same kinds of
//! files, restore leaves the images alone.

mod support;
mod support_restore;

use support::{crit_decode, jnum};
use support_restore::*;

/// The `files.img` entries of `type` (crit's JSON).
fn entries_of(images: &std::path::Path, ty: &str) -> Vec<serde_json::Value> {
    let files = crit_decode(&images.join("files.img"));
    files["entries"].as_array().unwrap().iter().filter(|e| e["type"] == ty).cloned().collect()
}

#[test]
fn eventfds_come_back_with_counter_mode_and_flags() {
    let work = scratch("fdkinds-work");
    let images = scratch("fdkinds-images");
    let result = work.join("result");
    let mut p = Started::start("fdkinds", &[&result]);
    let pid = p.pid();
    wait_all_suspended(&[pid]);
    let fds = fd_kinds(pid);
    assert_eq!(fds.iter().filter(|(_, k)| k == "anon_inode:[eventfd]").count(), 4, "{fds:?}");
    dump_ok(pid, &images, &[]);
    p.reap();

    let efds = entries_of(&images, "EVENTFD");
    let mut counters: Vec<u64> = efds.iter().map(|e| jnum(&e["efd"]["counter"])).collect();
    counters.sort();
    assert_eq!(counters, vec![3, 5, (1 << 40) + 7], "one entry per description (the dup shares one): {efds:?}");
    let before = snapshot_dir(&images);

    let held = restore_detached(&images, pid);
    wait_all_suspended(&[pid]);
    assert_eq!(fd_kinds(pid), fds, "fds differ from before the dump");
    held.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&result);
    assert!(held.wait_exit(PATIENCE), "pid {pid} did not exit after its self-check");
    assert_all_ok("restored fdkinds", &report);
    assert_same_dir(&before, &snapshot_dir(&images));
}

#[test]
fn fdkinds_checks_pass_without_checkpoint_and_fail_on_change() {
    let work = scratch("fdkinds-nockpt");
    let result = work.join("result");
    let p = Started::start("fdkinds", &[&result]);
    wait_all_suspended(&[p.pid()]);
    // Disturb one counter from outside (through a copy of its fd 10): the
    // program must notice.
    let pidfd = rustix::process::pidfd_open(rustix::process::Pid::from_raw(p.pid()).unwrap(), rustix::process::PidfdFlags::empty()).unwrap();
    let ours = rustix::process::pidfd_getfd(&pidfd, 10, rustix::process::PidfdGetfdFlags::empty()).unwrap();
    rustix::io::write(&ours, &1u64.to_ne_bytes()).unwrap();
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let report = wait_result(&result);
    assert!(report.contains("FAIL eventfd-counter: read 6"), "{report}");
    assert!(report.ends_with("FAIL 1 check(s)\n"), "{report}");
    for name in ["eventfd-semaphore", "eventfd-big-counter", "eventfd-cloexec", "eventfd-dup-shares"] {
        assert!(report.contains(&format!("ok {name}\n")), "no check {name}:\n{report}");
    }
}
