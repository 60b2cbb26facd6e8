//! Lazy restore end to end (issue 6): a real program (tests/programs/lazymem.c)
//! is dumped, dies, and comes back with `criu-rs restore -d --lazy-pages`
//! while `criu-rs lazy-pages` serves its memory; it then checks itself.
//!
//! Local images get their private anonymous entries flagged `LAZY | PRESENT`
//! after a normal dump (what a local lazy dump would write); the post-copy
//! test uses `dump --lazy-pages` (no page data in the images at all).

mod lazy_util;
mod support;
mod support_restore;

use criu_core::images::consts::{pagemap_flags, vma_status};
use criu_core::images::pb::{MmEntry, PagemapEntry, PagemapHead};
use criu_core::images::{ImageDir, ImageKind};
use lazy_util::{criu_rs, wait_for, Proc};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support_restore::*;

/// Flags every pagemap entry of `pid` lying in private anonymous memory
/// (not vDSO/vvar/vsyscall) `LAZY`, keeping `PRESENT`: the daemon serves
/// them from `pages-N.img`. Returns the number of lazy pages.
fn mark_lazy(dir: &Path, pid: i32) -> u64 {
    let images = ImageDir::open(dir).unwrap();
    let mm: MmEntry = images.read_one(ImageKind::Mm, pid as u64).unwrap();
    let mut r = images.open_image(ImageKind::Pagemap, pid as u64).unwrap();
    let head: PagemapHead = r.read_next().unwrap();
    let mut entries: Vec<PagemapEntry> = r.read_all().unwrap();
    drop(r);
    let special = vma_status::AREA_VDSO | vma_status::AREA_VVAR | vma_status::AREA_VSYSCALL;
    let mut lazy = 0;
    for e in &mut entries {
        let start = e.vaddr.unwrap();
        let end = start + e.nr_pages.unwrap() * 4096;
        let anon = mm.vmas.iter().filter(|v| v.start.unwrap() < end && v.end.unwrap() > start).all(|v| {
            let st = v.status.unwrap_or_default();
            st & vma_status::ANON_PRIVATE != 0 && st & special == 0
        });
        if anon {
            e.flags = Some(e.flags.unwrap_or(pagemap_flags::PRESENT) | pagemap_flags::LAZY);
            lazy += e.nr_pages.unwrap();
        }
    }
    let mut w = images.create_image(ImageKind::Pagemap, pid as u64).unwrap();
    w.write_entry(&head).unwrap();
    for e in &entries {
        w.write_entry(e).unwrap();
    }
    w.finish().unwrap();
    lazy
}

/// Working directory, images directory and result file of one test.
struct Dirs {
    work: PathBuf,
    images: PathBuf,
    result: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Dirs {
        let work = scratch(&format!("lazy-{name}-work"));
        let images = scratch(&format!("lazy-{name}-images"));
        Dirs { result: work.join("result"), work, images }
    }

    fn socket(&self) -> PathBuf {
        self.work.join("lazy.sock")
    }

    fn result_of(&self, suffix: &str) -> PathBuf {
        self.result.with_extension(suffix)
    }
}

/// Starts lazymem with `mib` MiB in `mode`, dumps it (killing it) and
/// flags its anonymous memory lazy. Returns its pid and the lazy page count.
fn dump_lazymem(d: &Dirs, mib: u32, mode: &str) -> (i32, u64) {
    let mut p = Started::start("lazymem", &[&d.work, &d.result, Path::new(&mib.to_string()), Path::new(mode)]);
    let pid = p.pid();
    wait_all_suspended(&[pid]);
    dump_ok(pid, &d.images, &[]);
    p.reap();
    let lazy = mark_lazy(&d.images, pid);
    assert!(lazy >= u64::from(mib) * 256, "only {lazy} lazy pages");
    (pid, lazy)
}

/// `criu-rs lazy-pages -D IMAGES --address SOCK EXTRA...`, once its socket is there.
fn daemon(d: &Dirs, extra: &[&str]) -> Proc {
    let sock = d.socket();
    let _ = std::fs::remove_file(&sock);
    let mut args = vec!["lazy-pages", "-D", d.images.to_str().unwrap(), "--address", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut p = criu_rs(&args);
    wait_for(&sock, &mut p);
    p
}

/// `criu-rs restore -D IMAGES -d --lazy-pages --address SOCK`, asserted to
/// give back `pid`.
fn restore_lazy(d: &Dirs, pid: i32) -> Held {
    let out = restore(&d.images, &["-d", "--lazy-pages", "--address", d.socket().to_str().unwrap()]);
    let held = Held::open(pid);
    assert!(out.status.success(), "lazy restore failed: {}", String::from_utf8_lossy(&out.stderr));
    held.unwrap_or_else(|e| panic!("restored pid {pid} is not there: {e}"))
}

/// Waits for the daemon to exit; asserts success and returns its summary
/// line ("lazy-pages: N task(s), ...").
fn daemon_done(p: Proc) -> String {
    let (st, out, err) = p.finish();
    assert!(st.success(), "lazy-pages daemon failed ({st}):\n{out}\n{err}");
    out.lines().chain(err.lines()).find(|l| l.starts_with("lazy-pages: ")).unwrap_or_else(|| panic!("no summary:\n{out}\n{err}")).to_string()
}

/// The number before `what` in a daemon summary.
fn count(summary: &str, what: &str) -> u64 {
    let at = summary.find(what).unwrap_or_else(|| panic!("no {what:?} in {summary}"));
    summary[..at].trim_end().rsplit([' ', '(']).next().unwrap().parse().unwrap()
}

/// Signals `held` and returns its report once written.
fn trigger(d: &Dirs, held: &Held, result: &Path) -> String {
    let _ = d;
    held.signal(libc::SIGUSR1).unwrap();
    wait_result(result)
}

#[test]
fn a_256_mib_process_restored_lazily_checks_every_byte() {
    let d = Dirs::new("256m");
    let (pid, lazy) = dump_lazymem(&d, 256, "check");
    let before = snapshot_dir(&d.images);
    let dm = daemon(&d, &[]);
    let held = restore_lazy(&d, pid);
    let report = trigger(&d, &held, &d.result);
    assert_all_ok("256 MiB lazily restored", &report);
    assert!(held.wait_exit(PATIENCE), "pid {pid} did not exit after its check");
    let sum = daemon_done(dm);
    assert_eq!(count(&sum, "task(s)"), 1, "{sum}");
    assert_eq!(count(&sum, "pages copied") + count(&sum, "pages in background"), lazy, "every lazy page served once: {sum}");
    assert_eq!(count(&sum, "killed"), 0, "{sum}");
    assert_same_dir(&before, &snapshot_dir(&d.images));
}
