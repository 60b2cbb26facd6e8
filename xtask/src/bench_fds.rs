//! `cargo xtask bench --only fds`: dumping and restoring a process holding
//! about 10,000 descriptors of mixed kinds (issue 13: "well under a
//! second"), criu-rs and CRIU 4.2 runs interleaved, medians.
//!
//! `tests/programs/manyfds.c` opens the descriptors (pipes with queued
//! bytes, eventfds and dups of them, timerfds, signalfds, epoll sets over a
//! pipe and an eventfd, regular files and dups, /dev/null, memfds). Each
//! run: start it, `dump -j` (killing it), `restore -d -j`, then the program
//! checks every descriptor from the inside (the first run of each tool
//! only: the check reads every fd) and is killed. The rows give the wall
//! time of each command; CRIU's runs are skipped when its binary is absent
//! or it fails (the reason is printed).

use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Descriptors asked of the program.
const FDS: u32 = 10_000;

/// Upstream CRIU, built outside the repository.
const CRIU: &str = "/tmp/upstream-criu/criu/criu";

/// Builds release `criu-rs` and `manyfds`; returns their paths.
fn build(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let st = Command::new(env!("CARGO")).args(["build", "--release", "-q", "-p", "criu-cli"]).current_dir(root).status()?;
    if !st.success() {
        bail!("building criu-rs failed");
    }
    let out = root.join("target/bench-fds");
    std::fs::create_dir_all(&out)?;
    let exe = out.join("manyfds");
    let st = Command::new("cc")
        .args(["-O2", "-I"])
        .arg(root.join("tests/programs"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("tests/programs/manyfds.c"))
        .status()?;
    if !st.success() {
        bail!("compiling manyfds.c failed");
    }
    Ok((root.join("target/release/criu-rs"), exe))
}

/// Waits until `/proc/PID` is gone.
fn wait_gone(pid: i32) -> Result<()> {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "pid {pid} is still in use");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// One run with `tool`: (dump seconds, restore seconds, descriptors).
/// With `check`, the restored program checks itself first.
fn run_once(tool: &Path, manyfds: &Path, work: &Path, check: bool) -> Result<(f64, f64, u32)> {
    let images = work.join("images");
    let result = work.join("result");
    let _ = std::fs::remove_dir_all(&images);
    let _ = std::fs::remove_file(&result);
    std::fs::create_dir_all(&images)?;
    let mut child = Command::new(manyfds)
        .arg(FDS.to_string())
        .arg(&result)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as i32;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let fds: u32 = line.split_whitespace().find_map(|w| w.strip_prefix("fds=")).and_then(|v| v.parse().ok()).unwrap_or(0);
    if !line.starts_with("READY") {
        let _ = child.kill();
        let _ = child.wait();
        bail!("manyfds said {line:?}");
    }
    let t = Instant::now();
    let out = Command::new(tool).args(["dump", "-j", "-t", &pid.to_string(), "-D"]).arg(&images).args(["-o", "dump.log"]).output()?;
    let dump = t.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    anyhow::ensure!(out.status.success(), "{} dump failed: {}", tool.display(), String::from_utf8_lossy(&out.stderr));
    wait_gone(pid)?;
    let t = Instant::now();
    let out = Command::new(tool).args(["restore", "-d", "-j", "-D"]).arg(&images).args(["-o", "restore.log"]).output()?;
    let restore = t.elapsed().as_secs_f64();
    let checked = if out.status.success() && check {
        // SAFETY: kill(2) of the task this run restored.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        let start = Instant::now();
        while !result.exists() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::read_to_string(&result).unwrap_or_default()
    } else {
        "ALL OK".into()
    };
    // SAFETY: kill(2) of the task this run restored (if still there).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    anyhow::ensure!(out.status.success(), "{} restore failed: {}", tool.display(), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(checked.trim_end().ends_with("ALL OK"), "the program restored by {} found: {checked}", tool.display());
    wait_gone(pid)?;
    Ok((dump, restore, fds))
}

fn ms(s: f64) -> String {
    format!("{:.0} ms", s * 1e3)
}

/// The bench rows: dump and restore of ~10,000 fds, criu-rs and CRIU.
pub fn rows(root: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let (criu_rs, manyfds) = build(root)?;
    let work = root.join("target/bench-fds/run");
    std::fs::create_dir_all(&work)?;
    let criu = PathBuf::from(CRIU);
    let mut ours = (Vec::new(), Vec::new());
    let mut theirs = (Vec::new(), Vec::new());
    let mut criu_error = (!criu.exists()).then(|| format!("{CRIU} not found"));
    let mut fds = 0;
    for i in 0..runs.max(1) {
        let (d, r, n) = run_once(&criu_rs, &manyfds, &work, i == 0)?;
        ours.0.push(d);
        ours.1.push(r);
        fds = n;
        if criu_error.is_none() {
            match run_once(&criu, &manyfds, &work, i == 0) {
                Ok((d, r, _)) => {
                    theirs.0.push(d);
                    theirs.1.push(r);
                }
                Err(e) => criu_error = Some(format!("{e:#}")),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let cell = |ours: &[f64], theirs: &[f64]| {
        let o = crate::bench_restore::median(ours.to_vec());
        let criu = if theirs.is_empty() {
            format!("CRIU: {}", criu_error.as_deref().unwrap_or("not run"))
        } else {
            let t = crate::bench_restore::median(theirs.to_vec());
            format!("CRIU 4.2 {} ({:.1}x)", ms(t), t / o)
        };
        format!("{} median of {} ({fds} fds, mixed kinds; {criu})", ms(o), ours.len())
    };
    Ok(vec![("fds: dump -j, 10k descriptors", cell(&ours.0, &theirs.0)), ("fds: restore -d, 10k descriptors", cell(&ours.1, &theirs.1))])
}
