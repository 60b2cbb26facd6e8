//! `cargo xtask bench --only mmap`: `restore --mmap-page-image` (issue 10).
//!
//! `tests/programs/lazymem.c` fills 64 MiB or 1 GiB, is dumped (release
//! `criu-rs`), then per run:
//! - `criu-rs restore -d --mmap-page-image` is timed from start to return
//!   (no memory is read before the task runs: flat in size);
//! - the detached helper converts the mappings to anonymous memory while
//!   the program runs; its log gives the conversion's wall time and its
//!   longest stop of the process;
//! - the program checks every byte (ALL OK) and exits.
//!
//! First touch before the conversion: lazymem `random` (64 MiB, every page
//! touched once in random order, each first touch timed by the program)
//! restored with the helper stalled before its first chunk
//! (`CRIU_RS_CONVERT_STALL_AFTER=0`, then killed): a page-cache fault per
//! page; then `--finish-mmap` converts, timed.

use crate::bench_lazy_restore::{pidfd_open, prepare_lazymem, wait_until};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// A dumped lazymem.
struct Dumped {
    pid: i32,
    images: PathBuf,
    result: PathBuf,
    log: PathBuf,
}

impl Dumped {
    fn new(criu_rs: &Path, lazymem: &Path, dir: &Path, mib: u32, mode: &str) -> Result<Dumped> {
        let (pid, images, result) = crate::bench_lazy_restore::dump_lazymem(criu_rs, lazymem, dir, mib, mode)?;
        Ok(Dumped { pid, images, result, log: dir.join("restore.log") })
    }

    /// Restores with the conversion helper stalled before its first chunk
    /// (`CRIU_RS_CONVERT_STALL_AFTER=0`), then kills the helper: the task
    /// runs on its image mappings, unconverted. Returns the task's pidfd.
    fn restore_unconverted(&self, criu_rs: &Path) -> Result<std::os::fd::OwnedFd> {
        let (_, task) = self.restore(criu_rs, &[("CRIU_RS_CONVERT_STALL_AFTER", "0")])?;
        wait_until("the helper to stall", || std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains("stalling until killed")))?;
        let log = std::fs::read_to_string(&self.log)?;
        let helper = log.lines().find(|l| l.contains("conversion helper started")).and_then(|l| field(l, "helper")).context("helper pid")? as i32;
        // SAFETY: kill(2) of the helper our restore started.
        unsafe { libc::kill(helper, libc::SIGKILL) };
        Ok(task)
    }

    /// `restore -d --mmap-page-image` (with `envs`): its time to return in
    /// ms, and a pidfd of the restored task.
    fn restore(&self, criu_rs: &Path, envs: &[(&str, &str)]) -> Result<(f64, std::os::fd::OwnedFd)> {
        let _ = std::fs::remove_file(&self.result);
        let t = Instant::now();
        let out = Command::new(criu_rs)
            .args(["restore", "-d", "--mmap-page-image", "-v3", "-D"])
            .arg(&self.images)
            .arg("-o")
            .arg(&self.log)
            .envs(envs.iter().copied())
            .output()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let task = pidfd_open(self.pid);
        ensure!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok((ms, task?))
    }

    /// The helper's summary line, once it wrote it.
    fn converted(&self) -> Result<String> {
        let mut line = String::new();
        wait_until("the conversion", || {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            line = log.lines().find(|l| l.contains("the images are no longer used")).unwrap_or("").to_owned();
            !line.is_empty()
        })?;
        Ok(line)
    }

    /// Wakes the program, waits for ALL OK and for the pid to be free.
    fn finish(&self, task: &std::os::fd::OwnedFd) -> Result<()> {
        rustix::process::pidfd_send_signal(task, rustix::process::Signal::USR1)?;
        wait_until("the restored program's report", || std::fs::read_to_string(&self.result).is_ok_and(|r| r.ends_with("ALL OK\n")))
            .with_context(|| std::fs::read_to_string(&self.result).unwrap_or_default())?;
        wait_until("the restored pid to be free", || !Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

/// `key=N` in a log line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn rows(root: &Path, criu_rs: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let (work, lazymem) = prepare_lazymem(root, "target/bench-mmap")?;
    let mut returns = Vec::new();
    let mut conversion = String::new();
    for mib in [64u32, 1024] {
        let d = Dumped::new(criu_rs, &lazymem, &work.join(format!("{mib}m")), mib, "check")?;
        let (mut ret, mut conv, mut stop) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            let (ms, task) = d.restore(criu_rs, &[])?;
            let line = d.converted()?;
            d.finish(&task)?;
            ret.push(ms);
            conv.push(field(&line, "elapsed_ms").unwrap_or(f64::NAN));
            stop.push(field(&line, "longest_stop_us").unwrap_or(f64::NAN) / 1e3);
        }
        returns.push(format!("{mib} MiB: {:.1} ms", median(&mut ret)));
        if mib == 1024 {
            conversion = format!("{:.0} ms for 1 GiB, longest stop {:.1} ms (medians of {}; program running)", median(&mut conv), median(&mut stop), ret.len());
        }
        let _ = std::fs::remove_dir_all(d.images.parent().unwrap_or(&d.images));
    }
    let mut rows = vec![
        ("mmap restore -d, start to return", format!("{} (medians of {runs}; no page read before the task runs)", returns.join(", "))),
        ("mmap conversion, detached helper", conversion),
    ];
    // First touches before any conversion, then --finish-mmap alone.
    let d = Dumped::new(criu_rs, &lazymem, &work.join("random"), 64, "random")?;
    let (mut med, mut p90, mut fin) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let task = d.restore_unconverted(criu_rs)?;
        rustix::process::pidfd_send_signal(&task, rustix::process::Signal::USR1)?;
        let times = d.result.with_extension("times");
        wait_until("the first-touch times", || times.exists())?;
        let t = std::fs::read_to_string(&times)?;
        let ns = |key: &str| t.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        med.push(ns("touch_median_ns=") / 1e3);
        p90.push(ns("touch_p90_ns=") / 1e3);
        wait_until("the restored program's report", || std::fs::read_to_string(&d.result).is_ok_and(|r| r.ends_with("ALL OK\n")))?;
        // The program exits after its report; convert what it may still hold
        // is pointless then, so time --finish-mmap on the next dump instead.
        wait_until("the restored pid to be free", || !Path::new(&format!("/proc/{}", d.pid)).exists())?;
        let _ = std::fs::remove_file(&times);
    }
    rows.push((
        "mmap first touch, before conversion",
        format!("{:.2} µs median, {:.2} µs p90 per 4 KiB page (64 MiB, random order, page-cache faults)", median(&mut med), median(&mut p90)),
    ));
    // --finish-mmap on a stalled restore of 1 GiB.
    let d = Dumped::new(criu_rs, &lazymem, &work.join("finish"), 1024, "check")?;
    for _ in 0..runs.max(1) {
        let task = d.restore_unconverted(criu_rs)?;
        let t = Instant::now();
        let out = Command::new(criu_rs).args(["restore", "--finish-mmap", &d.pid.to_string(), "-D"]).arg(&d.images).output()?;
        ensure!(out.status.success(), "--finish-mmap failed: {}", String::from_utf8_lossy(&out.stderr));
        fin.push(t.elapsed().as_secs_f64() * 1e3);
        d.finish(&task)?;
    }
    rows.push(("mmap --finish-mmap, 1 GiB idle program", format!("{:.0} ms (median of {})", median(&mut fin), fin.len())));
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}
