//! `cargo xtask demo`: the README's main job. Builds criu-rs and the demo
//! program, starts the demo, checkpoints it (which ends it), restores it
//! with the same pid, and checks that it carries on counting with its
//! memory intact. Everything it starts is stopped by pid at the end.

use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The last "tick N pid P ok" line of the demo's log, as (N, P).
fn last_tick(log: &Path) -> Result<Option<(u64, i32)>> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    if let Some(bad) = text.lines().find(|l| l.contains("CORRUPT")) {
        bail!("the demo found its memory corrupt: {bad}");
    }
    Ok(text.lines().rev().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["tick", n, "pid", p, "ok"] => Some((n.parse().ok()?, p.parse().ok()?)),
            _ => None,
        }
    }))
}

/// Waits until the demo has printed a tick beyond `after`.
fn wait_tick(log: &Path, after: u64, timeout: Duration) -> Result<(u64, i32)> {
    let start = Instant::now();
    loop {
        if let Some((n, p)) = last_tick(log)? {
            if n > after {
                return Ok((n, p));
            }
        }
        ensure!(start.elapsed() < timeout, "no tick after {after} within {timeout:?} in {}", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    println!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills `pid` if it is still there (only ever a pid this demo started).
fn kill_pid(pid: i32) {
    // SAFETY: kill(2) takes integers only; the pid is the demo's own.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

pub fn run(root: &Path) -> Result<()> {
    let work: PathBuf = root.join("target").join("demo");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    run_checked(Command::new("cargo").args(["build", "--release", "--quiet", "-p", "criu-cli"]).current_dir(root))?;
    let criu_rs = root.join("target/release/criu-rs");
    let demo = work.join("demo");
    run_checked(
        Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&demo)
            .arg(root.join("tests/programs/demo.c")),
    )?;

    let log = work.join("demo.log");
    let out = fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let mut child = Command::new(&demo);
    child.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // SAFETY: setsid() and close_range() are async-signal-safe. The demo
    // gets its own session so that it is a whole tree of its own (no
    // --shell-job needed), and no fds but 0-2 (cargo's jobserver pipe would
    // otherwise leak into it).
    unsafe {
        child.pre_exec(|| {
            libc::setsid();
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = child.spawn().context("starting the demo")?;
    let pid = child.id() as i32;
    // The demo is our child: reap it when the dump ends it, so its pid is free.
    let reaper = std::thread::spawn(move || child.wait());

    let result = (|| -> Result<()> {
        let (before, p) = wait_tick(&log, 5, Duration::from_secs(60))?;
        ensure!(p == pid, "the demo reports pid {p}, expected {pid}");
        println!("demo pid {pid} is at tick {before}; checkpointing");

        let images = work.join("images");
        // As with CRIU, the images directory must exist before the dump.
        fs::create_dir_all(&images)?;
        let t = Instant::now();
        run_checked(Command::new(&criu_rs).args(["dump", "-v4", "-o", "dump.log", "-t"]).arg(pid.to_string()).arg("-D").arg(&images))?;
        let dump_time = t.elapsed();
        let _ = reaper.join();
        ensure!(!pid_alive(pid), "pid {pid} still exists after the dump");
        let (dumped_at, _) = last_tick(&log)?.context("no tick before the dump")?;
        let size: u64 = fs::read_dir(&images)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        println!("dumped in {dump_time:.2?}: {} MiB of images; the demo is gone", size >> 20);

        let t = Instant::now();
        run_checked(
            Command::new(&criu_rs)
                .args(["restore", "-d", "-v4", "-o", "restore.log", "-D"])
                .arg(&images)
                .arg("--pidfile")
                .arg(work.join("restored.pid")),
        )?;
        let restore_time = t.elapsed();
        let (after, p) = wait_tick(&log, dumped_at + 5, Duration::from_secs(30))?;
        ensure!(p == pid, "the restored demo reports pid {p}, expected {pid}");
        println!("restored in {restore_time:.2?}: pid {pid} went on from tick {dumped_at} to tick {after}, memory checked each tick");
        Ok(())
    })();
    if pid_alive(pid) {
        kill_pid(pid);
    }
    result?;
    println!("demo: OK (log and images in {})", work.display());
    Ok(())
}
