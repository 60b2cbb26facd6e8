//! Checking results: a restored process against its images or against
//! itself before the dump (mappings, fds), a self-check report (`ALL OK`),
//! and an images directory that restore must leave untouched.

use super::images::{crit_decode, jnum};
use super::PATIENCE;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Every file under `dir` (recursively) with its contents and mtime: what
/// restore must leave as it was.
pub type Snapshot = BTreeMap<PathBuf, (Vec<u8>, Option<SystemTime>)>;

/// Takes a [`Snapshot`] of `dir` (sockets and other special files by name only).
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let (p, ty) = (e.path(), e.file_type().unwrap());
        if ty.is_dir() {
            m.extend(snapshot(&p));
        } else if e.file_name() == "stats-restore" {
            // CRIU's restore statistics, which every successful restore
            // writes into the work directory (as CRIU does); not an image.
        } else if ty.is_file() {
            let mtime = e.metadata().ok().and_then(|m| m.modified().ok());
            m.insert(p.clone(), (std::fs::read(&p).unwrap(), mtime));
        } else {
            m.insert(p, (Vec::new(), None));
        }
    }
    m
}

/// Asserts two snapshots are the same, naming the first difference.
pub fn assert_same_dir(before: &Snapshot, after: &Snapshot) {
    let names_b: Vec<_> = before.keys().collect();
    let names_a: Vec<_> = after.keys().collect();
    assert_eq!(names_a, names_b, "the set of image files changed");
    for (k, (data, mtime)) in before {
        assert!(after[k].0 == *data, "{} was modified", k.display());
        assert_eq!(after[k].1, *mtime, "{} was written to (mtime changed)", k.display());
    }
}

/// The directories of a self-checking program's test: its working dir,
/// its result file (beside it) and the images.
pub struct Dirs {
    /// The program's working directory (`scratch("NAME-work")`).
    pub work: PathBuf,
    /// Where it writes its report (`NAME-work.result`).
    pub result: PathBuf,
    /// The images (`scratch("NAME-images")`).
    pub images: PathBuf,
}

impl Dirs {
    /// Fresh directories for test `name`.
    pub fn new(name: &str) -> Dirs {
        let work = super::scratch(&format!("{name}-work"));
        Dirs { result: work.with_extension("result"), images: super::scratch(&format!("{name}-images")), work }
    }

    /// Sends SIGUSR1 to the (restored or still running) program, waits for
    /// its report and for it to exit; returns the report.
    pub fn trigger(&self, held: &super::procs::Held) -> String {
        let _ = std::fs::remove_file(&self.result);
        held.signal(libc::SIGUSR1).unwrap();
        let report = wait_result(&self.result);
        assert!(held.wait_exit(PATIENCE), "pid {} did not exit after its self-check", held.pid);
        report
    }
}

/// Waits for a program's result file; returns its contents.
pub fn wait_result(path: &Path) -> String {
    let mut got = None;
    super::wait_until(&format!("result file {}", path.display()), PATIENCE, || {
        got = std::fs::read_to_string(path).ok();
        got.is_some()
    });
    got.unwrap()
}

/// Asserts a result file says ALL OK, showing the failed lines otherwise.
/// Its `skip ...` lines (checks the program could not run here, such as
/// AVX-512 registers on a CPU without them) are recorded with [`record_skip`].
pub fn assert_all_ok(what: &str, report: &str) {
    if report.lines().last() != Some("ALL OK") {
        let bad: Vec<&str> = report.lines().filter(|l| !l.starts_with("ok ")).collect();
        panic!("{what}: self-check failed:\n{}", bad.join("\n"));
    }
    let mut skips: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("skip ").or_else(|| l.split_once(": skip ").map(|(_, r)| r)))
        .collect();
    skips.sort();
    skips.dedup();
    for s in skips {
        record_skip(&format!("{what}: {s}"));
    }
}

/// Records that part of the running test was skipped, and why: appended to
/// the file `CRIU_RS_SKIPS` names (`cargo xtask test` sets it, counts the
/// lines and prints them; under CI any skip fails the run), else printed.
pub fn record_skip(reason: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let line = format!("{}::{test}: {reason}\n", env!("CARGO_CRATE_NAME"));
    match std::env::var_os("CRIU_RS_SKIPS") {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("CRIU_RS_SKIPS file");
            f.write_all(line.as_bytes()).unwrap();
        }
        None => eprint!("SKIPPED {line}"),
    }
}

/// A mapping: [start, end) and "rwxp"-style permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub name: String,
}

/// Parses `/proc/PID/maps` (without `[vsyscall]`, which is the kernel's, not the process's).
pub fn proc_maps(pid: i32) -> Vec<Area> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (a, b) = it.next()?.split_once('-')?;
            let perms = it.next()?.to_owned();
            let name = it.nth(3).unwrap_or("").to_owned();
            Some(Area { start: u64::from_str_radix(a, 16).ok()?, end: u64::from_str_radix(b, 16).ok()?, perms, name })
        })
        .filter(|a| a.name != "[vsyscall]")
        .collect()
}

/// The VMAs `mm-PID.img` lists (via crit), without the vsyscall page.
pub fn image_vmas(dir: &Path, pid: i32) -> Vec<Area> {
    const VMA_AREA_VSYSCALL: u64 = 1 << 2;
    let mm = crit_decode(&dir.join(format!("mm-{pid}.img")));
    let vmas = mm["entries"][0]["vmas"].as_array().expect("vmas in mm image").clone();
    vmas.iter()
        .filter(|v| jnum(&v["status"]) & VMA_AREA_VSYSCALL == 0)
        .map(|v| {
            let prot = jnum(&v["prot"]);
            let shared = jnum(&v["flags"]) & libc::MAP_SHARED as u64 != 0;
            let perms = format!(
                "{}{}{}{}",
                if prot & 1 != 0 { 'r' } else { '-' },
                if prot & 2 != 0 { 'w' } else { '-' },
                if prot & 4 != 0 { 'x' } else { '-' },
                if shared { 's' } else { 'p' }
            );
            Area { start: jnum(&v["start"]), end: jnum(&v["end"]), perms, name: String::new() }
        })
        .collect()
}

/// Joins adjacent areas with the same permissions (the kernel may or may not
/// merge them; what matters is which addresses are mapped how).
pub fn coalesce(mut v: Vec<Area>) -> Vec<(u64, u64, String)> {
    v.sort_by_key(|a| a.start);
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for a in v {
        match out.last_mut() {
            Some(last) if last.1 == a.start && last.2 == a.perms => last.1 = a.end,
            _ => out.push((a.start, a.end, a.perms)),
        }
    }
    out
}

/// Asserts that the restored process maps exactly what its image lists:
/// no leftover blob, argument, stack or vDSO-parking mappings.
pub fn assert_maps_match_image(dir: &Path, pid: i32) {
    let want = coalesce(image_vmas(dir, pid));
    let got = coalesce(proc_maps(pid));
    if want != got {
        let fmt = |v: &[(u64, u64, String)]| v.iter().map(|(a, b, p)| format!("{a:x}-{b:x} {p}")).collect::<Vec<_>>();
        let (w, g) = (fmt(&want), fmt(&got));
        let extra: Vec<_> = g.iter().filter(|x| !w.contains(x)).collect();
        let missing: Vec<_> = w.iter().filter(|x| !g.contains(x)).collect();
        panic!("pid {pid}: mappings differ from the image\n  not in the image: {extra:?}\n  missing: {missing:?}");
    }
}

/// The fd numbers a process has open, sorted.
pub fn fds_of(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// What each fd points at (readlink of /proc/PID/fd/N), for comparisons
/// where pipe inode numbers may change.
pub fn fd_kinds(pid: i32) -> Vec<(i32, String)> {
    fds_of(pid)
        .into_iter()
        .map(|fd| {
            let l = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default();
            let kind = if l.starts_with("pipe:") { "pipe".to_owned() } else { l };
            (fd, kind)
        })
        .collect()
}

