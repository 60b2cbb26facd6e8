//! Lazy restore end to end (issue 6): a real program (tests/programs/lazymem.c)
//! is dumped, dies, and comes back with `criu-rs restore -d --lazy-pages`
//! while `criu-rs lazy-pages` serves its memory; it then checks itself.
//!
//! A plain dump flags its private anonymous memory `LAZY | PRESENT`, as
//! CRIU's do, so its images restore lazily when asked (and eagerly when
//! not); the post-copy test uses `dump --lazy-pages` (no page data in the
//! images at all).

mod common;

use common::*;

use criu_core::images::consts::pagemap_flags;
use criu_core::images::pb::{PagemapEntry, PagemapHead};
use criu_core::images::{ImageDir, ImageKind};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pages of `pid`'s dump flagged `LAZY` (all with their data:
/// `PRESENT`), and all its pages.
fn lazy_pages(dir: &Path, pid: i32) -> (u64, u64) {
    let images = ImageDir::open(dir).unwrap();
    let mm = images.read_mm(pid as u64).unwrap();
    let (_, entries) = images.read_pagemap(pid as u64, &mm).unwrap();
    let flags = |e: &PagemapEntry| e.flags.unwrap_or(pagemap_flags::PRESENT);
    assert!(entries.iter().all(|e| flags(e) & pagemap_flags::PRESENT != 0), "a plain dump has every page's data");
    let lazy = entries.iter().filter(|e| flags(e) & pagemap_flags::LAZY != 0).map(|e| e.page_count()).sum();
    (lazy, entries.iter().map(|e| e.page_count()).sum())
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

/// Starts lazymem with `mib` MiB in `mode` and dumps it (killing it): a
/// plain dump, which flags its anonymous memory lazy. Returns its pid and
/// the lazy page count.
fn dump_lazymem(d: &Dirs, mib: u32, mode: &str) -> (i32, u64) {
    let mut p = Program::spawn("lazymem", &[&d.work, &d.result, Path::new(&mib.to_string()), Path::new(mode)]);
    let pid = p.pid();
    wait_all_suspended(&[pid]);
    dump_ok(pid, &d.images, &[]);
    p.reap();
    let (lazy, _) = lazy_pages(&d.images, pid);
    assert!(lazy >= u64::from(mib) * 256, "only {lazy} lazy pages");
    (pid, lazy)
}

/// `criu-rs lazy-pages -D IMAGES --address SOCK EXTRA...`, once its socket is there.
fn daemon(d: &Dirs, extra: &[&str]) -> Proc {
    let sock = d.socket();
    let _ = std::fs::remove_file(&sock);
    // -v3: how each task ended, for failure messages (see daemon_done).
    let mut args = vec!["lazy-pages", "-v3", "-D", d.images.to_str().unwrap(), "--address", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut p = spawn_criu_rs(&args);
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
/// line ("lazy-pages: N task(s), ..."), followed (for failure messages) by
/// its warnings and the log lines of tasks that ended otherwise than with
/// all their pages in.
fn daemon_done(p: Proc) -> String {
    let (st, out, err) = p.finish();
    assert!(st.success(), "lazy-pages daemon failed ({st}):\n{out}\n{err}");
    let sum = out.lines().chain(err.lines()).find(|l| l.starts_with("lazy-pages: ")).unwrap_or_else(|| panic!("no summary:\n{out}\n{err}"));
    let notes = err.lines().filter(|l| {
        (l.contains("lazy-pages: task") && !l.contains("all pages in")) || l.contains(" WARN ") || l.contains("ERROR")
    });
    std::iter::once(sum).chain(notes).collect::<Vec<_>>().join("\n")
}

/// The number before `what` in a daemon summary.
fn count(summary: &str, what: &str) -> u64 {
    let at = summary.find(what).unwrap_or_else(|| panic!("no {what:?} in {summary}"));
    summary[..at].trim_end().rsplit([' ', '(']).next().unwrap().parse().unwrap()
}

/// Signals `held` and returns its report once written.
fn trigger(held: &Held, result: &Path) -> String {
    held.signal(libc::SIGUSR1).unwrap();
    wait_result(result)
}

#[test]
fn a_256_mib_process_restored_lazily_checks_every_byte() {
    let d = Dirs::new("256m");
    let (pid, lazy) = dump_lazymem(&d, 256, "halves");
    let before = snapshot(&d.images);
    let dm = daemon(&d, &[]);
    let held = restore_lazy(&d, pid);
    // The first half is checked while the daemon serves faults and copies
    // in the background; then the program waits, so the daemon must bring
    // in every page (the program still alive) and exit by itself before
    // the second half is checked. (Were the program to exit first, pages it
    // never touched would rightly never be served.)
    let report = trigger(&held, &d.result_of("half"));
    assert_all_ok("first half of 256 MiB lazily restored", &report);
    let sum = daemon_done(dm);
    let report = trigger(&held, &d.result);
    assert_all_ok("second half of 256 MiB lazily restored", &report);
    assert!(held.wait_exit(PATIENCE), "pid {pid} did not exit after its check");
    assert_eq!(count(&sum, "task(s)"), 1, "{sum}");
    assert_eq!(count(&sum, "pages copied") + count(&sum, "pages in background"), lazy, "every lazy page served once: {sum}");
    assert_eq!(count(&sum, "gone early"), 0, "{sum}");
    assert_eq!(count(&sum, "killed"), 0, "{sum}");
    assert_same_dir(&before, &snapshot(&d.images));
}

#[test]
fn a_pagemap_entry_spanning_two_areas_as_criu_writes_is_served_lazily() {
    // CRIU merges the pages of adjacent areas into one pagemap entry; a
    // UFFDIO_COPY must stay inside one VMA. Here the program's memory area
    // is cut in two in mm.img, the second half made read-only (so the two
    // stay distinct VMAs; `check` only reads), and its entry left whole.
    let d = Dirs::new("span");
    let (pid, lazy) = dump_lazymem(&d, 4, "check");
    let images = ImageDir::open(&d.images).unwrap();
    let mut mm = images.read_mm(pid as u64).unwrap();
    let mut r = images.open_image(ImageKind::Pagemap, pid as u64).unwrap();
    let _: PagemapHead = r.read_next().unwrap();
    let entries: Vec<PagemapEntry> = r.read_all().unwrap();
    let big = entries.iter().filter(|e| e.flags() & pagemap_flags::LAZY != 0).max_by_key(|e| e.page_count()).unwrap();
    // At an odd page: the 16 KiB block a fault there asks for straddles it.
    let cut = big.vaddr() + (big.page_count() / 2 | 1) * 4096;
    let i = mm.vmas.iter().position(|v| v.start() < cut && cut < v.end()).expect("the entry's area");
    let mut second = mm.vmas[i].clone();
    mm.vmas[i].end = Some(cut);
    second.start = Some(cut);
    second.prot = Some(libc::PROT_READ as u32);
    mm.vmas.insert(i + 1, second);
    images.write_one(ImageKind::Mm, pid as u64, &mm).unwrap();
    let (_, read) = images.read_pagemap(pid as u64, &mm).unwrap();
    assert!(read.len() > entries.len(), "the spanning entry is read as two");
    // Faults only: they come once the areas have their own protections.
    let dm = daemon(&d, &["--no-background"]);
    let held = restore_lazy(&d, pid);
    let report = trigger(&held, &d.result);
    assert_all_ok("memory across two areas, lazily restored", &report);
    assert!(held.wait_exit(PATIENCE), "pid {pid} did not exit after its check");
    let sum = daemon_done(dm);
    assert!(count(&sum, "pages copied") >= 4 * 256 && count(&sum, "pages copied") <= lazy, "the 4 MiB checked came by faults: {sum}");
    assert_eq!(count(&sum, "killed"), 0, "{sum}");
}

/// `pages_restored` of the last restore's `stats-restore`.
fn pages_restored(dir: &Path) -> u64 {
    jnum(&crit_decode(&dir.join("stats-restore"))["entries"][0]["restore"]["pages_restored"])
}

/// The user's flow: a plain `criu-rs dump` of 1 GiB, then `restore
/// --lazy-pages`: the restore leaves that memory to the daemon (its
/// `stats-restore` counts only the few eager pages; the daemon serves
/// every lazy page) and the program finds every byte. The same images
/// restore eagerly without `--lazy-pages`. (`cargo xtask bench --only
/// lazy` times the lazy restore.)
#[test]
fn a_plain_dump_of_1_gib_restores_lazily_when_asked() {
    let d = Dirs::new("plain-1g");
    let (pid, lazy) = dump_lazymem(&d, 1024, "check");
    let (_, total) = lazy_pages(&d.images, pid);
    let dm = daemon(&d, &[]);
    let held = restore_lazy(&d, pid);
    let eager = pages_restored(&d.images);
    assert_eq!(eager, total - lazy, "the lazy restore filled only the pages not flagged lazy");
    assert!(eager < lazy / 100, "{eager} pages restored before the task ran, {lazy} left to the daemon");
    let report = trigger(&held, &d.result);
    assert_all_ok("1 GiB lazily restored from a plain dump", &report);
    assert!(held.wait_exit(PATIENCE), "pid {pid} did not exit after its check");
    let sum = daemon_done(dm);
    // Every lazy page served, but for those the program never touched and
    // the background copy had not reached when it exited (few: its check
    // reads all its data).
    let left = count(&sum, "pages left");
    assert!(left < lazy / 100, "{left} of {lazy} lazy pages never served: {sum}");
    assert_eq!(count(&sum, "pages copied") + count(&sum, "pages in background") + left, lazy, "every lazy page served by the daemon: {sum}");
    assert_eq!(count(&sum, "killed"), 0, "{sum}");
    drop(held);
    wait_pid_gone(pid);
    // Without --lazy-pages: every page before the task runs.
    let _ = std::fs::remove_file(&d.result);
    let held = restore_detached(&d.images, pid);
    assert_eq!(pages_restored(&d.images), total);
    let report = trigger(&held, &d.result);
    assert_all_ok("1 GiB eagerly restored from the same images", &report);
    assert!(held.wait_exit(PATIENCE));
    drop(held);
    let _ = std::fs::remove_dir_all(&d.images);
}

#[test]
fn forking_mremapping_and_unmapping_right_after_restore_stays_correct() {
    let d = Dirs::new("churn");
    let (pid, _) = dump_lazymem(&d, 64, "churn");
    // No background copy: every page the program touches arrives by a fault,
    // so the fork, mremap, munmap and madvise all meet missing pages.
    let dm = daemon(&d, &["--no-background"]);
    let held = restore_lazy(&d, pid);
    let report = trigger(&held, &d.result);
    assert_all_ok("fork/mremap/munmap after a lazy restore", &report);
    assert!(held.wait_exit(PATIENCE), "pid {pid} did not exit after its check");
    let sum = daemon_done(dm);
    assert!(count(&sum, "forks") >= 1, "the daemon saw no fork: {sum}");
    assert!(count(&sum, "remaps") >= 1, "the daemon saw no mremap: {sum}");
    assert!(count(&sum, "removes/unmaps") >= 2, "the daemon saw no munmap/madvise: {sum}");
    assert_eq!(count(&sum, "killed"), 0, "{sum}");
}

#[test]
fn killing_the_daemon_midway_leaves_no_process_running_on_bad_memory() {
    let d = Dirs::new("kill");
    let (pid, _) = dump_lazymem(&d, 64, "halves");
    let mut dm = daemon(&d, &["--no-background"]);
    let held = restore_lazy(&d, pid);
    // First half: served by faults, checked.
    let report = trigger(&held, &d.result_of("half"));
    assert_all_ok("first half", &report);
    // The second half is still missing when the daemon dies.
    // SAFETY: kill(2) on the daemon this test started (not yet reaped).
    unsafe { libc::kill(dm.pid() as i32, libc::SIGKILL) };
    let (st, _, _) = dm.finish();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL));
    // The task must not go on to read zeroes: its guard kills it (whether
    // or not it is woken again).
    let _ = held.signal(libc::SIGUSR1);
    assert!(held.wait_exit(PATIENCE), "pid {pid} still runs after its lazy-pages daemon died");
    assert!(!d.result.exists(), "the task checked its second half without its memory:\n{}",
            std::fs::read_to_string(&d.result).unwrap_or_default());
}

#[test]
fn lazy_images_without_page_data_need_lazy_pages() {
    let d = Dirs::new("nodata");
    let (pid, _) = dump_lazymem(&d, 4, "check");
    // As `dump --lazy-pages` leaves them: LAZY entries without PRESENT (the
    // pages file still holds their data here, at offsets nothing points to).
    let images = ImageDir::open(&d.images).unwrap();
    let mut r = images.open_image(ImageKind::Pagemap, pid as u64).unwrap();
    let head: PagemapHead = r.read_next().unwrap();
    let entries: Vec<PagemapEntry> = r.read_all().unwrap();
    drop(r);
    let mut w = images.create_image(ImageKind::Pagemap, pid as u64).unwrap();
    w.write_entry(&head).unwrap();
    for mut e in entries {
        if e.flags.unwrap_or_default() & pagemap_flags::LAZY != 0 {
            e.flags = Some(pagemap_flags::LAZY);
        }
        w.write_entry(&e).unwrap();
    }
    w.finish().unwrap();
    let before = snapshot(&d.images);
    let out = restore(&d.images, &["-d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restored without the lazy pages");
    assert!(err.contains("lazy pages") && err.contains("--lazy-pages") && err.contains(&format!("pagemap-{pid}.img")), "{err}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "a task was left behind");
    assert_same_dir(&before, &snapshot(&d.images));
}

/// `nsenter --net=/run/netns/NS PROGRAM`: PROGRAM in network namespace NS
/// only (unlike `ip netns exec`, no mount namespace of its own).
fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(program);
    c
}

/// Starts `cmd` with piped output; killed on drop.
fn spawn(mut cmd: Command) -> Proc {
    Proc::from(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn"))
}

/// Reads lines from `r` until one contains `what`.
fn wait_line(r: &mut impl BufRead, what: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "no line with {what:?}");
        if line.contains(what) {
            return;
        }
    }
}

#[test]
fn post_copy_migration_between_two_network_namespaces() {
    let net = Netns::new();
    let d = Dirs::new("postcopy");
    let dst_images = scratch("lazy-postcopy-dst-images");
    // The program runs on the "source host".
    let exe = compile("lazymem");
    let mut cmd = in_netns(&net.src, &exe);
    cmd.args([d.work.as_os_str(), d.result.as_os_str()]).args(["64", "check"]);
    let mut p = Program::from_child(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap(), false);
    let pid = p.pid();
    wait_all_suspended(&[pid]);
    // Source: dump --lazy-pages keeps the memory and serves it.
    let port = free_port().to_string();
    let mut src = Command::new(env!("CARGO_BIN_EXE_criu-rs"));
    src.args(["dump", "-t", &pid.to_string(), "-D"]).arg(&d.images);
    src.args(["--lazy-pages", "--address", SRC_ADDR, "--port", &port, "--lazy-timeout", "60"]);
    let mut dump = spawn(in_netns_cmd(&net.src, src));
    let mut dump_out = BufReader::new(dump.stdout().unwrap());
    wait_line(&mut dump_out, "serving on");
    p.reap();
    // The images move to the destination (memory stays behind).
    for e in std::fs::read_dir(&d.images).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst_images.join(e.file_name())).unwrap();
    }
    let sock = d.socket();
    let mut lazy = Command::new(env!("CARGO_BIN_EXE_criu-rs"));
    lazy.args(["lazy-pages", "-D"]).arg(&dst_images).args(["--page-server", "--address", SRC_ADDR, "--port", &port]);
    lazy.arg("--lazy-socket").arg(&sock);
    let mut dm = spawn(in_netns_cmd(&net.dst, lazy));
    wait_for(&sock, &mut dm);
    // Without the daemon the images cannot be restored.
    let out = restore(&dst_images, &["-d"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--lazy-pages"));
    let mut rst = Command::new(env!("CARGO_BIN_EXE_criu-rs"));
    rst.args(["restore", "--verify", "-D"]).arg(&dst_images).args(["-d", "--lazy-pages", "--address"]).arg(&sock);
    let out = in_netns_cmd(&net.dst, rst).output().unwrap();
    let held = Held::open(pid);
    assert!(out.status.success(), "restore on the destination failed: {}", String::from_utf8_lossy(&out.stderr));
    let held = held.unwrap();
    let netns_of = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    let dst_ns = std::fs::metadata(format!("/run/netns/{}", net.dst)).unwrap();
    assert_eq!(
        netns_of(pid),
        PathBuf::from(format!("net:[{}]", std::os::unix::fs::MetadataExt::ino(&dst_ns))),
        "the task is not on the destination"
    );
    let report = trigger(&held, &d.result);
    assert_all_ok("after post-copy migration", &report);
    assert!(held.wait_exit(PATIENCE));
    let sum = daemon_done(dm);
    eprintln!("{sum}");
    let mut out = String::new();
    dump_out.read_to_string(&mut out).unwrap();
    let (st, _, err) = dump.finish();
    assert!(st.success(), "dump --lazy-pages: {out}\n{err}");
    assert!(out.contains("lazy pages served"), "{out}");
}

/// `cmd` run in network namespace `ns` (same program, same arguments).
fn in_netns_cmd(ns: &str, cmd: Command) -> Command {
    let mut c = in_netns(ns, cmd.get_program());
    c.args(cmd.get_args());
    c
}

#[test]
fn a_lazy_restore_without_its_daemon_fails_cleanly() {
    let d = Dirs::new("nodaemon");
    let (pid, _) = dump_lazymem(&d, 4, "check");
    let before = snapshot(&d.images);
    let sock = d.socket();
    let out = restore(&d.images, &["-d", "--lazy-pages", "--address", sock.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restored without a lazy-pages daemon");
    assert!(err.contains("lazy-pages daemon") && err.contains(sock.to_str().unwrap()), "{err}");
    wait_pid_gone(pid);
    assert_same_dir(&before, &snapshot(&d.images));
    // The same images restore eagerly (their LAZY pages have data).
    let held = restore_detached(&d.images, pid);
    let report = trigger(&held, &d.result);
    assert_all_ok("eager restore of lazy images", &report);
}

/// Starts lazytree (a root and two children, `mib` MiB of their own memory
/// each, plus as much inherited), dumps the tree (killing it) and flags
/// (a plain dump flags every task's anonymous memory lazy). Returns the three pids (root first)
/// and the lazy page count of all three.
fn dump_lazytree(d: &Dirs, mib: u32) -> ([i32; 3], u64) {
    let mut p = Program::spawn("lazytree", &[&d.work, &d.result, Path::new(&mib.to_string())]);
    let pids = [p.pid(), p.int("a"), p.int("b")];
    wait_all_suspended(&pids);
    dump_ok(pids[0], &d.images, &[]);
    p.reap();
    for &pid in &pids[1..] {
        wait_pid_gone(pid);
    }
    let lazy: u64 = pids.iter().map(|&pid| lazy_pages(&d.images, pid).0).sum();
    assert!(lazy >= 3 * 2 * u64::from(mib) * 256, "only {lazy} lazy pages");
    (pids, lazy)
}

/// `restore_lazy` for a tree: every pid must be back.
fn restore_lazy_tree(d: &Dirs, pids: &[i32]) -> Vec<Held> {
    let out = restore(&d.images, &["-d", "--lazy-pages", "--address", d.socket().to_str().unwrap()]);
    let held: Vec<_> = pids.iter().map(|&pid| Held::open(pid)).collect();
    assert!(out.status.success(), "lazy restore of the tree failed: {}", String::from_utf8_lossy(&out.stderr));
    held.into_iter().zip(pids).map(|(h, pid)| h.unwrap_or_else(|e| panic!("restored pid {pid} is not there: {e}"))).collect()
}

#[test]
fn a_process_tree_is_served_by_one_daemon_that_exits_once_all_pages_are_in() {
    let d = Dirs::new("tree-bg");
    let (pids, lazy) = dump_lazytree(&d, 8);
    let before = snapshot(&d.images);
    let dm = daemon(&d, &[]);
    let held = restore_lazy_tree(&d, &pids);
    // The tasks wait untouched: the daemon must fill all three in the
    // background and exit by itself.
    let sum = daemon_done(dm);
    assert_eq!(count(&sum, "task(s)"), 3, "{sum}");
    assert_eq!(count(&sum, "pages copied") + count(&sum, "pages in background"), lazy, "every lazy page of every task served once: {sum}");
    assert_eq!(count(&sum, "gone early"), 0, "{sum}");
    assert_eq!(count(&sum, "killed"), 0, "{sum}");
    // Each task then checks its memory from inside (no daemon any more).
    let report = trigger(&held[0], &d.result);
    assert_all_ok("lazily restored tree, after the daemon", &report);
    for (h, pid) in held.iter().zip(pids) {
        assert!(h.wait_exit(PATIENCE), "pid {pid} did not exit after its check");
    }
    assert_same_dir(&before, &snapshot(&d.images));
}

#[test]
fn a_process_tree_faulting_all_at_once_is_served_by_one_daemon() {
    let d = Dirs::new("tree-faults");
    let (pids, _) = dump_lazytree(&d, 8);
    // No background copy: every page the three tasks check arrives by a
    // fault, the three faulting at the same time in different orders.
    let dm = daemon(&d, &["--no-background"]);
    let held = restore_lazy_tree(&d, &pids);
    let report = trigger(&held[0], &d.result);
    assert_all_ok("lazily restored tree, faulting", &report);
    for (h, pid) in held.iter().zip(pids) {
        assert!(h.wait_exit(PATIENCE), "pid {pid} did not exit after its check");
    }
    // The daemon leaves once every task is gone.
    let sum = daemon_done(dm);
    assert_eq!(count(&sum, "task(s)"), 3, "{sum}");
    // Own and inherited memory of all three: 2 * 8 MiB each, one page per fault at most 16 KiB.
    assert!(count(&sum, "pages copied") >= 3 * 2 * 8 * 256, "{sum}");
    assert_eq!(count(&sum, "killed"), 0, "{sum}");
}
