//! `cargo xtask bench`, lazy restore rows: wall time of `criu-rs restore -d
//! --lazy-pages` from start to return, for a process of 64 MiB and of
//! 1 GiB (it should not depend on the size: no memory is copied before the
//! task runs), and the fault latency the restored program measures itself
//! (`lazymem random`: every page touched once in random order, the daemon
//! copying nothing in the background).
//!
//! For each size: `tests/programs/lazymem.c` fills its memory, is dumped
//! (release `criu-rs`; a plain dump flags its anonymous memory lazy, as
//! CRIU's do); then, per run, a `criu-rs lazy-pages` daemon is started, the restore is
//! timed, and the restored program checks every byte (it must say ALL OK)
//! while the daemon serves it.

use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use crate::bench::Kill;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The rows: best-of-`runs` restore times for 64 MiB and 1 GiB, and the
/// fault latency a lazily restored program sees (64 MiB touched in random
/// order, faults only, one page per fault).
pub fn rows(root: &Path, criu_rs: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let (work, lazymem) = prepare(root)?;
    let mut cells = Vec::new();
    for mib in [64u32, 1024] {
        let d = Dumped::new(criu_rs, &lazymem, &work.join(format!("{mib}m")), mib, "check")?;
        let mut best = f64::MAX;
        for _ in 0..runs.max(1) {
            best = best.min(d.restore(criu_rs, &[])?.0);
        }
        cells.push(format!("{mib} MiB: {best:.1} ms"));
    }
    let mut rows = vec![("lazy restore -d, start to return", format!("{} (best of {runs}; memory served after)", cells.join(", ")))];
    rows.extend(fault_rows(criu_rs, &lazymem, &work, runs)?);
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}

/// `runs` lazy restores of a 64 MiB lazymem touching every page once in
/// random order, the daemon serving one page per fault and copying nothing
/// in the background: per run, the program's own median and p90 per first
/// touch, and the daemon's counters (service time from reading the fault
/// to the fill done, its data lookup and `UFFDIO_COPY` parts).
pub fn fault_rows(criu_rs: &Path, lazymem: &Path, work: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let d = Dumped::new(criu_rs, lazymem, &work.join("random"), 64, "random")?;
    let mut rows = Vec::new();
    for _ in 0..runs.max(1) {
        let (_, daemon) = d.restore(criu_rs, &["--no-background", "--fault-chunk", "4"])?;
        let times = std::fs::read_to_string(d.result.with_extension("times"))?;
        let ns = |key: &str| -> Result<f64> {
            let v = times.split_whitespace().find_map(|w| w.strip_prefix(key)).with_context(|| format!("no {key} in {times:?}"))?;
            Ok(v.parse::<f64>()? / 1e3)
        };
        rows.push((
            "lazy fault, restored program",
            format!(
                "{:.2} µs median, {:.2} µs p90, {:.2} µs p99 per 4 KiB fault (64 MiB, random order)",
                ns("touch_median_ns=")?,
                ns("touch_p90_ns=")?,
                ns("touch_p99_ns=")?
            ),
        ));
        let counters = daemon
            .find("median service ")
            .and_then(|i| daemon[i..].find(')').map(|j| daemon[i..i + j].to_string()))
            .unwrap_or_else(|| "n/a".into());
        rows.push(("lazy fault, daemon counters", counters));
    }
    Ok(rows)
}

/// Only the fault rows ([`fault_rows`]), `runs` times.
pub fn fault_only(root: &Path, criu_rs: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let (work, lazymem) = prepare(root)?;
    let rows = fault_rows(criu_rs, &lazymem, &work, runs)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}

/// A fresh work directory with lazymem compiled in it.
fn prepare(root: &Path) -> Result<(PathBuf, PathBuf)> {
    prepare_lazymem(root, "target/bench-lazy/restore")
}

/// A fresh work directory `root/sub` with lazymem compiled in it.
pub(crate) fn prepare_lazymem(root: &Path, sub: &str) -> Result<(PathBuf, PathBuf)> {
    let work = root.join(sub);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let lazymem = work.join("lazymem");
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&lazymem)
        .arg(root.join("tests/programs/lazymem.c"))
        .status()?;
    ensure!(st.success(), "compiling lazymem.c failed");
    Ok((work, lazymem))
}

/// Starts lazymem holding `mib` MiB in `mode`, waits until it sits in its
/// wait, dumps it into `dir/images` and waits until its pid is free:
/// `(pid, images, result file)`.
pub(crate) fn dump_lazymem(criu_rs: &Path, lazymem: &Path, dir: &Path, mib: u32, mode: &str) -> Result<(i32, PathBuf, PathBuf)> {
        let images = dir.join("images");
        std::fs::create_dir_all(&images)?;
        let result = dir.join("result");
        let mut prog = Kill(
            Command::new(lazymem)
                .arg(dir)
                .arg(&result)
                .args([&mib.to_string(), mode])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let mut line = String::new();
        BufReader::new(prog.0.stdout.take().context("stdout")?).read_line(&mut line)?;
        ensure!(line.starts_with("READY"), "lazymem said {line:?}");
        let pid = prog.0.id() as i32;
        wait_until("lazymem to wait", || {
            std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| s.starts_with("130 "))
        })?;
        let out = Command::new(criu_rs).args(["dump", "-t", &pid.to_string(), "-D"]).arg(&images).output()?;
        ensure!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
        prog.0.wait()?;
        wait_until("the dumped pid to be free", || !Path::new(&format!("/proc/{pid}")).exists())?;
        Ok((pid, images, result))
}

/// A dumped lazymem with its images flagged lazy.
struct Dumped {
    pid: i32,
    images: PathBuf,
    result: PathBuf,
    sock: PathBuf,
}

impl Dumped {
    /// Starts lazymem holding `mib` MiB in `mode`, dumps it into `dir` and
    /// flags its memory lazy.
    fn new(criu_rs: &Path, lazymem: &Path, dir: &Path, mib: u32, mode: &str) -> Result<Dumped> {
        let (pid, images, result) = dump_lazymem(criu_rs, lazymem, dir, mib, mode)?;
        Ok(Dumped { pid, images, result, sock: dir.join("lazy.sock") })
    }

    /// One lazy restore with a daemon run with `daemon_args`; returns its
    /// time in ms once the program reported ALL OK and exited, and what the
    /// daemon printed.
    fn restore(&self, criu_rs: &Path, daemon_args: &[&str]) -> Result<(f64, String)> {
        let (pid, sock, result) = (self.pid, &self.sock, &self.result);
        let _ = std::fs::remove_file(result);
        let _ = std::fs::remove_file(sock);
        let mut daemon = Kill(
            Command::new(criu_rs)
                .args(["-v1", "lazy-pages", "-D"])
                .arg(&self.images)
                .arg("--address")
                .arg(sock)
                .args(daemon_args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?,
        );
        wait_until("the daemon's socket", || sock.exists())?;
        let t = Instant::now();
        let out = Command::new(criu_rs)
            .args(["restore", "-d", "--lazy-pages", "-D"])
            .arg(&self.images)
            .arg("--address")
            .arg(sock)
            .output()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let task = pidfd_open(pid);
        ensure!(out.status.success(), "lazy restore failed: {}", String::from_utf8_lossy(&out.stderr));
        let task = task?;
        rustix::process::pidfd_send_signal(&task, rustix::process::Signal::USR1)?;
        wait_until("the restored program's report", || std::fs::read_to_string(result).is_ok_and(|r| r.ends_with("ALL OK\n")))
            .with_context(|| std::fs::read_to_string(result).unwrap_or_default())?;
        wait_until("the restored program to exit", || {
            let mut fds = [rustix::event::PollFd::new(&task, rustix::event::PollFlags::IN)];
            rustix::event::poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })).is_ok_and(|n| n > 0)
        })?;
        // Reaped by whoever inherited it: the pid must be free for the next run.
        wait_until("the restored pid to be free", || !Path::new(&format!("/proc/{pid}")).exists())?;
        let mut out = String::new();
        std::io::Read::read_to_string(daemon.0.stdout.as_mut().context("stdout")?, &mut out)?;
        let st = daemon.0.wait()?;
        if !st.success() {
            let mut err = String::new();
            std::io::Read::read_to_string(daemon.0.stderr.as_mut().context("stderr")?, &mut err)?;
            bail!("lazy-pages failed: {st}: {err}");
        }
        Ok((ms, out))
    }
}

/// `pidfd_open(pid, 0)`.
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid).context("bad pid")?;
    Ok(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?)
}

/// Polls `cond` every millisecond for up to 60 s.
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !cond() {
        ensure!(t.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
