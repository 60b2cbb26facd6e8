//! Files removed while open that are not open regular files (issue 12,
//! CRIU's zdtm cwd01/02, rmdir_open, deleted_dev, unlink_fifo*, symlink01,
//! fd01, unlink_mmap*, ghost_multi_hole*): `tests/programs/ghosts.c` works
//! in a removed directory (its parent removed too), holds a removed device
//! node, FIFO (with bytes queued) and symbolic link, an O_TMPFILE file, a
//! 2 MiB removed file (over the default `--ghost-limit`) and a removed file
//! only a shared mapping holds. The dump is refused by name without a
//! larger `--ghost-limit`; with it, every one is a ghost image in CRIU's
//! form (crit decodes them), and the restored program finds each file of
//! its kind, with its contents, still removed, nothing left in its
//! directory. Its own `/proc/PID/stat`, open too, is opened again by the
//! restored task (it exists only once the task does).

mod common;

use common::*;

/// Starts ghosts.c; returns it once it waits for SIGUSR1.
fn start(d: &Dirs) -> Program {
    let _ = std::fs::remove_file(&d.result);
    let p = Program::spawn("ghosts", &[&d.work, &d.result]);
    wait_all_suspended(&[p.pid()]);
    p
}

#[test]
fn ghosts_checks_pass_without_checkpoint() {
    let d = Dirs::new("ghosts-live");
    let p = start(&d);
    let held = Held::open(p.pid()).unwrap();
    let report = d.trigger(&held);
    assert_all_ok("ghosts without checkpoint", &report);
    for name in ["cwd-removed", "dev-node", "fifo-data", "symlink", "tmpfile", "big-ghost", "mapped-ghost", "proc-own-stat", "dir-empty"] {
        assert!(report.contains(&format!("ok {name}\n")), "check {name} did not run:\n{report}");
    }
}

#[test]
fn removed_directories_devices_fifos_links_and_mapped_files_come_back_removed() {
    let d = Dirs::new("ghosts");
    let mut p = start(&d);
    let pid = p.pid();

    let out = dump(pid, &d.images, &[]);
    assert!(!out.status.success(), "a 2 MiB ghost was dumped under the default --ghost-limit");
    let err = text(&out.stderr);
    assert!(err.contains("--ghost-limit") && err.contains("1048576"), "{err}");
    wait_state(pid, 'S');

    dump_ok(pid, &d.images, &["--ghost-limit=4M"]);
    p.reap();
    let mut types = Vec::new();
    for e in std::fs::read_dir(&d.images).unwrap() {
        let path = e.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().starts_with("ghost-file-") {
            continue;
        }
        let g = &crit_decode(&path)["entries"][0];
        let ty = jnum(&g["mode"]) as u32 & libc::S_IFMT;
        match ty {
            libc::S_IFLNK => assert_eq!(g["symlnk_target"], "target-of-link", "{g}"),
            libc::S_IFCHR => assert_eq!(jnum(&g["rdev"]), libc::makedev(1, 3), "{g}"),
            _ => {}
        }
        types.push(ty);
    }
    types.sort();
    let mut want = vec![libc::S_IFDIR, libc::S_IFCHR, libc::S_IFIFO, libc::S_IFLNK, libc::S_IFREG, libc::S_IFREG, libc::S_IFREG];
    want.sort();
    assert_eq!(types, want, "one ghost each: the directory (cwd and fd), device, FIFO, link, tmpfile, big and mapped files");
    let before = snapshot(&d.images);

    let held = restore_detached(&d.images, pid);
    let report = d.trigger(&held);
    assert_all_ok("ghosts after restore", &report);
    assert_same_dir(&before, &snapshot(&d.images));
}
