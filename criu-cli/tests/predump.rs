//! Pre-dumps and incremental dumps (`pre-dump`, `--prev-images-dir`,
//! `--track-mem`): dirty pages tracked with userfaultfd write-protection
//! and `PAGEMAP_SCAN` (this kernel has no soft-dirty). A program changes its
//! memory between dumps in every way that matters (rewrites, pages dropped,
//! zeros written, an area unmapped and mapped again, a new area, a page
//! behind mprotect) and checks all of it from inside after the restore.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `criu-rs pre-dump -t PID -D DIR EXTRA...`, asserted to succeed.
fn pre_dump(pid: i32, dir: &Path, extra: &[&str]) {
    let out = criu_rs().arg("pre-dump").arg("-t").arg(pid.to_string()).arg("-D").arg(dir).args(extra).output().unwrap();
    assert!(out.status.success(), "pre-dump of {pid} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends SIGUSR1 (one round of changes) and waits until the program says it is done.
fn round(p: &Program, result: &Path, k: u32) {
    // SAFETY: kill on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let file = PathBuf::from(format!("{}.round", result.display()));
    let t = Instant::now();
    while std::fs::read_to_string(&file).ok().and_then(|s| s.parse::<u32>().ok()) != Some(k) {
        assert!(t.elapsed() < PATIENCE, "round {k} never finished");
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_all_suspended(&[p.pid()]);
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).len()
}

/// (pages present in the pagemap, pages left in the parent) of `pagemap-PID.img`.
fn pagemap_counts(dir: &Path, pid: i32) -> (u64, u64) {
    let v = crit_decode(&dir.join(format!("pagemap-{pid}.img")));
    let (mut present, mut parent) = (0, 0);
    for e in v["entries"].as_array().unwrap().iter().skip(1) {
        let n = jnum(&e["nr_pages"]);
        if e.get("in_parent").and_then(|b| b.as_bool()) == Some(true) {
            parent += n;
        } else {
            present += n;
        }
    }
    (present, parent)
}

/// The tracker pid a `dirty-track` record names.
fn tracker_of(dir: &Path) -> i32 {
    let text = std::fs::read_to_string(dir.join("dirty-track")).expect("no dirty-track record");
    let line = text.lines().find(|l| l.starts_with("tracker ")).expect("no tracker line");
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Waits until `pid` is gone or is no longer a dirty tracker.
fn wait_tracker_gone(pid: i32) {
    let t = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "criu-rs-track") {
        assert!(t.elapsed() < PATIENCE, "tracker {pid} still runs");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn crit_all(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "img") && !p.file_name().unwrap().to_string_lossy().starts_with("pages-") {
            crit_decode(&p);
        }
    }
}

/// A scratch directory with three empty image directories in it, and
/// `dirtier` started on `mib` MiB with its result file there, waiting.
fn start_dirtier(name: &str, dirs: [&str; 3], mib: &str) -> (PathBuf, [PathBuf; 3], PathBuf, Program) {
    let base = scratch(name);
    let dirs = dirs.map(|d| base.join(d));
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let result = base.join("result");
    // Both tests run two rounds before the check.
    let p = Program::spawn("dirtier", &[&result, Path::new(mib), Path::new("2")]);
    wait_all_suspended(&[p.pid()]);
    (base, dirs, result, p)
}

#[test]
fn pre_dumps_then_an_incremental_dump_restore_everything() {
    let (base, [d1, d2, d3], result, mut p) = start_dirtier("predump-chain", ["pre1", "pre2", "final"], "64");
    let pid = p.pid();

    pre_dump(pid, &d1, &[]);
    wait_all_suspended(&[pid]);
    assert!(!d1.join("inventory.img").exists(), "a pre-dump is not a complete dump");
    let full = size(&d1.join("pages-1.img"));
    assert!(full >= 64 << 20, "the first pre-dump holds all memory ({full} bytes)");
    let t1 = tracker_of(&d1);

    round(&p, &result, 1);
    pre_dump(pid, &d2, &["--prev-images-dir", "../pre1"]);
    assert_eq!(std::fs::read_link(d2.join("parent")).unwrap(), Path::new("../pre1"));
    wait_tracker_gone(t1);
    let t2 = tracker_of(&d2);
    let (present, parent) = pagemap_counts(&d2, pid);
    assert!(parent > 8000, "most of the 16384 pages are left in the parent ({parent})");
    assert!(present < 8000, "only what round 1 changed is dumped again ({present} pages)");
    assert!(size(&d2.join("pages-1.img")) < full / 2);

    round(&p, &result, 2);
    dump_ok(pid, &d3, &["-j", "--prev-images-dir", "../pre2", "--track-mem"]);
    p.reap();
    // The dumped process is gone: so is the tracker that held its descriptor.
    wait_tracker_gone(t2);
    let (present, parent) = pagemap_counts(&d3, pid);
    assert!(parent > 8000 && present < 8000, "final dump: {present} pages dumped, {parent} left in parents");
    for d in [&d1, &d2, &d3] {
        crit_all(d);
    }

    let snap = || [&d1, &d2, &d3].map(|d| snapshot(d));
    let before = snap();
    let held = restore_detached(&d3, pid);
    held.signal(libc::SIGUSR2).unwrap();
    assert_all_ok("restored from a chain of three dumps", &wait_result(&result));
    assert!(held.wait_exit(PATIENCE), "the program did not exit");
    drop(held);
    wait_pid_gone(pid);
    let _ = std::fs::remove_file(&result);
    for (b, a) in before.iter().zip(snap().iter()) {
        assert_same_dir(b, a);
    }

    // A missing link in the chain: a clear error, nothing left behind.
    std::fs::rename(&d2, base.join("moved")).unwrap();
    let out = restore(&d3, &["-d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restore without its parent images must fail");
    assert!(err.contains("parent"), "error should name the parent: {err}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a process was left behind");
}

#[test]
fn a_failed_incremental_dump_never_leaves_stale_tracking() {
    let (_, [d1, d2, d3], result, mut p) = start_dirtier("predump-failed", ["pre1", "failed", "final"], "16");
    let pid = p.pid();
    pre_dump(pid, &d1, &[]);
    let t1 = tracker_of(&d1);
    round(&p, &result, 1);
    // Fails after the scan re-protected what round 1 wrote.
    dump_failing_at(pid, &d2, "mid-memory", &["-j", "--prev-images-dir", "../pre1"]);
    wait_all_suspended(&[pid]);
    // That tracking is spent: its tracker is gone, so the next dump against
    // the same parent copies every page rather than trusting it.
    wait_tracker_gone(t1);
    round(&p, &result, 2);
    dump_ok(pid, &d3, &["-j", "--prev-images-dir", "../pre1"]);
    p.reap();
    let (present, parent) = pagemap_counts(&d3, pid);
    assert_eq!(parent, 0, "no page may be left to a parent whose tracking was spent");
    assert!(present > 2000, "{present} pages dumped");
    let held = restore_detached(&d3, pid);
    held.signal(libc::SIGUSR2).unwrap();
    assert_all_ok("restored after a failed incremental dump", &wait_result(&result));
}
