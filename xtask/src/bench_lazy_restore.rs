//! `cargo xtask bench`, lazy restore row: wall time of `criu-rs restore -d
//! --lazy-pages` from start to return, for a process of 64 MiB and of
//! 1 GiB (it should not depend on the size: no memory is copied before the
//! task runs).
//!
//! For each size: `tests/programs/lazymem.c` fills its memory, is dumped
//! (release `criu-rs`), its images flagged lazy ([`criu_core::lazy::mark`]);
//! then, per run, a `criu-rs lazy-pages` daemon is started, the restore is
//! timed, and the restored program checks every byte (it must say ALL OK)
//! while the daemon serves it.

use anyhow::{bail, ensure, Context, Result};
use criu_core::images::ImageDir;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps a child on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The row: best-of-`runs` restore times for 64 MiB and 1 GiB.
pub fn row(root: &Path, criu_rs: &Path, runs: u32) -> Result<(&'static str, String)> {
    let work = root.join("target/bench-lazy/restore");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let lazymem = work.join("lazymem");
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&lazymem)
        .arg(root.join("tests/programs/lazymem.c"))
        .status()?;
    ensure!(st.success(), "compiling lazymem.c failed");
    let mut cells = Vec::new();
    for mib in [64u32, 1024] {
        let ms = restore_ms(criu_rs, &lazymem, &work.join(format!("{mib}m")), mib, runs)?;
        cells.push(format!("{} MiB: {ms:.1} ms", mib));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(("lazy restore -d, start to return", format!("{} (best of {runs}; memory served after)", cells.join(", "))))
}

/// Dumps lazymem holding `mib` MiB into `dir`, then restores it lazily
/// `runs` times; returns the best restore time in ms.
fn restore_ms(criu_rs: &Path, lazymem: &Path, dir: &Path, mib: u32, runs: u32) -> Result<f64> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    let result = dir.join("result");
    let mut prog = Kill(
        Command::new(lazymem)
            .arg(dir)
            .arg(&result)
            .args([&mib.to_string(), "check"])
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
    criu_core::lazy::mark::mark_lazy(&ImageDir::open(&images)?, pid as u32)?;

    let sock = dir.join("lazy.sock");
    let mut best = f64::MAX;
    for _ in 0..runs.max(1) {
        let _ = std::fs::remove_file(&result);
        let _ = std::fs::remove_file(&sock);
        let mut daemon = Kill(
            Command::new(criu_rs)
                .args(["-v", "1", "lazy-pages", "-D"])
                .arg(&images)
                .arg("--address")
                .arg(&sock)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?,
        );
        wait_until("the daemon's socket", || sock.exists())?;
        let t = Instant::now();
        let out = Command::new(criu_rs)
            .args(["restore", "-d", "--lazy-pages", "-D"])
            .arg(&images)
            .arg("--address")
            .arg(&sock)
            .output()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let task = pidfd_open(pid);
        ensure!(out.status.success(), "lazy restore failed: {}", String::from_utf8_lossy(&out.stderr));
        let task = task?;
        rustix::process::pidfd_send_signal(&task, rustix::process::Signal::USR1)?;
        wait_until("the restored program's report", || std::fs::read_to_string(&result).is_ok_and(|r| r.ends_with("ALL OK\n")))
            .with_context(|| std::fs::read_to_string(&result).unwrap_or_default())?;
        wait_until("the restored program to exit", || {
            let mut fds = [rustix::event::PollFd::new(&task, rustix::event::PollFlags::IN)];
            rustix::event::poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })).is_ok_and(|n| n > 0)
        })?;
        // Reaped by whoever inherited it: the pid must be free for the next run.
        wait_until("the restored pid to be free", || !Path::new(&format!("/proc/{pid}")).exists())?;
        let st = daemon.0.wait()?;
        if !st.success() {
            let mut err = String::new();
            std::io::Read::read_to_string(daemon.0.stderr.as_mut().context("stderr")?, &mut err)?;
            bail!("lazy-pages failed: {st}: {err}");
        }
        best = best.min(ms);
    }
    Ok(best)
}

/// `pidfd_open(pid, 0)`.
fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid).context("bad pid")?;
    Ok(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?)
}

/// Polls `cond` every millisecond for up to 60 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !cond() {
        ensure!(t.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
