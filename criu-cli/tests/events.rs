//! Event and anonymous-inode descriptors (issue 13): `tests/programs/evfds.c`
//! sets up epoll sets, timerfds, signalfds, inotify watches, memfds and
//! pidfds, is dumped, killed, restored, and checks itself from the inside
//! (events delivered with the right data, timers firing, signals read,
//! watches seeing writes, memfd contents and seals, a child's exit seen
//! through its pidfd). Also: what is refused (a pidfd of a process outside
//! the tree, by name, the process left running), corrupt images refused
//! with the image and entry named and no process left, `crit` decoding
//! every image, and many descriptors at once (`manyfds.c`).

mod common;

use common::*;
use criu_core::images::{pb, ImageDir, ImageKind};
use std::path::{Path, PathBuf};

/// A test's directories: the program's working dir (inotify watches files
/// there), its result file and the images.
struct Dirs {
    work: PathBuf,
    result: PathBuf,
    images: PathBuf,
}

fn dirs(name: &str) -> Dirs {
    let work = scratch(&format!("{name}-work"));
    Dirs { result: work.with_extension("result"), images: scratch(&format!("{name}-images")), work }
}

/// Starts evfds with `parts` and waits until it waits for its trigger.
fn start(d: &Dirs, parts: &str) -> Program {
    let _ = std::fs::remove_file(&d.result);
    let p = Program::spawn("evfds", &[Path::new(parts), &d.work, &d.result]);
    wait_all_suspended(&[p.pid()]);
    p
}

/// Dumps evfds with `parts`, restores it, triggers its self-check and
/// asserts it passes; returns the images directory for more checks.
fn dump_restore_check(name: &str, parts: &str) -> Dirs {
    let d = dirs(name);
    let mut p = start(&d, parts);
    let pid = p.pid();
    dump_ok(pid, &d.images, &["-j"]);
    p.reap();
    let held = restore_detached(&d.images, pid);
    held.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&d.result);
    assert_all_ok(&format!("evfds {parts} after restore"), &report);
    assert!(held.wait_exit(PATIENCE), "evfds did not exit after its self-check");
    d
}

/// The `file_entry` records of `files.img`.
fn files_img(images: &Path) -> Vec<pb::FileEntry> {
    ImageDir::open_unchecked(images).read_files().unwrap()
}

#[test]
fn evfds_checks_pass_without_checkpoint() {
    let d = dirs("nockpt");
    let mut p = start(&d, "all");
    // SAFETY: kill(2) of our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let st = p.child.wait().unwrap();
    assert_all_ok("evfds without checkpoint", &wait_result(&d.result));
    assert_eq!(st.code(), Some(0));
}

#[test]
fn epoll_sets_come_back_with_their_targets() {
    let d = dump_restore_check("epoll", "epoll");
    let sets: Vec<_> = files_img(&d.images).into_iter().filter_map(|f| f.epfd).collect();
    assert_eq!(sets.len(), 2, "the set and the nested one");
    // The target registered through a closed fd is recorded under the
    // number that now refers to it (evfds dups it to 100).
    assert!(sets.iter().flat_map(|s| &s.tfd).any(|t| t.tfd == Some(100)), "{sets:?}");
}

#[test]
fn timerfds_fire_after_restore() {
    let d = dump_restore_check("timer", "timer");
    let timers: Vec<_> = files_img(&d.images).into_iter().filter_map(|f| f.tfd).collect();
    assert_eq!(timers.len(), 6);
    // The unread periodic timer's periods were counted at the dump.
    assert!(timers.iter().any(|t| t.insec == Some(5_000_000) && t.ticks.unwrap_or(0) >= 8), "{timers:?}");
}

#[test]
fn signalfd_reads_signals_after_restore() {
    dump_restore_check("signal", "signal");
}

#[test]
fn inotify_sees_writes_after_restore() {
    let d = dump_restore_check("inotify", "inotify");
    let ify: Vec<_> = files_img(&d.images).into_iter().filter_map(|f| f.ify).collect();
    let paths: Vec<String> = ify.iter().flat_map(|i| &i.wd).filter_map(|w| w.f_handle.as_ref()?.path.clone()).collect();
    let work = std::fs::canonicalize(&d.work).unwrap();
    assert_eq!(paths.len(), 2, "{ify:?}");
    assert!(paths.iter().all(|p| Path::new(p).starts_with(&work)), "{paths:?}");
}

#[test]
fn memfds_keep_contents_seals_and_mappings() {
    let d = dump_restore_check("memfd", "memfd");
    let inodes: Vec<pb::MemfdInodeEntry> = ImageDir::open_unchecked(&d.images).read_all(ImageKind::MemfdInode, 0).unwrap();
    let mut names: Vec<&str> = inodes.iter().filter_map(|i| i.name.as_deref()).collect();
    names.sort();
    assert_eq!(names, ["ev-memfd", "ev-orphan", "ev-sealed"]);
}

#[test]
fn pidfd_of_a_child_sees_its_exit_after_restore() {
    dump_restore_check("pidfd", "pidfd");
}

#[test]
fn fanotify_marks_see_writes_after_restore() {
    let d = dump_restore_check("fanotify", "fanotify");
    let ffy: Vec<_> = files_img(&d.images).into_iter().filter_map(|f| f.ffy).collect();
    assert_eq!(ffy.len(), 1);
    assert_eq!(ffy[0].mark.len(), 2, "an inode mark and a mount mark: {ffy:?}");
}

#[test]
fn every_kind_at_once_and_crit_decodes_the_images() {
    let d = dump_restore_check("all", "all");
    for e in std::fs::read_dir(&d.images).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".img") && !name.starts_with("pages-") {
            crit_decode(&e.path());
        }
    }
    let files = crit_decode(&d.images.join("files.img"));
    let types: Vec<String> = files["entries"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect();
    for t in ["EVENTPOLL", "TIMERFD", "SIGNALFD", "INOTIFY", "FANOTIFY", "MEMFD"] {
        assert!(types.iter().any(|x| x == t), "no {t} entry in {types:?}");
    }
}

#[test]
fn pidfd_of_a_process_outside_the_tree_is_refused() {
    let d = dirs("pidfd-outside");
    let mut p = start(&d, "pidfd-outside");
    let out = dump(p.pid(), &d.images, &["-j"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "dump should fail");
    assert!(err.contains("pidfd") && err.contains("not in the dumped tree"), "{err}");
    assert!(!d.images.join("inventory.img").exists());
    // Still running and unharmed: its (empty) self-check passes.
    // SAFETY: kill(2) of our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    assert_eq!(p.child.wait().unwrap().code(), Some(0));
    assert_all_ok("evfds after the refused dump", &wait_result(&d.result));
}

/// Rewrites `files.img` in `images` with `edit` applied to its entries.
fn edit_files(images: &Path, edit: impl FnOnce(&mut Vec<pb::FileEntry>)) {
    let dir = ImageDir::open_unchecked(images);
    let mut files = dir.read_files().unwrap();
    edit(&mut files);
    dir.write_all(ImageKind::Files, 0, &files).unwrap();
}

/// Restores the corrupt `images` of evfds `pid`: it must fail naming
/// `files.img` and `want`, leave no process, and not touch the images.
fn assert_refused(images: &Path, pid: i32, want: &[&str]) {
    let before = snapshot(images);
    let out = restore(images, &["-d"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "restore of corrupt images succeeded");
    assert!(err.contains("files.img"), "{err}");
    for w in want {
        assert!(err.contains(w), "no {w:?} in: {err}");
    }
    wait_pid_gone(pid);
    assert_same_dir(&before, &snapshot(images));
}

#[test]
fn corrupt_event_entries_are_refused() {
    let d = dirs("corrupt");
    let mut p = start(&d, "epoll,timer");
    let pid = p.pid();
    dump_ok(pid, &d.images, &["-j"]);
    p.reap();
    let pristine = scratch("corrupt-pristine");
    for e in std::fs::read_dir(&d.images).unwrap().flatten() {
        std::fs::copy(e.path(), pristine.join(e.file_name())).unwrap();
    }
    let reset = || {
        for e in std::fs::read_dir(&pristine).unwrap().flatten() {
            std::fs::copy(e.path(), d.images.join(e.file_name())).unwrap();
        }
    };
    // An epoll target that is not in the fd table.
    edit_files(&d.images, |files| {
        let t = files.iter_mut().find_map(|f| f.epfd.as_mut()).unwrap();
        t.tfd[0].tfd = Some(999);
    });
    assert_refused(&d.images, pid, &["epoll", "999"]);
    // A timerfd on a clock that does not exist.
    reset();
    edit_files(&d.images, |files| {
        files.iter_mut().find_map(|f| f.tfd.as_mut()).unwrap().clockid = Some(99);
    });
    assert_refused(&d.images, pid, &["timerfd", "clock 99"]);
    // An EVENTPOLL entry without its eventpoll_file_entry.
    reset();
    edit_files(&d.images, |files| {
        files.iter_mut().find(|f| f.epfd.is_some()).unwrap().epfd = None;
    });
    assert_refused(&d.images, pid, &["epfd"]);
}

#[test]
fn many_descriptors_come_back() {
    let d = dirs("manyfds");
    let _ = std::fs::remove_file(&d.result);
    let mut p = Program::spawn("manyfds", &[Path::new("10000"), &d.result]);
    let pid = p.pid();
    assert!(p.int("fds") >= 10_000, "{:?}", p.info);
    wait_all_suspended(&[pid]);
    dump_ok(pid, &d.images, &["-j"]);
    p.reap();
    let held = restore_detached(&d.images, pid);
    held.signal(libc::SIGUSR1).unwrap();
    assert_all_ok("manyfds after restore", &wait_result(&d.result));
    assert!(held.wait_exit(PATIENCE));
}
