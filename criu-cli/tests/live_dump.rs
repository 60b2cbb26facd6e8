//! Live snapshots (`dump -R`, `pre-dump`, the incremental `dump -R
//! --prev-images-dir` after it): the tree is frozen only to collect its
//! state and write-protect its memory, which is copied while it runs
//! (criu_core::dump::live). `livewriter` (tests/programs/livewriter.c) has
//! four threads rewriting their pages all the time, each page carrying the
//! generation of the step that wrote it and each thread its step count, so
//! that the process can check from inside that its memory is that of one
//! instant: restored from a live snapshot, every page must hold exactly
//! what the freeze instant's step counts say. And criu-rs killed in the
//! middle of a live copy must leave the program running unharmed.

mod common;

use common::*;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writer threads in livewriter.c.
const WRITERS: usize = 4;

/// `livewriter WORK STATIC_MIB`, writing.
fn start_writer(work: &Path, static_mib: &str) -> Program {
    let p = Program::spawn("livewriter", &[work, Path::new(static_mib)]);
    wait_writing(work);
    p
}

fn ctl(work: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(work.join("ctl")).unwrap()
}

/// The writers' step counts, as they publish them in `ctl`.
fn counts(work: &Path) -> [u64; WRITERS] {
    let mut b = [0u8; 8 * WRITERS];
    ctl(work).read_exact_at(&mut b, 8).unwrap();
    std::array::from_fn(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
}

/// Waits until every writer has made progress (a writer stuck on a page
/// nobody un-protects never does).
fn wait_writing(work: &Path) {
    let before = counts(work);
    wait_until("every writer to make progress", PATIENCE, || counts(work).iter().zip(before).all(|(now, was)| *now > was));
}

/// `go` in `ctl`: 1 lets the writers write, 0 parks them between steps.
fn set_go(work: &Path, go: bool) {
    ctl(work).write_all_at(&(go as i32).to_ne_bytes(), 0).unwrap();
}

/// Parks the writers, has the program check itself, returns its report.
fn self_check(work: &Path, pid: i32) -> String {
    let result = work.join("result");
    let _ = std::fs::remove_file(&result);
    set_go(work, false);
    // SAFETY: kill(2) on a process this test started or restored.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0, "pid {pid} is gone");
    wait_result(&result)
}

/// The userfaultfds among `pid`'s descriptors.
fn uffds_of(pid: i32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    rd.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("userfaultfd")))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A dump's `-o` log.
fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dump.log")).unwrap_or_default()
}

/// Asserts the dump logged in `dir` copied memory while the tree ran, and
/// shows its live-copy counters.
fn assert_went_live(dir: &Path) -> String {
    let log = log_of(dir);
    assert!(log.contains("tree let go; copying memory live"), "no live copy in {}:\n{log}", dir.display());
    for l in log.lines().filter(|l| l.contains("live copy done") || l.contains("tree let go") || l.contains("dump finished")) {
        eprintln!("{l}");
    }
    log
}

fn log_args(dir: &Path) -> Vec<String> {
    vec!["-v4".into(), "-o".into(), dir.join("dump.log").to_string_lossy().into_owned()]
}

/// Kills the original program (parked first), restores it from `images`
/// and returns its self-check report.
fn restore_and_check(mut p: Program, work: &Path, images: &Path) -> String {
    let pid = p.pid();
    set_go(work, false);
    let _ = p.child.kill();
    p.reap();
    let held = restore_detached(images, pid);
    let report = self_check(work, pid);
    drop(held);
    report
}

#[test]
fn a_live_dump_restores_the_memory_of_the_freeze_instant() {
    let work = scratch("exact-work");
    let images = scratch("exact-images");
    let p = start_writer(&work, "16");
    let pid = p.pid();
    let mut args = vec!["-R".to_owned()];
    args.extend(log_args(&images));
    dump_ok(pid, &images, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_went_live(&images);
    // Let go, unprotected, holding no userfaultfd of ours.
    assert_eq!(uffds_of(pid), Vec::<String>::new(), "the dumped process holds a userfaultfd");
    wait_writing(&work);
    let report = restore_and_check(p, &work, &images);
    eprintln!("{report}");
    assert_all_ok("restored from a live dump -R", &report);
    let _ = std::fs::remove_dir_all(&images);
}

#[test]
fn a_live_pre_dump_then_incremental_dump_restore_the_freeze_instant() {
    let work = scratch("inc-work");
    let pre = scratch("inc-pre");
    let fin = scratch("inc-final");
    let p = start_writer(&work, "16");
    let pid = p.pid();
    let mut args = vec!["pre-dump".to_owned(), "-t".into(), pid.to_string(), "-D".into(), pre.to_string_lossy().into_owned()];
    args.extend(log_args(&pre));
    let out = criu_rs().args(&args).output().unwrap();
    assert!(out.status.success(), "pre-dump failed: {}", text(&out.stderr));
    assert_went_live(&pre);
    wait_writing(&work);
    let mut args = vec!["-R".to_owned(), "--prev-images-dir".into(), "../inc-pre".into()];
    args.extend(log_args(&fin));
    dump_ok(pid, &fin, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let log = assert_went_live(&fin);
    // The static area was not written since the pre-dump: left in its images.
    let in_parent = log
        .lines()
        .find(|l| l.contains("dump finished"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pages_in_parent=")))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(in_parent.is_some_and(|n| n >= 16 * 256), "the incremental dump left too little in the pre-dump: {in_parent:?}");
    assert_eq!(uffds_of(pid), Vec::<String>::new(), "the dumped process holds a userfaultfd");
    wait_writing(&work);
    let report = restore_and_check(p, &work, &fin);
    eprintln!("{report}");
    assert_all_ok("restored from a live incremental dump", &report);
    let _ = std::fs::remove_dir_all(&pre);
    let _ = std::fs::remove_dir_all(&fin);
}

#[test]
fn an_area_unmapped_before_it_was_copied_makes_the_dump_start_over_frozen() {
    let work = scratch("remap-work");
    let images = scratch("remap-images");
    let p = start_writer(&work, "4");
    let pid = p.pid();
    let mut args: Vec<String> = vec!["dump".into(), "-t".into(), pid.to_string(), "-D".into(), images.to_string_lossy().into_owned(), "-R".into()];
    args.extend(log_args(&images));
    let mut cmd = criu_rs();
    // The copy waits after the let-go: the area is remapped before it.
    cmd.args(&args).env("CRIU_RS_LIVE_PAUSE_MS", "1500").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let d = Proc::from(cmd.spawn().unwrap());
    wait_until("the dump to let the tree go", PATIENCE, || log_of(&images).contains("tree let go"));
    // SAFETY: kill(2) on the program this test started.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    let (st, _, err) = d.finish();
    assert!(st.success(), "dump failed: {err}");
    let log = log_of(&images);
    assert!(log.contains("live copy abandoned"), "the unmap went unnoticed:\n{log}");
    assert!(log.contains("dumping again with the memory copied frozen"), "{log}");
    assert_eq!(uffds_of(pid), Vec::<String>::new(), "the dumped process holds a userfaultfd");
    wait_writing(&work);
    let report = restore_and_check(p, &work, &images);
    eprintln!("{report}");
    assert!(report.contains("ok remaps=1"), "restored from before the remap:\n{report}");
    assert_all_ok("restored after a live copy gave way to a frozen one", &report);
    let _ = std::fs::remove_dir_all(&images);
}

/// xorshift64*: the trials' random moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Kills the dirty tracker a finished pre-dump in `dir` left (ours).
fn stop_tracker(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("dirty-track")) else { return };
    if let Some(pid) = text.lines().find_map(|l| l.strip_prefix("tracker ")).and_then(|l| l.split(' ').next()).and_then(|p| p.parse::<i32>().ok()) {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "criu-rs-track") {
            // SAFETY: kill(2) on the tracker our own pre-dump started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn killing_criu_rs_during_a_live_copy_leaves_the_program_running_and_whole() {
    let seed = std::env::var("LIVE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("seed {seed} (LIVE_KILL_SEED={seed} repeats these trials)");
    let mut rng = Rng(seed);
    let work = scratch("kill-work");
    let root = scratch("kill-images");
    let p = start_writer(&work, "8");
    let pid = p.pid();
    let run = |dir: &Path, pre: bool| {
        let mut args: Vec<String> = vec![if pre { "pre-dump" } else { "dump" }.into(), "-t".into(), pid.to_string()];
        args.extend(["-D".into(), dir.to_string_lossy().into_owned()]);
        if !pre {
            args.push("-R".into());
        }
        args.extend(log_args(dir));
        spawn_criu_rs(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // One whole live dump: how long the live part takes here, now (the
    // range the kills are drawn from; nothing is asserted on it).
    let dir = root.join("reference");
    std::fs::create_dir_all(&dir).unwrap();
    let mut d = run(&dir, false);
    let mut let_go = None;
    wait_until("the reference dump to end", PATIENCE, || {
        if let_go.is_none() && log_of(&dir).contains("tree let go") {
            let_go = Some(Instant::now());
        }
        d.try_wait().is_some()
    });
    let live_part = let_go.map_or(Duration::from_millis(50), |t| t.elapsed()).max(Duration::from_millis(5));
    eprintln!("reference live copy: about {live_part:?}");
    assert_went_live(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    for trial in 0..20 {
        let pre = trial % 4 == 3;
        let dir = root.join(format!("trial-{trial}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = run(&dir, pre);
        // Killed only once the tree runs again (a kill while criu-rs has a
        // thread in the middle of an injected syscall is another matter).
        let mut finished = false;
        wait_until("the dump to let the tree go", PATIENCE, || {
            finished = d.try_wait().is_some();
            finished || log_of(&dir).contains("tree let go")
        });
        let delay = Duration::from_micros(rng.next() % (live_part.as_micros() as u64 * 6 / 5 + 1));
        std::thread::sleep(delay);
        let killed_mid_copy = d.try_wait().is_none();
        // SAFETY: kill(2) on the criu-rs this test started.
        unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
        d.wait();
        eprintln!("trial {trial}: {} killed {delay:?} after the let-go{}", if pre { "pre-dump" } else { "dump -R" }, if killed_mid_copy && !finished { "" } else { " (it had finished)" });
        assert!(alive(pid), "trial {trial}: the program died");
        assert_eq!(uffds_of(pid), Vec::<String>::new(), "trial {trial}: the program holds a userfaultfd");
        wait_writing(&work);
        stop_tracker(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = self_check(&work, pid);
    eprintln!("{report}");
    assert_all_ok("after 20 killed live copies", &report);
    drop(p);
    let _ = std::fs::remove_dir_all(&root);
}
