//! `restore --mmap-page-image` (issue 10): private memory mapped from the
//! pages images, then converted to anonymous memory while the process runs.
//! `tests/programs/mmapimg.c` reads every byte of its memory over and over
//! and, with writer threads, writes generation counters as fast as it can
//! from before the dump until after the conversion; it checks from inside
//! that no byte is wrong and no write is lost. From outside: no mapping of
//! the images is left, the images can be deleted, and a conversion helper
//! killed half-way leaves a working process that `--finish-mmap` completes.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A test's directories: the program's (its report goes there), the
/// images, and the restore's log file (outside both).
struct Dirs {
    work: PathBuf,
    images: PathBuf,
    log: PathBuf,
}

fn dirs(name: &str) -> Dirs {
    let work = scratch(&format!("{name}-work"));
    // A log of an earlier run would answer for this one.
    let _ = std::fs::remove_file(work.with_extension("log"));
    Dirs { log: work.with_extension("log"), images: scratch(&format!("{name}-images")), work }
}

/// Starts mmapimg over `mib` MiB with `writers` writer threads and dumps it
/// (the original is reaped); returns its pid.
fn start_and_dump(d: &Dirs, mib: u32, writers: u32) -> i32 {
    let mut p = Program::spawn("mmapimg", &[&d.work, Path::new(&mib.to_string()), Path::new(&writers.to_string())]);
    let pid = p.pid();
    dump_ok(pid, &d.images, &[]);
    p.reap();
    pid
}

/// `criu-rs restore --mmap-page-image -d` with the log in `d.log`
/// (`extra` added); returns a hold on the restored process.
fn restore_mapped(d: &Dirs, pid: i32, envs: &[(&str, &str)]) -> Held {
    let pidfile = d.work.join("pid");
    let _ = std::fs::remove_file(&pidfile);
    let out = criu_rs()
        .args(["restore", "--mmap-page-image", "-d", "-v4", "-D"])
        .arg(&d.images)
        .arg("-o")
        .arg(&d.log)
        .arg("--pidfile")
        .arg(&pidfile)
        .envs(envs.iter().copied())
        .output()
        .expect("running criu-rs");
    let held = Held::open(pid);
    assert!(out.status.success(), "restore failed: {}\n{}", text(&out.stderr), log(d));
    held.unwrap_or_else(|e| panic!("restored pid {pid} is not there: {e}"))
}

/// `criu-rs restore --mmap-page-image` without `-d` (`extra` added),
/// started: it returns when the restored process ends.
fn restore_attached(d: &Dirs, extra: &[&str]) -> std::process::Child {
    criu_rs()
        .args(["restore", "--mmap-page-image", "-v4"])
        .args(extra)
        .arg("-D")
        .arg(&d.images)
        .arg("-o")
        .arg(&d.log)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("running criu-rs")
}

fn log(d: &Dirs) -> String {
    std::fs::read_to_string(&d.log).unwrap_or_default()
}

/// The lines of `/proc/PID/maps` that map a file of the images directory.
fn image_mappings(pid: i32, images: &Path) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let dir = images.to_str().unwrap();
    maps.lines().filter(|l| l.contains(dir)).map(str::to_owned).collect()
}

/// The conversion helper's pid, from the restore's log.
fn helper_pid(d: &Dirs) -> i32 {
    let l = log(d);
    let line = l.lines().find(|l| l.contains("conversion helper started")).unwrap_or_else(|| panic!("no helper in the log:\n{l}"));
    let at = line.find("helper=").expect("helper= field") + "helper=".len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// Waits until the helper says it is done and is gone.
fn wait_converted(d: &Dirs, helper: i32) {
    wait_until("the conversion helper to finish", PATIENCE, || log(d).contains("image mappings converted: the images are no longer used"));
    wait_until("the conversion helper to exit", PATIENCE, || !alive(helper) || proc_state(helper) == Some('Z'));
}

/// Deletes the images, triggers the final self-check and asserts it passes.
fn delete_images_and_check(d: &Dirs, held: &Held, what: &str) {
    assert_eq!(image_mappings(held.pid, &d.images), Vec::<String>::new(), "image mappings left after the conversion");
    std::fs::remove_dir_all(&d.images).unwrap();
    let result = d.work.join("result");
    held.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&result);
    assert_all_ok(what, &report);
    assert!(held.wait_exit(PATIENCE), "mmapimg did not exit after its self-check");
}

#[test]
fn every_byte_of_256_mib_stays_right_through_the_conversion() {
    let d = dirs("mmap-256");
    let pid = start_and_dump(&d, 256, 0);
    // 20 ms after each of the 17 chunks: the program reads on meanwhile.
    let held = restore_mapped(&d, pid, &[("CRIU_RS_CONVERT_PAUSE_MS", "20")]);
    let helper = helper_pid(&d);
    wait_converted(&d, helper);
    let l = log(&d);
    assert!(l.contains("region chunk converted"), "no region converted:\n{l}");
    // The region was advised MADV_HUGEPAGE: so is the anonymous memory
    // that replaced it (every VMA of it).
    let text = std::fs::read_to_string(d.work.join("region")).unwrap();
    let (start, len) = text.trim().split_once(' ').map(|(a, n)| (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(n, 16).unwrap())).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut inside = false;
    let mut seen = 0;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-') && !r.ends_with(':')) {
            let (s, e) = range.split_once('-').unwrap();
            let (s, e) = (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap());
            inside = s < start + len && e > start;
            assert!(!inside || line.split_whitespace().nth(4) == Some("0"), "part of the region is not anonymous: {line}");
        } else if inside && line.starts_with("VmFlags:") {
            assert!(line.split_whitespace().any(|f| f == "hg"), "converted region not advised MADV_HUGEPAGE: {line}");
            seen += 1;
        }
    }
    assert!(seen > 0, "no VMA of the region at {start:#x}");
    delete_images_and_check(&d, &held, "mmapimg 256 MiB");
}

#[test]
fn writer_threads_lose_no_write_during_the_conversion() {
    let d = dirs("mmap-writers");
    let pid = start_and_dump(&d, 64, 4);
    let held = restore_mapped(&d, pid, &[]);
    wait_converted(&d, helper_pid(&d));
    delete_images_and_check(&d, &held, "mmapimg with 4 writers");
}

#[test]
fn a_helper_killed_half_way_leaves_a_working_process_that_finish_mmap_completes() {
    let d = dirs("mmap-killed");
    let pid = start_and_dump(&d, 192, 2);
    let held = restore_mapped(&d, pid, &[("CRIU_RS_CONVERT_STALL_AFTER", "1")]);
    let helper = helper_pid(&d);
    wait_until("the helper to stall", PATIENCE, || log(&d).contains("stalling until killed"));
    // SAFETY: kill(2) of the helper this test's restore started.
    assert_eq!(unsafe { libc::kill(helper, libc::SIGKILL) }, 0);
    wait_until("the helper to die", PATIENCE, || !alive(helper) || proc_state(helper) == Some('Z'));
    let left = image_mappings(pid, &d.images);
    assert!(!left.is_empty(), "the helper converted everything before stalling");
    // The process runs on its mappings meanwhile: its threads still write
    // and it still reads (checked in its report at the end).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(alive(pid) && proc_state(pid) != Some('Z'), "mmapimg died with the helper");
    let out = criu_rs()
        .args(["restore", "--finish-mmap", &pid.to_string(), "-v4", "-D"])
        .arg(&d.images)
        .output()
        .expect("running criu-rs");
    assert!(out.status.success(), "--finish-mmap failed: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("image mappings converted"), "{}", text(&out.stderr));
    delete_images_and_check(&d, &held, "mmapimg after --finish-mmap");
}

#[test]
fn without_detach_the_restore_converts_before_waiting() {
    let d = dirs("mmap-attached");
    let pid = start_and_dump(&d, 32, 1);
    let mut restore = restore_attached(&d, &[]);
    let mut held = None;
    wait_until("the restored process", PATIENCE, || {
        held = Held::open(pid).ok();
        held.is_some()
    });
    let held = held.unwrap();
    wait_until("the conversion", PATIENCE, || log(&d).contains("image mappings converted: the images are no longer used"));
    delete_images_and_check(&d, &held, "mmapimg restored without -d");
    let status = restore.wait().unwrap();
    assert!(status.success(), "criu-rs restore (waiting for the root) ended with {status}\n{}", log(&d));
}

#[test]
fn pages_of_a_pre_dump_chain_are_mapped_from_each_image_and_converted() {
    let d = dirs("mmap-chain");
    let pre = scratch("mmap-chain-pre");
    let mut p = Program::spawn("mmapimg", &[&d.work, Path::new("48"), Path::new("2")]);
    let pid = p.pid();
    let out = criu_rs().args(["pre-dump", "-t", &pid.to_string(), "-D"]).arg(&pre).output().unwrap();
    assert!(out.status.success(), "pre-dump failed: {}", text(&out.stderr));
    // The last dump must find pages written since the pre-dump: every
    // writer thread must have run meanwhile (on a loaded machine they may
    // not get a CPU before the dump freezes them again; the main thread's
    // reading does not count). 5 ms of a writer's CPU time are thousands of
    // its pages.
    let writers: Vec<i32> = threads_of(pid).into_iter().filter(|&t| t != pid).collect();
    assert_eq!(writers.len(), 2, "mmapimg's writer threads");
    let before: Vec<u64> = writers.iter().map(|&t| cpu_ns(pid, t)).collect();
    wait_until("the writers to run after the pre-dump", PATIENCE, || {
        writers.iter().zip(&before).all(|(&t, &b)| cpu_ns(pid, t) >= b + 5_000_000)
    });
    dump_ok(pid, &d.images, &["--prev-images-dir", "../mmap-chain-pre"]);
    p.reap();
    // Stalled before the first chunk: what the restore mapped can be seen.
    let held = restore_mapped(&d, pid, &[("CRIU_RS_CONVERT_STALL_AFTER", "0")]);
    let helper = helper_pid(&d);
    wait_until("the helper to stall", PATIENCE, || log(&d).contains("stalling until killed"));
    let from_parent = image_mappings(pid, &pre);
    let from_last = image_mappings(pid, &d.images);
    // SAFETY: kill(2) of the helper this test's restore started.
    assert_eq!(unsafe { libc::kill(helper, libc::SIGKILL) }, 0);
    assert!(!from_parent.is_empty(), "nothing mapped from the pre-dump's image");
    assert!(!from_last.is_empty(), "nothing mapped from the last dump's image");
    let out = criu_rs().args(["restore", "--finish-mmap", &pid.to_string(), "-v4", "-D"]).arg(&d.images).output().unwrap();
    assert!(out.status.success(), "--finish-mmap failed: {}", text(&out.stderr));
    assert_eq!(image_mappings(pid, &pre), Vec::<String>::new(), "mappings of the pre-dump's image left");
    std::fs::remove_dir_all(&pre).unwrap();
    delete_images_and_check(&d, &held, "mmapimg from a pre-dump chain");
}

/// The writers' stack arrays as mmapimg listed them: (address, bytes).
fn writer_stacks(d: &Dirs) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(d.work.join("stacks")).expect("mmapimg's stacks file");
    let hex = |w: &str| u64::from_str_radix(w, 16).unwrap();
    text.lines().map(|l| l.split_once(' ').map(|(a, n)| (hex(a), hex(n))).unwrap()).collect()
}

/// Whether `[addr, addr + len)` lies in image mappings of `pid`, whole.
fn mapped_from_images(pid: i32, images: &Path, addr: u64, len: u64) -> bool {
    let hex = |w: &str| u64::from_str_radix(w, 16).unwrap();
    let spans: Vec<(u64, u64)> = image_mappings(pid, images)
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().split_once('-').map(|(s, e)| (hex(s), hex(e))).unwrap())
        .collect();
    let mut at = addr;
    while at < addr + len {
        match spans.iter().find(|&&(s, e)| s <= at && at < e) {
            Some(&(_, e)) => at = e,
            None => return false,
        }
    }
    true
}

#[test]
fn thread_stacks_mapped_from_the_image_are_converted_while_the_threads_run_on_them() {
    let d = dirs("mmap-stacks");
    let pid = start_and_dump(&d, 32, 3);
    let stacks = writer_stacks(&d);
    assert_eq!(stacks.len(), 3, "{stacks:?}");
    let held = restore_mapped(&d, pid, &[("CRIU_RS_CONVERT_STALL_AFTER", "0")]);
    let helper = helper_pid(&d);
    wait_until("the helper to stall", PATIENCE, || log(&d).contains("stalling until killed"));
    // SAFETY: kill(2) of the helper this test's restore started.
    assert_eq!(unsafe { libc::kill(helper, libc::SIGKILL) }, 0);
    for &(addr, len) in &stacks {
        assert!(
            mapped_from_images(pid, &d.images, addr, len),
            "writer stack array {addr:#x}+{len:#x} is not mapped from the image:\n{}",
            image_mappings(pid, &d.images).join("\n")
        );
    }
    // The threads run on those stacks (writing their counters) while
    // --finish-mmap switches them.
    let out = criu_rs().args(["restore", "--finish-mmap", &pid.to_string(), "-v4", "-D"]).arg(&d.images).output().unwrap();
    assert!(out.status.success(), "--finish-mmap failed: {}", text(&out.stderr));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for &(addr, _) in &stacks {
        let hex = |w: &str| u64::from_str_radix(w, 16).unwrap();
        let line = maps.lines().find(|l| {
            let (s, e) = l.split_whitespace().next().unwrap().split_once('-').unwrap();
            hex(s) <= addr && addr < hex(e)
        });
        let line = line.unwrap_or_else(|| panic!("no VMA holds the stack array at {addr:#x}:\n{maps}"));
        assert_eq!(line.split_whitespace().nth(4), Some("0"), "the stack array's VMA is not anonymous after the conversion: {line}");
    }
    delete_images_and_check(&d, &held, "mmapimg's thread stacks");
}

#[test]
fn a_pages_image_cut_short_before_the_restore_is_refused_with_nothing_made() {
    let d = dirs("mmap-short");
    let pid = start_and_dump(&d, 16, 0);
    let pages = d.images.join("pages-1.img");
    let len = std::fs::metadata(&pages).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&pages).unwrap().set_len(len / 2).unwrap();
    let out = criu_rs().args(["restore", "--mmap-page-image", "-d", "-v4", "-D"]).arg(&d.images).arg("-o").arg(&d.log).output().unwrap();
    assert!(!out.status.success(), "a restore from a cut pages image succeeded:\n{}", log(&d));
    assert!(text(&out.stderr).contains("pages-1.img"), "the error does not name the pages image: {}", text(&out.stderr));
    assert!(!alive(pid), "pid {pid} runs after a refused restore");
    assert!(!log(&d).contains("conversion helper started"), "a helper was started:\n{}", log(&d));
}

/// A pages image truncated under the running process (documented in
/// `image_map`): the process takes SIGBUS on its next touch of a cut page,
/// as with any mapped file cut short (mmapimg reads all its memory over and
/// over: at once). The restore's watch says so, naming the address.
#[test]
fn a_pages_image_cut_under_the_running_process_ends_it_with_sigbus_reported() {
    let d = dirs("mmap-cut");
    let pid = start_and_dump(&d, 64, 0);
    // Attached, watching long enough for the cut to happen meanwhile; the
    // conversion waits for the watch.
    let mut restore = restore_attached(&d, &["--watch", "60000"]);
    wait_until("the restored process", PATIENCE, || log(&d).contains("restored pid="));
    let pages = d.images.join("pages-1.img");
    let len = std::fs::metadata(&pages).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&pages).unwrap().set_len(len / 2).unwrap();
    let status = restore.wait().unwrap();
    let l = log(&d);
    assert!(!status.success(), "the restore ended well over a cut image:\n{l}");
    assert!(l.contains(&format!("restored task {pid} died of SIGBUS")), "no SIGBUS reported:\n{l}");
    assert!(!l.contains("conversion helper started") && !l.contains("converting image mappings"), "a conversion ran:\n{l}");
}
